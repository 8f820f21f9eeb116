//! Every row of a chunk's decisions (`chunk_plan`).

use super::*;
use crate::batch::{BatchId, ItemId};
use crate::config::Settings;
use crate::item::{IdempotencyKey, ItemState};
use crate::money::Cents;
use serde_json::json;

fn settings() -> WorkerSettings {
    Settings::builtin().worker
}

/// An item as the chunk's intent found it: pending, a first attempt.
fn first_attempt() -> ItemRecord {
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
        state: ItemState::Pending,
        onboarding_flow_id: None,
        onboarding_link: None,
        transfer_key: None,
        transfer_key_gen: 0,
        transfer_key_at: None,
        transfer_call_open: false,
        transfer_outcome: None,
        transfer_attempts: 0,
        transfer_id: None,
        payout_flow_id: None,
        payout_link: None,
        payout_call_open: false,
        attempts: 0,
        next_attempt_at: 1,
        next_poll_at: None,
        polls: 0,
        poll_errors: 0,
        lease_owner: None,
        lease_until: 0,
        last_error: None,
        api_calls: 0,
        updated_at: 0,
        step_since: None,
        step_first_error: None,
        event_version: 0,
        reminders: 0,
        reminder_due_at: None,
        reminder_pending: None,
        unclaimed_at: None,
        chunk_id: None,
    }
}

const NOW: i64 = 1_000_000_000_000;

#[test]
fn an_items_answer_decides_only_that_item() {
    let s = settings();
    let item = first_attempt();
    let t = Uuid::from_u128(99);
    let refused = |e: &str| ItemAnswer::Refused(e.to_string());
    #[rustfmt::skip]
    let rows = [
        (ItemAnswer::Made(t), ItemNext::Transferred(t)),
        (ItemAnswer::None, ItemNext::ReconcileAlone),
        (refused("duplicate idempotency key: 0b7c…"), ItemNext::ReconcileNow),
        (refused("Idempotency key already used"), ItemNext::ReconcileNow),
        (refused("transaction-insufficient-funds"), ItemNext::HoldForFunds),
        (refused("App wallet has insufficient funds"), ItemNext::HoldForFunds),
        (refused("User not found: 5a5a…"), ItemNext::Fail(CallOutcome::Permanent)),
        (refused("invalid-input"), ItemNext::Fail(CallOutcome::Permanent)),
    ];
    for (answer, want) in rows {
        assert_eq!(item_next(&item, &answer, NOW, &s), want, "{answer:?}");
    }
}

#[test]
fn a_chunks_failed_call_is_retried_reconciled_or_handed_to_its_items() {
    use ChunkNext::*;
    use ErrorClass::*;
    let f = |class, funds, held, sends, not_found| ChunkFailure {
        class,
        funds,
        held,
        sends,
        not_found,
    };
    let close = |outcome, charged| CloseAll { outcome, charged };
    #[rustfmt::skip]
    let rows = [
        // class, funds, held, sends, not found -> next
        (f(Retryable, false, false, 1, false), SendAgain),
        (f(Retryable, false, false, 3, false), close(CallOutcome::Retryable, true)),
        (f(Retryable, false, true, 1, false), close(CallOutcome::Retryable, false)),
        // Refused as a whole: nothing moved, no item's fault; the items go one by one.
        (f(Permanent, false, false, 1, false), close(CallOutcome::Permanent, false)),
        // 401/403: held, nothing counted.
        (f(Permanent, false, true, 1, false), close(CallOutcome::Retryable, false)),
        (f(Permanent, true, false, 1, false), HoldForFunds),
        // Unclear: look for the batch first; not found, the same request again, then alone.
        (f(Ambiguous, false, false, 1, false), Reconcile),
        (f(Ambiguous, false, false, 1, true), SendAgain),
        (f(Ambiguous, false, false, 3, true), ReleaseOpen { charged: true }),
        (f(Ambiguous, false, false, 3, false), Reconcile),
        (f(DuplicateKey, false, false, 2, false), Reconcile),
        (f(DuplicateKey, false, false, 3, true), ReleaseOpen { charged: true }),
        // An open circuit: no call to look with; each item reconciles later.
        (f(Ambiguous, false, true, 1, false), ReleaseOpen { charged: false }),
        (f(DuplicateKey, false, true, 1, false), ReleaseOpen { charged: false }),
    ];
    for (failure, want) in rows {
        assert_eq!(after_chunk_failure(failure, 3), want, "{failure:?}");
    }
}

fn sent(n: u128) -> TransferBatchItemRequest {
    let item = ItemId::for_line(BatchId::new_random(), n as u64);
    TransferBatchItemRequest {
        amount: -100 * n as i64,
        user_id: Uuid::from_u128(n),
        idempotency_key: IdempotencyKey::derive(item, 0).as_uuid(),
        tax_exempt: None,
        metadata: Some(json!({"payrun_item_id": item.to_string()})),
    }
}

fn answered(s: &TransferBatchItemRequest, key: bool, meta: bool) -> TransferBatchItem {
    TransferBatchItem {
        transfer_id: Some(Uuid::from_u128(1000 + s.user_id.as_u128())),
        amount: s.amount,
        user_id: s.user_id,
        metadata: meta.then(|| s.metadata.clone()).flatten(),
        error: None,
        idempotency_key: key.then_some(s.idempotency_key),
    }
}

fn batch(items: Vec<TransferBatchItem>) -> TransferBatch {
    TransferBatch {
        id: Uuid::from_u128(5),
        status: "completed".into(),
        metadata: None,
        items,
    }
}

#[test]
fn answers_are_matched_by_key_then_metadata_then_position_and_only_if_they_agree() {
    let (a, b, c) = (sent(1), sent(2), sent(3));
    let made = |s: &TransferBatchItemRequest| {
        ItemAnswer::Made(Uuid::from_u128(1000 + s.user_id.as_u128()))
    };
    let sent3 = [a.clone(), b.clone(), c.clone()];
    // Keys echoed, answered out of order.
    let got = batch(vec![
        answered(&c, true, false),
        answered(&a, true, false),
        answered(&b, true, false),
    ]);
    assert_eq!(
        match_answers(&sent3, &got),
        vec![made(&a), made(&b), made(&c)]
    );
    // No keys, our metadata echoed, out of order.
    let got = batch(vec![
        answered(&b, false, true),
        answered(&c, false, true),
        answered(&a, false, true),
    ]);
    assert_eq!(
        match_answers(&sent3, &got),
        vec![made(&a), made(&b), made(&c)]
    );
    // Neither: by position, when the counts agree.
    let got = batch(vec![
        answered(&a, false, false),
        answered(&b, false, false),
        answered(&c, false, false),
    ]);
    assert_eq!(
        match_answers(&sent3, &got),
        vec![made(&a), made(&b), made(&c)]
    );
    // By position, but the answer names another user: no answer for it.
    let mut wrong = answered(&b, false, false);
    wrong.user_id = Uuid::from_u128(77);
    let got = batch(vec![
        answered(&a, false, false),
        wrong,
        answered(&c, false, false),
    ]);
    assert_eq!(
        match_answers(&sent3, &got),
        vec![made(&a), ItemAnswer::None, made(&c)]
    );
    // Fewer answers than items and nothing to match by: none.
    let got = batch(vec![answered(&a, false, false)]);
    assert_eq!(match_answers(&sent3, &got), vec![ItemAnswer::None; 3]);
    // An amount echoed without its sign still matches; another amount does not.
    let mut unsigned = answered(&a, true, false);
    unsigned.amount = -unsigned.amount;
    let mut other = answered(&b, true, false);
    other.amount -= 1;
    let got = batch(vec![unsigned, other]);
    assert_eq!(
        match_answers(&[a.clone(), b.clone()], &got),
        vec![made(&a), ItemAnswer::None]
    );
    // An item error and an item with neither.
    let mut refused = answered(&a, true, false);
    refused.transfer_id = None;
    refused.error = Some("User not found: x".into());
    let mut blank = answered(&b, true, false);
    blank.transfer_id = None;
    let got = batch(vec![refused, blank]);
    assert_eq!(
        match_answers(&[a, b], &got),
        vec![
            ItemAnswer::Refused("User not found: x".into()),
            ItemAnswer::None
        ]
    );
}

#[test]
fn of_two_answers_for_one_item_a_transfer_made_wins() {
    let t = ItemAnswer::Made(Uuid::from_u128(1));
    let r = ItemAnswer::Refused("duplicate idempotency key: k".into());
    assert_eq!(r.clone().or(t.clone()), t);
    assert_eq!(t.clone().or(r.clone()), t);
    assert_eq!(ItemAnswer::None.or(r.clone()), r);
    assert_eq!(ItemAnswer::None.or(ItemAnswer::None), ItemAnswer::None);
}
