//! `/healthz` and `/metrics` for a process, on its own small axum router (merged into
//! `payrun serve`'s router, or served beside a worker with `--health-listen`).
//!
//! `/healthz` answers 200 `ok` while the process' [`Health`] has no problem, else 503 with a JSON
//! body `{"status": "unhealthy", "problems": [{"source", "reason", "since_ms"}]}` (an open
//! circuit, a dead or stalled worker component).
//!
//! `/metrics` is the OpenMetrics text of the process counters (`crate::metrics`) followed by
//! the gauges read from the store at scrape time: `payrun_items{state}` (items by state, every
//! state listed) and `payrun_queue_depth` (item jobs waiting or running in the queue).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::health::Health;
use crate::item::ItemState;
use crate::store::{Store, StoreError};

/// The OpenMetrics text format's media type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode metrics")]
    Encode(#[from] std::fmt::Error),
}

/// Renders every metric: the process counters, then the gauges read from `store`.
pub async fn render(store: &Store) -> Result<String, RenderError> {
    let states = store.state_totals().await?;
    let depth = store.queued_jobs().await?;
    let mut gauges = Registry::default();
    let items = Family::<StateLabel, Gauge>::default();
    for s in ItemState::ALL {
        let n = states
            .iter()
            .find(|(st, _)| st == s.as_str())
            .map_or(0, |(_, n)| *n);
        items
            .get_or_create(&StateLabel { state: s.as_str() })
            .set(n);
    }
    let queue_depth = Gauge::<i64>::default();
    queue_depth.set(depth);
    gauges.register("payrun_items", "Items by state", items);
    gauges.register(
        "payrun_queue_depth",
        "Item jobs waiting or running in the queue",
        queue_depth,
    );
    let mut out = String::new();
    crate::metrics::encode(&mut out)?;
    prometheus_client::encoding::text::encode_registry(&mut out, &gauges)?;
    prometheus_client::encoding::text::encode_eof(&mut out)?;
    Ok(out)
}

async fn metrics(store: Store) -> Response {
    match render(&store).await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn healthz(health: Health) -> Response {
    if health.is_healthy() {
        return "ok".into_response();
    }
    let body = serde_json::json!({"status": "unhealthy", "problems": health.problems()});
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// `/healthz` (from `health`) and `/metrics` for a process.
pub fn router(store: Store, health: Health) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(move || healthz(health.clone())))
        .route("/metrics", get(move || metrics(store.clone())))
}
