//! `payrun audit` against a flaky Dots: 5xx and 429s are retried with the worker's backoff
//! (honouring `Retry-After`), so the audit completes with the right result; a read that keeps
//! failing gives up after its bounded attempts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::app::*;
use payrun::app::audit::audit_batch;
use payrun::dots::sim::{Fault, SimConfig};

on_both_backends!(
    an_audit_completes_with_the_right_result_when_a_quarter_of_reads_fail,
    an_audit_read_that_keeps_failing_gives_up_after_its_attempts,
);

const LIST: &str = "GET /v2/transfers";

fn flaky_sim() -> SimConfig {
    SimConfig {
        error_rates: HashMap::from([(LIST.to_string(), 0.25)]),
        throttle_rate: 0.05,
        retry_after_secs: 1,
        ..quiet_sim()
    }
}

/// A batch of `n` known payees, paid.
async fn paid_batch(app: &TestApp, n: usize) -> payrun::batch::BatchId {
    let mut csv = HEADER.to_string();
    for i in 0..n {
        let payee = format!("p{i:03}");
        app.known_payee(&payee, &format!("55501{i:05}")).await;
        csv.push_str(&known_payee_row(&payee, &format!("{}.{:02}", 10 + i, i)));
    }
    let batch = app.batch(&csv).await;
    app.step_until_idle(batch).await;
    for item in app.items(batch).await {
        assert!(item.transfer_id.is_some(), "{} not paid", item.payee_id);
    }
    batch
}

async fn an_audit_completes_with_the_right_result_when_a_quarter_of_reads_fail(b: Backend) {
    let app = spawn_app(b, flaky_sim()).await;
    let batch = paid_batch(&app, 40).await;
    // The audit's first reads certainly fail: two 5xx and a 429 (Retry-After: 1 s).
    app.sim().inject(LIST, Fault::Status(503), 1);
    app.sim().inject(LIST, Fault::Throttle, 1);
    app.sim().inject(LIST, Fault::Status(502), 1);
    let before = app.sim().request_count(LIST);
    let started = Instant::now();
    let report = audit_batch(&app.store, &app.engine.dots, batch)
        .await
        .expect("the audit completes despite 5xx and 429s");
    let took = started.elapsed();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.items, 40);
    assert_eq!(report.transfers, 40);
    let reads = app.sim().request_count(LIST) - before;
    assert!(
        reads > 40 + 3,
        "failed reads were asked again: {reads} reads"
    );
    assert!(
        took >= Duration::from_secs(1),
        "the 429's Retry-After was honoured: {took:?}"
    );
}

async fn an_audit_read_that_keeps_failing_gives_up_after_its_attempts(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = paid_batch(&app, 1).await;
    app.sim().inject(LIST, Fault::Status(503), 1000);
    let before = app.sim().request_count(LIST);
    let err = audit_batch(&app.store, &app.engine.dots, batch)
        .await
        .expect_err("Dots never answers");
    assert!(err.to_string().contains("503"), "{err}");
    let attempts = app.settings.worker.max_attempts as u64;
    assert_eq!(app.sim().request_count(LIST) - before, attempts);
}
