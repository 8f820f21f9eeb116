//! Batches: creation (all items in one transaction), duplicate detection by content hash,
//! listing and per-state counts.

use sqlx::Row as _;

use super::{Store, StoreError, now_ms, on_pool};
use crate::batch::{BatchId, ItemId};
use crate::intake::{Row, RowError};
use crate::item::ItemState;

/// A batch about to be stored.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub source: String,
    pub content_hash: String,
    /// Over the approval threshold: stored, but no item is worked until approved.
    pub needs_approval: bool,
    /// The schedule tick that made it: at most one batch per (schedule, tick).
    pub tick: Option<Tick>,
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
    #[error("{} row(s) name a payee with no Dots user and no contact details; nothing was stored:\n{}", .0.len(), .0.iter().take(50).map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    UnknownPayees(Vec<RowError>),
    #[error("schedule {} tick {} already made its batch", .0.schedule, .0.at)]
    TickTaken(Tick),
    #[error("intake aborted, nothing was stored: {0}")]
    Aborted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRecord {
    pub id: String,
    pub status: String,
    pub schedule: Option<String>,
    pub source: String,
    pub content_hash: String,
    pub item_count: i64,
    pub total_cents: i64,
    pub created_at: i64,
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

    /// Stores a batch and every row as a `pending` item, in one transaction. A row with neither
    /// a Dots user id nor contact details must name a payee the store already knows; if any
    /// does not, the transaction is rolled back and every such row is reported.
    pub async fn create_batch<I>(
        &self,
        new: &NewBatch,
        rows: I,
    ) -> Result<BatchId, CreateBatchError>
    where
        I: IntoIterator<Item = Result<Row, String>>,
        I::IntoIter: Send,
    {
        let id = BatchId::new_random();
        let now = now_ms();
        let res: Result<Result<BatchId, CreateBatchError>, StoreError> = on_pool!(&self.pool, p => async {
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
            let status = if new.needs_approval { "awaiting_approval" } else { "approved" };
            sqlx::query("INSERT INTO batches (id, source, content_hash, item_count, total_cents, created_at, status, schedule)
                         VALUES ($1, $2, $3, 0, 1, $4, $5, $6)")
                .bind(id.to_string()).bind(&new.source).bind(&new.content_hash).bind(now)
                .bind(status).bind(new.tick.as_ref().map(|t| t.schedule.clone()))
                .execute(&mut *tx).await?;
            let (mut count, mut total) = (0i64, 0i64);
            for row in rows {
                let row = match row {
                    Ok(r) => r,
                    Err(e) => {
                        tx.rollback().await?;
                        return Ok(Err(CreateBatchError::Aborted(e)));
                    }
                };
                let item = ItemId::derive(id, &row.payee_id);
                let c = row.contact.as_ref();
                sqlx::query("INSERT INTO items (id, batch_id, line, payee_id, amount_cents, memo,
                        first_name, last_name, email, country_code, phone_number, dots_user_id,
                        state, updated_at)
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,'pending',$13)")
                    .bind(item.to_string()).bind(id.to_string()).bind(row.line as i64)
                    .bind(&row.payee_id).bind(row.amount.get()).bind(&row.memo)
                    .bind(c.map(|c| c.first_name.clone())).bind(c.map(|c| c.last_name.clone()))
                    .bind(c.map(|c| c.email.clone())).bind(c.map(|c| c.country_code.clone()))
                    .bind(c.map(|c| c.phone_number.clone()))
                    .bind(row.dots_user_id.map(|u| u.to_string()))
                    .bind(now)
                    .execute(&mut *tx).await?;
                count += 1;
                total += row.amount.get();
            }
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
                    reason: format!("payee {:?} has no known Dots user: give dots_user_id or first_name, last_name, email, country_code and phone_number", r.get::<String, _>(1)),
                }).collect();
                return Ok(Err(CreateBatchError::UnknownPayees(errs)));
            }
            sqlx::query("UPDATE batches SET item_count = $1, total_cents = $2 WHERE id = $3")
                .bind(count).bind(total).bind(id.to_string()).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO item_events (item_id, at, kind, from_state, to_state, detail)
                 SELECT id, $1, 'state', NULL, 'pending', 'stored from ' || $2 FROM items WHERE batch_id = $3")
                .bind(now).bind(&new.source).bind(id.to_string()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Ok(id))
        }.await);
        res?
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
        Ok(on_pool!(&self.pool, p => sqlx::query(
            "UPDATE batches SET status = 'approved', approved_at = $1 WHERE id = $2 AND status = 'awaiting_approval'")
            .bind(now_ms()).bind(id.to_string()).execute(p).await?.rows_affected() == 1))
    }

    /// Marks a batch canceled (its items are canceled one by one by the caller).
    pub async fn cancel_batch_record(&self, id: BatchId) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query("UPDATE batches SET status = 'canceled' WHERE id = $1")
            .bind(id.to_string()).execute(p).await?; });
        Ok(())
    }

    pub async fn batch(&self, id: BatchId) -> Result<Option<BatchRecord>, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query_as::<_, BatchRecord>(
            "SELECT id, status, schedule, source, content_hash, item_count, total_cents, created_at FROM batches WHERE id = $1")
            .bind(id.to_string()).fetch_optional(p).await?))
    }

    pub async fn list_batches(&self, limit: i64) -> Result<Vec<BatchRecord>, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query_as::<_, BatchRecord>(
            "SELECT id, status, schedule, source, content_hash, item_count, total_cents, created_at FROM batches
             ORDER BY created_at DESC LIMIT $1")
            .bind(limit).fetch_all(p).await?))
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

    /// True when every item of the batch is terminal or waiting on its payee.
    pub async fn batch_is_settled(&self, id: BatchId) -> Result<bool, StoreError> {
        Ok(self
            .batch_counts(id)
            .await?
            .iter()
            .all(|c| c.state.is_settled()))
    }
}
