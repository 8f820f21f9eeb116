//! The simulator's settings (`SimConfig`, every field defaulted so a TOML table may set only
//! some), how it answers a duplicate idempotency key, and the faults tests inject.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use crate::secret::Secret;

/// The simulated App's id unless `app_id` (`payrun sim --app-id`) says otherwise.
pub const DEFAULT_APP_ID: Uuid = Uuid::from_u128(0x5a5a_0000_0000_4000_8000_0000_0000_0001);

/// Default redelivery schedule (ms before each attempt): Svix' "immediately, 5 s, 5 min, …"
/// compressed for tests.
pub const DEFAULT_RETRY_DELAYS_MS: [u64; 5] = [0, 50, 200, 1000, 5000];

/// How the simulator answers a transfer whose `idempotency_key` it saw within the last 24 h.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateKeyMode {
    /// 409 `duplicate-idempotency-key`, nothing created (the spec's "will be rejected").
    #[default]
    #[serde(alias = "Reject")]
    Reject,
    /// The first response again, nothing created (the idempotency page's reading).
    #[serde(alias = "Replay")]
    Replay,
}

/// Simulator settings; every field has a default, so a TOML table may set only some.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Accepted Basic-auth user.
    pub client_id: String,
    /// Accepted Basic-auth password.
    pub api_key: Secret,
    /// Simulated payees finish a flow this long after it is created (sim clock).
    pub complete_after_secs: f64,
    /// Share of payees who never finish, by a stable sha256 hash of seed + payee key.
    pub never_complete: f64,
    /// Payee keys that never finish.
    pub never_complete_payees: Vec<String>,
    /// Added to every API request (real time).
    pub latency_ms: u64,
    /// Share of API requests answered 500/502/503 before any state change.
    pub error_rate: f64,
    /// Per-endpoint error rates, keyed like `"POST /v2/transfers"`; override `error_rate`.
    pub error_rates: HashMap<String, f64>,
    /// Share of `POST /v2/transfers` and `POST /v2/transfer-batches` committed but whose
    /// response is lost.
    pub drop_rate: f64,
    /// A transfer batch and the transfers it made stay `pending` this long (sim clock), then
    /// turn `completed`; 0 (the default): completed at once, as single transfers are.
    pub transfer_batch_complete_after_secs: f64,
    /// Share of API requests answered 429 with `Retry-After`.
    pub throttle_rate: f64,
    /// Value of `Retry-After`, seconds.
    pub retry_after_secs: u64,
    /// Share of API requests whose response is delayed `stall_secs` (after committing).
    pub stall_rate: f64,
    pub stall_secs: f64,
    /// Requests per second over all API requests; beyond it, 429 + `Retry-After`.
    pub rate_limit: Option<u32>,
    /// Where webhooks are POSTed; `None` sends none and starts no background task.
    pub webhook_url: Option<String>,
    /// `whsec_<base64>` signing secret; `None` means [`DEFAULT_WEBHOOK_SECRET`].
    pub webhook_secret: Option<Secret>,
    /// Delay before each delivery attempt, ms (real time); its length is the attempt count.
    pub webhook_retry_delays_ms: Vec<u64>,
    /// An attempt not answered within this long fails (Svix allows 15 s).
    pub webhook_timeout_ms: u64,
    /// Share of delivered messages sent once more, same `svix-id`.
    pub webhook_duplicate_rate: f64,
    /// Share of attempts signed over the wrong content.
    pub webhook_bad_signature_rate: f64,
    /// Share of attempts whose `svix-timestamp` is 10 minutes old.
    pub webhook_stale_rate: f64,
    /// How often (real ms) the payee ticker settles due flows when webhooks are on.
    pub payee_tick_ms: u64,
    /// Starting App wallet balance, cents.
    pub app_wallet_cents: i64,
    /// The App's id: `GET /v2/apps/{app_id}` answers for this id only (404 for another).
    pub app_id: Uuid,
    pub duplicate_key_mode: DuplicateKeyMode,
    /// Serialize transfer amounts as strings (`"-1000"`), as the real sandbox did.
    pub amounts_as_strings: bool,
    /// Seeds the never-complete hash and the fault RNG.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            client_id: "sim-client".to_string(),
            api_key: Secret::new("sim-key"),
            complete_after_secs: 5.0,
            never_complete: 0.0,
            never_complete_payees: Vec::new(),
            latency_ms: 0,
            error_rate: 0.0,
            error_rates: HashMap::new(),
            drop_rate: 0.0,
            transfer_batch_complete_after_secs: 0.0,
            throttle_rate: 0.0,
            retry_after_secs: 1,
            stall_rate: 0.0,
            stall_secs: 10.0,
            rate_limit: None,
            webhook_url: None,
            webhook_secret: None,
            webhook_retry_delays_ms: DEFAULT_RETRY_DELAYS_MS.to_vec(),
            webhook_timeout_ms: 15_000,
            webhook_duplicate_rate: 0.0,
            webhook_bad_signature_rate: 0.0,
            webhook_stale_rate: 0.0,
            payee_tick_ms: 100,
            app_wallet_cents: 100_000_000_000,
            app_id: DEFAULT_APP_ID,
            duplicate_key_mode: DuplicateKeyMode::Reject,
            amounts_as_strings: false,
            seed: 0,
        }
    }
}

/// A fault to inject into requests to one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer this status (500, 502 or 503) before any state change.
    Status(u16),
    /// Answer 429 with `Retry-After` before any state change.
    Throttle,
    /// Commit the operation, then break the connection mid-response.
    Drop,
    /// Commit the operation, then delay the response this long.
    Stall(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_toml_table_keeps_the_other_defaults() {
        let cfg: SimConfig = toml::from_str(
            r#"
            complete_after_secs = 0.5
            duplicate_key_mode = "replay"
            rate_limit = 20
            [error_rates]
            "POST /v2/transfers" = 0.1
            "#,
        )
        .unwrap();
        assert_eq!(cfg.duplicate_key_mode, DuplicateKeyMode::Replay);
        assert_eq!(cfg.rate_limit, Some(20));
        assert_eq!(cfg.error_rates["POST /v2/transfers"], 0.1);
        assert_eq!(cfg.client_id, "sim-client");
        assert_eq!(cfg.app_wallet_cents, 100_000_000_000);
        let mode: SimConfig = toml::from_str(r#"duplicate_key_mode = "Reject""#).unwrap();
        assert_eq!(mode.duplicate_key_mode, DuplicateKeyMode::Reject);
    }
}
