//! The feeder: the queue holds a window of the backlog, every item is handed over, retries
//! and lost jobs come back when due, and a real worker pays a batch larger than its window.

use std::time::Duration;

use crate::common::app::*;
use payrun::batch::ItemId;
use payrun::dots::sim::SimConfig;
use payrun::jobs::Engine;
use payrun::store::now_ms;

on_both_backends!(
    a_batch_is_handed_over_in_file_order_one_window_at_a_time,
    a_claim_that_lapses_is_claimed_again,
    a_retry_is_handed_over_when_due_and_not_before,
    a_worker_pays_a_batch_larger_than_its_queue_window,
    feeders_of_two_processes_on_one_database_claim_every_item_once_without_a_locked_error,
);

const HOUR: i64 = 3_600_000;

async fn known_batch(app: &TestApp, n: usize) -> payrun::batch::BatchId {
    let mut csv = String::from(HEADER);
    for i in 0..n {
        let payee = format!("seller-{i:03}");
        app.known_payee(&payee, &format!("555{i:04}")).await;
        csv.push_str(&known_payee_row(&payee, "1.00"));
    }
    let opts = payrun::app::SubmitOptions {
        no_enqueue: true,
        ..Default::default()
    };
    match app.submit_with(&csv, &opts).await.unwrap() {
        payrun::app::Submitted::New { batch, .. } => batch,
        other => panic!("expected a new batch, got {other:?}"),
    }
}

async fn a_batch_is_handed_over_in_file_order_one_window_at_a_time(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = known_batch(&app, 10).await;
    let now = now_ms();
    let mut handed: Vec<ItemId> = Vec::new();
    for expect in [4, 4, 2, 0] {
        let got = app.store.claim_for_queue(now, HOUR, 4).await.unwrap();
        assert_eq!(got.len(), expect, "claimed so far: {handed:?}");
        handed.extend(got);
    }
    let lines: Vec<u64> = handed.iter().map(|i| i.line_in(batch).unwrap()).collect();
    assert_eq!(
        lines,
        (2..12).collect::<Vec<_>>(),
        "each item once, in file order"
    );
    for id in &handed {
        app.engine.process_item(*id).await.unwrap();
    }
    app.assert_paid_exactly_once(batch).await;
    assert!(
        app.store
            .claim_for_queue(now_ms(), HOUR, 4)
            .await
            .unwrap()
            .is_empty(),
        "nothing workable is left"
    );
}

async fn a_claim_that_lapses_is_claimed_again(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    known_batch(&app, 1).await;
    let t = now_ms();
    let first = app.store.claim_for_queue(t, 1_000, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    // Its job never runs (lost with its worker): nobody else takes it while the claim holds...
    assert!(
        app.store
            .claim_for_queue(t + 500, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // ...and it is handed over again once the claim has lapsed.
    assert_eq!(
        app.store
            .claim_for_queue(t + 2_000, 1_000, 10)
            .await
            .unwrap(),
        first
    );
}

async fn a_retry_is_handed_over_when_due_and_not_before(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    known_batch(&app, 1).await;
    let ids = app.store.claim_for_queue(now_ms(), HOUR, 10).await.unwrap();
    app.sim().inject(
        "POST /v2/transfers",
        payrun::dots::sim::Fault::Status(500),
        1,
    );
    let next = app.engine.process_item(ids[0]).await.unwrap();
    let payrun::jobs::Next::RetryAt(at) = next else {
        panic!("expected a retry, got {next:?}")
    };
    // The job handed the item back: no claim holds it, but it is not due yet.
    assert!(
        app.store
            .claim_for_queue(at - 1, HOUR, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.store.claim_for_queue(at, HOUR, 10).await.unwrap(), ids);
}

async fn a_worker_pays_a_batch_larger_than_its_queue_window(b: Backend) {
    let app = spawn_app(
        b,
        SimConfig {
            complete_after_secs: 3600.0,
            ..SimConfig::default()
        },
    )
    .await;
    let batch = known_batch(&app, 30).await;
    let mut settings = app.settings.worker.clone();
    settings.queue_window = 4;
    settings.feed_ms = 20;
    let engine = Engine::new(
        app.store.clone(),
        app.engine.dots.clone(),
        settings,
        "feed-test",
    );
    let store = app.store.clone();
    let max_depth = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let depth = max_depth.clone();
    let settled = async move {
        loop {
            let q = store.queued_jobs().await.unwrap();
            depth.fetch_max(q, std::sync::atomic::Ordering::Relaxed);
            if store.batch_is_settled(batch).await.unwrap() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        payrun::app::work_until(engine, settled),
    )
    .await
    .expect("the batch settles")
    .unwrap();
    app.assert_paid_exactly_once(batch).await;
    let deepest = max_depth.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        deepest <= 4,
        "the queue held {deepest} jobs, more than its window"
    );
}

/// Two worker processes feed from one database at once (here: two stores, two pools, on one
/// SQLite file or PostgreSQL database). On SQLite a transaction that reads and then writes
/// must hold the write lock from its start: a deferred one whose read snapshot another
/// connection's commit made stale fails at once with "database is locked" (the busy timeout
/// does not apply to a read -> write upgrade).
async fn feeders_of_two_processes_on_one_database_claim_every_item_once_without_a_locked_error(
    b: Backend,
) {
    const ITEMS: usize = 300;
    let app = spawn_app(b, quiet_sim()).await;
    let mut csv = String::from(HEADER);
    for i in 0..ITEMS {
        csv.push_str(&new_payee_row(
            &format!("p-{i:04}"),
            "1.00",
            &format!("555{i:04}"),
        ));
    }
    let opts = payrun::app::SubmitOptions {
        no_enqueue: true,
        ..Default::default()
    };
    app.submit_with(&csv, &opts).await.unwrap();
    let other = payrun::store::Store::connect(&app.db_url).await.unwrap();
    let now = now_ms();
    let feeders = [&app.store, &other, &app.store, &other].map(|store| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                // One item a call: one claim transaction (read the range, then write) each.
                match store.claim_for_queue(now, HOUR, 1).await {
                    Ok(ids) if ids.is_empty() => return Ok(got),
                    Ok(ids) => got.extend(ids),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
    });
    let mut all: Vec<ItemId> = Vec::new();
    for f in feeders {
        all.extend(f.await.unwrap().expect("a feeder's claim fails"));
    }
    let mut unique = all.clone();
    unique.sort_by_key(|i| i.to_string());
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "no item is claimed twice");
    assert_eq!(all.len(), ITEMS, "every item is claimed");
}
