//! The App wallet: the funding pre-flight, the `insufficient_funds` hold and its lifting.
//!
//! - **Pre-flight** (with `dots.app_id`): before a batch's first transfer, one worker reads the
//!   App balance (`GET /v2/apps/{app_id}`) and compares it with what the batch still has to pay
//!   plus what other batches were already cleared to pay ([`verdict`], pure). Short: the batch
//!   is held (policy `hold`: all of it; `fit`: from the first line, in file order, that does not
//!   fit). The decision is written once per batch (`Store::decide_funding`), in the item job's
//!   path, so it gates the first transfer however the job is driven.
//! - **Refusal**: Dots answering `transaction-insufficient-funds` is a definite refusal. The
//!   call is closed as "nothing moved" with no attempt counted, the item waits, and every
//!   batch with something still to pay is held (the wallet is the App's).
//! - **Resume** ([`probe_loop`], one task per worker): while a funds hold exists, after a
//!   backoff (`funding.probe_base_secs` doubling to `probe_max_secs`, jittered), read the
//!   balance and lift (or, for `fit`, extend) each hold it now covers, oldest batch first; the
//!   items released are due at once. Without an app id the probe is half-open: the holds are
//!   lifted for a trial, and a new refusal holds again with a longer backoff.
//!
//! Guarantees: no hold is ever charged to an item (no attempt, no failure); a hold only ever
//! delays a transfer, so money safety is the transfer protocol's, unchanged. Each transition is
//! one log line (WARN when held, INFO when resumed) and a `payrun_funds_holds_total` count.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tracing::{info, warn};
use uuid::Uuid;

use super::{Engine, JobError, Next, Step};
use crate::batch::{BatchId, HoldReason};
use crate::config::{BalanceUnitSetting, FundingPolicy, Settings};
use crate::dots::client::{DotsError, ErrorClass};
use crate::dots::types::BalanceUnit;
use crate::money::format_cents;
use crate::store::{FundingVerdict, ItemRecord, StoreError};

/// An item of a funds-held batch waits this long before it looks again by itself; lifting the
/// hold makes it due at once, so this only bounds how long a lost lift could leave it.
const PARK_MS: i64 = 15 * 60 * 1000;

/// How often the probe loop looks whether a funds hold exists.
const PROBE_TICK: Duration = Duration::from_secs(1);

/// The funding settings an engine works with.
#[derive(Debug, Clone)]
pub struct FundingConfig {
    /// `DOTS_APP_ID`: with it, the pre-flight and balance probes; without, half-open trials.
    pub app_id: Option<Uuid>,
    pub unit: BalanceUnit,
    pub policy: FundingPolicy,
    pub probe_base: Duration,
    pub probe_max: Duration,
}

impl Default for FundingConfig {
    fn default() -> Self {
        FundingConfig::from_settings(&Settings::builtin())
    }
}

impl FundingConfig {
    pub fn from_settings(s: &Settings) -> FundingConfig {
        FundingConfig {
            app_id: s.dots.app_id,
            unit: match s.dots.wallet_balance_unit {
                BalanceUnitSetting::Dollars => BalanceUnit::Dollars,
                BalanceUnitSetting::Cents => BalanceUnit::Cents,
            },
            policy: s.funding.policy,
            probe_base: Duration::from_secs(s.funding.probe_base_secs),
            probe_max: Duration::from_secs(s.funding.probe_max_secs.max(s.funding.probe_base_secs)),
        }
    }
}

/// An engine's funding state: its settings, the batches it knows were checked, and the probe's
/// backoff.
#[derive(Debug, Default)]
pub struct Funds {
    pub config: FundingConfig,
    checked: Mutex<HashSet<BatchId>>,
    probe: Mutex<Probe>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Probe {
    /// Probes (or trials) since the last time no funds hold was left.
    tries: i64,
    next_at: i64,
    last_refusal_at: i64,
}

impl Funds {
    pub fn new(config: FundingConfig) -> Funds {
        Funds {
            config,
            ..Funds::default()
        }
    }

    fn lock_probe(&self) -> std::sync::MutexGuard<'_, Probe> {
        self.probe.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_checked(&self) -> std::sync::MutexGuard<'_, HashSet<BatchId>> {
        self.checked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the wallet says about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Covered,
    /// The wallet is `needed_cents` short of what the batch still has to pay; with policy
    /// `fit`, the first `fits_cents` of it (in file order) may go.
    Short {
        needed_cents: i64,
        fits_cents: Option<i64>,
    },
}

/// The funding decision for a batch that still has `unpaid` cents to pay, with `balance` in
/// the App wallet of which `committed` is already cleared for other batches.
pub fn verdict(policy: FundingPolicy, balance: i64, committed: i64, unpaid: i64) -> Decision {
    let available = balance.saturating_sub(committed);
    if unpaid <= available {
        return Decision::Covered;
    }
    Decision::Short {
        needed_cents: unpaid - available,
        fits_cents: match policy {
            FundingPolicy::Hold => None,
            FundingPolicy::Fit => Some(available.max(0)),
        },
    }
}

/// The hold's text for an operator: both amounts in dollars.
fn short_detail(balance: i64, committed: i64, unpaid: i64, needed: i64) -> String {
    let elsewhere = if committed > 0 {
        format!(
            " (${} of it cleared for other batches)",
            format_cents(committed)
        )
    } else {
        String::new()
    };
    format!(
        "App wallet ${}{elsewhere}, batch still to pay ${}: ${} short",
        format_cents(balance),
        format_cents(unpaid),
        format_cents(needed)
    )
}

impl Engine {
    /// Replaces the engine's funding settings (the app id, policy and probe backoff).
    pub fn with_funding(mut self, config: FundingConfig) -> Engine {
        self.funds = std::sync::Arc::new(Funds::new(config));
        self
    }

    /// Before an item's transfer call: the batch's pre-flight (once, with an app id), then
    /// whether a funds hold covers this item. `Some(step)`: the item waits (no attempt
    /// counted) and the job ends with that step.
    pub(super) async fn funds_gate(&self, item: &ItemRecord) -> Result<Option<Step>, JobError> {
        if self.funds.config.app_id.is_some()
            && !self.funds.lock_checked().contains(&item.batch_id)
            && let Err(e) = self.preflight(item.batch_id).await
        {
            // The balance could not be read: look again later, without an attempt counted.
            let at = self.next_attempt_at(3, Some(&e));
            warn!(batch_id = %item.batch_id, error = %e, "funding pre-flight could not read the App balance");
            self.store.defer_item(item.id, at).await?;
            return Ok(Some(Step::done(Next::RetryAt(at))));
        }
        // GATE(h2): until the merge, a store read of the batch's hold before each transfer;
        // the lead swaps this for `jobs::gate` (cached per feed interval).
        let held = self
            .store
            .batch(item.batch_id)
            .await?
            .and_then(|b| b.hold)
            .is_some_and(|h| {
                h.reason == HoldReason::InsufficientFunds
                    && h.from_line.is_none_or(|line| item.line >= line)
            });
        if !held {
            return Ok(None);
        }
        let at = self.now() + PARK_MS;
        self.store.defer_item(item.id, at).await?;
        Ok(Some(Step::done(Next::RetryAt(at))))
    }

    /// Decides the batch's pre-flight if no worker has (see the module doc).
    async fn preflight(&self, batch: BatchId) -> Result<(), DotsError> {
        let store_err = |e: StoreError| DotsError::Retryable {
            status: None,
            retry_after: None,
            message: format!("store: {e}"),
        };
        if self.store.funding_checked(batch).await.map_err(store_err)? {
            self.funds.lock_checked().insert(batch);
            return Ok(());
        }
        let verdict = match self.read_balance().await {
            Ok(balance) => self.verdict_for(batch, balance).await.map_err(store_err)?,
            Err(e) if e.class() == ErrorClass::Permanent => {
                // A wrong app id or unit: nothing to compare with. Go on (a refusal still holds).
                warn!(batch_id = %batch, error = %e, "funding pre-flight skipped: the App balance cannot be read");
                FundingVerdict::Covered
            }
            Err(e) => return Err(e),
        };
        let now = self.now();
        let decided = self
            .store
            .decide_funding(batch, now, &verdict)
            .await
            .map_err(store_err)?;
        match (&verdict, decided) {
            (
                FundingVerdict::Short {
                    detail,
                    needed_cents,
                    from_line,
                },
                true,
            ) => {
                warn!(batch_id = %batch, funds_needed_cents = needed_cents, from_line = ?from_line, "batch held for funds before its first transfer: {detail}");
                crate::metrics::funds_hold("held", 1);
            }
            (FundingVerdict::Covered, true) => {
                info!(batch_id = %batch, "funding pre-flight: the App wallet covers the batch");
            }
            _ => {} // another worker decided
        }
        self.funds.lock_checked().insert(batch);
        Ok(())
    }

    /// The App balance in cents (needs an app id).
    async fn read_balance(&self) -> Result<i64, DotsError> {
        let Some(app_id) = self.funds.config.app_id else {
            return Err(DotsError::Permanent {
                status: 0,
                code: None,
                message: "no DOTS_APP_ID".into(),
            });
        };
        let app = self.dots.get_app(app_id).await?;
        app.metrics
            .wallet_cents(self.funds.config.unit)
            .map_err(|message| DotsError::Permanent {
                status: 200,
                code: None,
                message: format!("metrics.wallet_balance: {message}"),
            })
    }

    /// The verdict for `batch` with `balance` in the wallet (store reads only).
    async fn verdict_for(
        &self,
        batch: BatchId,
        balance: i64,
    ) -> Result<FundingVerdict, StoreError> {
        let unpaid = self.store.unpaid_cents(batch).await?;
        let committed = self.store.committed_elsewhere(batch).await?;
        Ok(
            match verdict(self.funds.config.policy, balance, committed, unpaid) {
                Decision::Covered => FundingVerdict::Covered,
                Decision::Short {
                    needed_cents,
                    fits_cents,
                } => FundingVerdict::Short {
                    detail: short_detail(balance, committed, unpaid, needed_cents),
                    needed_cents,
                    from_line: match fits_cents {
                        Some(fits) => self.store.first_line_beyond(batch, fits).await?,
                        None => None,
                    },
                },
            },
        )
    }

    /// Dots refused the item's transfer for funds: close the call with no attempt counted,
    /// let the item wait, and hold every batch still to pay.
    pub(super) async fn hold_for_funds(
        &self,
        item: &ItemRecord,
        msg: &str,
    ) -> Result<Step, JobError> {
        let now = self.now();
        let at = now + PARK_MS;
        self.store
            .record_transfer_refused_for_funds(item.id, msg, at)
            .await?;
        let unknown = if self.funds.config.app_id.is_none() {
            "; App balance unknown (set DOTS_APP_ID to see it)"
        } else {
            ""
        };
        let detail = format!(
            "Dots refused a ${} transfer: the App wallet is short{unknown}",
            format_cents(item.amount.get())
        );
        let held = self.store.hold_all_for_funds(now, &detail).await?;
        {
            let mut p = self.funds.lock_probe();
            p.last_refusal_at = now;
            p.next_at = p
                .next_at
                .max(now + self.probe_delay(p.tries).as_millis() as i64);
        }
        warn!(batch_id = %item.batch_id, item_id = %item.id, batches_held = held, "App wallet short: {detail}; batches held for funds");
        crate::metrics::funds_hold("held", held);
        Ok(Step::done(Next::RetryAt(at)))
    }

    fn probe_delay(&self, tries: i64) -> Duration {
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

#[cfg(test)]
mod tests {
    use super::*;
    use FundingPolicy::*;

    #[test]
    fn a_batch_is_held_when_the_wallet_less_what_others_were_cleared_for_cannot_cover_it() {
        // (policy, balance, committed elsewhere, unpaid) -> decision
        let rows = [
            (Hold, 50_000, 0, 50_000, Decision::Covered),
            (
                Hold,
                50_000,
                0,
                200_000,
                Decision::Short {
                    needed_cents: 150_000,
                    fits_cents: None,
                },
            ),
            (
                Fit,
                50_000,
                0,
                200_000,
                Decision::Short {
                    needed_cents: 150_000,
                    fits_cents: Some(50_000),
                },
            ),
            (
                Hold,
                50_000,
                40_000,
                20_000,
                Decision::Short {
                    needed_cents: 10_000,
                    fits_cents: None,
                },
            ),
            (
                Fit,
                50_000,
                40_000,
                20_000,
                Decision::Short {
                    needed_cents: 10_000,
                    fits_cents: Some(10_000),
                },
            ),
            (
                Fit,
                50_000,
                80_000,
                20_000,
                Decision::Short {
                    needed_cents: 50_000,
                    fits_cents: Some(0),
                },
            ),
            (
                Fit,
                0,
                0,
                1,
                Decision::Short {
                    needed_cents: 1,
                    fits_cents: Some(0),
                },
            ),
            (Hold, 0, 0, 0, Decision::Covered),
            (Fit, 100, 0, 99, Decision::Covered),
        ];
        for (policy, balance, committed, unpaid, want) in rows {
            assert_eq!(
                verdict(policy, balance, committed, unpaid),
                want,
                "{policy:?} balance {balance} committed {committed} unpaid {unpaid}"
            );
        }
    }

    #[test]
    fn the_hold_detail_names_both_amounts_in_dollars() {
        assert_eq!(
            short_detail(50_000, 0, 200_000, 150_000),
            "App wallet $500.00, batch still to pay $2000.00: $1500.00 short"
        );
        assert!(short_detail(50_000, 40_000, 20_000, 10_000).contains("$400.00 of it cleared"));
    }
}
