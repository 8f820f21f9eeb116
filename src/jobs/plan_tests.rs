//! The transfer decision, row by row: every combination of key on record, call left open,
//! recorded outcome, key aged out, time budget spent and attempts made (which no longer
//! matter: the budget is time); then the give-up rule of every step.

use super::*;
use crate::batch::BatchId;
use crate::item::ItemState;
use crate::money::Cents;

const NOW: i64 = 100 * KEY_WINDOW_MS;

fn settings() -> WorkerSettings {
    crate::config::Settings::builtin().worker
}

fn item(
    key: bool,
    open: bool,
    outcome: Option<TransferOutcome>,
    aged: bool,
    last: bool,
) -> ItemRecord {
    let s = settings();
    let budget_ms = s.give_up_after_secs as i64 * 1000;
    let id = ItemId::for_line(BatchId::new_random(), 2);
    ItemRecord {
        id,
        batch_id: BatchId::new_random(),
        line: 2,
        payee_id: "p".into(),
        amount: Cents::from_stored(100).unwrap(),
        memo: None,
        first_name: None,
        last_name: None,
        email: None,
        country_code: None,
        phone_number: None,
        dots_user_id: Some(Uuid::from_u128(7)),
        state: ItemState::Transferring,
        onboarding_flow_id: None,
        onboarding_link: None,
        transfer_key: key.then(|| IdempotencyKey::derive(id, 3)),
        transfer_key_gen: 3,
        transfer_key_at: key.then_some(if aged { NOW - KEY_WINDOW_MS } else { NOW - 1 }),
        transfer_call_open: open,
        transfer_outcome: outcome,
        transfer_attempts: i64::from(key),
        transfer_id: None,
        payout_flow_id: None,
        payout_link: None,
        payout_call_open: false,
        attempts: 3,
        next_attempt_at: 1,
        next_poll_at: None,
        polls: 0,
        poll_errors: 0,
        lease_owner: None,
        lease_until: 0,
        last_error: None,
        api_calls: 0,
        updated_at: 0,
        step_since: Some(if last { NOW - budget_ms } else { NOW - 1 }),
        step_first_error: Some("HTTP 503".into()),
        event_version: 0,
        reminders: 0,
        reminder_due_at: None,
        reminder_pending: None,
        unclaimed_at: None,
        chunk_id: None,
    }
}

/// What the plan must be, as a table: `R` reconcile first, then send the same key (`same`),
/// a new generation (`next`) or wait (`wait`); `S` send without reconciling (`same`/`new`:
/// generation 3 derived now, as no key is on record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    SendSame,
    SendNew,
    ReconcileSame,
    ReconcileNext,
    ReconcileWait,
}

fn want(key: bool, open: bool, outcome: Option<TransferOutcome>, aged: bool) -> Want {
    use TransferOutcome::*;
    use Want::*;
    match (key, open, outcome, aged) {
        (false, _, _, _) => SendNew,
        (true, true, _, true) => ReconcileNext,
        (true, true, Some(DuplicateKey), false) => ReconcileWait,
        (true, true, _, false) => ReconcileSame,
        (true, false, Some(DuplicateKey), false) => ReconcileWait,
        (true, false, Some(DuplicateKey | Rerun | Ambiguous | Retryable), true) => ReconcileNext,
        (true, false, Some(Rerun), false) => ReconcileSame,
        (true, false, None | Some(Ok | Permanent | ReconciledNone), _) => SendSame,
        (true, false, Some(Ambiguous | Retryable), false) => SendSame,
    }
}

#[test]
fn every_row_of_the_transfer_decision() {
    let s = settings();
    let outcomes = std::iter::once(None).chain(TransferOutcome::ALL.into_iter().map(Some));
    let mut rows = 0;
    for key in [false, true] {
        for open in [false, true] {
            for outcome in outcomes.clone() {
                for aged in [false, true] {
                    for last in [false, true] {
                        for many in [false, true] {
                            let mut it = item(key, open, outcome, aged, last);
                            // Thousands of attempts within the budget are not the last.
                            it.attempts = if many { 5_000 } else { 3 };
                            let plan = TransferPlan::for_item(&it, NOW, &s);
                            let same = KeyUse {
                                key: IdempotencyKey::derive(it.id, 3),
                                generation: 3,
                                key_at: it.transfer_key_at.unwrap_or(NOW),
                            };
                            let next = KeyUse::new(it.id, 4, NOW);
                            let user = Uuid::from_u128(7);
                            let send = |key| TransferAction::Send { user, key };
                            let reconcile = |if_none| TransferAction::Reconcile { user, if_none };
                            let expected = match want(key, open, outcome, aged) {
                                Want::SendSame => send(same),
                                Want::SendNew => send(KeyUse::new(it.id, 3, NOW)),
                                Want::ReconcileSame => reconcile(IfNone::Send(same)),
                                Want::ReconcileNext => reconcile(IfNone::Send(next)),
                                Want::ReconcileWait => reconcile(IfNone::Wait),
                            };
                            let row = format!(
                                "key {key} open {open} {outcome:?} aged {aged} last {last} many {many}"
                            );
                            assert_eq!(plan.action, expected, "{row}");
                            // A step may reconcile when it starts by reconciling, or when its call
                            // may be the last attempt (which looks at Dots before failing).
                            let reconciles = matches!(expected, TransferAction::Reconcile { .. });
                            assert_eq!(plan.may_reconcile(), reconciles || last, "{row}");
                            rows += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(rows, 2 * 2 * 8 * 2 * 2 * 2);
}

#[test]
fn a_recorded_transfer_or_a_missing_user_decides_before_any_key() {
    let s = settings();
    let mut it = item(true, true, Some(TransferOutcome::Ambiguous), true, true);
    it.transfer_id = Some(Uuid::from_u128(9));
    let plan = TransferPlan::for_item(&it, NOW, &s);
    assert_eq!(plan.action, TransferAction::AlreadyMade(Uuid::from_u128(9)));
    assert!(!plan.may_reconcile());
    it.transfer_id = None;
    it.dots_user_id = None;
    let plan = TransferPlan::for_item(&it, NOW, &s);
    assert!(matches!(plan.action, TransferAction::Fail(_)));
    assert!(!plan.may_reconcile());
}

#[test]
fn a_failed_call_reconciles_before_failing_only_after_an_unclear_attempt() {
    use AfterFailure::*;
    use CallOutcome::*;
    let s = settings();
    // (outcome, last attempt, earlier attempts) -> what follows
    let rows = [
        (DuplicateKey, false, 0, ReconcileNext),
        (DuplicateKey, true, 2, ReconcileNext),
        (Retryable, false, 0, RetryLater),
        (Ambiguous, false, 2, RetryLater),
        (Retryable, true, 1, Fail),
        (Retryable, true, 2, ReconcileThenFail),
        (Ambiguous, true, 0, ReconcileThenFail),
        (Permanent, false, 1, Fail),
        (Permanent, false, 2, ReconcileThenFail),
        (Permanent, true, 0, Fail),
        (InsufficientFunds, false, 0, HoldForFunds),
        (InsufficientFunds, false, 2, HoldForFunds),
        (InsufficientFunds, true, 0, HoldForFunds),
        (InsufficientFunds, true, 2, HoldForFunds),
    ];
    for (outcome, last, earlier, expected) in rows {
        let mut it = item(true, false, None, false, last);
        it.transfer_attempts = earlier;
        assert_eq!(
            after_failure(&it, outcome, NOW, &s),
            expected,
            "{outcome:?} last {last} earlier {earlier}"
        );
    }
}

#[test]
fn a_step_gives_up_when_its_time_budget_is_spent_not_after_a_count() {
    use ErrorClass::*;
    use StepAfter::*;
    let s = settings();
    let budget = s.give_up_after_secs as i64 * 1000;
    assert_eq!(budget, 72 * 3600 * 1000, "the default budget is 72 h");
    // (class, the step's first failure this long ago (None: this is the first), attempts, then)
    let rows = [
        (Retryable, None, 0, RetryLater),
        (Ambiguous, None, 0, RetryLater),
        (Retryable, Some(budget - 1), 10_000, RetryLater),
        (Ambiguous, Some(budget - 1), 2, RetryLater),
        (Retryable, Some(budget), 2, GaveUp),
        (Ambiguous, Some(budget + 1), 0, GaveUp),
        (DuplicateKey, Some(budget), 0, GaveUp),
        (Permanent, None, 0, Refused),
        (Permanent, Some(budget - 1), 0, Refused),
    ];
    for (class, ago, attempts, expected) in rows {
        let mut it = item(true, false, None, false, false);
        it.step_since = ago.map(|a| NOW - a);
        it.attempts = attempts;
        assert_eq!(
            after_step_failure(&it, class, NOW, &s),
            expected,
            "{class:?} {ago:?} {attempts}"
        );
        assert_eq!(last_attempt(&it, NOW, &s), ago.is_some_and(|a| a >= budget));
    }
    // A budget of zero gives up at the first failure (the old max_attempts = 1).
    let mut zero = settings();
    zero.give_up_after_secs = 0;
    let mut it = item(true, false, None, false, false);
    it.step_since = None;
    assert_eq!(after_step_failure(&it, Retryable, NOW, &zero), GaveUp);
}

#[test]
fn an_item_that_gives_up_keeps_the_history_in_its_reason() {
    let mut it = item(true, false, None, false, true);
    it.attempts = 41;
    it.step_since = Some(NOW - (72 * 3600 + 125) * 1000);
    it.step_first_error = Some("cannot connect".into());
    assert_eq!(
        gave_up_reason(&it, NOW, "HTTP 503"),
        "gave up after 42 attempts over 3d 0h: first error: cannot connect; last error: HTTP 503"
    );
    it.step_since = Some(NOW - 125_000);
    it.step_first_error = Some("HTTP 503".into());
    assert_eq!(
        gave_up_reason(&it, NOW, "HTTP 503"),
        "gave up after 42 attempts over 2m 5s: HTTP 503"
    );
}

/// The route after a transfer, row by row: setting, the payee's stored answer (none, fresh or
/// stale, about this user or another, auto payout or not), a flow call open or a flow made.
#[test]
fn the_route_after_a_transfer_follows_the_setting_and_the_payees_fresh_answer() {
    use crate::config::PayoutFlowSetting::{Always, UnlessAutoPayout};
    let user = Uuid::from_u128(7);
    let transfer = Uuid::from_u128(9);
    let mut s = settings();
    s.user_cache_secs = 60;
    let fresh = NOW - 59_999;
    let stale = NOW - 60_000;
    let answer = |auto: bool, at: i64, who: Uuid| PayeeRoute {
        user: who,
        auto_payout: auto,
        read_at: at,
    };
    let other = Uuid::from_u128(8);
    let (flow, read, wait) = (
        Route::PayoutFlow,
        Route::ReadUser(user),
        Route::AwaitTransfer(transfer),
    );
    // (setting, cached answer, call open, flow made) -> route
    let rows: Vec<(_, Option<PayeeRoute>, bool, bool, Route)> = vec![
        (Always, None, false, false, flow),
        (Always, Some(answer(true, fresh, user)), false, false, flow),
        (UnlessAutoPayout, None, false, false, read),
        (
            UnlessAutoPayout,
            Some(answer(true, fresh, user)),
            false,
            false,
            wait,
        ),
        (
            UnlessAutoPayout,
            Some(answer(false, fresh, user)),
            false,
            false,
            flow,
        ),
        (
            UnlessAutoPayout,
            Some(answer(true, stale, user)),
            false,
            false,
            read,
        ),
        (
            UnlessAutoPayout,
            Some(answer(false, stale, user)),
            false,
            false,
            read,
        ),
        (
            UnlessAutoPayout,
            Some(answer(true, fresh, other)),
            false,
            false,
            read,
        ),
        (
            UnlessAutoPayout,
            Some(answer(true, fresh, user)),
            true,
            false,
            flow,
        ),
        (
            UnlessAutoPayout,
            Some(answer(true, fresh, user)),
            false,
            true,
            flow,
        ),
        (UnlessAutoPayout, None, true, false, flow),
    ];
    for (setting, cached, open, made, want) in rows {
        s.payout_flow = setting;
        let mut it = item(true, false, None, false, false);
        it.state = ItemState::Transferred;
        it.transfer_id = Some(transfer);
        it.payout_call_open = open;
        it.payout_flow_id = made.then(|| Uuid::from_u128(11));
        assert_eq!(
            route(&it, cached.as_ref(), NOW, &s),
            want,
            "{setting:?} {cached:?} open={open} made={made}"
        );
    }
    // No transfer id on record: nothing to watch, the flow as documented.
    s.payout_flow = UnlessAutoPayout;
    let mut it = item(true, false, None, false, false);
    it.state = ItemState::Transferred;
    let cached = answer(true, fresh, user);
    assert_eq!(route(&it, Some(&cached), NOW, &s), Route::PayoutFlow);
}

#[test]
fn only_a_completed_transfer_completes_an_auto_payout_item_and_a_failed_one_fails_it() {
    use crate::dots::types::TransferStatus as T;
    for (status, want) in [
        ("completed", TransferWait::Complete),
        ("created", TransferWait::Wait),
        ("pending", TransferWait::Wait),
        ("flagged", TransferWait::Wait),
        ("something-new", TransferWait::Wait),
    ] {
        assert_eq!(on_transfer_status(T::parse(status)), want, "{status}");
    }
    for status in ["failed", "canceled", "reversed"] {
        assert!(
            matches!(on_transfer_status(T::parse(status)), TransferWait::Fail(_)),
            "{status}"
        );
    }
}
