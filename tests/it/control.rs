//! Pause and resume, and the batch gate: a paused batch starts no new Dots call within one feed
//! interval (with a real worker: feeder, apalis, item jobs) and stays still; resume completes
//! it with every payee paid once; `payrun pause|resume` through the real binary is idempotent
//! and `status --json` shows "paused", then "held" with the hold object for a funds hold,
//! whose items are not worked until the hold is lifted; the feeder claims nothing a block
//! covers; the dashboard's buttons run the same code.

use std::time::{Duration, Instant};

use crate::common::app::*;
use crate::fixture::serve_dashboard;
use payrun::app::control::Target;
use payrun::batch::{BatchId, Hold, HoldReason};
use payrun::dots::sim::SimConfig;
use payrun::item::ItemState;
use payrun::store::{PauseOutcome, ResumeOutcome};
use serde_json::Value;

on_both_backends!(
    pausing_mid_batch_stops_new_transfers_within_one_feed_interval_and_resume_completes_it,
    pause_and_resume_through_the_binary_are_idempotent_and_show_in_status,
    a_funds_hold_shows_in_status_and_keeps_its_items_from_dots_until_lifted,
    the_feeder_claims_nothing_of_a_paused_batch_and_only_lines_before_a_funds_hold,
    the_dashboard_pause_and_resume_buttons_run_the_same_code,
);

/// `payrun status BATCH --json`, the batch's object.
fn status_json(app: &TestApp, batch: BatchId) -> Value {
    let (code, out, err) = payrun(app, &["status", &batch.to_string(), "--json"]);
    assert_eq!(code, 0, "status: {err}");
    let v: Value = serde_json::from_str(&out).expect("status --json is JSON");
    v[0].clone()
}

/// A batch of `n` payees payrun already knows (each goes straight to its transfer).
async fn known_batch(app: &TestApp, prefix: &str, n: usize) -> BatchId {
    known_batch_with(app, prefix, n, false).await
}

/// `known_batch`; `no_enqueue`: submit hands nothing to the queue (the feeder will).
async fn known_batch_with(app: &TestApp, prefix: &str, n: usize, no_enqueue: bool) -> BatchId {
    let mut csv = HEADER.to_string();
    for i in 0..n {
        let payee = format!("{prefix}-{i}");
        app.known_payee(&payee, &format!("55{:05}", i)).await;
        csv.push_str(&known_payee_row(&payee, "2.00"));
    }
    let opts = payrun::app::SubmitOptions {
        no_enqueue,
        ..Default::default()
    };
    match app.submit_with(&csv, &opts).await.expect("submit") {
        payrun::app::Submitted::New { batch, .. } => batch,
        other => panic!("expected a new batch, got {other:?}"),
    }
}

fn transfers(app: &TestApp) -> usize {
    app.ledger().transfers.len()
}

/// Waits (bounded) until `done` holds, checking every 20 ms.
async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_in(app: &TestApp, batch: BatchId, state: ItemState) -> bool {
    app.items(batch).await.iter().all(|i| i.state == state)
}

async fn pausing_mid_batch_stops_new_transfers_within_one_feed_interval_and_resume_completes_it(
    b: Backend,
) {
    let latency_ms = 40;
    let app = spawn_app(
        b,
        SimConfig {
            latency_ms,
            ..quiet_sim()
        },
    )
    .await;
    let n = 100;
    let batch = known_batch(&app, "mid", n).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(payrun::jobs::worker::run(
        app.engine.clone(),
        Vec::new(),
        async move {
            let _ = stopped.await;
        },
    ));
    wait_until(
        "some transfers are made",
        Duration::from_secs(60),
        async || transfers(&app) >= 8,
    )
    .await;
    // What `payrun pause BATCH` runs (in-process, so the pause lands mid-batch however slow
    // starting a process is on a loaded machine; the binary's own test is below).
    let out = payrun::app::control::pause(&app.store, Target::Batch(batch))
        .await
        .expect("pause");
    assert_eq!(out.changed, vec![batch.to_string()], "{}", out.message);
    let at_pause = transfers(&app);
    // One feed interval for every job to see the pause, plus the calls already under way (a
    // step's call and the commit of its outcome).
    let feed = Duration::from_millis(app.settings.worker.feed_ms);
    tokio::time::sleep(feed + Duration::from_millis(10 * latency_ms)).await;
    let settled = transfers(&app);
    assert!(
        settled < n,
        "the pause landed mid-batch ({at_pause} at the pause, {settled} after)"
    );
    for _ in 0..8 {
        tokio::time::sleep(feed).await;
        assert_eq!(
            transfers(&app),
            settled,
            "no transfer starts while the batch is paused"
        );
    }
    let items = app.items(batch).await;
    assert!(
        items
            .iter()
            .all(|i| !i.transfer_call_open && !i.payout_call_open),
        "calls in flight at the pause finished and were recorded"
    );
    let paid = items.iter().filter(|i| i.transfer_id.is_some()).count();
    assert_eq!(paid, settled, "every transfer made is recorded");
    assert!(
        items
            .iter()
            .all(|i| i.last_error.is_none() && i.attempts == 0),
        "the pause charged no item an attempt or an error"
    );
    assert_eq!(status_json(&app, batch)["status"], "paused");

    let (code, out, err) = payrun(&app, &["resume", &batch.to_string()]);
    assert_eq!(code, 0, "resume: {out}{err}");
    wait_until(
        "every item is paid and has its payout link",
        Duration::from_secs(120),
        async || all_in(&app, batch, ItemState::AwaitingPayout).await,
    )
    .await;
    let _ = stop.send(());
    worker.await.expect("worker task").expect("worker ran");
    assert_eq!(transfers(&app), n, "every payee paid");
    app.assert_paid_exactly_once(batch).await;
    assert_eq!(status_json(&app, batch)["status"], "approved");
}

async fn pause_and_resume_through_the_binary_are_idempotent_and_show_in_status(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = known_batch(&app, "idem", 3).await;
    let other = known_batch(&app, "other", 2).await;
    let id = batch.to_string();

    let before = status_json(&app, batch);
    assert_eq!(before["status"], "approved");
    assert_eq!(before["paused_at"], Value::Null);
    assert_eq!(before["hold"], Value::Null);

    let (code, first, _) = payrun(&app, &["pause", &id]);
    assert_eq!(code, 0);
    assert_eq!(first.lines().count(), 1, "one line: {first}");
    let paused_at = app.store.batch(batch).await.unwrap().unwrap().paused_at;
    assert!(paused_at.is_some(), "paused");
    let (code, again, _) = payrun(&app, &["pause", &id]);
    assert_eq!(code, 0, "pausing twice is fine");
    assert!(again.contains("already paused"), "{again}");
    assert_eq!(
        app.store.batch(batch).await.unwrap().unwrap().paused_at,
        paused_at,
        "a second pause keeps the first one's time"
    );
    let shown = status_json(&app, batch);
    assert_eq!(shown["status"], "paused");
    assert_eq!(shown["paused_at"], paused_at.unwrap());
    let (_, text, _) = payrun(&app, &["status", &id]);
    assert!(
        text.contains("[paused]") && text.contains("paused since"),
        "{text}"
    );

    // Paused: stepping its items by hand starts no Dots call and charges them nothing.
    for i in app.items(batch).await {
        app.engine.process_item(i.id).await.expect("job");
    }
    assert_eq!(transfers(&app), 0, "no transfer for a paused batch");
    assert!(
        all_in(&app, batch, ItemState::Pending).await,
        "its items wait, untouched"
    );

    for round in 0..2 {
        let (code, out, _) = payrun(&app, &["resume", &id]);
        assert_eq!(code, 0, "resume #{round}");
        if round == 1 {
            assert!(out.contains("was not paused"), "{out}");
        }
    }
    assert_eq!(status_json(&app, batch)["status"], "approved");
    assert_eq!(status_json(&app, batch)["paused_at"], Value::Null);

    // --all: every batch with work left, then every paused one.
    let (code, out, _) = payrun(&app, &["pause", "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("paused 2 batches"), "{out}");
    for bt in [batch, other] {
        assert_eq!(status_json(&app, bt)["status"], "paused");
    }
    let (code, out, _) = payrun(&app, &["pause", "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("paused 0 batches"), "{out}");
    for _ in 0..2 {
        let (code, _, _) = payrun(&app, &["resume", "--all"]);
        assert_eq!(code, 0);
    }
    for bt in [batch, other] {
        assert_eq!(status_json(&app, bt)["status"], "approved");
    }

    // Bad input: exit 2, naming the problem; neither or both of BATCH and --all is usage.
    let unknown = BatchId::new_random().to_string();
    let (code, _, err) = payrun(&app, &["pause", &unknown]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no batch"), "{err}");
    assert_eq!(payrun(&app, &["resume", "not-an-id"]).0, 2);
    assert_eq!(payrun(&app, &["pause"]).0, 2);
    assert_eq!(payrun(&app, &["pause", &id, "--all"]).0, 2);

    app.step_until_idle(batch).await;
    app.step_until_idle(other).await;
    app.assert_paid_exactly_once(batch).await;
    assert!(all_in(&app, batch, ItemState::AwaitingPayout).await);
    // A canceled batch is not paused.
    let canceled = app
        .batch(&format!(
            "{HEADER}{}",
            new_payee_row("quit", "1.00", "5550999")
        ))
        .await;
    let (code, _, _) = payrun(&app, &["cancel", &canceled.to_string()]);
    assert_eq!(code, 0);
    let (code, out, _) = payrun(&app, &["pause", &canceled.to_string()]);
    assert_eq!(code, 0);
    assert!(out.contains("canceled; nothing to pause"), "{out}");
    assert_eq!(
        app.store.pause_batch(canceled, 1).await.unwrap(),
        Some(PauseOutcome::Canceled)
    );
}

async fn a_funds_hold_shows_in_status_and_keeps_its_items_from_dots_until_lifted(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = known_batch(&app, "funds", 3).await;
    let hold = Hold {
        reason: HoldReason::InsufficientFunds,
        detail: "App wallet $1.00, batch needs $6.00".into(),
        since: 1_764_000_000_000,
        funds_needed_cents: Some(500),
        from_line: None,
    };
    assert!(app.store.set_hold(batch, &hold).await.unwrap());
    let v = status_json(&app, batch);
    assert_eq!(v["status"], "held");
    assert_eq!(v["hold"]["reason"], "insufficient_funds");
    assert_eq!(v["hold"]["detail"], "App wallet $1.00, batch needs $6.00");
    assert_eq!(v["hold"]["since"], 1_764_000_000_000_i64);
    assert_eq!(v["funds_needed_cents"], 500);
    assert_eq!(v["hold"]["funds_needed_cents"], 500);
    let (_, text, _) = payrun(&app, &["status", &batch.to_string()]);
    assert!(
        text.contains("[held]") && text.contains("insufficient_funds"),
        "{text}"
    );

    app.engine.refresh_gate().await;
    for _ in 0..3 {
        for i in app.items(batch).await {
            app.store.retry_now(i.id).await.unwrap();
            app.engine.process_item(i.id).await.expect("job");
        }
    }
    assert_eq!(transfers(&app), 0, "a funds hold starts no transfer");
    for i in app.items(batch).await {
        assert_eq!(i.state, ItemState::Pending);
        assert_eq!(
            (i.attempts, i.transfer_attempts),
            (0, 0),
            "no attempt counted"
        );
        assert_eq!(i.last_error, None, "no error recorded");
    }

    // Other reasons are shown but do not block here (the circuits decide those).
    let creds = Hold {
        reason: HoldReason::Credentials,
        detail: "Dots refuses the API key (401)".into(),
        since: 1,
        funds_needed_cents: None,
        from_line: None,
    };
    assert!(app.store.set_hold(batch, &creds).await.unwrap());
    let v = status_json(&app, batch);
    assert_eq!(v["status"], "held");
    assert_eq!(v["hold"]["reason"], "credentials");
    assert!(v.get("funds_needed_cents").is_none(), "{v}");

    assert!(app.store.clear_hold(batch).await.unwrap());
    assert!(
        !app.store.clear_hold(batch).await.unwrap(),
        "twice: a no-op"
    );
    assert_eq!(status_json(&app, batch)["status"], "approved");
    app.engine.refresh_gate().await;
    app.step_until_idle(batch).await;
    assert!(all_in(&app, batch, ItemState::AwaitingPayout).await);
    assert_eq!(transfers(&app), 3);
    app.assert_paid_exactly_once(batch).await;
}

async fn the_feeder_claims_nothing_of_a_paused_batch_and_only_lines_before_a_funds_hold(
    b: Backend,
) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = known_batch_with(&app, "feed", 6, true).await;
    let items = app.items(batch).await;
    let lines: Vec<i64> = items.iter().map(|i| i.line).collect();
    let ttl = 60_000;
    let claim = async |now: i64| {
        let mut ids = app
            .store
            .claim_for_queue(now, ttl, 100)
            .await
            .expect("claim");
        ids.sort();
        ids
    };

    // Paused before anything was fed: nothing is claimed, and the cursor stays.
    let now = payrun::store::now_ms();
    assert!(matches!(
        app.store.pause_batch(batch, now).await.unwrap(),
        Some(PauseOutcome::Paused(_))
    ));
    assert!(claim(now).await.is_empty(), "a paused batch is not fed");

    // A funds hold from the 4th line: only the first three lines are fed.
    let from = lines[3];
    let hold = Hold {
        reason: HoldReason::InsufficientFunds,
        detail: "short".into(),
        since: now,
        funds_needed_cents: Some(600),
        from_line: Some(from),
    };
    app.store.set_hold(batch, &hold).await.unwrap();
    assert_eq!(
        app.store.resume_batch(batch, now).await.unwrap(),
        Some(ResumeOutcome::Resumed { made_due: 0 })
    );
    let ids = |r: std::ops::Range<usize>| -> Vec<_> { items[r].iter().map(|i| i.id).collect() };
    assert_eq!(claim(now).await, ids(0..3), "lines before the hold only");
    // Once those claims lapse they are due again, and still fed; nothing past the hold is.
    assert_eq!(claim(now + 2 * ttl).await, ids(0..3));

    // Lifted: the rest is fed along the cursor.
    app.store.clear_hold(batch).await.unwrap();
    assert_eq!(claim(now + 4 * ttl).await, ids(0..6));
    // Held again: items due again at or after its line are not fed, unless already paid
    // (a transferred item only needs its payout flow).
    app.store.set_hold(batch, &hold).await.unwrap();
    raw_exec(
        &app,
        &format!(
            "UPDATE items SET state = 'transferred' WHERE id = '{}'",
            items[4].id
        ),
    )
    .await;
    let mut want = ids(0..3);
    want.push(items[4].id);
    assert_eq!(claim(now + 6 * ttl).await, want);
    // Paused: nothing at all, due or not.
    app.store.pause_batch(batch, now).await.unwrap();
    assert!(
        claim(now + 8 * ttl).await.is_empty(),
        "a paused batch is not fed"
    );
    app.store.resume_batch(batch, now + 8 * ttl).await.unwrap();
    app.store.clear_hold(batch).await.unwrap();
    assert_eq!(claim(now + 10 * ttl).await, ids(0..6));
}

async fn the_dashboard_pause_and_resume_buttons_run_the_same_code(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let batch = known_batch(&app, "dash", 2).await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let get = async |path: &str| {
        http.get(format!("{base}{path}"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let page = get(&format!("/batches/{batch}")).await;
    assert!(
        page.contains(&format!("/batches/{batch}/pause")),
        "a Pause button"
    );
    assert!(get("/").await.contains("/pause-all"), "Pause all");

    let r = http
        .post(format!("{base}/batches/{batch}/pause"))
        .header("authorization", &bearer)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    let paused_at = app.store.batch(batch).await.unwrap().unwrap().paused_at;
    assert!(paused_at.is_some(), "the button paused the batch");
    let page = get(&format!("/batches/{batch}")).await;
    assert!(page.contains("st-paused"), "shown paused");
    assert!(
        page.contains(&format!("/batches/{batch}/resume")),
        "a Resume button"
    );

    // The API, twice: the same no-op answer as the CLI's.
    for round in 0..2 {
        let v: Value = http
            .post(format!("{base}/api/batches/{batch}/pause"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["changed"], serde_json::json!([]), "round {round}: {v}");
    }
    assert_eq!(
        app.store.batch(batch).await.unwrap().unwrap().paused_at,
        paused_at
    );
    // Cookie without CSRF: refused, as for every other button.
    let login = http
        .get(format!("{base}/login?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let r = http
        .post(format!("{base}/resume-all"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(
        app.store
            .batch(batch)
            .await
            .unwrap()
            .unwrap()
            .paused_at
            .is_some(),
        "a refused button changes nothing"
    );
    let r = http
        .post(format!("{base}/resume-all"))
        .header("authorization", &bearer)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/?msg=resumed+1+batch"),
        "{:?}",
        r.headers()["location"]
    );
    assert_eq!(
        app.store.batch(batch).await.unwrap().unwrap().paused_at,
        None
    );
    let v: Value = http
        .post(format!("{base}/api/pause-all"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["changed"], serde_json::json!([batch.to_string()]));
    let v: Value = http
        .get(format!("{base}/api/batches/{batch}"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"]["status"], "paused");
}

const TOKEN: &str = "control-test-token-0123456789-abcdefgh";
