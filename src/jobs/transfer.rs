//! The transfer safety protocol — the one place money moves. See ARCHITECTURE.md.
//!
//! 1. Before a call, the idempotency key (and the time it was first used) is committed and the
//!    call marked open (`transfer_call_open`). No transaction is open during the HTTP call.
//! 2. The outcome is committed after: success -> `transferred` with the Dots transfer id;
//!    otherwise the call is closed with its class (retryable / ambiguous / duplicate key /
//!    permanent) and a retry time.
//! 3. A retry of a retryable or ambiguous failure reuses the same key while it is younger than
//!    Dots' 24 h window (we treat 23 h as the limit, for clock skew), so Dots deduplicates.
//! 4. Reconciliation — listing the user's transfers at Dots and matching our
//!    `payrun_item_id` metadata or key — runs first when: the call was left open (a crash
//!    between intent and outcome), Dots rejected the key as a duplicate, the key has aged out
//!    after a failure, an operator reran the item, or before giving up on an item that had an
//!    unclear attempt. Only when no
//!    transfer exists is a new attempt made, and only with a new key once the old one aged out.
//!
//! Which of these applies is decided in one place, [`super::plan`] (pure); this file carries
//! the decision out.

use tracing::{instrument, warn};
use uuid::Uuid;

use super::plan::{AfterFailure, IfNone, KeyUse, TransferAction, TransferPlan, after_failure};
use super::{Engine, JobError, Next, Step};
use crate::config::PayoutFlowSetting;
use crate::dots::client::{DotsError, ErrorClass};
use crate::dots::types::{CreateTransfer, Transfer};
use crate::item::{CallOutcome, ItemState};
use crate::store::ItemRecord;

enum Reconciled {
    Found(Transfer),
    None,
}

impl Engine {
    #[instrument(skip_all, fields(batch_id = %item.batch_id, item_id = %item.id, attempt = item.transfer_attempts))]
    pub(super) async fn transfer(&self, item: &ItemRecord) -> Result<Step, JobError> {
        let id = item.id;
        let plan = TransferPlan::for_item(item, self.now(), &self.settings);
        if !matches!(
            plan.action,
            TransferAction::AlreadyMade(_) | TransferAction::Fail(_)
        ) && let Some(wait) = self.funds_gate(item).await?
        {
            return Ok(wait);
        }
        let (user, key) = match plan.action {
            TransferAction::AlreadyMade(t) => {
                // Defence in depth: an item that has a transfer is never paid again.
                return Ok(self
                    .store
                    .record_transfer_done(id, t, "already recorded")
                    .await?
                    .into());
            }
            TransferAction::Fail(reason) => {
                self.store
                    .fail_item(id, ItemState::Transferring, reason)
                    .await?;
                return Ok(Step::done(Next::Idle));
            }
            TransferAction::Send { user, key } => (user, key),
            TransferAction::Reconcile { user, if_none } => match self.reconcile(item, user).await {
                Err(e) => {
                    return self
                        .transfer_retry(item, user, CallOutcome::Retryable, &e)
                        .await;
                }
                Ok(Reconciled::Found(t)) => {
                    return Ok(self
                        .store
                        .record_transfer_done(id, t.id, "found at Dots by reconciliation")
                        .await?
                        .into());
                }
                Ok(Reconciled::None) => {
                    if self.store.record_reconciled_none(id, 1).await?.is_none() {
                        return Ok(Step::Changed);
                    }
                    match if_none {
                        IfNone::Send(key) => (user, key),
                        IfNone::Wait => {
                            let at = self.next_attempt_at(item.attempts, None);
                            self.store
                                .record_transfer_failure(
                                    id,
                                    CallOutcome::DuplicateKey,
                                    "key seen by Dots, no transfer listed yet",
                                    at,
                                    Some(self.now()),
                                )
                                .await?;
                            return Ok(Step::done(Next::RetryAt(at)));
                        }
                    }
                }
            },
        };
        // Phase 1: intent and key are durable before the request leaves.
        if self
            .store
            .record_transfer_intent(id, key.key, key.generation, key.key_at)
            .await?
            .is_none()
        {
            return Ok(Step::Changed); // state moved under us; look again
        }
        self.send_transfer(item, user, key).await
    }

    /// A pending item's first transfer attempt, its payee's Dots user known: with no key on
    /// record there is nothing to reconcile, so the move to `transferring` and phase 1 commit
    /// in one transaction and the call follows in the same step.
    #[instrument(skip_all, fields(batch_id = %item.batch_id, item_id = %item.id))]
    pub(super) async fn first_transfer(
        &self,
        item: &ItemRecord,
        user: Uuid,
    ) -> Result<Step, JobError> {
        debug_assert!(item.transfer_key.is_none() && item.transfer_id.is_none());
        let key = KeyUse {
            key: crate::item::IdempotencyKey::derive(item.id, item.transfer_key_gen),
            generation: item.transfer_key_gen,
            key_at: self.now(),
        };
        // Phase 1: intent and key are durable before the request leaves.
        if self
            .store
            .begin_transfer_with_intent(
                item.id,
                &item.payee_id,
                user,
                key.key,
                key.generation,
                key.key_at,
            )
            .await?
            .is_none()
        {
            return Ok(Step::Changed); // not pending any more (canceled?): look again
        }
        self.send_transfer(item, user, key).await
    }

    /// Phases 2 and 3, once phase 1 is committed: the call, with no transaction open, and its
    /// outcome. `item` is the row as it was before phase 1.
    async fn send_transfer(
        &self,
        item: &ItemRecord,
        user: Uuid,
        key: KeyUse,
    ) -> Result<Step, JobError> {
        let id = item.id;
        // Phase 2: the call, with no transaction open.
        let req = CreateTransfer {
            amount: item.amount.as_credit(),
            user_id: user,
            idempotency_key: Some(key.key.as_uuid()),
            metadata: Some(super::item_metadata(item, "payout")),
        };
        match self.dots.create_transfer(&req).await {
            // Phase 3: the outcome.
            Ok(t) => {
                if t.amount != req.amount || t.user_id != user {
                    warn!(transfer_id = %t.id, amount = t.amount, "Dots echoed a different amount or user");
                }
                if self.settings.payout_flow != PayoutFlowSetting::Always {
                    // The next step depends on the payee's route (`route.rs`): no flow intent yet.
                    let done = self.store.record_transfer_done(id, t.id, "made").await?;
                    return Ok(done.into());
                }
                // The payout flow is this job's next step: its intent commits with the transfer.
                let done = self
                    .store
                    .record_transfer_done_with_payout_intent(id, t.id, "made")
                    .await?;
                Ok(match done {
                    Some(row) => Step::MovedPayoutIntentOurs(Box::new(row)),
                    None => Step::Changed,
                })
            }
            Err(e) => {
                let outcome = match e.class() {
                    ErrorClass::Retryable => CallOutcome::Retryable,
                    ErrorClass::Ambiguous => CallOutcome::Ambiguous,
                    ErrorClass::DuplicateKey => CallOutcome::DuplicateKey,
                    ErrorClass::Permanent if e.is_insufficient_funds() => {
                        CallOutcome::InsufficientFunds
                    }
                    ErrorClass::Permanent => CallOutcome::Permanent,
                };
                self.transfer_retry(item, user, outcome, &e).await
            }
        }
    }

    /// Closes a failed call: retry later, reconcile now, or fail the item — never fail an item
    /// whose money may have moved without looking at Dots first.
    async fn transfer_retry(
        &self,
        item: &ItemRecord,
        user: Uuid,
        outcome: CallOutcome,
        err: &DotsError,
    ) -> Result<Step, JobError> {
        let id = item.id;
        let msg = err.to_string();
        let now = self.now();
        if let Some(until) = self.held_by_circuit(err).await? {
            // Systemic (an open circuit, or our key refused): nothing counted against the item.
            // The call is closed with what it may have done: a refusal moved nothing, an unclear
            // call is retried with the same key or reconciled like any other.
            let closed = match outcome {
                CallOutcome::Permanent => CallOutcome::Retryable,
                other => other,
            };
            self.store
                .record_transfer_failure(id, closed, &msg, until, None)
                .await?;
            return Ok(Step::done(Next::RetryAt(until)));
        }
        let then = after_failure(item, outcome, now, &self.settings);
        match then {
            AfterFailure::ReconcileNext => {
                // Reconcile on the next turn, straight away.
                return Ok(self
                    .store
                    .record_transfer_failure(id, outcome, &msg, now, Some(now))
                    .await?
                    .into());
            }
            AfterFailure::RetryLater => {
                let at = self.next_attempt_at(item.attempts, Some(err));
                self.store
                    .record_transfer_failure(id, outcome, &msg, at, Some(now))
                    .await?;
                return Ok(Step::done(Next::RetryAt(at)));
            }
            AfterFailure::ReconcileThenFail => match self.reconcile(item, user).await {
                Ok(Reconciled::Found(t)) => {
                    self.store
                        .record_transfer_failure(id, outcome, &msg, 0, Some(now))
                        .await?;
                    return Ok(self
                        .store
                        .record_transfer_done(id, t.id, "found at Dots by reconciliation")
                        .await?
                        .into());
                }
                Ok(Reconciled::None) => {}
                Err(e) => {
                    // Cannot tell: keep the item alive and try again later (held, uncounted,
                    // when the reconciliation met an open circuit).
                    let held = self.held_by_circuit(&e).await?;
                    let at = held.unwrap_or_else(|| self.next_attempt_at(item.attempts, Some(&e)));
                    self.store
                        .record_transfer_failure(
                            id,
                            CallOutcome::Ambiguous,
                            &format!("{msg}; reconciliation failed: {e}"),
                            at,
                            held.is_none().then_some(now),
                        )
                        .await?;
                    return Ok(Step::done(Next::RetryAt(at)));
                }
            },
            AfterFailure::HoldForFunds => return self.hold_for_funds(item, &msg).await,
            AfterFailure::Fail => {}
        }
        self.store
            .record_transfer_failure(id, outcome, &msg, 0, Some(now))
            .await?;
        let reason = if outcome == CallOutcome::Permanent {
            format!("transfer refused: {msg}")
        } else {
            format!("transfer {}", super::plan::gave_up_reason(item, now, &msg))
        };
        self.store
            .fail_item(id, ItemState::Transferring, &reason)
            .await?;
        Ok(Step::done(Next::Idle))
    }

    /// Looks for a transfer this item already made: every page of the user's transfers,
    /// matched on our metadata (`payrun_item_id`; Dots does not echo idempotency keys).
    #[instrument(skip_all, fields(batch_id = %item.batch_id, item_id = %item.id))]
    async fn reconcile(&self, item: &ItemRecord, user: Uuid) -> Result<Reconciled, DotsError> {
        let transfers = self.dots.list_all_transfers(user).await?;
        let item_id = item.id.to_string();
        let mine = transfers
            .into_iter()
            .find(|t| t.metadata_str("payrun_item_id") == Some(item_id.as_str()));
        Ok(match mine {
            Some(t) if !matches!(t.status.as_str(), "failed" | "canceled" | "reversed") => {
                Reconciled::Found(t)
            }
            _ => Reconciled::None,
        })
    }
}
