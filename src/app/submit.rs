//! Submitting a CSV file as a batch: validate (pass one), detect a resubmission by content
//! hash, store (pass two, one transaction), enqueue. A rejected file stores and enqueues nothing.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::batch::BatchId;
use crate::intake::{self, IntakeError, Row, RowReader, Summary};
use crate::jobs::Queue;
use crate::store::{CreateBatchError, NewBatch, Store, StoreError};

#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub dry_run: bool,
    pub allow_duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Stored and enqueued.
    New { batch: BatchId, summary: Summary },
    /// The same file was submitted before: the existing batch, nothing new stored.
    Existing { batch: BatchId, summary: Summary },
    /// Validated only.
    DryRun { summary: Summary },
}

impl Submitted {
    pub fn batch(&self) -> Option<BatchId> {
        match self {
            Submitted::New { batch, .. } | Submitted::Existing { batch, .. } => Some(*batch),
            Submitted::DryRun { .. } => None,
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
    let summary = intake::validate(BufReader::new(file)).map_err(invalid)?;
    if !opts.allow_duplicate
        && let Some(batch) = store.find_batch_by_hash(&summary.content_hash).await?
    {
        return Ok(Submitted::Existing { batch, summary });
    }
    if opts.dry_run {
        return Ok(Submitted::DryRun { summary });
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
    let new = NewBatch {
        source: shown.clone(),
        content_hash: summary.content_hash.clone(),
    };
    let batch = match store.create_batch(&new, rows).await {
        Ok(b) => b,
        Err(CreateBatchError::Aborted(_)) => return Err(SubmitError::Changed { path: shown }),
        Err(source) => {
            return Err(SubmitError::Rejected {
                path: shown,
                source,
            });
        }
    };
    let ids = store.batch_workable_items(batch).await?;
    queue.push(&ids, None).await?;
    Ok(Submitted::New { batch, summary })
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
