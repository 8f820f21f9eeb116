//! A bounded set of recently seen webhook message ids.
//!
//! What it owns: remembering the last `capacity` distinct ids in arrival order.
//!
//! Guarantees: `first_sighting` returns true exactly once per id while that id is among the
//! last `capacity` distinct ids inserted; memory stays bounded by `capacity` ids (the oldest is
//! forgotten first). Svix redelivers with the same id, usually within hours, so a window of a
//! few thousand ids covers redeliveries at payrun's volume; a redelivery older than the window
//! is processed again, which is harmless because handlers only re-fetch state.

use std::collections::{HashSet, VecDeque};

/// The default number of ids remembered by the webhook endpoint.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug)]
pub struct Dedupe {
    capacity: usize,
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Dedupe {
    /// A set remembering at most `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Dedupe {
        let capacity = capacity.max(1);
        Dedupe {
            capacity,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Record `id`; true if it was not already remembered.
    pub fn first_sighting(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_first_sighting_only_once() {
        let mut d = Dedupe::new(10);
        assert!(d.first_sighting("msg_a"));
        assert!(!d.first_sighting("msg_a"));
        assert!(d.first_sighting("msg_b"));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn the_oldest_id_is_forgotten_once_capacity_is_reached() {
        let mut d = Dedupe::new(2);
        assert!(d.first_sighting("a"));
        assert!(d.first_sighting("b"));
        assert!(d.first_sighting("c"));
        assert_eq!(d.len(), 2);
        assert!(!d.first_sighting("c"));
        assert!(!d.first_sighting("b"));
        assert!(d.first_sighting("a"), "a was evicted, so it counts as new");
    }
}
