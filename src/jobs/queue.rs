//! The persistent job queue (apalis on SQLite or PostgreSQL, in the same database as the
//! store). A job carries only an item id; pushing one twice is harmless (see `jobs`).

use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};

use crate::batch::ItemId;
use crate::store::{Store, now_ms, on_apalis};

/// Queue name, owned by the store module that holds the SQL on apalis' tables.
pub use crate::store::ITEM_QUEUE;

/// Jobs apalis fetches per poll: twice the default `worker.concurrency` (8), so one fetch keeps
/// every handler busy while a worker does not hoard jobs another worker could run.
const FETCH_BATCH: usize = 16;

/// apalis' own redeliveries of one job: after a handler error (only an unparsable item id) or a
/// re-enqueue by a stopping worker. Retries of an item are ours (`Next::RetryAt`, the feeder), so
/// an apalis retry is only another nudge; a job that runs out of them loses nothing, as the
/// item's claim lapses and the feeder hands it over again.
const APALIS_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemJob {
    pub item_id: String,
}

#[derive(Clone)]
pub enum Queue {
    Sqlite(SqliteStorage<ItemJob>),
    Postgres(PostgresStorage<ItemJob>),
}

/// Runs `$body` with `$s` bound to the concrete apalis storage of a [`Queue`] (the same body
/// for both backends; the compiler checks it against each).
macro_rules! on_queue {
    ($queue:expr, $s:ident => $body:expr) => {
        match $queue {
            $crate::jobs::Queue::Sqlite($s) => $body,
            $crate::jobs::Queue::Postgres($s) => $body,
        }
    };
}
pub(crate) use on_queue;

impl From<SqliteStorage<ItemJob>> for Queue {
    fn from(s: SqliteStorage<ItemJob>) -> Queue {
        Queue::Sqlite(s)
    }
}

impl From<PostgresStorage<ItemJob>> for Queue {
    fn from(s: PostgresStorage<ItemJob>) -> Queue {
        Queue::Postgres(s)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot enqueue: {0}")]
pub struct QueueError(String);

impl Queue {
    pub fn new(store: &Store, heartbeat: Duration) -> Queue {
        on_apalis!(store.pool(), p, Storage, Config => Storage::<ItemJob>::new(p)
            .with_config(
                Config::default()
                    .queue(ITEM_QUEUE)
                    .heartbeat_interval(heartbeat)
                    .batch_size(FETCH_BATCH),
            )
            .into())
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
                .max_attempts(APALIS_ATTEMPTS)
                .build()
            })
            .collect();
        for chunk in tasks.chunks(500) {
            let mut stream = futures::stream::iter(chunk.to_vec());
            on_queue!(self, s => s
                .push_all(&mut stream)
                .await
                .map_err(|e| QueueError(e.to_string()))?);
        }
        Ok(())
    }
}
