//! Polling open flows: items waiting on their payee (`onboarding`, `awaiting_payout`) are
//! checked with `GET /v2/flows/{id}` when their per-flow poll time is due. Run from an
//! apalis-cron job every few seconds (`worker.poll_cron`, see `jobs::worker`); a tick with
//! nothing due is one read of the `items_poll_due` index.
//!
//! When the next poll comes is decided in `poll_next`: a read of a still-open flow backs off
//! along `worker.poll_schedule_secs`; a failed read (5xx, 429, timeout, no connection) is
//! retried within seconds and leaves the flow's place on that schedule alone.
//!
//! An onboarding flow that gained a `user_id` moves its item to `transferring` (the caller
//! enqueues it); a payout flow whose `completed_steps` cover its `steps` completes the item.
//! A payout flow still open is where reminders are decided (`remind::decide`): a due reminder
//! steps the item back for a fresh flow (the feeder hands it to a job), and after the last one
//! the item is marked unclaimed; its next poll is never later than its next reminder.

use futures::StreamExt;
use tracing::{info, instrument, warn};

use super::poll_next::{PollOutcome, next_poll_delay};
use super::remind::{self, Reminder};
use super::{Engine, JobError};
use crate::batch::ItemId;
use crate::item::ItemState;
use crate::store::ItemRecord;

/// How long a claimed flow is kept from other pollers: longer than one poll takes (a Dots call
/// within its timeout), short enough that a poller that died mid-round delays nobody much.
const POLL_CLAIM_MS: i64 = 60_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    pub polled: usize,
    pub onboarded: Vec<ItemId>,
    pub completed: usize,
    /// Items stepped back for a reminder's fresh flow (`jobs::remind`; the feeder hands them
    /// to a job).
    pub reminded: Vec<ItemId>,
    /// Items marked unclaimed (still open after their last reminder).
    pub unclaimed: usize,
    pub errors: usize,
}

/// Polls every flow due at `now` (unix ms), at most `limit`, a few at a time.
#[instrument(skip(engine))]
pub async fn poll_due(engine: &Engine, now: i64, limit: i64) -> Result<PollReport, JobError> {
    // The usual tick: nothing due, and a read (not a claim, which writes) finds that out.
    if !engine.store.poll_due_exists(now).await? {
        return Ok(PollReport::default());
    }
    // Claimed for a while; each poll below records the item's real next time.
    let due = engine
        .store
        .claim_due_polls(now, limit, engine.now() + POLL_CLAIM_MS)
        .await?;
    let results: Vec<_> = futures::stream::iter(due)
        .map(|item| async move { poll_one(engine, &item).await })
        .buffer_unordered(engine.settings.concurrency.max(1))
        .collect()
        .await;
    let mut report = PollReport::default();
    for r in results {
        report.polled += 1;
        match r {
            Ok(Polled::Onboarded(id)) => report.onboarded.push(id),
            Ok(Polled::Completed) => report.completed += 1,
            Ok(Polled::Reminded(id)) => report.reminded.push(id),
            Ok(Polled::Unclaimed) => report.unclaimed += 1,
            Ok(Polled::Open) => {}
            Err(e) => {
                warn!(error = %e, "poll failed");
                report.errors += 1;
            }
        }
    }
    if report.polled > 0 {
        info!(
            polled = report.polled,
            onboarded = report.onboarded.len(),
            completed = report.completed,
            "polled flows"
        );
    }
    Ok(report)
}

/// What a refresh of one item's flow found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    Open,
    Onboarded(ItemId),
    Completed,
    /// Still open and a reminder was due: stepped back for its fresh flow.
    Reminded(ItemId),
    /// Still open after the last reminder: marked unclaimed.
    Unclaimed,
}

/// A webhook named this flow: refresh its item now (and push its next poll out, so the cron
/// poller skips a flow that was just read). `None`: no item waits on the flow.
pub async fn refresh_flow(
    engine: &Engine,
    flow_id: uuid::Uuid,
) -> Result<Option<Polled>, JobError> {
    match engine.store.item_by_flow(flow_id).await? {
        Some(item) if item.state.is_waiting_on_payee() => Ok(Some(poll_one(engine, &item).await?)),
        _ => Ok(None),
    }
}

/// A webhook named this transfer: if it is ours (by metadata) and its item still waits for the
/// outcome of the call, record it — Dots just told us the money moved.
pub async fn refresh_transfer(
    engine: &Engine,
    transfer_id: uuid::Uuid,
) -> Result<Option<ItemId>, JobError> {
    if engine.store.transfer_recorded(transfer_id).await? {
        // Already known: the usual case, and it costs no Dots call.
        return Ok(None);
    }
    let t = match engine.dots.get_transfer(transfer_id).await {
        Ok(t) => t,
        Err(e) => {
            warn!(%transfer_id, error = %e, "cannot read the transfer a webhook named");
            return Ok(None);
        }
    };
    let Some(item_id) = t
        .metadata_str("payrun_item_id")
        .and_then(|s| s.parse::<ItemId>().ok())
    else {
        return Ok(None);
    };
    let Some(item) = engine.store.item(item_id).await? else {
        return Ok(None);
    };
    if item.state == ItemState::Transferring
        && item.transfer_id.is_none()
        && !matches!(t.status.as_str(), "failed" | "canceled" | "reversed")
        && engine
            .store
            .record_transfer_done(item_id, t.id, "confirmed by a Dots webhook")
            .await?
            .is_some()
    {
        return Ok(Some(item_id));
    }
    Ok(None)
}

#[instrument(skip_all, fields(batch_id = %item.batch_id, item_id = %item.id))]
async fn poll_one(engine: &Engine, item: &ItemRecord) -> Result<Polled, JobError> {
    let id = item.id;
    let state = item.state;
    let flow_id = match state {
        ItemState::Onboarding => item.onboarding_flow_id,
        _ => item.payout_flow_id,
    };
    let Some(flow_id) = flow_id else {
        engine
            .store
            .fail_item(id, state, "waiting on a flow that was never recorded")
            .await?;
        return Ok(Polled::Open);
    };
    match engine.dots.get_flow(flow_id).await {
        Ok(flow) => match state {
            ItemState::Onboarding => match flow.user_id {
                Some(user) => {
                    engine
                        .store
                        .begin_transfer(id, state, &item.payee_id, user)
                        .await?;
                    Ok(Polled::Onboarded(id))
                }
                None => {
                    engine
                        .store
                        .record_poll(id, state, engine.poll_at(item, PollOutcome::Open))
                        .await?;
                    Ok(Polled::Open)
                }
            },
            _ if flow.is_complete() => {
                engine.store.complete_item(id, 1).await?;
                Ok(Polled::Completed)
            }
            _ => still_open(engine, item).await,
        },
        Err(e) if e.is_not_found() => {
            engine
                .store
                .fail_item(
                    id,
                    state,
                    &format!("flow {flow_id} no longer exists at Dots"),
                )
                .await?;
            Ok(Polled::Open)
        }
        Err(e) => {
            // Try again in seconds, the flow's schedule unmoved; a flow read never changes money.
            let failed = PollOutcome::Failed {
                retry_after: e.retry_after(),
            };
            engine
                .store
                .record_poll_error(id, state, engine.poll_at(item, failed))
                .await?;
            engine
                .store
                .record_event(id, "poll_error", &e.to_string())
                .await?;
            Ok(Polled::Open)
        }
    }
}

/// A payout flow read still open: a reminder or the unclaimed mark if one is due
/// (`remind::decide`), else its next poll, no later than its next reminder.
async fn still_open(engine: &Engine, item: &ItemRecord) -> Result<Polled, JobError> {
    let (id, state) = (item.id, item.state);
    let now = engine.now();
    let unclaimed = item.unclaimed_at.is_some();
    let mut next = engine.poll_at(item, PollOutcome::Open);
    match remind::decide(
        &engine.reminders,
        item.reminders,
        item.reminder_due_at,
        unclaimed,
        now,
    ) {
        Reminder::Send(n) => {
            if engine.store.start_reminder(id, n).await?.is_some() {
                info!(
                    reminder = n,
                    "payout flow still open: sending a reminder with a fresh link"
                );
                return Ok(Polled::Reminded(id));
            }
            return Ok(Polled::Open); // its state changed meanwhile
        }
        Reminder::Unclaimed => {
            engine.store.mark_unclaimed(id, now).await?;
            engine.store.record_poll(id, state, next).await?;
            return Ok(Polled::Unclaimed);
        }
        Reminder::NotDue => {
            if let Some(due) = item
                .reminder_due_at
                .filter(|_| engine.reminders.enabled && !unclaimed)
            {
                next = next.min(due.max(now));
            }
        }
    }
    engine.store.record_poll(id, state, next).await?;
    Ok(Polled::Open)
}

impl Engine {
    /// When to poll `item`'s flow next after `outcome` (see `poll_next`), in unix ms.
    fn poll_at(&self, item: &ItemRecord, outcome: PollOutcome) -> i64 {
        let jitter = rand::random::<f64>();
        let delay = next_poll_delay(
            &self.settings,
            outcome,
            item.polls,
            item.poll_errors,
            jitter,
        );
        self.now() + delay.as_millis() as i64
    }
}
