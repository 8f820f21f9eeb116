//! A file's identity as a batch is decided by the database, not by a read before the write:
//! several real `payrun submit` processes of one file started together store one batch, and
//! the worker then pays each payee once. And a submit whose batch committed exits 0 with the
//! batch id even when handing the first window to the queue fails.

use std::collections::HashMap;
use std::process::Output;

use crate::common::app::*;
use payrun::app::Submitted;
use payrun::batch::BatchId;

const BIN: &str = env!("CARGO_BIN_EXE_payrun");

/// Processes started at once, and repetitions (each on a fresh database).
const SUBMITTERS: usize = 4;
const REPETITIONS: usize = 10;
const ROWS: usize = 20;

/// The real binary, configured for the test's database and simulator.
fn payrun(app: &TestApp, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args)
        .current_dir(app.dir.path())
        .env("PAYRUN_DATABASE_URL", &app.db_url)
        .env("DOTS_BASE_URL", &app.settings.dots.base_url)
        .env("DOTS_CLIENT_ID", &app.settings.dots.client_id)
        .env("DOTS_API_KEY", app.settings.dots.api_key.expose())
        .env("RUST_LOG", "payrun=warn")
        .kill_on_drop(true);
    c
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Transfers in the simulator's ledger per payee id (from the transfer's metadata).
fn transfers_per_payee(app: &TestApp) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for t in app.ledger().transfers {
        let payee = t
            .metadata
            .as_ref()
            .and_then(|m| m.get("payee_id"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        *n.entry(payee).or_default() += 1;
    }
    n
}

async fn concurrent_submits_of_one_file_store_one_batch_and_pay_each_payee_once(backend: Backend) {
    for rep in 0..REPETITIONS {
        let app = spawn_app(backend, quiet_sim()).await;
        let mut csv = HEADER.to_string();
        let mut payees = Vec::new();
        for i in 0..ROWS {
            let payee = format!("seller-{rep}-{i:02}");
            app.known_payee(&payee, &format!("55{rep:02}{i:04}")).await;
            csv.push_str(&known_payee_row(&payee, &format!("{}.25", i + 1)));
            payees.push(payee);
        }
        let path = app.write_csv("sellers.csv", &csv);
        let path = path.to_str().expect("utf-8 path");
        let runs: Vec<_> = (0..SUBMITTERS)
            .map(|_| payrun(&app, &["submit", path]).output())
            .collect();
        let outs = futures::future::join_all(runs).await;
        let mut ids = Vec::new();
        for out in outs {
            let out = out.expect("payrun submit runs");
            assert!(out.status.success(), "repetition {rep}: {}", text(&out));
            ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let batches = app.store.list_batches(100).await.expect("batches");
        assert_eq!(
            batches.len(),
            1,
            "repetition {rep}: {SUBMITTERS} submits of one file made {} batches",
            batches.len()
        );
        assert!(
            ids.iter().all(|id| *id == batches[0].id),
            "repetition {rep}: every submit names the one batch {}: {ids:?}",
            batches[0].id
        );

        // Work every batch the database holds (one, if the above held) and read the ledger.
        for b in &batches {
            let id: BatchId = b.id.parse().expect("batch id");
            app.step_until_idle(id).await;
            app.assert_paid_exactly_once(id).await;
        }
        let paid = transfers_per_payee(&app);
        for p in &payees {
            assert_eq!(
                paid.get(p).copied().unwrap_or(0),
                1,
                "repetition {rep}: {p} paid once"
            );
        }
        assert_eq!(paid.len(), ROWS, "repetition {rep}: no other transfer");
    }
}

/// The apalis queue table is dropped after connecting: storing the batch works, handing its
/// first window to the queue cannot. The batch is committed by then, so submit reports it.
async fn a_submit_whose_batch_committed_reports_it_when_the_first_queue_window_fails(
    backend: Backend,
) {
    let app = spawn_app(backend, quiet_sim()).await;
    let drop_queue = match backend {
        Backend::Sqlite => "DROP TABLE Jobs",
        Backend::Postgres => "DROP TABLE apalis.jobs CASCADE",
    };
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db_url)
                .await
                .expect("connect");
            sqlx::query(drop_queue).execute(&pool).await.expect("drop");
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db_url).await.expect("connect");
            sqlx::query(drop_queue).execute(&pool).await.expect("drop");
            pool.close().await;
        }
    }
    app.known_payee("alice", "5550101").await;
    app.known_payee("bob", "5550102").await;

    // In process: the new batch, stored.
    let csv = format!(
        "{HEADER}{}{}",
        known_payee_row("alice", "1.00"),
        known_payee_row("bob", "2.00")
    );
    let sub = app
        .submit(&csv)
        .await
        .expect("a committed batch is a successful submit");
    let Submitted::New { batch, .. } = sub else {
        panic!("expected the new batch, got {sub:?}");
    };
    assert_eq!(app.items(batch).await.len(), 2);

    // The real binary: exit 0 and the batch id on stdout.
    let csv = format!("{HEADER}{}", known_payee_row("alice", "3.00"));
    let path = app.write_csv("second.csv", &csv);
    let out = payrun(&app, &["submit", path.to_str().expect("utf-8 path")])
        .output()
        .await
        .expect("payrun submit runs");
    assert!(out.status.success(), "{}", text(&out));
    let id: BatchId = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("a batch id on stdout ({e}): {}", text(&out)));
    assert_eq!(app.items(id).await.len(), 1, "the batch is stored");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARN"),
        "the queue failure is logged: {stderr}"
    );
    assert!(
        !stderr.contains(app.settings.dots.api_key.expose()),
        "no secret in the log"
    );
}

/// Another transaction holds the file's identity, not yet committed: the submit waits for it
/// and returns that batch instead of storing a second one.
async fn a_submit_racing_an_uncommitted_batch_of_the_same_file_returns_that_batch(
    backend: Backend,
) {
    use sha2::Digest as _;
    let app = spawn_app(backend, quiet_sim()).await;
    app.known_payee("alice", "5550201").await;
    let csv = format!("{HEADER}{}", known_payee_row("alice", "4.00"));
    let hash = hex::encode(sha2::Sha256::digest(csv.as_bytes()));
    let other = BatchId::new_random();
    const INSERT: &str = "INSERT INTO batches (id, source, content_hash, item_count, total_cents,
                              created_at, status, identity_hash)
                          VALUES ($1, 'other', $2, 1, 400, 1, 'approved', $2)";
    macro_rules! race {
        ($pool:expr, $waiting:expr) => {{
            let pool = $pool;
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(INSERT)
                .bind(other.to_string())
                .bind(&hash)
                .execute(&mut *tx)
                .await
                .expect("insert the other batch");
            let submit = {
                let (store, mut queue) = (app.store.clone(), app.queue.clone());
                let path = app.write_csv("race.csv", &csv);
                tokio::spawn(async move {
                    payrun::app::submit_file(&store, &mut queue, &path, &Default::default()).await
                })
            };
            $waiting;
            assert!(
                !submit.is_finished(),
                "the submit waits for the other transaction"
            );
            tx.commit().await.expect("commit");
            submit.await.expect("submit task")
        }};
    }
    let sub = match backend {
        Backend::Sqlite => race!(
            sqlx::SqlitePool::connect(&app.db_url)
                .await
                .expect("connect"),
            tokio::task::yield_now().await
        ),
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db_url).await.expect("connect");
            let watch = pool.clone();
            race!(pool, {
                // Until the submit's write of the identity waits on the uncommitted one.
                let mut waited = 0;
                while sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&watch)
                .await
                .expect("pg_stat_activity")
                    == 0
                {
                    waited += 1;
                    assert!(waited < 2000, "the submit never waited for the other batch");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            })
        }
    };
    match sub.expect("the submit succeeds") {
        Submitted::Existing { batch, .. } => assert_eq!(batch, other),
        s => panic!("expected the other batch, got {s:?}"),
    }
    assert_eq!(app.store.list_batches(10).await.expect("batches").len(), 1);
}

on_both_backends!(
    a_submit_racing_an_uncommitted_batch_of_the_same_file_returns_that_batch,
    concurrent_submits_of_one_file_store_one_batch_and_pay_each_payee_once,
    a_submit_whose_batch_committed_reports_it_when_the_first_queue_window_fails,
);
