//! Polling that spends little: each open flow is read only when its own poll time is due, and
//! the interval backs off along `worker.poll_schedule_secs` (1 min, 5 min, 30 min, hourly by
//! default); a flow a webhook just refreshed is pushed out the same way.

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
