//! Items: leases, the guarded state transitions of the payout protocol, the event log and the
//! queries the poller and the reports need.
//!
//! Every method that changes `state` does so with `WHERE state = <expected>` and writes the
//! event in the same transaction; it returns `Ok(false)` when the item was no longer in the
//! expected state (another worker got there first), never a silent overwrite.

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::{Store, StoreError, now_ms, on_pool};
use crate::batch::{BatchId, ItemId};
use crate::item::{IdempotencyKey, ItemState};

const ITEM_COLUMNS: &str = "id, batch_id, line, payee_id, amount_cents, memo, first_name, last_name,
    email, country_code, phone_number, dots_user_id, state, onboarding_flow_id, onboarding_link,
    transfer_key, transfer_key_gen, transfer_key_at, transfer_call_open, transfer_outcome,
    transfer_attempts, transfer_id, payout_flow_id, payout_link, payout_call_open, attempts,
    next_attempt_at, next_poll_at, polls, lease_owner, lease_until, last_error, api_calls, updated_at";

/// An item row as stored. Fields are raw; use the accessor methods for parsed values.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemRecord {
    pub id: String,
    pub batch_id: String,
    pub line: i64,
    pub payee_id: String,
    pub amount_cents: i64,
    pub memo: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub country_code: Option<String>,
    pub phone_number: Option<String>,
    pub dots_user_id: Option<String>,
    pub state: String,
    pub onboarding_flow_id: Option<String>,
    pub onboarding_link: Option<String>,
    pub transfer_key: Option<String>,
    pub transfer_key_gen: i64,
    pub transfer_key_at: Option<i64>,
    pub transfer_call_open: i64,
    pub transfer_outcome: Option<String>,
    pub transfer_attempts: i64,
    pub transfer_id: Option<String>,
    pub payout_flow_id: Option<String>,
    pub payout_link: Option<String>,
    pub payout_call_open: i64,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub next_poll_at: Option<i64>,
    pub polls: i64,
    pub lease_owner: Option<String>,
    pub lease_until: i64,
    pub last_error: Option<String>,
    pub api_calls: i64,
    pub updated_at: i64,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn parse_uuid(what: &str, s: &Option<String>) -> Result<Option<Uuid>, StoreError> {
    s.as_deref()
        .map(|v| Uuid::parse_str(v).map_err(|e| corrupt(what, e)))
        .transpose()
}

impl ItemRecord {
    pub fn item_id(&self) -> Result<ItemId, StoreError> {
        self.id.parse().map_err(|e| corrupt("item id", e))
    }
    pub fn batch(&self) -> Result<BatchId, StoreError> {
        self.batch_id.parse().map_err(|e| corrupt("batch id", e))
    }
    pub fn item_state(&self) -> Result<ItemState, StoreError> {
        self.state.parse().map_err(|e| corrupt("state", e))
    }
    pub fn user_id(&self) -> Result<Option<Uuid>, StoreError> {
        parse_uuid("dots_user_id", &self.dots_user_id)
    }
    pub fn key(&self) -> Result<Option<IdempotencyKey>, StoreError> {
        self.transfer_key
            .as_deref()
            .map(|k| k.parse().map_err(|e| corrupt("transfer_key", e)))
            .transpose()
    }
    pub fn onboarding_flow(&self) -> Result<Option<Uuid>, StoreError> {
        parse_uuid("onboarding_flow_id", &self.onboarding_flow_id)
    }
    pub fn payout_flow(&self) -> Result<Option<Uuid>, StoreError> {
        parse_uuid("payout_flow_id", &self.payout_flow_id)
    }
}

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
    pub async fn item(&self, id: ItemId) -> Result<Option<ItemRecord>, StoreError> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM items WHERE id = $1");
        Ok(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRecord>(AssertSqlSafe(sql.clone()))
            .bind(id.to_string()).fetch_optional(p).await?),
        )
    }

    /// The item waiting on this flow (onboarding or payout), if any.
    pub async fn item_by_flow(&self, flow_id: Uuid) -> Result<Option<ItemRecord>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM items WHERE onboarding_flow_id = $1 OR payout_flow_id = $1
             ORDER BY updated_at DESC LIMIT 1"
        );
        Ok(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRecord>(AssertSqlSafe(sql.clone()))
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
        Ok(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRecord>(AssertSqlSafe(sql.clone()))
            .bind(batch.to_string()).fetch_all(p).await?),
        )
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
    /// one. Returns the item as it is under the lease. This is what stops two workers (or two
    /// deliveries of one job) from working one item at the same time.
    pub async fn try_lease(
        &self,
        id: ItemId,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let now = now_ms();
        let n = on_pool!(&self.pool, p => sqlx::query(
            "UPDATE items SET lease_owner = $1, lease_until = $2
             WHERE id = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)")
            .bind(owner).bind(now + lease_ms).bind(id.to_string()).bind(now)
            .execute(p).await?.rows_affected());
        if n == 0 {
            return Ok(None);
        }
        self.item(id).await
    }

    pub async fn release_lease(&self, id: ItemId, owner: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE items SET lease_owner = NULL, lease_until = 0, queued_until = 0 WHERE id = $1 AND lease_owner = $2")
            .bind(id.to_string()).bind(owner).execute(p).await?; });
        Ok(())
    }

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

    /// Moves the item `from` -> `to`, applying `set` (a SQL `SET` fragment using `$4`.. for
    /// `binds`) in the same statement, and logs the event. `Ok(false)`: not in `from` any more.
    async fn transition(
        &self,
        id: ItemId,
        from: ItemState,
        to: ItemState,
        set: &str,
        binds: Vec<Bind>,
        detail: &str,
    ) -> Result<bool, StoreError> {
        if !from.can_become(to) {
            return Err(StoreError::IllegalTransition { from, to });
        }
        let now = now_ms();
        let sep = if set.is_empty() { "" } else { ", " };
        let sql = format!(
            "UPDATE items SET state = $1, updated_at = $2{sep}{set} WHERE id = $3 AND state = $4"
        );
        let moved = on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let mut q = sqlx::query(AssertSqlSafe(sql.clone())).bind(to.as_str()).bind(now).bind(id.to_string()).bind(from.as_str());
            for b in binds {
                q = match b {
                    Bind::I(v) => q.bind(v),
                    Bind::S(v) => q.bind(v),
                };
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                sqlx::query("INSERT INTO item_events (item_id, at, kind, from_state, to_state, detail)
                             VALUES ($1, $2, 'state', $3, $4, $5)")
                    .bind(id.to_string()).bind(now).bind(from.as_str()).bind(to.as_str()).bind(detail)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            n == 1
        });
        Ok(moved)
    }

    /// Updates columns without a state change, guarded by the current state, with an event.
    async fn update_in_state(
        &self,
        id: ItemId,
        state: ItemState,
        set: &str,
        binds: Vec<Bind>,
        kind: &str,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let sql = format!("UPDATE items SET updated_at = $1, {set} WHERE id = $2 AND state = $3");
        let done = on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let mut q = sqlx::query(AssertSqlSafe(sql.clone())).bind(now).bind(id.to_string()).bind(state.as_str());
            for b in binds {
                q = match b {
                    Bind::I(v) => q.bind(v),
                    Bind::S(v) => q.bind(v),
                };
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                sqlx::query("INSERT INTO item_events (item_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
                    .bind(id.to_string()).bind(now).bind(kind).bind(detail)
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
            n == 1
        });
        Ok(done)
    }

    /// pending -> onboarding: the onboarding flow exists at Dots; poll it from `next_poll_at`.
    pub async fn begin_onboarding(
        &self,
        id: ItemId,
        flow_id: Uuid,
        link: &str,
        next_poll_at: i64,
    ) -> Result<bool, StoreError> {
        self.transition(
            id,
            ItemState::Pending,
            ItemState::Onboarding,
            "onboarding_flow_id = $5, onboarding_link = $6, next_poll_at = $7, polls = 0, api_calls = api_calls + 1",
            vec![Bind::S(flow_id.to_string()), Bind::S(link.into()), Bind::I(next_poll_at)],
            &format!("onboarding flow {flow_id} created"),
        )
        .await
    }

    /// pending|onboarding -> transferring: the payee's Dots user is known (and remembered for
    /// later batches). No key yet: [`Store::record_transfer_intent`] stores it before the call.
    pub async fn begin_transfer(
        &self,
        id: ItemId,
        from: ItemState,
        payee_id: &str,
        user_id: Uuid,
    ) -> Result<bool, StoreError> {
        self.remember_payee(payee_id, user_id).await?;
        self.transition(
            id,
            from,
            ItemState::Transferring,
            "dots_user_id = $5, next_poll_at = NULL, next_attempt_at = 1",
            vec![Bind::S(user_id.to_string())],
            &format!("payee is Dots user {user_id}"),
        )
        .await
    }

    pub async fn remember_payee(&self, payee_id: &str, user_id: Uuid) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "INSERT INTO payees (payee_id, dots_user_id, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (payee_id) DO UPDATE SET dots_user_id = excluded.dots_user_id, updated_at = excluded.updated_at")
            .bind(payee_id).bind(user_id.to_string()).bind(now_ms()).execute(p).await?; });
        Ok(())
    }

    pub async fn payee_user(&self, payee_id: &str) -> Result<Option<Uuid>, StoreError> {
        let s: Option<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT dots_user_id FROM payees WHERE payee_id = $1").bind(payee_id).fetch_optional(p).await?);
        parse_uuid("payees.dots_user_id", &s)
    }

    /// Phase 1 of a transfer: commit the key (and its birth time when it is new) and mark the
    /// call open, before any byte goes to Dots.
    pub async fn record_transfer_intent(
        &self,
        id: ItemId,
        key: IdempotencyKey,
        generation: u32,
        key_at: i64,
    ) -> Result<bool, StoreError> {
        self.update_in_state(
            id,
            ItemState::Transferring,
            "transfer_key = $4, transfer_key_gen = $5, transfer_key_at = $6, transfer_call_open = 1,
             transfer_attempts = transfer_attempts + 1, api_calls = api_calls + 1",
            vec![Bind::S(key.to_string()), Bind::I(generation as i64), Bind::I(key_at)],
            "transfer_intent",
            &format!("POST /v2/transfers with idempotency_key {key} (generation {generation})"),
        )
        .await
    }

    /// Phase 3, success: transferring -> transferred.
    pub async fn record_transfer_done(
        &self,
        id: ItemId,
        transfer_id: Uuid,
        how: &str,
    ) -> Result<bool, StoreError> {
        self.transition(
            id,
            ItemState::Transferring,
            ItemState::Transferred,
            "transfer_id = $5, transfer_call_open = 0, transfer_outcome = 'ok', attempts = 0, next_attempt_at = 1, last_error = NULL",
            vec![Bind::S(transfer_id.to_string())],
            &format!("transfer {transfer_id} {how}"),
        )
        .await
    }

    /// Phase 3, no success: the call is closed with its outcome; retry at `next_attempt_at`.
    pub async fn record_transfer_failure(
        &self,
        id: ItemId,
        outcome: CallOutcome,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<bool, StoreError> {
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
    ) -> Result<bool, StoreError> {
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
    ) -> Result<bool, StoreError> {
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
    pub async fn record_payout_intent(&self, id: ItemId) -> Result<bool, StoreError> {
        self.update_in_state(
            id,
            ItemState::Transferred,
            "payout_call_open = 1, api_calls = api_calls + 1",
            vec![],
            "payout_intent",
            "POST /v2/flows steps [payout]",
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
    pub async fn record_payout_flow(
        &self,
        id: ItemId,
        flow_id: Uuid,
        link: &str,
        next_poll_at: i64,
    ) -> Result<bool, StoreError> {
        self.transition(
            id,
            ItemState::Transferred,
            ItemState::AwaitingPayout,
            "payout_flow_id = $5, payout_link = $6, payout_call_open = 0, next_poll_at = $7, polls = 0,
             attempts = 0, next_attempt_at = 1, last_error = NULL",
            vec![Bind::S(flow_id.to_string()), Bind::S(link.into()), Bind::I(next_poll_at)],
            &format!("payout flow {flow_id} created: {link}"),
        )
        .await
    }

    /// awaiting_payout -> completed.
    pub async fn complete_item(&self, id: ItemId, api_calls: i64) -> Result<bool, StoreError> {
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
    ) -> Result<bool, StoreError> {
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

    /// A poll that found the flow still open: poll again at `next_poll_at`.
    pub async fn record_poll(
        &self,
        id: ItemId,
        state: ItemState,
        next_poll_at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE items SET next_poll_at = $1, polls = polls + 1, api_calls = api_calls + 1
             WHERE id = $2 AND state = $3")
            .bind(next_poll_at).bind(id.to_string()).bind(state.as_str()).execute(p).await?; });
        Ok(())
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
        Ok(
            on_pool!(&self.pool, p => sqlx::query_as::<_, ItemRecord>(AssertSqlSafe(sql.clone()))
            .bind(hold_until).bind(now).bind(limit).fetch_all(p).await?),
        )
    }

    /// Workable items of one batch whatever their retry time (for stepping a batch by hand).
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
    pub async fn batch_approved(&self, batch_id: &str) -> Result<bool, StoreError> {
        let s: Option<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT status FROM batches WHERE id = $1").bind(batch_id).fetch_optional(p).await?);
        Ok(s.as_deref() == Some("approved"))
    }

    /// Operator rerun of a failed item: back to `transferred` when the money already moved
    /// (only the payout flow is redone), else to `pending` with any earlier transfer attempt
    /// marked for reconciliation before a new call.
    pub async fn rerun_item(&self, id: ItemId, has_transfer: bool) -> Result<bool, StoreError> {
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

    /// Cancels an item that has not transferred; `Ok(false)`: it was not in `from` any more.
    pub async fn cancel_item(&self, id: ItemId, from: ItemState) -> Result<bool, StoreError> {
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
    pub async fn renew_flow(&self, id: ItemId, from: ItemState) -> Result<bool, StoreError> {
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

    /// Makes a waiting retry due now (an operator's "retry now"; tests use it to skip backoff).
    pub async fn retry_now(&self, id: ItemId) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query("UPDATE items SET next_attempt_at = 1 WHERE id = $1")
            .bind(id.to_string()).execute(p).await?; });
        Ok(())
    }
}

/// A bind value for the dynamic `SET` fragments above.
enum Bind {
    I(i64),
    S(String),
}
