//! The transactional outbox's write side: each change an event reports writes that event in
//! its own transaction, versioned per item.

use payrun::events::{Envelope, EventType};
use payrun::item::ItemState;

use crate::common::app::*;

on_both_backends!(an_onboarded_and_paid_item_writes_its_events_in_version_order);

async fn an_onboarded_and_paid_item_writes_its_events_in_version_order(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = app
        .batch(&format!(
            "{HEADER}{}",
            new_payee_row("n1", "10.00", "5550401")
        ))
        .await;
    app.step_until_idle(batch).await;
    let item = app.item(batch, "n1").await;
    assert_eq!(item.state, ItemState::Onboarding);
    app.sim().complete_flow(item.onboarding_flow_id.unwrap());
    app.step_until_idle(batch).await;
    let item = app.item(batch, "n1").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    app.sim().complete_flow(item.payout_flow_id.unwrap());
    app.step_until_idle(batch).await;
    let item = app.item(batch, "n1").await;
    assert_eq!(item.state, ItemState::Completed);

    let events: Vec<_> = app
        .store
        .outbox_events(Some(batch))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.item_id == Some(item.id))
        .collect();
    let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::ItemOnboardingLink,
            EventType::ItemPayoutLink,
            EventType::ItemCompleted
        ]
    );
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(item.event_version, 3);
    let bodies: Vec<Envelope> = events
        .iter()
        .map(|e| serde_json::from_str(&e.body).unwrap())
        .collect();
    assert_eq!(
        bodies[0].data["link"],
        item.onboarding_link.clone().unwrap().as_str()
    );
    assert_eq!(
        bodies[1].data["link"],
        item.payout_link.clone().unwrap().as_str()
    );
    assert!(bodies[1].data["link_expires_at"].is_string());
    assert_eq!(bodies[2].data["state"], "completed");
    assert_eq!(bodies[2].data["amount_cents"], 1000);
    for (e, body) in events.iter().zip(&bodies) {
        assert_eq!(body.id, e.id);
        assert_eq!(body.kind, e.kind.as_str());
        assert_eq!(body.data["version"], e.version);
    }
}

/// The batch events of `batch` as (type, version), in version order.
async fn batch_events(app: &TestApp, batch: payrun::batch::BatchId) -> Vec<(EventType, i64)> {
    let mut v: Vec<(EventType, i64)> = app
        .store
        .outbox_events(Some(batch))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.item_id.is_none())
        .map(|e| (e.kind, e.version))
        .collect();
    v.sort_by_key(|e| e.1);
    v
}

/// A batch of `n` known payees, stepped until every item awaits its payout flow.
async fn known_batch(app: &TestApp, n: usize) -> payrun::batch::BatchId {
    let mut csv = HEADER.to_string();
    for k in 0..n {
        app.known_payee(&format!("k{k}"), &format!("55506{k:02}"))
            .await;
        csv.push_str(&known_payee_row(&format!("k{k}"), "5.00"));
    }
    let batch = app.batch(&csv).await;
    app.step_until_idle(batch).await;
    batch
}

on_both_backends!(
    a_submitted_batch_writes_created_and_approved_once,
    pausing_twice_writes_one_held_and_resuming_twice_one_resumed,
    a_funds_hold_and_its_lift_write_held_and_resumed_once,
    a_batch_whose_items_finish_is_settled_once_and_completed_once,
    a_write_whose_guard_fails_writes_no_event,
    a_canceled_batch_writes_canceled_once,
);

async fn a_submitted_batch_writes_created_and_approved_once(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("k1", "5550601").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("k1", "5.00")))
        .await;
    assert_eq!(
        batch_events(&app, batch).await,
        [(EventType::BatchCreated, 1), (EventType::BatchApproved, 2)]
    );
    let created: Envelope =
        serde_json::from_str(&app.store.outbox_events(Some(batch)).await.unwrap()[0].body).unwrap();
    assert_eq!(created.data["batch_id"], batch.to_string().as_str());
    assert_eq!(created.data["items"], 1);
    assert_eq!(created.data["total_cents"], 500);
}

async fn pausing_twice_writes_one_held_and_resuming_twice_one_resumed(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("k1", "5550601").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("k1", "5.00")))
        .await;
    app.store.pause_batch(batch, 10).await.unwrap();
    app.store.pause_batch(batch, 11).await.unwrap();
    app.store.resume_batch(batch, 12).await.unwrap();
    app.store.resume_batch(batch, 13).await.unwrap();
    let events = batch_events(&app, batch).await;
    assert_eq!(
        events[2..],
        [(EventType::BatchHeld, 3), (EventType::BatchResumed, 4)]
    );
    let held = app
        .store
        .outbox_events(Some(batch))
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EventType::BatchHeld)
        .unwrap();
    let held: Envelope = serde_json::from_str(&held.body).unwrap();
    assert_eq!(held.data["reason"], "paused");
}

async fn a_funds_hold_and_its_lift_write_held_and_resumed_once(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("k1", "5550601").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("k1", "5.00")))
        .await;
    let short = payrun::store::FundingVerdict::Short {
        detail: "wallet short".into(),
        needed_cents: 500,
        from_line: None,
    };
    assert!(app.store.decide_funding(batch, 20, &short).await.unwrap());
    assert!(!app.store.decide_funding(batch, 21, &short).await.unwrap());
    // The hold's detail re-written with the same reason is no new hold.
    app.store
        .update_funds_hold(batch, 22, "still short", 400, None)
        .await
        .unwrap();
    assert!(app.store.lift_funds_hold(batch, 23).await.unwrap());
    assert!(!app.store.lift_funds_hold(batch, 24).await.unwrap());
    let events = batch_events(&app, batch).await;
    assert_eq!(
        events[2..],
        [(EventType::BatchHeld, 3), (EventType::BatchResumed, 4)]
    );
    let held = app.store.outbox_events(Some(batch)).await.unwrap();
    let held: Envelope = serde_json::from_str(
        &held
            .iter()
            .find(|e| e.kind == EventType::BatchHeld)
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(held.data["reason"], "insufficient_funds");
    assert_eq!(held.data["detail"], "wallet short");
}

async fn a_batch_whose_items_finish_is_settled_once_and_completed_once(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = known_batch(&app, 6).await;
    let items = app.items(batch).await;
    assert!(items.iter().all(|i| i.state == ItemState::AwaitingPayout));
    assert_eq!(
        batch_events(&app, batch).await,
        [
            (EventType::BatchCreated, 1),
            (EventType::BatchApproved, 2),
            (EventType::BatchSettled, 3)
        ]
    );
    // Every item completes at once, each in its own task (on PostgreSQL, in its own
    // connection and transaction): exactly one of them completes the batch.
    let mut tasks = Vec::new();
    for i in &items {
        let store = app.store.clone();
        let id = i.id;
        tasks.push(tokio::spawn(async move {
            store.complete_item(id, 0).await.unwrap().is_some()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(
        batch_events(&app, batch).await,
        [
            (EventType::BatchCreated, 1),
            (EventType::BatchApproved, 2),
            (EventType::BatchSettled, 3),
            (EventType::BatchCompleted, 4)
        ]
    );
}

on_both_backends!(
    a_batch_finished_by_writers_that_died_before_their_check_is_reported_by_the_sweep
);

async fn a_batch_finished_by_writers_that_died_before_their_check_is_reported_by_the_sweep(
    b: Backend,
) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = known_batch(&app, 3).await;
    // Each item's completion committed, and its writer died before the settle check that
    // follows the commit (as `complete_item` would have written it, minus that check).
    raw_exec(
        &app,
        &format!("UPDATE items SET state = 'completed' WHERE batch_id = '{batch}'"),
    )
    .await;
    let reported = |app: &TestApp| {
        let store = app.store.clone();
        async move {
            store
                .outbox_events(Some(batch))
                .await
                .unwrap()
                .iter()
                .filter(|e| e.kind == EventType::BatchCompleted)
                .count()
        }
    };
    assert_eq!(reported(&app).await, 0, "nothing checked yet");
    assert_eq!(app.store.report_settled_batches().await.unwrap(), 1);
    assert_eq!(reported(&app).await, 1);
    // Reported once: the next sweep finds nothing to say.
    assert_eq!(app.store.report_settled_batches().await.unwrap(), 0);
    assert_eq!(reported(&app).await, 1);
}

async fn a_write_whose_guard_fails_writes_no_event(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = known_batch(&app, 1).await;
    let item = app.items(batch).await.remove(0);
    let before = app.store.outbox_events(Some(batch)).await.unwrap();
    // Not pending/onboarding: the guarded write misses and its transaction writes nothing.
    assert!(
        app.store
            .cancel_item(item.id, ItemState::Pending)
            .await
            .unwrap()
            .is_none()
    );
    assert!(app.store.approve_batch(batch).await.is_ok_and(|a| !a));
    assert_eq!(app.store.outbox_events(Some(batch)).await.unwrap(), before);
}

async fn a_canceled_batch_writes_canceled_once(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("k1", "5550601").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("k1", "5.00")))
        .await;
    app.store.cancel_batch_record(batch).await.unwrap();
    app.store.cancel_batch_record(batch).await.unwrap();
    let events = batch_events(&app, batch).await;
    assert_eq!(events[2..], [(EventType::BatchCanceled, 3)]);
}
