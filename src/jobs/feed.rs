//! The feeder: keeps the job queue holding a small window of due items, never the backlog.
//!
//! Why: apalis' fetch and acknowledgement queries slow down with the number of jobs in the
//! queue (apalis-sqlite's drain time grows with the square of its length; see
//! shared/apalis-1.0-notes.md), so a batch pushed as one job per item made throughput fall as
//! batches grew, and enqueueing 1,000,000 jobs took longer than storing the batch. The items
//! table already is a durable, indexed backlog; the queue only needs the next few hundred.
//!
//! Guarantees:
//! - every workable item of an approved batch reaches the queue (see `store::feed` for why
//!   none is skipped), including items whose job was lost with a crashed worker: their claim
//!   lapses after `worker.claim_secs` and they are claimed again;
//! - a job's end hands its item back (`Store::release_lease` clears the claim), so a retry is
//!   fed when it falls due, never earlier — retries are not delayed queue jobs;
//! - the queue holds at most about `worker.queue_window` jobs per feeding worker.

use tracing::{debug, instrument};

use super::{Engine, Queue, QueueError};
use crate::config::WorkerSettings;
use crate::store::{Store, StoreError, now_ms};

/// How much of the backlog the queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Jobs the queue is topped up to.
    pub size: i64,
    /// A claimed item whose job has not taken it for this long is claimed again.
    pub claim_ms: i64,
    /// Batch mode: first transfers and the walk along the batches' cursors are the chunker's
    /// (`jobs::chunk`), not the queue's.
    pub chunked: bool,
}

impl Default for Window {
    fn default() -> Self {
        Window::from(&crate::config::Settings::builtin().worker)
    }
}

impl From<&WorkerSettings> for Window {
    fn from(s: &WorkerSettings) -> Self {
        Window {
            size: s.queue_window.max(1) as i64,
            claim_ms: s.claim_secs.max(1) as i64 * 1000,
            chunked: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Tops the queue up to `window.size` jobs if it is at most half full. Returns how many items
/// it handed over. Called by the worker every `worker.feed_ms`, and right after anything that
/// makes items workable (a submitted or approved batch, a rerun), so they start at once.
#[instrument(skip_all)]
pub async fn top_up(store: &Store, queue: &mut Queue, window: Window) -> Result<usize, FeedError> {
    let queued = store.queued_jobs().await?;
    if queued * 2 > window.size {
        return Ok(0);
    }
    let ids = store
        .claim_for_queue_as(
            now_ms(),
            window.claim_ms,
            window.size - queued,
            window.chunked,
        )
        .await?;
    if !ids.is_empty() {
        queue.push(&ids, None).await?;
        debug!(fed = ids.len(), queued, "fed the queue");
    }
    Ok(ids.len())
}

/// [`top_up`] with the engine's settings.
pub async fn feed_once(engine: &Engine, queue: &mut Queue) -> Result<usize, FeedError> {
    let window = Window {
        chunked: engine.chunked(),
        ..Window::from(&*engine.settings)
    };
    top_up(&engine.store, queue, window).await
}
