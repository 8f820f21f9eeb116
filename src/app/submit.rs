//! Submitting a CSV file as a batch: validate (pass one), detect a resubmission by content
//! hash, store (pass two, one transaction), enqueue. A rejected file stores and enqueues nothing.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::batch::BatchId;
use crate::config::Limits;
use crate::intake::{self, IntakeError, Row, RowReader, Summary};
use crate::jobs::Queue;
use crate::store::{CreateBatchError, NewBatch, Store, StoreError, Tick};

#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub dry_run: bool,
    pub allow_duplicate: bool,
    pub limits: Limits,
    /// Set when a schedule tick makes the batch: at most one batch per tick.
    pub tick: Option<Tick>,
    /// What to record as the batch's source instead of the file path.
    pub source: Option<String>,
    /// Store only; the caller enqueues (benchmarks time the two apart).
    pub no_enqueue: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Stored; enqueued unless it awaits approval.
    New {
        batch: BatchId,
        summary: Summary,
        awaiting_approval: bool,
    },
    /// The same file was submitted before: the existing batch, nothing new stored.
    Existing { batch: BatchId, summary: Summary },
    /// Validated only: what would be paid, and how many payees would be onboarded.
    DryRun { summary: Summary, new_payees: u64 },
    /// Another worker already made the batch for this schedule tick.
    TickTaken,
}

impl Submitted {
    pub fn batch(&self) -> Option<BatchId> {
        match self {
            Submitted::New { batch, .. } | Submitted::Existing { batch, .. } => Some(*batch),
            Submitted::DryRun { .. } | Submitted::TickTaken => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{path}: {source}")]
    Invalid { path: String, source: IntakeError },
    #[error("{path}: {source}")]
    Rejected {
        path: String,
        source: CreateBatchError,
    },
    #[error("{path} changed while it was being stored; nothing was stored, submit it again")]
    Changed { path: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] crate::jobs::QueueError),
}

impl SubmitError {
    /// Bad input (exit 2) as opposed to a system failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            SubmitError::Invalid { .. }
                | SubmitError::Rejected {
                    source: CreateBatchError::UnknownPayees(_),
                    ..
                }
                | SubmitError::Changed { .. }
        )
    }
}

pub async fn submit_file(
    store: &Store,
    queue: &mut Queue,
    path: &Path,
    opts: &SubmitOptions,
) -> Result<Submitted, SubmitError> {
    let shown = path.display().to_string();
    let invalid = |source| SubmitError::Invalid {
        path: shown.clone(),
        source,
    };
    let file = File::open(path).map_err(|e| invalid(IntakeError::Io(e)))?;
    let summary = intake::validate_with(BufReader::new(file), &opts.limits).map_err(invalid)?;
    if !opts.allow_duplicate
        && let Some(batch) = store.find_batch_by_hash(&summary.content_hash).await?
    {
        return Ok(Submitted::Existing { batch, summary });
    }
    if opts.dry_run {
        let new_payees = count_new_payees(store, path).await.map_err(|e| match e {
            CountError::Intake(e) => invalid(e),
            CountError::Store(e) => SubmitError::Store(e),
        })?;
        return Ok(Submitted::DryRun {
            summary,
            new_payees,
        });
    }
    // Pass two streams the file again, hashing it, so a file edited between the passes is
    // caught before commit.
    let file = File::open(path).map_err(|e| invalid(IntakeError::Io(e)))?;
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let reader = RowReader::new(Tee {
        inner: BufReader::new(file),
        hasher: hasher.clone(),
    })
    .map_err(invalid)?;
    let rows = PassTwo {
        reader,
        hasher,
        expected: summary.content_hash.clone(),
        done: false,
    };
    let needs_approval = opts.limits.approval_threshold_cents > 0
        && summary.total_cents > opts.limits.approval_threshold_cents;
    let new = NewBatch {
        source: opts.source.clone().unwrap_or_else(|| shown.clone()),
        content_hash: summary.content_hash.clone(),
        needs_approval,
        tick: opts.tick.clone(),
    };
    let batch = match store.create_batch(&new, rows).await {
        Ok(b) => b,
        Err(CreateBatchError::Aborted(_)) => return Err(SubmitError::Changed { path: shown }),
        Err(CreateBatchError::TickTaken(_)) => return Ok(Submitted::TickTaken),
        Err(source) => {
            return Err(SubmitError::Rejected {
                path: shown,
                source,
            });
        }
    };
    if !needs_approval && !opts.no_enqueue {
        let ids = store.batch_workable_items(batch).await?;
        queue.push(&ids, None).await?;
    }
    Ok(Submitted::New {
        batch,
        summary,
        awaiting_approval: needs_approval,
    })
}

enum CountError {
    Intake(IntakeError),
    Store(StoreError),
}

/// Rows with no Dots user whose payee payrun does not know: who would be onboarded.
async fn count_new_payees(store: &Store, path: &Path) -> Result<u64, CountError> {
    let file = File::open(path).map_err(|e| CountError::Intake(IntakeError::Io(e)))?;
    let mut reader = RowReader::new(BufReader::new(file)).map_err(CountError::Intake)?;
    let (mut candidates, mut new) = (Vec::new(), 0u64);
    loop {
        let row = reader.next_row();
        if let Some(Ok(r)) = &row
            && r.dots_user_id.is_none()
        {
            candidates.push(r.payee_id.clone());
        }
        if candidates.len() >= 500 || (row.is_none() && !candidates.is_empty()) {
            let known = store
                .count_known_payees(&candidates)
                .await
                .map_err(CountError::Store)?;
            new += candidates.len() as u64 - known as u64;
            candidates.clear();
        }
        if row.is_none() {
            return Ok(new);
        }
    }
}

/// Pass two: rows again, then a final check that the bytes hashed the same as in pass one.
struct PassTwo<R: std::io::Read> {
    reader: RowReader<R>,
    hasher: Arc<Mutex<Sha256>>,
    expected: String,
    done: bool,
}

impl<R: std::io::Read> Iterator for PassTwo<R> {
    type Item = Result<Row, String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.reader.next_row() {
            Some(Ok(row)) => Some(Ok(row)),
            Some(Err(e)) => {
                self.done = true;
                Some(Err(format!("row changed: {e:?}")))
            }
            None => {
                self.done = true;
                let h = std::mem::take(&mut *self.hasher.lock().expect("hasher lock"));
                let got = hex::encode(h.finalize());
                (got != self.expected).then(|| Err("content hash changed".to_string()))
            }
        }
    }
}

struct Tee<R> {
    inner: R,
    hasher: Arc<Mutex<Sha256>>,
}

impl<R: std::io::Read> std::io::Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.lock().expect("hasher lock").update(&buf[..n]);
        Ok(n)
    }
}
