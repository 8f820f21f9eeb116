//! A chunk: up to `dots.transfer_batch_size` items of one batch that go to Dots in one
//! `POST /v2/transfer-batches` (the worker's chunker, `jobs::chunk`). Pure domain: no I/O.
//!
//! A chunk's id is derived from its batch and its number in that batch (`batches.chunk_seq`,
//! counted in the transaction that opens it), never random; so is the idempotency key of its
//! call. Its items keep the keys they would have had alone (`item::IdempotencyKey`): the chunk
//! is only the envelope.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::{BatchId, IdError, NAMESPACE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(Uuid);

impl ChunkId {
    /// The `seq`th chunk (1, 2, …) of `batch`.
    pub fn derive(batch: BatchId, seq: i64) -> ChunkId {
        ChunkId(Uuid::new_v5(
            &NAMESPACE,
            format!("chunk:{batch}:{seq}").as_bytes(),
        ))
    }

    /// The idempotency key of the chunk's call as a whole (each item carries its own too).
    pub fn call_key(&self) -> Uuid {
        Uuid::new_v5(&NAMESPACE, format!("chunk-key:{}", self.0).as_bytes())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl FromStr for ChunkId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Uuid::parse_str(s.trim()).map(ChunkId).map_err(|_| IdError {
            kind: "chunk id",
            raw: s.to_string(),
        })
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a chunk stands, as stored in `transfer_chunks.state` (a CHECK constraint, a trigger on
/// SQLite, lists exactly [`ChunkState::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkState {
    /// Its items' intent is committed and its call may be under way: the chunker that opened
    /// it holds its items' leases.
    Open,
    /// The outcome of each of its items is committed.
    Done,
    /// Its items were handed to the per-item path without a full answer (the call's outcome
    /// unclear, or the call not made): each item finishes its transfer alone, reconciling
    /// first where money may have moved.
    Released,
}

impl ChunkState {
    pub const ALL: [ChunkState; 3] = [ChunkState::Open, ChunkState::Done, ChunkState::Released];

    pub fn as_str(self) -> &'static str {
        match self {
            ChunkState::Open => "open",
            ChunkState::Done => "done",
            ChunkState::Released => "released",
        }
    }
}

impl fmt::Display for ChunkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a chunk state (expected open, done or released)")]
pub struct ChunkStateError(String);

impl FromStr for ChunkState {
    type Err = ChunkStateError;
    fn from_str(s: &str) -> Result<Self, ChunkStateError> {
        ChunkState::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ChunkStateError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ids_and_keys_are_derived_from_the_batch_and_the_number() {
        let b = BatchId::new_random();
        assert_eq!(ChunkId::derive(b, 1), ChunkId::derive(b, 1));
        assert_ne!(ChunkId::derive(b, 1), ChunkId::derive(b, 2));
        assert_ne!(
            ChunkId::derive(b, 1),
            ChunkId::derive(BatchId::new_random(), 1)
        );
        let c = ChunkId::derive(b, 1);
        assert_eq!(c.call_key(), ChunkId::derive(b, 1).call_key());
        assert_ne!(c.call_key(), c.as_uuid());
        assert_eq!(c.to_string().parse::<ChunkId>().unwrap(), c);
    }

    #[test]
    fn chunk_states_round_trip_through_their_stored_text() {
        for s in ChunkState::ALL {
            assert_eq!(s.as_str().parse::<ChunkState>(), Ok(s));
        }
        assert!("sent".parse::<ChunkState>().is_err());
    }
}
