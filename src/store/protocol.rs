//! The payout protocol's writes to an item: one guarded transition or in-state update per
//! step of the job (and of the poller and webhooks), built on the helpers in
//! `transitions.rs`. See ARCHITECTURE.md, "Transfer safety protocol".

use uuid::Uuid;

use super::transitions::{Bind, Change};
use super::{ItemRecord, Store, StoreError, on_pool};
use crate::batch::ItemId;
use crate::item::{IdempotencyKey, ItemState};

pub use crate::item::CallOutcome;

impl Store {
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
             attempts = 0, next_attempt_at = 1, last_error = NULL",
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
}

/// The `SET` of pending|onboarding -> transferring; `$5`: the Dots user id.
const BEGIN_TRANSFER_SET: &str = "dots_user_id = $5, next_poll_at = NULL, next_attempt_at = 1";

/// The `SET` of phase 3's success; `$5`: the Dots transfer id.
const TRANSFER_DONE_SET: &str = "transfer_id = $5, transfer_call_open = 0, transfer_outcome = 'ok', attempts = 0, next_attempt_at = 1, last_error = NULL";

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
