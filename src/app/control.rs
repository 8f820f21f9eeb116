//! `payrun pause|resume (BATCH | --all)`, and the dashboard's Pause / Resume buttons, which call
//! these same functions. Both are safe to run twice (a second pause keeps the first one's time;
//! resuming a batch that is not paused changes nothing) and answer with one line saying what
//! happened. What a pause stops, and how soon, is `jobs::gate`'s and `store::control`'s.

use serde::Serialize;

use super::ops::OpsError;
use crate::batch::BatchId;
use crate::jobs::Queue;
use crate::jobs::feed::{Window, top_up};
use crate::store::{PauseOutcome, ResumeOutcome, Store, now_ms};

/// What a pause or resume is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Batch(BatchId),
    /// Every batch (with `pause`: every batch with work left at that moment).
    All,
}

/// What a pause or resume did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlOutcome {
    /// The batches it paused or resumed now (none when it was a no-op).
    pub changed: Vec<String>,
    /// One line for the operator.
    pub message: String,
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "es" }
}

/// Pauses: within one feed interval no new Dots call starts for the batch's items; calls in
/// flight finish and are recorded.
pub async fn pause(store: &Store, target: Target) -> Result<ControlOutcome, OpsError> {
    let now = now_ms();
    match target {
        Target::Batch(id) => {
            let Some(out) = store.pause_batch(id, now).await? else {
                return Err(OpsError::NoBatch(id));
            };
            let (changed, message) = match out {
                PauseOutcome::Paused(_) => (
                    vec![id.to_string()],
                    format!(
                        "batch {id} paused: no new Dots call starts for it, calls in flight finish; `payrun resume {id}` goes on"
                    ),
                ),
                PauseOutcome::AlreadyPaused(at) => (
                    vec![],
                    format!(
                        "batch {id} was already paused (since {}); nothing changed",
                        when(at)
                    ),
                ),
                PauseOutcome::Canceled => {
                    (vec![], format!("batch {id} is canceled; nothing to pause"))
                }
                PauseOutcome::Finished => (
                    vec![],
                    format!("batch {id} has no item left to work; nothing to pause"),
                ),
            };
            Ok(ControlOutcome { changed, message })
        }
        Target::All => {
            let paused = store.pause_all(now).await?;
            let message = format!(
                "paused {} batch{} (every batch with work left that was not paused yet); `payrun resume --all` goes on",
                paused.len(),
                plural(paused.len())
            );
            Ok(ControlOutcome {
                changed: paused.iter().map(ToString::to_string).collect(),
                message,
            })
        }
    }
}

/// Resumes: the batch's waiting items are due now, and the queue is topped up at once (a
/// running worker's feeder would within `worker.feed_ms` anyway).
pub async fn resume(
    store: &Store,
    queue: &mut Queue,
    target: Target,
) -> Result<ControlOutcome, OpsError> {
    let now = now_ms();
    let out = match target {
        Target::Batch(id) => {
            let Some(out) = store.resume_batch(id, now).await? else {
                return Err(OpsError::NoBatch(id));
            };
            match out {
                ResumeOutcome::Resumed { .. } => ControlOutcome {
                    changed: vec![id.to_string()],
                    message: format!("batch {id} resumed; a running worker goes on with it now"),
                },
                ResumeOutcome::NotPaused => ControlOutcome {
                    changed: vec![],
                    message: format!("batch {id} was not paused; nothing to do"),
                },
            }
        }
        Target::All => {
            let resumed = store.resume_all(now).await?;
            ControlOutcome {
                message: format!(
                    "resumed {} batch{}; a running worker goes on with them now",
                    resumed.len(),
                    plural(resumed.len())
                ),
                changed: resumed.iter().map(ToString::to_string).collect(),
            }
        }
    };
    if !out.changed.is_empty() {
        top_up(store, queue, Window::default()).await?;
    }
    Ok(out)
}
