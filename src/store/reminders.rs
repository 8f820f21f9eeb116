//! The writes of reminders for unclaimed payouts (`jobs::remind` decides them): the step back
//! for a reminder's fresh flow and the unclaimed mark. The write that records the fresh flow
//! (and emits `item.reminder` in its transaction) is `Store::record_payout_flow`.

use uuid::Uuid;

use super::transitions::{Change, Set};
use sqlx::AssertSqlSafe;

use super::record::{ITEM_COLUMNS, ItemRow, typed_all};
use super::{ItemRecord, Store, StoreError, on_pool};
use crate::batch::{BatchId, ItemId};
use crate::item::ItemState;

/// A payout flow Dots made, as [`Store::record_payout_flow`] records it.
#[derive(Debug, Clone, Copy)]
pub struct FlowMade<'a> {
    pub flow_id: Uuid,
    pub link: &'a str,
    pub next_poll_at: i64,
    /// The flow is this reminder's fresh one.
    pub reminder: Option<i64>,
    /// When the next reminder (or the unclaimed mark) is due; `None`: reminders off.
    pub reminder_due_at: Option<i64>,
}

impl Store {
    /// awaiting_payout -> transferred for reminder `n`: the job makes the fresh flow next (as
    /// [`Store::renew_flow`]) and records it as that reminder's. Guarded by `reminders = n - 1`
    /// and no unclaimed mark, so a reminder is started once however many pollers see it due.
    pub async fn start_reminder(
        &self,
        id: ItemId,
        n: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = Set::new()
            .raw("next_poll_at = NULL, next_attempt_at = 1, payout_call_open = 0")
            .val("reminder_pending", n);
        let detail = format!("reminder {n}: a fresh payout link for a payee who has not claimed");
        let guard = format!("reminders = {} AND unclaimed_at IS NULL", n - 1);
        let mut c = Change::new(set, &detail);
        c.guard = Some(&guard);
        let (from, to) = (ItemState::AwaitingPayout, ItemState::Transferred);
        self.transition_with(id, from, to, c).await
    }

    /// The payout flow is still open after the last reminder: the item is unclaimed (it stays
    /// awaiting_payout and may still complete; its money is in the payee's Dots wallet).
    pub async fn mark_unclaimed(
        &self,
        id: ItemId,
        at: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = Set::new()
            .val("unclaimed_at", at)
            .raw("reminder_due_at = NULL");
        let detail = "unclaimed: the payout flow is still open after the last reminder";
        self.update_in_state(id, ItemState::AwaitingPayout, set, "unclaimed", detail)
            .await
    }

    /// The batch's unclaimed items: still awaiting payout after their last reminder, in file
    /// order.
    pub async fn unclaimed_items(&self, batch: BatchId) -> Result<Vec<ItemRecord>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE batch_id = $1 AND state = $2
             AND unclaimed_at IS NOT NULL ORDER BY line"
        );
        typed_all(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql.clone()))
            .bind(batch.to_string()).bind(ItemState::AwaitingPayout.as_str()).fetch_all(p).await?),
        )
    }
}
