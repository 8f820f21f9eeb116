//! Phase 2 of a chunk: the call `POST /v2/transfer-batches`, its re-sends with the same keys,
//! and the search for a transfer batch whose answer was lost (by our metadata, newest first).

use serde_json::json;
use tracing::warn;

use super::{MAX_SENDS, SEARCH_PAGES, beat};
use crate::batch::ChunkId;
use crate::dots::client::DotsError;
use crate::dots::types::{CreateTransferBatch, TransferBatch, TransferBatchItemRequest};
use crate::jobs::chunk_plan::{
    ChunkFailure, ChunkNext, ItemAnswer, after_chunk_failure, match_answers,
};
use crate::jobs::watchdog::Pulse;
use crate::jobs::{Engine, JobError};
use crate::store::{OpenChunk, StoreError, now_ms};

impl Engine {
    /// Phases 2 and 3 of a chunk whose intent is committed. `sends`: calls made so far
    /// (counted in the chunk's row); `look_first`: the chunk's calls may have made transfers
    /// already (taken over), so the transfer batch is looked for before anything is sent.
    pub(super) async fn send_chunk(
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
    pub(super) async fn renew_chunk(&self, chunk: &OpenChunk) -> Result<(), StoreError> {
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
    pub(super) async fn renew_then_find(
        &self,
        chunk: &OpenChunk,
    ) -> Result<Result<Vec<TransferBatch>, DotsError>, StoreError> {
        self.renew_chunk(chunk).await?;
        Ok(self.find_chunk(chunk.id).await)
    }

    /// The request of a chunk: each item as a single transfer would carry it.
    pub(super) fn chunk_request(&self, chunk: &OpenChunk) -> CreateTransferBatch {
        let items = chunk
            .items
            .iter()
            .filter_map(|i| {
                Some(TransferBatchItemRequest {
                    amount: i.amount.as_credit(),
                    user_id: i.dots_user_id?,
                    idempotency_key: i.transfer_key?.as_uuid(),
                    tax_exempt: None,
                    metadata: Some(crate::jobs::item_metadata(i, "payout")),
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
    pub(super) async fn find_chunk(&self, chunk: ChunkId) -> Result<Vec<TransferBatch>, DotsError> {
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
}

/// The answers for the request's items from every batch Dots gave for the chunk.
pub(super) fn merged(req: &CreateTransferBatch, batches: &[TransferBatch]) -> Vec<ItemAnswer> {
    let mut answers = vec![ItemAnswer::None; req.items.len()];
    for b in batches {
        for (slot, a) in answers.iter_mut().zip(match_answers(&req.items, b)) {
            *slot = std::mem::replace(slot, ItemAnswer::None).or(a);
        }
    }
    answers
}

pub(super) fn error_of(a: &ItemAnswer) -> String {
    match a {
        ItemAnswer::Refused(e) => e.clone(),
        _ => String::new(),
    }
}
