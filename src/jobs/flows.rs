//! Flow steps of the item job: the onboarding flow for payees with no Dots user, and the
//! payout flow whose link goes to the payee once the money is in their Dots wallet.
//!
//! Flows have no idempotency key at Dots. The payout flow is recorded as an open call before
//! the request and closed with the flow id after; when a crash leaves the call open, the flow
//! is looked up by our metadata and reused if Dots made it, so an item keeps exactly one link.
//! (Onboarding flows are not guarded this way: a duplicate onboarding flow moves no money and
//! the item follows only the one it recorded.)

use serde_json::json;
use tracing::instrument;

use uuid::Uuid;

use super::{Engine, JobError, Next, Step, item_metadata, remind};
use crate::dots::client::{ErrorClass, FlowSearch};
use crate::dots::types::CreateFlow;
use crate::item::ItemState;
use crate::store::{FlowMade, ItemRecord};

/// How far before the payout call's intent to look for a flow that interrupted call may have
/// made: the intent commits just before the call, so a minute covers any clock difference
/// between this host and Dots.
const FLOW_SEARCH_SLACK_MS: i64 = 60_000;

/// At most this many pages of 100 flows are read looking for it (`GET /v2/flows` has no filter;
/// the list is newest first). Past it the search gives up and a new flow is made: a second
/// link for the payee at worst, never a second payment (the money moved with the transfer).
const FLOW_SEARCH_MAX_PAGES: usize = 10;

impl Engine {
    #[instrument(skip_all, fields(batch_id = %item.batch_id, item_id = %item.id))]
    pub(super) async fn onboard(&self, item: &ItemRecord) -> Result<Step, JobError> {
        let id = item.id;
        let req = CreateFlow {
            steps: self
                .settings
                .onboarding_steps
                .iter()
                .map(|s| json!(s))
                .collect(),
            user_id: None,
            metadata: Some(item_metadata(item, "onboarding")),
            require_auth: None,
        };
        match self.dots.create_flow(&req).await {
            Ok(flow) => {
                let next_poll = self.next_poll_at(0);
                let owner = Some(&*self.owner);
                let written = self
                    .store
                    .begin_onboarding(id, flow.id, &flow.link, next_poll, owner)
                    .await?;
                Ok(Step::done_releasing(Next::Idle, written))
            }
            Err(e) => {
                self.step_failed(item, ItemState::Pending, "creating onboarding flow", &e)
                    .await
            }
        }
    }

    /// `payout_intent_ours`: this job committed the payout-flow intent itself, with the
    /// transfer's success (`payout_call_open` is then its own, not left by an interrupted call).
    #[instrument(skip_all, fields(batch_id = %item.batch_id, item_id = %item.id))]
    pub(super) async fn payout_flow(
        &self,
        item: &ItemRecord,
        payout_intent_ours: bool,
    ) -> Result<Step, JobError> {
        let id = item.id;
        let Some(user) = item.dots_user_id else {
            let reason = "transferred item has no Dots user id";
            self.store
                .fail_item(id, ItemState::Transferred, reason)
                .await?;
            return Ok(Step::done(Next::Idle));
        };
        if item.payout_call_open && !payout_intent_ours {
            // A crash (or a lost answer) left the last payout-flow call without an outcome:
            // reuse the flow if Dots made it (found by our metadata among flows created since
            // the call's intent, read from its event: later retries do not move the bound), else
            // make one.
            let intent_at = self
                .store
                .last_event_at(id, "payout_intent")
                .await?
                .unwrap_or(item.updated_at);
            let since = chrono::DateTime::from_timestamp_millis(intent_at - FLOW_SEARCH_SLACK_MS)
                .unwrap_or_default();
            // A reminder's flow is told from the item's earlier ones by its derived key.
            let (field, key) = match item.reminder_pending {
                Some(n) => ("payrun_reminder", reminder_key(item, n)),
                None => ("payrun_item_id", item.id.to_string()),
            };
            let found = self
                .dots
                .find_flow(field, &key, since, FLOW_SEARCH_MAX_PAGES)
                .await;
            match found {
                Ok(FlowSearch::Found(flow)) => {
                    self.store
                        .record_payout_flow(id, self.flow_made(item, flow.id, &flow.link), None)
                        .await?;
                    self.store
                        .record_event(
                            id,
                            "reconcile",
                            &format!("reused payout flow {} made before a crash", flow.id),
                        )
                        .await?;
                    return Ok(Step::done(Next::Idle));
                }
                Ok(FlowSearch::NotFound) => {
                    self.store
                        .record_event(
                            id,
                            "reconcile",
                            "no payout flow was made by the interrupted call",
                        )
                        .await?;
                }
                Ok(FlowSearch::TooMany { pages }) => {
                    self.store
                        .record_event(
                            id,
                            "reconcile",
                            &format!(
                                "no payout flow of the interrupted call in the newest {pages} \
                                 pages of flows; making a new one"
                            ),
                        )
                        .await?;
                }
                Err(e) => {
                    return self
                        .step_failed(
                            item,
                            ItemState::Transferred,
                            "looking for an interrupted payout flow",
                            &e,
                        )
                        .await;
                }
            }
        }
        if !payout_intent_ours && self.store.record_payout_intent(id).await?.is_none() {
            return Ok(Step::Changed); // not transferred any more: no flow to make
        }
        match self
            .dots
            .create_flow(&payout_flow_request(item, user))
            .await
        {
            Ok(flow) => {
                let owner = Some(&*self.owner);
                let made = self.flow_made(item, flow.id, &flow.link);
                let written = self.store.record_payout_flow(id, made, owner).await?;
                Ok(Step::done_releasing(Next::Idle, written))
            }
            Err(e) => {
                if e.class() != ErrorClass::Ambiguous {
                    // Dots answered (5xx, 429, 4xx): no flow was made, nothing to look for later.
                    self.store.close_payout_call(id).await?;
                }
                self.step_failed(item, ItemState::Transferred, "creating payout flow", &e)
                    .await
            }
        }
    }
}

impl Engine {
    /// A payout flow just made for `item`, as recorded: its first poll, and whether it is a
    /// reminder's and when the next reminder is due (`jobs::remind`).
    pub(super) fn flow_made<'a>(
        &self,
        item: &ItemRecord,
        flow_id: Uuid,
        link: &'a str,
    ) -> FlowMade<'a> {
        let sent = item.reminder_pending.unwrap_or(item.reminders);
        FlowMade {
            flow_id,
            link,
            next_poll_at: self.next_poll_at(0),
            reminder: item.reminder_pending,
            reminder_due_at: remind::next_due(&self.reminders, sent, self.now()),
        }
    }
}

/// The request that makes `item`'s payout flow for Dots user `user` (its metadata is what a
/// retry looks the flow up by).
pub(super) fn payout_flow_request(item: &ItemRecord, user: Uuid) -> CreateFlow {
    let mut metadata = item_metadata(item, "payout");
    if let Some(n) = item.reminder_pending {
        metadata["payrun_reminder"] = json!(reminder_key(item, n));
    }
    CreateFlow {
        steps: vec![json!("payout")],
        user_id: Some(user),
        metadata: Some(metadata),
        require_auth: None,
    }
}

/// The metadata value that marks reminder `n`'s flow for `item` (derived: a retry of the call
/// looks for the same one).
fn reminder_key(item: &ItemRecord, n: i64) -> String {
    format!("{}/{n}", item.id)
}
