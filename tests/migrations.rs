//! The first runs on a brand-new database do not trip over each other: several real payrun
//! processes started at once each create-or-check the schema (apalis' and ours) and all start
//! cleanly, on both backends.

mod common;

use common::app::{Backend, fresh_database};

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

on_both_backends!(processes_started_together_on_a_fresh_database_all_start_cleanly);
