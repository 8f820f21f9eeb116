//! apalis' side of the database: the only SQL on apalis' own tables (`Jobs` on SQLite,
//! `apalis.jobs` on PostgreSQL), and the name of payrun's item queue in them. apalis creates
//! and migrates these tables (`Store::migrate`); payrun only counts and prunes its queue's rows.
//! `on_apalis!` builds apalis storage for whichever backend the pool is (jobs, benchmarks).

use super::{Pool, Store, StoreError};

/// The item queue's name (apalis' `job_type` column), fixed so renaming the Rust job type never
/// strands queued jobs. `jobs` re-exports it and configures its apalis storage with it.
pub const ITEM_QUEUE: &str = "payrun.items";

impl Store {
    /// Deletes the item queue's finished (`Done`) jobs. apalis keeps every finished row, and
    /// its acknowledgement query filters on the worker's name, so each ack scans every job that
    /// worker ever ran: throughput falls as a batch grows. The item's own row is the record;
    /// the finished queue row is worth nothing once acknowledged.
    pub async fn prune_done_jobs(&self) -> Result<u64, StoreError> {
        let q = ITEM_QUEUE;
        Ok(match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query("DELETE FROM Jobs WHERE job_type = $1 AND status = 'Done'")
                    .bind(q)
                    .execute(p)
                    .await?
                    .rows_affected()
            }
            Pool::Postgres(p) => {
                sqlx::query("DELETE FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'")
                    .bind(q)
                    .execute(p)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// Jobs apalis holds for the item queue that have not finished (queue depth).
    pub async fn queued_jobs(&self) -> Result<i64, StoreError> {
        let q = ITEM_QUEUE;
        Ok(match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM Jobs WHERE job_type = $1 AND status IN ('Pending', 'Queued', 'Running')",
                )
                .bind(q)
                .fetch_one(p)
                .await?
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1 AND status IN ('Pending', 'Queued', 'Running')",
                )
                .bind(q)
                .fetch_one(p)
                .await?
            }
        })
    }
}

/// Runs `$body` once per backend, like [`on_pool!`](super::on_pool), with `$p` bound to the
/// concrete pool and `$storage` / `$config` naming that backend's apalis storage type and its
/// config (`apalis_sqlite::{SqliteStorage, Config}` or `apalis_postgres::{PostgresStorage,
/// Config}`), so code building apalis storage is written once for both.
macro_rules! on_apalis {
    ($pool:expr, $p:ident, $storage:ident, $config:ident => $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($p) => {
                use ::apalis_sqlite::{Config as $config, SqliteStorage as $storage};
                $body
            }
            $crate::store::Pool::Postgres($p) => {
                use ::apalis_postgres::{Config as $config, PostgresStorage as $storage};
                $body
            }
        }
    };
}
pub(crate) use on_apalis;
