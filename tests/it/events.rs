//! Delivery of outbound events: a real HTTP receiver in the test gets every event, signed in
//! the Standard Webhooks scheme, each id retried until it is acknowledged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use payrun::config::Settings;
use payrun::jobs::outbound::Outbound;
use payrun::webhook::verify::Verifier;

use crate::common::app::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Received {
    /// Tries per event id, and the requests acknowledged.
    tries: HashMap<String, u32>,
    acked: Vec<(HeaderMap, Bytes)>,
}

/// A receiver that answers 500 to the first `fail_first` tries of each event id.
async fn receiver(fail_first: u32) -> (String, Arc<Mutex<Received>>) {
    let seen = Arc::new(Mutex::new(Received::default()));
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State((seen, fail)): State<(Arc<Mutex<Received>>, u32)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let id = headers["webhook-id"].to_str().unwrap().to_owned();
                    let mut s = seen.lock().unwrap();
                    let n = s.tries.entry(id).or_default();
                    *n += 1;
                    if *n <= fail {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    s.acked.push((headers, body));
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state((seen.clone(), fail_first));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn outbound(url: &str) -> Arc<Outbound> {
    let s = Settings::builtin_with_env([
        ("PAYRUN_EVENTS_URL".to_owned(), url.to_owned()),
        ("PAYRUN_EVENTS_SECRET".to_owned(), SECRET.to_owned()),
        (
            "PAYRUN_EVENTS_RETRY_SCHEDULE_SECS".to_owned(),
            "[0,0,0,0]".to_owned(),
        ),
    ])
    .unwrap();
    Outbound::from_settings(&s.events).unwrap().unwrap()
}

on_both_backends!(a_receiver_failing_the_first_two_tries_still_gets_every_event_signed);

async fn a_receiver_failing_the_first_two_tries_still_gets_every_event_signed(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (url, seen) = receiver(2).await;
    let out = outbound(&url);
    out.register(&app.store).await.unwrap();
    let batch = app
        .batch(&format!(
            "{HEADER}{}{}",
            new_payee_row("n1", "10.00", "5550401"),
            new_payee_row("n2", "11.00", "5550402")
        ))
        .await;
    app.step_until_idle(batch).await;
    let events = app.store.outbox_events(Some(batch)).await.unwrap();
    assert!(!events.is_empty());
    for _ in 0..20 {
        if seen.lock().unwrap().acked.len() >= events.len() {
            break;
        }
        out.turn(&app.store, "w1").await.unwrap();
    }
    {
        let s = seen.lock().unwrap();
        let verifier = Verifier::new(SECRET).unwrap();
        let now = payrun::store::now_ms() / 1000;
        let mut ids: Vec<String> = Vec::new();
        for (headers, body) in &s.acked {
            verifier.verify(headers, body, now).unwrap();
            ids.push(headers["webhook-id"].to_str().unwrap().to_owned());
            let stored = events.iter().find(|e| e.id == ids[ids.len() - 1]).unwrap();
            assert_eq!(body.as_ref(), stored.body.as_bytes());
        }
        ids.sort();
        let mut want: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        want.sort();
        assert_eq!(ids, want, "each event acknowledged once");
        assert!(s.tries.values().all(|n| *n == 3), "{:?}", s.tries);
    }
    let listed = app
        .store
        .events_with_deliveries(None, false, 1000)
        .await
        .unwrap();
    assert!(listed.iter().all(|e| e.deliveries.len() == 1
        && e.deliveries[0].status == "delivered"
        && e.deliveries[0].attempts == 3));
    let backlog = app.store.endpoint_backlog().await.unwrap();
    assert_eq!((backlog[0].pending, backlog[0].failed), (0, 0));

    // A replay sends the same id again.
    let first = events[0].id.clone();
    let n = app
        .store
        .replay_events(
            &payrun::store::ReplaySelector::Event(first.clone()),
            payrun::store::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    out.turn(&app.store, "w1").await.unwrap();
    let s = seen.lock().unwrap();
    assert_eq!(s.tries[&first], 4);
    assert_eq!(s.acked.last().unwrap().0["webhook-id"], first.as_str());
}

on_both_backends!(a_receiver_that_never_acknowledges_leaves_the_delivery_failed_after_the_last_try);

async fn a_receiver_that_never_acknowledges_leaves_the_delivery_failed_after_the_last_try(
    b: Backend,
) {
    let app = spawn_app(b, quiet_sim()).await;
    let (url, seen) = receiver(u32::MAX).await;
    let out = outbound(&url);
    out.register(&app.store).await.unwrap();
    let batch = app
        .batch(&format!(
            "{HEADER}{}",
            new_payee_row("n1", "10.00", "5550401")
        ))
        .await;
    app.step_until_idle(batch).await;
    for _ in 0..10 {
        out.turn(&app.store, "w1").await.unwrap();
    }
    {
        let s = seen.lock().unwrap();
        assert!(s.tries.values().all(|n| *n == 4), "{:?}", s.tries);
    }
    let failed = app
        .store
        .events_with_deliveries(None, true, 1000)
        .await
        .unwrap();
    assert!(!failed.is_empty());
    assert!(failed.iter().all(|e| e.deliveries[0].status == "failed"));
    let backlog = app.store.endpoint_backlog().await.unwrap();
    assert_eq!(backlog[0].failed as usize, failed.len());
}

/// A receiver on `listener` that holds each request `hold_ms` and records any moment two
/// requests for one event id were in flight together.
#[derive(Default)]
struct Overlaps {
    in_flight: HashMap<String, u32>,
    overlapped: Vec<String>,
    acked: Vec<String>,
}

async fn slow_receiver(listener: tokio::net::TcpListener, hold_ms: u64) -> Arc<Mutex<Overlaps>> {
    let seen = Arc::new(Mutex::new(Overlaps::default()));
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State((seen, hold)): State<(Arc<Mutex<Overlaps>>, u64)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let id = headers["webhook-id"].to_str().unwrap().to_owned();
                    Verifier::new(SECRET)
                        .unwrap()
                        .verify(&headers, &body, payrun::store::now_ms() / 1000)
                        .unwrap();
                    {
                        let mut s = seen.lock().unwrap();
                        let n = s.in_flight.entry(id.clone()).or_default();
                        *n += 1;
                        if *n > 1 {
                            s.overlapped.push(id.clone());
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(hold)).await;
                    let mut s = seen.lock().unwrap();
                    *s.in_flight.get_mut(&id).unwrap() -= 1;
                    s.acked.push(id);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state((seen.clone(), hold_ms));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    seen
}

async fn paid_batch(app: &TestApp, n: usize) -> payrun::batch::BatchId {
    let mut csv = HEADER.to_string();
    for i in 0..n {
        csv.push_str(&new_payee_row(
            &format!("p{i:03}"),
            "10.00",
            &format!("555{i:04}"),
        ));
    }
    let batch = app.batch(&csv).await;
    app.step_until_idle(batch).await;
    batch
}

on_both_backends!(
    a_receiver_down_for_the_first_part_of_a_batch_still_gets_every_event,
    two_workers_delivering_at_once_never_send_one_event_at_the_same_time,
    each_items_events_carry_versions_in_order_and_the_payout_link_of_the_report,
);

async fn a_receiver_down_for_the_first_part_of_a_batch_still_gets_every_event(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    // The endpoint's port is known but nothing listens on it yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = outbound(&format!("http://{addr}/hook"));
    out.register(&app.store).await.unwrap();
    let batch = paid_batch(&app, 5).await;
    let events = app.store.outbox_events(Some(batch)).await.unwrap();
    assert!(events.len() >= 7, "created, approved, 5 onboarding links");
    // Two tries of each while it is down: refused connections, nothing lost.
    for _ in 0..2 {
        out.turn(&app.store, "w1").await.unwrap();
    }
    let listed = app
        .store
        .events_with_deliveries(Some(&batch.to_string()), false, 1000)
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .all(|e| e.deliveries[0].status == "pending" && e.deliveries[0].attempts == 2)
    );
    let seen = slow_receiver(tokio::net::TcpListener::bind(addr).await.unwrap(), 0).await;
    for _ in 0..5 {
        out.turn(&app.store, "w1").await.unwrap();
    }
    let mut acked = seen.lock().unwrap().acked.clone();
    acked.sort();
    let mut want: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    want.sort();
    assert_eq!(acked, want, "every event once, once the endpoint is up");
}

async fn two_workers_delivering_at_once_never_send_one_event_at_the_same_time(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = slow_receiver(listener, 30).await;
    let (w1, w2) = (outbound(&url), outbound(&url));
    w1.register(&app.store).await.unwrap();
    let batch = paid_batch(&app, 10).await;
    let events = app.store.outbox_events(Some(batch)).await.unwrap();
    for _ in 0..10 {
        let (a, b) = tokio::join!(w1.turn(&app.store, "w1"), w2.turn(&app.store, "w2"));
        a.unwrap();
        b.unwrap();
        if seen.lock().unwrap().acked.len() >= events.len() {
            break;
        }
    }
    let s = seen.lock().unwrap();
    assert!(
        s.overlapped.is_empty(),
        "delivered twice at once: {:?}",
        s.overlapped
    );
    let mut acked = s.acked.clone();
    acked.sort();
    let mut want: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    want.sort();
    assert_eq!(acked, want, "each event delivered once");
}

async fn each_items_events_carry_versions_in_order_and_the_payout_link_of_the_report(b: Backend) {
    use payrun::events::{Envelope, EventType};
    let app = spawn_app(b, quiet_sim()).await;
    // Demo-sized: 50 sellers, half known, half onboarded first; one never claims its payout.
    let mut csv = HEADER.to_string();
    for i in 0..50 {
        let payee = format!("s{i:03}");
        if i % 2 == 0 {
            app.known_payee(&payee, &format!("556{i:04}")).await;
            csv.push_str(&known_payee_row(&payee, "12.00"));
        } else {
            csv.push_str(&new_payee_row(&payee, "12.00", &format!("557{i:04}")));
        }
    }
    let batch = app.batch(&csv).await;
    app.step_until_idle(batch).await;
    for i in app.items(batch).await {
        if let Some(f) = i.onboarding_flow_id {
            app.sim().complete_flow(f);
        }
    }
    app.step_until_idle(batch).await;
    for i in app.items(batch).await {
        if let (Some(f), false) = (i.payout_flow_id, i.payee_id == "s017") {
            app.sim().complete_flow(f);
        }
    }
    app.step_until_idle(batch).await;

    let mut report = Vec::new();
    payrun::app::write_report(&app.store, batch, &mut report)
        .await
        .unwrap();
    let report = String::from_utf8(report).unwrap();
    let events = app.store.outbox_events(Some(batch)).await.unwrap();
    for item in app.items(batch).await {
        let mine: Vec<(EventType, i64, Envelope)> = events
            .iter()
            .filter(|e| e.item_id == Some(item.id))
            .map(|e| (e.kind, e.version, serde_json::from_str(&e.body).unwrap()))
            .collect();
        let versions: Vec<i64> = mine.iter().map(|m| m.1).collect();
        assert_eq!(
            versions,
            (1..=mine.len() as i64).collect::<Vec<_>>(),
            "{}: versions from 1, no gap",
            item.payee_id
        );
        let kinds: Vec<EventType> = mine.iter().map(|m| m.0).collect();
        let mut want = Vec::new();
        if item.onboarding_flow_id.is_some() {
            want.push(EventType::ItemOnboardingLink);
        }
        want.push(EventType::ItemPayoutLink);
        if item.payee_id != "s017" {
            want.push(EventType::ItemCompleted);
        }
        assert_eq!(kinds, want, "{}", item.payee_id);
        let link = mine
            .iter()
            .find(|m| m.0 == EventType::ItemPayoutLink)
            .and_then(|m| m.2.data["link"].as_str().map(str::to_owned))
            .unwrap();
        assert_eq!(Some(link.as_str()), item.payout_link.as_deref());
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("{},", item.payee_id)))
            .unwrap();
        assert!(
            row.contains(&link),
            "report row {row} has the event's link {link}"
        );
    }
    let batch_kinds: Vec<EventType> = events
        .iter()
        .filter(|e| e.item_id.is_none())
        .map(|e| e.kind)
        .collect();
    // Settled whenever every item waits on its payee or is done (here also while the new
    // sellers were still onboarding); never completed, as s017 has not claimed its payout.
    assert_eq!(
        batch_kinds[..2],
        [EventType::BatchCreated, EventType::BatchApproved]
    );
    assert_eq!(batch_kinds.last(), Some(&EventType::BatchSettled));
    assert!(!batch_kinds.contains(&EventType::BatchCompleted));
}

/// A real `payrun worker` delivering to `url`, with many quick tries (the endpoint may be down
/// for a while) and `[0, 1, 1, …]` s between them.
fn worker_process(
    app: &TestApp,
    sim: &payrun::dots::sim::SimConfig,
    url: &str,
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .arg("worker")
        .current_dir(app.dir.path())
        .env("PAYRUN_DATABASE_URL", &app.db_url)
        .env("DOTS_BASE_URL", &app.sim.base_url)
        .env("DOTS_CLIENT_ID", &sim.client_id)
        .env("DOTS_API_KEY", sim.api_key.expose())
        .env("PAYRUN_EVENTS_URL", url)
        .env("PAYRUN_EVENTS_SECRET", SECRET)
        .env(
            "PAYRUN_EVENTS_RETRY_SCHEDULE_SECS",
            format!("[0{}]", ",1".repeat(100)),
        )
        .env("PAYRUN_EVENTS_POLL_MS", "100")
        // A killed worker's claimed deliveries come back when their lease lapses.
        .env("PAYRUN_EVENTS_TIMEOUT_SECS", "2")
        .env("PAYRUN_EVENTS_LEASE_SECS", "4")
        .env("PAYRUN_WORKER_FEED_MS", "50")
        .env("PAYRUN_WORKER_QUEUE_POLL_MS", "20")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("payrun worker starts")
}

on_both_backends!(a_worker_killed_after_its_state_changes_loses_no_event);

async fn a_worker_killed_after_its_state_changes_loses_no_event(b: Backend) {
    use std::time::{Duration, Instant};
    let sim = quiet_sim();
    let app = spawn_app(b, sim.clone()).await;
    let mut csv = HEADER.to_string();
    for i in 0..10 {
        let payee = format!("k{i:02}");
        app.known_payee(&payee, &format!("558{i:04}")).await;
        csv.push_str(&known_payee_row(&payee, "7.00"));
    }
    let batch = app.batch(&csv).await;
    // The endpoint is down while the first worker pays the batch.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/hook");
    let mut first = worker_process(&app, &sim, &url);
    let started = Instant::now();
    while !app
        .items(batch)
        .await
        .iter()
        .all(|i| i.state.as_str() == "awaiting_payout")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the batch was not paid"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGKILL: no shutdown, nothing flushed; the events are only in the database.
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let events = app.store.outbox_events(Some(batch)).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == payrun::events::EventType::ItemPayoutLink)
            .count(),
        10
    );
    let seen = slow_receiver(tokio::net::TcpListener::bind(addr).await.unwrap(), 0).await;
    let _second = worker_process(&app, &sim, &url);
    let mut want: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    want.sort();
    let started = Instant::now();
    loop {
        let mut acked = seen.lock().unwrap().acked.clone();
        acked.sort();
        acked.dedup();
        if want.iter().all(|w| acked.contains(w)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the restarted worker did not deliver every event: {} of {}",
            acked.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both_backends!(the_dashboard_shows_each_endpoints_backlog_and_failures);

async fn the_dashboard_shows_each_endpoints_backlog_and_failures(b: Backend) {
    const TOKEN: &str = "dash-test-token-0123456789-abcdefghij";
    let app = spawn_app(b, quiet_sim()).await;
    // Nothing listens on the endpoint: its four tries fail.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = outbound(&format!("http://{addr}/hook"));
    out.register(&app.store).await.unwrap();
    let first = paid_batch(&app, 1).await;
    for _ in 0..4 {
        out.turn(&app.store, "w1").await.unwrap();
    }
    let failed = app.store.outbox_events(Some(first)).await.unwrap().len();
    // A second batch's events are fanned out and tried once: still pending.
    let second = paid_batch(&app, 2).await;
    out.turn(&app.store, "w1").await.unwrap();
    let pending = app.store.outbox_events(Some(second)).await.unwrap().len();
    let base = crate::fixture::serve_dashboard(&app, TOKEN).await;
    let page = reqwest::Client::new()
        .get(format!("{base}/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let table = &page[page
        .find("id=\"event-endpoints\"")
        .expect("the endpoints table")..];
    let row = &table[table
        .find("data-endpoint=\"default\"")
        .expect("the default endpoint")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains(&format!(">{pending}</td>")),
        "{pending} pending: {row}"
    );
    assert!(
        row.contains(&format!(">{failed}</strong>")),
        "{failed} failed: {row}"
    );
}
