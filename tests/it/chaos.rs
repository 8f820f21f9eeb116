//! Chaos: the real `payrun` binary, three worker processes on one PostgreSQL database and a
//! simulator process with faults. At the end the simulator's ledger is audited: every item has
//! exactly one transfer of the right amount to the right user, no transfer lacks an item, and
//! nothing failed. Two variants share this code:
//!
//! - with kills: faults (5 % 5xx, 3 % commit-then-drop, 2 % 429 with Retry-After, 1 % 10-second
//!   stalls) and a killer that SIGKILLs a random worker at random moments and restarts it. Size:
//!   `PAYRUN_CHAOS_ITEMS` (default 2000) and `PAYRUN_CHAOS_KILLS` (default 5).
//! - without webhooks: payees finish their flows after 1 s and only polling finds out; 5 % 5xx.
//!   Every item must be paid and complete within the deadline, so a poll that met a 5xx must be
//!   retried within seconds. In CI a small run with a short first poll (`PAYRUN_CHAOS_POLL_ITEMS`,
//!   default 200); the issue's full run (2,000 items, the shipped polling settings, 10 minutes)
//!   is `#[ignore]`d: `cargo test --test it chaos::without_webhooks_2000 -- --ignored --nocapture`.
//! - batch mode (`dots.transfer_mode = "batch"`, chunks of 100): the kills and faults of the
//!   first variant, with first transfers sent in chunks through `POST /v2/transfer-batches`, so
//!   a kill lands between a chunk's intent and its outcome and whole chunks' answers are
//!   dropped. Size: `PAYRUN_CHAOS_BATCH_ITEMS` (default 500) and `PAYRUN_CHAOS_KILLS`.
//!
//! Payees finish their flows a second after they are made, so in both variants every item must
//! end completed before the workers are stopped. (Waiting only until each item was terminal or
//! waiting on its payee raced: an item the poller moved from `onboarding` to `transferring`
//! just after the check was then found unsettled once the workers had been stopped.)

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::app::{Backend, fresh_database};
use futures::StreamExt;
use payrun::app::audit::{SeenTransfer, compare};
use payrun::dots::sim::Ledger;
use payrun::item::ItemState;
use payrun::store::Store;
use rand::Rng;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_payrun");
const CLIENT_ID: &str = "chaos-client";
const API_KEY: &str = "chaos-key";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Env {
    db_url: String,
    base_url: String,
    config: std::path::PathBuf,
    logs: std::path::PathBuf,
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--config")
            .arg(&self.config)
            .env("PAYRUN_DATABASE_URL", &self.db_url)
            .env("DOTS_BASE_URL", &self.base_url)
            .env("DOTS_CLIENT_ID", CLIENT_ID)
            .env("DOTS_API_KEY", API_KEY)
            .env("RUST_LOG", "payrun=warn")
            .kill_on_drop(true);
        c
    }

    fn worker(&self, n: usize, generation: usize) -> Child {
        let log =
            std::fs::File::create(self.logs.join(format!("worker-{n}-{generation}.log"))).unwrap();
        self.cmd(&["worker"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("worker starts")
    }
}

/// Creates a Dots user through the simulator's API, retrying its injected faults.
async fn create_user(http: &reqwest::Client, base: &str, n: usize) -> String {
    for _ in 0..50 {
        let r = http
            .post(format!("{base}/v2/users"))
            .basic_auth(CLIENT_ID, Some(API_KEY))
            .timeout(Duration::from_secs(2))
            .json(&serde_json::json!({
                "first_name": "Known", "last_name": format!("Seller{n}"),
                "email": format!("known{n}@example.com"), "country_code": "1",
                "phone_number": format!("777{n:07}"),
            }))
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
            && let Ok(v) = r.json::<serde_json::Value>().await
        {
            return v["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not create user {n}");
}

/// One chaos run's shape.
struct Variant {
    items: usize,
    kills: usize,
    /// Fault flags for `payrun sim` (beside `--complete-after 1`).
    faults: &'static [&'static str],
    /// The `[worker]` section of the workers' config (empty: the shipped defaults).
    worker: &'static str,
    /// More of the `[dots]` section (e.g. `transfer_mode`).
    dots: &'static str,
    deadline: Duration,
}

/// The kill runs' faults: 5 % 5xx, 3 % commit-then-drop, 2 % 429, 1 % 10-second stalls.
const KILL_FAULTS: &[&str] = &[
    "--error-rate",
    "0.05",
    "--drop-rate",
    "0.03",
    "--throttle-rate",
    "0.02",
    "--stall-rate",
    "0.01",
];

const CHAOS_WORKER: &str = r#"
concurrency = 8
poll_cron = "* * * * * *"
poll_schedule_secs = [1, 2]
backoff_base_ms = 200
backoff_max_secs = 5
max_attempts = 40
lease_secs = 15
heartbeat_secs = 2
queue_poll_ms = 100
claim_secs = 30
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_killed_at_random_under_api_faults_pay_every_item_exactly_once() {
    run(Variant {
        items: env_or("PAYRUN_CHAOS_ITEMS", 2000),
        kills: env_or("PAYRUN_CHAOS_KILLS", 5),
        faults: KILL_FAULTS,
        worker: CHAOS_WORKER,
        dots: "",
        // A liveness bound, not a speed target: 280-430 s measured on this 2-core machine with
        // the second chaos run and three compilers beside it.
        deadline: Duration::from_secs(900),
    })
    .await;
}

/// The first variant in batch mode: chunks of 100 items, faults on every call (a chunk's
/// answer dropped after Dots made it, stalls past the timeout, 5xx, 429) and random SIGKILLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_batch_mode_three_workers_killed_at_random_under_api_faults_pay_every_item_exactly_once()
{
    run(Variant {
        items: env_or("PAYRUN_CHAOS_BATCH_ITEMS", 500),
        kills: env_or("PAYRUN_CHAOS_KILLS", 5),
        faults: KILL_FAULTS,
        worker: CHAOS_WORKER,
        dots: "transfer_mode = \"batch\"\ntransfer_batch_size = 100\n",
        deadline: Duration::from_secs(900),
    })
    .await;
}

/// The CI size: the shipped poller and retry settings, but a 3 s first poll (not a minute) so
/// the run is short; a poll that met a 5xx and waited for the next scheduled slot (300 s) would
/// miss the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webhooks_under_5xx_every_item_is_paid_and_complete_soon_after_its_payee() {
    run(Variant {
        items: env_or("PAYRUN_CHAOS_POLL_ITEMS", 200),
        kills: 0,
        faults: &["--error-rate", "0.05"],
        worker: "poll_schedule_secs = [3, 300, 1800, 3600]\n",
        dots: "",
        deadline: Duration::from_secs(120),
    })
    .await;
}

/// The issue's run: 2,000 items, 3 workers, 5 % 5xx, payees done after 1 s, no webhooks, the
/// shipped settings throughout; all paid and complete within 10 minutes of the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 4 minutes; run by hand: cargo test --test it chaos::without_webhooks_2000 -- --ignored --nocapture"]
async fn without_webhooks_2000_items_under_5xx_are_all_paid_within_ten_minutes() {
    run(Variant {
        items: 2000,
        kills: 0,
        faults: &["--error-rate", "0.05"],
        worker: "",
        dots: "",
        deadline: Duration::from_secs(600),
    })
    .await;
}

async fn run(v: Variant) {
    let Variant { items, kills, .. } = v;
    let dir = tempfile::tempdir().unwrap();
    let db_url = fresh_database(Backend::Postgres, dir.path()).await;
    let port = free_port();
    let env = Env {
        db_url: db_url.clone(),
        base_url: format!("http://127.0.0.1:{port}/api"),
        config: dir.path().join("chaos.toml"),
        logs: dir.path().to_path_buf(),
    };
    std::fs::write(
        &env.config,
        format!(
            r#"
[database]
# Three chaos runs share the test server with the rest of the suite: 3 workers x 6 connections
# each keeps them well under PostgreSQL's default 100 clients (16 each did not, for two runs).
max_connections = 6
[dots]
timeout_secs = 3
connect_timeout_secs = 2
{}
[worker]
{}
[limits]
max_item_cents = 0
max_batch_cents = 0
approval_threshold_cents = 0
"#,
            v.dots, v.worker
        ),
    )
    .unwrap();

    // The simulator, as its own process.
    let sim_log = std::fs::File::create(dir.path().join("sim.log")).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut sim_args = vec!["sim", "--listen", &listen, "--complete-after", "1"];
    sim_args.extend_from_slice(v.faults);
    let _sim = env
        .cmd(&sim_args)
        .stdout(Stdio::null())
        .stderr(sim_log)
        .spawn()
        .expect("simulator starts");
    let http = reqwest::Client::new();
    let ledger_url = format!("http://127.0.0.1:{port}/_sim/ledger");
    let up = Instant::now();
    while http.get(&ledger_url).send().await.is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(30),
            "the simulator did not start: {}",
            std::fs::read_to_string(dir.path().join("sim.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Half the sellers are known Dots users, half are new and get onboarded.
    let known = items / 2;
    let users: Vec<String> = futures::stream::iter(0..known)
        .map(|n| {
            let http = http.clone();
            let base = env.base_url.clone();
            async move { create_user(&http, &base, n).await }
        })
        .buffered(32)
        .collect()
        .await;
    let mut csv = String::from(
        "payee_id,amount,dots_user_id,first_name,last_name,email,country_code,phone_number,memo\n",
    );
    let mut rng = rand::rng();
    for n in 0..items {
        let cents: i64 = rng.random_range(100..500_000);
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        if let Some(user) = users.get(n) {
            csv.push_str(&format!("c-{n:05},{amount},{user},,,,,,\n"));
        } else {
            csv.push_str(&format!(
                "c-{n:05},{amount},,New,Seller{n},new{n}@example.com,1,888{n:07},\n"
            ));
        }
    }
    let csv_path = dir.path().join("chaos.csv");
    std::fs::write(&csv_path, csv).unwrap();
    let out = env
        .cmd(&["submit", csv_path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch: payrun::batch::BatchId = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // Three workers, and a killer. The test's own connection first: it only reads.
    let store = Store::connect_with(&db_url, 2).await.unwrap();
    let started = Instant::now();
    let mut workers: Vec<Child> = (0..3).map(|n| env.worker(n, 0)).collect();
    let mut done_kills = 0;
    while done_kills < kills {
        let wait = rng.random_range(3000..12000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let victim = rng.random_range(0..workers.len());
        workers[victim].kill().await.expect("SIGKILL");
        done_kills += 1;
        workers[victim] = env.worker(victim, done_kills);
    }
    let killed_at = started.elapsed();

    // Wait for every item to be terminal, counted from the workers' start.
    let deadline = started + v.deadline;
    let mut paid_in = None;
    loop {
        let counts = store.batch_counts(batch).await.unwrap();
        let paid: i64 = counts
            .iter()
            .filter(|c| {
                matches!(
                    c.state,
                    ItemState::Transferred | ItemState::AwaitingPayout | ItemState::Completed
                )
            })
            .map(|c| c.count)
            .sum();
        if paid == items as i64 && paid_in.is_none() {
            paid_in = Some(started.elapsed());
        }
        if counts.iter().all(|c| c.state.is_terminal()) {
            break;
        }
        if Instant::now() >= deadline {
            let stuck: Vec<_> = store
                .batch_items(batch)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| !r.state.is_terminal())
                .take(10)
                .map(|r| {
                    let due = r.next_poll_at.map(|t| t - payrun::store::now_ms());
                    (r.payee_id, r.state.as_str(), r.polls, due)
                })
                .collect();
            panic!(
                "batch not done {:.0} s after the start: {:?}; some left (payee, state, polls, next poll in ms): {stuck:?}",
                v.deadline.as_secs_f64(),
                counts
                    .iter()
                    .map(|c| (c.state.as_str(), c.count))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let done_in = started.elapsed();
    for w in &workers {
        if let Some(pid) = w.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    for w in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w.wait()).await;
    }

    // Audit the ledger.
    let ledger: Ledger = http
        .get(&ledger_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = store.batch_items(batch).await.unwrap();
    let seen: Vec<SeenTransfer> = ledger.transfers.iter().map(SeenTransfer::from).collect();
    let audit = compare(batch, &records, &seen);
    let counts = store.batch_counts(batch).await.unwrap();
    eprintln!(
        "chaos: {items} items, {done_kills} kills (last at {:.1}s), all paid in {:.1}s, all done in {:.1}s; {} transfers; states {:?}; audit {:?}",
        killed_at.as_secs_f64(),
        paid_in.map_or(f64::NAN, |d| d.as_secs_f64()),
        done_in.as_secs_f64(),
        ledger.transfers.len(),
        counts
            .iter()
            .map(|c| (c.state.as_str(), c.count))
            .collect::<Vec<_>>(),
        (
            audit.missing.len(),
            audit.duplicated.len(),
            audit.mismatched.len(),
            audit.unrecorded.len(),
            audit.orphans.len()
        ),
    );
    assert!(audit.ok(), "audit failed: {audit:?}");
    if v.dots.contains("batch") {
        // First transfers went in chunks.
        let chunks = store.batch_chunks(batch).await.unwrap();
        let done = chunks
            .iter()
            .filter(|c| c.state == payrun::batch::ChunkState::Done)
            .count();
        eprintln!(
            "chunks: {} ({done} done, {} items in them, {} calls)",
            chunks.len(),
            chunks.iter().map(|c| c.items).sum::<i64>(),
            chunks.iter().map(|c| c.sends).sum::<i64>()
        );
        assert!(done > 0, "no chunk was answered: {chunks:?}");
    }
    assert_eq!(
        ledger.transfers.len(),
        audit.transfers,
        "every transfer in the ledger belongs to this batch"
    );
    let paid = records.iter().filter(|r| r.transfer_id.is_some()).count();
    assert_eq!(ledger.transfers.len(), paid, "one transfer per paid item");
    for r in &records {
        let s = r.state;
        assert!(s.is_terminal(), "{} is {}", r.payee_id, r.state);
        if s != payrun::item::ItemState::Failed {
            assert!(
                r.transfer_id.is_some() || s == payrun::item::ItemState::Onboarding,
                "{} unpaid in {}",
                r.payee_id,
                r.state
            );
        }
    }
    // The queue must not grow by itself (re-enqueue churn): at the end only a few retries wait.
    let depth = store.queued_jobs().await.unwrap();
    assert!(
        depth < items as i64 / 2,
        "{depth} jobs still queued for {items} items"
    );
    let failed = records
        .iter()
        .filter(|r| r.state == ItemState::Failed)
        .count();
    assert_eq!(
        failed,
        0,
        "no item should fail under transient faults: {:?}",
        records
            .iter()
            .filter(|r| r.state == ItemState::Failed)
            .map(|r| r.last_error.clone())
            .collect::<Vec<_>>()
    );
}
