//! Phase 3 of a chunk: Dots' answer recorded item by item (`Store::close_chunk`), the paid
//! items driven on to their payout flow, and the closes of a chunk that failed as a whole.

use std::time::Duration;

use tracing::warn;

use super::call::{error_of, merged};
use super::{PENDING_READS, beat};
use crate::config::PayoutFlowSetting;
use crate::dots::client::DotsError;
use crate::dots::types::{CreateTransferBatch, TransferBatch, TransferBatchStatus};
use crate::item::{CallOutcome, TransferOutcome};
use crate::jobs::chunk_plan::{ItemAnswer, ItemNext, item_next};
use crate::jobs::watchdog::Pulse;
use crate::jobs::{Engine, JobError};
use crate::store::{CallClose, ChunkOutcome, Handover, ItemRecord, OpenChunk, now_ms};

impl Engine {
    /// Phase 3 with Dots' answer(s) for the chunk.
    pub(super) async fn chunk_answered(
        &self,
        chunk: &OpenChunk,
        req: &CreateTransferBatch,
        mut batches: Vec<TransferBatch>,
        pulse: Option<&Pulse>,
    ) -> Result<(), JobError> {
        let mut answers = merged(req, &batches);
        // A batch Dots is still working on may not have every item's answer yet.
        let mut reads = 0;
        while reads < PENDING_READS
            && answers.contains(&ItemAnswer::None)
            && let Some(pending) = batches
                .iter()
                .find(|b| b.status_kind() == TransferBatchStatus::Pending)
                .map(|b| b.id)
        {
            tokio::time::sleep(Duration::from_millis(250 << reads)).await;
            reads += 1;
            match self.dots.get_transfer_batch(pending).await {
                Ok(b) => {
                    batches.retain(|x| x.id != b.id);
                    batches.push(b);
                    answers = merged(req, &batches);
                }
                Err(e) => {
                    warn!(chunk_id = %chunk.id, error = %e, "reading a pending transfer batch failed");
                    break;
                }
            }
            beat(pulse);
        }
        let now = self.now();
        let dots_batch_id = batches.first().map(|b| b.id);
        let batch_ids: Vec<String> = batches.iter().map(|b| b.id.to_string()).collect();
        // The items paid go straight on to their payout flow, worked here (not queued): the
        // lease passes to this worker's jobs and, as a single transfer's success does, the
        // flow's intent commits with the transfer.
        let payout_intent = self.settings.payout_flow == PayoutFlowSetting::Always;
        let mut out = ChunkOutcome {
            dots_batch_id,
            handover: Some(Handover {
                owner: self.owner.to_string(),
                lease_until: now_ms() + self.lease_ms(),
                payout_intent,
            }),
            ..ChunkOutcome::default()
        };
        let mut refused: Vec<(&ItemRecord, CallOutcome, String)> = Vec::new();
        let mut funds: Vec<&ItemRecord> = Vec::new();
        let mut funds_msg = String::new();
        let mut duplicate = Vec::new();
        let mut unanswered = Vec::new();
        // Items are in the request's order, skipping any without a user or key (none: phase 1
        // wrote both).
        let sent: Vec<&ItemRecord> = chunk
            .items
            .iter()
            .filter(|i| i.dots_user_id.is_some() && i.transfer_key.is_some())
            .collect();
        for (item, answer) in sent.iter().zip(&answers) {
            match item_next(item, answer, now, &self.settings) {
                ItemNext::Transferred(t) => out.made.push((item.id, t)),
                ItemNext::ReconcileNow => duplicate.push((item.id, error_of(answer))),
                ItemNext::Fail(outcome) => refused.push((item, outcome, error_of(answer))),
                ItemNext::HoldForFunds => {
                    funds_msg = error_of(answer);
                    funds.push(item);
                }
                ItemNext::ReconcileAlone => unanswered.push(item.id),
            }
        }
        for (id, e) in duplicate {
            out.closed.push((
                vec![id],
                CallClose {
                    outcome: TransferOutcome::DuplicateKey,
                    error: e.clone(),
                    next_attempt_at: now,
                    failed_at: Some(now),
                    keep_open: false,
                    kind: "transfer_error",
                    detail: format!("duplicate_key: {e}"),
                },
            ));
        }
        if !unanswered.is_empty() {
            let e = format!(
                "transfer batch {} has no answer for the item",
                batch_ids.join(", ")
            );
            out.closed.push((
                unanswered,
                CallClose {
                    outcome: TransferOutcome::Ambiguous,
                    error: e.clone(),
                    next_attempt_at: now,
                    failed_at: Some(now),
                    keep_open: true,
                    kind: "transfer_error",
                    detail: format!("ambiguous: {e}; reconciled by the user's transfers"),
                },
            ));
        }
        if !funds.is_empty() {
            out.closed.push((
                funds.iter().map(|i| i.id).collect(),
                self.funds_close(&funds_msg),
            ));
        }
        out.released = sent.len() < chunk.items.len() || answers.contains(&ItemAnswer::None);
        out.detail = format!(
            "transfer batch {}: {} made, {} refused, {} unanswered",
            batch_ids.join(", "),
            out.made.len(),
            refused.len() + funds.len(),
            answers.iter().filter(|a| **a == ItemAnswer::None).count()
        );
        let owner = self.chunk_owner();
        let written = self
            .store
            .close_chunk(chunk.id, &owner, &out, now_ms())
            .await?;
        for (item, outcome, e) in refused {
            let reason = format!("transfer refused: {e}");
            self.store
                .record_transfer_refused(item.id, outcome, &reason, Some(now), &owner)
                .await?;
        }
        if let Some(first) = funds.first() {
            self.funds_refused(first.batch_id, first.amount.get(), &funds_msg)
                .await?;
        }
        tracing::debug!(chunk_id = %chunk.id, made = written.made.len(), closed = written.closed.len(), "chunk done");
        self.drive(written.handed, payout_intent, pulse).await;
        Ok(())
    }

    /// Every item's call closed with `outcome` (nothing moved); each item goes on alone with
    /// its same key, from its retry time.
    pub(super) async fn close_all(
        &self,
        chunk: &OpenChunk,
        err: &DotsError,
        outcome: CallOutcome,
        charged: bool,
        held: Option<i64>,
    ) -> Result<(), JobError> {
        let now = self.now();
        let at = match (held, outcome) {
            (Some(until), _) => until,
            // Dots refused the chunk as a whole: each item is sent alone at once.
            (None, CallOutcome::Permanent) => now,
            (None, _) => self.next_attempt_at(0, Some(err)),
        };
        if outcome == CallOutcome::Permanent && held.is_none() {
            warn!(chunk_id = %chunk.id, error = %err, "Dots refused a transfer batch as a whole; its items are sent one by one");
        }
        let close = CallClose {
            outcome: outcome.into(),
            error: err.to_string(),
            next_attempt_at: at,
            failed_at: charged.then_some(now),
            keep_open: false,
            kind: "transfer_error",
            detail: format!("{}: transfer batch: {err}", outcome.as_str()),
        };
        self.close_whole(chunk, close, format!("{}: {err}", outcome.as_str()))
            .await
    }

    /// Unclear, and not settled by looking: every item's call stays open, so each item's job
    /// reconciles it by the user's transfers before its same key is sent again. `held`: no
    /// attempt counted, the items wait until then.
    pub(super) async fn release_open(
        &self,
        chunk: &OpenChunk,
        err: &DotsError,
        held: Option<i64>,
        why: &str,
    ) -> Result<(), JobError> {
        let now = self.now();
        let at = held.unwrap_or_else(|| self.next_attempt_at(0, Some(err)));
        let e = format!("{err}{why}");
        let close = CallClose {
            outcome: TransferOutcome::Ambiguous,
            error: e.clone(),
            next_attempt_at: at,
            failed_at: held.is_none().then_some(now),
            keep_open: true,
            kind: "transfer_error",
            detail: format!("ambiguous: transfer batch: {e}; each item is reconciled alone"),
        };
        warn!(chunk_id = %chunk.id, error = %e, "transfer batch unclear; its items are reconciled one by one");
        self.close_whole(chunk, close, format!("unclear: {e}"))
            .await
    }

    /// Dots refused the chunk for funds: every item waits with no attempt counted, and every
    /// batch still to pay is held (as a single transfer's refusal does).
    pub(super) async fn hold_chunk_for_funds(
        &self,
        chunk: &OpenChunk,
        msg: &str,
    ) -> Result<(), JobError> {
        self.close_whole(
            chunk,
            self.funds_close(msg),
            format!("held for funds: {msg}"),
        )
        .await?;
        let cents = chunk.items.iter().map(|i| i.amount.get()).sum();
        self.funds_refused(chunk.batch_id, cents, msg).await?;
        Ok(())
    }

    /// Phase 3 for a chunk that failed as a whole: every item's call closed with `close`, the
    /// chunker's leases released.
    async fn close_whole(
        &self,
        chunk: &OpenChunk,
        close: CallClose,
        detail: String,
    ) -> Result<(), JobError> {
        let out = ChunkOutcome {
            closed: vec![(chunk.items.iter().map(|i| i.id).collect(), close)],
            released: true,
            detail,
            ..ChunkOutcome::default()
        };
        self.store
            .close_chunk(chunk.id, &self.chunk_owner(), &out, now_ms())
            .await?;
        Ok(())
    }

    /// How an item refused for funds is closed: as a single transfer's refusal
    /// (`Store::record_transfer_refused_for_funds`).
    pub(super) fn funds_close(&self, msg: &str) -> CallClose {
        CallClose {
            outcome: CallOutcome::InsufficientFunds.into(),
            error: msg.to_string(),
            next_attempt_at: self.funds_park_until(),
            failed_at: None,
            keep_open: false,
            kind: "funds_hold",
            detail: format!("held for funds: {msg}"),
        }
    }
}
