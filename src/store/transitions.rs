//! The guarded state transitions of the payout protocol and of operator commands, and the
//! item event log.
//!
//! Every method that changes `state` does so with `WHERE state = <expected>` and writes the
//! event in the same transaction. It returns the row as written (`RETURNING`), so the job goes
//! on from there without reading it again, or `Ok(None)` when the item was no longer in the
//! expected state (another worker got there first), never a silent overwrite.

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::items::ITEM_COLUMNS;
use super::{ItemRecord, Store, StoreError, now_ms, on_pool};
use crate::batch::ItemId;
use crate::item::{IdempotencyKey, ItemState};

/// What the transfer protocol records after a call that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Retryable,
    Ambiguous,
    DuplicateKey,
    Permanent,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Retryable => "retryable",
            CallOutcome::Ambiguous => "ambiguous",
            CallOutcome::DuplicateKey => "duplicate_key",
            CallOutcome::Permanent => "permanent",
        }
    }
}

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
    async fn transition(
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
    async fn transition_with(
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
                     lease_until = CASE WHEN lease_owner = ${k} THEN 0 ELSE lease_until END"
                )
            }
            None => String::new(),
        };
        let sql = format!(
            "UPDATE items SET state = $1, updated_at = $2{sep}{set}{release} WHERE id = $3 AND state = $4
             RETURNING {ITEM_COLUMNS}"
        );
        let row = on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let mut q = sqlx::query_as::<_, ItemRecord>(AssertSqlSafe(sql.clone()))
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
        Ok(row)
    }

    /// Updates columns without a state change, guarded by the current state, with an event.
    /// `set` uses `$4`.. for `binds`. Returns the row as written; `Ok(None)`: not in `state`.
    async fn update_in_state(
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
            let mut q = sqlx::query_as::<_, ItemRecord>(AssertSqlSafe(sql.clone()))
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
        Ok(row)
    }

    /// pending -> onboarding: the onboarding flow exists at Dots; poll it from `next_poll_at`.
    /// `release`: a job's last write releases its lease in the same statement.
    pub async fn begin_onboarding(
        &self,
        id: ItemId,
        flow_id: Uuid,
        link: &str,
        next_poll_at: i64,
        release: Option<&str>,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let detail = format!("onboarding flow {flow_id} created");
        let mut c = Change::new(
            "onboarding_flow_id = $5, onboarding_link = $6, next_poll_at = $7, polls = 0, api_calls = api_calls + 1",
            vec![
                Bind::S(flow_id.to_string()),
                Bind::S(link.into()),
                Bind::I(next_poll_at),
            ],
            &detail,
        );
        c.release = release;
        let (from, to) = (ItemState::Pending, ItemState::Onboarding);
        self.transition_with(id, from, to, c).await
    }

    /// pending|onboarding -> transferring: the payee's Dots user is known (and remembered for
    /// later batches, in the same transaction). No key yet: [`Store::record_transfer_intent`]
    /// stores it before the call.
    pub async fn begin_transfer(
        &self,
        id: ItemId,
        from: ItemState,
        payee_id: &str,
        user_id: Uuid,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let detail = format!("payee is Dots user {user_id}");
        let binds = vec![Bind::S(user_id.to_string())];
        let mut c = Change::new(BEGIN_TRANSFER_SET, binds, &detail);
        c.payee = Some((payee_id, user_id));
        self.transition_with(id, from, ItemState::Transferring, c)
            .await
    }

    /// pending -> transferring for a first transfer attempt (no key on record), with phase 1
    /// of the transfer in the same transaction: the payee's user as in
    /// [`Store::begin_transfer`], and the key, its birth time and the call marked open as in
    /// [`Store::record_transfer_intent`] — committed before any byte goes to Dots. Logs both
    /// events: the state change, then `transfer_intent`.
    pub async fn begin_transfer_with_intent(
        &self,
        id: ItemId,
        payee_id: &str,
        user_id: Uuid,
        key: IdempotencyKey,
        generation: u32,
        key_at: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = format!("{BEGIN_TRANSFER_SET}, {}", intent_set(6));
        let detail = format!("payee is Dots user {user_id}");
        let intent = intent_detail(key, generation);
        let binds = vec![
            Bind::S(user_id.to_string()),
            Bind::S(key.to_string()),
            Bind::I(generation as i64),
            Bind::I(key_at),
        ];
        let mut c = Change::new(&set, binds, &detail);
        c.payee = Some((payee_id, user_id));
        c.also = Some(("transfer_intent", &intent));
        self.transition_with(id, ItemState::Pending, ItemState::Transferring, c)
            .await
    }

    pub async fn remember_payee(&self, payee_id: &str, user_id: Uuid) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(REMEMBER_PAYEE)
            .bind(payee_id).bind(user_id.to_string()).bind(now_ms()).execute(p).await?; });
        Ok(())
    }

    /// Phase 1 of a transfer: commit the key (and its birth time when it is new) and mark the
    /// call open, before any byte goes to Dots.
    pub async fn record_transfer_intent(
        &self,
        id: ItemId,
        key: IdempotencyKey,
        generation: u32,
        key_at: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.update_in_state(
            id,
            ItemState::Transferring,
            &intent_set(4),
            vec![
                Bind::S(key.to_string()),
                Bind::I(generation as i64),
                Bind::I(key_at),
            ],
            "transfer_intent",
            &intent_detail(key, generation),
        )
        .await
    }

    /// Phase 3, success: transferring -> transferred.
    pub async fn record_transfer_done(
        &self,
        id: ItemId,
        transfer_id: Uuid,
        how: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.transition(
            id,
            ItemState::Transferring,
            ItemState::Transferred,
            TRANSFER_DONE_SET,
            vec![Bind::S(transfer_id.to_string())],
            &format!("transfer {transfer_id} {how}"),
        )
        .await
    }

    /// Phase 3, success, and the payout flow's intent in the same transaction: transferring
    /// -> transferred with the payout-flow call marked open as [`Store::record_payout_intent`]
    /// does, for a job that makes that call next. Logs the state change, then `payout_intent`.
    pub async fn record_transfer_done_with_payout_intent(
        &self,
        id: ItemId,
        transfer_id: Uuid,
        how: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let set = format!("{TRANSFER_DONE_SET}, {PAYOUT_INTENT_SET}");
        let detail = format!("transfer {transfer_id} {how}");
        let binds = vec![Bind::S(transfer_id.to_string())];
        let mut c = Change::new(&set, binds, &detail);
        c.also = Some(("payout_intent", PAYOUT_INTENT_DETAIL));
        let (from, to) = (ItemState::Transferring, ItemState::Transferred);
        self.transition_with(id, from, to, c).await
    }

    /// Phase 3, no success: the call is closed with its outcome; retry at `next_attempt_at`.
    pub async fn record_transfer_failure(
        &self,
        id: ItemId,
        outcome: CallOutcome,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.update_in_state(
            id,
            ItemState::Transferring,
            "transfer_call_open = 0, transfer_outcome = $4, last_error = $5, attempts = attempts + 1, next_attempt_at = $6",
            vec![Bind::S(outcome.as_str().into()), Bind::S(error.into()), Bind::I(next_attempt_at)],
            "transfer_error",
            &format!("{}: {error}", outcome.as_str()),
        )
        .await
    }

    /// Reconciliation found no transfer for the item: the open call (if any) is closed as
    /// "none made", so the next attempt may proceed.
    pub async fn record_reconciled_none(
        &self,
        id: ItemId,
        api_calls: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.update_in_state(
            id,
            ItemState::Transferring,
            "transfer_call_open = 0, transfer_outcome = 'reconciled_none', api_calls = api_calls + $4",
            vec![Bind::I(api_calls)],
            "reconcile",
            "no transfer found at Dots for this item",
        )
        .await
    }

    /// A non-transfer step failed in a retryable way: note it and retry at `next_attempt_at`.
    pub async fn record_retry(
        &self,
        id: ItemId,
        state: ItemState,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.update_in_state(
            id,
            state,
            "last_error = $4, attempts = attempts + 1, next_attempt_at = $5",
            vec![Bind::S(error.into()), Bind::I(next_attempt_at)],
            "retry",
            error,
        )
        .await
    }

    /// Payout-flow creation has no idempotency key at Dots: record that a call is open first.
    pub async fn record_payout_intent(&self, id: ItemId) -> Result<Option<ItemRecord>, StoreError> {
        self.update_in_state(
            id,
            ItemState::Transferred,
            PAYOUT_INTENT_SET,
            vec![],
            "payout_intent",
            PAYOUT_INTENT_DETAIL,
        )
        .await
    }

    /// The payout-flow call failed before reaching Dots (retryable or refused): no flow was made.
    pub async fn close_payout_call(&self, id: ItemId) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query("UPDATE items SET payout_call_open = 0 WHERE id = $1")
            .bind(id.to_string()).execute(p).await?; });
        Ok(())
    }

    /// transferred -> awaiting_payout: the payout flow exists; its link is the payee's.
    /// `release`: a job's last write releases its lease in the same statement.
    pub async fn record_payout_flow(
        &self,
        id: ItemId,
        flow_id: Uuid,
        link: &str,
        next_poll_at: i64,
        release: Option<&str>,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let detail = format!("payout flow {flow_id} created: {link}");
        let mut c = Change::new(
            "payout_flow_id = $5, payout_link = $6, payout_call_open = 0, next_poll_at = $7, polls = 0,
             attempts = 0, next_attempt_at = 0, last_error = NULL",
            vec![Bind::S(flow_id.to_string()), Bind::S(link.into()), Bind::I(next_poll_at)],
            &detail,
        );
        c.release = release;
        let (from, to) = (ItemState::Transferred, ItemState::AwaitingPayout);
        self.transition_with(id, from, to, c).await
    }

    /// awaiting_payout -> completed.
    pub async fn complete_item(
        &self,
        id: ItemId,
        api_calls: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.transition(
            id,
            ItemState::AwaitingPayout,
            ItemState::Completed,
            "next_poll_at = NULL, api_calls = api_calls + $5",
            vec![Bind::I(api_calls)],
            "payee completed the payout flow",
        )
        .await
    }

    /// Any state -> failed, with the reason kept as `last_error`.
    pub async fn fail_item(
        &self,
        id: ItemId,
        from: ItemState,
        reason: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.transition(
            id,
            from,
            ItemState::Failed,
            "last_error = $5, next_poll_at = NULL, transfer_call_open = 0",
            vec![Bind::S(reason.into())],
            reason,
        )
        .await
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
                "attempts = 0, next_attempt_at = 0, last_error = NULL",
                vec![],
                "rerun by operator: transfer already made, redoing the payout flow",
            )
            .await
        } else {
            self.transition(
                id,
                ItemState::Failed,
                ItemState::Pending,
                "attempts = 0, next_attempt_at = 0, last_error = NULL,
                 transfer_outcome = CASE WHEN transfer_key IS NULL THEN NULL ELSE 'rerun' END",
                vec![],
                "rerun by operator: any earlier transfer attempt is reconciled before a new one",
            )
            .await
        }
    }

    /// Cancels an item that has not transferred; `Ok(None)`: it was not in `from` any more.
    pub async fn cancel_item(
        &self,
        id: ItemId,
        from: ItemState,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.transition(
            id,
            from,
            ItemState::Canceled,
            "next_poll_at = NULL",
            vec![],
            "canceled by operator",
        )
        .await
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
            "next_poll_at = NULL, attempts = 0, next_attempt_at = 0, payout_call_open = 0",
            vec![],
            "new flow link requested by operator",
        )
        .await
    }
}

/// A bind value for the dynamic `SET` fragments above.
enum Bind {
    I(i64),
    S(String),
}

/// One guarded write: its `SET` fragment and binds, its event's detail, and what else goes
/// in the same transaction when (and only when) the guard matches.
struct Change<'a> {
    set: &'a str,
    binds: Vec<Bind>,
    detail: &'a str,
    /// Remember the payee's Dots user for later batches.
    payee: Option<(&'a str, Uuid)>,
    /// A second event (kind, detail) after the state change's: the intent of the call that
    /// follows, committed with the state change before it.
    also: Option<(&'a str, &'a str)>,
    /// Release this owner's lease in the same `UPDATE`: the job's last write to the item.
    release: Option<&'a str>,
}

impl<'a> Change<'a> {
    fn new(set: &'a str, binds: Vec<Bind>, detail: &'a str) -> Change<'a> {
        Change {
            set,
            binds,
            detail,
            payee: None,
            also: None,
            release: None,
        }
    }
}

/// The `SET` of pending|onboarding -> transferring; `$5`: the Dots user id.
const BEGIN_TRANSFER_SET: &str = "dots_user_id = $5, next_poll_at = NULL, next_attempt_at = 0";

/// The `SET` of phase 3's success; `$5`: the Dots transfer id.
const TRANSFER_DONE_SET: &str = "transfer_id = $5, transfer_call_open = 0, transfer_outcome = 'ok', attempts = 0, next_attempt_at = 0, last_error = NULL";

/// The `SET` of a payout flow's intent (no binds).
const PAYOUT_INTENT_SET: &str = "payout_call_open = 1, api_calls = api_calls + 1";
const PAYOUT_INTENT_DETAIL: &str = "POST /v2/flows steps [payout]";

/// Phase 1's `SET` (see [`Store::record_transfer_intent`]): `$n` the key, `$n+1` its
/// generation, `$n+2` its birth time.
fn intent_set(n: usize) -> String {
    format!(
        "transfer_key = ${n}, transfer_key_gen = ${}, transfer_key_at = ${}, transfer_call_open = 1,
         transfer_attempts = transfer_attempts + 1, api_calls = api_calls + 1",
        n + 1,
        n + 2
    )
}

fn intent_detail(key: IdempotencyKey, generation: u32) -> String {
    format!("POST /v2/transfers with idempotency_key {key} (generation {generation})")
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
