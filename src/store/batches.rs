//! Batches: creation (all items in one transaction, streamed in bulk), duplicate detection by content hash
//! (decided by the unique `identity_hash`, so concurrent submits of one file make one batch),
//! listing and per-state counts.

use sqlx::Row as _;

use super::bulk::{BulkError, BulkItems};
use super::outbox::insert_outbox_row;
use super::outbox_batch::{
    BATCH_EVENT_COLUMNS, BatchEventRow, Why, batch_event_rows, batch_event_update,
};
use super::{Pool, Store, StoreError, now_ms, on_pool};
use crate::batch::BatchId;
use crate::batch::{Row, RowError};
use crate::events::EventType;
use crate::item::ItemState;

/// PostgreSQL: a batch of at least this many rows is followed by `ANALYZE items`. Until
/// autovacuum gets to a freshly loaded table its statistics say it is empty, and the planner
/// then reads every pending item of the table for each chunk's `UPDATE … FROM (VALUES …)`
/// (measured: 200 ms per chunk of 500 with 400,000 items loaded; batch mode fell with the
/// batch's size). A bulk load followed by `ANALYZE` is PostgreSQL's own advice.
const ANALYZE_AFTER_ROWS: i64 = 10_000;

/// A batch about to be stored.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub source: String,
    /// Store it even if a batch was already stored from the same bytes.
    pub allow_duplicate: bool,
    /// A batch totalling more is stored but not worked until approved (0: no threshold).
    pub approval_threshold_cents: i64,
    /// The schedule tick that made it: at most one batch per (schedule, tick).
    pub tick: Option<Tick>,
}

/// A batch's rows as the store reads them: every row, then the content hash of what was read
/// (which names the file for duplicate detection).
pub trait BatchRows: Iterator<Item = Result<Row, String>> + Send {
    /// Called once, after the last row.
    fn content_hash(&mut self) -> String;
}

/// What [`Store::create_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(StoredBatch),
    /// The same bytes were stored before as this batch; nothing new was stored.
    Existing(BatchId),
}

/// One firing of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    pub schedule: String,
    /// Unix ms of the scheduled time (not of when a worker noticed it).
    pub at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateBatchError {
    #[error("{} row(s) name a payee with no Dots user and no contact details; nothing was stored:\n{}", .0.len(), crate::batch::grouped::render_grouped(.0))]
    UnknownPayees(Vec<RowError>),
    #[error("schedule {} tick {} already made its batch", .0.schedule, .0.at)]
    TickTaken(Tick),
    #[error("intake aborted, nothing was stored: {0}")]
    Aborted(String),
    /// The database refused a row (a payee twice in one file); nothing was stored.
    #[error("a row was refused, nothing was stored: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A batch just stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub id: BatchId,
    pub items: i64,
    pub total_cents: i64,
    pub awaiting_approval: bool,
    pub content_hash: String,
    /// Rows that named a payee by id alone (no Dots user id, no contact details).
    pub needing_known_payee: i64,
}

/// A batch as stored, parsed: its status, and whether an operator paused it or a shared
/// condition holds it (`batch::Hold`).
#[derive(Debug, Clone)]
pub struct BatchRecord {
    pub id: String,
    pub status: crate::batch::BatchState,
    pub schedule: Option<String>,
    pub source: String,
    pub content_hash: String,
    pub item_count: i64,
    pub total_cents: i64,
    pub created_at: i64,
    /// When an operator paused it (`payrun pause`); `None`: not paused.
    pub paused_at: Option<i64>,
    pub hold: Option<crate::batch::Hold>,
}

/// The columns every read of a batch selects, in [`BatchRow`]'s order (a macro, so queries are
/// `concat!`ed static strings).
macro_rules! batch_columns {
    () => {
        "id, status, schedule, source, content_hash, item_count, total_cents, created_at, \
         paused_at, hold_reason, hold_detail, hold_since, funds_needed_cents, hold_from_line"
    };
}
pub(super) use batch_columns;

/// A `batches` row as the driver reads it; parsed into a [`BatchRecord`] at once.
#[derive(sqlx::FromRow)]
pub(super) struct BatchRow {
    id: String,
    status: String,
    schedule: Option<String>,
    source: String,
    content_hash: String,
    item_count: i64,
    total_cents: i64,
    created_at: i64,
    paused_at: Option<i64>,
    hold_reason: Option<String>,
    hold_detail: Option<String>,
    hold_since: Option<i64>,
    funds_needed_cents: Option<i64>,
    hold_from_line: Option<i64>,
}

impl TryFrom<BatchRow> for BatchRecord {
    type Error = StoreError;
    fn try_from(r: BatchRow) -> Result<BatchRecord, StoreError> {
        let corrupt =
            |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("batch {}: {e}", r.id));
        let status = r.status.parse().map_err(|e| corrupt(&e))?;
        let hold = match r.hold_reason.as_deref() {
            None => None,
            Some(reason) => Some(crate::batch::Hold {
                reason: reason.parse().map_err(|e| corrupt(&e))?,
                detail: r.hold_detail.clone().unwrap_or_default(),
                since: r.hold_since.unwrap_or(r.created_at),
                funds_needed_cents: r.funds_needed_cents,
                from_line: r.hold_from_line,
            }),
        };
        Ok(BatchRecord {
            id: r.id,
            status,
            schedule: r.schedule,
            source: r.source,
            content_hash: r.content_hash,
            item_count: r.item_count,
            total_cents: r.total_cents,
            created_at: r.created_at,
            paused_at: r.paused_at,
            hold,
        })
    }
}

/// Items of one batch in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    pub state: ItemState,
    pub count: i64,
    pub cents: i64,
}

impl Store {
    /// The newest batch stored from a file with this content hash.
    pub async fn find_batch_by_hash(&self, hash: &str) -> Result<Option<BatchId>, StoreError> {
        let id: Option<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT id FROM batches WHERE content_hash = $1 ORDER BY created_at DESC LIMIT 1")
            .bind(hash).fetch_optional(p).await?);
        id.map(|s| s.parse().map_err(|e| StoreError::Corrupt(format!("{e}"))))
            .transpose()
    }

    /// Stores a batch and every row as a `pending` item, in one transaction, streaming the
    /// rows in bulk (see `store::bulk`). A row with neither a Dots user id nor contact details
    /// must name a payee the store already knows; if any does not, the transaction is rolled
    /// back and every such row is reported. The batch awaits approval when its total is over
    /// `approval_threshold_cents` (0: never).
    pub async fn create_batch<R: BatchRows>(
        &self,
        new: &NewBatch,
        mut rows: R,
    ) -> Result<Created, CreateBatchError> {
        let id = BatchId::new_random();
        let now = now_ms();
        let res: Result<Result<Created, CreateBatchError>, StoreError> = on_pool!(&self.pool, p => async {
            let mut tx = p.begin().await?;
            if let Some(t) = &new.tick {
                // First, so a second worker on the same tick stops here (unique key).
                let taken = sqlx::query("INSERT INTO schedule_ticks (schedule, tick_at, batch_id, note, created_at)
                                         VALUES ($1, $2, $3, 'batch', $4) ON CONFLICT DO NOTHING")
                    .bind(&t.schedule).bind(t.at).bind(id.to_string()).bind(now)
                    .execute(&mut *tx).await?.rows_affected() == 0;
                if taken {
                    tx.rollback().await?;
                    return Ok(Err(CreateBatchError::TickTaken(t.clone())));
                }
            }
            // Inserted as awaiting approval and approved at the end if under the threshold:
            // the total is only known once every row is in.
            sqlx::query("INSERT INTO batches (id, source, content_hash, item_count, total_cents, created_at, status, schedule)
                         VALUES ($1, $2, '', 0, 1, $3, 'awaiting_approval', $4)")
                .bind(id.to_string()).bind(&new.source).bind(now)
                .bind(new.tick.as_ref().map(|t| t.schedule.clone()))
                .execute(&mut *tx).await?;
            let written = match (*tx).insert_items(id, now, &mut rows).await {
                Ok(w) => w,
                Err(e) => {
                    tx.rollback().await?;
                    return match e {
                        BulkError::Source(e) => Ok(Err(CreateBatchError::Aborted(e))),
                        BulkError::Duplicate(e) => Ok(Err(CreateBatchError::Refused(e))),
                        BulkError::Store(e) => Err(e),
                    };
                }
            };
            if written.rows == 0 {
                tx.rollback().await?;
                return Ok(Err(CreateBatchError::Aborted("the file has no rows".into())));
            }
            let hash = rows.content_hash();
            if !new.allow_duplicate {
                let before: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM batches WHERE content_hash = $1 ORDER BY created_at DESC LIMIT 1")
                    .bind(&hash).fetch_optional(&mut *tx).await?;
                if let Some(b) = before {
                    tx.rollback().await?;
                    let b = b.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?;
                    return Ok(Ok(Created::Existing(b)));
                }
            }
            if written.needing_known_payee > 0 {
                // Fill in Dots users already known from earlier batches.
                sqlx::query("UPDATE items SET dots_user_id =
                        (SELECT dots_user_id FROM payees WHERE payees.payee_id = items.payee_id)
                     WHERE batch_id = $1 AND dots_user_id IS NULL
                       AND EXISTS (SELECT 1 FROM payees WHERE payees.payee_id = items.payee_id)")
                    .bind(id.to_string()).execute(&mut *tx).await?;
                let unknown = sqlx::query("SELECT line, payee_id FROM items
                     WHERE batch_id = $1 AND dots_user_id IS NULL AND first_name IS NULL
                     ORDER BY line LIMIT 1000")
                    .bind(id.to_string()).fetch_all(&mut *tx).await?;
                if !unknown.is_empty() {
                    tx.rollback().await?;
                    let errs = unknown.iter().map(|r| RowError {
                        line: r.get::<i64, _>(0) as u64,
                        column: "dots_user_id".into(),
                        reason: format!("payee {:?} has no known Dots user: give dots_user_id or first_name, last_name, email, country_code and phone_number", crate::batch::clip(&r.get::<String, _>(1))),
                    }).collect();
                    return Ok(Err(CreateBatchError::UnknownPayees(errs)));
                }
            }
            let awaiting = new.approval_threshold_cents > 0 && written.total_cents > new.approval_threshold_cents;
            let status = if awaiting { "awaiting_approval" } else { "approved" };
            // The file's identity (see `identity_hash` in the migrations): unique, so of two
            // transactions storing the same bytes the database lets one through. PostgreSQL
            // makes the second wait here for the first to commit, then refuses it; SQLite's
            // single writer means the check above already saw the first.
            let identity = (!new.allow_duplicate).then(|| hash.clone());
            // batch.created, and batch.approved when it needs no approval: versions 1 (and 2).
            let kinds: &[EventType] = if awaiting { &[EventType::BatchCreated] } else { &[EventType::BatchCreated, EventType::BatchApproved] };
            let set = sqlx::query("UPDATE batches SET item_count = $1, total_cents = $2, status = $3, content_hash = $4, identity_hash = $5, event_version = $7 WHERE id = $6")
                .bind(written.rows).bind(written.total_cents).bind(status).bind(&hash).bind(&identity).bind(id.to_string())
                .bind(kinds.len() as i64)
                .execute(&mut *tx).await;
            match set {
                Ok(_) => {}
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    // The transaction is aborted (PostgreSQL): drop it, then read the winner.
                    tx.rollback().await?;
                    let winner: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM batches WHERE identity_hash = $1")
                        .bind(&hash).fetch_optional(p).await?;
                    let winner = winner.ok_or_else(|| StoreError::Corrupt(
                        "a batch's identity was taken, but no batch holds it".into()))?;
                    let b = winner.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?;
                    return Ok(Ok(Created::Existing(b)));
                }
                Err(e) => return Err(e.into()),
            }
            let row = BatchEventRow { id: id.to_string(), status: status.to_owned(), event_version: kinds.len() as i64, item_count: written.rows, total_cents: written.total_cents, hold_reason: None, hold_detail: None };
            for e in batch_event_rows(&row, kinds, Why::None, now) {
                insert_outbox_row!(&mut *tx, e);
            }
            tx.commit().await?;
            Ok(Ok(Created::New(StoredBatch { id, items: written.rows, total_cents: written.total_cents, awaiting_approval: awaiting, content_hash: hash, needing_known_payee: written.needing_known_payee })))
        }.await);
        let created = res??;
        if let Created::New(b) = &created
            && b.items >= ANALYZE_AFTER_ROWS
            && let Pool::Postgres(p) = &self.pool
            && let Err(e) = sqlx::query("ANALYZE items").execute(p).await
        {
            tracing::warn!(batch_id = %b.id, error = %e, "ANALYZE items after a large intake failed");
        }
        Ok(created)
    }

    /// How many of `payee_ids` already have a known Dots user.
    pub async fn count_known_payees(&self, payee_ids: &[String]) -> Result<i64, StoreError> {
        let mut known = 0;
        for chunk in payee_ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT COUNT(*) FROM payees WHERE payee_id IN ({})",
                marks.join(", ")
            );
            known += on_pool!(&self.pool, p => {
                let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone()));
                for id in chunk {
                    q = q.bind(id);
                }
                q.fetch_one(p).await?
            });
        }
        Ok(known)
    }

    /// Records a tick that made no batch (nothing to pay), so catch-up knows it ran. Returns
    /// false if the tick was already recorded.
    pub async fn record_tick(&self, tick: &Tick, note: &str) -> Result<bool, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query(
            "INSERT INTO schedule_ticks (schedule, tick_at, batch_id, note, created_at)
             VALUES ($1, $2, NULL, $3, $4) ON CONFLICT DO NOTHING")
            .bind(&tick.schedule).bind(tick.at).bind(note).bind(now_ms())
            .execute(p).await?.rows_affected() == 1))
    }

    /// The latest recorded tick of a schedule (unix ms).
    pub async fn last_tick(&self, schedule: &str) -> Result<Option<i64>, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT MAX(tick_at) FROM schedule_ticks WHERE schedule = $1")
            .bind(schedule).fetch_one(p).await?))
    }

    /// The batch a tick made, if any.
    pub async fn tick_batch(&self, tick: &Tick) -> Result<Option<String>, StoreError> {
        let row: Option<Option<String>> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT batch_id FROM schedule_ticks WHERE schedule = $1 AND tick_at = $2")
            .bind(&tick.schedule).bind(tick.at).fetch_optional(p).await?);
        Ok(row.flatten())
    }

    /// awaiting_approval -> approved. `Ok(false)`: it was not awaiting approval.
    pub async fn approve_batch(&self, id: BatchId) -> Result<bool, StoreError> {
        let now = now_ms();
        let sql = format!("UPDATE batches SET status = 'approved', approved_at = $1, event_version = event_version + 1
             WHERE id = $2 AND status = 'awaiting_approval' RETURNING {BATCH_EVENT_COLUMNS}");
        Ok(on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let rows = batch_event_update!(&mut *tx, sql.clone(), [now, id.to_string()],
                EventType::BatchApproved, Why::None, now);
            tx.commit().await?;
            rows.len() == 1
        }))
    }

    /// Marks a batch canceled (its items are canceled one by one by the caller).
    /// A batch canceled already is left alone (no second `batch.canceled`).
    pub async fn cancel_batch_record(&self, id: BatchId) -> Result<(), StoreError> {
        let now = now_ms();
        let sql = format!(
            "UPDATE batches SET status = 'canceled', event_version = event_version + 1
             WHERE id = $1 AND status <> 'canceled' RETURNING {BATCH_EVENT_COLUMNS}"
        );
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            batch_event_update!(&mut *tx, sql.clone(), [id.to_string()],
                EventType::BatchCanceled, Why::None, now);
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn batch(&self, id: BatchId) -> Result<Option<BatchRecord>, StoreError> {
        const SQL: &str = concat!("SELECT ", batch_columns!(), " FROM batches WHERE id = $1");
        let row: Option<BatchRow> = on_pool!(&self.pool, p => sqlx::query_as(SQL)
            .bind(id.to_string()).fetch_optional(p).await?);
        row.map(BatchRecord::try_from).transpose()
    }

    pub async fn list_batches(&self, limit: i64) -> Result<Vec<BatchRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            batch_columns!(),
            " FROM batches ORDER BY created_at DESC LIMIT $1"
        );
        let rows: Vec<BatchRow> = on_pool!(&self.pool, p => sqlx::query_as(SQL)
            .bind(limit).fetch_all(p).await?);
        rows.into_iter().map(BatchRecord::try_from).collect()
    }

    /// Items per state (with their cents) for one batch.
    pub async fn batch_counts(&self, id: BatchId) -> Result<Vec<StateCount>, StoreError> {
        let rows: Vec<(String, i64, i64)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT state, COUNT(*), CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM items
             WHERE batch_id = $1 GROUP BY state")
            .bind(id.to_string()).fetch_all(p).await?);
        rows.into_iter()
            .map(|(s, count, cents)| {
                let state = s.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))?;
                Ok(StateCount {
                    state,
                    count,
                    cents,
                })
            })
            .collect()
    }

    /// Items per state over every batch (for metrics).
    pub async fn state_totals(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT state, COUNT(*) FROM items GROUP BY state").fetch_all(p).await?))
    }

    /// When an item of the batch last changed (unix ms; 0 for an empty batch).
    pub async fn batch_last_update(&self, id: BatchId) -> Result<i64, StoreError> {
        let t: Option<i64> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT MAX(updated_at) FROM items WHERE batch_id = $1")
            .bind(id.to_string()).fetch_one(p).await?);
        Ok(t.unwrap_or(0))
    }

    /// True when every item of the batch is terminal or waiting on its payee.
    pub async fn batch_is_settled(&self, id: BatchId) -> Result<bool, StoreError> {
        Ok(self
            .batch_counts(id)
            .await?
            .iter()
            .all(|c| c.state.is_settled()))
    }
}
