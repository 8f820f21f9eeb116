//! One circuit's open/close decision: a pure state machine, time passed in (no clock inside).

use super::{Kind, Policy};

/// One circuit's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Working. `failures` of this kind in a row so far, the first at `since`.
    Closed { failures: u32, since: i64 },
    /// Held since `since`; the next probe at `probe_at`, after `probes_failed` failed ones.
    Open {
        since: i64,
        reason: String,
        probe_at: i64,
        probes_failed: u32,
    },
}

/// What a state change means for the world outside the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Opened {
        reason: String,
    },
    /// Closed after being open `for_ms`.
    Closed {
        for_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circuit {
    pub kind: Kind,
    pub state: State,
}

impl Circuit {
    pub fn new(kind: Kind) -> Circuit {
        Circuit {
            kind,
            state: State::Closed {
                failures: 0,
                since: 0,
            },
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// A call failed with this circuit's kind at `now`.
    pub fn on_failure(&mut self, now: i64, reason: &str, policy: Policy) -> Option<Change> {
        let p = policy.for_kind(self.kind);
        let State::Closed { failures, since } = self.state else {
            return None; // already open: calls in flight when it opened
        };
        let since = if failures == 0 { now } else { since };
        let failures = failures + 1;
        if failures >= p.open_after && now - since >= p.open_after_ms {
            self.state = State::Open {
                since: now,
                reason: reason.to_string(),
                probe_at: now + p.probe_delay_ms(0),
                probes_failed: 0,
            };
            return Some(Change::Opened {
                reason: reason.to_string(),
            });
        }
        self.state = State::Closed { failures, since };
        None
    }

    /// Dots answered a call in a way that shows this condition is not there (a success, or a
    /// failure of another kind or of the item alone).
    pub fn on_answer(&mut self, now: i64) -> Option<Change> {
        let was = std::mem::replace(
            &mut self.state,
            State::Closed {
                failures: 0,
                since: 0,
            },
        );
        match was {
            State::Open { since, .. } => Some(Change::Closed {
                for_ms: now - since,
            }),
            State::Closed { .. } => None,
        }
    }

    /// A probe failed with this kind: the next one later.
    pub fn on_probe_failed(&mut self, now: i64, reason: &str, policy: Policy) {
        let p = policy.for_kind(self.kind);
        if let State::Open {
            probes_failed,
            probe_at,
            reason: r,
            ..
        } = &mut self.state
        {
            *probes_failed += 1;
            *probe_at = now + p.probe_delay_ms(*probes_failed);
            *r = reason.to_string();
        }
    }

    /// While open: when the next probe is due.
    pub fn probe_at(&self) -> Option<i64> {
        match self.state {
            State::Open { probe_at, .. } => Some(probe_at),
            State::Closed { .. } => None,
        }
    }
}
