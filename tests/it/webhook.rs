//! Dots webhooks: the receiving endpoint (`payrun::webhook`: Svix verification, replay filter,
//! asynchronous hand-off, body parsing) and the simulator sending signed webhooks with
//! redelivery and faults. No sleeps: every wait is on a channel or `Sim::webhooks_idle`, under
//! a `tokio::time::timeout` guard.

use crate::common::webhook::*;
use crate::common::{id_of, start};
use payrun::dots::sim::{DeliveryStatus, SimConfig};
use payrun::webhook::{Verifier, WebhookEvent};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn flow_body(id: Uuid) -> String {
    json!({ "event": "flow.updated", "flow_id": id }).to_string()
}

#[tokio::test]
async fn a_correctly_signed_delivery_is_answered_204_and_handed_to_the_handler() {
    let mut rx = receiver(|| NOW, 0).await;
    let flow = Uuid::new_v4();
    let body = flow_body(flow);
    let status = post(&rx.url, &signed("svix", "msg_1", NOW, &body), &body).await;
    assert_eq!(status, 204);
    assert_eq!(
        next(&mut rx.events).await,
        WebhookEvent::FlowUpdated { flow_id: flow }
    );
}

#[tokio::test]
async fn both_the_svix_and_the_unbranded_webhook_header_prefixes_are_accepted() {
    let mut rx = receiver(|| NOW, 0).await;
    for (i, prefix) in ["svix", "webhook"].into_iter().enumerate() {
        let body = flow_body(Uuid::new_v4());
        let headers = signed(prefix, &format!("msg_{i}"), NOW, &body);
        assert_eq!(post(&rx.url, &headers, &body).await, 204, "{prefix}");
        assert!(matches!(
            next(&mut rx.events).await,
            WebhookEvent::FlowUpdated { .. }
        ));
    }
}

#[tokio::test]
async fn refused_requests_get_401_and_never_reach_the_handler() {
    let mut rx = receiver(|| NOW, 0).await;
    let body = flow_body(Uuid::new_v4());
    let good = signed("svix", "msg_1", NOW, &body);
    let mut wrong_sig = good.clone();
    wrong_sig[2].1 = Verifier::new("whsec_c29tZW9uZSBlbHNlIGVudGlyZWx5")
        .unwrap()
        .sign("msg_1", NOW, body.as_bytes());
    let cases: Vec<(&str, Headers, String)> = vec![
        ("signed with another secret", wrong_sig, body.clone()),
        (
            "body tampered after signing",
            good.clone(),
            body.replace("flow", "flaw"),
        ),
        (
            "six minutes old",
            signed("svix", "msg_1", NOW - 360, &body),
            body.clone(),
        ),
        (
            "six minutes ahead",
            signed("svix", "msg_1", NOW + 360, &body),
            body.clone(),
        ),
        ("no id", good[1..].to_vec(), body.clone()),
        (
            "no timestamp",
            vec![good[0].clone(), good[2].clone()],
            body.clone(),
        ),
        ("no signature", good[..2].to_vec(), body.clone()),
        ("no headers at all", Vec::new(), body.clone()),
    ];
    for (what, headers, sent) in cases {
        let resp = send(&rx.url, &headers, &sent).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].is_string(), "{what}: {err}");
    }
    // A refused forgery leaves no trace: the genuine message with that id is still processed.
    assert_eq!(post(&rx.url, &good, &body).await, 204);
    next(&mut rx.events).await;
    assert!(rx.events.try_recv().is_err(), "only the genuine message");
}

#[tokio::test]
async fn a_replayed_message_id_is_answered_2xx_but_handled_once() {
    let mut rx = receiver(|| NOW, 0).await;
    let body = flow_body(Uuid::new_v4());
    let first = signed("svix", "msg_same", NOW, &body);
    let again = signed("svix", "msg_same", NOW + 30, &body);
    assert_eq!(post(&rx.url, &first, &body).await, 204);
    assert_eq!(post(&rx.url, &again, &body).await, 200);
    assert_eq!(post(&rx.url, &first, &body).await, 200);
    next(&mut rx.events).await;
    let other = signed("svix", "msg_other", NOW, &body);
    assert_eq!(post(&rx.url, &other, &body).await, 204);
    next(&mut rx.events).await;
    assert!(rx.events.try_recv().is_err(), "msg_same was handled once");
}

#[test]
fn each_documented_body_parses_to_the_event_payrun_acts_on() {
    let (flow, transfer) = (Uuid::new_v4(), Uuid::new_v4());
    let parse = |v: Value| WebhookEvent::parse(v.to_string().as_bytes());
    let full = json!({ "id": transfer, "status": "completed", "amount": "-1000" });
    assert_eq!(
        parse(json!({ "event": "flow.updated", "flow_id": flow })),
        WebhookEvent::FlowUpdated { flow_id: flow }
    );
    for body in [
        json!({ "event": "transfer.updated", "transfer_id": transfer }),
        json!({ "transfer": full, "transfer_id": transfer }),
        json!({ "event": "transfer.failed", "transfer": full, "transfer_id": transfer }),
        json!({ "event": "transfer.completed", "transfer": full }),
    ] {
        assert_eq!(
            parse(body.clone()),
            WebhookEvent::TransferUpdated {
                transfer_id: transfer
            },
            "{body}"
        );
    }
    assert_eq!(
        parse(json!({ "event": "payout_link.updated", "payout_link_id": Uuid::new_v4() })),
        WebhookEvent::Other {
            event: Some("payout_link.updated".into())
        }
    );
    assert_eq!(
        parse(json!({ "event": "flow.transaction_updated", "flow_id": flow })),
        WebhookEvent::Other {
            event: Some("flow.transaction_updated".into())
        }
    );
    assert_eq!(
        parse(json!({ "user_id": Uuid::new_v4() })),
        WebhookEvent::Other { event: None }
    );
}

#[tokio::test]
async fn completing_a_flow_in_the_simulator_delivers_a_verified_flow_updated() {
    let mut rx = receiver(payrun::webhook::server::system_clock, 0).await;
    let api = sim_to(&rx.url, |_| {}).await;
    let flow = new_flow(&api).await;
    api.sim().complete_flow(flow).expect("flow exists");
    assert_eq!(
        next(&mut rx.events).await,
        WebhookEvent::FlowUpdated { flow_id: flow }
    );
    idle(&api).await;
    let sent = api.sim().webhook_deliveries();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].event_type, "flow.updated");
    assert_eq!(sent[0].status, DeliveryStatus::Delivered);
    assert!(sent[0].id.starts_with("msg_"));
    api.sim().complete_flow(flow).expect("flow exists");
    assert_eq!(
        api.sim().pending_webhooks(),
        0,
        "completing again changes nothing"
    );
}

#[tokio::test]
async fn a_due_payee_is_announced_by_the_ticker_without_anyone_reading_the_flow() {
    // The receiver reads the simulator's clock, which is moved 10 minutes ahead below.
    let sim_clock = Arc::new(std::sync::OnceLock::<payrun::dots::sim::Sim>::new());
    let clock = sim_clock.clone();
    let mut rx = receiver(
        move || clock.get().map_or(0, |s| s.clock().now().timestamp()),
        0,
    )
    .await;
    let api = sim_to(&rx.url, |c| {
        c.complete_after_secs = 600.0;
        c.payee_tick_ms = 5;
    })
    .await;
    let _ = sim_clock.set(api.sim().clone());
    let flow = new_flow(&api).await;
    api.sim().clock().advance(Duration::from_secs(601));
    assert_eq!(
        next(&mut rx.events).await,
        WebhookEvent::FlowUpdated { flow_id: flow }
    );
    assert_eq!(api.sim().request_count("GET /v2/flows/{id}"), 0);
}

#[tokio::test]
async fn a_created_transfer_is_announced_as_updated_and_as_completed() {
    let mut rx = receiver(payrun::webhook::server::system_clock, 0).await;
    let api = sim_to(&rx.url, |_| {}).await;
    let user = id_of(&api.user("4155550123").await);
    let (status, t) = api.transfer(&user, -500, None).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let transfer_id: Uuid = id_of(&t).parse().unwrap();
    for _ in 0..2 {
        assert_eq!(
            next(&mut rx.events).await,
            WebhookEvent::TransferUpdated { transfer_id }
        );
    }
    idle(&api).await;
    let mut sent = api.sim().webhook_deliveries();
    sent.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    assert_eq!(sent[0].event_type, "transfer.completed");
    assert!(
        sent[0].body.get("event").is_none(),
        "documented without event"
    );
    assert_eq!(sent[0].body["transfer"]["id"], json!(transfer_id));
    assert_eq!(sent[1].body["event"], "transfer.updated");
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_svix_id_again_until_it_accepts_it_once() {
    let mut rx = receiver(payrun::webhook::server::system_clock, 2).await;
    let api = sim_to(&rx.url, |_| {}).await;
    let flow = new_flow(&api).await;
    api.sim().complete_flow(flow).expect("flow exists");
    let hits = [
        next(&mut rx.hits).await,
        next(&mut rx.hits).await,
        next(&mut rx.hits).await,
    ];
    assert_eq!(hits.clone().map(|h| h.1), [500, 500, 204]);
    assert!(hits.iter().all(|h| h.0 == hits[0].0), "{hits:?}");
    assert_eq!(
        next(&mut rx.events).await,
        WebhookEvent::FlowUpdated { flow_id: flow }
    );
    idle(&api).await;
    let sent = api.sim().webhook_deliveries();
    assert_eq!(sent[0].id, hits[0].0);
    assert_eq!(sent[0].attempts, 3);
    assert_eq!(sent[0].statuses, vec![Some(500), Some(500), Some(204)]);
    assert_eq!(sent[0].status, DeliveryStatus::Delivered);
    assert!(rx.events.try_recv().is_err(), "handled once");
}

#[tokio::test]
async fn a_receiver_that_never_accepts_is_given_up_on_after_the_schedule() {
    let mut rx = receiver(payrun::webhook::server::system_clock, usize::MAX).await;
    let api = sim_to(&rx.url, |c| c.webhook_retry_delays_ms = vec![0, 5, 5]).await;
    api.sim().complete_flow(new_flow(&api).await).unwrap();
    idle(&api).await;
    let sent = api.sim().webhook_deliveries();
    assert_eq!(sent[0].status, DeliveryStatus::Failed);
    assert_eq!(sent[0].statuses, vec![Some(500); 3]);
    for _ in 0..3 {
        next(&mut rx.hits).await;
    }
    assert!(rx.events.try_recv().is_err());
}

#[tokio::test]
async fn a_duplicated_delivery_is_acknowledged_but_handled_once() {
    let mut rx = receiver(payrun::webhook::server::system_clock, 0).await;
    let api = sim_to(&rx.url, |c| c.webhook_duplicate_rate = 1.0).await;
    api.sim().complete_flow(new_flow(&api).await).unwrap();
    let (first, second) = (next(&mut rx.hits).await, next(&mut rx.hits).await);
    assert_eq!(first.0, second.0);
    assert_eq!((first.1, second.1), (204, 200));
    idle(&api).await;
    assert!(api.sim().webhook_deliveries()[0].duplicated);
    next(&mut rx.events).await;
    assert!(rx.events.try_recv().is_err(), "handled once");
}

#[tokio::test]
async fn bad_signature_and_stale_timestamp_faults_are_refused_by_the_receiver() {
    for bad_sig in [true, false] {
        let mut rx = receiver(payrun::webhook::server::system_clock, 0).await;
        let api = sim_to(&rx.url, |c| {
            c.webhook_retry_delays_ms = vec![0, 0];
            if bad_sig {
                c.webhook_bad_signature_rate = 1.0;
            } else {
                c.webhook_stale_rate = 1.0;
            }
        })
        .await;
        api.sim().complete_flow(new_flow(&api).await).unwrap();
        idle(&api).await;
        let sent = api.sim().webhook_deliveries();
        assert_eq!(sent[0].statuses, vec![Some(401); 2], "bad_sig={bad_sig}");
        assert_eq!(sent[0].status, DeliveryStatus::Failed);
        assert_eq!(next(&mut rx.hits).await.1, 401);
        assert!(rx.events.try_recv().is_err());
    }
}

#[tokio::test]
async fn a_simulator_without_webhook_url_sends_nothing_and_an_invalid_secret_refuses_to_start() {
    let api = start(SimConfig::default()).await;
    api.sim().complete_flow(new_flow(&api).await).unwrap();
    assert!(api.sim().webhook_deliveries().is_empty());
    assert_eq!(api.sim().pending_webhooks(), 0);
    let bad = payrun::dots::sim::Sim::new(SimConfig {
        webhook_url: Some("http://127.0.0.1:9/hook".into()),
        webhook_secret: Some("not-a-whsec".into()),
        ..SimConfig::default()
    });
    let err = bad.spawn("127.0.0.1:0").await.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
