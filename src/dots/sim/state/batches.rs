//! Transfer batches (`POST /v2/transfer-batches`): many App→user transfers made in one
//! operation, each item exactly as a single transfer would be.
//!
//! Guarantees:
//! - A batch is one atomic operation under the state lock: every item is checked and committed
//!   in request order (each sees the wallets as the items before it left them), then the batch
//!   and its key are recorded. Nothing else interleaves.
//! - Items share the single transfers' idempotency store: an item key used within 24 h by a
//!   single transfer or by an item of any batch is a duplicate, and a batch item's key is a
//!   duplicate for a later single transfer.
//! - An item that cannot be made gets `error` and no transfer, and its key is *not* recorded
//!   (as a refused single transfer's is not), so it may be sent again with the same key:
//!   [`ITEM_DUPLICATE_KEY`]`: <key>` (in `Replay` mode the item instead reports the existing
//!   transfer's id and no error), [`ITEM_UNKNOWN_USER`]`: <user_id>`, or exactly
//!   [`ITEM_INSUFFICIENT_FUNDS`]. The other items go through.
//! - A repeated batch key (within 24 h) is answered like a duplicate single transfer (409
//!   `duplicate-idempotency-key`, or the first batch again in `Replay` mode) before any item is
//!   looked at.
//! - Status: with `transfer_batch_complete_after_secs` = 0 a batch's transfers are born as a
//!   single transfer would be (`completed`, or `pending` for a held user) and the batch is
//!   `completed` at once. Otherwise its transfers are born `pending` (money moved, as for a held
//!   user) and the batch, and they, turn `completed` once the sim clock passes the delay
//!   (`settle_batches`, run before every read and by the payee ticker). A batch is `pending`
//!   while any of its items' transfers is.

use super::transfers::Refusal;
use super::{KEY_WINDOW, State};
use crate::dots::sim::config::{DuplicateKeyMode, SimConfig};
use crate::dots::sim::validate::ApiError;
use crate::dots::sim::webhooks::SimEvent;
use crate::dots::types::{CreateTransfer, CreateTransferBatch, TransferBatch, TransferBatchItem};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use uuid::Uuid;

/// `items[].error` of an item whose key was used before: this, `": "`, the key.
pub const ITEM_DUPLICATE_KEY: &str = "duplicate idempotency key";
/// `items[].error` of an item whose user does not exist: this, `": "`, the user id.
pub const ITEM_UNKNOWN_USER: &str = "User not found";
/// `items[].error`, exactly, of an item the paying wallet cannot cover.
pub const ITEM_INSUFFICIENT_FUNDS: &str = "transaction-insufficient-funds";

struct BatchRec {
    /// As made; `status` is recomputed on every read.
    batch: TransferBatch,
    created: DateTime<Utc>,
    seq: u64,
    /// When the batch completes on the sim clock.
    due: DateTime<Utc>,
    settled: bool,
    /// The transfers this batch made (not those a replayed item points to).
    made: Vec<Uuid>,
}

/// Every transfer batch, its index and the batch-level idempotency keys.
#[derive(Default)]
pub(super) struct Batches {
    recs: Vec<BatchRec>,
    idx: HashMap<Uuid, usize>,
    /// Batch key → (first seen, batch id).
    keys: HashMap<Uuid, (DateTime<Utc>, Uuid)>,
    /// Indices of batches not yet settled.
    unsettled: Vec<usize>,
}

impl State {
    /// Check and commit every item, then record the batch and its key, atomically.
    pub fn create_transfer_batch(
        &mut self,
        req: CreateTransferBatch,
        cfg: &SimConfig,
        now: DateTime<Utc>,
    ) -> Result<TransferBatch, ApiError> {
        if let Some(key) = req.idempotency_key
            && let Some(&(first_seen, existing)) = self.batches.keys.get(&key)
            && now - first_seen < KEY_WINDOW
        {
            return match cfg.duplicate_key_mode {
                DuplicateKeyMode::Reject => Err(ApiError::new(
                    409,
                    "duplicate-idempotency-key",
                    format!("a transfer batch with idempotency_key {key} already exists"),
                )),
                DuplicateKeyMode::Replay => Ok(self.batch_view(self.batches.idx[&existing])),
            };
        }
        let delay = chrono::Duration::milliseconds(
            (cfg.transfer_batch_complete_after_secs.max(0.0) * 1000.0) as i64,
        );
        let settled = delay <= chrono::Duration::zero();
        let mut items = Vec::with_capacity(req.items.len());
        let mut made = Vec::new();
        for it in req.items {
            let single = CreateTransfer {
                amount: it.amount,
                user_id: it.user_id,
                idempotency_key: Some(it.idempotency_key),
                metadata: it.metadata.clone(),
            };
            let (transfer_id, error) = match self.check_transfer(&single, now) {
                Ok(ui) => {
                    let status = if settled {
                        self.new_transfer_status(it.user_id)
                    } else {
                        "pending"
                    };
                    let t = self.commit_transfer(single, ui, status, now);
                    made.push(t.id);
                    (Some(t.id), None)
                }
                Err(Refusal::Duplicate { key, existing }) => match cfg.duplicate_key_mode {
                    DuplicateKeyMode::Reject => {
                        (None, Some(format!("{ITEM_DUPLICATE_KEY}: {key}")))
                    }
                    DuplicateKeyMode::Replay => (Some(existing), None),
                },
                Err(Refusal::UnknownUser(user)) => {
                    (None, Some(format!("{ITEM_UNKNOWN_USER}: {user}")))
                }
                Err(Refusal::InsufficientFunds { .. }) => {
                    (None, Some(ITEM_INSUFFICIENT_FUNDS.to_string()))
                }
            };
            items.push(TransferBatchItem {
                transfer_id,
                amount: it.amount,
                user_id: it.user_id,
                metadata: it.metadata,
                error,
                idempotency_key: Some(it.idempotency_key),
            });
        }
        let batch = TransferBatch {
            id: Uuid::new_v4(),
            status: String::new(),
            metadata: req.metadata,
            items,
        };
        let seq = self.next_seq();
        let i = self.batches.recs.len();
        self.batches.idx.insert(batch.id, i);
        if let Some(key) = req.idempotency_key {
            self.batches.keys.insert(key, (now, batch.id));
        }
        if !settled {
            self.batches.unsettled.push(i);
        }
        self.batches.recs.push(BatchRec {
            batch,
            created: now,
            seq,
            due: now + delay,
            settled,
            made,
        });
        Ok(self.batch_view(i))
    }

    /// The batch as the API shows it now.
    pub fn transfer_batch(&self, id: Uuid) -> Option<TransferBatch> {
        self.batches.idx.get(&id).map(|&i| self.batch_view(i))
    }

    /// Every batch id, newest first (created, then creation order).
    pub fn transfer_batch_ids(&self) -> Vec<Uuid> {
        let mut recs: Vec<&BatchRec> = self.batches.recs.iter().collect();
        recs.sort_by_key(|r| std::cmp::Reverse((r.created, r.seq)));
        recs.into_iter().map(|r| r.batch.id).collect()
    }

    /// Complete every batch whose delay has passed on the sim clock, and the pending transfers
    /// it made (those of a held user stay pending until released). Cheap when none is due.
    pub fn settle_batches(&mut self, now: DateTime<Utc>) {
        if self.batches.unsettled.is_empty() {
            return;
        }
        let due: Vec<usize> = self
            .batches
            .unsettled
            .iter()
            .copied()
            .filter(|&i| self.batches.recs[i].due <= now)
            .collect();
        if due.is_empty() {
            return;
        }
        self.batches.unsettled.retain(|i| !due.contains(i));
        for i in due {
            self.batches.recs[i].settled = true;
            for k in 0..self.batches.recs[i].made.len() {
                let ti = self.transfer_idx[&self.batches.recs[i].made[k]];
                let t = &mut self.transfers[ti].transfer;
                if t.status == "pending" && !self.held_users.contains(&t.user_id) {
                    t.status = "completed".to_string();
                    if let Some(events) = &self.events {
                        events.send(SimEvent::TransferCompleted(t.clone()));
                    }
                }
            }
        }
    }

    /// `pending` until settled and while any item's transfer is pending, then `completed`.
    fn batch_view(&self, i: usize) -> TransferBatch {
        let rec = &self.batches.recs[i];
        let pending = !rec.settled
            || rec.batch.items.iter().any(|it| {
                it.transfer_id.is_some_and(|id| {
                    self.transfer_idx
                        .get(&id)
                        .is_some_and(|&ti| self.transfers[ti].transfer.status == "pending")
                })
            });
        let mut batch = rec.batch.clone();
        batch.status = if pending { "pending" } else { "completed" }.to_string();
        batch
    }
}
