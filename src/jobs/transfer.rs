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

use tracing::{instrument, warn};
use uuid::Uuid;

use super::{Engine, JobError, Next, Step};
use crate::dots::client::{DotsError, ErrorClass};
use crate::dots::types::{CreateTransfer, Transfer};
use crate::item::{IdempotencyKey, ItemState, TransferOutcome};
use crate::money::Cents;
use crate::store::{CallOutcome, ItemRecord, now_ms};

/// How long we trust Dots to remember a key (it keeps them 24 h).
pub const KEY_WINDOW_MS: i64 = 23 * 3600 * 1000;

enum Reconciled {
    Found(Transfer),
    None,
}

impl Engine {
    #[instrument(skip_all, fields(batch_id = %item.batch_id, item_id = %item.id, attempt = item.transfer_attempts))]
    pub(super) async fn transfer(&self, item: &ItemRecord) -> Result<Step, JobError> {
        let id = item.id;
        let Some(user) = item.dots_user_id else {
            self.store
                .fail_item(id, ItemState::Transferring, "no Dots user id to pay")
                .await?;
            return Ok(Step::Done(Next::Idle));
        };
        if let Some(t) = item.transfer_id {
            // Defence in depth: an item that has a transfer is never paid again.
            return Ok(self
                .store
                .record_transfer_done(id, t, "already recorded")
                .await?
                .into());
        }
        let amount = item.amount;
        let now = self.now();
        let outcome = item.transfer_outcome;
        let key_age = item.transfer_key_at.map(|t| now - t).unwrap_or(0);
        let aged_out = key_age >= KEY_WINDOW_MS;
        let unclear = outcome.is_some_and(TransferOutcome::is_unclear);

        let mut key = item.transfer_key;
        let mut generation = item.transfer_key_gen;
        let mut key_at = item.transfer_key_at.unwrap_or(now);
        let must_reconcile = key.is_some()
            && (item.transfer_call_open
                || outcome == Some(TransferOutcome::DuplicateKey)
                || outcome == Some(TransferOutcome::Rerun)
                || (unclear && aged_out));
        if must_reconcile {
            match self.reconcile(item, user).await {
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
                    if aged_out {
                        // Proven absent and the key is forgotten by Dots: a new key, recorded below before the call.
                        generation += 1;
                        key = None;
                    } else if outcome == Some(TransferOutcome::DuplicateKey) {
                        // Dots saw the key but lists no transfer: the first request may still be
                        // in flight there. Wait, then retry the same key (or a new one once aged out).
                        let at = self.next_attempt_at(item.attempts, None);
                        self.store
                            .record_transfer_failure(
                                id,
                                CallOutcome::DuplicateKey,
                                "key seen by Dots, no transfer listed yet",
                                at,
                            )
                            .await?;
                        return Ok(Step::Done(Next::RetryAt(at)));
                    }
                }
            }
        }
        let key = match key {
            Some(k) => k,
            None => {
                key_at = now;
                IdempotencyKey::derive(id, generation)
            }
        };
        // Phase 1: intent and key are durable before the request leaves.
        if self
            .store
            .record_transfer_intent(id, key, generation, key_at)
            .await?
            .is_none()
        {
            return Ok(Step::Changed); // state moved under us; look again
        }
        self.send_transfer(item, user, amount, key).await
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
        let id = item.id;
        debug_assert!(item.transfer_key.is_none() && item.transfer_id.is_none());
        let amount = item.amount;
        let generation = item.transfer_key_gen;
        let key = IdempotencyKey::derive(id, generation);
        // Phase 1: intent and key are durable before the request leaves.
        if self
            .store
            .begin_transfer_with_intent(id, &item.payee_id, user, key, generation, self.now())
            .await?
            .is_none()
        {
            return Ok(Step::Changed); // not pending any more (canceled?): look again
        }
        self.send_transfer(item, user, amount, key).await
    }

    /// Phases 2 and 3, once phase 1 is committed: the call, with no transaction open, and its
    /// outcome. `item` is the row as it was before phase 1.
    async fn send_transfer(
        &self,
        item: &ItemRecord,
        user: Uuid,
        amount: Cents,
        key: IdempotencyKey,
    ) -> Result<Step, JobError> {
        let id = item.id;
        // Phase 2: the call, with no transaction open.
        let req = CreateTransfer {
            amount: amount.as_credit(),
            user_id: user,
            idempotency_key: Some(key.as_uuid()),
            metadata: Some(super::item_metadata(item, "payout")),
        };
        match self.dots.create_transfer(&req).await {
            // Phase 3: the outcome.
            Ok(t) => {
                if t.amount != req.amount || t.user_id != user {
                    warn!(transfer_id = %t.id, amount = t.amount, "Dots echoed a different amount or user");
                }
                // The payout flow is this job's next step: its intent commits with the transfer.
                let done = self
                    .store
                    .record_transfer_done_with_payout_intent(id, t.id, "made")
                    .await?;
                Ok(match done {
                    Some(row) => Step::MovedWithPayoutIntent(Box::new(row)),
                    None => Step::Changed,
                })
            }
            Err(e) => {
                let outcome = match e.class() {
                    ErrorClass::Retryable => CallOutcome::Retryable,
                    ErrorClass::Ambiguous => CallOutcome::Ambiguous,
                    ErrorClass::DuplicateKey => CallOutcome::DuplicateKey,
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
        let give_up = outcome == CallOutcome::Permanent
            || item.attempts + 1 >= self.settings.max_attempts as i64;
        if outcome == CallOutcome::DuplicateKey {
            // Reconcile on the next turn, straight away.
            return Ok(self
                .store
                .record_transfer_failure(id, outcome, &msg, now_ms())
                .await?
                .into());
        }
        if give_up {
            // Earlier attempts (or this one) may have moved money: look before failing.
            let had_unclear = item.transfer_attempts > 1 || outcome == CallOutcome::Ambiguous;
            if had_unclear {
                match self.reconcile(item, user).await {
                    Ok(Reconciled::Found(t)) => {
                        self.store
                            .record_transfer_failure(id, outcome, &msg, 0)
                            .await?;
                        return Ok(self
                            .store
                            .record_transfer_done(id, t.id, "found at Dots by reconciliation")
                            .await?
                            .into());
                    }
                    Ok(Reconciled::None) => {}
                    Err(e) => {
                        // Cannot tell: keep the item alive and try again later.
                        let at = self.next_attempt_at(item.attempts, Some(&e));
                        self.store
                            .record_transfer_failure(
                                id,
                                CallOutcome::Ambiguous,
                                &format!("{msg}; reconciliation failed: {e}"),
                                at,
                            )
                            .await?;
                        return Ok(Step::Done(Next::RetryAt(at)));
                    }
                }
            }
            self.store
                .record_transfer_failure(id, outcome, &msg, 0)
                .await?;
            let reason = if outcome == CallOutcome::Permanent {
                format!("transfer refused: {msg}")
            } else {
                format!(
                    "transfer gave up after {} attempts: {msg}",
                    item.attempts + 1
                )
            };
            self.store
                .fail_item(id, ItemState::Transferring, &reason)
                .await?;
            return Ok(Step::Done(Next::Idle));
        }
        let at = self.next_attempt_at(item.attempts, Some(err));
        self.store
            .record_transfer_failure(id, outcome, &msg, at)
            .await?;
        Ok(Step::Done(Next::RetryAt(at)))
    }

    /// Looks for a transfer this item already made: every page of the user's transfers,
    /// matched on our metadata (`payrun_item_id`; Dots does not echo idempotency keys).
    #[instrument(skip_all, fields(batch_id = %item.batch_id, item_id = %item.id))]
    async fn reconcile(&self, item: &ItemRecord, user: Uuid) -> Result<Reconciled, DotsError> {
        let transfers = self.dots.list_all_transfers(user).await?;
        let mine = transfers
            .into_iter()
            .find(|t| t.metadata_str("payrun_item_id") == Some(item.id.to_string().as_str()));
        Ok(match mine {
            Some(t) if !matches!(t.status.as_str(), "failed" | "canceled" | "reversed") => {
                Reconciled::Found(t)
            }
            _ => Reconciled::None,
        })
    }
}
