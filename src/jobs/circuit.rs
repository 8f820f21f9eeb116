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
use std::time::Duration;

use tracing::{error, info, warn};

use super::Engine;
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
        self.probe_base_ms.saturating_mul(exp).min(self.probe_max_ms)
    }
}

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
    Opened { reason: String },
    /// Closed after being open `for_ms`.
    Closed { for_ms: i64 },
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
            State::Open { since, .. } => Some(Change::Closed { for_ms: now - since }),
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

/// Which circuits a call's outcome feeds: a failure of `kind` (or none: Dots answered).
fn fed_by(outcome: Result<(), &DotsError>) -> Option<Kind> {
    outcome.err().and_then(DotsError::systemic).and_then(Kind::of)
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

impl Engine {
    /// Runs the half-open probe if one is due (and no other is under way), then writes the
    /// store side of any change. `from_loop`: the worker's probe loop (which also writes the
    /// holds of circuits still open again); else a job that found a circuit open.
    pub async fn probe_circuits(&self, from_loop: bool) -> Result<(), StoreError> {
        let now = now_ms();
        let probed = self.circuits.take_probe(now);
        if probed {
            let res = self.dots.probe().await;
            self.circuits.probe_done(now_ms(), res.as_ref().map(|_| ()));
        }
        if from_loop || probed || self.circuits.has_pending() {
            let reapply = from_loop && probed;
            self.circuits
                .sync_store(&self.store, now_ms(), reapply, from_loop)
                .await?;
        }
        Ok(())
    }

    /// At worker start, before any item is touched: one probe decides the credentials circuit
    /// (a wrong key is reported at once). Accepted: holds left by an earlier run (a stale
    /// credentials hold) are cleared and their items due now.
    pub async fn start_probe(&self) -> Result<(), StoreError> {
        let res = self.dots.probe().await;
        if res.is_ok() {
            for kind in Kind::ALL {
                self.store.clear_systemic_hold(kind.hold_reason()).await?;
            }
            self.store.release_held_items(now_ms()).await?;
        }
        self.circuits
            .sync_store(&self.store, now_ms(), true, true)
            .await
    }

    /// The gate before a step's Dots call: while a circuit is open, the item waits for the
    /// next probe (no attempt counted) — `Some(until)`; `None`: go on.
    pub(super) async fn circuit_gate(&self) -> Result<Option<i64>, StoreError> {
        if self.circuits.blocked().is_none() {
            return Ok(None);
        }
        self.probe_circuits(false).await?;
        Ok(self.circuits.blocked().map(|(_, until)| until))
    }

    /// Whether a failed call `err` is held rather than charged to the item: its circuit is
    /// open now (the failure may just have opened it), or Dots refused our credentials (never
    /// the item's fault, even if a probe closed the circuit meanwhile). `Some(until)`: the
    /// item waits until then.
    pub(super) async fn held_by_circuit(&self, err: &DotsError) -> Result<Option<i64>, StoreError> {
        let Some(kind) = err.systemic().and_then(Kind::of) else {
            return Ok(None);
        };
        if kind != Kind::Credentials && !self.circuits.is_open(kind) {
            return Ok(None);
        }
        self.circuits
            .sync_store(&self.store, now_ms(), false, false)
            .await?;
        let until = self.circuits.blocked().map(|(_, until)| until);
        Ok(Some(until.unwrap_or(now_ms() + self.circuits.policy.probe_base_ms)))
    }
}

/// The worker's probe loop: every `every`, a due probe and the store side of changes.
pub async fn run_probes(
    engine: Engine,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        if let Err(e) = engine.probe_circuits(true).await {
            warn!(error = %e, "circuit probe: cannot write holds");
        }
    }
}

/// A shared handle (the engine's and its client's observer).
pub fn circuits_for(settings: &WorkerSettings, health: Health) -> Arc<Circuits> {
    Arc::new(Circuits::new(Policy::from_settings(settings), health))
}

#[cfg(test)]
#[path = "circuit_tests.rs"]
mod tests;
