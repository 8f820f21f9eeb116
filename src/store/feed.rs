//! The feed: which items to hand to the job queue now. The items table is the backlog; the
//! queue only ever holds a small window of it (see `jobs::feed`).
//!
//! Guarantees:
//! - an item is claimed for the queue by one feeder at a time: claiming sets `queued_until`,
//!   and a claim is only taken where `queued_until` has passed (PostgreSQL skips rows another
//!   feeder has locked);
//! - every workable item of an approved batch is eventually claimed: either it has
//!   `next_attempt_at > 0` and `items_due` finds it once that time comes, its lease is free and
//!   its claim has lapsed (a job lost with its worker is thus replaced after `ttl_ms`), or it
//!   was never claimed (`next_attempt_at = 0`, only ever `pending`) and lies past its batch's
//!   cursor `fed_line`, which the feed walks along the primary key (ids sort by line);
//! - no item of a paused batch is claimed, nor an item a funds hold blocks (not yet
//!   transferred, at or after `hold_from_line`; see `store::control`): a blocked item that is
//!   due stays due, and its batch's cursor does not move past a funds hold's first line, so
//!   both are claimed once the block is lifted.

use std::future::Future;

use super::{Pool, Store, StoreError, on_pool};
use crate::batch::{BatchId, ItemId};

/// `batches.fed_line` of a batch whose every line has been claimed once.
pub(super) const FED_ALL: i64 = i64::MAX;

/// A transaction that reads, then writes. On SQLite it starts `BEGIN IMMEDIATE`, holding the
/// write lock from the start: a deferred transaction that has read cannot wait for the lock
/// (the busy timeout does not apply to a read -> write upgrade), so a commit by another
/// connection between its read and its write fails it at once with "database is locked".
/// PostgreSQL's row locks need nothing special.
pub(super) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send + '_;
}

impl BeginWrite for sqlx::SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send + '_
    {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for sqlx::PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send + '_
    {
        self.begin()
    }
}

impl Store {
    /// Claims up to `limit` items for the queue until `now + ttl_ms`: items due again first
    /// (retries, items moved back to work), then never-claimed items of approved batches in
    /// file order.
    pub async fn claim_for_queue(
        &self,
        now: i64,
        ttl_ms: i64,
        limit: i64,
    ) -> Result<Vec<ItemId>, StoreError> {
        self.claim_for_queue_as(now, ttl_ms, limit, false).await
    }

    /// [`Store::claim_for_queue`] of a worker in batch mode (`chunked`): items whose first
    /// transfer the chunker sends (pending, a Dots user known, no key) are left to it
    /// (`store::chunks`), and so is the walk along the batches' cursors, which the chunker
    /// makes itself (it hands what it does not send to the feed as due).
    pub async fn claim_for_queue_as(
        &self,
        now: i64,
        ttl_ms: i64,
        limit: i64,
        chunked: bool,
    ) -> Result<Vec<ItemId>, StoreError> {
        let mut ids = self.claim_due(now, ttl_ms, limit, chunked).await?;
        let mut left = limit - ids.len() as i64;
        if left > 0 && !chunked {
            // Paused batches are skipped, and a funds-held one is fed only up to the line
            // before its hold (`upto`; all of it is held when `hold_from_line` is NULL).
            let batches: Vec<(String, i64, Option<i64>)> = on_pool!(&self.pool, p => sqlx::query_as(
                "SELECT id, fed_line, CASE WHEN hold_reason = 'insufficient_funds'
                                           THEN COALESCE(hold_from_line, 0) - 1 END
                 FROM batches WHERE status = 'approved' AND fed_line < $1 AND paused_at IS NULL
                   AND (hold_reason IS NULL OR hold_reason <> 'insufficient_funds'
                        OR fed_line < COALESCE(hold_from_line, 0) - 1)
                 ORDER BY created_at LIMIT 20")
                .bind(FED_ALL).fetch_all(p).await?);
            for (batch, fed_line, upto) in batches {
                if left <= 0 {
                    break;
                }
                let batch: BatchId = batch
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("{e}")))?;
                let got = self
                    .claim_fresh(batch, fed_line, upto, now, ttl_ms, left)
                    .await?;
                left -= got.len() as i64;
                ids.extend(got);
            }
        }
        Ok(ids)
    }

    async fn claim_due(
        &self,
        now: i64,
        ttl_ms: i64,
        limit: i64,
        chunked: bool,
    ) -> Result<Vec<ItemId>, StoreError> {
        // Batch mode: the chunker's items (see `store::chunks`).
        let chunkers = if chunked {
            " AND NOT (state = 'pending' AND transfer_key IS NULL AND transfer_id IS NULL
                   AND (dots_user_id IS NOT NULL
                        OR EXISTS (SELECT 1 FROM payees p WHERE p.payee_id = items.payee_id)))"
        } else {
            ""
        };
        const DUE: &str = "SELECT id FROM items
             WHERE state IN ('pending', 'transferring', 'transferred')
               AND next_attempt_at > 0 AND next_attempt_at <= $1
               AND queued_until < $1 AND lease_until < $1
               AND batch_id IN (SELECT id FROM batches WHERE status = 'approved'
                                AND paused_at IS NULL)
               AND NOT EXISTS (SELECT 1 FROM batches h WHERE h.id = items.batch_id
                               AND h.hold_reason = 'insufficient_funds'
                               AND items.state <> 'transferred'
                               AND items.line >= COALESCE(h.hold_from_line, 0))
               {CHUNKERS}
             ORDER BY next_attempt_at LIMIT $3";
        let ids: Vec<String> = match &self.pool {
            Pool::Postgres(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "UPDATE items SET queued_until = $2 WHERE id IN ({} FOR UPDATE SKIP LOCKED)
                 RETURNING id",
                    DUE.replace("{CHUNKERS}", chunkers)
                )))
                .bind(now)
                .bind(now + ttl_ms)
                .bind(limit)
                .fetch_all(p)
                .await?
            }
            // One writer at a time: the select and the update cannot interleave with another.
            Pool::Sqlite(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "UPDATE items SET queued_until = $2 WHERE id IN ({}) RETURNING id",
                    DUE.replace("{CHUNKERS}", chunkers)
                )))
                .bind(now)
                .bind(now + ttl_ms)
                .bind(limit)
                .fetch_all(p)
                .await?
            }
        };
        parse_ids(ids)
    }

    /// The next never-claimed items of `batch` after line `fed_line` (up to line `upto`, if
    /// given), claimed, with the cursor moved past them in the same transaction.
    async fn claim_fresh(
        &self,
        batch: BatchId,
        fed_line: i64,
        upto: Option<i64>,
        now: i64,
        ttl_ms: i64,
        limit: i64,
    ) -> Result<Vec<ItemId>, StoreError> {
        if upto.is_some_and(|u| u <= fed_line) {
            return Ok(Vec::new());
        }
        let lo = ItemId::for_line(batch, fed_line.max(0) as u64).to_string();
        let hi = ItemId::for_line(batch, upto.map_or(u64::MAX, |u| u as u64)).to_string();
        let claimed: Option<Vec<String>> = on_pool!(&self.pool, p => {
            let mut tx = p.begin_write().await?;
            // The primary key walks the batch in line order.
            let range: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM items WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3")
                .bind(&lo).bind(&hi).bind(limit).fetch_all(&mut *tx).await?;
            let next_line = match range.last() {
                // Every line up to the hold is claimed: the cursor waits there.
                _ if (range.len() as i64) < limit => upto.unwrap_or(FED_ALL),
                Some(last) => last_line(last, batch)?,
                None => FED_ALL,
            };
            let moved = sqlx::query("UPDATE batches SET fed_line = $1 WHERE id = $2 AND fed_line = $3")
                .bind(next_line).bind(batch.to_string()).bind(fed_line)
                .execute(&mut *tx).await?.rows_affected();
            if moved == 0 {
                // Another feeder moved the cursor first: it claims these.
                tx.rollback().await?;
                None
            } else if let Some(last) = range.last() {
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE items SET next_attempt_at = $1, queued_until = $2
                     WHERE id > $3 AND id <= $4 AND state = 'pending' AND next_attempt_at = 0
                     RETURNING id")
                    .bind(now).bind(now + ttl_ms).bind(&lo).bind(last)
                    .fetch_all(&mut *tx).await?;
                tx.commit().await?;
                Some(ids)
            } else {
                tx.commit().await?;
                Some(Vec::new())
            }
        });
        parse_ids(claimed.unwrap_or_default())
    }
}

fn last_line(id: &str, batch: BatchId) -> Result<i64, StoreError> {
    let id: ItemId = id
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{e}")))?;
    id.line_in(batch)
        .map(|l| l as i64)
        .ok_or_else(|| StoreError::Corrupt(format!("item {id} is not of batch {batch}")))
}

fn parse_ids(ids: Vec<String>) -> Result<Vec<ItemId>, StoreError> {
    ids.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| StoreError::Corrupt(format!("item id: {e}")))
        })
        .collect()
}

impl Store {
    /// Puts a workable item off until `at` (a job failed on something other than Dots, e.g.
    /// the database): the feed hands it over again then, not at once.
    pub async fn defer_item(&self, id: ItemId, at: i64) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE items SET next_attempt_at = $1, queued_until = 0
             WHERE id = $2 AND state IN ('pending', 'transferring', 'transferred')")
            .bind(at.max(1)).bind(id.to_string()).execute(p).await?; });
        Ok(())
    }

    /// Hands back to the feed an item whose job found it leased by another worker: its claim
    /// ends now and it is due at `at` (the lease's end) unless it was due later already. The
    /// holder may be dead: without this the item waited for its claim (`claim_secs`) to lapse,
    /// long after the lease had. A live holder that releases first loses nothing: its own next
    /// attempt time stands when it is the later one.
    pub async fn hand_back_busy(&self, id: ItemId, at: i64) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE items SET queued_until = 0,
                    next_attempt_at = CASE WHEN next_attempt_at < $1 THEN $1 ELSE next_attempt_at END
             WHERE id = $2 AND state IN ('pending', 'transferring', 'transferred')")
            .bind(at.max(1)).bind(id.to_string()).execute(p).await?; });
        Ok(())
    }

    /// Lets lapse now every claim for the queue that no queued job stands behind, on an item
    /// no one holds: at start-up, so items a crashed worker (or one stopped by its watchdog,
    /// e.g. after a full disk refused the jobs it had just claimed items for) left claimed are
    /// fed at once instead of after `claim_secs`. A live feeder's claim whose job is not pushed
    /// yet may be dropped too: its item is then fed twice, which is harmless (a job is only a
    /// nudge; the lease decides who works it). Returns how many claims it dropped.
    pub async fn drop_claims_without_job(&self, now: i64) -> Result<u64, StoreError> {
        let q = super::ITEM_QUEUE;
        Ok(match &self.pool {
            Pool::Sqlite(p) => sqlx::query(
                "UPDATE items SET queued_until = 0
                 WHERE queued_until >= $1 AND lease_until < $1
                   AND id NOT IN (SELECT json_extract(CAST(job AS TEXT), '$.item_id') FROM Jobs
                                  WHERE job_type = $2 AND status IN ('Pending', 'Queued'))",
            )
            .bind(now)
            .bind(q)
            .execute(p)
            .await?
            .rows_affected(),
            Pool::Postgres(p) => sqlx::query(
                "UPDATE items SET queued_until = 0
                 WHERE queued_until >= $1 AND lease_until < $1
                   AND id NOT IN (SELECT convert_from(job, 'UTF8')::json->>'item_id' FROM apalis.jobs
                                  WHERE job_type = $2 AND status IN ('Pending', 'Queued'))",
            )
            .bind(now)
            .bind(q)
            .execute(p)
            .await?
            .rows_affected(),
        })
    }
}
