//! Process counters, kept in a `prometheus-client` registry: Dots calls by endpoint and
//! outcome, webhooks by event, scheduled retries, and item-job run time. A leaf: it knows no
//! other payrun module. The `/metrics` endpoint (`app::metrics_endpoint`) encodes these and
//! adds the gauges it reads from the store at scrape time.
//!
//! No label ever carries an id, an amount or a secret.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DotsRequest {
    endpoint: &'static str,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookEvent {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryCause {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CircuitKind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FundsEvent {
    event: &'static str,
}

/// Why an item was handed back for a later attempt (the `cause` label of `payrun_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A step asked to run again later (`Next::RetryAt`: a retryable Dots failure, a key that
    /// must age out, a job that ran out of steps).
    Step,
    /// The job itself failed (a store error): the item is deferred along the backoff.
    JobError,
}

/// Item-job durations, seconds: 5 ms doubling to about 41 s (a job is a few Dots calls).
const JOB_SECONDS_BUCKETS: (f64, f64, u16) = (0.005, 2.0, 14);

struct Metrics {
    registry: Registry,
    dots_requests: Family<DotsRequest, Counter>,
    webhooks: Family<WebhookEvent, Counter>,
    retries: Family<RetryCause, Counter>,
    funds: Family<FundsEvent, Counter>,
    job_seconds: Histogram,
    circuit_open: Family<CircuitKind, Gauge>,
    circuit_opened: Family<CircuitKind, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let dots_requests = Family::<DotsRequest, Counter>::default();
    let webhooks = Family::<WebhookEvent, Counter>::default();
    let retries = Family::<RetryCause, Counter>::default();
    let funds = Family::<FundsEvent, Counter>::default();
    let (start, factor, len) = JOB_SECONDS_BUCKETS;
    let job_seconds = Histogram::new(exponential_buckets(start, factor, len));
    // Counters get their `_total` suffix from the library: the series stay
    // `payrun_dots_requests_total`, `payrun_webhooks_total`, `payrun_retries_total`.
    registry.register(
        "payrun_dots_requests",
        "Dots API calls by endpoint and outcome",
        dots_requests.clone(),
    );
    registry.register(
        "payrun_retries",
        "Item steps scheduled for a retry, by cause",
        retries.clone(),
    );
    registry.register(
        "payrun_funds_holds",
        "Batches held for App wallet funds (event=held) and resumed (event=resumed)",
        funds.clone(),
    );
    registry.register(
        "payrun_webhooks",
        "Webhook deliveries by event",
        webhooks.clone(),
    );
    registry.register(
        "payrun_job_seconds",
        "Item job run time",
        job_seconds.clone(),
    );
    let circuit_open = Family::<CircuitKind, Gauge>::default();
    let circuit_opened = Family::<CircuitKind, Counter>::default();
    registry.register(
        "payrun_circuit_open",
        "1 while this process' circuit of a kind is open (no Dots calls)",
        circuit_open.clone(),
    );
    registry.register(
        "payrun_circuit_opened",
        "Times this process' circuit of a kind opened",
        circuit_opened.clone(),
    );
    Metrics {
        circuit_open,
        circuit_opened,
        registry,
        dots_requests,
        webhooks,
        retries,
        funds,
        job_seconds,
    }
});

/// One Dots API call to `endpoint` (e.g. `POST /v2/transfers`) that ended in `outcome`.
pub fn dots_request(endpoint: &'static str, outcome: &str) {
    METRICS
        .dots_requests
        .get_or_create(&DotsRequest {
            endpoint,
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// One webhook event received (`flow.updated`, `transfer`, `other`).
pub fn webhook(event: &'static str) {
    METRICS
        .webhooks
        .get_or_create(&WebhookEvent { event })
        .inc();
}

/// One item handed back for a later attempt.
pub fn retry(cause: Retry) {
    let cause = match cause {
        Retry::Step => "step",
        Retry::JobError => "job_error",
    };
    METRICS.retries.get_or_create(&RetryCause { cause }).inc();
}

/// A circuit of `kind` (`credentials`, `dots_unavailable`, `rate_limited`) opened or closed.
pub fn circuit(kind: &'static str, open: bool) {
    let k = CircuitKind { kind };
    METRICS.circuit_open.get_or_create(&k).set(i64::from(open));
    if open {
        METRICS.circuit_opened.get_or_create(&k).inc();
    }
}

/// A funds hold transition: `held` (a batch held because the App wallet is short) or
/// `resumed` (its hold lifted, or extended, because the balance now covers it).
pub fn funds_hold(event: &'static str, batches: u64) {
    METRICS
        .funds
        .get_or_create(&FundsEvent { event })
        .inc_by(batches);
}

/// How long one item job ran.
pub fn job_finished(took: std::time::Duration) {
    METRICS.job_seconds.observe(took.as_secs_f64());
}

/// Appends every counter in the OpenMetrics text format, without the closing `# EOF`.
pub fn encode(out: &mut String) -> std::fmt::Result {
    prometheus_client::encoding::text::encode_registry(out, &METRICS.registry)
}

/// Dots calls so far that ended in `outcome`, over every endpoint (benchmarks).
pub fn dots_requests_with_outcome(outcome: &str) -> u64 {
    let mut text = String::new();
    if encode(&mut text).is_err() {
        return 0;
    }
    let label = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("payrun_dots_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_series_names_and_labels() {
        dots_request("GET /v2/test-only", "418");
        dots_request("GET /v2/test-only", "418");
        webhook("other");
        retry(Retry::Step);
        job_finished(std::time::Duration::from_millis(30));
        circuit("test_only", true);
        let mut text = String::new();
        encode(&mut text).unwrap();
        assert!(
            text.contains(
                "payrun_dots_requests_total{endpoint=\"GET /v2/test-only\",outcome=\"418\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("payrun_webhooks_total{event=\"other\"}"));
        assert!(text.contains("payrun_retries_total{cause=\"step\"}"));
        assert!(text.contains("payrun_job_seconds_count"));
        assert!(
            text.contains("payrun_circuit_open{kind=\"test_only\"} 1"),
            "{text}"
        );
        assert!(text.contains("payrun_circuit_opened_total{kind=\"test_only\"} 1"));
        assert!(dots_requests_with_outcome("418") >= 2);
    }
}
