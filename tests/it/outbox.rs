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
