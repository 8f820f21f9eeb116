//! The transactional outbox's batch events: `batch.created`, `.approved`, `.held`, `.resumed`,
//! `.settled`, `.completed`, `.canceled`, each written by the statement's caller in the
//! transaction of the change it reports (`batches.rs`, `control.rs`, `funding.rs`,
//! `systemic.rs`, and `transitions.rs` for settling).
//!
//! Guarantees:
//! - a batch event's `version` is the batch's `event_version` as bumped by the same `UPDATE`
//!   that wrote the change (`RETURNING` [`BATCH_EVENT_COLUMNS`]), so versions only grow;
//! - a write that changes nothing (pausing a paused batch, a hold re-written with its reason)
//!   bumps nothing and writes no event: each statement's `WHERE` says what a change is;
//! - a batch is reported settled (or completed) once per settling: the marker column
//!   `settled_version` (`completed_version`) is set by the statement that writes the event and
//!   cleared when an item moves back to work. On PostgreSQL the item write locks the batch row
//!   first ([`LOCK_BATCH_OF_ITEM`]), so of two items settling at once the second one's check
//!   runs after the first committed and sees both.

use super::outbox::OutboxRow;
use crate::events::{BatchData, EventType};
use crate::item::ItemState;

/// What a batch-event statement returns, in [`BatchEventRow`]'s order.
pub(super) const BATCH_EVENT_COLUMNS: &str =
    "id, status, event_version, item_count, total_cents, hold_reason, hold_detail";

/// A batch as a batch event reports it (after the write).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct BatchEventRow {
    pub id: String,
    pub status: String,
    pub event_version: i64,
    pub item_count: i64,
    pub total_cents: i64,
    pub hold_reason: Option<String>,
    pub hold_detail: Option<String>,
}

/// Why a `batch.held` / `batch.resumed` was written (`data.reason`, `data.detail`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Why<'a> {
    /// Nothing to say (created, approved, settled, …).
    None,
    /// The hold as written on the row (`batch.held` of a hold).
    RowHold,
    /// An operator's pause (`reason = "paused"`).
    Paused,
    /// A lifted hold of this reason.
    Lifted(&'a str),
}

/// The events `kinds` about `b` as written (its `event_version` bumped by `kinds.len()`):
/// versions `event_version - len + 1 ..= event_version`, in order.
pub(super) fn batch_event_rows(
    b: &BatchEventRow,
    kinds: &[EventType],
    why: Why<'_>,
    now: i64,
) -> Vec<OutboxRow> {
    let first = b.event_version - kinds.len() as i64 + 1;
    let (reason, detail) = match why {
        Why::None => (None, None),
        Why::RowHold => (b.hold_reason.clone(), b.hold_detail.clone()),
        Why::Paused => (Some("paused".to_owned()), None),
        Why::Lifted(r) => (Some(r.to_owned()), None),
    };
    kinds
        .iter()
        .enumerate()
        .map(|(k, kind)| {
            debug_assert!(kind.is_batch());
            let version = first + k as i64;
            let data = BatchData {
                batch_id: b.id.clone(),
                status: b.status.clone(),
                version,
                items: b.item_count,
                total_cents: b.total_cents,
                reason: reason.clone(),
                detail: detail.clone(),
            };
            OutboxRow::new(*kind, b.id.clone(), None, version, now, &data)
        })
        .collect()
}

/// Runs `$sql` (an `UPDATE batches … RETURNING` [`BATCH_EVENT_COLUMNS`] that bumped
/// `event_version` by one on each row it changed) with `$binds` on `$tx`, and writes one `$kind`
/// event per returned row in the same transaction. Evaluates to the rows.
macro_rules! batch_event_update {
    ($tx:expr, $sql:expr, [$($bind:expr),*], $kind:expr, $why:expr, $now:expr) => {{
        let rows: Vec<super::outbox_batch::BatchEventRow> =
            sqlx::query_as(sqlx::AssertSqlSafe($sql)) $(.bind($bind))* .fetch_all($tx).await?;
        for r in &rows {
            for e in super::outbox_batch::batch_event_rows(r, &[$kind], $why, $now) {
                super::outbox::insert_outbox_row!($tx, e);
            }
        }
        rows
    }};
}
pub(super) use batch_event_update;

/// The item states that are not terminal (the partial index `items_not_terminal`).
const NOT_TERMINAL: &str =
    "('pending', 'onboarding', 'transferring', 'transferred', 'awaiting_payout')";
/// The item states that are not settled (neither terminal nor waiting on the payee).
const NOT_SETTLED: &str = "('pending', 'transferring', 'transferred')";

/// PostgreSQL: locks the batch row of item `$1` before the item write (batch, then item: the
/// order `resume_batch` and the funds hold take them in too, so no deadlock).
pub(super) const LOCK_BATCH_OF_ITEM: &str = "SELECT 1 FROM batches
     WHERE id = (SELECT batch_id FROM items WHERE id = $1) FOR NO KEY UPDATE";

/// Whether a transition `from -> to` can settle, complete or unsettle its batch (and so takes
/// the batch lock and runs the checks).
pub(super) fn touches_batch(from: ItemState, to: ItemState) -> bool {
    to.is_settled() || from.is_settled()
}

/// The batch (`$1`) is settled now and not yet reported so: bump and mark.
pub(super) fn settle_sql() -> String {
    format!(
        "UPDATE batches SET event_version = event_version + 1, settled_version = event_version + 1
         WHERE id = $1 AND settled_version IS NULL AND NOT EXISTS (SELECT 1 FROM items
             WHERE items.batch_id = $1 AND items.state IN {NOT_TERMINAL}
               AND items.state IN {NOT_SETTLED})
         RETURNING {BATCH_EVENT_COLUMNS}"
    )
}

/// The batch (`$1`) is completed (every item terminal) and not yet reported so.
pub(super) fn complete_sql() -> String {
    format!(
        "UPDATE batches SET event_version = event_version + 1, completed_version = event_version + 1
         WHERE id = $1 AND completed_version IS NULL AND NOT EXISTS (SELECT 1 FROM items
             WHERE items.batch_id = $1 AND items.state IN {NOT_TERMINAL})
         RETURNING {BATCH_EVENT_COLUMNS}"
    )
}

/// An item of batch `$1` moved back to work: the batch is neither settled nor completed.
pub(super) const UNSETTLE: &str =
    "UPDATE batches SET settled_version = NULL, completed_version = NULL
     WHERE id = $1 AND (settled_version IS NOT NULL OR completed_version IS NOT NULL)";

/// After an item's write `from -> to` in batch `$batch` (inside its transaction on `$tx`):
/// reports the batch settled / completed if this write made it so, or clears the markers if
/// the item moved back to work.
macro_rules! settle_batch_events {
    ($tx:expr, $batch:expr, $from:expr, $to:expr, $now:expr) => {{
        use crate::events::EventType;
        let (from, to): (crate::item::ItemState, crate::item::ItemState) = ($from, $to);
        if to.is_settled() {
            super::outbox_batch::batch_event_update!(
                $tx,
                super::outbox_batch::settle_sql(),
                [$batch],
                EventType::BatchSettled,
                super::outbox_batch::Why::None,
                $now
            );
            if to.is_terminal() {
                super::outbox_batch::batch_event_update!(
                    $tx,
                    super::outbox_batch::complete_sql(),
                    [$batch],
                    EventType::BatchCompleted,
                    super::outbox_batch::Why::None,
                    $now
                );
            }
        } else if from.is_settled() {
            sqlx::query(super::outbox_batch::UNSETTLE)
                .bind($batch)
                .execute($tx)
                .await?;
        }
    }};
}
pub(super) use settle_batch_events;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_lists_match_the_item_states() {
        let list = |f: fn(ItemState) -> bool| {
            let v: Vec<String> = ItemState::ALL
                .into_iter()
                .filter(|s| f(*s))
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            format!("({})", v.join(", "))
        };
        assert_eq!(NOT_TERMINAL, list(|s| !s.is_terminal()));
        assert_eq!(NOT_SETTLED, list(|s| !s.is_settled()));
    }
}
