//! What keeps this process from doing its work, for `/healthz` and for a supervisor.
//!
//! Owns: one [`Health`] handle per process (cheap to clone), where each part of the process
//! reports a problem under its own name and clears it when it is over: an open circuit
//! (`jobs::circuit`: Dots refuses our credentials, is unreachable, or throttles every call), a
//! worker component that died or stalls (the queue worker, the poller, the feeder). `/healthz`
//! answers 503 with every reported problem while there is one, 200 `ok` otherwise.
//!
//! Guarantees: a report is visible to the next `/healthz` read; reports of different parts do not
//! overwrite each other. Not a global: tests run many workers in one process, each with its own.
//!
//! A leaf: it imports nothing of payrun.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One reported problem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Who reports it, e.g. `"circuit.dots"`, `"worker.feeder"`.
    pub source: String,
    /// What is wrong, for an operator: no secrets.
    pub reason: String,
    /// Since when (unix ms).
    pub since_ms: i64,
}

/// The process' health: problems reported by its parts.
#[derive(Debug, Clone, Default)]
pub struct Health {
    problems: Arc<Mutex<BTreeMap<String, Problem>>>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Reports (or updates) the problem of `source`; `since_ms` is kept from the first report
    /// while the problem lasts.
    pub fn report(&self, source: &str, reason: impl Into<String>, now_ms: i64) {
        let reason = reason.into();
        let mut p = self.lock();
        let since_ms = p.get(source).map_or(now_ms, |old| old.since_ms);
        p.insert(
            source.to_string(),
            Problem {
                source: source.to_string(),
                reason,
                since_ms,
            },
        );
    }

    /// `source`'s problem is over.
    pub fn clear(&self, source: &str) {
        self.lock().remove(source);
    }

    /// Every problem reported and not cleared, by source.
    pub fn problems(&self) -> Vec<Problem> {
        self.lock().values().cloned().collect()
    }

    pub fn is_healthy(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Problem>> {
        // A panic while holding it cannot leave the map half-updated.
        self.problems.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_of_different_sources_are_kept_apart_and_cleared_one_by_one() {
        let h = Health::new();
        assert!(h.is_healthy());
        h.report("circuit.dots", "Dots refuses the API key (HTTP 401)", 10);
        h.report("worker.feeder", "database is locked", 20);
        h.report("circuit.dots", "still refused", 30);
        let p = h.problems();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].source, "circuit.dots");
        assert_eq!((p[0].reason.as_str(), p[0].since_ms), ("still refused", 10));
        h.clear("circuit.dots");
        assert_eq!(h.problems().len(), 1);
        h.clear("worker.feeder");
        assert!(h.is_healthy());
    }
}
