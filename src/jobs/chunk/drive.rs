//! After a chunk: the payout flows of the items it paid, made by the chunker itself (no queue
//! job per paid item).
//!
//! When the flow's intent committed with the transfers (`payout_flow = "always"`, see
//! `Handover`), the flows are made `worker.concurrency` calls at a time and the ones Dots made
//! are recorded together: one transaction per [`FLOW_GROUP`] items, each item's write guarded
//! and evented as alone (`Store::record_payout_flows`), so a chunk's flows cost a few commits
//! instead of one each. A call that failed is handled as the item's own step would handle it
//! (a retry time, or the item failed; an unclear answer leaves the call open, so the retry
//! looks the flow up by its metadata before making one). Every other item — its intent not
//! committed, a reminder's flow, no Dots user — goes the per-item way (`Engine::work_held`).
//!
//! A crash anywhere here leaves items `transferred` with the call open and the chunker's lease
//! lapsing: each item's job then looks for the flow by its metadata first, as after any crash.

use futures::StreamExt;
use tracing::warn;

use super::beat;
use crate::dots::client::{DotsError, ErrorClass};
use crate::dots::types::Flow;
use crate::item::ItemState;
use crate::jobs::flows::payout_flow_request;
use crate::jobs::watchdog::Pulse;
use crate::jobs::{Engine, JobError};
use crate::store::{FlowMade, ItemRecord, now_ms};

/// Items whose flows are recorded in one transaction.
const FLOW_GROUP: usize = 64;

impl Engine {
    /// The next steps of items the chunk paid (their payout flow): see the module doc. An item
    /// that fails here is handed to the feed (its retry time is recorded, or it is deferred
    /// like a job that met a store error), so its job goes on later.
    pub(super) async fn drive(
        &self,
        items: Vec<ItemRecord>,
        payout_intent_ours: bool,
        pulse: Option<&Pulse>,
    ) {
        let concurrency = self.settings.concurrency.max(1);
        let (quick, other): (Vec<ItemRecord>, Vec<ItemRecord>) = items
            .into_iter()
            .partition(|i| payout_intent_ours && flow_is_plain(i));
        for group in quick.chunks(FLOW_GROUP) {
            // Collected first: a lazy `map` held across the awaits trips the compiler's `Send`
            // check for the chunker's spawned future.
            let calls: Vec<_> = group
                .iter()
                .map(|item| self.make_flow(item, pulse))
                .collect();
            let answers: Vec<(&ItemRecord, Result<Flow, DotsError>)> = futures::stream::iter(calls)
                .buffered(concurrency)
                .collect()
                .await;
            let mut made: Vec<(&ItemRecord, Flow)> = Vec::new();
            for (item, answer) in answers {
                match answer {
                    Ok(flow) => made.push((item, flow)),
                    Err(e) => self.flow_call_failed(item, &e).await,
                }
            }
            self.record_made(&made).await;
        }
        futures::stream::iter(other)
            .for_each_concurrent(concurrency, |item| async move {
                let id = item.id;
                if let Err(e) = self.work_held(item, payout_intent_ours).await {
                    warn!(item_id = %id, error = %e, "the step after a chunk's transfer failed");
                    self.defer_after_error(id).await;
                }
                beat(pulse);
            })
            .await;
    }

    /// `item`'s payout flow made at Dots (the call alone; nothing recorded).
    async fn make_flow<'a>(
        &self,
        item: &'a ItemRecord,
        pulse: Option<&Pulse>,
    ) -> (&'a ItemRecord, Result<Flow, DotsError>) {
        let Some(user) = item.dots_user_id else {
            unreachable!("flow_is_plain checked the user");
        };
        let answer = self
            .dots
            .create_flow(&payout_flow_request(item, user))
            .await;
        beat(pulse);
        (item, answer)
    }

    /// The flows Dots made, recorded in one transaction; the chunker's lease passes back with
    /// the write. If the write fails, each item is deferred with its call open (its job finds
    /// the flow by its metadata).
    async fn record_made(&self, made: &[(&ItemRecord, Flow)]) {
        if made.is_empty() {
            return;
        }
        let flows: Vec<_> = made
            .iter()
            .map(|(item, flow)| (item.id, self.flow_made(item, flow.id, &flow.link)))
            .collect::<Vec<(_, FlowMade<'_>)>>();
        match self.store.record_payout_flows(&flows, &self.owner).await {
            Ok(written) => {
                for ((item, _), w) in made.iter().zip(written) {
                    // Not transferred any more (an operator's cancel, say): the lease is ours.
                    if w.is_none()
                        && let Err(e) = self.store.release_lease(item.id, &self.owner).await
                    {
                        warn!(item_id = %item.id, error = %e, "cannot release the item's lease");
                    }
                }
            }
            Err(e) => {
                warn!(items = made.len(), error = %e, "recording a chunk's payout flows failed");
                for (item, _) in made {
                    self.defer_after_error(item.id).await;
                }
            }
        }
    }

    /// A payout-flow call that failed, as the item's own step handles it
    /// (`Engine::payout_flow`): the call closed unless its outcome is unclear, then a retry
    /// time or the item failed; the lease released.
    async fn flow_call_failed(&self, item: &ItemRecord, e: &DotsError) {
        let handled: Result<(), JobError> = async {
            if e.class() != ErrorClass::Ambiguous {
                self.store.close_payout_call(item.id).await?;
            }
            self.step_failed(item, ItemState::Transferred, "creating payout flow", e)
                .await?;
            self.store.release_lease(item.id, &self.owner).await?;
            Ok(())
        }
        .await;
        if let Err(err) = handled {
            warn!(item_id = %item.id, error = %err, "the payout flow after a chunk's transfer failed");
            self.defer_after_error(item.id).await;
        }
    }

    /// An item this turn could not take further: due again after a short backoff, as a job
    /// that met a store error.
    async fn defer_after_error(&self, id: crate::batch::ItemId) {
        let at = now_ms() + self.backoff(3, None).as_millis() as i64;
        if let Err(e) = self.store.defer_item(id, at).await {
            warn!(item_id = %id, error = %e, "cannot defer the item");
        }
    }
}

/// An item whose payout flow the chunker makes straight away: transferred to a known Dots
/// user, the flow's intent committed (its call open), and not a reminder's flow.
fn flow_is_plain(item: &ItemRecord) -> bool {
    item.state == ItemState::Transferred
        && item.dots_user_id.is_some()
        && item.payout_call_open
        && item.reminder_pending.is_none()
}
