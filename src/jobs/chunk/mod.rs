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

mod call;
mod drive;
mod outcome;

use std::time::Duration;

use tracing::{info, warn};

use super::watchdog::Pulse;
use super::{Engine, JobError};
use crate::config::{TransferBatchSize, TransferMode};
use crate::store::{ChunkOutcome, ChunkRecord, OpenChunk, now_ms};

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
