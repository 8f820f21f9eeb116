//! A payout item and its state machine. Pure domain: no I/O.
//!
//! `ItemState` is the only place that knows which state may follow which; the store refuses
//! any other transition (it calls [`ItemState::can_become`] and the schema's CHECK constraint
//! refuses unknown state names). The states, and who moves an item out of each:
//!
//! ```text
//!  pending ──(payee has a Dots user)──────────────► transferring ──► transferred ──► awaiting_payout ──► completed
//!     │                                                 ▲   │             │   ▲            │
//!     └─(no user)─► onboarding ──(flow got user_id)─────┘   │             │   └────────────┘ (new link)
//!                        │                                  ▼             ▼
//!                        └──────────────────────────────► failed ◄────────┘
//!  pending | onboarding | failed(before transfer) ──► canceled
//!  failed ──(rerun)──► pending, or transferred when the money already moved
//!  onboarding ──(new link)──► pending;  awaiting_payout ──(new link)──► transferred
//!  transferred ──(payee paid out automatically, transfer completed: no payout flow)──► completed
//! ```
//! `onboarding` and `awaiting_payout` wait on the payee (the poller moves them on);
//! `completed`, `failed` and `canceled` are terminal until an operator reruns.

use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

use crate::batch::{ItemId, NAMESPACE};

mod outcome;

pub use outcome::{CallOutcome, TransferOutcome, UnknownOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemState {
    Pending,
    Onboarding,
    Transferring,
    Transferred,
    AwaitingPayout,
    Completed,
    Failed,
    Canceled,
}

impl ItemState {
    pub const ALL: [ItemState; 8] = [
        ItemState::Pending,
        ItemState::Onboarding,
        ItemState::Transferring,
        ItemState::Transferred,
        ItemState::AwaitingPayout,
        ItemState::Completed,
        ItemState::Failed,
        ItemState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Onboarding => "onboarding",
            ItemState::Transferring => "transferring",
            ItemState::Transferred => "transferred",
            ItemState::AwaitingPayout => "awaiting_payout",
            ItemState::Completed => "completed",
            ItemState::Failed => "failed",
            ItemState::Canceled => "canceled",
        }
    }

    /// The legal transitions. Everything not listed here is refused by the store.
    pub fn can_become(self, next: ItemState) -> bool {
        use ItemState::*;
        matches!(
            (self, next),
            (Pending, Onboarding | Transferring | Failed | Canceled)
                | (Onboarding, Transferring | Pending | Failed | Canceled)
                | (Transferring, Transferred | Failed)
                | (Transferred, AwaitingPayout | Completed | Failed)
                | (AwaitingPayout, Completed | Transferred)
                | (Failed, Pending | Transferred | Canceled)
        )
    }

    /// Nothing more happens without an operator.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemState::Completed | ItemState::Failed | ItemState::Canceled
        )
    }

    /// The next move is the payee's (finishing a flow), not payrun's.
    pub fn is_waiting_on_payee(self) -> bool {
        matches!(self, ItemState::Onboarding | ItemState::AwaitingPayout)
    }

    /// A batch is settled when every item is terminal or waiting on its payee.
    pub fn is_settled(self) -> bool {
        self.is_terminal() || self.is_waiting_on_payee()
    }

    /// A job may have work to do for an item in this state.
    pub fn is_workable(self) -> bool {
        matches!(
            self,
            ItemState::Pending | ItemState::Transferring | ItemState::Transferred
        )
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown item state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for ItemState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        ItemState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// The `idempotency_key` sent with a transfer. Derived from the item and a generation number,
/// so a retry after a crash reproduces exactly the key that was stored before the first call.
/// A new generation is only used after reconciliation proved that no transfer exists and the
/// old key has aged out of Dots' 24 h window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Uuid);

impl IdempotencyKey {
    pub fn derive(item: ItemId, generation: u32) -> IdempotencyKey {
        IdempotencyKey(Uuid::new_v5(
            &NAMESPACE,
            format!("transfer:{}:{}", item, generation).as_bytes(),
        ))
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl FromStr for IdempotencyKey {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, uuid::Error> {
        Uuid::parse_str(s).map(IdempotencyKey)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ItemState::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in ItemState::ALL {
            assert_eq!(s.as_str().parse::<ItemState>().unwrap(), s);
        }
        assert!("paid".parse::<ItemState>().is_err());
    }

    #[test]
    fn money_never_moves_twice_through_the_state_machine() {
        // Once transferred, no path leads back to a state that would transfer again.
        // (A rerun from failed goes to pending only for items with no transfer id, and the
        // transfer step reconciles any earlier attempt first.)
        for s in [Transferred, AwaitingPayout, Completed] {
            assert!(!s.can_become(Transferring), "{s}");
            assert!(!s.can_become(Pending), "{s}");
        }
        assert!(!Completed.can_become(Failed));
        assert!(!Transferring.can_become(Canceled));
        assert!(!Transferred.can_become(Canceled));
    }

    #[test]
    fn settled_means_terminal_or_waiting_on_the_payee() {
        let settled: Vec<_> = ItemState::ALL
            .into_iter()
            .filter(|s| s.is_settled())
            .collect();
        assert_eq!(
            settled,
            vec![Onboarding, AwaitingPayout, Completed, Failed, Canceled]
        );
    }

    #[test]
    fn idempotency_keys_are_reproducible_and_change_with_generation() {
        let item = ItemId::for_line(crate::batch::BatchId::new_random(), 2);
        assert_eq!(
            IdempotencyKey::derive(item, 0),
            IdempotencyKey::derive(item, 0)
        );
        assert_ne!(
            IdempotencyKey::derive(item, 0),
            IdempotencyKey::derive(item, 1)
        );
    }
}
