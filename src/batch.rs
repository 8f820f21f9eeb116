//! Batches and the ids that name batches and items. Pure domain: no I/O.
//!
//! A `BatchId` is random (a batch is created once, in one transaction). An `ItemId` is derived
//! from the batch and the payee, so re-reading the same file inside the same batch can never
//! produce a second item for one payee.

use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

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
    /// The item for `payee_id` in `batch`: the same inputs always give the same id.
    pub fn derive(batch: BatchId, payee_id: &str) -> ItemId {
        ItemId(Uuid::new_v5(
            &NAMESPACE,
            format!("item:{}:{}", batch.0, payee_id).as_bytes(),
        ))
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

/// Lifecycle of a batch as a whole (derived from its items, stored for fast listing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Items are being worked on.
    Running,
    /// Every item is terminal or waiting on its payee.
    Settled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_ids_are_deterministic_per_batch_and_payee() {
        let b = BatchId::new_random();
        assert_eq!(ItemId::derive(b, "s1"), ItemId::derive(b, "s1"));
        assert_ne!(ItemId::derive(b, "s1"), ItemId::derive(b, "s2"));
        assert_ne!(
            ItemId::derive(b, "s1"),
            ItemId::derive(BatchId::new_random(), "s1")
        );
    }

    #[test]
    fn ids_parse_only_from_uuids() {
        let b = BatchId::new_random();
        assert_eq!(b.to_string().parse::<BatchId>().unwrap(), b);
        let err = "batch-7".parse::<BatchId>().unwrap_err();
        assert!(err.to_string().contains("batch id"));
    }
}
