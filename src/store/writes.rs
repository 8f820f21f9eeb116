//! Every write to an item's state, in the order of the state diagram (`item` module docs): one
//! guarded transition or in-state update per step of the job, the poller, webhooks and the
//! operator, built on the machinery in `transitions.rs`. See ARCHITECTURE.md, "Transfer safety
//! protocol".

use uuid::Uuid;

use super::guarded::Prepared;
use super::transitions::{Change, Set};
use super::{ItemRecord, Store, StoreError, now_ms, on_pool};
use crate::batch::ItemId;
use crate::item::{IdempotencyKey, ItemState, TransferOutcome};

pub use super::reminders::FlowMade;
pub use crate::item::CallOutcome;

impl Store {
    // pending -> onboarding

    /// pending -> onboarding: the onboarding flow exists at Dots; poll it from `next_poll_at`.
    /// `release`: a job's last write releases its lease in the same statement.
    pub async fn begin_onboarding(
        &self,
        id: ItemId,
        flow_id: Uuid,
        link: &str,
        next_poll_at: i64,
        release: Option<&str>,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let detail = format!("onboarding flow {flow_id} created");
        let set = Set::new()
            .val("onboarding_flow_id", flow_id.to_string())
            .val("onboarding_link", link)
            .val("next_poll_at", next_poll_at)
            .raw("polls = 0, poll_errors = 0, api_calls = api_calls + 1");
        let mut c = Change::new(set, &detail);
        c.release = release;
        let (from, to) = (ItemState::Pending, ItemState::Onboarding);
        self.transition_with(id, from, to, c).await
    }

    // pending | onboarding -> transferring

    /// pending|onboarding -> transferring: the payee's Dots user is known (and remembered for
    /// later batches, in the same transaction). No key yet: [`Store::record_transfer_intent`]
    /// stores it before the call.
    pub async fn begin_transfer(
        &self,
        id: ItemId,
        from: ItemState,
        payee_id: &str,
        user_id: Uuid,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let detail = format!("payee is Dots user {user_id}");
        let mut c = Change::new(begin_transfer_set(user_id), &detail);
        c.payee = Some((payee_id, user_id));
        self.transition_with(id, from, ItemState::Transferring, c)
            .await
    }

    /// pending -> transferring for a first transfer attempt (no key on record), with phase 1
    /// of the transfer in the same transaction: the payee's user as in
    /// [`Store::begin_transfer`], and the key, its birth time and the call marked open as in
    /// [`Store::record_transfer_intent`] — committed before any byte goes to Dots. Logs both
    /// events: the state change, then `transfer_intent`.
    pub async fn begin_transfer_with_intent(
        &self,
        id: ItemId,
        payee_id: &str,
        user_id: Uuid,
        key: IdempotencyKey,
        generation: u32,
        key_at: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = begin_transfer_set(user_id).and(intent_set(key, generation, key_at));
        let detail = format!("payee is Dots user {user_id}");
        let intent = intent_detail(key, generation);
        let mut c = Change::new(set, &detail);
        c.payee = Some((payee_id, user_id));
        c.also = Some(("transfer_intent", &intent));
        self.transition_with(id, ItemState::Pending, ItemState::Transferring, c)
            .await
    }

    // transferring: phase 1 and the closing of a call

    /// Phase 1 of a transfer: commit the key (and its birth time when it is new) and mark the
    /// call open, before any byte goes to Dots.
    pub async fn record_transfer_intent(
        &self,
        id: ItemId,
        key: IdempotencyKey,
        generation: u32,
        key_at: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.update_in_state(
            id,
            ItemState::Transferring,
            intent_set(key, generation, key_at),
            "transfer_intent",
            &intent_detail(key, generation),
        )
        .await
    }

    /// Phase 3, no success: the call is closed with its outcome; retry at `next_attempt_at`.
    /// `failed_at` (engine clock): the failure is the item's, an attempt counted and the
    /// step's budget started if it was not; `None`: held by an open circuit, nothing counted.
    pub async fn record_transfer_failure(
        &self,
        id: ItemId,
        outcome: CallOutcome,
        error: &str,
        next_attempt_at: i64,
        failed_at: Option<i64>,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = Set::new()
            .raw("transfer_call_open = 0")
            .val("transfer_outcome", outcome.as_str())
            .val("last_error", error)
            .and(charge(failed_at, error))
            .val("next_attempt_at", next_attempt_at);
        let detail = format!("{}: {error}", outcome.as_str());
        self.update_in_state(id, ItemState::Transferring, set, "transfer_error", &detail)
            .await
    }

    /// Reconciliation found no transfer for the item: the open call (if any) is closed as
    /// "none made", so the next attempt may proceed.
    pub async fn record_reconciled_none(
        &self,
        id: ItemId,
        api_calls: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = Set::new()
            .raw("transfer_call_open = 0")
            .val("transfer_outcome", TransferOutcome::ReconciledNone.as_str())
            .add("api_calls", api_calls);
        let detail = "no transfer found at Dots for this item";
        self.update_in_state(id, ItemState::Transferring, set, "reconcile", detail)
            .await
    }

    /// Phase 3 of a chunk's item that Dots refused (e.g. its user is unknown): the call is
    /// closed with `outcome` and the item failed with `reason`, in one transaction, and the
    /// chunker's lease (`owner`) released. `failed_at` as in
    /// [`Store::record_transfer_failure`].
    pub async fn record_transfer_refused(
        &self,
        id: ItemId,
        outcome: CallOutcome,
        reason: &str,
        failed_at: Option<i64>,
        owner: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = Set::new()
            .raw("transfer_call_open = 0, next_poll_at = NULL")
            .val("transfer_outcome", outcome.as_str())
            .val("last_error", reason)
            .and(charge(failed_at, reason));
        let mut c = Change::new(set, reason);
        c.release = Some(owner);
        self.transition_with(id, ItemState::Transferring, ItemState::Failed, c)
            .await
    }

    // transferring -> transferred

    /// Phase 3, success: transferring -> transferred.
    pub async fn record_transfer_done(
        &self,
        id: ItemId,
        transfer_id: Uuid,
        how: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.transition(
            id,
            ItemState::Transferring,
            ItemState::Transferred,
            transfer_done_set(transfer_id),
            &format!("transfer {transfer_id} {how}"),
        )
        .await
    }

    /// Phase 3, success, and the payout flow's intent in the same transaction: transferring
    /// -> transferred with the payout-flow call marked open as [`Store::record_payout_intent`]
    /// does, for a job that makes that call next. Logs the state change, then `payout_intent`.
    pub async fn record_transfer_done_with_payout_intent(
        &self,
        id: ItemId,
        transfer_id: Uuid,
        how: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = transfer_done_set(transfer_id).and(payout_intent_set());
        let detail = format!("transfer {transfer_id} {how}");
        let mut c = Change::new(set, &detail);
        c.also = Some(("payout_intent", PAYOUT_INTENT_DETAIL));
        let (from, to) = (ItemState::Transferring, ItemState::Transferred);
        self.transition_with(id, from, to, c).await
    }

    // transferred: the payout flow's call

    /// Payout-flow creation has no idempotency key at Dots: record that a call is open first.
    pub async fn record_payout_intent(&self, id: ItemId) -> Result<Option<ItemRecord>, StoreError> {
        self.update_in_state(
            id,
            ItemState::Transferred,
            payout_intent_set(),
            "payout_intent",
            PAYOUT_INTENT_DETAIL,
        )
        .await
    }

    /// The payout-flow call failed before reaching Dots (retryable or refused): no flow was made.
    pub async fn close_payout_call(&self, id: ItemId) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query("UPDATE items SET payout_call_open = 0 WHERE id = $1")
            .bind(id.to_string()).execute(p).await?; });
        Ok(())
    }

    // transferred -> awaiting_payout -> completed

    /// transferred -> awaiting_payout: the payout flow exists; its link is the payee's.
    /// `release`: a job's last write releases its lease in the same statement. `reminder`:
    /// the flow is reminder `n`'s fresh one (the item's `reminder_pending`): the write counts
    /// it and emits `item.reminder` instead of `item.payout_link`. `reminder_due_at`: when the
    /// next reminder (or the unclaimed mark) is due, `None` with reminders off.
    pub async fn record_payout_flow(
        &self,
        id: ItemId,
        flow: FlowMade<'_>,
        release: Option<&str>,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let detail = payout_flow_detail(&flow);
        let c = payout_flow_change(&flow, &detail, release);
        let (from, to) = (ItemState::Transferred, ItemState::AwaitingPayout);
        self.transition_with(id, from, to, c).await
    }

    /// [`Store::record_payout_flow`] for several items in one transaction (each guarded, with
    /// its events, as alone: `store::guarded`), the lease of `release` released. Returns each
    /// item's row as written (`None`: not transferred any more), in order.
    pub async fn record_payout_flows(
        &self,
        flows: &[(ItemId, FlowMade<'_>)],
        release: &str,
    ) -> Result<Vec<Option<ItemRecord>>, StoreError> {
        let now = now_ms();
        let details: Vec<String> = flows.iter().map(|(_, f)| payout_flow_detail(f)).collect();
        let (from, to) = (ItemState::Transferred, ItemState::AwaitingPayout);
        let many = flows
            .iter()
            .zip(&details)
            .map(|((id, flow), detail)| {
                let c = payout_flow_change(flow, detail, Some(release));
                Prepared::new(*id, from, to, c, now)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.transitions_with(many, now).await
    }

    /// awaiting_payout -> completed.
    pub async fn complete_item(
        &self,
        id: ItemId,
        api_calls: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.transition(
            id,
            ItemState::AwaitingPayout,
            ItemState::Completed,
            Set::new()
                .raw("next_poll_at = NULL")
                .add("api_calls", api_calls),
            "payee completed the payout flow",
        )
        .await
    }

    // transferred -> completed (no payout flow)

    /// transferred -> completed: the payee's Dots user is paid out automatically and the transfer
    /// is completed at Dots, so no payout flow is made.
    pub async fn complete_without_flow(
        &self,
        id: ItemId,
        transfer_id: Uuid,
        api_calls: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.transition(
            id,
            ItemState::Transferred,
            ItemState::Completed,
            Set::new()
                .raw("next_poll_at = NULL, payout_call_open = 0")
                .add("api_calls", api_calls),
            &format!("transfer {transfer_id} completed; the payee's Dots user pays out automatically (no payout flow)"),
        )
        .await
    }

    /// A transferred item waits for its transfer to complete at Dots: looked at again at `at`
    /// (no attempt counted; `polls` counts the looks, along `worker.poll_schedule_secs`).
    pub async fn wait_for_transfer(
        &self,
        id: ItemId,
        at: i64,
        api_calls: i64,
    ) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE items SET next_attempt_at = $1, queued_until = 0, polls = polls + 1,
                    api_calls = api_calls + $2
             WHERE id = $3 AND state = 'transferred'")
            .bind(at.max(1)).bind(api_calls).bind(id.to_string()).execute(p).await?; });
        Ok(())
    }

    // any working state: a retry, or -> failed

    /// A non-transfer step failed in a retryable way: note it and retry at `next_attempt_at`.
    pub async fn record_retry(
        &self,
        id: ItemId,
        state: ItemState,
        error: &str,
        next_attempt_at: i64,
        failed_at: Option<i64>,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = Set::new()
            .val("last_error", error)
            .and(charge(failed_at, error))
            .val("next_attempt_at", next_attempt_at);
        let kind = if failed_at.is_some() { "retry" } else { "held" };
        self.update_in_state(id, state, set, kind, error).await
    }

    /// Any state -> failed, with the reason kept as `last_error`.
    pub async fn fail_item(
        &self,
        id: ItemId,
        from: ItemState,
        reason: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = Set::new()
            .val("last_error", reason)
            .raw("next_poll_at = NULL, transfer_call_open = 0");
        self.transition(id, from, ItemState::Failed, set, reason)
            .await
    }

    // the operator's: rerun, cancel, a new flow link

    /// Operator rerun of a failed item: back to `transferred` when the money already moved
    /// (only the payout flow is redone), else to `pending` with any earlier transfer attempt
    /// marked for reconciliation before a new call.
    pub async fn rerun_item(
        &self,
        id: ItemId,
        has_transfer: bool,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = Set::new().raw("next_attempt_at = 1, last_error = NULL");
        if has_transfer {
            self.transition(
                id,
                ItemState::Failed,
                ItemState::Transferred,
                set,
                "rerun by operator: transfer already made, redoing the payout flow",
            )
            .await
        } else {
            self.transition(
                id,
                ItemState::Failed,
                ItemState::Pending,
                set.raw(
                    "transfer_outcome = CASE WHEN transfer_key IS NULL THEN NULL ELSE 'rerun' END",
                ),
                "rerun by operator: any earlier transfer attempt is reconciled before a new one",
            )
            .await
        }
    }

    /// Cancels an item that has not transferred; `Ok(None)`: it was not in `from` any more,
    /// or it is a failed item that may have been paid. A failed item is canceled only if it is
    /// definitely unpaid: no transfer recorded, and either no key on record or its only
    /// attempt's outcome proves nothing moved (Dots refused it, or reconciliation found none).
    /// The rule is this statement's guard, so no caller can skip it.
    pub async fn cancel_item(
        &self,
        id: ItemId,
        from: ItemState,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let unpaid = definitely_unpaid_sql();
        let set = Set::new().raw("next_poll_at = NULL");
        let mut c = Change::new(set, "canceled by operator");
        if from == ItemState::Failed {
            c.guard = Some(&unpaid);
        }
        self.transition_with(id, from, ItemState::Canceled, c).await
    }

    /// A new flow link for a payee whose link went stale: the item steps back so the job makes
    /// a new flow (payout: awaiting_payout -> transferred; onboarding: onboarding -> pending).
    pub async fn renew_flow(
        &self,
        id: ItemId,
        from: ItemState,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let to = match from {
            ItemState::AwaitingPayout => ItemState::Transferred,
            _ => ItemState::Pending,
        };
        // A fresh link from the operator gives an unclaimed item a new last delay (reminders).
        let set = Set::new().raw(
            "next_poll_at = NULL, next_attempt_at = 1, payout_call_open = 0, unclaimed_at = NULL",
        );
        self.transition(id, from, to, set, "new flow link requested by operator")
            .await
    }
}

/// What a failure charges to the item: with `failed_at`, one attempt, and the step's first
/// failure (time and error) unless one is on record; without (held by a circuit), nothing.
fn charge(failed_at: Option<i64>, error: &str) -> Set {
    match failed_at {
        Some(at) => Set::new()
            .raw("attempts = attempts + 1")
            .first("step_since", at)
            .first("step_first_error", error),
        None => Set::new(),
    }
}

/// The `SET` of pending|onboarding -> transferring.
fn begin_transfer_set(user_id: Uuid) -> Set {
    Set::new()
        .val("dots_user_id", user_id.to_string())
        .raw("next_poll_at = NULL, next_attempt_at = 1")
}

/// Phase 1's `SET` (see [`Store::record_transfer_intent`]).
fn intent_set(key: IdempotencyKey, generation: u32, key_at: i64) -> Set {
    Set::new()
        .val("transfer_key", key.to_string())
        .val("transfer_key_gen", i64::from(generation))
        .val("transfer_key_at", key_at)
        .raw("transfer_call_open = 1")
        .raw("transfer_attempts = transfer_attempts + 1, api_calls = api_calls + 1")
}

fn intent_detail(key: IdempotencyKey, generation: u32) -> String {
    format!("POST /v2/transfers with idempotency_key {key} (generation {generation})")
}

/// The `SET` of phase 3's success.
fn transfer_done_set(transfer_id: Uuid) -> Set {
    Set::new()
        .val("transfer_id", transfer_id.to_string())
        .raw("transfer_call_open = 0")
        .val("transfer_outcome", TransferOutcome::Ok.as_str())
        .raw("next_attempt_at = 1, last_error = NULL")
}

/// The `SET` of a payout flow's intent.
fn payout_intent_set() -> Set {
    Set::new().raw("payout_call_open = 1, api_calls = api_calls + 1")
}

pub(super) const PAYOUT_INTENT_DETAIL: &str = "POST /v2/flows steps [payout]";

/// A failed item that is definitely unpaid (see [`Store::cancel_item`]), as SQL.
fn definitely_unpaid_sql() -> String {
    let proves: Vec<String> = TransferOutcome::ALL
        .into_iter()
        .filter(|o| o.proves_unpaid())
        .map(|o| format!("'{}'", o.as_str()))
        .collect();
    format!(
        "transfer_id IS NULL AND (transfer_key IS NULL OR
         (transfer_attempts <= 1 AND transfer_outcome IN ({})))",
        proves.join(", ")
    )
}

/// The event detail of a payout flow made.
fn payout_flow_detail(flow: &FlowMade<'_>) -> String {
    match flow.reminder {
        Some(n) => format!(
            "payout flow {} created for reminder {n}: {}",
            flow.flow_id, flow.link
        ),
        None => format!("payout flow {} created: {}", flow.flow_id, flow.link),
    }
}

/// The write that records a payout flow made (transferred -> awaiting_payout).
fn payout_flow_change<'a>(
    flow: &FlowMade<'a>,
    detail: &'a str,
    release: Option<&'a str>,
) -> Change<'a> {
    let mut set = Set::new()
        .val("payout_flow_id", flow.flow_id.to_string())
        .val("payout_link", flow.link)
        .raw("payout_call_open = 0")
        .val("next_poll_at", flow.next_poll_at)
        .raw("polls = 0, poll_errors = 0, next_attempt_at = 1, last_error = NULL")
        .raw("reminder_pending = NULL");
    set = match flow.reminder_due_at {
        Some(at) => set.val("reminder_due_at", at),
        None => set.raw("reminder_due_at = NULL"),
    };
    if let Some(n) = flow.reminder {
        set = set.val("reminders", n);
    }
    let mut c = Change::new(set, detail);
    c.release = release;
    c.reminder = flow.reminder;
    c
}
