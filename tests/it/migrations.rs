//! Setting a database up: the first runs on a brand-new database do not trip over each other
//! (several real payrun processes started at once each create-or-check the schema, apalis' and
//! ours, and all start cleanly), and the batch identity migration builds its unique index even
//! on a database that already holds duplicates. Both backends.

use crate::common::app::{Backend, fresh_database};

const BIN: &str = env!("CARGO_BIN_EXE_payrun");
const PROCESSES: usize = 6;
const REPETITIONS: usize = 3;

async fn processes_started_together_on_a_fresh_database_all_start_cleanly(backend: Backend) {
    for rep in 0..REPETITIONS {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_url = fresh_database(backend, dir.path()).await;
        let runs: Vec<_> = (0..PROCESSES)
            .map(|_| {
                tokio::process::Command::new(BIN)
                    .arg("status")
                    .current_dir(dir.path())
                    .env("PAYRUN_DATABASE_URL", &db_url)
                    .env("RUST_LOG", "payrun=warn")
                    .kill_on_drop(true)
                    .output()
            })
            .collect();
        for out in futures::future::join_all(runs).await {
            let out = out.expect("payrun status runs");
            assert!(
                out.status.success(),
                "repetition {rep}: a first run failed ({:?}):\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // And the schema is whole: a store opens and reads it.
        let store = payrun::store::Store::connect(&db_url)
            .await
            .expect("store opens");
        assert!(store.list_batches(1).await.expect("list").is_empty());
        store.close().await;
    }
}

/// A database from before batch identities that already holds the same file three times
/// (concurrent submits made them): the migration gives the identity to the oldest, not fail.
async fn the_identity_migration_keeps_the_oldest_of_existing_duplicates(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_url = fresh_database(backend, dir.path()).await;
    payrun::store::Store::connect(&db_url)
        .await
        .expect("store opens")
        .close()
        .await;
    let before = [
        "DROP INDEX batches_identity",
        "ALTER TABLE batches DROP COLUMN identity_hash",
        "DELETE FROM _payrun_migrations WHERE version = 20261126000005",
        "INSERT INTO batches (id, source, content_hash, item_count, total_cents, created_at)
         VALUES ('b-2', 'f', 'same', 1, 1, 2), ('b-1', 'f', 'same', 1, 1, 1),
                ('b-3', 'f', 'same', 1, 1, 3), ('c-1', 'g', 'other', 1, 1, 5)",
    ];
    let holders = "SELECT id FROM batches WHERE identity_hash IS NOT NULL ORDER BY id";
    macro_rules! on {
        ($pool:expr) => {{
            let pool = $pool;
            for sql in before {
                sqlx::query(sql).execute(&pool).await.expect(sql);
            }
            pool.close().await;
            payrun::store::Store::connect(&db_url)
                .await
                .expect("the migration runs on a database with duplicates")
                .close()
                .await;
            let pool = $pool;
            let ids: Vec<String> = sqlx::query_scalar(holders)
                .fetch_all(&pool)
                .await
                .expect("holders");
            pool.close().await;
            ids
        }};
    }
    let ids = match backend {
        Backend::Sqlite => on!(sqlx::SqlitePool::connect(&db_url).await.expect("connect")),
        Backend::Postgres => on!(sqlx::PgPool::connect(&db_url).await.expect("connect")),
    };
    assert_eq!(ids, ["b-1", "c-1"], "the oldest of each content holds it");
}

on_both_backends!(
    processes_started_together_on_a_fresh_database_all_start_cleanly,
    the_identity_migration_keeps_the_oldest_of_existing_duplicates,
);
