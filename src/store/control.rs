//! Batch control: an operator's pause and resume, and the set of batches whose items must not
//! start a Dots call now (`Store::blocked_batches`, which the item job caches: `jobs::gate`).
//!
//! Guarantees:
//! - pausing is idempotent: a paused batch keeps the `paused_at` of its first pause; a canceled
//!   batch, or one with no item left to work (every item completed, failed or canceled), is
//!   not paused (nothing would start);
//! - resuming is idempotent, and makes the batch's workable items that were already handed to
//!   the queue due now (`next_attempt_at`), so the feeder hands them over at its next round
//!   instead of after the backoff they built; items never handed over are past the batch's feed
//!   cursor, which the feeder walks again once the batch is not paused;
//! - the feeder (`store::feed`) never claims an item this module reports blocked, so a blocked
//!   item stays due (`next_attempt_at > 0`) and is claimed as soon as the block is lifted: no
//!   one has to "wake" it.

use std::collections::HashMap;

use super::feed::BeginWrite as _;
use super::outbox_batch::{BATCH_EVENT_COLUMNS, Why, batch_event_update};
use super::{Store, StoreError, on_pool};
use crate::batch::{BatchId, Hold, ItemId};
use crate::events::EventType;

/// Why a batch's items must not start a Dots call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// An operator paused the batch: none of its items starts a call.
    Paused,
    /// Held for insufficient funds: its items not yet transferred at or after `from_line`
    /// (every such item when `None`) start no call; the others (e.g. payout flows of items
    /// already paid) go on.
    Funds { from_line: Option<i64> },
}

/// The batches with a [`Block`]; any batch not in it is not blocked.
pub type Blocked = HashMap<BatchId, Block>;

/// What [`Store::pause_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseOutcome {
    /// Paused now, at this unix-ms time.
    Paused(i64),
    /// It was already paused (since this time); nothing changed.
    AlreadyPaused(i64),
    /// Canceled: there is nothing to pause.
    Canceled,
    /// Every item is completed, failed or canceled: there is nothing to pause.
    Finished,
}

/// What [`Store::resume_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Resumed; this many waiting items were made due now.
    Resumed { made_due: u64 },
    /// It was not paused; nothing changed.
    NotPaused,
}

/// The item states a job works (the feeder's `items_due` states).
const WORKABLE: &str = "('pending', 'transferring', 'transferred')";
/// The item states with nothing left to do for a batch (pause refuses such a batch).
const DONE: &str = "('completed', 'failed', 'canceled')";

impl Store {
    /// `payrun pause BATCH`. `Ok(None)`: no such batch.
    pub async fn pause_batch(
        &self,
        id: BatchId,
        now: i64,
    ) -> Result<Option<PauseOutcome>, StoreError> {
        let row: Option<(String, Option<i64>)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT status, paused_at FROM batches WHERE id = $1")
            .bind(id.to_string()).fetch_optional(p).await?);
        let Some((status, paused_at)) = row else {
            return Ok(None);
        };
        if let Some(at) = paused_at {
            return Ok(Some(PauseOutcome::AlreadyPaused(at)));
        }
        if status == "canceled" {
            return Ok(Some(PauseOutcome::Canceled));
        }
        // One statement decides, so a concurrent pause keeps the first one's time.
        let sql = format!(
            "UPDATE batches SET paused_at = $1, event_version = event_version + 1
             WHERE id = $2 AND paused_at IS NULL
               AND status <> 'canceled'
               AND EXISTS (SELECT 1 FROM items WHERE items.batch_id = batches.id
                           AND items.state NOT IN {DONE})
             RETURNING {BATCH_EVENT_COLUMNS}"
        );
        let set: usize = on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let rows = batch_event_update!(&mut *tx, sql.clone(), [now, id.to_string()],
                EventType::BatchHeld, Why::Paused, now);
            tx.commit().await?;
            rows.len()
        });
        if set == 1 {
            return Ok(Some(PauseOutcome::Paused(now)));
        }
        // The guard missed: paused meanwhile, canceled meanwhile, or nothing left to work.
        let again: Option<(String, Option<i64>)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT status, paused_at FROM batches WHERE id = $1")
            .bind(id.to_string()).fetch_optional(p).await?);
        Ok(Some(match again {
            Some((_, Some(at))) => PauseOutcome::AlreadyPaused(at),
            Some((s, None)) if s == "canceled" => PauseOutcome::Canceled,
            _ => PauseOutcome::Finished,
        }))
    }

    /// `payrun pause --all`: pauses every batch with an item left to work that is not paused
    /// yet (a batch submitted later is not paused). Returns the batches it paused.
    pub async fn pause_all(&self, now: i64) -> Result<Vec<BatchId>, StoreError> {
        let sql = format!(
            "UPDATE batches SET paused_at = $1, event_version = event_version + 1
             WHERE paused_at IS NULL AND status <> 'canceled'
               AND EXISTS (SELECT 1 FROM items WHERE items.batch_id = batches.id
                           AND items.state NOT IN {DONE})
             RETURNING {BATCH_EVENT_COLUMNS}"
        );
        let ids: Vec<String> = on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let rows = batch_event_update!(&mut *tx, sql.clone(), [now],
                EventType::BatchHeld, Why::Paused, now);
            tx.commit().await?;
            rows.into_iter().map(|r| r.id).collect()
        });
        parse_batch_ids(ids)
    }

    /// `payrun resume BATCH`. `Ok(None)`: no such batch.
    pub async fn resume_batch(
        &self,
        id: BatchId,
        now: i64,
    ) -> Result<Option<ResumeOutcome>, StoreError> {
        let res: Option<ResumeOutcome> = on_pool!(&self.pool, p => {
            let mut tx = p.begin_write().await?;
            let row: Option<(Option<i64>, i64)> = sqlx::query_as(
                "SELECT paused_at, fed_line FROM batches WHERE id = $1")
                .bind(id.to_string()).fetch_optional(&mut *tx).await?;
            match row {
                None => None,
                Some((None, _)) => Some(ResumeOutcome::NotPaused),
                Some((Some(_), fed_line)) => {
                    let sql = format!("UPDATE batches SET paused_at = NULL, event_version = event_version + 1
                         WHERE id = $1 AND paused_at IS NOT NULL RETURNING {BATCH_EVENT_COLUMNS}");
                    let cleared = batch_event_update!(&mut *tx, sql, [id.to_string()],
                        EventType::BatchResumed, Why::Paused, now.max(1)).len();
                    if cleared == 0 {
                        Some(ResumeOutcome::NotPaused)
                    } else {
                        // Items already handed over once lie up to the feed cursor (a key
                        // range of the primary key); the rest are fed along the cursor.
                        let lo = ItemId::for_line(id, 0).to_string();
                        let hi = ItemId::for_line(id, fed_line.max(0) as u64).to_string();
                        let sql = format!(
                            "UPDATE items SET next_attempt_at = $1
                             WHERE id > $2 AND id <= $3 AND state IN {WORKABLE}
                               AND next_attempt_at > $1");
                        let made_due = sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(now.max(1)).bind(&lo).bind(&hi)
                            .execute(&mut *tx).await?.rows_affected();
                        tx.commit().await?;
                        Some(ResumeOutcome::Resumed { made_due })
                    }
                }
            }
        });
        Ok(res)
    }

    /// `payrun resume --all`: resumes every paused batch. Returns the batches it resumed.
    pub async fn resume_all(&self, now: i64) -> Result<Vec<BatchId>, StoreError> {
        let ids: Vec<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT id FROM batches WHERE paused_at IS NOT NULL ORDER BY created_at")
            .fetch_all(p).await?);
        let mut resumed = Vec::new();
        for id in parse_batch_ids(ids)? {
            if let Some(ResumeOutcome::Resumed { .. }) = self.resume_batch(id, now).await? {
                resumed.push(id);
            }
        }
        Ok(resumed)
    }

    /// The batches whose items must not start a Dots call now: paused ones, and ones held for
    /// insufficient funds (see [`Block`]). One small read (index `batches_blocked`); the item
    /// job caches it for `worker.feed_ms`.
    pub async fn blocked_batches(&self) -> Result<Blocked, StoreError> {
        let rows: Vec<(String, Option<i64>, Option<i64>)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT id, paused_at, hold_from_line FROM batches
             WHERE (paused_at IS NOT NULL OR hold_reason = 'insufficient_funds')")
            .fetch_all(p).await?);
        rows.into_iter()
            .map(|(id, paused_at, from_line)| {
                let id: BatchId = id
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("batch id: {e}")))?;
                let block = match paused_at {
                    Some(_) => Block::Paused,
                    None => Block::Funds { from_line },
                };
                Ok((id, block))
            })
            .collect()
    }

    /// Sets (or replaces) a batch's hold. Tests and one-off tools use it; the circuits and the
    /// funding pre-flight write holds over many batches at once with their own statements.
    pub async fn set_hold(&self, id: BatchId, hold: &Hold) -> Result<bool, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query(
            "UPDATE batches SET hold_reason = $1, hold_detail = $2, hold_since = $3,
                    funds_needed_cents = $4, hold_from_line = $5 WHERE id = $6")
            .bind(hold.reason.as_str()).bind(&hold.detail).bind(hold.since)
            .bind(hold.funds_needed_cents).bind(hold.from_line).bind(id.to_string())
            .execute(p).await?.rows_affected() == 1))
    }

    /// Lifts a batch's hold (whatever its reason). Its blocked items are still due, so the
    /// feeder hands them over at its next round. `Ok(false)`: it was not held.
    pub async fn clear_hold(&self, id: BatchId) -> Result<bool, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query(
            "UPDATE batches SET hold_reason = NULL, hold_detail = NULL, hold_since = NULL,
                    funds_needed_cents = NULL, hold_from_line = NULL
             WHERE id = $1 AND hold_reason IS NOT NULL")
            .bind(id.to_string()).execute(p).await?.rows_affected() == 1))
    }
}

fn parse_batch_ids(ids: Vec<String>) -> Result<Vec<BatchId>, StoreError> {
    ids.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| StoreError::Corrupt(format!("batch id: {e}")))
        })
        .collect()
}
