//! Batches and the ids that name batches and items. Pure domain: no I/O.
//!
//! A `BatchId` is random (a batch is created once, in one transaction). An `ItemId` is derived
//! from the batch and the row's line: the batch id's first eight bytes, then the line. The
//! same row of the same batch always has the same id, and a batch's ids sort in file order, so
//! storing a batch appends to the primary-key index instead of writing all over it (bulk
//! intake, see `store::batches`), and "the items of this batch after line N" is a key range.

use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Lines above this do not fit an item id (no file has 2^62 lines).
const LINE_MASK: u64 = (1 << 62) - 1;

/// Namespace for every UUID v5 payrun derives.
pub(crate) const NAMESPACE: Uuid = Uuid::from_u128(0x7061_7972_756e_4000_8000_0000_0000_0001);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(Uuid);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(Uuid);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {raw:?} is not a valid id (expected a UUID)")]
pub struct IdError {
    kind: &'static str,
    raw: String,
}

impl BatchId {
    pub fn new_random() -> BatchId {
        BatchId(Uuid::new_v4())
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl ItemId {
    /// The item stored from line `line` of `batch`'s file: the same inputs always give the
    /// same id. Bytes 0..8 are the batch's (keeping its UUID version), bytes 8..16 the line
    /// with the RFC 4122 variant bits set, so ids of one batch sort by line.
    pub fn for_line(batch: BatchId, line: u64) -> ItemId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&batch.0.as_bytes()[..8]);
        let low = (line & LINE_MASK) | 0x8000_0000_0000_0000;
        b[8..].copy_from_slice(&low.to_be_bytes());
        ItemId(Uuid::from_bytes(b))
    }

    /// The line this id was made for, if it was made by [`ItemId::for_line`] for `batch`.
    pub fn line_in(&self, batch: BatchId) -> Option<u64> {
        let b = self.0.as_bytes();
        (b[..8] == batch.0.as_bytes()[..8] && b[8] & 0xc0 == 0x80)
            .then(|| u64::from_be_bytes(b[8..].try_into().expect("8 bytes")) & LINE_MASK)
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

macro_rules! uuid_newtype_impls {
    ($t:ident, $kind:literal) => {
        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s.trim()).map($t).map_err(|_| IdError {
                    kind: $kind,
                    raw: s.to_string(),
                })
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}
uuid_newtype_impls!(BatchId, "batch id");
uuid_newtype_impls!(ItemId, "item id");

/// Where a batch stands, as stored in `batches.status` (the CHECK constraint there lists
/// exactly [`BatchState::ALL`]). Parsed when a batch record is read (`store::BatchRecord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Over the approval threshold: its items wait until an operator approves it.
    AwaitingApproval,
    /// Its items may be worked (below the threshold, or approved).
    Approved,
    /// Canceled by an operator (its items were canceled first).
    Canceled,
}

impl BatchState {
    pub const ALL: [BatchState; 3] = [
        BatchState::AwaitingApproval,
        BatchState::Approved,
        BatchState::Canceled,
    ];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::AwaitingApproval => "awaiting_approval",
            BatchState::Approved => "approved",
            BatchState::Canceled => "canceled",
        }
    }
}

/// Compares with the stored text (`state == "canceled"`).
impl PartialEq<&str> for BatchState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for BatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a batch status (expected awaiting_approval, approved or canceled)")]
pub struct BatchStateError(String);

impl FromStr for BatchState {
    type Err = BatchStateError;
    fn from_str(s: &str) -> Result<Self, BatchStateError> {
        BatchState::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| BatchStateError(s.to_string()))
    }
}

impl TryFrom<String> for BatchState {
    type Error = BatchStateError;
    fn try_from(s: String) -> Result<Self, BatchStateError> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_ids_are_deterministic_per_batch_and_line_and_sort_by_line() {
        let b = BatchId::new_random();
        assert_eq!(ItemId::for_line(b, 2), ItemId::for_line(b, 2));
        assert_ne!(ItemId::for_line(b, 2), ItemId::for_line(b, 3));
        assert_ne!(
            ItemId::for_line(b, 2),
            ItemId::for_line(BatchId::new_random(), 2)
        );
        // The text form (what the store keys on) sorts like the lines.
        let ids: Vec<String> = [2u64, 10, 255, 256, 1 << 40]
            .iter()
            .map(|l| ItemId::for_line(b, *l).to_string())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert_eq!(ItemId::for_line(b, 77).line_in(b), Some(77));
        assert_eq!(ItemId::for_line(b, 77).as_uuid().get_version_num(), 4);
        assert_eq!(ItemId::for_line(b, 77).line_in(BatchId::new_random()), None);
    }

    #[test]
    fn batch_states_round_trip_through_their_stored_text() {
        for s in BatchState::ALL {
            assert_eq!(s.as_str().parse::<BatchState>(), Ok(s));
        }
        assert!("running".parse::<BatchState>().is_err());
    }

    #[test]
    fn ids_parse_only_from_uuids() {
        let b = BatchId::new_random();
        assert_eq!(b.to_string().parse::<BatchId>().unwrap(), b);
        let err = "batch-7".parse::<BatchId>().unwrap_err();
        assert!(err.to_string().contains("batch id"));
    }
}

pub mod chunk;
pub mod grouped;
pub mod hold;
mod row;

pub use chunk::{ChunkId, ChunkState};
pub use hold::{Hold, HoldReason};
pub use row::{Contact, Row, RowError, SHOWN_CHARS, clip};
