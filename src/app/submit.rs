//! Submitting a CSV file as a batch: validate and store in one streaming pass (one
//! transaction), detect a resubmission by content hash, enqueue. A rejected file stores and
//! enqueues nothing, and gets every bad row named.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::batch::BatchId;
use crate::config::Limits;
use crate::intake::{self, IntakeError, Prefetch, Row, RowReader, Summary};
use crate::jobs::Queue;
use crate::jobs::feed::Window;
use crate::store::{BatchRows, CreateBatchError, Created, NewBatch, Store, StoreError, Tick};

#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub dry_run: bool,
    pub allow_duplicate: bool,
    pub limits: Limits,
    /// Set when a schedule tick makes the batch: at most one batch per tick.
    pub tick: Option<Tick>,
    /// What to record as the batch's source instead of the file path.
    pub source: Option<String>,
    /// Store only: hand nothing to the queue (the worker's feeder will).
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
    if opts.dry_run {
        let file = File::open(path).map_err(|e| invalid(IntakeError::Io(e)))?;
        let summary = intake::validate_with(BufReader::new(file), &opts.limits).map_err(invalid)?;
        if !opts.allow_duplicate
            && let Some(batch) = store.find_batch_by_hash(&summary.content_hash).await?
        {
            return Ok(Submitted::Existing { batch, summary });
        }
        let new_payees = count_new_payees(store, path).await.map_err(|e| match e {
            CountError::Intake(e) => invalid(e),
            CountError::Store(e) => SubmitError::Store(e),
        })?;
        return Ok(Submitted::DryRun {
            summary,
            new_payees,
        });
    }
    // One pass: rows stream into the store as they are validated and hashed. The first bad
    // row stops it and nothing is kept; only then is the file read again, by the full
    // validation, to name every bad row (it holds a set of payees, which the happy path
    // leaves to the database's unique index).
    let file = File::open(path).map_err(|e| invalid(IntakeError::Io(e)))?;
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let reader = RowReader::new(Tee {
        inner: file,
        hasher: hasher.clone(),
    })
    .map_err(invalid)?;
    let rows = Accepting {
        reader,
        hasher,
        limits: opts.limits,
        total: 0,
        stopped: false,
    };
    // Parsed and checked on a thread of its own while the store writes the rows before.
    let rows = if std::env::var("XP_NOPREFETCH").is_ok() {
        ReadAhead(None, Some(rows))
    } else {
        ReadAhead(Some(Prefetch::new(rows, READ_AHEAD_ROWS, READ_AHEAD_CHUNKS)), None)
    };
    let new = NewBatch {
        source: opts.source.clone().unwrap_or_else(|| shown.clone()),
        allow_duplicate: opts.allow_duplicate,
        approval_threshold_cents: opts.limits.approval_threshold_cents,
        tick: opts.tick.clone(),
    };
    let stored = match store.create_batch(&new, rows).await {
        Ok(Created::New(b)) => b,
        Ok(Created::Existing(batch)) => {
            let rec = store.batch(batch).await?;
            let summary = Summary {
                rows: rec.as_ref().map_or(0, |r| r.item_count as u64),
                total_cents: rec.as_ref().map_or(0, |r| r.total_cents),
                content_hash: rec.map(|r| r.content_hash).unwrap_or_default(),
                rows_needing_known_payee: 0,
            };
            return Ok(Submitted::Existing { batch, summary });
        }
        Err(CreateBatchError::TickTaken(_)) => return Ok(Submitted::TickTaken),
        Err(e @ (CreateBatchError::Aborted(_) | CreateBatchError::Refused(_))) => {
            let file = File::open(path).map_err(|e| invalid(IntakeError::Io(e)))?;
            intake::validate_with(BufReader::new(file), &opts.limits).map_err(invalid)?;
            // Valid now: it changed while it was being stored, or the database refused it.
            return Err(match e {
                CreateBatchError::Aborted(_) => SubmitError::Changed { path: shown },
                source => SubmitError::Rejected {
                    path: shown,
                    source,
                },
            });
        }
        Err(source) => {
            return Err(SubmitError::Rejected {
                path: shown,
                source,
            });
        }
    };
    let batch = stored.id;
    if !stored.awaiting_approval && !opts.no_enqueue {
        // The first window starts at once; the worker's feeder hands over the rest. The batch
        // is committed: a failure here (SQLite busy with a worker, say) delays nothing the
        // feeder will not do anyway, so it is no failure of the submit.
        if let Err(e) = crate::jobs::feed::top_up(store, queue, Window::default()).await {
            tracing::warn!(batch = %batch, error = %e,
                "batch stored; handing its first items to the queue failed, the worker's feeder will");
        }
    }
    Ok(Submitted::New {
        batch,
        summary: Summary {
            rows: stored.items as u64,
            total_cents: stored.total_cents,
            content_hash: stored.content_hash,
            rows_needing_known_payee: stored.needing_known_payee as u64,
        },
        awaiting_approval: stored.awaiting_approval,
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

/// The rows of an accepted file, checked against the limits as they go; stops at the first
/// problem (the caller then runs the full validation to name every one).
struct Accepting<R: std::io::Read> {
    reader: RowReader<R>,
    hasher: Arc<Mutex<Sha256>>,
    limits: Limits,
    total: i64,
    stopped: bool,
}

impl<R: std::io::Read> Iterator for Accepting<R> {
    type Item = Result<Row, String>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped {
            return None;
        }
        let res = match self.reader.next_row()? {
            Ok(row) => match intake::item_over_limit(&row, &self.limits) {
                Some(e) => Err(e.to_string()),
                None => {
                    self.total = self.total.saturating_add(row.amount.get());
                    match intake::total_over_limit(self.total, &self.limits) {
                        Some(e) => Err(e.to_string()),
                        None => Ok(row),
                    }
                }
            },
            Err(errors) => Err(errors
                .first()
                .map_or_else(|| "bad row".to_string(), |e| e.to_string())),
        };
        self.stopped = res.is_err();
        Some(res)
    }
}

impl<R: std::io::Read + Send> BatchRows for Accepting<R> {
    fn content_hash(&mut self) -> String {
        // The CSV reader has read to the end of the file: the hash covers every byte.
        let h = std::mem::take(&mut *self.hasher.lock().expect("hasher lock"));
        hex::encode(h.finalize())
    }
}

/// Rows handed over per chunk by the reading thread, and chunks it may be ahead (about a
/// megabyte of rows in all).
const READ_AHEAD_ROWS: usize = 1024;
const READ_AHEAD_CHUNKS: usize = 4;

/// The accepted rows, read ahead (see [`Prefetch`]).
struct ReadAhead<R: std::io::Read + Send + 'static>(Option<Prefetch<Accepting<R>>>, Option<Accepting<R>>);

impl<R: std::io::Read + Send + 'static> Iterator for ReadAhead<R> {
    type Item = Result<Row, String>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(a) = self.1.as_mut() { return a.next(); }
        self.0.as_mut()?.next()
    }
}

impl<R: std::io::Read + Send + 'static> BatchRows for ReadAhead<R> {
    fn content_hash(&mut self) -> String {
        // The reading thread has ended at the end of the file (it handed over the last row):
        // its hash covers every byte once it is joined.
        if let Some(a) = self.1.as_mut() { return a.content_hash(); }
        self.0
            .take()
            .map(|rows| rows.finish().content_hash())
            .unwrap_or_default()
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
