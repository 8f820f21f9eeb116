//! The transfer safety protocol's reconciliation cases, and crash recovery between the steps
//! of an item: whatever was interrupted, the payee ends up paid exactly once.

use std::time::Duration;

use crate::common::app::*;
use payrun::dots::sim::Fault;
use payrun::dots::types::CreateTransfer;
use payrun::item::{IdempotencyKey, ItemState, TransferOutcome};
use payrun::jobs::item_metadata;
use payrun::store::{CallOutcome, ItemRecord, now_ms};

on_both_backends!(
    a_restarted_worker_finding_an_intent_whose_transfer_happened_does_not_pay_twice,
    a_crash_right_after_a_first_attempts_intent_is_reconciled_and_pays_once,
    a_restarted_worker_finding_an_intent_whose_call_never_left_pays_once,
    a_duplicate_key_rejection_is_reconciled_to_the_existing_transfer,
    an_unclear_attempt_older_than_the_key_window_is_reconciled_before_a_new_key,
    an_unclear_attempt_older_than_the_key_window_that_moved_money_is_found,
    a_crash_between_transfer_and_payout_flow_reuses_the_flow_dots_made,
    a_crash_before_the_payout_flow_call_left_makes_one_flow,
    an_item_whose_lease_is_held_by_a_live_worker_is_not_touched,
    a_job_that_finds_a_dead_workers_lease_hands_the_item_back_for_when_it_lapses,
);

/// One known payee in one batch, moved to `transferring` (ready to pay).
async fn ready(app: &TestApp, phone: &str) -> (payrun::batch::BatchId, ItemRecord) {
    app.known_payee("p", phone).await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("p", "25.00")))
        .await;
    let item = app.item(batch, "p").await;
    let user = app.store.payee_user("p").await.unwrap().unwrap();
    app.store
        .begin_transfer(item.id, payrun::item::ItemState::Pending, "p", user)
        .await
        .unwrap();
    (batch, app.item(batch, "p").await)
}

/// What a worker does just before the HTTP call, and (optionally) the call itself — then dies.
async fn crash_after_intent(app: &TestApp, item: &ItemRecord, call_dots: bool) -> IdempotencyKey {
    let id = item.id;
    let key = IdempotencyKey::derive(id, 0);
    app.store
        .record_transfer_intent(id, key, 0, app.engine.now())
        .await
        .unwrap();
    if call_dots {
        app.engine
            .dots
            .create_transfer(&CreateTransfer {
                amount: item.amount.as_credit(),
                user_id: item.dots_user_id.unwrap(),
                idempotency_key: Some(key.as_uuid()),
                metadata: Some(item_metadata(item, "payout")),
            })
            .await
            .expect("the call that the crash interrupted went through");
    }
    key
}

async fn a_restarted_worker_finding_an_intent_whose_transfer_happened_does_not_pay_twice(
    b: Backend,
) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550301").await;
    crash_after_intent(&app, &item, true).await;
    let posts_before = app.sim().request_count("POST /v2/transfers");

    app.step_until_idle(batch).await;
    let after = app.item(batch, "p").await;
    assert_eq!(after.state, ItemState::AwaitingPayout);
    assert_eq!(
        app.sim().request_count("POST /v2/transfers"),
        posts_before,
        "no second POST"
    );
    assert!(
        app.sim().request_count("GET /v2/transfers") >= 1,
        "reconciled by listing"
    );
    app.assert_paid_exactly_once(batch).await;
}

/// A first attempt commits `pending -> transferring` and its intent together; a crash right
/// after that commit (the call made or not) is found like any open call.
async fn a_crash_right_after_a_first_attempts_intent_is_reconciled_and_pays_once(b: Backend) {
    for call_dots in [true, false] {
        let app = spawn_app(b, quiet_sim()).await;
        let user = app.known_payee("p", "5550310").await;
        let batch = app
            .batch(&format!("{HEADER}{}", known_payee_row("p", "25.00")))
            .await;
        let item = app.item(batch, "p").await;
        let id = item.id;
        let key = IdempotencyKey::derive(id, 0);
        let moved = app
            .store
            .begin_transfer_with_intent(id, "p", user, key, 0, app.engine.now())
            .await
            .unwrap()
            .expect("pending -> transferring");
        assert!(moved.transfer_call_open);
        if call_dots {
            app.engine
                .dots
                .create_transfer(&CreateTransfer {
                    amount: item.amount.as_credit(),
                    user_id: user,
                    idempotency_key: Some(key.as_uuid()),
                    metadata: Some(item_metadata(&item, "payout")),
                })
                .await
                .expect("the call that the crash interrupted went through");
        }
        app.step_until_idle(batch).await;
        assert_eq!(app.item(batch, "p").await.state, ItemState::AwaitingPayout);
        assert!(
            app.sim().request_count("GET /v2/transfers") >= 1,
            "reconciled first"
        );
        assert_eq!(app.ledger().transfers.len(), 1);
        app.assert_paid_exactly_once(batch).await;
    }
}

async fn a_restarted_worker_finding_an_intent_whose_call_never_left_pays_once(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550302").await;
    let key = crash_after_intent(&app, &item, false).await;

    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "p").await.state, ItemState::AwaitingPayout);
    let ledger = app.ledger();
    assert_eq!(ledger.transfers.len(), 1);
    assert_eq!(
        ledger.transfers[0].idempotency_key,
        Some(key.as_uuid()),
        "same key, still fresh"
    );
    app.assert_paid_exactly_once(batch).await;
}

async fn a_duplicate_key_rejection_is_reconciled_to_the_existing_transfer(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550303").await;
    // The earlier attempt's outcome was recorded as a plain retryable failure, yet it had
    // reached Dots: the retry with the same key is rejected as a duplicate.
    crash_after_intent(&app, &item, true).await;
    let id = item.id;
    app.store
        .record_transfer_failure(id, CallOutcome::Retryable, "HTTP 502", 0, Some(now_ms()))
        .await
        .unwrap();

    app.step_until_idle(batch).await;
    let after = app.item(batch, "p").await;
    assert_eq!(after.state, ItemState::AwaitingPayout);
    let kinds: Vec<_> = app
        .store
        .item_events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert!(
        kinds.iter().any(|d| d.starts_with("duplicate_key")),
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .any(|d| d.contains("found at Dots by reconciliation")),
        "{kinds:?}"
    );
    app.assert_paid_exactly_once(batch).await;
}

async fn an_unclear_attempt_older_than_the_key_window_is_reconciled_before_a_new_key(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550304").await;
    crash_after_intent(&app, &item, false).await;
    let id = item.id;
    app.store
        .record_transfer_failure(id, CallOutcome::Ambiguous, "timed out", 0, Some(now_ms()))
        .await
        .unwrap();
    // A day passes for payrun and for Dots: the key is forgotten.
    app.engine.advance_clock(Duration::from_secs(25 * 3600));
    app.sim().clock().advance(Duration::from_secs(25 * 3600));

    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "p").await.state, ItemState::AwaitingPayout);
    let ledger = app.ledger();
    assert_eq!(ledger.transfers.len(), 1);
    assert_eq!(
        ledger.transfers[0].idempotency_key,
        Some(IdempotencyKey::derive(id, 1).as_uuid()),
        "proven absent, so a new key"
    );
    assert!(app.sim().request_count("GET /v2/transfers") >= 1);
    app.assert_paid_exactly_once(batch).await;
}

async fn an_unclear_attempt_older_than_the_key_window_that_moved_money_is_found(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550305").await;
    let id = item.id;
    app.sim().inject("POST /v2/transfers", Fault::Drop, 1);
    let next = app.engine.process_item(id).await.unwrap();
    assert!(matches!(next, payrun::jobs::Next::RetryAt(_)), "{next:?}");
    assert_eq!(
        app.item(batch, "p").await.transfer_outcome,
        Some(TransferOutcome::Ambiguous)
    );
    app.engine.advance_clock(Duration::from_secs(25 * 3600));
    app.sim().clock().advance(Duration::from_secs(25 * 3600));

    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "p").await.state, ItemState::AwaitingPayout);
    assert_eq!(
        app.ledger().transfers.len(),
        1,
        "the key aged out, but the old transfer was found"
    );
    app.assert_paid_exactly_once(batch).await;
}

async fn a_crash_between_transfer_and_payout_flow_reuses_the_flow_dots_made(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550306").await;
    let id = item.id;
    crash_after_intent(&app, &item, true).await;
    let t = app.transfers_for(&item)[0].id;
    app.store.record_transfer_done(id, t, "made").await.unwrap();
    // Intent for the payout flow committed, the flow made at Dots, then the worker died.
    app.store.record_payout_intent(id).await.unwrap();
    let made = app
        .engine
        .dots
        .create_flow(&payrun::dots::types::CreateFlow {
            steps: vec![serde_json::json!("payout")],
            user_id: item.dots_user_id,
            metadata: Some(item_metadata(&item, "payout")),
            require_auth: None,
        })
        .await
        .unwrap();
    let flows_before = app.sim().request_count("POST /v2/flows");

    app.step_until_idle(batch).await;
    let after = app.item(batch, "p").await;
    assert_eq!(after.state, ItemState::AwaitingPayout);
    assert_eq!(
        after.payout_flow_id,
        Some(made.id),
        "the flow Dots made is reused"
    );
    assert_eq!(
        app.sim().request_count("POST /v2/flows"),
        flows_before,
        "no second flow"
    );
    app.assert_paid_exactly_once(batch).await;
}

async fn a_crash_before_the_payout_flow_call_left_makes_one_flow(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550307").await;
    let id = item.id;
    crash_after_intent(&app, &item, true).await;
    let t = app.transfers_for(&item)[0].id;
    // As a job commits a transfer's success: with the payout flow's intent.
    app.store
        .record_transfer_done_with_payout_intent(id, t, "made")
        .await
        .unwrap()
        .expect("transferring -> transferred");

    app.step_until_idle(batch).await;
    let after = app.item(batch, "p").await;
    assert_eq!(after.state, ItemState::AwaitingPayout);
    assert_eq!(app.sim().request_count("POST /v2/flows"), 1);
    app.assert_paid_exactly_once(batch).await;
}

async fn an_item_whose_lease_is_held_by_a_live_worker_is_not_touched(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550308").await;
    let id = item.id;
    assert!(
        app.store
            .try_lease(id, "other-worker", 60_000)
            .await
            .unwrap()
            .is_some()
    );
    let next = app.engine.process_item(id).await.unwrap();
    let payrun::jobs::Next::Busy(until) = next else {
        panic!("expected Busy, got {next:?}")
    };
    assert!(
        until >= now_ms() + 50_000,
        "look again when the other lease lapses"
    );
    assert!(app.ledger().transfers.is_empty());
    // Once that worker's lease lapses, this one takes over.
    app.store.release_lease(id, "other-worker").await.unwrap();
    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "p").await.state, ItemState::AwaitingPayout);
    app.assert_paid_exactly_once(batch).await;
}

/// A worker stopped by its watchdog (a full disk) leaves its items leased and claimed; apalis
/// hands its jobs to the restarted worker, which finds the leases still held. The item must be
/// fed again when the lease lapses, not when the claim does (`worker.claim_secs`, minutes).
async fn a_job_that_finds_a_dead_workers_lease_hands_the_item_back_for_when_it_lapses(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550310").await;
    let id = item.id;
    app.store.retry_now(id).await.unwrap();
    let now = now_ms();
    // Claimed for the queue (by the submit's first window, or here): as the dead worker's
    // feeder had, no feeder hands it over again for minutes.
    app.store.claim_for_queue(now, 300_000, 10).await.unwrap();
    assert!(
        app.store
            .claim_for_queue(now + 60_000, 300_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "claimed"
    );
    app.store
        .try_lease(id, "dead-worker", 5_000)
        .await
        .unwrap()
        .expect("leased");
    let next = app.engine.process_item(id).await.unwrap();
    let payrun::jobs::Next::Busy(until) = next else {
        panic!("expected Busy, got {next:?}")
    };
    assert!(until > now + 4_000 && until < now + 10_000, "{until}");
    assert!(
        app.store
            .claim_for_queue(until - 200, 300_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not fed while the lease holds"
    );
    assert_eq!(
        app.store.claim_for_queue(until, 300_000, 10).await.unwrap(),
        vec![id],
        "fed again once the lease has lapsed, not after the claim's five minutes"
    );
    assert!(app.ledger().transfers.is_empty());
    let _ = batch;
}

on_both_backends!(a_retry_job_that_starts_a_moment_early_still_works_the_item);

async fn a_retry_job_that_starts_a_moment_early_still_works_the_item(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, item) = ready(&app, "5550309").await;
    let id = item.id;
    // A retry due in 0.8 s; the queue (whole seconds) hands its job over now.
    app.store
        .record_transfer_failure(
            id,
            CallOutcome::Retryable,
            "HTTP 503",
            now_ms() + 800,
            Some(now_ms()),
        )
        .await
        .unwrap();
    let next = app.engine.process_item(id).await.unwrap();
    assert_eq!(next, payrun::jobs::Next::Idle, "waited out, then worked");
    assert_eq!(app.item(batch, "p").await.state, ItemState::AwaitingPayout);
    app.assert_paid_exactly_once(batch).await;
}
