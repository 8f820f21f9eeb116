//! A stateful, in-memory simulator of the Dots v2 payouts API, standing in for Dots in the demo,
//! the tests and the benchmarks. It shares only `dots::types` and `webhook::verify` (to sign
//! webhooks) with the rest of payrun.
//!
//! What it owns: users and wallets, flows with simulated payees, balance transfers, idempotency
//! keys (24 h on the sim clock), the App wallet, and fault injection (rate limit, injected and
//! random 429/5xx, dropped responses, stalls, latency). See `shared/dots/README.md`, section C.
//!
//! Guarantees:
//! - Every `/api/v2/...` route requires `Authorization: Basic base64(client_id:api_key)`;
//!   `/_sim/...` routes are test hooks and need none.
//! - Faults decided before the handler (429, 5xx) change no state; `Fault::Drop` and
//!   `Fault::Stall` act after the operation has committed.
//! - Each operation is atomic under one lock; money is conserved between the App wallet and the
//!   user wallets.
//! - Payees are simulated lazily when flows are read. Only with `webhook_url` set does `spawn`
//!   start background tasks (both stop with the handle): the webhook sender (`webhooks.rs`:
//!   `flow.updated`, `transfer.updated`, `transfer.completed`, Svix-signed, redelivered with the
//!   same `svix-id`) and a payee ticker settling due flows every `payee_tick_ms`.

mod clock;
mod faults;
mod handlers;
mod http;
mod paging;
mod state;
mod validate;
mod webhooks;

pub use clock::SimClock;
pub use validate::ApiError;
pub use webhooks::{
    DEFAULT_RETRY_DELAYS_MS, DEFAULT_WEBHOOK_SECRET, DeliveryRecord, DeliveryStatus,
};

use crate::dots::types::{CreateUser, Flow, User, Wallet};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use uuid::Uuid;

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
    pub api_key: String,
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
    /// Share of `POST /v2/transfers` committed but whose response is lost.
    pub drop_rate: f64,
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
    pub webhook_secret: Option<String>,
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
            api_key: "sim-key".to_string(),
            complete_after_secs: 5.0,
            never_complete: 0.0,
            never_complete_payees: Vec::new(),
            latency_ms: 0,
            error_rate: 0.0,
            error_rates: HashMap::new(),
            drop_rate: 0.0,
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

/// One transfer as `GET /_sim/ledger` shows it (amount always a number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerTransfer {
    pub id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub idempotency_key: Option<Uuid>,
    pub metadata: Option<serde_json::Value>,
    pub status: String,
    pub created: DateTime<Utc>,
}

/// One user's wallet as `GET /_sim/ledger` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerUser {
    pub id: Uuid,
    pub wallet: Wallet,
}

/// Everything money-related the simulator holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub transfers: Vec<LedgerTransfer>,
    pub users: Vec<LedgerUser>,
    pub app_wallet: i64,
}

impl Ledger {
    /// The wallet of user `id`, if the simulator knows the user.
    pub fn wallet(&self, id: Uuid) -> Option<&Wallet> {
        self.users.iter().find(|u| u.id == id).map(|u| &u.wallet)
    }
}

struct Inner {
    config: SimConfig,
    clock: SimClock,
    faults: faults::Faults,
    state: Mutex<state::State>,
    host: OnceLock<String>,
    webhooks: Option<webhooks::Outbox>,
}

/// The simulator. Cheap to clone; all clones share one in-memory state.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let webhooks = config
            .webhook_url
            .clone()
            .map(|url| webhooks::Outbox::new(url, config.webhook_secret.as_deref(), config.seed));
        let notifier = webhooks.as_ref().map(webhooks::Outbox::notifier);
        Sim {
            inner: Arc::new(Inner {
                clock: SimClock::new(),
                faults: faults::Faults::new(config.seed),
                state: Mutex::new(state::State::new(config.app_wallet_cents, notifier)),
                host: OnceLock::new(),
                webhooks,
                config,
            }),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// Routes `/api/v2/...` (the simulated API) and `/_sim/...` (test hooks).
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// Bind `addr` (e.g. `"127.0.0.1:0"`) and serve in a tokio task until the handle is dropped
    /// or shut down; with `webhook_url` set, also start the webhook sender and payee ticker
    /// (an invalid `webhook_secret` is an `InvalidInput` error).
    pub async fn spawn(self, addr: &str) -> std::io::Result<SimHandle> {
        let background = webhooks::start(&self)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let _ = self.inner.host.set(addr.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        Ok(SimHandle {
            addr,
            base_url: format!("http://{addr}/api"),
            sim: self,
            stop: Some(tx),
            task: Some(task),
            background,
        })
    }

    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }

    /// The next `times` requests to `endpoint` (e.g. `"POST /v2/transfers"`) get `fault`.
    pub fn inject(&self, endpoint: &str, fault: Fault, times: usize) {
        self.inner.faults.inject(endpoint, fault, times);
    }

    /// Same data as `GET /_sim/ledger` (flows are settled first, so due payees are onboarded).
    pub fn ledger(&self) -> Ledger {
        let now = self.clock().now();
        let mut st = self.lock();
        st.flows(&self.inner.config, now);
        let (transfers, users, app_wallet) = st.ledger();
        Ledger {
            transfers,
            users,
            app_wallet,
        }
    }

    /// Find-or-create a user by phone, like `POST /v2/users` but without input validation.
    pub fn create_user(&self, req: CreateUser) -> User {
        self.lock().create_user(req)
    }

    /// The payee finishes all steps now (onboarding as a new user if the flow has none).
    pub fn complete_flow(&self, flow_id: Uuid) -> Option<Flow> {
        self.lock().complete_flow(flow_id)
    }

    /// Every webhook message so far, in creation order (empty when webhooks are off).
    pub fn webhook_deliveries(&self) -> Vec<DeliveryRecord> {
        self.inner
            .webhooks
            .as_ref()
            .map(webhooks::Outbox::records)
            .unwrap_or_default()
    }

    /// Webhook events not yet delivered or given up on.
    pub fn pending_webhooks(&self) -> usize {
        self.inner
            .webhooks
            .as_ref()
            .map_or(0, webhooks::Outbox::pending)
    }

    /// Resolves once no webhook is pending (at once when webhooks are off). Await it under a
    /// `tokio::time::timeout`: a receiver that keeps failing holds it for the whole schedule.
    pub async fn webhooks_idle(&self) {
        if let Some(outbox) = &self.inner.webhooks {
            outbox.idle().await;
        }
    }

    /// API requests seen for an endpoint key such as `"GET /v2/flows/{id}"`.
    pub fn request_count(&self, endpoint: &str) -> u64 {
        self.inner.faults.request_count(endpoint)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, state::State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn host(&self) -> &str {
        self.inner
            .host
            .get()
            .map(String::as_str)
            .unwrap_or("sim.local")
    }
}

/// A running simulator server. Dropping it (or `shutdown`) stops the server.
pub struct SimHandle {
    pub addr: SocketAddr,
    /// `http://ADDR/api`; API paths (`/v2/...`) go after it.
    pub base_url: String,
    pub sim: Sim,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The webhook sender and payee ticker, aborted when the handle goes.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// Stop accepting connections and wait (at most 5 s) for open ones to finish.
    pub async fn shutdown(mut self) {
        self.background.drain(..).for_each(|t| t.abort());
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.background.drain(..).for_each(|t| t.abort());
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
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
