//! The funds probe: while a funds hold exists, after a backoff, read the balance (or, without
//! an app id, lift the holds for a trial) and let go on what the wallet now covers.

use std::time::Duration;

use tracing::{info, warn};

use super::PROBE_TICK;
use crate::batch::BatchId;
use crate::jobs::Engine;
use crate::store::{FundingVerdict, StoreError};

impl Engine {
    pub(super) fn probe_delay(&self, tries: i64) -> Duration {
        crate::dots::retry::backoff(
            self.funds.config.probe_base,
            self.funds.config.probe_max,
            tries,
            None,
        )
        .max(self.funds.config.probe_base / 2)
    }

    /// One turn of the probe loop at `now`: if a funds hold exists and the backoff has passed,
    /// probe (read the balance, or without an app id lift for a trial). Returns how many
    /// batches it let go on (lifted or extended).
    pub async fn probe_funds_once(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let held = self.store.funds_held_batches().await?;
        let tries = {
            let mut p = self.funds.lock_probe();
            if held.is_empty() {
                if now - p.last_refusal_at > self.funds.config.probe_max.as_millis() as i64 {
                    p.tries = 0;
                }
                return Ok(0);
            }
            if now < p.next_at {
                return Ok(0);
            }
            p.tries += 1;
            p.next_at = now + self.probe_delay(p.tries).as_millis() as i64;
            p.tries
        };
        if self.funds.config.app_id.is_none() {
            // Half-open: a trial for every held batch; a refusal holds them again.
            let mut lifted = 0;
            for b in &held {
                let id: BatchId =
                    b.id.parse()
                        .map_err(|e| StoreError::Corrupt(format!("{e}")))?;
                lifted += self.store.lift_funds_hold(id, now).await? as u64;
            }
            info!(
                batches = lifted,
                trial = tries,
                "funds hold lifted for a trial (no DOTS_APP_ID to read the balance)"
            );
            crate::metrics::funds_hold("resumed", lifted);
            return Ok(lifted);
        }
        let balance = match self.read_balance().await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "funds probe: cannot read the App balance");
                return Ok(0);
            }
        };
        let mut moved = 0;
        for b in held {
            let id: BatchId =
                b.id.parse()
                    .map_err(|e| StoreError::Corrupt(format!("{e}")))?;
            let old_from = b.hold.as_ref().and_then(|h| h.from_line);
            match self.verdict_for(id, balance).await? {
                FundingVerdict::Covered => {
                    if self.store.lift_funds_hold(id, now).await? {
                        info!(batch_id = %id, balance_cents = balance, "batch resumed: the App wallet now covers it");
                        crate::metrics::funds_hold("resumed", 1);
                        moved += 1;
                    }
                }
                FundingVerdict::Short {
                    detail,
                    needed_cents,
                    from_line,
                } => {
                    let extends = from_line.is_some_and(|l| old_from.is_none_or(|o| l > o));
                    self.store
                        .update_funds_hold(id, now, &detail, needed_cents, from_line)
                        .await?;
                    if extends {
                        info!(batch_id = %id, from_line = ?from_line, "funds hold narrowed: paying what now fits");
                        crate::metrics::funds_hold("resumed", 1);
                        moved += 1;
                    }
                }
            }
        }
        if moved > 0 {
            self.funds.lock_probe().tries = 0;
        }
        Ok(moved)
    }
}

/// The worker's funds probe: every second, [`Engine::probe_funds_once`], until `stop`.
pub async fn probe_loop(engine: Engine, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_TICK) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        if let Err(e) = engine.probe_funds_once().await {
            warn!(error = %e, "funds probe failed");
        }
    }
}
