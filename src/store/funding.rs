//! The App wallet's side of the store: what batches still have to pay, the funding pre-flight's
//! one-time decision per batch (`batches.funding_checked_at`), and the `insufficient_funds` hold
//! written, extended and lifted (see `jobs::funds`, which decides; here it is only written).
//!
//! Guarantees:
//! - a batch's pre-flight is decided once: [`Store::decide_funding`] writes the check (and the
//!   hold, when the wallet is short) in one `UPDATE … WHERE funding_checked_at IS NULL`, so of
//!   several workers exactly one decides and the others read its decision;
//! - a hold is lifted (or extended, for "pay what fits") together with making the items it
//!   released due at once, in one transaction;
//! - a transfer refused for funds is closed as `permanent` (nothing moved) **without counting
//!   an attempt**: the item stays `transferring` with its key, and sends the same key again.
//!
//! "Still to pay" is every item not yet transferred that may still be paid: `pending`,
//! `onboarding` or `transferring`, with no transfer id.

use super::batches::BatchRow;
use super::outbox_batch::{BATCH_EVENT_COLUMNS, Why, batch_event_update};
use super::transitions::Set;
use super::{BatchRecord, ItemRecord, Store, StoreError, on_pool};
use crate::batch::{BatchId, ItemId};
use crate::events::EventType;
use crate::item::{CallOutcome, ItemState};

/// The SQL condition on `items` (as `i`) of "not yet transferred, may still be paid".
macro_rules! unpaid {
    () => {
        "i.transfer_id IS NULL AND i.state IN ('pending', 'onboarding', 'transferring')"
    };
}

/// States whose items a lifted hold makes due at once (the workable ones).
const WORKABLE: &str = "('pending', 'transferring', 'transferred')";

/// What the pre-flight decided for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FundingVerdict {
    /// The wallet covers it: no hold.
    Covered,
    /// Hold it (from `from_line` on, or all of it), needing `needed_cents` more.
    Short {
        detail: String,
        needed_cents: i64,
        from_line: Option<i64>,
    },
}

impl Store {
    /// Whether the batch's funding pre-flight has been decided.
    pub async fn funding_checked(&self, batch: BatchId) -> Result<bool, StoreError> {
        let at: Option<Option<i64>> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT funding_checked_at FROM batches WHERE id = $1")
            .bind(batch.to_string()).fetch_optional(p).await?);
        Ok(at.flatten().is_some())
    }

    /// Cents the batch still has to pay (see the module doc).
    pub async fn unpaid_cents(&self, batch: BatchId) -> Result<i64, StoreError> {
        const SQL: &str = concat!(
            "SELECT CAST(COALESCE(SUM(i.amount_cents), 0) AS BIGINT) FROM items i WHERE i.batch_id = $1 AND ",
            unpaid!()
        );
        Ok(on_pool!(&self.pool, p => sqlx::query_scalar(SQL)
            .bind(batch.to_string()).fetch_one(p).await?))
    }

    /// Cents other batches have already been cleared to pay from the wallet and have not paid
    /// yet: approved batches whose pre-flight ran, except the part a funds hold keeps back.
    pub async fn committed_elsewhere(&self, batch: BatchId) -> Result<i64, StoreError> {
        const SQL: &str = concat!(
            "SELECT CAST(COALESCE(SUM(i.amount_cents), 0) AS BIGINT)
             FROM items i JOIN batches b ON b.id = i.batch_id
             WHERE i.batch_id <> $1 AND b.status = 'approved' AND b.funding_checked_at IS NOT NULL
               AND (b.hold_reason IS NULL OR b.hold_reason <> 'insufficient_funds'
                    OR (b.hold_from_line IS NOT NULL AND i.line < b.hold_from_line))
               AND ",
            unpaid!()
        );
        Ok(on_pool!(&self.pool, p => sqlx::query_scalar(SQL)
            .bind(batch.to_string()).fetch_one(p).await?))
    }

    /// The first line (file order) of the batch's unpaid items at which their running total
    /// passes `fits_cents`: "pay what fits" holds from there. `None`: everything fits.
    pub async fn first_line_beyond(
        &self,
        batch: BatchId,
        fits_cents: i64,
    ) -> Result<Option<i64>, StoreError> {
        const SQL: &str = concat!(
            "SELECT line FROM (SELECT i.line AS line,
                    SUM(i.amount_cents) OVER (ORDER BY i.line) AS running
                 FROM items i WHERE i.batch_id = $1 AND ",
            unpaid!(),
            ") t WHERE running > $2 ORDER BY line LIMIT 1"
        );
        Ok(on_pool!(&self.pool, p => sqlx::query_scalar(SQL)
            .bind(batch.to_string()).bind(fits_cents).fetch_optional(p).await?))
    }

    /// Writes the batch's pre-flight decision, once: `Ok(false)` when another worker decided
    /// first (read the batch for its decision).
    pub async fn decide_funding(
        &self,
        batch: BatchId,
        now: i64,
        verdict: &FundingVerdict,
    ) -> Result<bool, StoreError> {
        let id = batch.to_string();
        let n = match verdict {
            FundingVerdict::Covered => on_pool!(&self.pool, p => sqlx::query(
                "UPDATE batches SET funding_checked_at = $1 WHERE id = $2 AND funding_checked_at IS NULL")
                .bind(now).bind(&id).execute(p).await?.rows_affected()),
            FundingVerdict::Short {
                detail,
                needed_cents,
                from_line,
            } => {
                // A new hold (none, or another reason): batch.held; the same reason again: none.
                let held = format!("UPDATE batches SET funding_checked_at = $1, hold_reason = 'insufficient_funds',
                    hold_detail = $3, hold_since = $1, funds_needed_cents = $4, hold_from_line = $5,
                    event_version = event_version + 1
                 WHERE id = $2 AND funding_checked_at IS NULL
                   AND (hold_reason IS NULL OR hold_reason <> 'insufficient_funds')
                 RETURNING {BATCH_EVENT_COLUMNS}");
                on_pool!(&self.pool, p => {
                    let mut tx = p.begin().await?;
                    let n = batch_event_update!(&mut *tx, held.clone(),
                        [now, &id, detail, needed_cents, from_line],
                        EventType::BatchHeld, Why::RowHold, now).len() as u64;
                    let n = if n == 1 { n } else { sqlx::query(
                        "UPDATE batches SET funding_checked_at = $1, hold_reason = 'insufficient_funds',
                            hold_detail = $3, hold_since = $1, funds_needed_cents = $4, hold_from_line = $5
                         WHERE id = $2 AND funding_checked_at IS NULL")
                        .bind(now).bind(&id).bind(detail).bind(needed_cents).bind(from_line)
                        .execute(&mut *tx).await?.rows_affected() };
                    tx.commit().await?;
                    n
                })
            }
        };
        Ok(n == 1)
    }

    /// Dots refused a transfer for funds: every approved batch with something still to pay
    /// (the wallet is the App's) is held — all of its unpaid items (`hold_from_line` cleared),
    /// needing, as far as can be known without the balance, what it still has to pay. A batch
    /// held for another reason keeps that hold. Returns how many batches are so held.
    pub async fn hold_all_for_funds(&self, now: i64, detail: &str) -> Result<u64, StoreError> {
        const SQL: &str = concat!(
            "UPDATE batches SET
                hold_since = CASE WHEN hold_reason IS NULL THEN $1 ELSE hold_since END,
                hold_reason = 'insufficient_funds', hold_detail = $2, hold_from_line = NULL,
                funds_needed_cents = (SELECT CAST(COALESCE(SUM(i.amount_cents), 0) AS BIGINT)
                    FROM items i WHERE i.batch_id = batches.id AND ",
            unpaid!(),
            ")
             WHERE status = 'approved'
               AND (hold_reason IS NULL OR hold_reason = 'insufficient_funds')
               AND EXISTS (SELECT 1 FROM items i WHERE i.batch_id = batches.id AND ",
            unpaid!(),
            ")"
        );
        Ok(
            on_pool!(&self.pool, p => sqlx::query(SQL).bind(now).bind(detail)
            .execute(p).await?.rows_affected()),
        )
    }

    /// Approved batches held for funds, oldest first (the probe's order).
    pub async fn funds_held_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            super::batches::batch_columns!(),
            " FROM batches WHERE hold_reason = 'insufficient_funds' AND status = 'approved'
              ORDER BY created_at, id"
        );
        let rows: Vec<BatchRow> =
            on_pool!(&self.pool, p => sqlx::query_as(SQL).fetch_all(p).await?);
        rows.into_iter().map(BatchRecord::try_from).collect()
    }

    /// Updates a funds hold that stays: what is still needed, and (for "pay what fits") the
    /// line it now starts at; items before that line become due at once. `Ok(false)`: the
    /// batch is not held for funds any more.
    pub async fn update_funds_hold(
        &self,
        batch: BatchId,
        now: i64,
        detail: &str,
        needed_cents: i64,
        from_line: Option<i64>,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE items SET next_attempt_at = $1, queued_until = 0
             WHERE batch_id = $2 AND line < $3 AND state IN {WORKABLE} AND next_attempt_at > $1"
        );
        let id = batch.to_string();
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "UPDATE batches SET hold_detail = $1, funds_needed_cents = $2, hold_from_line = $3
                 WHERE id = $4 AND hold_reason = 'insufficient_funds'")
                .bind(detail).bind(needed_cents).bind(from_line).bind(&id)
                .execute(&mut *tx).await?.rows_affected();
            if n == 1 && let Some(line) = from_line {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(now).bind(&id).bind(line)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Lifts the batch's funds hold and makes its waiting items due at once. `Ok(false)`: it
    /// was not held for funds (another worker lifted it).
    pub async fn lift_funds_hold(&self, batch: BatchId, now: i64) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE items SET next_attempt_at = $1, queued_until = 0
             WHERE batch_id = $2 AND state IN {WORKABLE} AND next_attempt_at > $1"
        );
        let id = batch.to_string();
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let lift = format!("UPDATE batches SET hold_reason = NULL, hold_detail = NULL, hold_since = NULL,
                    funds_needed_cents = NULL, hold_from_line = NULL, event_version = event_version + 1
                 WHERE id = $1 AND hold_reason = 'insufficient_funds' RETURNING {BATCH_EVENT_COLUMNS}");
            let n = batch_event_update!(&mut *tx, lift, [&id], EventType::BatchResumed,
                Why::Lifted("insufficient_funds"), now).len();
            if n == 1 {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(now).bind(&id)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Phase 3 of a transfer Dots refused for funds: the call is closed as `permanent`
    /// (nothing moved), with **no attempt counted**; the item waits until `next_attempt_at`
    /// (or until the hold is lifted) and then sends the same key.
    pub async fn record_transfer_refused_for_funds(
        &self,
        id: ItemId,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = Set::new()
            .raw("transfer_call_open = 0")
            .val("transfer_outcome", CallOutcome::InsufficientFunds.as_str())
            .val("last_error", error)
            .val("next_attempt_at", next_attempt_at)
            .raw("queued_until = 0");
        let detail = format!("held for funds: {error}");
        self.update_in_state(id, ItemState::Transferring, set, "funds_hold", &detail)
            .await
    }
}
