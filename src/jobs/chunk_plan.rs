//! The decisions of a chunk (`jobs::chunk`), pure: which answer of a transfer batch belongs to
//! which item ([`match_answers`]), what an item's answer means for it ([`item_next`]), and
//! what a failed call of the whole chunk leads to ([`after_chunk_failure`]). No I/O; the
//! chunker carries them out, and `chunk_plan_tests.rs` lists every row.
//!
//! The rules are the single transfer's (`plan`), applied per item: a transfer made is
//! recorded; a refusal of one item fails, holds or reconciles only that item; a call whose
//! outcome is unclear is reconciled before anything is sent again, and never with new keys.

use uuid::Uuid;

use super::plan::{AfterFailure, after_failure};
use crate::config::WorkerSettings;
use crate::dots::client::ErrorClass;
use crate::dots::types::{TransferBatch, TransferBatchItem, TransferBatchItemRequest};
use crate::item::CallOutcome;
use crate::store::ItemRecord;

/// What a transfer batch says about one item of the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemAnswer {
    /// Dots made (or, replaying, names) the item's transfer.
    Made(Uuid),
    /// Dots refused the item: `items[].error`.
    Refused(String),
    /// No answer for the item (not in the batch, or an answer that does not match it).
    None,
}

impl ItemAnswer {
    /// The better-informed of two answers about one item (from two batches Dots lists for the
    /// chunk): a transfer made wins, then a refusal.
    pub fn or(self, other: ItemAnswer) -> ItemAnswer {
        match (self, other) {
            (ItemAnswer::Made(t), _) | (_, ItemAnswer::Made(t)) => ItemAnswer::Made(t),
            (ItemAnswer::Refused(e), _) | (_, ItemAnswer::Refused(e)) => ItemAnswer::Refused(e),
            _ => ItemAnswer::None,
        }
    }
}

/// The answer for each sent item, in the order sent. A response item belongs to a sent item by
/// its idempotency key when Dots echoes it, else by our `payrun_item_id` metadata, else by
/// position when the response has exactly the sent items; and only if it names the same user
/// and amount (the sign aside). Anything else is no answer: that item reconciles alone.
pub fn match_answers(sent: &[TransferBatchItemRequest], got: &TransferBatch) -> Vec<ItemAnswer> {
    let same_len = got.items.len() == sent.len();
    sent.iter()
        .enumerate()
        .map(|(k, s)| {
            let by_key = got
                .items
                .iter()
                .find(|g| g.idempotency_key == Some(s.idempotency_key));
            let item_id = metadata_str(s.metadata.as_ref(), "payrun_item_id");
            let by_meta = || {
                item_id.and_then(|want| {
                    got.items
                        .iter()
                        .find(|g| metadata_str(g.metadata.as_ref(), "payrun_item_id") == Some(want))
                })
            };
            let by_position = || same_len.then(|| &got.items[k]);
            let found = by_key.or_else(by_meta).or_else(by_position);
            match found {
                Some(g) if is_about(g, s) => answer_of(g),
                _ => ItemAnswer::None,
            }
        })
        .collect()
}

fn metadata_str<'a>(m: Option<&'a serde_json::Value>, key: &str) -> Option<&'a str> {
    m.and_then(|m| m.get(key)).and_then(|v| v.as_str())
}

/// The response item names the sent item's user and amount (Dots may drop the sign) and, when
/// it echoes a key, the sent key.
fn is_about(g: &TransferBatchItem, s: &TransferBatchItemRequest) -> bool {
    g.user_id == s.user_id
        && g.amount.unsigned_abs() == s.amount.unsigned_abs()
        && g.idempotency_key.is_none_or(|k| k == s.idempotency_key)
}

fn answer_of(g: &TransferBatchItem) -> ItemAnswer {
    match (&g.transfer_id, &g.error) {
        (Some(t), _) => ItemAnswer::Made(*t),
        (None, Some(e)) => ItemAnswer::Refused(e.clone()),
        (None, None) => ItemAnswer::None,
    }
}

/// How an item's `error` reads: a key seen before, the App wallet short, or a refusal of the
/// item itself (an unknown user, invalid input).
pub fn classify_item_error(error: &str) -> CallOutcome {
    let e = error.to_ascii_lowercase();
    if e.contains("idempotency") || e.contains("duplicate") {
        CallOutcome::DuplicateKey
    } else if e.contains("insufficient-funds") || e.contains("insufficient funds") {
        CallOutcome::InsufficientFunds
    } else {
        CallOutcome::Permanent
    }
}

/// What an item of a chunk does after the chunk's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemNext {
    /// Record the transfer: `transferred`, then its own job makes the payout flow.
    Transferred(Uuid),
    /// Dots refused its key as used: close the call as a duplicate; its job reconciles it by
    /// the user's transfers at once (the single path's `ReconcileNext`).
    ReconcileNow,
    /// Refused, and nothing can have moved: fail the item.
    Fail(CallOutcome),
    /// The App wallet is short: the call closed with no attempt counted, every batch still to
    /// pay held (`jobs::funds`).
    HoldForFunds,
    /// Unclear whether its transfer was made: the call stays open, and its job reconciles it by
    /// the user's transfers before sending its same key again.
    ReconcileAlone,
}

/// The decision for one item (`item` as it was before the chunk's intent) given its answer.
pub fn item_next(
    item: &ItemRecord,
    answer: &ItemAnswer,
    now: i64,
    settings: &WorkerSettings,
) -> ItemNext {
    let error = match answer {
        ItemAnswer::Made(t) => return ItemNext::Transferred(*t),
        ItemAnswer::None => return ItemNext::ReconcileAlone,
        ItemAnswer::Refused(e) => e,
    };
    let outcome = classify_item_error(error);
    match after_failure(item, outcome, now, settings) {
        AfterFailure::ReconcileNext => ItemNext::ReconcileNow,
        AfterFailure::HoldForFunds => ItemNext::HoldForFunds,
        AfterFailure::Fail => ItemNext::Fail(outcome),
        // Not a definite refusal of a first attempt: look at Dots first, alone.
        AfterFailure::ReconcileThenFail | AfterFailure::RetryLater => ItemNext::ReconcileAlone,
    }
}

/// Where a chunk's failed call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkFailure {
    pub class: ErrorClass,
    /// A refusal because the App wallet is short (`transaction-insufficient-funds`).
    pub funds: bool,
    /// Held: its circuit is open, or Dots refused our credentials (`Engine::held_by_circuit`).
    pub held: bool,
    /// Calls made for the chunk so far, this one included.
    pub sends: u32,
    /// The chunk was looked for at Dots after this call, and not found.
    pub not_found: bool,
}

/// What a chunk's failed call leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkNext {
    /// Send the same request again (the same item keys and chunk key), after the backoff.
    SendAgain,
    /// The call may have made transfers: look for the transfer batch by our chunk metadata,
    /// and go on from what it says.
    Reconcile,
    /// Nothing moved: close every item's call with this outcome; each item goes on alone, with
    /// its same key. `charged`: an attempt counted (not when held or Dots refused the chunk
    /// as a whole, which is no item's fault).
    CloseAll { outcome: CallOutcome, charged: bool },
    /// Unclear and not settled by looking: every item's call stays open; each item reconciles
    /// alone by its user's transfers before its same key is sent again.
    ReleaseOpen { charged: bool },
    /// The App wallet is short: every item waits, no attempt counted; batches held for funds.
    HoldForFunds,
}

/// The decision after a chunk's call failed; `max_sends` bounds the calls of one chunk.
pub fn after_chunk_failure(f: ChunkFailure, max_sends: u32) -> ChunkNext {
    let unclear = matches!(f.class, ErrorClass::Ambiguous | ErrorClass::DuplicateKey);
    if f.funds {
        return ChunkNext::HoldForFunds;
    }
    if f.held {
        // No call while the circuit is open: an unclear call is reconciled later, per item.
        return if unclear {
            ChunkNext::ReleaseOpen { charged: false }
        } else {
            ChunkNext::CloseAll {
                outcome: CallOutcome::Retryable,
                charged: false,
            }
        };
    }
    let again = f.sends < max_sends;
    match f.class {
        // Dots refused the batch as a whole (not an item): nothing moved; the items go alone.
        ErrorClass::Permanent => ChunkNext::CloseAll {
            outcome: CallOutcome::Permanent,
            charged: false,
        },
        ErrorClass::Retryable if again => ChunkNext::SendAgain,
        ErrorClass::Retryable => ChunkNext::CloseAll {
            outcome: CallOutcome::Retryable,
            charged: true,
        },
        _ if !f.not_found => ChunkNext::Reconcile,
        _ if again => ChunkNext::SendAgain,
        _ => ChunkNext::ReleaseOpen { charged: true },
    }
}

#[cfg(test)]
#[path = "chunk_plan_tests.rs"]
mod tests;
