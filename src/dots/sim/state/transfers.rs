//! Single transfers (`POST /v2/transfers`): the check every transfer passes (idempotency key,
//! user, funds) and the commit that moves its money, shared with transfer batches
//! (`batches.rs`), and the reads of transfers.
//!
//! Guarantees: a check changes nothing; a commit moves exactly `|amount|` between the App wallet
//! and the user's, records the key (if any) for [`KEY_WINDOW`] and announces the transfer once.
//! A refused transfer records no key.

use super::{KEY_WINDOW, KeyRec, State, TransferOutcome, TransferRec};
use crate::dots::sim::config::{DuplicateKeyMode, SimConfig};
use crate::dots::sim::validate::ApiError;
use crate::dots::sim::webhooks::SimEvent;
use crate::dots::types::{CreateTransfer, Transfer};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Why a transfer cannot be made (nothing changed).
pub(super) enum Refusal {
    /// The key was used within [`KEY_WINDOW`], by a single transfer or a batch item.
    Duplicate {
        key: Uuid,
        existing: Uuid,
    },
    UnknownUser(Uuid),
    InsufficientFunds {
        payer: &'static str,
        moved: i64,
    },
}

impl State {
    /// Check, commit and record one transfer, atomically (the caller holds the state lock).
    pub fn create_transfer(
        &mut self,
        req: CreateTransfer,
        cfg: &SimConfig,
        now: DateTime<Utc>,
    ) -> Result<TransferOutcome, ApiError> {
        let ui = match self.check_transfer(&req, now) {
            Ok(ui) => ui,
            Err(Refusal::Duplicate { key, existing }) => {
                return match cfg.duplicate_key_mode {
                    DuplicateKeyMode::Reject => Err(ApiError::new(
                        409,
                        "duplicate-idempotency-key",
                        format!("a transfer with idempotency_key {key} already exists"),
                    )),
                    DuplicateKeyMode::Replay => {
                        let rec = &self.transfers[self.transfer_idx[&existing]];
                        Ok(TransferOutcome::Replayed(rec.transfer.clone()))
                    }
                };
            }
            Err(Refusal::UnknownUser(user)) => {
                return Err(ApiError::invalid(format!("user not found: {user}")));
            }
            Err(Refusal::InsufficientFunds { payer, moved }) => {
                return Err(ApiError::new(
                    400,
                    "transaction-insufficient-funds",
                    format!("{payer} balance is below {moved} cents"),
                ));
            }
        };
        let status = self.new_transfer_status(req.user_id);
        Ok(TransferOutcome::Created(
            self.commit_transfer(req, ui, status, now),
        ))
    }

    /// Whether `req` may be made now: the index of its user, or why not. Changes nothing.
    pub(super) fn check_transfer(
        &self,
        req: &CreateTransfer,
        now: DateTime<Utc>,
    ) -> Result<usize, Refusal> {
        if let Some(key) = req.idempotency_key
            && let Some(seen) = self.keys.get(&key)
            && now - seen.first_seen < KEY_WINDOW
        {
            return Err(Refusal::Duplicate {
                key,
                existing: seen.transfer_id,
            });
        }
        let Some(&ui) = self.user_idx.get(&req.user_id) else {
            return Err(Refusal::UnknownUser(req.user_id));
        };
        let moved = req.amount.unsigned_abs() as i64;
        let (payer, balance) = if req.amount < 0 {
            ("App wallet", self.app_wallet)
        } else {
            ("user wallet", self.users[ui].wallet.amount)
        };
        if balance < moved {
            return Err(Refusal::InsufficientFunds { payer, moved });
        }
        Ok(ui)
    }

    /// Move the money of a checked transfer, record it and its key, announce it.
    pub(super) fn commit_transfer(
        &mut self,
        req: CreateTransfer,
        ui: usize,
        status: &str,
        now: DateTime<Utc>,
    ) -> Transfer {
        let delta = -req.amount; // what the user gains
        self.app_wallet -= delta;
        let wallet = &mut self.users[ui].wallet;
        wallet.amount += delta;
        wallet.withdrawable_amount += delta;
        let transfer = Transfer {
            id: Uuid::new_v4(),
            created: now,
            user_id: req.user_id,
            status: status.to_string(),
            kind: Some("balance".to_string()),
            amount: req.amount,
            metadata: req.metadata,
        };
        if let Some(key) = req.idempotency_key {
            self.keys.insert(
                key,
                KeyRec {
                    first_seen: now,
                    transfer_id: transfer.id,
                },
            );
        }
        let seq = self.next_seq();
        self.transfer_idx.insert(transfer.id, self.transfers.len());
        self.transfers.push(TransferRec {
            transfer: transfer.clone(),
            key: req.idempotency_key,
            seq,
        });
        if let Some(events) = &self.events {
            events.send(SimEvent::TransferCreated(transfer.clone()));
        }
        transfer
    }

    pub fn transfer(&self, id: Uuid) -> Option<Transfer> {
        self.transfer_idx
            .get(&id)
            .map(|&i| self.transfers[i].transfer.clone())
    }

    /// All transfers, oldest first (created, then creation order) or newest first.
    pub fn transfers(&self, oldest_first: bool) -> Vec<Transfer> {
        let mut recs: Vec<&TransferRec> = self.transfers.iter().collect();
        recs.sort_by_key(|r| (r.transfer.created, r.seq));
        if !oldest_first {
            recs.reverse();
        }
        recs.into_iter().map(|r| r.transfer.clone()).collect()
    }
}
