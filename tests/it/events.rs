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
