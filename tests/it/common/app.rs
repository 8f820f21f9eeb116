//! `spawn_app`: payrun wired to a fresh database (a SQLite file in a temp dir, or a new
//! PostgreSQL database) and an in-process Dots simulator, with a worker the test steps by hand.
//!
//! No sleeps: `step_until_idle` runs every workable item of a batch (skipping backoff waits
//! with `Store::retry_now`) and polls every open flow, round after round, until nothing moves.

use std::path::PathBuf;
use std::time::Duration;

use payrun::app::{SubmitError, SubmitOptions, Submitted, submit_file};
use payrun::batch::BatchId;
use payrun::config::Settings;
use payrun::dots::client::{ClientConfig, DotsClient};
use payrun::dots::sim::{Ledger, LedgerTransfer, Sim, SimConfig, SimHandle};
use payrun::dots::types::CreateUser;
use payrun::item::ItemState;
use payrun::jobs::poll;
use payrun::jobs::{Engine, Queue};
use payrun::store::{ItemRecord, Store};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `mod $name { sqlite(), postgres() }` tests that run `$name(Backend)` on each.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name($crate::common::app::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$name($crate::common::app::Backend::Postgres).await }
        }
    )* };
}

pub struct TestApp {
    pub backend: Backend,
    pub db_url: String,
    pub store: Store,
    pub sim: SimHandle,
    pub engine: Engine,
    pub queue: Queue,
    pub settings: Settings,
    pub dir: tempfile::TempDir,
}

/// Base URL of the PostgreSQL server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("PAYRUN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty database for one test.
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("payrun.db").display()),
        Backend::Postgres => {
            use sqlx::Connection;
            let admin = pg_admin_url();
            let name = format!("payrun_t_{}", Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("PostgreSQL must be running for the postgres tests (see .ci/run)");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let base = admin.rsplit_once('/').expect("url has a database").0;
            format!("{base}/{name}")
        }
    }
}

pub fn test_settings(base_url: &str, sim: &SimConfig) -> Settings {
    let mut s = Settings::builtin();
    s.dots.base_url = base_url.to_string();
    s.dots.client_id = sim.client_id.clone();
    s.dots.api_key = sim.api_key.clone();
    s.dots.timeout_secs = 2;
    s.worker.backoff_base_ms = 10;
    s.worker.backoff_max_secs = 1;
    s.worker.concurrency = 4;
    s.worker.poll_schedule_secs = vec![1];
    s.worker.queue_poll_ms = 20;
    s
}

/// A simulator where payees take an hour (tests complete flows explicitly or move its clock).
pub fn quiet_sim() -> SimConfig {
    SimConfig {
        complete_after_secs: 3600.0,
        ..SimConfig::default()
    }
}

pub async fn spawn_app(backend: Backend, sim_config: SimConfig) -> TestApp {
    spawn_app_in(backend, sim_config, tempfile::tempdir().expect("tempdir")).await
}

/// [`spawn_app`] with its files (the SQLite database) in `dir`, e.g. a small filesystem.
pub async fn spawn_app_in(
    backend: Backend,
    sim_config: SimConfig,
    dir: tempfile::TempDir,
) -> TestApp {
    let db_url = fresh_database(backend, dir.path()).await;
    let store = Store::connect(&db_url)
        .await
        .expect("store connects and migrates");
    let sim = Sim::new(sim_config.clone())
        .spawn("127.0.0.1:0")
        .await
        .expect("simulator binds");
    let settings = test_settings(&sim.base_url, &sim_config);
    let dots = DotsClient::new(ClientConfig::from_settings(
        &settings.dots,
        &settings.worker,
    ))
    .expect("client");
    let engine = Engine::new(
        store.clone(),
        dots,
        settings.worker.clone(),
        &format!("test-{}", Uuid::new_v4().simple()),
    );
    let queue = Queue::new(&store, Duration::from_secs(settings.worker.heartbeat_secs));
    TestApp {
        backend,
        db_url,
        store,
        sim,
        engine,
        queue,
        settings,
        dir,
    }
}

/// Numbers of items by outcome after stepping.
#[derive(Debug, Default)]
pub struct Stepped {
    pub rounds: usize,
    pub job_runs: usize,
}

impl TestApp {
    pub fn sim(&self) -> &Sim {
        &self.sim.sim
    }

    pub fn write_csv(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write csv");
        p
    }

    pub async fn submit(&self, csv: &str) -> Result<Submitted, SubmitError> {
        self.submit_with(csv, &SubmitOptions::default()).await
    }

    pub async fn submit_with(
        &self,
        csv: &str,
        opts: &SubmitOptions,
    ) -> Result<Submitted, SubmitError> {
        let path = self.write_csv("batch.csv", csv);
        let mut q = self.queue.clone();
        submit_file(&self.store, &mut q, &path, opts).await
    }

    /// Submits and expects a new batch.
    pub async fn batch(&self, csv: &str) -> BatchId {
        match self.submit(csv).await.expect("submit") {
            Submitted::New { batch, .. } => batch,
            other => panic!("expected a new batch, got {other:?}"),
        }
    }

    /// A payee known from an earlier batch: a Dots user in the simulator, remembered by payrun.
    pub async fn known_payee(&self, payee_id: &str, phone: &str) -> Uuid {
        let user = self.sim().create_user(CreateUser {
            first_name: "Known".into(),
            last_name: payee_id.into(),
            email: format!("{payee_id}@example.com"),
            country_code: "1".into(),
            phone_number: phone.into(),
            metadata: None,
        });
        self.store
            .remember_payee(payee_id, user.id)
            .await
            .expect("remember payee");
        user.id
    }

    /// Runs every workable item of `batch` and polls every open flow, until nothing moves.
    pub async fn step_until_idle(&self, batch: BatchId) -> Stepped {
        let mut s = Stepped::default();
        for round in 0..200 {
            s.rounds = round + 1;
            let ids = self
                .store
                .batch_workable_items(batch)
                .await
                .expect("workable");
            for id in &ids {
                self.store.retry_now(*id).await.expect("retry now");
                self.engine.process_item(*id).await.expect("process item");
                s.job_runs += 1;
            }
            let report = poll::poll_due(&self.engine, i64::MAX, 100_000)
                .await
                .expect("poll");
            if ids.is_empty()
                && report.onboarded.is_empty()
                && report.completed == 0
                && report.reminded.is_empty()
            {
                return s;
            }
        }
        panic!("batch {batch} did not become idle in 200 rounds");
    }

    /// Moves the engine's clock past `worker.give_up_after_secs`: a step that failed before
    /// gives up at its next failure (items give up by time, not by count).
    pub fn spend_time_budget(&self) {
        let budget = self.settings.worker.give_up_after_secs;
        self.engine.advance_clock(Duration::from_secs(budget + 1));
    }

    pub async fn items(&self, batch: BatchId) -> Vec<ItemRecord> {
        self.store.batch_items(batch).await.expect("items")
    }

    pub async fn item(&self, batch: BatchId, payee: &str) -> ItemRecord {
        self.items(batch)
            .await
            .into_iter()
            .find(|i| i.payee_id == payee)
            .unwrap_or_else(|| panic!("no item for {payee}"))
    }

    /// The states an item went through, from its event log.
    /// The states the item went through, in order (its creation first).
    pub async fn state_history(&self, id: payrun::batch::ItemId) -> Vec<ItemState> {
        self.store
            .item_events(id)
            .await
            .expect("events")
            .into_iter()
            .filter_map(|e| e.to_state)
            .map(|s| s.parse().expect("a stored state"))
            .collect()
    }

    /// The kinds of an item's events, oldest first.
    pub async fn event_kinds(&self, id: payrun::batch::ItemId) -> Vec<String> {
        self.store
            .item_events(id)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    pub fn ledger(&self) -> Ledger {
        self.sim().ledger()
    }

    /// Transfers in the ledger made for `item`.
    pub fn transfers_for(&self, item: &ItemRecord) -> Vec<LedgerTransfer> {
        self.ledger()
            .transfers
            .into_iter()
            .filter(|t| {
                t.metadata
                    .as_ref()
                    .and_then(|m| m.get("payrun_item_id"))
                    .and_then(|v| v.as_str())
                    == Some(item.id.to_string().as_str())
            })
            .collect()
    }

    /// Every item of the batch that got a Dots user has exactly one transfer of its amount.
    pub async fn assert_paid_exactly_once(&self, batch: BatchId) {
        for item in self.items(batch).await {
            let ts = self.transfers_for(&item);
            if item.transfer_id.is_some() {
                assert_eq!(ts.len(), 1, "{} has {} transfers", item.payee_id, ts.len());
                assert_eq!(
                    ts[0].amount,
                    item.amount.as_credit(),
                    "{} amount",
                    item.payee_id
                );
                assert_eq!(
                    Some(ts[0].id),
                    item.transfer_id,
                    "{} transfer id",
                    item.payee_id
                );
            } else {
                assert!(
                    ts.is_empty(),
                    "{} has a transfer but none recorded",
                    item.payee_id
                );
            }
        }
    }
}

pub const HEADER: &str =
    "payee_id,amount,dots_user_id,first_name,last_name,email,country_code,phone_number,memo\n";

/// A CSV row for a new payee (contact details, no Dots user).
pub fn new_payee_row(payee: &str, amount: &str, phone: &str) -> String {
    format!("{payee},{amount},,Ann,Payee,{payee}@example.com,1,{phone},\n")
}

/// A CSV row for a payee payrun already knows.
pub fn known_payee_row(payee: &str, amount: &str) -> String {
    format!("{payee},{amount},,,,,,,\n")
}

/// A `SELECT COUNT(*) ...` run straight on the test's database (not through the store).
#[allow(dead_code)]
pub async fn raw_count(app: &TestApp, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match app.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db_url)
                .await
                .expect("connect");
            sqlx::query_scalar(sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db_url).await.expect("connect");
            sqlx::query_scalar(sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    }
}

/// Runs one SQL statement straight on the test's database (not through the store), e.g. to
/// plant a row an earlier version could have written.
#[allow(dead_code)]
pub async fn raw_exec(app: &TestApp, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match app.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db_url)
                .await
                .expect("connect");
            sqlx::query(sql).execute(&pool).await.expect("execute");
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db_url).await.expect("connect");
            sqlx::query(sql).execute(&pool).await.expect("execute");
            pool.close().await;
        }
    }
}

/// Runs the real `payrun` binary on the test's database; returns (exit code, stdout, stderr).
pub fn payrun(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(args)
        .current_dir(app.dir.path())
        .env("PAYRUN_DATABASE_URL", &app.db_url)
        .env("RUST_LOG", "payrun=warn")
        .output()
        .expect("run payrun");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
