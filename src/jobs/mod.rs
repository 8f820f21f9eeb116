//! The per-item job: moves one item as far along its state machine as it can go now.
//!
//! Who owns an item: whoever holds its lease in the store (`Store::try_lease`). A job that
//! cannot take the lease does nothing but hand the item back to the feed for when the lease
//! ends (the holder may be dead), so a job delivered twice, or two workers picking up the
//! same item, never work it concurrently. The item's stored state — not the queue — is the
//! source of truth: a job is only a nudge "look at this item", and delivering it again is safe.
//!
//! A step ends in one of [`Next`]: the item waits on its payee (the poller moves it on), is
//! terminal, or must be retried at a time (the caller re-enqueues it for then). Retries are
//! scheduled by us, not by apalis, so backoff with jitter and `Retry-After` are honoured
//! (apalis' `RetryAfterError` ignores its delay; see shared/apalis-1.0-notes.md).

pub mod chunk;
pub mod chunk_plan;
pub mod circuit;
pub mod feed;
mod flows;
pub mod funds;
pub mod gate;
mod lease;
pub mod outbound;
pub mod plan;
pub mod poll;
pub mod poll_next;
mod queue;
pub mod remind;
mod route;
mod transfer;
pub mod watchdog;
pub mod worker;

pub use queue::{ITEM_QUEUE, ItemJob, Queue, QueueError};

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tracing::{Instrument, info_span};

use crate::batch::{BatchId, ItemId};
use crate::config::WorkerSettings;
use crate::dots::client::{DotsClient, DotsError};
use crate::item::ItemState;
use crate::store::{ItemRecord, Store, StoreError, now_ms};

/// The queue's run times are whole seconds (apalis-sqlite): a job may start this much before
/// the time it was queued for.
const QUEUE_TIME_GRAIN_MS: i64 = 2_000;

/// A job that found the item leased looks again this long after the lease ends: by then the
/// holder has released it or its lease has lapsed, so the next `try_lease` decides at once.
const AFTER_LEASE_MS: i64 = 100;

/// The most durable steps one job makes before it hands the item back to the queue. An item's
/// longest path (pending, onboarding done, transfer, reconcile, payout flow) is under ten
/// steps; the bound keeps a bug that loops between two states from holding a worker forever.
const MAX_STEPS_PER_JOB: usize = 16;

/// At most this many batches are remembered as approved (then the memory starts over).
const APPROVED_BATCHES_CAP: usize = 1024;

/// What happens to an item after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Terminal, or waiting on the payee: no job needed.
    Idle,
    /// Run again at this unix-ms time.
    RetryAt(i64),
    /// Another worker holds the item until this unix-ms time (look again then: if that worker
    /// died, its lease lapses and this job takes over).
    Busy(i64),
}

/// How a job ends, as far as its lease goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    /// The job still holds the lease: [`Engine::process_item`] releases it.
    Held(Next),
    /// The job's last write released the lease (or found it taken over).
    Released(Next),
}

impl Lease {
    fn next(self) -> Next {
        match self {
            Lease::Held(next) | Lease::Released(next) => next,
        }
    }
}

/// Where a step left the item.
enum Step {
    /// Nothing more to do now: the job ends so.
    Done(Lease),
    /// The step moved the item on: go on with the row its last write returned (`RETURNING`),
    /// which is the item as that write committed it — no need to read it again.
    Moved(Box<ItemRecord>),
    /// Like `Moved`, and that write also committed the payout-flow call's intent with the
    /// transfer's success: the payout intent is ours, so the payout step makes the call
    /// without first searching for a flow an earlier, interrupted call might have made.
    MovedPayoutIntentOurs(Box<ItemRecord>),
    /// A guarded write found the item changed under us: read it again.
    Changed,
}

impl Step {
    /// Nothing more to do now; the job still holds the lease.
    fn done(next: Next) -> Step {
        Step::Done(Lease::Held(next))
    }

    /// The end of a job whose last write was asked to release the lease: it did when the
    /// write happened; if the guard missed, the job still holds the lease and releases it.
    fn done_releasing(next: Next, written: Option<ItemRecord>) -> Step {
        match written {
            Some(_) => Step::Done(Lease::Released(next)),
            None => Step::done(next),
        }
    }
}

impl From<Option<ItemRecord>> for Step {
    /// The answer of a guarded store write: the row it wrote, or `None` when the guard missed.
    fn from(row: Option<ItemRecord>) -> Step {
        match row {
            Some(row) => Step::Moved(Box::new(row)),
            None => Step::Changed,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("item {0} does not exist")]
    NoSuchItem(ItemId),
}

/// Everything a job needs; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub dots: DotsClient,
    pub settings: Arc<WorkerSettings>,
    /// This worker's unique name: lease owner and apalis worker name.
    pub owner: Arc<str>,
    /// Added to the wall clock when judging idempotency-key age (tests move it a day ahead).
    clock_offset_ms: Arc<AtomicI64>,
    /// Batches seen approved by this process (see [`Engine::batch_approved`]).
    approved_batches: Arc<Mutex<HashSet<BatchId>>>,
    /// What keeps this process from working (`/healthz`): open circuits, dead components.
    pub health: crate::health::Health,
    /// The blocked batches (paused, held for funds), read at most every `worker.feed_ms`.
    gate: gate::GateCache,
    /// This process' circuits for systemic Dots conditions, fed by `dots`' every call.
    pub circuits: Arc<circuit::Circuits>,
    /// The App wallet: funding settings, batches known checked, the probe's backoff.
    pub funds: Arc<funds::Funds>,
    /// `[reminders]`: fresh links for payout flows left open (`jobs::remind`); off unless
    /// set with [`Engine::with_reminders`].
    pub reminders: Arc<crate::config::ReminderSettings>,
    /// The deliverer of outbound events (`jobs::outbound`), when endpoints are configured.
    pub outbound: Option<Arc<outbound::Outbound>>,
    /// One transfer call per item, or first transfers in chunks (`jobs::chunk`); single unless
    /// set with [`Engine::with_transfers`].
    pub transfers: chunk::Transfers,
}

impl Engine {
    pub fn new(store: Store, dots: DotsClient, settings: WorkerSettings, owner: &str) -> Engine {
        let health = crate::health::Health::new();
        let circuits = circuit::circuits_for(&settings, health.clone());
        Engine {
            store,
            dots: dots.observed_by(circuits.clone()),
            owner: owner.into(),
            clock_offset_ms: Arc::new(AtomicI64::new(0)),
            approved_batches: Arc::default(),
            health,
            gate: gate::GateCache::new(Duration::from_millis(settings.feed_ms.max(10))),
            circuits,
            funds: Arc::default(),
            reminders: Arc::default(),
            outbound: None,
            transfers: chunk::Transfers::default(),
            settings: Arc::new(settings),
        }
    }

    /// This engine with reminders for unclaimed payouts as `settings` say (`[reminders]`).
    pub fn with_reminders(mut self, settings: crate::config::ReminderSettings) -> Engine {
        self.reminders = Arc::new(settings);
        self
    }

    /// Makes the next gate check read the blocked batches from the store (after a pause or a
    /// hold this process made, or in tests that step the engine by hand).
    pub async fn refresh_gate(&self) {
        self.gate.forget().await;
    }

    /// The batch gate for the item's next step (`jobs::gate`), from the cached blocked set.
    async fn gate(&self, item: &ItemRecord) -> Result<gate::Gate, StoreError> {
        let blocked = self.gate.blocked(&self.store).await?;
        Ok(gate::decide(&blocked, item.batch_id, item.line, item.state))
    }

    /// Delivers outbound events with `out` (from `[events]`) while the worker runs.
    pub fn with_outbound(mut self, out: Option<Arc<outbound::Outbound>>) -> Engine {
        self.outbound = out;
        self
    }

    /// Now, in unix ms, on the engine's clock.
    pub fn now(&self) -> i64 {
        now_ms() + self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Moves the engine's clock forward (tests: age an idempotency key past Dots' window).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn advance_clock(&self, by: Duration) {
        self.clock_offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }

    fn lease_ms(&self) -> i64 {
        self.settings.lease_secs as i64 * 1000
    }

    /// Delay before retry number `attempt` (0-based): exponential with full jitter, capped,
    /// and never shorter than what Dots asked for.
    pub fn backoff(&self, attempt: i64, retry_after: Option<Duration>) -> Duration {
        crate::dots::retry::backoff(
            Duration::from_millis(self.settings.backoff_base_ms),
            Duration::from_secs(self.settings.backoff_max_secs),
            attempt,
            retry_after,
        )
    }

    pub fn next_attempt_at(&self, attempt: i64, err: Option<&DotsError>) -> i64 {
        self.now()
            + self
                .backoff(attempt, err.and_then(|e| e.retry_after()))
                .as_millis() as i64
    }

    /// The next poll time of a flow read `polls` times so far (0: a new flow), along
    /// `worker.poll_schedule_secs` (see `poll_next`).
    pub fn next_poll_at(&self, polls: i64) -> i64 {
        let delay = poll_next::scheduled(&self.settings.poll_schedule_secs, polls);
        self.now() + delay.as_millis() as i64
    }

    /// Works the item until it waits, ends, or needs a retry later.
    pub async fn process_item(&self, id: ItemId) -> Result<Next, JobError> {
        let Some(item) = self
            .store
            .try_lease(id, &self.owner, self.lease_ms())
            .await?
        else {
            return match self.store.item(id).await? {
                None => Err(JobError::NoSuchItem(id)),
                Some(held) => {
                    let at = held.lease_until + AFTER_LEASE_MS;
                    self.store.hand_back_busy(id, at).await?;
                    Ok(Next::Busy(at))
                }
            };
        };
        self.work_held(item, false).await
    }

    /// Works an item whose lease this engine's owner holds (`item` as the write that took or
    /// was handed the lease returned it), then releases the lease unless the last write did.
    /// `payout_intent_ours`: that write also committed the payout flow's intent (the chunker's
    /// outcome, `jobs::chunk`), so the payout step makes its call without searching first.
    pub(super) async fn work_held(
        &self,
        item: ItemRecord,
        payout_intent_ours: bool,
    ) -> Result<Next, JobError> {
        let id = item.id;
        let span = info_span!("item", batch_id = %item.batch_id, item_id = %item.id, payee_id = %item.payee_id);
        let res = self
            .work_leased(id, item, payout_intent_ours)
            .instrument(span)
            .await;
        // Release even on error, unless the job's last write did; a crash instead leaves the
        // lease to expire.
        let released = match res {
            Ok(Lease::Released(_)) => Ok(()),
            _ => self.store.release_lease(id, &self.owner).await,
        };
        let next = res?.next();
        released?;
        Ok(next)
    }

    /// Works the leased item; the answer says whether the job still holds the lease.
    async fn work_leased(
        &self,
        id: ItemId,
        mut item: ItemRecord,
        payout_intent_ours: bool,
    ) -> Result<Lease, JobError> {
        // Whether the last step committed the payout flow's intent for the next one.
        let mut payout_intent_ours = payout_intent_ours;
        // A bounded loop: each turn makes one durable step.
        for _ in 0..MAX_STEPS_PER_JOB {
            let state = item.state;
            let early_by = item.next_attempt_at - self.now();
            if early_by > 0 && state.is_workable() {
                if early_by > QUEUE_TIME_GRAIN_MS {
                    // Early: the job that recorded this retry also queued one for that time.
                    // This one (a duplicate delivery) ends here, or duplicates would live as
                    // long as the item keeps retrying.
                    return Ok(Lease::Held(Next::Idle));
                }
                // The retry's own job: the queue keeps run times in whole seconds, so it may
                // come up to a second early. Wait out the rest.
                tokio::time::sleep(Duration::from_millis(early_by as u64)).await;
            }
            // A paused or funds-held batch: no call now; the item stays due (`jobs::gate`).
            // A payout call whose intent the last step committed is already under way.
            if !payout_intent_ours && let gate::Gate::Stop(block) = self.gate(&item).await? {
                tracing::debug!(?block, "batch blocked: the item waits");
                return Ok(Lease::Held(Next::Idle));
            }
            // Renew the lease only when what is left may not cover the next step.
            if self.must_renew_lease(&item, state, payout_intent_ours) {
                let Some(leased) = self
                    .store
                    .try_lease(id, &self.owner, self.lease_ms())
                    .await?
                else {
                    return Ok(Lease::Held(Next::Busy(self.now() + self.lease_ms())));
                };
                item = leased;
            }
            // An open circuit (Dots refuses our key, is down, throttles): no Dots call; the
            // item waits for the next probe, nothing counted against it.
            if let Some(until) = self.circuit_gate().await? {
                self.store.defer_item(id, until).await?;
                return Ok(Lease::Held(Next::RetryAt(until)));
            }
            let step = match item.state {
                ItemState::Pending => self.start(&item).await?,
                ItemState::Transferring => self.transfer(&item).await?,
                ItemState::Transferred => self.after_transfer(&item, payout_intent_ours).await?,
                _ => return Ok(Lease::Held(Next::Idle)),
            };
            (item, payout_intent_ours) = match step {
                Step::Done(lease) => return Ok(lease),
                Step::Moved(row) => (*row, false),
                Step::MovedPayoutIntentOurs(row) => (*row, true),
                Step::Changed => {
                    let row = self.store.item(id).await?;
                    (row.ok_or(JobError::NoSuchItem(id))?, false)
                }
            };
        }
        Ok(Lease::Held(Next::RetryAt(self.now())))
    }

    /// pending: a payee with a Dots user goes to transfer; one without gets onboarded.
    async fn start(&self, item: &ItemRecord) -> Result<Step, JobError> {
        let id = item.id;
        if !self.batch_approved(item.batch_id).await? {
            // Awaiting approval (approve enqueues it again) or canceled.
            return Ok(Step::done(Next::Idle));
        }
        let known = match item.dots_user_id {
            Some(u) => Some(u),
            None => self.store.payee_user(&item.payee_id).await?,
        };
        if let Some(user) = known {
            if let Some(wait) = self.funds_gate(item).await? {
                return Ok(wait);
            }
            if item.transfer_key.is_none() && item.transfer_id.is_none() {
                if self.chunked() {
                    // Batch mode: the chunker sends it with the batch's other ready items
                    // (`jobs::chunk`); it finds it by its state (`items_chunkable`).
                    return Ok(Step::done(Next::Idle));
                }
                return self.first_transfer(item, user).await;
            }
            // An earlier attempt is on record (a rerun): `transfer` reconciles it first.
            return Ok(self
                .store
                .begin_transfer(id, ItemState::Pending, &item.payee_id, user)
                .await?
                .into());
        }
        self.onboard(item).await
    }

    /// Whether the batch may be worked. "Approved" is remembered for the process (one read per
    /// batch instead of one per item); "awaiting approval" is never remembered, as `approve`
    /// enqueues the items again and they must then see it.
    ///
    /// Why a remembered "approved" cannot go stale in a harmful way: a batch leaves `approved`
    /// only through `app::ops::cancel` (the only caller of `Store::cancel_batch_record`;
    /// nothing moves a batch back to awaiting approval), and that marks the batch only when it
    /// skipped none of its items, i.e. after moving every item to `canceled` by its own guarded
    /// transition; `canceled` is terminal. So once the batch is not approved any more, no item
    /// of it is `pending` in the store: a job whose lease returned the item after the cancel
    /// never gets here, and one that read `pending` before it moves the item only through
    /// `WHERE state = 'pending'`, which then changes nothing — the same race a fresh read of
    /// the batch has, since the cancel may land right after that read too.
    async fn batch_approved(&self, batch_id: BatchId) -> Result<bool, StoreError> {
        if self.approved_batches().contains(&batch_id) {
            return Ok(true);
        }
        let approved = self.store.batch_approved(batch_id).await?;
        if approved {
            let mut seen = self.approved_batches();
            if seen.len() >= APPROVED_BATCHES_CAP {
                seen.clear();
            }
            seen.insert(batch_id);
        }
        Ok(approved)
    }

    fn approved_batches(&self) -> std::sync::MutexGuard<'_, HashSet<BatchId>> {
        // A panic while holding it cannot leave the set half-updated in a harmful way.
        self.approved_batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a failed non-transfer call: held (an open circuit: nothing counted), retried
    /// later, or the item failed (refused, or out of time: `plan::after_step_failure`).
    async fn step_failed(
        &self,
        item: &ItemRecord,
        state: ItemState,
        what: &str,
        err: &DotsError,
    ) -> Result<Step, JobError> {
        let id = item.id;
        let msg = format!("{what}: {err}");
        if let Some(until) = self.held_by_circuit(err).await? {
            self.store
                .record_retry(id, state, &msg, until, None)
                .await?;
            return Ok(Step::done(Next::RetryAt(until)));
        }
        let now = self.now();
        let reason = match plan::after_step_failure(item, err.class(), now, &self.settings) {
            plan::StepAfter::RetryLater => {
                let at = self.next_attempt_at(item.attempts, Some(err));
                self.store
                    .record_retry(id, state, &msg, at, Some(now))
                    .await?;
                return Ok(Step::done(Next::RetryAt(at)));
            }
            plan::StepAfter::Refused => msg,
            plan::StepAfter::GaveUp => plan::gave_up_reason(item, now, &msg),
        };
        self.store.fail_item(id, state, &reason).await?;
        Ok(Step::done(Next::Idle))
    }
}

/// Metadata payrun attaches to everything it creates at Dots, so reconciliation and audits can
/// tie a Dots object back to the item.
pub fn item_metadata(item: &ItemRecord, purpose: &str) -> serde_json::Value {
    json!({
        "payrun_batch_id": item.batch_id.to_string(),
        "payrun_item_id": item.id.to_string(),
        "payee_id": item.payee_id,
        "purpose": purpose,
    })
}
