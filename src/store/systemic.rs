//! The store side of process-wide circuits (`jobs::circuit`), set-based: the hold a batch
//! shows while Dots refuses our key, is unreachable, or throttles every call, and the release
//! of held items when the circuit closes.
//!
//! Guarantees: a systemic hold is written only on a batch with active (non-terminal) items and
//! no hold yet, so it never overwrites another hold (an `insufficient_funds` hold, or an
//! earlier systemic one); clearing names its reason, so it never lifts a funds hold.

use super::outbox_batch::{BATCH_EVENT_COLUMNS, Why, batch_event_update};
use super::{Store, StoreError, now_ms, on_pool};
use crate::batch::HoldReason;
use crate::events::EventType;

/// Items in these states still have work that a Dots call does.
const ACTIVE: &str = "'pending', 'onboarding', 'transferring', 'transferred', 'awaiting_payout'";

impl Store {
    /// Holds every batch with active items and no hold yet for `reason` (a process-wide
    /// circuit opened at `since`). Returns how many batches it marked.
    pub async fn set_systemic_hold(
        &self,
        reason: HoldReason,
        detail: &str,
        since: i64,
    ) -> Result<u64, StoreError> {
        debug_assert!(reason != HoldReason::InsufficientFunds);
        let sql = format!(
            "UPDATE batches SET hold_reason = $1, hold_detail = $2, hold_since = $3,
                event_version = event_version + 1
             WHERE hold_reason IS NULL AND status = 'approved'
               AND EXISTS (SELECT 1 FROM items WHERE items.batch_id = batches.id
                           AND items.state IN ({ACTIVE}))
             RETURNING {BATCH_EVENT_COLUMNS}"
        );
        let detail: String = detail.chars().take(500).collect();
        let now = now_ms();
        Ok(on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let rows = batch_event_update!(&mut *tx, sql.clone(), [reason.as_str(), &detail, since],
                EventType::BatchHeld, Why::RowHold, now);
            tx.commit().await?;
            rows.len() as u64
        }))
    }

    /// Lifts every hold for `reason` (a process-wide circuit closed). Returns how many.
    pub async fn clear_systemic_hold(&self, reason: HoldReason) -> Result<u64, StoreError> {
        if reason == HoldReason::InsufficientFunds {
            return Ok(0); // not a process-wide reason: lifted by the funds check alone
        }
        let sql = format!(
            "UPDATE batches SET hold_reason = NULL, hold_detail = NULL, hold_since = NULL,
                event_version = event_version + 1
             WHERE hold_reason = $1 RETURNING {BATCH_EVENT_COLUMNS}"
        );
        let now = now_ms();
        Ok(on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let rows = batch_event_update!(&mut *tx, sql.clone(), [reason.as_str()],
                EventType::BatchResumed, Why::Lifted(reason.as_str()), now);
            tx.commit().await?;
            rows.len() as u64
        }))
    }

    /// A circuit closed: every workable item waiting for a later attempt (held by the circuit,
    /// or in the backoff it built during the outage) is due now with its attempts reset; the
    /// client's rate limiter spreads the calls. Returns how many.
    pub async fn release_held_items(&self, now: i64) -> Result<u64, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query(
            "UPDATE items SET next_attempt_at = $1, attempts = 0
             WHERE state IN ('pending', 'transferring', 'transferred') AND next_attempt_at > $1")
            .bind(now.max(1)).execute(p).await?.rows_affected()))
    }
}
