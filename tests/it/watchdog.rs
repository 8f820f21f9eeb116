//! A worker that cannot work says so and exits (the real `payrun worker` binary, an in-process
//! simulator): its SQLite database on a full disk makes it exit non-zero within a bound with an
//! ERROR line naming the cause; restarted once space is freed, it pays every payee exactly once
//! without waiting for a queue claim (5 min) to lapse. With its PostgreSQL items table locked,
//! the stalled part (feeder or queue worker) shows on `/healthz` (503) before the process exits.
//!
//! Why a tmpfs of a few MiB and not SQLite's `max_page_count`: a real full filesystem fails every
//! file that grows — the database, its WAL, apalis' rows — with ENOSPC, as a full disk does,
//! and needs no hook in payrun (the pragma is per connection and would have to be set by payrun
//! itself). It needs root (mount); without it the test fails and says so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::app::*;
use payrun::batch::BatchId;
use payrun::dots::sim::SimConfig;

/// Bound on the exit after the disk fills: the SQLite busy timeout (30 s) a locked database
/// can cost, stall_secs + stall_exit_secs (5 s) and the bounded drain (10 s), with slack.
const EXIT_BOUND: Duration = Duration::from_secs(75);

const PAYEES: usize = 150;

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("the mount command runs");
        assert!(
            out.status.success(),
            "this test needs a small filesystem and could not mount a tmpfs (root is needed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes a file until the filesystem refuses (ENOSPC).
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler file");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
            return;
        }
    }
}

/// A `payrun worker` on `app`'s database, run from `cwd` (no `config/`, no `jobs/` there).
/// Its watchdog: stalled after 3 s, exits `stall_exit_secs` later; `/healthz` on `health`.
fn worker(
    app: &TestApp,
    sim: &SimConfig,
    cwd: &Path,
    log: &Path,
    health: &str,
    stall_exit_secs: u64,
) -> tokio::process::Child {
    let config = cwd.join("watchdog.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\nstall_secs = 3\nstall_exit_secs = {stall_exit_secs}\nheartbeat_secs = 1\n\
             lease_secs = 5\nbackoff_base_ms = 10\nbackoff_max_secs = 1\nqueue_poll_ms = 20\n\
             feed_ms = 50\n"
        ),
    )
    .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .arg("--config")
        .arg(&config)
        .arg("worker")
        .arg("--health-listen")
        .arg(health)
        .current_dir(cwd)
        .env("PAYRUN_DATABASE_URL", &app.db_url)
        .env("DOTS_BASE_URL", &app.sim.base_url)
        .env("DOTS_CLIENT_ID", &sim.client_id)
        .env("DOTS_API_KEY", sim.api_key.expose())
        .env("PAYRUN_CONCURRENCY", "4")
        .env("RUST_LOG", "payrun=info,apalis=warn,apalis_core=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("payrun worker starts")
}

async fn batch_of_known_payees(app: &TestApp) -> BatchId {
    let mut csv = HEADER.to_string();
    for i in 0..PAYEES {
        let payee = format!("p{i:03}");
        app.known_payee(&payee, &format!("5557{i:06}")).await;
        csv.push_str(&known_payee_row(&payee, &format!("{}.10", 1 + i)));
    }
    app.batch(&csv).await
}

async fn settled(app: &TestApp, batch: BatchId) -> bool {
    app.items(batch).await.iter().all(|i| i.state.is_settled())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_a_full_disk_exits_non_zero_and_after_a_restart_pays_everyone_once() {
    let mnt = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(mnt.path(), "24m");
    let sim = SimConfig {
        latency_ms: 60,
        ..quiet_sim()
    };
    let app = spawn_app_in(Backend::Sqlite, sim.clone(), mnt).await;
    let batch = batch_of_known_payees(&app).await;
    let cwd = tempfile::tempdir().unwrap();
    let log = cwd.path().join("worker-1.log");
    let logs = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let mut child = worker(&app, &sim, cwd.path(), &log, "127.0.0.1:0", 2);

    // Mid-batch, the disk fills up.
    let started = Instant::now();
    while app.ledger().transfers.len() < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no transfer went out: {}",
            logs(&log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let filler = app.dir.path().join("filler");
    fill(&filler);
    let full_at = Instant::now();
    let status = tokio::time::timeout(EXIT_BOUND, child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the worker did not exit within {EXIT_BOUND:?} of the disk filling up: {}",
                logs(&log)
            )
        })
        .unwrap();
    let took = full_at.elapsed();
    let text = logs(&log);
    assert_eq!(status.code(), Some(1), "exit status 1: {text}");
    assert!(
        !settled(&app, batch).await,
        "the disk filled before the batch was done (else this test shows nothing)"
    );
    let line = text
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("exiting so that a supervisor restarts it"))
        .unwrap_or_else(|| panic!("an ERROR line says why it exits: {text}"));
    assert!(
        line.contains("database or disk is full"),
        "the ERROR line names the full disk: {line}"
    );
    eprintln!("exited {took:?} after the disk filled: {line}");

    // Space is freed; a restarted worker finishes well before any claim (5 min) could lapse.
    std::fs::remove_file(&filler).unwrap();
    let log2 = cwd.path().join("worker-2.log");
    let mut child = worker(&app, &sim, cwd.path(), &log2, "127.0.0.1:0", 2);
    let restarted = Instant::now();
    while !settled(&app, batch).await {
        assert!(
            restarted.elapsed() < Duration::from_secs(90),
            "the restarted worker did not finish the batch: {}",
            logs(&log2)
        );
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the restarted worker exited ({s}): {}", logs(&log2));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("the restarted worker finished in {:?}", restarted.elapsed());
    let pid = child.id().expect("running") as i32;
    // SAFETY: kill(2) on the child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", logs(&log2));

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_postgres_items_table_stays_locked_answers_503_then_exits_non_zero() {
    use sqlx::Connection;
    let sim = SimConfig {
        latency_ms: 200,
        ..quiet_sim()
    };
    let app = spawn_app(Backend::Postgres, sim.clone()).await;
    let batch = batch_of_known_payees(&app).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let health = format!("127.0.0.1:{port}");
    let cwd = tempfile::tempdir().unwrap();
    let log = cwd.path().join("worker.log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut child = worker(&app, &sim, cwd.path(), &log, &health, 6);
    let started = Instant::now();
    while app.ledger().transfers.len() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no transfer went out: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Mid-batch, someone takes the items table and holds it: every feed waits on it.
    let mut locker = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let locked_at = Instant::now();
    let http = reqwest::Client::new();
    let url = format!("http://{health}/healthz");
    let problems = loop {
        assert!(
            locked_at.elapsed() < Duration::from_secs(30),
            "/healthz never answered 503: {}",
            logs()
        );
        if let Ok(r) = http.get(&url).send().await
            && r.status() == 503
        {
            break r.text().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The feeder, or apalis' worker whose jobs all wait on the table: whichever shows first.
    assert!(problems.contains("\"source\":\"worker."), "{problems}");
    assert!(problems.contains("stalled: no progress"), "{problems}");
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .unwrap_or_else(|_| panic!("the stalled worker did not exit: {}", logs()))
        .unwrap();
    assert_eq!(status.code(), Some(1), "{}", logs());
    assert!(
        logs().contains("stalled: no progress for")
            && logs().contains("exiting so that a supervisor restarts it"),
        "an ERROR line names the stalled part: {}",
        logs()
    );
    // The lock goes; the next worker pays everyone once.
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    let watch = app.store.clone();
    let until = async move {
        let _ = payrun::app::wait_settled(&watch, batch, Duration::from_millis(100), |_| {}).await;
    };
    tokio::time::timeout(
        Duration::from_secs(180),
        payrun::app::work_until(app.engine.clone(), until),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the next worker did not settle the batch: {:?}",
            futures::executor::block_on(app.store.batch_counts(batch))
        )
    })
    .unwrap();
    app.assert_paid_exactly_once(batch).await;
    assert_eq!(app.ledger().transfers.len(), PAYEES, "each payee paid once");
}
