//! Process metrics in the Prometheus text format: counters the code bumps as it works (Dots
//! calls by endpoint and status, retries, job latency) and gauges read from the store at
//! scrape time (items by state, queue depth). Served on `/metrics` by `serve` and `worker`.
//!
//! Deliberately tiny: a global registry of labelled counters behind one mutex. No label ever
//! carries an id, an amount or a secret.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

use crate::store::{Store, StoreError};

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, String), u64>,
    sums: BTreeMap<(&'static str, String), (f64, u64)>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "payrun_dots_requests_total",
        "counter",
        "Dots API calls by endpoint and outcome.",
    ),
    (
        "payrun_retries_total",
        "counter",
        "Steps scheduled for a retry, by step and class.",
    ),
    (
        "payrun_webhooks_total",
        "counter",
        "Webhook deliveries by outcome.",
    ),
    ("payrun_job_seconds", "summary", "Item job run time."),
    ("payrun_items", "gauge", "Items by state."),
    (
        "payrun_queue_depth",
        "gauge",
        "Item jobs waiting or running in the queue.",
    ),
];

/// Adds one to counter `name{labels}`; `labels` is preformatted, e.g. `endpoint="POST /v2/transfers",status="200"`.
pub fn inc(name: &'static str, labels: String) {
    if let Ok(mut r) = registry().lock() {
        *r.counters.entry((name, labels)).or_default() += 1;
    }
}

/// Records one observation of a summary metric.
pub fn observe(name: &'static str, labels: String, value: f64) {
    if let Ok(mut r) = registry().lock() {
        let e = r.sums.entry((name, labels)).or_default();
        e.0 += value;
        e.1 += 1;
    }
}

/// The current value of a counter (tests, benchmarks).
pub fn counter(name: &'static str, labels: &str) -> u64 {
    registry()
        .lock()
        .ok()
        .and_then(|r| r.counters.get(&(name, labels.to_string())).copied())
        .unwrap_or(0)
}

/// Sum of a counter over all its labels whose label set contains `filter`.
pub fn counter_sum(name: &'static str, filter: &str) -> u64 {
    registry()
        .lock()
        .map(|r| {
            r.counters
                .iter()
                .filter(|((n, l), _)| *n == name && l.contains(filter))
                .map(|(_, v)| *v)
                .sum()
        })
        .unwrap_or(0)
}

/// Renders every metric, reading the gauges from the store.
pub async fn render(store: &Store) -> Result<String, StoreError> {
    let states = store.state_totals().await?;
    let depth = store.queued_jobs().await?;
    let mut out = String::new();
    for (name, kind, help) in HELP {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    if let Ok(r) = registry().lock() {
        for ((name, labels), v) in &r.counters {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
        for ((name, labels), (sum, count)) in &r.sums {
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}"
            );
        }
    }
    for s in crate::item::ItemState::ALL {
        let n = states
            .iter()
            .find(|(st, _)| st == s.as_str())
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "payrun_items{{state=\"{s}\"}} {n}");
    }
    let _ = writeln!(out, "payrun_queue_depth {depth}");
    Ok(out)
}

/// `/healthz` and `/metrics` for a process, on its own small axum router.
pub fn router(store: Store) -> axum::Router {
    use axum::response::IntoResponse;
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let store = store.clone();
                async move {
                    match render(&store).await {
                        Ok(body) => (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(e) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                            .into_response(),
                    }
                }
            }),
        )
}
