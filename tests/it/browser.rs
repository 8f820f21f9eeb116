//! The dashboard end to end in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/browser/dashboard.mjs`, run with `node`) against the dashboard router, with a real
//! worker running in this process so that clicking Rerun has an effect.
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/browser/node_modules/playwright-core`; `.ci/run`
//! installs them. Without them this test fails (it never passes silently). Set
//! `PAYRUN_UPDATE_SCREENSHOT=1` to write the screenshot to `docs/dashboard.png`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::app::*;
use crate::fixture::{batch_with_a_failed_item, serve_dashboard};
use payrun::item::ItemState;

const TOKEN: &str = "browser-test-token-9876543210-abcdefgh";
const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails with what is missing and how to get it, instead of skipping.
fn require_browser_tools() {
    let fix = "run `.ci/run`, which installs them: `apt-get install -y chromium` and \
               `npm ci --no-audit --no-fund --prefix tests/browser`";
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "the browser test needs `node` on PATH; {fix}"
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser test needs Debian's Chromium at {CHROMIUM}; {fix}"
    );
    assert!(
        browser_dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "the browser test needs playwright-core in tests/browser/node_modules; {fix}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_sees_progress_and_reruns_a_failed_item_in_chromium() {
    require_browser_tools();
    let app = spawn_app(Backend::Sqlite, quiet_sim()).await;
    let (batch, failed) = batch_with_a_failed_item(&app, &["alice", "bob", "carol"]).await;
    // One payee finished their payout flow: the poller marks the item completed.
    let alice = app.item(batch, "alice").await.payout_flow_id.unwrap();
    app.sim().complete_flow(alice).expect("alice's flow exists");
    payrun::jobs::poll::poll_due(&app.engine, i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(app.item(batch, "alice").await.state, ItemState::Completed);
    let base = serve_dashboard(&app, TOKEN).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(payrun::app::work_until(app.engine.clone(), async move {
        let _ = stopped.await;
    }));

    let screenshot = if std::env::var("PAYRUN_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png")
    } else {
        app.dir.path().join("dashboard.png")
    };
    let run = tokio::process::Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .current_dir(browser_dir())
        .env("DASHBOARD_URL", &base)
        .env("DASHBOARD_TOKEN", TOKEN)
        .env("BATCH_ID", batch.to_string())
        .env("FAILED_PAYEE", &failed.payee_id)
        .env("EXPECT_PROGRESS", "4 / 4 settled")
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser script finishes within 120 s")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dashboard.mjs failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    for line in [
        "no token: 401",
        "login: cookie set, HttpOnly, SameSite=Strict",
        "progress: 4 / 4 settled; failed 1",
        "clicked Rerun: \"rerun 1 item (broke)\"",
        "broke: awaiting_payout after",
        "DASHBOARD E2E OK",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker stops within 30 s")
        .expect("worker task")
        .expect("worker ran cleanly");
    assert_eq!(
        app.item(batch, "broke").await.state,
        ItemState::AwaitingPayout
    );
    app.assert_paid_exactly_once(batch).await;
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
}
