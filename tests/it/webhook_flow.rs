//! Webhook-triggered progress: a signed `flow.updated` from Dots moves the item on at once,
//! without waiting for the cron poller, and a duplicate delivery changes nothing.

use std::time::Duration;

use crate::common::app::*;
use payrun::app::serve::webhook_handler;
use payrun::dots::sim::SimConfig;
use payrun::item::ItemState;
use payrun::webhook::{Verifier, WebhookState, server};
use tokio::sync::mpsc;

on_both_backends!(a_flow_updated_webhook_completes_the_item_without_a_poll);

async fn a_flow_updated_webhook_completes_the_item_without_a_poll(b: Backend) {
    // The receiver's address must be known before the simulator starts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}{}", listener.local_addr().unwrap(), server::PATH);
    let secret = payrun::dots::sim::DEFAULT_WEBHOOK_SECRET;
    let app = spawn_app(
        b,
        SimConfig {
            complete_after_secs: 0.0,
            webhook_url: Some(hook),
            webhook_secret: Some(secret.into()),
            payee_tick_ms: 20,
            ..SimConfig::default()
        },
    )
    .await;
    let (tx, mut handled) = mpsc::unbounded_channel();
    let inner = webhook_handler(app.engine.clone(), app.queue.clone());
    let state = WebhookState::new(Verifier::new(secret).unwrap(), move |ev| {
        let (fut, tx) = (inner(ev.clone()), tx.clone());
        Box::pin(async move {
            fut.await;
            let _ = tx.send(ev);
        })
    });
    tokio::spawn(async move { axum::serve(listener, server::router(state)).await });

    app.known_payee("w", "5551001").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("w", "6.00")))
        .await;
    let id = app.item(batch, "w").await.id;
    app.engine.process_item(id).await.unwrap();
    let flow = app.item(batch, "w").await.payout_flow_id.unwrap();

    // The simulated payee finishes; Dots sends flow.updated; payrun refreshes that flow.
    let guard = Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout(guard, handled.recv())
            .await
            .expect("a webhook arrives")
            .unwrap();
        if ev == (payrun::webhook::WebhookEvent::FlowUpdated { flow_id: flow }) {
            break;
        }
    }
    let item = app.item(batch, "w").await;
    assert_eq!(
        item.state,
        ItemState::Completed,
        "completed by the webhook, no cron poll ran"
    );
    assert_eq!(
        app.sim().request_count("GET /v2/flows/{id}"),
        1,
        "one refresh, triggered by the webhook"
    );
    app.assert_paid_exactly_once(batch).await;
}
