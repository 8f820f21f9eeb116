//! The batch gate: before each step that would call Dots for an item (onboarding flow,
//! transfer, payout flow), the item job asks whether the item's batch is blocked — paused by
//! an operator, or held for insufficient funds (`store::control::Block`). A blocked item's job
//! ends there: no call, no attempt counted, no error recorded, lease released; the item stays
//! due, and the feeder hands it over again once the block is lifted.
//!
//! Guarantees:
//! - the decision is one pure function, [`decide`], of the blocked set and the item;
//! - it costs no SQL statement per step: the engine caches `Store::blocked_batches` and reads
//!   it again when the copy is older than `worker.feed_ms`, so a pause stops new calls within
//!   one feed interval (plus the step already under way) in every process;
//! - the gate sits between steps, never inside one: a call already made is always followed by
//!   the commit of its outcome (a pause never skips a money call's phase 3), and a payout-flow
//!   call whose intent the transfer's success committed is made (it is under way: phase 1 is
//!   done), so a pause never leaves a call recorded as open that was never made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::BatchId;
use crate::item::ItemState;
use crate::store::{Block, Blocked, Store, StoreError};

/// Whether an item may take its next step now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Its batch is blocked so: the job ends without a call.
    Stop(Block),
}

/// The decision: a paused batch stops every item that would call Dots; a funds hold stops
/// items not yet transferred at or after its line (all of them without one). Items in other
/// states make no call in the job and are never stopped.
pub fn decide(blocked: &Blocked, batch: BatchId, line: i64, state: ItemState) -> Gate {
    let calls_dots = matches!(
        state,
        ItemState::Pending | ItemState::Transferring | ItemState::Transferred
    );
    let Some(&block) = blocked.get(&batch) else {
        return Gate::Go;
    };
    let stopped = calls_dots
        && match block {
            Block::Paused => true,
            Block::Funds { from_line } => {
                state != ItemState::Transferred && from_line.is_none_or(|from| line >= from)
            }
        };
    if stopped { Gate::Stop(block) } else { Gate::Go }
}

/// A copy of the blocked set and when it was read.
type Snapshot = Option<(Instant, Arc<Blocked>)>;

/// The engine's copy of the blocked set, shared by its jobs; read again when older than `max_age`.
#[derive(Clone)]
pub struct GateCache {
    max_age: Duration,
    copy: Arc<tokio::sync::Mutex<Snapshot>>,
}

impl GateCache {
    pub fn new(max_age: Duration) -> GateCache {
        GateCache {
            max_age,
            copy: Arc::default(),
        }
    }

    /// The blocked set, at most `max_age` old. One job reads the store while the others wait
    /// for its answer, so a process reads it at most once per `max_age`.
    pub async fn blocked(&self, store: &Store) -> Result<Arc<Blocked>, StoreError> {
        let mut copy = self.copy.lock().await;
        if let Some((at, set)) = copy.as_ref()
            && at.elapsed() < self.max_age
        {
            return Ok(set.clone());
        }
        let set = Arc::new(store.blocked_batches().await?);
        *copy = Some((Instant::now(), set.clone()));
        Ok(set)
    }

    /// Forgets the copy: the next check reads the store (after this process changed a block).
    pub async fn forget(&self) {
        *self.copy.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ItemState::*;

    #[test]
    fn the_gate_stops_exactly_the_items_a_block_covers() {
        let (paused, funds_all, funds_from_5, free) = (
            BatchId::new_random(),
            BatchId::new_random(),
            BatchId::new_random(),
            BatchId::new_random(),
        );
        let blocked: Blocked = [
            (paused, Block::Paused),
            (funds_all, Block::Funds { from_line: None }),
            (funds_from_5, Block::Funds { from_line: Some(5) }),
        ]
        .into();
        let stop_p = Gate::Stop(Block::Paused);
        let stop_all = Gate::Stop(Block::Funds { from_line: None });
        let stop_5 = Gate::Stop(Block::Funds { from_line: Some(5) });
        #[rustfmt::skip]
        let rows = [
            // batch, line, state, decision
            (paused, 2, Pending, stop_p),
            (paused, 2, Transferring, stop_p),
            (paused, 2, Transferred, stop_p),
            (paused, 2, Onboarding, Gate::Go),
            (paused, 2, AwaitingPayout, Gate::Go),
            (paused, 2, Completed, Gate::Go),
            (funds_all, 2, Pending, stop_all),
            (funds_all, 900, Transferring, stop_all),
            (funds_all, 2, Transferred, Gate::Go),
            (funds_all, 2, Failed, Gate::Go),
            (funds_from_5, 4, Pending, Gate::Go),
            (funds_from_5, 4, Transferring, Gate::Go),
            (funds_from_5, 5, Pending, stop_5),
            (funds_from_5, 6, Transferring, stop_5),
            (funds_from_5, 6, Transferred, Gate::Go),
            (free, 2, Pending, Gate::Go),
            (free, 2, Transferring, Gate::Go),
            (free, 2, Transferred, Gate::Go),
        ];
        for (batch, line, state, want) in rows {
            assert_eq!(
                decide(&blocked, batch, line, state),
                want,
                "line {line}, {state}"
            );
        }
    }
}
