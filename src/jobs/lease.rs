//! When a job renews its item's lease: before a step only if what is left of the lease may
//! not cover that step (a renewal is a statement; most steps fit in what is left).

use super::Engine;
use super::plan::TransferPlan;
use crate::item::ItemState;
use crate::store::ItemRecord;

/// Time a step needs beyond its one Dots call: its few database statements and the client's
/// rate-limiter wait (see [`lease_left_needed_ms`]).
pub(super) const STEP_MARGIN_MS: i64 = 5_000;

/// A step that may call Dots several times starts only on a lease taken this recently.
const FRESH_LEASE_MS: i64 = 1_000;

/// How much of its lease a job must have left to start a step, else it renews the lease first.
///
/// The lease is what keeps a second worker off the item, so a step has to end before the
/// lease does. (The state guards catch a second worker anyway; the lease is what keeps it from
/// getting that far.) Renewing costs a statement, so it is skipped when what is left covers
/// the step:
/// - A step makes at most one Dots call unless it may reconcile (`may_reconcile`). One call
///   lasts at most the whole-request HTTP timeout (`dots.timeout_secs`, connecting included);
///   `STEP_MARGIN_MS` covers the step's statements and the rate limiter. Such a step starts
///   with at least max(lease / 2, timeout + margin) left: 20 s of a 30 s lease with the 15 s
///   timeout. When the lease is shorter than timeout + margin, every step renews first.
/// - A step that may reconcile lists the user's transfers (or flows) page by page besides its
///   call, so no fixed share of the lease bounds it: it starts only on a lease taken or
///   renewed within the last second — what every step got when the lease was renewed before
///   each one.
fn lease_left_needed_ms(lease_ms: i64, call_timeout_ms: i64, may_reconcile: bool) -> i64 {
    if may_reconcile {
        lease_ms - FRESH_LEASE_MS
    } else {
        (lease_ms / 2).max(call_timeout_ms + STEP_MARGIN_MS)
    }
}

impl Engine {
    /// Whether to renew the lease before the step `item` (in `state`) is up for. The lease's
    /// end is the one on the row this job last wrote or read (`lease_until`); a row that names
    /// another owner always goes back to `try_lease`, which decides.
    pub(super) fn must_renew_lease(
        &self,
        item: &ItemRecord,
        state: ItemState,
        payout_intent_ours: bool,
    ) -> bool {
        if item.lease_owner.as_deref() != Some(&*self.owner) {
            return true;
        }
        let needed = lease_left_needed_ms(
            self.lease_ms(),
            self.dots.timeout().as_millis() as i64,
            self.step_may_reconcile(item, state, payout_intent_ours),
        );
        item.lease_until - self.now() < needed
    }

    /// Whether the step may call Dots more than once, i.e. reconcile. A transfer step (or a
    /// pending item's first transfer) asks the same [`TransferPlan`] `transfer.rs` carries out;
    /// a payout step searches for its flow only when a payout-flow call was left open (not the
    /// one this job just marked open itself).
    fn step_may_reconcile(
        &self,
        item: &ItemRecord,
        state: ItemState,
        payout_intent_ours: bool,
    ) -> bool {
        match state {
            ItemState::Pending | ItemState::Transferring => {
                TransferPlan::for_item(item, self.now(), &self.settings).may_reconcile()
            }
            ItemState::Transferred => item.payout_call_open && !payout_intent_ours,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_call_step_starts_with_at_least_one_timeout_and_a_margin_left() {
        // The defaults: 30 s lease, 15 s timeout.
        assert_eq!(lease_left_needed_ms(30_000, 15_000, false), 20_000);
        // A long lease: half of it.
        assert_eq!(lease_left_needed_ms(120_000, 15_000, false), 60_000);
        // A lease shorter than one call and the margin: more than it can have, so always renew.
        assert!(lease_left_needed_ms(10_000, 15_000, false) > 10_000);
    }

    #[test]
    fn a_step_that_may_reconcile_starts_on_a_fresh_lease() {
        assert_eq!(lease_left_needed_ms(30_000, 15_000, true), 29_000);
    }
}
