//! The transfer step's decision, in one pure function: from the item as stored, the clock and
//! the settings, [`TransferPlan::for_item`] says whether to record a transfer already on file,
//! fail, reconcile first, or send with which key; [`after_failure`] says what a failed call
//! leads to; [`after_step_failure`] decides the same for the other steps' calls (flows), and
//! [`last_attempt`] is the time budget both share: a step gives up `worker.give_up_after_secs`
//! after its first failure, whatever the count (see [`gave_up_reason`] for the history an item
//! that gives up keeps). [`route`] decides what follows a transfer (a payout flow, or none for a
//! payee Dots pays out automatically: read their user, then wait for the transfer to complete,
//! [`on_transfer_status`]). No I/O: `transfer.rs` carries the plan out, and `lease.rs` reads the same plan to
//! know whether the step may call Dots more than once (reconcile). See ARCHITECTURE.md,
//! "Transfer safety protocol".

use uuid::Uuid;

use crate::batch::ItemId;
use crate::config::{PayoutFlowSetting, WorkerSettings};
use crate::dots::client::ErrorClass;
use crate::dots::types::TransferStatus;
use crate::item::{CallOutcome, IdempotencyKey, TransferOutcome};
use crate::store::{ItemRecord, PayeeRoute};

/// How long we trust Dots to remember a key (it keeps them 24 h).
pub const KEY_WINDOW_MS: i64 = 23 * 3600 * 1000;

/// The key a transfer call goes out with, and what phase 1 records for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUse {
    pub key: IdempotencyKey,
    pub generation: u32,
    /// When the key was first used (kept for a reused key, `now` for a new one).
    pub key_at: i64,
}

impl KeyUse {
    fn new(item: ItemId, generation: u32, now: i64) -> KeyUse {
        KeyUse {
            key: IdempotencyKey::derive(item, generation),
            generation,
            key_at: now,
        }
    }
}

/// What reconciliation that finds no transfer leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfNone {
    /// Send with this key (the same one, or the next generation once the old one aged out).
    Send(KeyUse),
    /// Dots saw the key but lists no transfer: the first request may still be in flight
    /// there. Wait (backoff), then retry the same key.
    Wait,
}

/// The transfer step for an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferAction {
    /// The transfer id is on record: record the item as transferred, never pay again.
    AlreadyMade(Uuid),
    /// Nothing can be paid: fail the item with this reason.
    Fail(&'static str),
    /// An earlier call may have moved money: list the user's transfers first.
    Reconcile { user: Uuid, if_none: IfNone },
    /// Commit this key as the intent, then pay `user`.
    Send { user: Uuid, key: KeyUse },
}

/// The decision of one transfer step, and what the step may lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferPlan {
    pub action: TransferAction,
    /// A failed call of this step may look at Dots before failing the item
    /// ([`AfterFailure::ReconcileThenFail`]).
    may_reconcile_on_failure: bool,
}

impl TransferPlan {
    /// The plan for `item` (pending with a known Dots user, or transferring) at `now` on the
    /// engine's clock.
    pub fn for_item(item: &ItemRecord, now: i64, settings: &WorkerSettings) -> TransferPlan {
        let action = action_for(item, now);
        let may_reconcile_on_failure = matches!(action, TransferAction::Send { .. })
            && (last_attempt(item, now, settings) || had_unclear_attempts(item));
        TransferPlan {
            action,
            may_reconcile_on_failure,
        }
    }

    /// Whether carrying the plan out may call Dots more than once (list transfers besides
    /// the transfer call): the lease must then be fresh (see `lease.rs`).
    pub fn may_reconcile(&self) -> bool {
        matches!(self.action, TransferAction::Reconcile { .. }) || self.may_reconcile_on_failure
    }
}

fn action_for(item: &ItemRecord, now: i64) -> TransferAction {
    let Some(user) = item.dots_user_id else {
        return TransferAction::Fail("no Dots user id to pay");
    };
    if let Some(t) = item.transfer_id {
        return TransferAction::AlreadyMade(t);
    }
    let Some(key) = item.transfer_key else {
        let key = KeyUse::new(item.id, item.transfer_key_gen, now);
        return TransferAction::Send { user, key };
    };
    let outcome = item.transfer_outcome;
    let aged_out = item.transfer_key_at.map_or(0, |t| now - t) >= KEY_WINDOW_MS;
    let same = KeyUse {
        key,
        generation: item.transfer_key_gen,
        key_at: item.transfer_key_at.unwrap_or(now),
    };
    let must_reconcile = item.transfer_call_open
        || matches!(
            outcome,
            Some(TransferOutcome::DuplicateKey | TransferOutcome::Rerun)
        )
        || (outcome.is_some_and(TransferOutcome::is_unclear) && aged_out);
    if !must_reconcile {
        return TransferAction::Send { user, key: same };
    }
    let if_none = if aged_out {
        // Proven absent and the key is forgotten by Dots: a new key.
        IfNone::Send(KeyUse::new(item.id, item.transfer_key_gen + 1, now))
    } else if outcome == Some(TransferOutcome::DuplicateKey) {
        IfNone::Wait
    } else {
        IfNone::Send(same)
    };
    TransferAction::Reconcile { user, if_none }
}

/// What a transfer call that failed with `outcome` leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Dots refused the key as a duplicate: reconcile on the next turn, straight away.
    ReconcileNext,
    /// Retry later (backoff), with the same key.
    RetryLater,
    /// Out of attempts or refused, after an unclear attempt: look at Dots before failing.
    ReconcileThenFail,
    /// Out of attempts or refused, and nothing can have moved: fail.
    Fail,
    /// The App wallet is short: nothing moved; no attempt is counted, the item waits and
    /// its batch (every batch still to pay) is held for funds (`jobs::funds`).
    HoldForFunds,
}

/// The decision after a failed call at `now`; `item` is the row as it was before the call's
/// intent.
pub fn after_failure(
    item: &ItemRecord,
    outcome: CallOutcome,
    now: i64,
    settings: &WorkerSettings,
) -> AfterFailure {
    if outcome == CallOutcome::DuplicateKey {
        return AfterFailure::ReconcileNext;
    }
    if outcome == CallOutcome::InsufficientFunds {
        // A definite refusal of this request: the same key is sent again once funded.
        return AfterFailure::HoldForFunds;
    }
    if outcome != CallOutcome::Permanent && !last_attempt(item, now, settings) {
        return AfterFailure::RetryLater;
    }
    if had_unclear_attempts(item) || outcome == CallOutcome::Ambiguous {
        AfterFailure::ReconcileThenFail
    } else {
        AfterFailure::Fail
    }
}

/// A failure at `now` uses up the step's time budget: `worker.give_up_after_secs` have passed
/// since the step's first failure (`step_since`; a first failure is its own start).
pub fn last_attempt(item: &ItemRecord, now: i64, settings: &WorkerSettings) -> bool {
    let since = item.step_since.unwrap_or(now);
    now - since >= settings.give_up_after_secs as i64 * 1000
}

/// What a failed call of a step other than the transfer (a flow) leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAfter {
    /// Retry later (backoff); an attempt is counted and the step's budget runs.
    RetryLater,
    /// Dots refused the request for the item: fail it.
    Refused,
    /// Retryable or unclear for the whole budget: fail it with the history.
    GaveUp,
}

/// The decision after a flow call failed with `class` at `now`.
pub fn after_step_failure(
    item: &ItemRecord,
    class: ErrorClass,
    now: i64,
    settings: &WorkerSettings,
) -> StepAfter {
    match class {
        ErrorClass::Permanent => StepAfter::Refused,
        _ if last_attempt(item, now, settings) => StepAfter::GaveUp,
        _ => StepAfter::RetryLater,
    }
}

/// The reason an item that gave up fails with: how many attempts over how long, the first
/// and the last error.
pub fn gave_up_reason(item: &ItemRecord, now: i64, last: &str) -> String {
    let since = item.step_since.unwrap_or(now);
    let attempts = item.attempts + 1;
    let took = humanize_ms(now - since);
    match item.step_first_error.as_deref() {
        Some(first) if first != last => format!(
            "gave up after {attempts} attempts over {took}: first error: {first}; last error: {last}"
        ),
        _ => format!("gave up after {attempts} attempts over {took}: {last}"),
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn humanize_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// What a transferred item does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Make (or recover) the payout flow: the documented Dots flow.
    PayoutFlow,
    /// No answer about the payee's Dots user within `worker.user_cache_secs`: read it
    /// (`GET /v2/users/{id}`), store it, and decide again.
    ReadUser(Uuid),
    /// The payee's Dots user pays out automatically: no flow; read the transfer's status.
    AwaitTransfer(Uuid),
}

/// The route of a transferred `item` at `now`, given the payee's stored auto-payout answer.
/// Whatever the setting, an item whose payout flow call is open (a crash mid-call: a flow may
/// exist) or that already had a flow (an operator asked for a new link) gets a flow.
pub fn route(
    item: &ItemRecord,
    cached: Option<&PayeeRoute>,
    now: i64,
    settings: &WorkerSettings,
) -> Route {
    if settings.payout_flow == PayoutFlowSetting::Always
        || item.payout_call_open
        || item.payout_flow_id.is_some()
    {
        return Route::PayoutFlow;
    }
    let (Some(user), Some(transfer)) = (item.dots_user_id, item.transfer_id) else {
        return Route::PayoutFlow;
    };
    match trusted_answer(cached, user, now, settings) {
        None => Route::ReadUser(user),
        Some(true) => Route::AwaitTransfer(transfer),
        Some(false) => Route::PayoutFlow,
    }
}

/// The stored auto-payout answer, if it is about `user` and younger than
/// `worker.user_cache_secs` at `now`; `None`: read the user again.
pub fn trusted_answer(
    cached: Option<&PayeeRoute>,
    user: Uuid,
    now: i64,
    settings: &WorkerSettings,
) -> Option<bool> {
    cached
        .filter(|r| r.user == user && now - r.read_at < settings.user_cache_secs as i64 * 1000)
        .map(|r| r.auto_payout)
}

/// What the transfer's status (the spec's `transfer.status`) means for an item on the
/// auto-payout route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferWait {
    /// `completed`: the item is completed, with no payout flow.
    Complete,
    /// `created`, `pending`, `flagged` (under review) or a status the spec does not list: look
    /// again later, along `worker.poll_schedule_secs`.
    Wait,
    /// `failed`, `canceled`, `reversed`: the money is not (or no longer) the payee's.
    Fail(&'static str),
}

pub fn on_transfer_status(status: TransferStatus) -> TransferWait {
    match status {
        TransferStatus::Completed => TransferWait::Complete,
        TransferStatus::Created
        | TransferStatus::Pending
        | TransferStatus::Flagged
        | TransferStatus::Unknown => TransferWait::Wait,
        TransferStatus::Failed => TransferWait::Fail("the transfer failed at Dots"),
        TransferStatus::Canceled => TransferWait::Fail("the transfer was canceled at Dots"),
        TransferStatus::Reversed => TransferWait::Fail("the transfer was reversed at Dots"),
    }
}

/// Earlier attempts (before the one about to be made) may have moved money.
fn had_unclear_attempts(item: &ItemRecord) -> bool {
    item.transfer_attempts > 1
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
