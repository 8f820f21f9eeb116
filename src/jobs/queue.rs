//! The persistent job queue (apalis on SQLite or PostgreSQL, in the same database as the
//! store). A job carries only an item id; pushing one twice is harmless (see `jobs`).

use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};

use crate::batch::ItemId;
use crate::store::{Pool, Store, now_ms};

/// Queue name, owned by the store module that holds the SQL on apalis' tables.
pub use crate::store::ITEM_QUEUE;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemJob {
    pub item_id: String,
}

#[derive(Clone)]
pub enum Queue {
    Sqlite(SqliteStorage<ItemJob>),
    Postgres(PostgresStorage<ItemJob>),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot enqueue: {0}")]
pub struct QueueError(String);

impl Queue {
    pub fn new(store: &Store, heartbeat: Duration) -> Queue {
        match store.pool() {
            Pool::Sqlite(p) => Queue::Sqlite(
                SqliteStorage::new(p).with_config(
                    apalis_sqlite::Config::default()
                        .queue(ITEM_QUEUE)
                        .heartbeat_interval(heartbeat)
                        .batch_size(16),
                ),
            ),
            Pool::Postgres(p) => Queue::Postgres(
                PostgresStorage::new(p).with_config(
                    apalis_postgres::Config::default()
                        .queue(ITEM_QUEUE)
                        .heartbeat_interval(heartbeat)
                        .batch_size(16),
                ),
            ),
        }
    }

    /// Enqueues one job per item, to run at `run_at` (unix ms) or now.
    pub async fn push(&mut self, items: &[ItemId], run_at: Option<i64>) -> Result<(), QueueError> {
        let delay = run_at
            .map(|t| Duration::from_millis((t - now_ms()).max(0) as u64))
            .unwrap_or_default();
        let tasks: Vec<_> = items
            .iter()
            .map(|i| {
                TaskBuilder::new(ItemJob {
                    item_id: i.to_string(),
                })
                .run_after(delay)
                .max_attempts(3)
                .build()
            })
            .collect();
        for chunk in tasks.chunks(500) {
            let mut stream = futures::stream::iter(chunk.to_vec());
            match self {
                Queue::Sqlite(s) => s
                    .push_all(&mut stream)
                    .await
                    .map_err(|e| QueueError(e.to_string()))?,
                Queue::Postgres(s) => s
                    .push_all(&mut stream)
                    .await
                    .map_err(|e| QueueError(e.to_string()))?,
            }
        }
        Ok(())
    }
}
