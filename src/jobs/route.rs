//! The step after a transfer, by route (`worker.payout_flow`): the payout flow (`flows.rs`), or,
//! for a payee whose Dots user pays out automatically, no flow — the item completes once its
//! transfer is completed at Dots. What to do is decided by `plan::route` and
//! `plan::on_transfer_status`; this file carries it out.
//!
//! Guarantees: the payee's answer (`GET /v2/users/{id}`) is read at most once per
//! `worker.user_cache_secs` for all workers (it is stored on the payee); a transfer still pending
//! leaves the item due again along `worker.poll_schedule_secs` (no attempt counted, no busy
//! loop); a Dots refusal of either read (a 4xx that is not systemic) falls back to the payout
//! flow, the documented route, so the payee always gets a way to their money.

use tracing::instrument;

use super::plan::{self, Route, TransferWait};
use super::{Engine, JobError, Next, Step};
use crate::dots::client::{DotsError, ErrorClass};
use crate::item::ItemState;
use crate::store::{ItemRecord, PayeeRoute};

impl Engine {
    #[instrument(skip_all, fields(batch_id = %item.batch_id, item_id = %item.id))]
    pub(super) async fn after_transfer(
        &self,
        item: &ItemRecord,
        payout_intent_ours: bool,
    ) -> Result<Step, JobError> {
        if payout_intent_ours {
            return self.payout_flow(item, true).await;
        }
        let cached = match self.settings.payout_flow {
            crate::config::PayoutFlowSetting::Always => None,
            _ => self.store.payee_route(&item.payee_id).await?,
        };
        let mut calls = 0;
        let transfer = match plan::route(item, cached.as_ref(), self.now(), &self.settings) {
            Route::PayoutFlow => return self.payout_flow(item, false).await,
            Route::AwaitTransfer(t) => t,
            Route::ReadUser(user) => {
                calls += 1;
                let user = match self.dots.get_user(user).await {
                    Ok(u) => u,
                    Err(e) => {
                        return self
                            .read_failed(item, "reading the payee's Dots user", &e)
                            .await;
                    }
                };
                let answer = PayeeRoute {
                    user: user.id,
                    auto_payout: user.pays_out_automatically(),
                    read_at: self.now(),
                };
                self.store
                    .remember_payee_route(&item.payee_id, answer)
                    .await?;
                match plan::route(item, Some(&answer), answer.read_at, &self.settings) {
                    Route::AwaitTransfer(t) => t,
                    _ => return self.payout_flow(item, false).await,
                }
            }
        };
        calls += 1;
        let t = match self.dots.get_transfer(transfer).await {
            Ok(t) => t,
            Err(e) => {
                return self
                    .read_failed(item, "reading the transfer's status", &e)
                    .await;
            }
        };
        match plan::on_transfer_status(t.status_kind()) {
            TransferWait::Complete => Ok(self
                .store
                .complete_without_flow(item.id, transfer, calls)
                .await?
                .into()),
            TransferWait::Wait => {
                let at = self.next_poll_at(item.polls);
                tracing::debug!(status = %t.status, "transfer not completed yet: the item waits");
                self.store.wait_for_transfer(item.id, at, calls).await?;
                Ok(Step::done(Next::RetryAt(at)))
            }
            TransferWait::Fail(reason) => {
                let reason = format!("{reason} (transfer {transfer}, status {})", t.status);
                self.store
                    .fail_item(item.id, ItemState::Transferred, &reason)
                    .await?;
                Ok(Step::done(Next::Idle))
            }
        }
    }

    /// A read of the auto-payout route failed: a refusal for this item falls back to the payout
    /// flow; anything else is a failed step (held by a circuit, retried, or given up).
    async fn read_failed(
        &self,
        item: &ItemRecord,
        what: &str,
        err: &DotsError,
    ) -> Result<Step, JobError> {
        if err.class() == ErrorClass::Permanent && err.systemic().is_none() {
            let detail = format!("{what}: {err}; making a payout flow instead");
            self.store.record_event(item.id, "route", &detail).await?;
            return self.payout_flow(item, false).await;
        }
        self.step_failed(item, ItemState::Transferred, what, err)
            .await
    }
}
