//! The guarded writes to an item and the item event log: the helpers every state change
//! goes through, and the operator's transitions. The payout protocol's own writes are in
//! `protocol.rs`.
//!
//! Every method that changes `state` does so with `WHERE state = <expected>` and writes the
//! event in the same transaction. It returns the row as written (`RETURNING`), so the job goes
//! on from there without reading it again, or `Ok(None)` when the item was no longer in the
//! expected state (another worker got there first), never a silent overwrite.

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::record::{ITEM_COLUMNS, ItemRow, typed};
use super::{ItemRecord, Store, StoreError, now_ms, on_pool};
use crate::batch::ItemId;
use crate::item::{ItemState, TransferOutcome};

impl Store {
    /// Appends an event that is not a state change (an API call outcome, an error, a poll).
    pub async fn record_event(
        &self,
        id: ItemId,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "INSERT INTO item_events (item_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
            .bind(id.to_string()).bind(now_ms()).bind(kind).bind(detail).execute(p).await?; });
        Ok(())
    }

    /// Moves the item `from` -> `to`, applying `set` (a SQL `SET` fragment using `$5`.. for
    /// `binds`) in the same statement, and logs the event. Returns the row as written;
    /// `Ok(None)`: not in `from` any more.
    pub(super) async fn transition(
        &self,
        id: ItemId,
        from: ItemState,
        to: ItemState,
        set: &str,
        binds: Vec<Bind>,
        detail: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.transition_with(id, from, to, Change::new(set, binds, detail))
            .await
    }

    /// [`Store::transition`] with what else goes in its transaction (see [`Change`]).
    pub(super) async fn transition_with(
        &self,
        id: ItemId,
        from: ItemState,
        to: ItemState,
        c: Change<'_>,
    ) -> Result<Option<ItemRecord>, StoreError> {
        if !from.can_become(to) {
            return Err(StoreError::IllegalTransition { from, to });
        }
        let now = now_ms();
        let sep = if c.set.is_empty() { "" } else { ", " };
        let set = c.set;
        let mut binds = c.binds;
        let release = match c.release {
            // As `release_lease`, in this statement: only this owner's lease. (SET expressions
            // read the row as it was, so both CASEs see the old owner.)
            Some(owner) => {
                let k = 5 + binds.len();
                binds.push(Bind::S(owner.to_owned()));
                format!(
                    ", lease_owner = CASE WHEN lease_owner = ${k} THEN NULL ELSE lease_owner END,
                     lease_until = CASE WHEN lease_owner = ${k} THEN 0 ELSE lease_until END,
                     queued_until = CASE WHEN lease_owner = ${k} THEN 0 ELSE queued_until END"
                )
            }
            None => String::new(),
        };
        let guard = c.guard.map(|g| format!(" AND ({g})")).unwrap_or_default();
        let sql = format!(
            "UPDATE items SET state = $1, updated_at = $2{sep}{set}{release} WHERE id = $3 AND state = $4{guard}
             RETURNING {ITEM_COLUMNS}"
        );
        let row = on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let mut q = sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql.clone()))
                .bind(to.as_str()).bind(now).bind(id.to_string()).bind(from.as_str());
            for b in binds {
                q = match b {
                    Bind::I(v) => q.bind(v),
                    Bind::S(v) => q.bind(v),
                };
            }
            let row = q.fetch_optional(&mut *tx).await?;
            if row.is_some() {
                if let Some((payee_id, user_id)) = c.payee {
                    sqlx::query(REMEMBER_PAYEE)
                        .bind(payee_id).bind(user_id.to_string()).bind(now)
                        .execute(&mut *tx).await?;
                }
                let events = sqlx::query(if c.also.is_some() { STATE_AND_DETAIL_EVENTS } else { STATE_EVENT })
                    .bind(id.to_string()).bind(now).bind(from.as_str()).bind(to.as_str()).bind(c.detail);
                match c.also {
                    Some((kind, detail)) => events.bind(kind).bind(detail),
                    None => events,
                }
                .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            row
        });
        typed(row)
    }

    /// Updates columns without a state change, guarded by the current state, with an event.
    /// `set` uses `$4`.. for `binds`. Returns the row as written; `Ok(None)`: not in `state`.
    pub(super) async fn update_in_state(
        &self,
        id: ItemId,
        state: ItemState,
        set: &str,
        binds: Vec<Bind>,
        kind: &str,
        detail: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let now = now_ms();
        let sql = format!(
            "UPDATE items SET updated_at = $1, {set} WHERE id = $2 AND state = $3
             RETURNING {ITEM_COLUMNS}"
        );
        let row = on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let mut q = sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql.clone()))
                .bind(now).bind(id.to_string()).bind(state.as_str());
            for b in binds {
                q = match b {
                    Bind::I(v) => q.bind(v),
                    Bind::S(v) => q.bind(v),
                };
            }
            let row = q.fetch_optional(&mut *tx).await?;
            if row.is_some() {
                sqlx::query("INSERT INTO item_events (item_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
                    .bind(id.to_string()).bind(now).bind(kind).bind(detail)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            row
        });
        typed(row)
    }

    pub async fn remember_payee(&self, payee_id: &str, user_id: Uuid) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(REMEMBER_PAYEE)
            .bind(payee_id).bind(user_id.to_string()).bind(now_ms()).execute(p).await?; });
        Ok(())
    }

    /// Operator rerun of a failed item: back to `transferred` when the money already moved
    /// (only the payout flow is redone), else to `pending` with any earlier transfer attempt
    /// marked for reconciliation before a new call.
    pub async fn rerun_item(
        &self,
        id: ItemId,
        has_transfer: bool,
    ) -> Result<Option<ItemRecord>, StoreError> {
        if has_transfer {
            self.transition(
                id,
                ItemState::Failed,
                ItemState::Transferred,
                "attempts = 0, next_attempt_at = 1, last_error = NULL",
                vec![],
                "rerun by operator: transfer already made, redoing the payout flow",
            )
            .await
        } else {
            self.transition(
                id,
                ItemState::Failed,
                ItemState::Pending,
                "attempts = 0, next_attempt_at = 1, last_error = NULL,
                 transfer_outcome = CASE WHEN transfer_key IS NULL THEN NULL ELSE 'rerun' END",
                vec![],
                "rerun by operator: any earlier transfer attempt is reconciled before a new one",
            )
            .await
        }
    }

    /// Cancels an item that has not transferred; `Ok(None)`: it was not in `from` any more,
    /// or it is a failed item that may have been paid. A failed item is canceled only if it is
    /// definitely unpaid: no transfer recorded, and either no key on record or its only
    /// attempt's outcome proves nothing moved (Dots refused it, or reconciliation found none).
    /// The rule is this statement's guard, so no caller can skip it.
    pub async fn cancel_item(
        &self,
        id: ItemId,
        from: ItemState,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let unpaid = definitely_unpaid_sql();
        let mut c = Change::new("next_poll_at = NULL", vec![], "canceled by operator");
        if from == ItemState::Failed {
            c.guard = Some(&unpaid);
        }
        self.transition_with(id, from, ItemState::Canceled, c).await
    }

    /// A new flow link for a payee whose link went stale: the item steps back so the job makes
    /// a new flow (payout: awaiting_payout -> transferred; onboarding: onboarding -> pending).
    pub async fn renew_flow(
        &self,
        id: ItemId,
        from: ItemState,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let to = match from {
            ItemState::AwaitingPayout => ItemState::Transferred,
            _ => ItemState::Pending,
        };
        self.transition(
            id,
            from,
            to,
            "next_poll_at = NULL, attempts = 0, next_attempt_at = 1, payout_call_open = 0",
            vec![],
            "new flow link requested by operator",
        )
        .await
    }
}

/// A bind value for the dynamic `SET` fragments.
pub(super) enum Bind {
    I(i64),
    S(String),
}

/// One guarded write: its `SET` fragment and binds, its event's detail, and what else goes
/// in the same transaction when (and only when) the guard matches.
pub(super) struct Change<'a> {
    pub(super) set: &'a str,
    pub(super) binds: Vec<Bind>,
    pub(super) detail: &'a str,
    /// Remember the payee's Dots user for later batches.
    pub(super) payee: Option<(&'a str, Uuid)>,
    /// A second event (kind, detail) after the state change's: the intent of the call that
    /// follows, committed with the state change before it.
    pub(super) also: Option<(&'a str, &'a str)>,
    /// Release this owner's lease in the same `UPDATE`: the job's last write to the item.
    pub(super) release: Option<&'a str>,
    /// A further condition (no binds) the row must meet besides its state.
    pub(super) guard: Option<&'a str>,
}

impl<'a> Change<'a> {
    pub(super) fn new(set: &'a str, binds: Vec<Bind>, detail: &'a str) -> Change<'a> {
        Change {
            set,
            binds,
            detail,
            payee: None,
            also: None,
            release: None,
            guard: None,
        }
    }
}

/// A failed item that is definitely unpaid (see [`Store::cancel_item`]), as SQL.
fn definitely_unpaid_sql() -> String {
    let proves: Vec<String> = TransferOutcome::ALL
        .into_iter()
        .filter(|o| o.proves_unpaid())
        .map(|o| format!("'{}'", o.as_str()))
        .collect();
    format!(
        "transfer_id IS NULL AND (transfer_key IS NULL OR
         (transfer_attempts <= 1 AND transfer_outcome IN ({})))",
        proves.join(", ")
    )
}

const STATE_EVENT: &str =
    "INSERT INTO item_events (item_id, at, kind, from_state, to_state, detail)
     VALUES ($1, $2, 'state', $3, $4, $5)";

/// A state change's event and a second one (`$6` kind, `$7` detail), in this order.
const STATE_AND_DETAIL_EVENTS: &str =
    "INSERT INTO item_events (item_id, at, kind, from_state, to_state, detail)
     VALUES ($1, $2, 'state', $3, $4, $5), ($1, $2, $6, NULL, NULL, $7)";

/// payee_id -> Dots user, written only when it is new or changed (a payee paid again is
/// usually known already: no row write, no WAL).
const REMEMBER_PAYEE: &str = "INSERT INTO payees (payee_id, dots_user_id, updated_at) VALUES ($1, $2, $3)
     ON CONFLICT (payee_id) DO UPDATE SET dots_user_id = excluded.dots_user_id, updated_at = excluded.updated_at
     WHERE payees.dots_user_id <> excluded.dots_user_id";
