//! The engine's side of the circuits: the gate before a step, holding a failed call, the
//! start-up probe and the worker's probe loop.

use std::time::Duration;

use tracing::warn;

use super::Kind;
use crate::dots::client::DotsError;
use crate::jobs::Engine;
use crate::store::{StoreError, now_ms};

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
    pub(in crate::jobs) async fn circuit_gate(&self) -> Result<Option<i64>, StoreError> {
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
    pub(in crate::jobs) async fn held_by_circuit(
        &self,
        err: &DotsError,
    ) -> Result<Option<i64>, StoreError> {
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
        Ok(Some(
            until.unwrap_or(now_ms() + self.circuits.policy.probe_base_ms),
        ))
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
