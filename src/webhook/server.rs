//! The webhook endpoint: `POST /webhooks/dots`.
//!
//! What it owns: reading the raw body, verifying it, dropping redeliveries, and handing the
//! parsed event to the caller's handler.
//!
//! Guarantees:
//! - A request whose signature headers are missing, whose signature does not match the raw body
//!   or whose timestamp is more than 5 minutes off is answered 401 `{"error": ...}` and changes
//!   nothing (its id is not even remembered, so a forged request cannot suppress a real one).
//! - A verified message is answered 204 and its event is handed to the handler in a spawned
//!   task, so the answer never waits on the handler (Svix wants 2xx within 15 s).
//! - A verified message whose id (`svix-id` / `webhook-id`) was already accepted among the last
//!   `capacity` ids is answered 200 and not handed over again.
//! - Independent of the store: what an event means is the handler's business.

use super::dedupe::{DEFAULT_CAPACITY, Dedupe};
use super::event::WebhookEvent;
use super::verify::{Verifier, message_id};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::BoxFuture;
use serde_json::json;
use std::sync::{Arc, Mutex};
use tracing::{debug, warn};

/// The path Dots' Svix endpoint should be configured to call.
pub const PATH: &str = "/webhooks/dots";

/// Acts on one accepted event; runs in its own task after the response is sent.
pub type Handler = Arc<dyn Fn(WebhookEvent) -> BoxFuture<'static, ()> + Send + Sync>;

/// Current unix time in seconds; injectable so tests control the tolerance window.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Everything the endpoint needs. Cheap to clone; clones share the dedupe set.
#[derive(Clone)]
pub struct WebhookState {
    pub verifier: Arc<Verifier>,
    pub handler: Handler,
    pub clock: Clock,
    dedupe: Arc<Mutex<Dedupe>>,
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

/// Real time, unix seconds.
pub fn system_clock() -> i64 {
    chrono::Utc::now().timestamp()
}

impl WebhookState {
    /// State with the system clock and a dedupe window of [`DEFAULT_CAPACITY`] ids.
    pub fn new<F>(verifier: Verifier, handler: F) -> WebhookState
    where
        F: Fn(WebhookEvent) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        WebhookState {
            verifier: Arc::new(verifier),
            handler: Arc::new(handler),
            clock: Arc::new(system_clock),
            dedupe: Arc::new(Mutex::new(Dedupe::new(DEFAULT_CAPACITY))),
        }
    }

    /// Use `clock` (unix seconds) instead of the system clock (tests: the simulator's clock).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn with_clock<C>(mut self, clock: C) -> WebhookState
    where
        C: Fn() -> i64 + Send + Sync + 'static,
    {
        self.clock = Arc::new(clock);
        self
    }

    fn first_sighting(&self, id: &str) -> bool {
        self.dedupe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_sighting(id)
    }
}

/// `POST /webhooks/dots`, ready to be merged into (or nested in) an application router.
pub fn router(state: WebhookState) -> Router {
    Router::new().route(PATH, post(receive)).with_state(state)
}

async fn receive(State(st): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = st.verifier.verify(&headers, &body, (st.clock)()) {
        warn!(error = %e, "webhook refused");
        let body = axum::Json(json!({ "error": e.to_string() }));
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    // Verification found the id header, so this is never empty.
    let id = message_id(&headers).unwrap_or_default();
    if !st.first_sighting(id) {
        debug!(webhook_id = id, "webhook redelivery ignored");
        return StatusCode::OK.into_response();
    }
    let event = WebhookEvent::parse(&body);
    debug!(webhook_id = id, ?event, "webhook accepted");
    tokio::spawn((st.handler)(event));
    StatusCode::NO_CONTENT.into_response()
}
