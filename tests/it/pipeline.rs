//! The payout pipeline end to end on each backend against the in-process simulator: every
//! state transition, onboarding, payees who never finish, and API faults on the transfer.

use crate::common::app::*;
use payrun::dots::sim::{Fault, SimConfig};
use payrun::item::{ItemState, TransferOutcome};
use payrun::jobs::Next;
use payrun::store::now_ms;

on_both_backends!(
    a_known_payee_is_paid_once_and_completes_after_the_payout_flow,
    a_new_payee_is_onboarded_before_being_paid,
    a_payee_who_never_completes_stays_waiting_without_blocking_the_batch,
    a_500_on_the_transfer_is_retried_and_pays_once,
    a_429_on_the_transfer_waits_at_least_retry_after_and_pays_once,
    a_dropped_transfer_response_is_reconciled_and_pays_once,
    a_refused_transfer_fails_the_item_with_the_reason,
    a_later_batch_reuses_the_dots_user_learned_from_onboarding,
);

async fn a_known_payee_is_paid_once_and_completes_after_the_payout_flow(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let user = app.known_payee("s1", "5550001").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("s1", "12.34")))
        .await;

    app.step_until_idle(batch).await;
    let item = app.item(batch, "s1").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert_eq!(item.dots_user_id, Some(user));
    assert!(
        item.payout_link
            .as_deref()
            .is_some_and(|l| l.contains("/flow/"))
    );
    assert!(
        item.onboarding_flow_id.is_none(),
        "a known payee is not onboarded"
    );
    assert_eq!(item.lease_owner, None, "released by the job's last write");
    // One call each; the payout-flow intent committed with the transfer is the job's own, so
    // nothing is searched for and nothing reconciled.
    assert_eq!(app.sim().request_count("POST /v2/transfers"), 1);
    assert_eq!(app.sim().request_count("POST /v2/flows"), 1);
    assert_eq!(app.sim().request_count("GET /v2/flows"), 0);
    assert_eq!(app.sim().request_count("GET /v2/transfers"), 0);
    // The contract of the log: each call's intent is recorded before the state its outcome
    // moved the item to (the transfer's before `transferred`, the payout flow's before
    // `awaiting_payout`).
    let events = app.store.item_events(item.id).await.unwrap();
    let at = |pred: &dyn Fn(&payrun::store::ItemEvent) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("{events:?}"))
    };
    let state =
        |s: &'static str| move |e: &payrun::store::ItemEvent| e.to_state.as_deref() == Some(s);
    assert!(at(&|e| e.kind == "transfer_intent") < at(&state("transferred")));
    assert!(at(&|e| e.kind == "payout_intent") < at(&state("awaiting_payout")));

    let flow = item.payout_flow_id.unwrap();
    app.sim().complete_flow(flow).expect("flow exists");
    app.step_until_idle(batch).await;
    let item = app.item(batch, "s1").await;
    assert_eq!(item.state, ItemState::Completed);

    let states = app.state_history(item.id).await;
    assert_eq!(
        states,
        [
            ItemState::Pending,
            ItemState::Transferring,
            ItemState::Transferred,
            ItemState::AwaitingPayout,
            ItemState::Completed
        ]
    );
    app.assert_paid_exactly_once(batch).await;
    let t = &app.transfers_for(&item)[0];
    let md = t.metadata.as_ref().unwrap();
    assert_eq!(md["payrun_batch_id"], batch.to_string());
    assert_eq!(md["payrun_item_id"], item.id.to_string());
    assert_eq!(md["payee_id"], "s1");
    assert_eq!(app.ledger().wallet(user).unwrap().amount, 1234);
}

async fn a_new_payee_is_onboarded_before_being_paid(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = app
        .batch(&format!(
            "{HEADER}{}",
            new_payee_row("n1", "5.00", "5550100")
        ))
        .await;

    app.step_until_idle(batch).await;
    let item = app.item(batch, "n1").await;
    assert_eq!(item.state, ItemState::Onboarding, "waits for the payee");
    assert!(
        app.ledger().transfers.is_empty(),
        "nothing paid before onboarding"
    );

    let flow = item.onboarding_flow_id.unwrap();
    let done = app.sim().complete_flow(flow).unwrap();
    app.step_until_idle(batch).await;
    let item = app.item(batch, "n1").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert_eq!(item.dots_user_id, done.user_id);
    let states = app.state_history(item.id).await;
    assert_eq!(
        states,
        [
            ItemState::Pending,
            ItemState::Onboarding,
            ItemState::Transferring,
            ItemState::Transferred,
            ItemState::AwaitingPayout
        ]
    );
    app.assert_paid_exactly_once(batch).await;
}

async fn a_payee_who_never_completes_stays_waiting_without_blocking_the_batch(b: Backend) {
    let sim = SimConfig {
        complete_after_secs: 0.0,
        never_complete_payees: vec!["slow".into()],
        ..SimConfig::default()
    };
    let app = spawn_app(b, sim).await;
    app.known_payee("fast", "5550002").await;
    app.known_payee("slow", "5550003").await;
    let csv = format!(
        "{HEADER}{}{}",
        known_payee_row("fast", "1.00"),
        known_payee_row("slow", "2.00")
    );
    let batch = app.batch(&csv).await;

    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "fast").await.state, ItemState::Completed);
    let slow = app.item(batch, "slow").await;
    assert_eq!(slow.state, ItemState::AwaitingPayout);
    assert!(slow.state.is_waiting_on_payee());
    assert!(app.store.batch_is_settled(batch).await.unwrap());
    // Polling again changes nothing and never pays twice.
    app.step_until_idle(batch).await;
    assert_eq!(
        app.item(batch, "slow").await.state,
        ItemState::AwaitingPayout
    );
    app.assert_paid_exactly_once(batch).await;
}

async fn a_500_on_the_transfer_is_retried_and_pays_once(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("p", "5550004").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("p", "7.00")))
        .await;
    app.sim()
        .inject("POST /v2/transfers", Fault::Status(500), 1);

    app.step_until_idle(batch).await;
    let item = app.item(batch, "p").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert_eq!(item.transfer_attempts, 2);
    assert_eq!(app.sim().request_count("POST /v2/transfers"), 2);
    let keys: Vec<_> = app
        .store
        .item_events(item.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "transfer_intent")
        .map(|e| e.detail)
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "the retry reuses the idempotency key");
    app.assert_paid_exactly_once(batch).await;
}

async fn a_429_on_the_transfer_waits_at_least_retry_after_and_pays_once(b: Backend) {
    let app = spawn_app(
        b,
        SimConfig {
            retry_after_secs: 7,
            ..quiet_sim()
        },
    )
    .await;
    app.known_payee("p", "5550005").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("p", "3.00")))
        .await;
    app.sim().inject("POST /v2/transfers", Fault::Throttle, 1);

    let id = app.item(batch, "p").await.id;
    let before = now_ms();
    let Next::RetryAt(at) = app.engine.process_item(id).await.unwrap() else {
        panic!("a 429 must schedule a retry")
    };
    assert!(
        at >= before + 7_000,
        "retry in {} ms, Retry-After was 7 s",
        at - before
    );
    assert_eq!(
        app.item(batch, "p").await.transfer_outcome,
        Some(TransferOutcome::Retryable)
    );
    // A duplicate job arriving before the retry time does nothing (and queues nothing).
    let posts = app.sim().request_count("POST /v2/transfers");
    assert_eq!(app.engine.process_item(id).await.unwrap(), Next::Idle);
    assert_eq!(app.sim().request_count("POST /v2/transfers"), posts);

    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "p").await.state, ItemState::AwaitingPayout);
    app.assert_paid_exactly_once(batch).await;
}

async fn a_dropped_transfer_response_is_reconciled_and_pays_once(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("p", "5550006").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("p", "9.99")))
        .await;
    app.sim().inject("POST /v2/transfers", Fault::Drop, 1);

    app.step_until_idle(batch).await;
    let item = app.item(batch, "p").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert_eq!(
        app.ledger().transfers.len(),
        1,
        "the dropped transfer is the only one"
    );
    let kinds = app.event_kinds(item.id).await;
    assert!(kinds.contains(&"transfer_error".to_string()), "{kinds:?}");
    app.assert_paid_exactly_once(batch).await;
}

async fn a_refused_transfer_fails_the_item_with_the_reason(b: Backend) {
    // A refusal that is the item's own (Dots does not know its user); a short App wallet is
    // not the item's problem and holds the batch instead (tests/it/funding.rs).
    let app = spawn_app(b, quiet_sim()).await;
    app.store
        .remember_payee("p", uuid::Uuid::new_v4())
        .await
        .unwrap();
    app.known_payee("q", "5550008").await;
    let csv = format!(
        "{HEADER}{}{}",
        known_payee_row("p", "5.00"),
        known_payee_row("q", "0.50")
    );
    let batch = app.batch(&csv).await;

    app.step_until_idle(batch).await;
    let p = app.item(batch, "p").await;
    assert_eq!(p.state, ItemState::Failed);
    let reason = p.last_error.as_deref().unwrap();
    assert!(
        reason.contains("transfer refused") && reason.contains("user not found"),
        "{reason}"
    );
    assert_eq!(
        app.item(batch, "q").await.state,
        ItemState::AwaitingPayout,
        "one failure does not block others"
    );
    app.assert_paid_exactly_once(batch).await;
}

async fn a_later_batch_reuses_the_dots_user_learned_from_onboarding(b: Backend) {
    let app = spawn_app(
        b,
        SimConfig {
            complete_after_secs: 0.0,
            ..SimConfig::default()
        },
    )
    .await;
    let first = app
        .batch(&format!(
            "{HEADER}{}",
            new_payee_row("n", "1.00", "5550200")
        ))
        .await;
    app.step_until_idle(first).await;
    let learned = app.item(first, "n").await.dots_user_id.expect("onboarded");

    let second = app
        .batch(&format!("{HEADER}{}", known_payee_row("n", "2.00")))
        .await;
    app.step_until_idle(second).await;
    let item = app.item(second, "n").await;
    assert_eq!(item.dots_user_id, Some(learned));
    assert!(item.onboarding_flow_id.is_none());
    assert_eq!(item.state, ItemState::Completed);
    assert_eq!(ItemState::Completed, item.state);
}
