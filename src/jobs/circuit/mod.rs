//! Process-wide circuits for systemic Dots conditions: credentials refused, Dots unavailable,
//! Dots throttling every call. (The App's funds are held per App elsewhere.)
//!
//! Owns: one [`Circuit`] per [`Kind`] for this process, fed the outcome of every Dots call the
//! engine's client makes ([`CallObserver`]). The open/close decision is a pure state machine
//! ([`Circuit::on_failure`], [`Circuit::on_answer`], [`Circuit::on_probe_failed`]; time is passed
//! in, there is no clock inside) with a table test.
//!
//! Guarantees:
//! - Credentials open at once (a 401/403 is never a blip); unavailability and 429s open only
//!   when sustained: `worker.circuit_open_after` such failures in a row, with no answer from Dots
//!   between them, spanning at least `worker.circuit_open_secs` (the chaos test's 5 % random
//!   5xx and 2 % 429 never get there).
//! - While a circuit is open no item job of this process starts a Dots call ([`Circuits::blocked`]
//!   is checked before every step) and the poller skips its ticks; items are deferred to the next
//!   probe with no attempt counted. A half-open probe (`DotsClient::probe`, a cheap read) runs
//!   when due, with capped exponential backoff, from the worker's probe loop ([`run_probes`]) or
//!   the first job that finds it due; an answer closes the circuit.
//! - Every transition is one log line (ERROR for credentials, WARN otherwise), the gauge
//!   `payrun_circuit_open{kind}`, and `Health::report("circuit.<kind>")` / `clear`; its store
//!   side ([`Circuits::sync_store`]): holds written on every batch with active items when it
//!   opens, cleared when it closes, and every held item due at once with its attempts reset.

use std::sync::{Arc, Mutex};

use tracing::{error, info, warn};

mod engine;
mod machine;

pub use engine::run_probes;
pub use machine::{Change, Circuit, State};

use crate::batch::HoldReason;
use crate::config::WorkerSettings;
use crate::dots::client::{CallObserver, DotsError, Systemic};
use crate::health::Health;
use crate::store::{Store, StoreError, now_ms};

/// A process-wide systemic condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Credentials,
    DotsUnavailable,
    RateLimited,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Credentials, Kind::DotsUnavailable, Kind::RateLimited];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Credentials => "credentials",
            Kind::DotsUnavailable => "dots_unavailable",
            Kind::RateLimited => "rate_limited",
        }
    }

    /// The hold a batch shows while this circuit is open.
    pub fn hold_reason(self) -> HoldReason {
        match self {
            Kind::Credentials => HoldReason::Credentials,
            Kind::DotsUnavailable => HoldReason::DotsUnavailable,
            Kind::RateLimited => HoldReason::RateLimited,
        }
    }

    /// The circuit a systemic failure feeds (funds are per App, not here).
    pub fn of(s: Systemic) -> Option<Kind> {
        match s {
            Systemic::Credentials => Some(Kind::Credentials),
            Systemic::Unavailable => Some(Kind::DotsUnavailable),
            Systemic::RateLimited => Some(Kind::RateLimited),
            Systemic::Funds => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn health_source(self) -> String {
        format!("circuit.{}", self.as_str())
    }
}

/// When circuits open and how probes back off (from `[worker]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures of a kind in a row (credentials: always 1) before it opens.
    pub open_after: u32,
    /// ... spanning at least this long (credentials: 0).
    pub open_after_ms: i64,
    /// First probe this long after opening, doubling per failed probe up to `probe_max_ms`.
    pub probe_base_ms: i64,
    pub probe_max_ms: i64,
}

impl Policy {
    pub fn from_settings(w: &WorkerSettings) -> Policy {
        Policy {
            open_after: w.circuit_open_after.max(1),
            open_after_ms: w.circuit_open_secs as i64 * 1000,
            probe_base_ms: w.circuit_probe_base_ms.max(1) as i64,
            probe_max_ms: (w.circuit_probe_max_secs as i64 * 1000).max(1),
        }
    }

    fn for_kind(self, kind: Kind) -> Policy {
        match kind {
            Kind::Credentials => Policy {
                open_after: 1,
                open_after_ms: 0,
                ..self
            },
            _ => self,
        }
    }

    fn probe_delay_ms(self, probes_failed: u32) -> i64 {
        let exp = 1i64 << probes_failed.min(20);
        self.probe_base_ms
            .saturating_mul(exp)
            .min(self.probe_max_ms)
    }
}

/// Which circuits a call's outcome feeds: a failure of `kind` (or none: Dots answered).
fn fed_by(outcome: Result<(), &DotsError>) -> Option<Kind> {
    outcome
        .err()
        .and_then(DotsError::systemic)
        .and_then(Kind::of)
}

/// Whether a call that failed with `failed` (`None`: succeeded, or failed for the item alone)
/// shows that condition `kind` is over: Dots answered, and past the point where `kind` would
/// have shown. An unreachable Dots tells nothing of the others; a 429 nothing of credentials
/// (throttling may come before authentication).
fn answers(failed: Option<Kind>, kind: Kind) -> bool {
    match failed {
        None => true,
        Some(Kind::DotsUnavailable) => false,
        Some(Kind::Credentials) => kind != Kind::Credentials,
        Some(Kind::RateLimited) => kind == Kind::DotsUnavailable,
    }
}

#[derive(Debug)]
struct Inner {
    circuits: Vec<Circuit>,
    /// Changes whose store side is not written yet (see [`Circuits::sync_store`]).
    pending: Vec<(Kind, Change)>,
    /// A probe is under way.
    probing: bool,
}

/// This process' circuits (one per [`Kind`]).
#[derive(Debug)]
pub struct Circuits {
    inner: Mutex<Inner>,
    /// Serialises `sync_store`, so holds are written in the order of the changes.
    syncing: tokio::sync::Mutex<()>,
    policy: Policy,
    health: Health,
}

impl Circuits {
    pub fn new(policy: Policy, health: Health) -> Circuits {
        Circuits {
            inner: Mutex::new(Inner {
                circuits: Kind::ALL.into_iter().map(Circuit::new).collect(),
                pending: Vec::new(),
                probing: false,
            }),
            syncing: tokio::sync::Mutex::new(()),
            policy,
            health,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds one call's outcome at `now` to every circuit.
    pub fn observe(&self, now: i64, outcome: Result<(), &DotsError>) {
        let failed = fed_by(outcome);
        let reason = outcome.err().map(|e| e.to_string()).unwrap_or_default();
        let mut inner = self.lock();
        for kind in Kind::ALL {
            let c = &mut inner.circuits[kind.index()];
            let change = if Some(kind) == failed {
                c.on_failure(now, &reason, self.policy)
            } else if answers(failed, kind) {
                c.on_answer(now)
            } else {
                None
            };
            if let Some(change) = change {
                self.announce(kind, &change, now);
                inner.pending.push((kind, change));
            }
        }
    }

    /// The log line, the metric and the health report of a change.
    fn announce(&self, kind: Kind, change: &Change, now: i64) {
        let k = kind.as_str();
        match change {
            Change::Opened { reason } => {
                if kind == Kind::Credentials {
                    error!(circuit = k, %reason, "circuit open: Dots refuses our credentials; no Dots calls until a probe is accepted");
                } else {
                    warn!(circuit = k, %reason, "circuit open: no Dots calls until a probe succeeds");
                }
                self.health
                    .report(&kind.health_source(), format!("{k}: {reason}"), now);
                crate::metrics::circuit(k, true);
            }
            Change::Closed { for_ms } => {
                warn!(
                    circuit = k,
                    open_secs = for_ms / 1000,
                    "circuit closed: Dots answers again; held items are due now"
                );
                self.health.clear(&kind.health_source());
                crate::metrics::circuit(k, false);
            }
        }
    }

    /// While a circuit is open: which (the first) and until when items wait (its next probe).
    pub fn blocked(&self) -> Option<(Kind, i64)> {
        let inner = self.lock();
        inner
            .circuits
            .iter()
            .filter_map(|c| Some((c.kind, c.probe_at()?)))
            .max_by_key(|(_, at)| *at)
    }

    pub fn is_open(&self, kind: Kind) -> bool {
        self.lock().circuits[kind.index()].is_open()
    }

    /// Takes the half-open slot if a probe is due at `now` and none is under way.
    fn take_probe(&self, now: i64) -> bool {
        let mut inner = self.lock();
        let due = inner
            .circuits
            .iter()
            .filter_map(Circuit::probe_at)
            .any(|at| at <= now);
        if due && !inner.probing {
            inner.probing = true;
            return true;
        }
        false
    }

    /// A probe's outcome (already observed as a call): a failure backs every open circuit's
    /// next probe off.
    fn probe_done(&self, now: i64, outcome: Result<(), &DotsError>) {
        let mut inner = self.lock();
        inner.probing = false;
        if let Err(e) = outcome {
            let reason = e.to_string();
            for c in inner.circuits.iter_mut() {
                c.on_probe_failed(now, &reason, self.policy);
            }
        }
    }

    /// Writes the store side of changes not written yet: holds on batches when a circuit
    /// opens, cleared when it closes, with every held item due at once. With `reapply`, holds
    /// of circuits still open are written again (batches submitted since). When another task
    /// is writing already, `wait` says whether to wait for it or leave the rest to the next
    /// call (a job never waits: the probe loop comes by within a tick).
    pub async fn sync_store(
        &self,
        store: &Store,
        now: i64,
        reapply: bool,
        wait: bool,
    ) -> Result<(), StoreError> {
        let _one = match self.syncing.try_lock() {
            Ok(guard) => guard,
            Err(_) if wait => self.syncing.lock().await,
            Err(_) => return Ok(()),
        };
        let pending = std::mem::take(&mut self.lock().pending);
        for (kind, change) in pending {
            match change {
                Change::Opened { reason } => {
                    store
                        .set_systemic_hold(kind.hold_reason(), &reason, now)
                        .await?;
                }
                Change::Closed { .. } => {
                    store.clear_systemic_hold(kind.hold_reason()).await?;
                    let due = store.release_held_items(now).await?;
                    info!(circuit = kind.as_str(), items = due, "held items due now");
                }
            }
        }
        if !reapply {
            return Ok(());
        }
        let open: Vec<(Kind, String)> = {
            let inner = self.lock();
            let open = inner.circuits.iter().filter_map(|c| match &c.state {
                State::Open { reason, .. } => Some((c.kind, reason.clone())),
                State::Closed { .. } => None,
            });
            open.collect()
        };
        for (kind, reason) in open {
            store
                .set_systemic_hold(kind.hold_reason(), &reason, now)
                .await?;
        }
        Ok(())
    }

    fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }
}

impl CallObserver for Circuits {
    fn observed(&self, _endpoint: &'static str, outcome: Result<(), &DotsError>) {
        self.observe(now_ms(), outcome);
    }
}

/// A shared handle (the engine's and its client's observer).
pub fn circuits_for(settings: &WorkerSettings, health: Health) -> Arc<Circuits> {
    Arc::new(Circuits::new(Policy::from_settings(settings), health))
}

#[cfg(test)]
mod tests;
