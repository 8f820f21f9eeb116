//! What the store remembers about an item's last transfer call (`items.transfer_outcome`).
//! Pure domain: no I/O. The schema's CHECK (a trigger on SQLite) refuses any other value.

use std::fmt;
use std::str::FromStr;

/// The recorded outcome of the item's last transfer call, or why it is marked for
/// reconciliation. `None` on the row: no call was closed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferOutcome {
    /// The transfer was made (or found at Dots).
    Ok,
    /// Dots answered 429/5xx, or the connection failed before sending: retry the same key.
    Retryable,
    /// Sent, answer lost: the transfer may exist.
    Ambiguous,
    /// Dots refused the key as already used: reconcile.
    DuplicateKey,
    /// Dots refused the transfer (4xx): nothing moved.
    Permanent,
    /// Reconciliation found no transfer for the item.
    ReconciledNone,
    /// An operator reran the failed item: reconcile any earlier attempt first.
    Rerun,
}

impl TransferOutcome {
    pub const ALL: [TransferOutcome; 7] = [
        TransferOutcome::Ok,
        TransferOutcome::Retryable,
        TransferOutcome::Ambiguous,
        TransferOutcome::DuplicateKey,
        TransferOutcome::Permanent,
        TransferOutcome::ReconciledNone,
        TransferOutcome::Rerun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferOutcome::Ok => "ok",
            TransferOutcome::Retryable => "retryable",
            TransferOutcome::Ambiguous => "ambiguous",
            TransferOutcome::DuplicateKey => "duplicate_key",
            TransferOutcome::Permanent => "permanent",
            TransferOutcome::ReconciledNone => "reconciled_none",
            TransferOutcome::Rerun => "rerun",
        }
    }

    /// The call failed in a way that leaves open whether Dots made the transfer.
    pub fn is_unclear(self) -> bool {
        matches!(
            self,
            TransferOutcome::Ambiguous | TransferOutcome::Retryable | TransferOutcome::DuplicateKey
        )
    }

    /// The outcome proves that this attempt moved no money.
    pub fn proves_unpaid(self) -> bool {
        matches!(
            self,
            TransferOutcome::Permanent | TransferOutcome::ReconciledNone
        )
    }
}

impl fmt::Display for TransferOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transfer outcome {0:?}")]
pub struct UnknownOutcome(pub String);

impl FromStr for TransferOutcome {
    type Err = UnknownOutcome;
    fn from_str(s: &str) -> Result<Self, UnknownOutcome> {
        TransferOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownOutcome(s.to_string()))
    }
}

/// How a transfer call that did not succeed is closed: the failure classes of
/// `dots::client::ErrorClass`, as they are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Retryable,
    Ambiguous,
    DuplicateKey,
    Permanent,
    /// Dots refused the transfer because the App wallet is short (`transaction-insufficient-
    /// funds`): a definite refusal, recorded as `permanent` (nothing moved), that holds the
    /// batch instead of failing the item.
    InsufficientFunds,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        TransferOutcome::from(self).as_str()
    }
}

impl From<CallOutcome> for TransferOutcome {
    fn from(c: CallOutcome) -> TransferOutcome {
        match c {
            CallOutcome::Retryable => TransferOutcome::Retryable,
            CallOutcome::Ambiguous => TransferOutcome::Ambiguous,
            CallOutcome::DuplicateKey => TransferOutcome::DuplicateKey,
            CallOutcome::Permanent | CallOutcome::InsufficientFunds => TransferOutcome::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_their_names() {
        for o in TransferOutcome::ALL {
            assert_eq!(o.as_str().parse::<TransferOutcome>().unwrap(), o);
        }
        assert!("maybe".parse::<TransferOutcome>().is_err());
    }
}
