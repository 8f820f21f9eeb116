//! The App wallet (issue 12): a batch the wallet cannot cover is held, not failed — before its
//! first transfer when `DOTS_APP_ID` is set (policies "hold" and "fit"), or on Dots'
//! `transaction-insufficient-funds` answer without one — and resumes by itself once
//! `POST /_sim/fund` fills the wallet. Every test ends with nothing failed and every payee paid
//! exactly once in the simulator's ledger.

use std::time::Duration;

use crate::common::app::*;
use payrun::batch::{BatchId, HoldReason};
use payrun::config::FundingPolicy;
use payrun::dots::sim::SimConfig;
use payrun::item::ItemState;
use payrun::jobs::Engine;
use payrun::jobs::funds::FundingConfig;

/// A simulator whose App wallet holds `cents`; payees finish their flow after a second.
fn wallet(cents: i64) -> SimConfig {
    SimConfig {
        app_wallet_cents: cents,
        complete_after_secs: 1.0,
        ..SimConfig::default()
    }
}

/// Funding as `DOTS_APP_ID` (or its absence) and `[funding]` would set it, probing every second.
fn funding(app: &TestApp, with_app_id: bool, policy: FundingPolicy) -> FundingConfig {
    FundingConfig {
        app_id: with_app_id.then(|| app.sim().config().app_id),
        policy,
        probe_base: Duration::from_secs(1),
        probe_max: Duration::from_secs(1),
        ..FundingConfig::default()
    }
}

/// A batch of `n` known payees (`{prefix}-NN`) paid `amount` each.
async fn known_batch(app: &TestApp, prefix: &str, n: usize, amount: &str, phone: u32) -> BatchId {
    let mut csv = String::from("payee_id,amount\n");
    for i in 0..n {
        let payee = format!("{prefix}-{i:02}");
        app.known_payee(&payee, &format!("{}", phone as usize + i))
            .await;
        csv.push_str(&format!("{payee},{amount}\n"));
    }
    let path = app.write_csv(&format!("{prefix}.csv"), &csv);
    let mut q = app.queue.clone();
    match payrun::app::submit_file(&app.store, &mut q, &path, &Default::default())
        .await
        .expect("submit")
    {
        payrun::app::Submitted::New { batch, .. } => batch,
        other => panic!("expected a new batch, got {other:?}"),
    }
}

/// Runs each workable item of `batch` once, in file order (a worker's first pass).
async fn one_pass(engine: &Engine, app: &TestApp, batch: BatchId) {
    for id in app.store.batch_workable_items(batch).await.unwrap() {
        engine.process_item(id).await.expect("process item");
    }
}

fn paid_in_ledger(app: &TestApp) -> usize {
    app.ledger().transfers.len()
}

/// `POST /_sim/fund`, over HTTP like a script would.
async fn fund(app: &TestApp, cents: i64) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/_sim/fund", app.sim.addr))
        .json(&serde_json::json!({ "cents": cents }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
}

/// Nothing failed, no attempt was charged, and the batch is held for funds as expected.
async fn assert_held(app: &TestApp, batch: BatchId, needed: i64, from_line: Option<i64>) {
    let b = app.store.batch(batch).await.unwrap().unwrap();
    let hold = b
        .hold
        .unwrap_or_else(|| panic!("batch {batch} is not held"));
    assert_eq!(hold.reason, HoldReason::InsufficientFunds);
    assert_eq!(hold.funds_needed_cents, Some(needed), "{}", hold.detail);
    assert_eq!(hold.from_line, from_line, "{}", hold.detail);
    for i in app.items(batch).await {
        assert_ne!(
            i.state,
            ItemState::Failed,
            "{}: {:?}",
            i.payee_id,
            i.last_error
        );
        assert_eq!(i.attempts, 0, "{} was charged an attempt", i.payee_id);
    }
}

/// Runs a real worker (feeder, queue, poller, funds probe) until every item of `batches` is
/// completed, then checks the ledger: each payee paid exactly once, nothing failed or held.
async fn worker_completes(app: &TestApp, funding: FundingConfig, batches: &[BatchId]) {
    let mut settings = app.settings.worker.clone();
    settings.poll_cron = "* * * * * *".into();
    settings.feed_ms = 20;
    let engine = Engine::new(
        app.store.clone(),
        app.engine.dots.clone(),
        settings,
        "funding-worker",
    )
    .with_funding(funding);
    let store = app.store.clone();
    let ids = batches.to_vec();
    let done = async move {
        loop {
            let mut all = true;
            for b in &ids {
                all &= store
                    .batch_counts(*b)
                    .await
                    .unwrap()
                    .iter()
                    .all(|c| c.state == ItemState::Completed);
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(
        Duration::from_secs(90),
        payrun::app::work_until(engine, done),
    )
    .await
    .expect("the held batches resume by themselves and complete")
    .unwrap();
    for b in batches {
        app.assert_paid_exactly_once(*b).await;
        let rec = app.store.batch(*b).await.unwrap().unwrap();
        assert!(rec.hold.is_none(), "{b} still held: {:?}", rec.hold);
        for i in app.items(*b).await {
            assert!(i.transfer_id.is_some(), "{} unpaid", i.payee_id);
        }
    }
}

/// DOTS_APP_ID set, policy "hold": $500 in the wallet, 20 × $100 to pay. The pre-flight holds
/// the whole batch before any transfer, needing $1,500 more; funding it resumes it.
async fn with_an_app_id_a_short_wallet_holds_the_whole_batch_before_its_first_transfer(b: Backend) {
    let mut app = spawn_app(b, wallet(50_000)).await;
    let cfg = funding(&app, true, FundingPolicy::Hold);
    app.engine = app.engine.clone().with_funding(cfg.clone());
    let batch = known_batch(&app, "h", 20, "100.00", 4155550100).await;
    one_pass(&app.engine, &app, batch).await;
    assert_eq!(
        paid_in_ledger(&app),
        0,
        "nothing is paid before the wallet covers it"
    );
    assert_held(&app, batch, 150_000, None).await;
    let detail = app
        .store
        .batch(batch)
        .await
        .unwrap()
        .unwrap()
        .hold
        .unwrap()
        .detail;
    assert!(
        detail.contains("$500.00") && detail.contains("$2000.00"),
        "{detail}"
    );
    // Still short after another pass: nothing moves, nothing is charged.
    one_pass(&app.engine, &app, batch).await;
    assert_eq!(paid_in_ledger(&app), 0);
    fund(&app, 150_000).await;
    worker_completes(&app, cfg, &[batch]).await;
    assert_eq!(paid_in_ledger(&app), 20);
    assert_eq!(app.ledger().app_wallet, 0);
}

/// DOTS_APP_ID set, policy "fit": the first five (file order) are paid, the rest held from the
/// sixth row's line, needing $1,500; funding it lets the rest go.
async fn with_an_app_id_and_policy_fit_what_fits_is_paid_in_file_order_and_the_rest_held(
    b: Backend,
) {
    let mut app = spawn_app(b, wallet(50_000)).await;
    let cfg = funding(&app, true, FundingPolicy::Fit);
    app.engine = app.engine.clone().with_funding(cfg.clone());
    let batch = known_batch(&app, "f", 20, "100.00", 4155550200).await;
    one_pass(&app.engine, &app, batch).await;
    // Header on line 1: the sixth row is line 7.
    assert_held(&app, batch, 150_000, Some(7)).await;
    let items = app.items(batch).await;
    let paid: Vec<i64> = items
        .iter()
        .filter(|i| i.transfer_id.is_some())
        .map(|i| i.line)
        .collect();
    assert_eq!(paid, vec![2, 3, 4, 5, 6], "the first five rows are paid");
    assert_eq!(paid_in_ledger(&app), 5);
    // A probe with the wallet still empty keeps the hold where it is.
    app.engine.probe_funds_once().await.unwrap();
    assert_held(&app, batch, 150_000, Some(7)).await;
    fund(&app, 150_000).await;
    worker_completes(&app, cfg, &[batch]).await;
    assert_eq!(paid_in_ledger(&app), 20);
}

/// No app id: the measurement (5 paid, 15 failed) becomes 5 paid, 15 waiting. Dots'
/// refusal holds this batch and every other with something left to pay (the wallet is the
/// App's); without the balance, funds_needed_cents is what each batch still has to pay.
async fn without_an_app_id_the_insufficient_funds_answer_holds_every_batch_still_to_pay(
    b: Backend,
) {
    let mut app = spawn_app(b, wallet(50_000)).await;
    let cfg = funding(&app, false, FundingPolicy::Hold);
    app.engine = app.engine.clone().with_funding(cfg.clone());
    let batch = known_batch(&app, "n", 20, "100.00", 4155550300).await;
    let other = known_batch(&app, "o", 2, "50.00", 4155550400).await;
    one_pass(&app.engine, &app, batch).await;
    assert_eq!(paid_in_ledger(&app), 5);
    assert_held(&app, batch, 150_000, None).await;
    assert_held(&app, other, 10_000, None).await;
    let refused = app
        .items(batch)
        .await
        .into_iter()
        .find(|i| i.line == 7)
        .unwrap();
    assert_eq!(refused.state, ItemState::Transferring);
    assert!(!refused.transfer_call_open, "the refused call is closed");
    one_pass(&app.engine, &app, other).await;
    assert_eq!(paid_in_ledger(&app), 5, "the other batch is held too");
    fund(&app, 160_000).await;
    worker_completes(&app, cfg, &[batch, other]).await;
    assert_eq!(paid_in_ledger(&app), 22);
    assert_eq!(app.ledger().app_wallet, 0);
}

/// Two batches, one $500 wallet: the first is cleared for $300; the second's pre-flight
/// counts that as committed, so it is held needing $100 while the first is paid in full.
async fn two_batches_sharing_a_short_wallet_hold_the_one_it_cannot_cover(b: Backend) {
    let mut app = spawn_app(b, wallet(50_000)).await;
    let cfg = funding(&app, true, FundingPolicy::Hold);
    app.engine = app.engine.clone().with_funding(cfg.clone());
    let first = known_batch(&app, "a", 3, "100.00", 4155550500).await;
    let second = known_batch(&app, "b", 3, "100.00", 4155550600).await;
    // One item of each: the first batch's pre-flight clears it, then the second's sees $400
    // in the wallet of which $200 is the first batch's, against $300 to pay.
    let a0 = app.store.batch_workable_items(first).await.unwrap()[0];
    app.engine.process_item(a0).await.unwrap();
    let b0 = app.store.batch_workable_items(second).await.unwrap()[0];
    app.engine.process_item(b0).await.unwrap();
    assert_held(&app, second, 10_000, None).await;
    let detail = app
        .store
        .batch(second)
        .await
        .unwrap()
        .unwrap()
        .hold
        .unwrap()
        .detail;
    assert!(detail.contains("$200.00 of it cleared"), "{detail}");
    one_pass(&app.engine, &app, first).await;
    one_pass(&app.engine, &app, second).await;
    assert_eq!(paid_in_ledger(&app), 3, "only the first batch is paid");
    assert!(
        app.store
            .batch(first)
            .await
            .unwrap()
            .unwrap()
            .hold
            .is_none()
    );
    fund(&app, 10_000).await;
    worker_completes(&app, cfg, &[first, second]).await;
    assert_eq!(paid_in_ledger(&app), 6);
}

crate::on_both_backends!(
    with_an_app_id_a_short_wallet_holds_the_whole_batch_before_its_first_transfer,
    with_an_app_id_and_policy_fit_what_fits_is_paid_in_file_order_and_the_rest_held,
    without_an_app_id_the_insufficient_funds_answer_holds_every_batch_still_to_pay,
    two_batches_sharing_a_short_wallet_hold_the_one_it_cannot_cover,
);

/// `payrun ARGS` against this test's database and simulator; `app_id` sets DOTS_APP_ID.
async fn payrun(app: &TestApp, app_id: bool, args: &[&str]) -> (String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    c.args(args)
        .current_dir(app.dir.path())
        .env("RUST_LOG", "payrun=warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("PAYRUN_") || k.starts_with("DOTS_") {
            c.env_remove(k);
        }
    }
    let cfg = app.sim().config();
    c.env("PAYRUN_DATABASE_URL", &app.db_url)
        .env("DOTS_BASE_URL", &app.sim.base_url)
        .env("DOTS_CLIENT_ID", &cfg.client_id)
        .env("DOTS_API_KEY", cfg.api_key.expose());
    if app_id {
        c.env("DOTS_APP_ID", cfg.app_id.to_string());
    }
    let out = tokio::task::spawn_blocking(move || c.output().expect("payrun runs"))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// With DOTS_APP_ID set, `submit --dry-run` and `status BATCH` (text and JSON) show the batch
/// beside the App wallet and whether it covers it; without it they show no wallet.
async fn status_and_dry_run_show_the_batch_beside_the_app_wallet(b: Backend) {
    let mut app = spawn_app(b, wallet(50_000)).await;
    app.engine = app
        .engine
        .clone()
        .with_funding(funding(&app, true, FundingPolicy::Hold));
    let batch = known_batch(&app, "s", 20, "100.00", 4155550700).await;
    one_pass(&app.engine, &app, batch).await;
    let id = batch.to_string();
    let (json, _) = payrun(&app, true, &["status", &id, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let w = &v[0]["wallet"];
    assert_eq!(w["balance_cents"], 50_000, "{v:#}");
    assert_eq!(w["batch_cents"], 200_000);
    assert_eq!(w["covers"], false);
    let (text, _) = payrun(&app, true, &["status", &id]).await;
    assert!(
        text.contains("App wallet $500.00 against $2000.00 to pay: short by $1500.00"),
        "{text}"
    );
    // Without an app id, no wallet is read (the hold, written earlier, still shows).
    let (plain, _) = payrun(&app, false, &["status", &id, "--json"]).await;
    let plain: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert!(
        plain[0].get("wallet").is_none_or(|w| w.is_null()),
        "{plain:#}"
    );
    assert_eq!(
        plain[0]["hold"]["reason"], "insufficient_funds",
        "{plain:#}"
    );
    let file = app.write_csv("small.csv", "payee_id,amount\ns-00,3.00\ns-01,2.00\n");
    let file = file.to_str().unwrap();
    let (dry, _) = payrun(&app, true, &["submit", "--dry-run", file]).await;
    assert!(
        dry.contains("App wallet $500.00 against $5.00 to pay: covers it"),
        "{dry}"
    );
    let (dry, _) = payrun(&app, false, &["submit", "--dry-run", file]).await;
    assert!(!dry.contains("App wallet"), "{dry}");
}

crate::on_both_backends!(status_and_dry_run_show_the_batch_beside_the_app_wallet);
