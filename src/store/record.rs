//! The item row: [`ItemRow`] is the raw `sqlx` row, private to the store; every read and every
//! `RETURNING` converts it once, here, into the typed [`ItemRecord`] the rest of payrun uses.
//! A value the domain types refuse is a [`StoreError::Corrupt`] naming the column.

use uuid::Uuid;

use super::StoreError;
use crate::batch::{BatchId, ChunkId, ItemId};
use crate::item::{IdempotencyKey, ItemState, TransferOutcome};
use crate::money::Cents;

/// The columns of [`ItemRow`], in its order, for `SELECT` and `RETURNING`.
pub(super) const ITEM_COLUMNS: &str = "id, batch_id, line, payee_id, amount_cents, memo, first_name, last_name,
    email, country_code, phone_number, dots_user_id, state, onboarding_flow_id, onboarding_link,
    transfer_key, transfer_key_gen, transfer_key_at, transfer_call_open, transfer_outcome,
    transfer_attempts, transfer_id, payout_flow_id, payout_link, payout_call_open, attempts,
    next_attempt_at, next_poll_at, polls, poll_errors, lease_owner, lease_until, last_error, api_calls,
    updated_at, step_since, step_first_error, event_version, reminders, reminder_due_at, reminder_pending,
    unclaimed_at, chunk_id";

/// An item row as stored (text ids, integer flags).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct ItemRow {
    id: String,
    pub(super) batch_id: String,
    line: i64,
    payee_id: String,
    amount_cents: i64,
    memo: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    country_code: Option<String>,
    phone_number: Option<String>,
    dots_user_id: Option<String>,
    state: String,
    onboarding_flow_id: Option<String>,
    onboarding_link: Option<String>,
    transfer_key: Option<String>,
    transfer_key_gen: i64,
    transfer_key_at: Option<i64>,
    transfer_call_open: i64,
    transfer_outcome: Option<String>,
    transfer_attempts: i64,
    transfer_id: Option<String>,
    payout_flow_id: Option<String>,
    payout_link: Option<String>,
    payout_call_open: i64,
    attempts: i64,
    next_attempt_at: i64,
    next_poll_at: Option<i64>,
    polls: i64,
    poll_errors: i64,
    lease_owner: Option<String>,
    lease_until: i64,
    last_error: Option<String>,
    api_calls: i64,
    updated_at: i64,
    step_since: Option<i64>,
    step_first_error: Option<String>,
    event_version: i64,
    reminders: i64,
    reminder_due_at: Option<i64>,
    reminder_pending: Option<i64>,
    unclaimed_at: Option<i64>,
    chunk_id: Option<String>,
}

/// An item as stored, parsed: ids, state, amount, key and outcome are domain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    pub id: ItemId,
    pub batch_id: BatchId,
    pub line: i64,
    pub payee_id: String,
    pub amount: Cents,
    pub memo: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub country_code: Option<String>,
    pub phone_number: Option<String>,
    pub dots_user_id: Option<Uuid>,
    pub state: ItemState,
    pub onboarding_flow_id: Option<Uuid>,
    pub onboarding_link: Option<String>,
    pub transfer_key: Option<IdempotencyKey>,
    pub transfer_key_gen: u32,
    pub transfer_key_at: Option<i64>,
    /// A transfer call's intent is committed and its outcome is not (yet).
    pub transfer_call_open: bool,
    pub transfer_outcome: Option<TransferOutcome>,
    pub transfer_attempts: i64,
    pub transfer_id: Option<Uuid>,
    pub payout_flow_id: Option<Uuid>,
    pub payout_link: Option<String>,
    /// A payout-flow call's intent is committed and its flow id is not (yet).
    pub payout_call_open: bool,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub next_poll_at: Option<i64>,
    /// Polls of the current flow that read it (they move it along its poll schedule).
    pub polls: i64,
    /// Polls of the current flow that failed in a row since the last one that read it.
    pub poll_errors: i64,
    pub lease_owner: Option<String>,
    pub lease_until: i64,
    pub last_error: Option<String>,
    pub api_calls: i64,
    pub updated_at: i64,
    /// When the current step first failed (engine clock); `None` after a success or a step
    /// change. The step gives up `worker.give_up_after_secs` after it.
    pub step_since: Option<i64>,
    /// That first failure, for the history in the reason of an item that gives up.
    pub step_first_error: Option<String>,
    /// The version of the last outbound event about this item (0: none yet; see `events`).
    pub event_version: i64,
    /// Reminders sent for the open payout flow so far (`jobs::remind`).
    pub reminders: i64,
    /// When the next reminder (or, after the last, the unclaimed mark) is due (engine clock).
    pub reminder_due_at: Option<i64>,
    /// The reminder whose fresh flow is being made (the item stepped back for it).
    pub reminder_pending: Option<i64>,
    /// When the item was marked unclaimed: still open after its last reminder.
    pub unclaimed_at: Option<i64>,
    /// The chunk its first transfer went in (batch mode, `jobs::chunk`); `None`: sent alone.
    pub chunk_id: Option<ChunkId>,
}

fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("items.{column}: {e}"))
}

fn parse<T: std::str::FromStr>(column: &str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| corrupt(column, e))
}

fn parse_opt<T: std::str::FromStr>(column: &str, s: Option<String>) -> Result<Option<T>, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.as_deref().map(|v| parse(column, v)).transpose()
}

fn flag(column: &str, v: i64) -> Result<bool, StoreError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(corrupt(column, format!("{v} is not 0 or 1"))),
    }
}

impl TryFrom<ItemRow> for ItemRecord {
    type Error = StoreError;

    fn try_from(r: ItemRow) -> Result<ItemRecord, StoreError> {
        Ok(ItemRecord {
            id: parse("id", &r.id)?,
            batch_id: parse("batch_id", &r.batch_id)?,
            line: r.line,
            payee_id: r.payee_id,
            amount: Cents::from_stored(r.amount_cents).map_err(|e| corrupt("amount_cents", e))?,
            memo: r.memo,
            first_name: r.first_name,
            last_name: r.last_name,
            email: r.email,
            country_code: r.country_code,
            phone_number: r.phone_number,
            dots_user_id: parse_opt("dots_user_id", r.dots_user_id)?,
            state: parse("state", &r.state)?,
            onboarding_flow_id: parse_opt("onboarding_flow_id", r.onboarding_flow_id)?,
            onboarding_link: r.onboarding_link,
            transfer_key: parse_opt("transfer_key", r.transfer_key)?,
            transfer_key_gen: u32::try_from(r.transfer_key_gen)
                .map_err(|e| corrupt("transfer_key_gen", e))?,
            transfer_key_at: r.transfer_key_at,
            transfer_call_open: flag("transfer_call_open", r.transfer_call_open)?,
            transfer_outcome: parse_opt("transfer_outcome", r.transfer_outcome)?,
            transfer_attempts: r.transfer_attempts,
            transfer_id: parse_opt("transfer_id", r.transfer_id)?,
            payout_flow_id: parse_opt("payout_flow_id", r.payout_flow_id)?,
            payout_link: r.payout_link,
            payout_call_open: flag("payout_call_open", r.payout_call_open)?,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            next_poll_at: r.next_poll_at,
            polls: r.polls,
            poll_errors: r.poll_errors,
            lease_owner: r.lease_owner,
            lease_until: r.lease_until,
            last_error: r.last_error,
            api_calls: r.api_calls,
            updated_at: r.updated_at,
            step_since: r.step_since,
            step_first_error: r.step_first_error,
            event_version: r.event_version,
            reminders: r.reminders,
            reminder_due_at: r.reminder_due_at,
            reminder_pending: r.reminder_pending,
            unclaimed_at: r.unclaimed_at,
            chunk_id: parse_opt("chunk_id", r.chunk_id)?,
        })
    }
}

/// Converts a fetched row, if any.
pub(super) fn typed(row: Option<ItemRow>) -> Result<Option<ItemRecord>, StoreError> {
    row.map(ItemRecord::try_from).transpose()
}

/// Converts fetched rows.
pub(super) fn typed_all(rows: Vec<ItemRow>) -> Result<Vec<ItemRecord>, StoreError> {
    rows.into_iter().map(ItemRecord::try_from).collect()
}
