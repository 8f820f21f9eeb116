//! The simulator's clock: real UTC time plus an offset that tests move forward.
//!
//! Guarantees: `now()` never jumps backwards because of `advance` (the offset only grows), and
//! every simulated deadline (payee completion, the 24 h idempotency window) reads this clock, so
//! tests never need to sleep. Latency, stalls and the rate-limit window use real time instead:
//! they model the network, not the business clock.

use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::time::Duration;

/// Real time shifted by an offset that only grows.
#[derive(Debug, Default)]
pub struct SimClock {
    offset: Mutex<chrono::Duration>,
}

impl SimClock {
    /// A clock showing real time.
    pub fn new() -> SimClock {
        SimClock::default()
    }

    /// The simulated current time.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().expect("clock lock")
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let mut offset = self.offset.lock().expect("clock lock");
        *offset = offset.checked_add(&by).unwrap_or(chrono::Duration::MAX);
    }

    /// How far the clock has been moved so far.
    pub fn offset(&self) -> chrono::Duration {
        *self.offset.lock().expect("clock lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward() {
        let c = SimClock::new();
        let before = c.now();
        c.advance(Duration::from_secs(25 * 3600));
        assert!(c.now() - before >= chrono::Duration::hours(25));
        assert_eq!(c.offset(), chrono::Duration::hours(25));
    }
}
