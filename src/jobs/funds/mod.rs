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

use uuid::Uuid;

use crate::batch::BatchId;
use crate::config::{BalanceUnitSetting, FundingPolicy, Settings};
use crate::dots::types::BalanceUnit;
use crate::money::format_cents;

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

mod gate;
mod probe;

pub use probe::probe_loop;

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
