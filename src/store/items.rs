//! Items: reads, leases, and the queries the poller, the sweep and the reports need. The row
//! type is in `record.rs`; the guarded writes are in `writes.rs`, on the machinery in
//! `transitions.rs`.

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::record::{ITEM_COLUMNS, ItemRow, typed, typed_all};
use super::{ItemRecord, Store, StoreError, now_ms, on_pool};
use crate::batch::{BatchId, ItemId};
use crate::item::ItemState;

/// One entry of an item's history.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ItemEvent {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub detail: String,
}

impl Store {
    pub async fn item(&self, id: ItemId) -> Result<Option<ItemRecord>, StoreError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = $1");
        typed(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql.clone()))
            .bind(id.to_string()).fetch_optional(p).await?),
        )
    }

    /// The item waiting on this flow (onboarding or payout), if any.
    pub async fn item_by_flow(&self, flow_id: Uuid) -> Result<Option<ItemRecord>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE onboarding_flow_id = $1 OR payout_flow_id = $1
             ORDER BY updated_at DESC LIMIT 1"
        );
        typed(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql.clone()))
            .bind(flow_id.to_string()).fetch_optional(p).await?),
        )
    }

    /// Whether some item already recorded this Dots transfer.
    pub async fn transfer_recorded(&self, transfer_id: Uuid) -> Result<bool, StoreError> {
        let n: i64 = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM items WHERE transfer_id = $1")
            .bind(transfer_id.to_string()).fetch_one(p).await?);
        Ok(n > 0)
    }

    /// Every item of a batch, in file order.
    pub async fn batch_items(&self, batch: BatchId) -> Result<Vec<ItemRecord>, StoreError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE batch_id = $1 ORDER BY line");
        typed_all(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql.clone()))
            .bind(batch.to_string()).fetch_all(p).await?),
        )
    }

    /// When the item's newest event of `kind` was written (unix ms), if it has one.
    pub async fn last_event_at(&self, id: ItemId, kind: &str) -> Result<Option<i64>, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT MAX(at) FROM item_events WHERE item_id = $1 AND kind = $2")
            .bind(id.to_string()).bind(kind).fetch_one(p).await?))
    }

    /// The item's history, oldest first. It opens with the item's creation, which is not a row
    /// of `item_events`: bulk intake stores a batch's items without an event each (it would
    /// double the rows written), so that first entry (id 0) is read from the batch.
    pub async fn item_events(&self, id: ItemId) -> Result<Vec<ItemEvent>, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query_as::<_, ItemEvent>(
            "SELECT CAST(0 AS BIGINT) AS id, b.created_at AS at, 'state' AS kind,
                    CAST(NULL AS TEXT) AS from_state, 'pending' AS to_state,
                    'stored from ' || b.source AS detail
               FROM items i JOIN batches b ON b.id = i.batch_id
              WHERE i.id = $1 AND NOT EXISTS
                    (SELECT 1 FROM item_events e WHERE e.item_id = $1 AND e.from_state IS NULL AND e.kind = 'state')
             UNION ALL
             SELECT id, at, kind, from_state, to_state, detail FROM item_events WHERE item_id = $1
             ORDER BY id")
            .bind(id.to_string()).fetch_all(p).await?))
    }

    /// Takes the item's lease for `owner` until `now + lease_ms` if nobody else holds a live
    /// one. Returns the item as it is under the lease (one statement: the row comes back from
    /// the `UPDATE` itself). This is what stops two workers (or two deliveries of one job) from
    /// working one item at the same time.
    pub async fn try_lease(
        &self,
        id: ItemId,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let now = now_ms();
        let sql = format!(
            "UPDATE items SET lease_owner = $1, lease_until = $2
             WHERE id = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)
             RETURNING {ITEM_COLUMNS}"
        );
        typed(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql.clone()))
            .bind(owner).bind(now + lease_ms).bind(id.to_string()).bind(now)
            .fetch_optional(p).await?),
        )
    }

    pub async fn release_lease(&self, id: ItemId, owner: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE items SET lease_owner = NULL, lease_until = 0, queued_until = 0 WHERE id = $1 AND lease_owner = $2")
            .bind(id.to_string()).bind(owner).execute(p).await?; });
        Ok(())
    }

    pub async fn payee_user(&self, payee_id: &str) -> Result<Option<Uuid>, StoreError> {
        let s: Option<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT dots_user_id FROM payees WHERE payee_id = $1").bind(payee_id).fetch_optional(p).await?);
        s.as_deref()
            .map(|v| Uuid::parse_str(v).map_err(|e| corrupt("payees.dots_user_id", e)))
            .transpose()
    }

    /// A poll that found the flow still open: poll again at `next_poll_at` (the flow moves one
    /// step along its poll schedule, and its run of failed polls ends).
    pub async fn record_poll(
        &self,
        id: ItemId,
        state: ItemState,
        next_poll_at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE items SET next_poll_at = $1, polls = polls + 1, poll_errors = 0, api_calls = api_calls + 1
             WHERE id = $2 AND state = $3")
            .bind(next_poll_at).bind(id.to_string()).bind(state.as_str()).execute(p).await?; });
        Ok(())
    }

    /// A poll that could not read the flow (5xx, 429, timeout, no connection): try again at
    /// `next_poll_at`, one more failed poll in a row, the flow's poll schedule unmoved.
    pub async fn record_poll_error(
        &self,
        id: ItemId,
        state: ItemState,
        next_poll_at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE items SET next_poll_at = $1, poll_errors = poll_errors + 1, api_calls = api_calls + 1
             WHERE id = $2 AND state = $3")
            .bind(next_poll_at).bind(id.to_string()).bind(state.as_str()).execute(p).await?; });
        Ok(())
    }

    /// Whether any flow's poll is due at `now`: a read of one entry of the `items_poll_due`
    /// index, so an idle poller tick costs no write (a claim on SQLite takes the write lock
    /// even when it matches nothing).
    pub async fn poll_due_exists(&self, now: i64) -> Result<bool, StoreError> {
        let due: Option<i64> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT next_poll_at FROM items WHERE next_poll_at IS NOT NULL AND next_poll_at <= $1
             ORDER BY next_poll_at LIMIT 1")
            .bind(now).fetch_optional(p).await?);
        Ok(due.is_some())
    }

    /// Claims items waiting on a payee whose flow is due for a poll, oldest due first: their
    /// next poll moves to `hold_until` so a concurrent poller (an overlapping tick, another
    /// worker) skips them; the poll then records the real next time.
    pub async fn claim_due_polls(
        &self,
        now: i64,
        limit: i64,
        hold_until: i64,
    ) -> Result<Vec<ItemRecord>, StoreError> {
        // The outer `next_poll_at <= $2` is re-checked on a row another transaction just
        // claimed (PostgreSQL re-evaluates it on the new row version), so no row is claimed twice.
        let sql = format!(
            "UPDATE items SET next_poll_at = $1 WHERE id IN (
                 SELECT id FROM items WHERE next_poll_at IS NOT NULL AND next_poll_at <= $2
                 AND state IN ('onboarding', 'awaiting_payout') ORDER BY next_poll_at LIMIT $3)
             AND next_poll_at <= $2
             RETURNING {ITEM_COLUMNS}"
        );
        typed_all(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql.clone()))
            .bind(hold_until).bind(now).bind(limit).fetch_all(p).await?),
        )
    }

    /// Workable items of one batch whatever their retry time (for stepping a batch by hand).
    #[cfg(any(test, feature = "test-hooks"))]
    pub async fn batch_workable_items(&self, batch: BatchId) -> Result<Vec<ItemId>, StoreError> {
        let ids: Vec<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT id FROM items WHERE batch_id = $1 AND state IN ('pending', 'transferring', 'transferred')
             AND batch_id IN (SELECT id FROM batches WHERE status = 'approved')
             ORDER BY line")
            .bind(batch.to_string()).fetch_all(p).await?);
        ids.iter()
            .map(|s| s.parse().map_err(|e| corrupt("item id", e)))
            .collect()
    }

    /// Whether the item's batch may be worked (approved, not awaiting approval or canceled).
    pub async fn batch_approved(&self, batch_id: BatchId) -> Result<bool, StoreError> {
        let s: Option<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT status FROM batches WHERE id = $1").bind(batch_id.to_string()).fetch_optional(p).await?);
        Ok(s.as_deref() == Some("approved"))
    }

    /// Makes a waiting retry due now (tests use it to skip backoff).
    #[cfg(any(test, feature = "test-hooks"))]
    pub async fn retry_now(&self, id: ItemId) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query("UPDATE items SET next_attempt_at = 1 WHERE id = $1")
            .bind(id.to_string()).execute(p).await?; });
        Ok(())
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}
