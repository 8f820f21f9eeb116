//! The chunker (`dots.transfer_mode = "batch"`): a part of `payrun worker` (a watchdog
//! component beside the feeder) that sends the items of a batch that are ready to transfer —
//! pending, their payee's Dots user known, no transfer key yet — to Dots in chunks of up to
//! `dots.transfer_batch_size`, through `POST /v2/transfer-batches`. See ARCHITECTURE.md,
//! "jobs::chunk".
//!
//! The transfer safety protocol holds per chunk, item by item:
//! 1. **Intent** (`Store::open_chunk`, one transaction): the chunk's row and key, and every
//!    item's move to `transferring` with the key it would have had alone
//!    (`IdempotencyKey::derive(item, generation)`), its birth time, the call marked open and a
//!    lease held by the chunker (so no item job touches it during the call).
//! 2. **The call**, with no transaction open: each item with the metadata a single transfer
//!    carries (`payrun_batch_id`, `payrun_item_id`, `payee_id`), so per-user reconciliation
//!    finds it; the batch with `payrun_chunk_id`.
//! 3. **The outcome** (`Store::close_chunk`, one transaction): a transfer made is recorded and
//!    the item handed to the feed for its payout flow; an item error decides that item alone
//!    (`chunk_plan::item_next`: a duplicate key reconciles, an unknown user fails, a short
//!    App wallet holds for funds).
//!
//! A failed call of the whole chunk (`chunk_plan::after_chunk_failure`): Dots answered that
//! nothing was done (5xx, 429, no connection) → the same request again after the backoff, a few
//! times, then each item alone with its same key; unclear (timeout, dropped answer) → the
//! transfer batch is looked for by our metadata first (newest first, bounded pages), and its
//! answer recorded; not found → the same request again (Dots deduplicates every item key), and
//! at the last each item's call is left open, so its job reconciles by the user's transfers
//! before its same key goes out again. No item ever gets a new key while its transfer may
//! exist. Systemic failures feed the circuits like any call (the client reports them) and are
//! charged to no item; while a circuit is open the chunker makes no call.
//!
//! A chunker killed between phases leaves its chunk open: its items' leases lapse and each
//! item's job reconciles it alone (the per-item protocol), unless a chunker first takes the
//! whole chunk over ([`Engine::chunk_once`] looks for chunks left open) and reconciles it with
//! one call.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tracing::{info, warn};

use super::chunk_plan::{
    ChunkFailure, ChunkNext, ItemAnswer, ItemNext, after_chunk_failure, item_next, match_answers,
};
use super::watchdog::Pulse;
use super::{Engine, JobError};
use crate::batch::ChunkId;
use crate::config::{PayoutFlowSetting, TransferBatchSize, TransferMode};
use crate::dots::client::DotsError;
use crate::dots::types::{
    CreateTransferBatch, TransferBatch, TransferBatchItemRequest, TransferBatchStatus,
};
use crate::item::{CallOutcome, TransferOutcome};
use crate::store::{
    CallClose, ChunkOutcome, ChunkRecord, Handover, ItemRecord, OpenChunk, StoreError, now_ms,
};

/// The most calls one chunk makes (the first and its re-sends with the same keys).
const MAX_SENDS: u32 = 3;

/// At most this many pages of 100 transfer batches are read looking for a chunk's (the list is
/// newest first and has no filter; a chunk just sent is at the top).
const SEARCH_PAGES: usize = 5;

/// A batch Dots answers `pending` with items not answered yet is read again this many times.
const PENDING_READS: u32 = 3;

/// How many batches one turn looks at.
const BATCHES_PER_TURN: i64 = 20;

/// How transfers go to Dots (`[dots] transfer_mode`, `transfer_batch_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfers {
    pub mode: TransferMode,
    pub batch_size: TransferBatchSize,
}

impl Default for Transfers {
    fn default() -> Self {
        Transfers {
            mode: TransferMode::Single,
            batch_size: TransferBatchSize::default(),
        }
    }
}

impl Engine {
    /// This engine sending transfers as `mode` says (batch mode: in chunks of `batch_size`).
    pub fn with_transfers(mut self, mode: TransferMode, batch_size: TransferBatchSize) -> Engine {
        self.transfers = Transfers { mode, batch_size };
        self
    }

    /// Batch mode: first transfers go in chunks, sent by the chunker.
    pub fn chunked(&self) -> bool {
        self.transfers.mode == TransferMode::Batch
    }

    /// How long the chunker holds its items: the lease, and never less than one call and a
    /// margin (it is renewed before each further call).
    fn chunk_lease_ms(&self) -> i64 {
        self.lease_ms()
            .max(self.dots.timeout().as_millis() as i64 + super::lease::STEP_MARGIN_MS)
    }

    /// The lease owner of the items of this process' chunks: not the item jobs' owner, so a
    /// job of this process never takes an item during its chunk's call.
    fn chunk_owner(&self) -> String {
        format!("{}#chunker", self.owner)
    }

    /// One turn of the chunker: a chunk left open by a dead chunker, then one chunk (or one
    /// step of the feed cursor) per batch with work. Returns how many items it moved on (0:
    /// nothing to do now). Makes no call while a circuit is open.
    pub async fn chunk_once(&self, pulse: Option<&Pulse>) -> Result<usize, JobError> {
        if self.circuit_gate().await?.is_some() {
            return Ok(0);
        }
        let mut moved = 0;
        let stale_before = now_ms() - self.chunk_lease_ms() - super::lease::STEP_MARGIN_MS;
        if let Some(open) = self.store.stale_open_chunk(stale_before).await? {
            moved += self.take_over(open, stale_before, pulse).await?;
        }
        let size = self.transfers.batch_size.get();
        for batch in self.store.chunk_batches(BATCHES_PER_TURN).await? {
            if self.circuit_gate().await?.is_some() {
                break;
            }
            if !self.funds_decided_for_chunk(batch).await? {
                continue;
            }
            let db_now = now_ms();
            let opened = self
                .store
                .open_chunk(
                    batch,
                    &self.chunk_owner(),
                    self.now(),
                    db_now,
                    db_now + self.chunk_lease_ms(),
                    size,
                    size * 2,
                )
                .await?;
            moved += opened.fed as usize;
            if let Some(chunk) = opened.chunk {
                moved += chunk.items.len();
                self.send_chunk(chunk, 1, false, pulse).await?;
            }
        }
        Ok(moved)
    }

    /// A chunk left open by a chunker that stopped renewing it: its items whose lease lapsed are
    /// taken (those an item job holds are that job's), the transfer batch looked for, and the
    /// chunk finished from there.
    async fn take_over(
        &self,
        open: ChunkRecord,
        stale_before: i64,
        pulse: Option<&Pulse>,
    ) -> Result<usize, JobError> {
        let db_now = now_ms();
        let lease_until = db_now + self.chunk_lease_ms();
        let Some(items) = self
            .store
            .take_over_chunk(
                open.id,
                &self.chunk_owner(),
                stale_before,
                db_now,
                lease_until,
            )
            .await?
        else {
            return Ok(0); // another chunker took it first
        };
        info!(chunk_id = %open.id, batch_id = %open.batch_id, items = items.len(), "taking over a chunk left open");
        let n = items.len();
        if n == 0 {
            let out = ChunkOutcome {
                released: true,
                detail: "left open; its items were recovered one by one".into(),
                ..ChunkOutcome::default()
            };
            self.store
                .close_chunk(open.id, &self.chunk_owner(), &out, now_ms())
                .await?;
            return Ok(0);
        }
        let chunk = OpenChunk {
            id: open.id,
            batch_id: open.batch_id,
            key: open.key,
            items,
            lease_until,
        };
        self.send_chunk(chunk, open.sends.max(1) as u32, true, pulse)
            .await?;
        Ok(n)
    }

    /// Phases 2 and 3 of a chunk whose intent is committed. `sends`: calls made so far
    /// (counted in the chunk's row); `look_first`: the chunk's calls may have made transfers
    /// already (taken over), so the transfer batch is looked for before anything is sent.
    async fn send_chunk(
        &self,
        chunk: OpenChunk,
        mut sends: u32,
        look_first: bool,
        pulse: Option<&Pulse>,
    ) -> Result<(), JobError> {
        let req = self.chunk_request(&chunk);
        if look_first {
            match self.find_chunk(chunk.id).await {
                Ok(found) if !found.is_empty() => {
                    return self.chunk_answered(&chunk, &req, found, pulse).await;
                }
                Ok(_) => {
                    self.store.note_chunk_send(chunk.id, now_ms()).await?;
                    sends += 1;
                }
                Err(e) => {
                    let held = self.held_by_circuit(&e).await?;
                    return self.release_open(&chunk, &e, held, "").await;
                }
            }
        }
        loop {
            let res = self.dots.create_transfer_batch(&req).await;
            beat(pulse);
            let err = match res {
                Ok(batch) => return self.chunk_answered(&chunk, &req, vec![batch], pulse).await,
                Err(e) => e,
            };
            let held = self.held_by_circuit(&err).await?;
            let mut failure = ChunkFailure {
                class: err.class(),
                funds: err.is_insufficient_funds(),
                held: held.is_some(),
                sends,
                not_found: false,
            };
            loop {
                match after_chunk_failure(failure, MAX_SENDS) {
                    ChunkNext::SendAgain => break,
                    ChunkNext::Reconcile => match self.renew_then_find(&chunk).await? {
                        Ok(found) if !found.is_empty() => {
                            return self.chunk_answered(&chunk, &req, found, pulse).await;
                        }
                        Ok(_) => failure.not_found = true,
                        Err(e) => {
                            let held = self.held_by_circuit(&e).await?;
                            let why = format!("; looking for the transfer batch failed: {e}");
                            return self.release_open(&chunk, &err, held, &why).await;
                        }
                    },
                    ChunkNext::CloseAll { outcome, charged } => {
                        return self.close_all(&chunk, &err, outcome, charged, held).await;
                    }
                    ChunkNext::ReleaseOpen { charged } => {
                        let held = if charged {
                            None
                        } else {
                            held.or(Some(self.now()))
                        };
                        let why = if failure.not_found {
                            "; the transfer batch was not found"
                        } else {
                            ""
                        };
                        return self.release_open(&chunk, &err, held, why).await;
                    }
                    ChunkNext::HoldForFunds => {
                        return self.hold_chunk_for_funds(&chunk, &err.to_string()).await;
                    }
                }
            }
            // The same request again, after the backoff (never sooner than Retry-After), with
            // the lease renewed for the call.
            let wait = self.backoff(i64::from(sends) - 1, err.retry_after());
            warn!(chunk_id = %chunk.id, sends, error = %err, "transfer batch failed; sending it again");
            tokio::time::sleep(wait).await;
            self.renew_chunk(&chunk).await?;
            self.store.note_chunk_send(chunk.id, now_ms()).await?;
            sends += 1;
        }
    }

    /// Renews the chunker's lease on the chunk's items for another call.
    async fn renew_chunk(&self, chunk: &OpenChunk) -> Result<(), StoreError> {
        let db_now = now_ms();
        self.store
            .renew_chunk_lease(
                chunk.id,
                &self.chunk_owner(),
                db_now + self.chunk_lease_ms(),
                db_now,
            )
            .await?;
        Ok(())
    }

    /// [`Engine::find_chunk`] on a renewed lease.
    async fn renew_then_find(
        &self,
        chunk: &OpenChunk,
    ) -> Result<Result<Vec<TransferBatch>, DotsError>, StoreError> {
        self.renew_chunk(chunk).await?;
        Ok(self.find_chunk(chunk.id).await)
    }

    /// The request of a chunk: each item as a single transfer would carry it.
    fn chunk_request(&self, chunk: &OpenChunk) -> CreateTransferBatch {
        let items = chunk
            .items
            .iter()
            .filter_map(|i| {
                Some(TransferBatchItemRequest {
                    amount: i.amount.as_credit(),
                    user_id: i.dots_user_id?,
                    idempotency_key: i.transfer_key?.as_uuid(),
                    tax_exempt: None,
                    metadata: Some(super::item_metadata(i, "payout")),
                })
            })
            .collect();
        CreateTransferBatch {
            items,
            idempotency_key: Some(chunk.key),
            metadata: Some(json!({
                "payrun_batch_id": chunk.batch_id.to_string(),
                "payrun_chunk_id": chunk.id.to_string(),
            })),
        }
    }

    /// The transfer batches Dots lists for the chunk (by `payrun_chunk_id`), newest first,
    /// reading at most [`SEARCH_PAGES`] pages; empty: none there.
    async fn find_chunk(&self, chunk: ChunkId) -> Result<Vec<TransferBatch>, DotsError> {
        let want = chunk.to_string();
        let ours = |b: &TransferBatch| {
            b.metadata
                .as_ref()
                .and_then(|m| m.get("payrun_chunk_id"))
                .and_then(|v| v.as_str())
                == Some(want.as_str())
        };
        let mut found = Vec::new();
        let mut cursor = None;
        for _ in 0..SEARCH_PAGES {
            let page = self.dots.list_transfer_batches_page(cursor).await?;
            let before = found.len();
            found.extend(page.data.iter().filter(|b| ours(b)).cloned());
            // Newest first: once a page has ours and ends with another's, the rest is older.
            let passed = found.len() > before && page.data.last().is_some_and(|b| !ours(b));
            match page.data.last() {
                Some(last) if page.has_more && !passed => cursor = Some(last.id),
                _ => break,
            }
        }
        Ok(found)
    }

    /// Phase 3 with Dots' answer(s) for the chunk.
    async fn chunk_answered(
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

    /// The next steps of items the chunk paid (their payout flow), `worker.concurrency` at a
    /// time, as their jobs would make them — without a queue job each. An item that fails here
    /// is handed to the feed (its retry time is recorded, or it is deferred like a job that met
    /// a store error), so its job goes on later.
    async fn drive(&self, items: Vec<ItemRecord>, payout_intent_ours: bool, pulse: Option<&Pulse>) {
        let concurrency = self.settings.concurrency.max(1);
        futures::stream::iter(items)
            .for_each_concurrent(concurrency, |item| async move {
                let id = item.id;
                if let Err(e) = self.work_held(item, payout_intent_ours).await {
                    warn!(item_id = %id, error = %e, "the step after a chunk's transfer failed");
                    let at = now_ms() + self.backoff(3, None).as_millis() as i64;
                    if let Err(e) = self.store.defer_item(id, at).await {
                        warn!(item_id = %id, error = %e, "cannot defer the item");
                    }
                }
                beat(pulse);
            })
            .await;
    }

    /// Every item's call closed with `outcome` (nothing moved); each item goes on alone with
    /// its same key, from its retry time.
    async fn close_all(
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
        let out = ChunkOutcome {
            closed: vec![(chunk.items.iter().map(|i| i.id).collect(), close)],
            released: true,
            detail: format!("{}: {err}", outcome.as_str()),
            ..ChunkOutcome::default()
        };
        self.store
            .close_chunk(chunk.id, &self.chunk_owner(), &out, now_ms())
            .await?;
        Ok(())
    }

    /// Unclear, and not settled by looking: every item's call stays open, so each item's job
    /// reconciles it by the user's transfers before its same key is sent again. `held`: no
    /// attempt counted, the items wait until then.
    async fn release_open(
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
        let out = ChunkOutcome {
            closed: vec![(chunk.items.iter().map(|i| i.id).collect(), close)],
            released: true,
            detail: format!("unclear: {e}"),
            ..ChunkOutcome::default()
        };
        warn!(chunk_id = %chunk.id, error = %e, "transfer batch unclear; its items are reconciled one by one");
        self.store
            .close_chunk(chunk.id, &self.chunk_owner(), &out, now_ms())
            .await?;
        Ok(())
    }

    /// Dots refused the chunk for funds: every item waits with no attempt counted, and every
    /// batch still to pay is held (as a single transfer's refusal does).
    async fn hold_chunk_for_funds(&self, chunk: &OpenChunk, msg: &str) -> Result<(), JobError> {
        let out = ChunkOutcome {
            closed: vec![(
                chunk.items.iter().map(|i| i.id).collect(),
                self.funds_close(msg),
            )],
            released: true,
            detail: format!("held for funds: {msg}"),
            ..ChunkOutcome::default()
        };
        self.store
            .close_chunk(chunk.id, &self.chunk_owner(), &out, now_ms())
            .await?;
        let cents = chunk.items.iter().map(|i| i.amount.get()).sum();
        self.funds_refused(chunk.batch_id, cents, msg).await?;
        Ok(())
    }

    /// How an item refused for funds is closed: as a single transfer's refusal
    /// (`Store::record_transfer_refused_for_funds`).
    fn funds_close(&self, msg: &str) -> CallClose {
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

/// The answers for the request's items from every batch Dots gave for the chunk.
fn merged(req: &CreateTransferBatch, batches: &[TransferBatch]) -> Vec<ItemAnswer> {
    let mut answers = vec![ItemAnswer::None; req.items.len()];
    for b in batches {
        for (slot, a) in answers.iter_mut().zip(match_answers(&req.items, b)) {
            *slot = std::mem::replace(slot, ItemAnswer::None).or(a);
        }
    }
    answers
}

fn error_of(a: &ItemAnswer) -> String {
    match a {
        ItemAnswer::Refused(e) => e.clone(),
        _ => String::new(),
    }
}

fn beat(pulse: Option<&Pulse>) {
    if let Some(p) = pulse {
        p.ok();
    }
}

/// The chunker's loop (a watchdog component of `payrun worker` in batch mode): a turn, then
/// another at once while there is work, else after `worker.feed_ms`. A turn in flight finishes
/// (its outcome committed) before shutdown.
pub async fn run(
    engine: Engine,
    pulse: Pulse,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let idle = Duration::from_millis(engine.settings.feed_ms.max(10));
    loop {
        let moved = match engine.chunk_once(Some(&pulse)).await {
            Ok(n) => {
                pulse.ok();
                n
            }
            Err(e) => {
                warn!(error = %e, "the chunker's turn failed");
                pulse.failed(&e);
                0
            }
        };
        if *stop.borrow() {
            return Ok(());
        }
        if moved == 0 {
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = stop.wait_for(|v| *v) => return Ok(()),
            }
        }
    }
}
