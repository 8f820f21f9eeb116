//! `payrun run FILE` stopped by SIGTERM while transfers are in flight (the real binary, an
//! in-process simulator with latency): it drains like `payrun worker` — jobs in flight finish,
//! no item is left with an open call or a held lease or claim — exits 1 (interrupted, not
//! settled) within a bound, and a worker started afterwards pays every payee exactly once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::app::*;
use payrun::dots::sim::SimConfig;
use payrun::store::now_ms;

on_both_backends!(a_run_stopped_by_sigterm_finishes_its_calls_and_leaves_nothing_open);

const PAYEES: usize = 24;

async fn a_run_stopped_by_sigterm_finishes_its_calls_and_leaves_nothing_open(b: Backend) {
    let sim = SimConfig {
        latency_ms: 700,
        ..quiet_sim()
    };
    let app = spawn_app(b, sim.clone()).await;
    let mut csv = HEADER.to_string();
    for i in 0..PAYEES {
        let payee = format!("p{i:02}");
        app.known_payee(&payee, &format!("55520{i:05}")).await;
        csv.push_str(&known_payee_row(&payee, &format!("{}.25", 5 + i)));
    }
    let file = app.write_csv("run.csv", &csv);
    let log = app.dir.path().join("run.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .arg("run")
        .arg(&file)
        .env("PAYRUN_DATABASE_URL", &app.db_url)
        .env("DOTS_BASE_URL", &app.sim.base_url)
        .env("DOTS_CLIENT_ID", &sim.client_id)
        .env("DOTS_API_KEY", sim.api_key.expose())
        .env("PAYRUN_CONCURRENCY", "4")
        .env("RUST_LOG", "payrun=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("payrun run starts");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // Wait until transfers are in flight (intent committed, call open).
    let started = Instant::now();
    let batch = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no transfer went out: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(batch) = app.store.list_batches(1).await.unwrap().pop() else {
            continue;
        };
        let batch = batch.id.parse().unwrap();
        if app.items(batch).await.iter().any(|i| i.transfer_call_open) {
            break batch;
        }
    };

    let pid = child.id().expect("running") as i32;
    // SAFETY: kill(2) on the child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopped = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap_or_else(|_| panic!("payrun run did not exit within 30 s: {}", logs()))
        .unwrap();
    let took = stopped.elapsed();
    assert!(
        took > Duration::from_millis(300),
        "it waited for its calls in flight ({took:?})"
    );
    let items = app.items(batch).await;
    let settled = items.iter().all(|i| i.state.is_settled());
    assert_eq!(
        status.code(),
        Some(if settled { 0 } else { 1 }),
        "{}",
        logs()
    );
    if !settled {
        assert!(logs().contains("interrupted"), "{}", logs());
    }

    // Nothing was left open: no call without its outcome, no lease held by the dead process.
    let now = now_ms();
    for i in &items {
        assert!(
            !i.transfer_call_open,
            "{} transfer call left open",
            i.payee_id
        );
        assert!(!i.payout_call_open, "{} payout call left open", i.payee_id);
        assert!(
            i.lease_owner.is_none() && i.lease_until < now,
            "{} lease still held ({:?} until {})",
            i.payee_id,
            i.lease_owner,
            i.lease_until
        );
        assert_ne!(
            i.state,
            payrun::item::ItemState::Transferring,
            "{} left transferring",
            i.payee_id
        );
    }

    // A worker started now finishes the batch well before any claim (5 min) could lapse.
    let watch = app.store.clone();
    let until = async move {
        let _ = payrun::app::wait_settled(&watch, batch, Duration::from_millis(100), |_| {}).await;
    };
    tokio::time::timeout(
        Duration::from_secs(90),
        payrun::app::work_until(app.engine.clone(), until),
    )
    .await
    .expect("the next worker settles the batch without waiting for a claim to lapse")
    .unwrap();
    let items = app.items(batch).await;
    assert_eq!(items.len(), PAYEES);
    for i in &items {
        assert!(
            matches!(i.state.as_str(), "awaiting_payout" | "completed"),
            "{}: {}",
            i.payee_id,
            i.state
        );
    }
    app.assert_paid_exactly_once(batch).await;
    assert_eq!(app.ledger().transfers.len(), PAYEES, "each payee paid once");
}
