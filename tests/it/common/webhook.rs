//! Helpers for the webhook tests: a webhook receiver built on `payrun::webhook::router` that
//! reports what it handled and answered, signing helpers, and a simulator wired to send it
//! webhooks. Every wait is on a channel under a timeout guard, never a sleep.

use super::api::{Api, id_of, start};
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use payrun::dots::sim::SimConfig;
use payrun::webhook::server::PATH;
use payrun::webhook::{Verifier, WebhookEvent, WebhookState, router};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use uuid::Uuid;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const NOW: i64 = 1_700_000_000;
pub const GUARD: Duration = Duration::from_secs(10);

/// A webhook endpoint on a free port: `events` gets what the handler was given, `hits` every
/// request's `svix-id` and answer status.
pub struct Receiver {
    pub url: String,
    pub events: UnboundedReceiver<WebhookEvent>,
    pub hits: UnboundedReceiver<(String, u16)>,
}

/// Serve `router(state)` behind a layer answering 500 to the first `fail_first` requests.
pub async fn receiver(
    clock: impl Fn() -> i64 + Send + Sync + 'static,
    fail_first: usize,
) -> Receiver {
    let (event_tx, events) = unbounded_channel();
    let (hit_tx, hits) = unbounded_channel();
    let handler = move |e: WebhookEvent| {
        let tx = event_tx.clone();
        async move {
            let _ = tx.send(e);
        }
        .boxed()
    };
    let state = WebhookState::new(Verifier::new(SECRET).unwrap(), handler).with_clock(clock);
    let failures = Arc::new(AtomicUsize::new(fail_first));
    let app = router(state).layer(middleware::from_fn(move |req: Request, next: Next| {
        let (hit_tx, failures) = (hit_tx.clone(), failures.clone());
        async move {
            let id = req.headers().get("svix-id").map_or(String::new(), |v| {
                v.to_str().unwrap_or_default().to_string()
            });
            let take = |n: usize| n.checked_sub(1);
            let resp: Response = if failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
                .is_ok()
            {
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            } else {
                next.run(req).await
            };
            let _ = hit_tx.send((id, resp.status().as_u16()));
            resp
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}{PATH}"),
        events,
        hits,
    }
}

pub async fn next<T>(rx: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(GUARD, rx.recv())
        .await
        .expect("arrives in time")
        .expect("channel open")
}

pub type Headers = Vec<(String, String)>;

/// POST `body` with the given headers.
pub async fn send(url: &str, headers: &[(String, String)], body: &str) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).body(body.to_string());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.unwrap()
}

/// POST `body` with the given headers; the answer's status.
pub async fn post(url: &str, headers: &[(String, String)], body: &str) -> u16 {
    send(url, headers, body).await.status().as_u16()
}

/// Svix headers for `body` signed at `ts` with `SECRET`, under `prefix` (`svix` / `webhook`).
pub fn signed(prefix: &str, id: &str, ts: i64, body: &str) -> Headers {
    let sig = Verifier::new(SECRET).unwrap().sign(id, ts, body.as_bytes());
    vec![
        (format!("{prefix}-id"), id.to_string()),
        (format!("{prefix}-timestamp"), ts.to_string()),
        (format!("{prefix}-signature"), sig),
    ]
}

/// A simulator sending webhooks to `url`, signed with `SECRET`.
pub async fn sim_to(url: &str, tweak: impl FnOnce(&mut SimConfig)) -> Api {
    let mut cfg = SimConfig {
        webhook_url: Some(url.to_string()),
        webhook_secret: Some(SECRET.into()),
        webhook_retry_delays_ms: vec![0, 10, 10, 10],
        ..SimConfig::default()
    };
    tweak(&mut cfg);
    start(cfg).await
}

/// Wait (guarded) until the simulator has no webhook pending.
pub async fn idle(api: &Api) {
    tokio::time::timeout(GUARD, api.sim().webhooks_idle())
        .await
        .expect("webhooks settle in time");
}

/// A new payout flow created through the API; its id.
pub async fn new_flow(api: &Api) -> Uuid {
    let (status, flow) = api.post("/v2/flows", json!({ "steps": ["payout"] })).await;
    assert_eq!(status, StatusCode::OK, "{flow}");
    id_of(&flow).parse().unwrap()
}
