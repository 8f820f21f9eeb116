//! Polling that spends little: each open flow is read only when its own poll time is due, and
//! the interval backs off along `worker.poll_schedule_secs` (1 min, 5 min, 30 min, hourly by
//! default); a flow a webhook just refreshed is pushed out the same way. A poll that fails is
//! retried within seconds, backing off to a minute, and leaves the flow's schedule alone.

use crate::common::app::*;
use payrun::jobs::poll;
use payrun::store::now_ms;

on_both_backends!(an_open_flow_is_polled_only_when_due_and_backs_off);

async fn an_open_flow_is_polled_only_when_due_and_backs_off(b: Backend) {
    let mut app = spawn_app(b, quiet_sim()).await;
    // The production schedule, not the tests' 1 s one.
    let mut worker = app.settings.worker.clone();
    worker.poll_schedule_secs = vec![60, 300, 1800, 3600];
    app.engine = payrun::jobs::Engine::new(
        app.store.clone(),
        app.engine.dots.clone(),
        worker,
        "poll-test",
    );
    app.known_payee("p", "5551101").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("p", "2.00")))
        .await;
    let id = app.item(batch, "p").await.id;
    app.engine.process_item(id).await.unwrap();
    let gets = || app.sim().request_count("GET /v2/flows/{id}");

    // Not due yet: nothing is read.
    let r = poll::poll_due(&app.engine, now_ms(), 100).await.unwrap();
    assert_eq!((r.polled, gets()), (0, 0));
    let first = app.item(batch, "p").await.next_poll_at.unwrap();
    assert!(
        (first - now_ms() - 60_000).abs() < 5_000,
        "first poll a minute after the flow"
    );

    // Each poll of a still-open flow pushes the next one further out.
    let mut expect = vec![300_000, 1_800_000, 3_600_000, 3_600_000];
    for (n, gap) in expect.drain(..).enumerate() {
        let r = poll::poll_due(&app.engine, i64::MAX, 100).await.unwrap();
        assert_eq!(r.polled, 1);
        assert_eq!(gets(), n as u64 + 1);
        let next = app.item(batch, "p").await.next_poll_at.unwrap();
        assert!(
            (next - now_ms() - gap).abs() < 5_000,
            "poll {n}: next in {} ms, want {gap}",
            next - now_ms()
        );
    }
    assert_eq!(app.item(batch, "p").await.polls, 4);
}

on_both_backends!(a_failed_poll_is_retried_within_seconds_and_the_item_then_moves_on);

/// The app with the shipped poll settings (a minute, then backing off; failed polls retried
/// after about 3 s, doubling to a minute), the simulator answering 429s with `Retry-After: 10`.
async fn shipped_polling(b: Backend) -> TestApp {
    let mut app = spawn_app(
        b,
        payrun::dots::sim::SimConfig {
            retry_after_secs: 10,
            ..quiet_sim()
        },
    )
    .await;
    let builtin = payrun::config::Settings::builtin().worker;
    let mut worker = app.settings.worker.clone();
    worker.poll_schedule_secs = builtin.poll_schedule_secs.clone();
    worker.poll_retry_secs = builtin.poll_retry_secs;
    worker.poll_retry_max_secs = builtin.poll_retry_max_secs;
    assert_eq!(
        (worker.poll_retry_secs, worker.poll_retry_max_secs),
        (3, 60)
    );
    app.engine = payrun::jobs::Engine::new(
        app.store.clone(),
        app.engine.dots.clone(),
        worker,
        "poll-test",
    );
    app
}

/// Asserts the item's next poll is `lo..=hi` ms from now (a little slack for the test's own
/// time), and returns when it is.
async fn next_poll_in(app: &TestApp, batch: payrun::batch::BatchId, lo: i64, hi: i64) -> i64 {
    let at = app
        .item(batch, "p")
        .await
        .next_poll_at
        .expect("a poll is due");
    let gap = at - now_ms();
    assert!(
        gap >= lo - 1_000 && gap <= hi + 200,
        "next poll in {gap} ms, want {lo}..={hi}"
    );
    at
}

async fn a_failed_poll_is_retried_within_seconds_and_the_item_then_moves_on(b: Backend) {
    use payrun::dots::sim::Fault;
    use payrun::item::ItemState;
    const GET: &str = "GET /v2/flows/{id}";
    let app = shipped_polling(b).await;
    let batch = app
        .batch(&format!(
            "{HEADER}{}",
            new_payee_row("p", "3.00", "5552201")
        ))
        .await;
    let id = app.item(batch, "p").await.id;
    app.engine.process_item(id).await.unwrap();
    assert_eq!(app.item(batch, "p").await.state, ItemState::Onboarding);
    // The first poll a minute after the flow was made.
    let first = next_poll_in(&app, batch, 60_000, 60_000).await;
    // The payee finishes onboarding; the first poll meets a 503.
    app.sim()
        .clock()
        .advance(std::time::Duration::from_secs(7200));
    app.sim().inject(GET, Fault::Status(503), 1);
    let r = poll::poll_due(&app.engine, first, 100).await.unwrap();
    assert_eq!(r.polled, 1);
    let item = app.item(batch, "p").await;
    assert_eq!(
        (item.state, item.polls, item.poll_errors),
        (ItemState::Onboarding, 0, 1)
    );
    // Retried in 1.5 to 3 s, not at the schedule's next slot (5 min); not polled before.
    let retry = next_poll_in(&app, batch, 1_500, 3_000).await;
    let r = poll::poll_due(&app.engine, retry - 1, 100).await.unwrap();
    assert_eq!(r.polled, 0, "not polled before the retry is due");
    // The retry reads the flow: the payee is onboarded and the item moves on to be paid.
    let r = poll::poll_due(&app.engine, retry, 100).await.unwrap();
    assert_eq!(r.onboarded, vec![id]);
    app.engine.process_item(id).await.unwrap();
    let item = app.item(batch, "p").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert_eq!(
        (item.polls, item.poll_errors),
        (0, 0),
        "a new flow starts afresh"
    );
    let first = next_poll_in(&app, batch, 60_000, 60_000).await;

    // The payout flow: the payee is done, but polls meet a 429 (Retry-After: 10 s, honoured)
    // and then 503s in a row, each retried a little later, all within a minute.
    app.sim()
        .clock()
        .advance(std::time::Duration::from_secs(7200));
    app.sim().inject(GET, Fault::Throttle, 1);
    for _ in 0..6 {
        app.sim().inject(GET, Fault::Status(503), 1);
    }
    let mut due = first;
    let windows = [
        (10_000, 10_000),
        (3_000, 6_000),
        (6_000, 12_000),
        (12_000, 24_000),
        (24_000, 48_000),
        (30_000, 60_000),
        (30_000, 60_000),
    ];
    for (n, (lo, hi)) in windows.into_iter().enumerate() {
        let r = poll::poll_due(&app.engine, due, 100).await.unwrap();
        assert_eq!((r.polled, r.completed), (1, 0), "poll {n}");
        let item = app.item(batch, "p").await;
        assert_eq!(
            (item.polls, item.poll_errors),
            (0, n as i64 + 1),
            "poll {n}"
        );
        due = next_poll_in(&app, batch, lo, hi).await;
    }
    // The next read finds the payout done: the item completes, paid exactly once.
    let r = poll::poll_due(&app.engine, due, 100).await.unwrap();
    assert_eq!(r.completed, 1);
    assert_eq!(app.item(batch, "p").await.state, ItemState::Completed);
    assert_eq!(app.sim().request_count(GET), 10);
    app.assert_paid_exactly_once(batch).await;
    assert_eq!(app.transfers_for(&app.item(batch, "p").await).len(), 1);
}
