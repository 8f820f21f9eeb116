//! A stateful, in-memory simulator of the Dots v2 payouts API, standing in for Dots in the demo,
//! the tests and the benchmarks. It shares only `dots::types` and `webhook::verify` (to sign
//! webhooks) with the rest of payrun.
//!
//! What it owns: users and wallets, flows with simulated payees, balance transfers, transfer
//! batches (`POST`/`GET /v2/transfer-batches`, `state/batches.rs`), idempotency keys (24 h on
//! the sim clock, one store for single transfers and batch items), the App and its wallet (`GET /v2/apps/{app_id}`, funded by
//! `POST /_sim/fund`), users' default payout method and auto payout (`PATCH /v2/users/{id}`,
//! `Sim::set_auto_payout`; rendered by `GET /v2/users/{id}`), transfers held `pending` for a
//! user until released (`Sim::hold_transfers` / `release_transfers`), and fault injection (rate limit, injected and
//! random 429/5xx, dropped responses, stalls, latency). See `shared/dots/README.md`, section C.
//!
//! Guarantees:
//! - Every `/api/v2/...` route requires `Authorization: Basic base64(client_id:api_key)`;
//!   `/_sim/...` routes are test hooks and need none.
//! - Faults decided before the handler (429, 5xx) change no state; `Fault::Drop` and
//!   `Fault::Stall` act after the operation has committed.
//! - Each operation is atomic under one lock; money is conserved between the App wallet and the
//!   user wallets.
//! - A transfer batch is one such operation and every fault applies to the call as a whole: a
//!   429/5xx makes none of its transfers, a drop or stall comes after all of them are made.
//!   Each item is made exactly as a single transfer (same checks, same idempotency store, same
//!   `transfer.*` webhooks, same `/_sim/ledger` rows); an item that cannot be made gets
//!   `items[].error` (`duplicate idempotency key: <key>`, `User not found: <user_id>`,
//!   `transaction-insufficient-funds`) and no transfer, the others go through; a repeated batch
//!   key is refused like a repeated single-transfer key (409), nothing applied. Answers list
//!   items in request order, each with its `idempotency_key` (an extension to the spec's item).
//!   A batch is `pending` for `transfer_batch_complete_after_secs` on the sim clock (0: done at
//!   once), then `completed` with its transfers.
//! - Payees are simulated lazily when flows are read. Only with `webhook_url` set does `spawn`
//!   start background tasks (both stop with the handle): the webhook sender (`webhooks.rs`:
//!   `flow.updated`, `transfer.updated`, `transfer.completed`, Svix-signed, redelivered with the
//!   same `svix-id`) and a payee ticker settling due flows every `payee_tick_ms`.
//!
//! Layout, with no import loop between submodules: `wire` (every JSON shape) and `config`
//! (settings, faults) import no other simulator module; `validate` → `wire`; `paging` →
//! `validate`; `state` → `config`, `validate`, `wire`, `webhooks` (its event channel);
//! `handlers`, `http` and `webhooks` reach the shared state only through the `Sim` handle here.

mod clock;
mod config;
mod faults;
mod handlers;
mod http;
mod paging;
mod state;
mod validate;
mod webhooks;
mod wire;

pub use clock::SimClock;
pub use config::{DEFAULT_APP_ID, DEFAULT_RETRY_DELAYS_MS, DuplicateKeyMode, Fault, SimConfig};
pub use state::{ITEM_DUPLICATE_KEY, ITEM_INSUFFICIENT_FUNDS, ITEM_UNKNOWN_USER};
pub use validate::{ApiError, MAX_BATCH_ITEMS};
pub use webhooks::{DEFAULT_WEBHOOK_SECRET, DeliveryRecord, DeliveryStatus};
pub use wire::{Ledger, LedgerTransfer, LedgerUser};

use crate::dots::types::{CreateUser, Flow, User};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use uuid::Uuid;

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
        let webhooks = config.webhook_url.clone().map(|url| {
            webhooks::Outbox::new(
                url,
                config.webhook_secret.as_ref().map(|s| s.expose()),
                config.seed,
            )
        });
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

    /// Adds `cents` to the App wallet (like `POST /_sim/fund`); returns the new balance.
    pub fn fund(&self, cents: i64) -> i64 {
        self.lock().fund(cents)
    }

    /// Find-or-create a user by phone, like `POST /v2/users` but without input validation.
    pub fn create_user(&self, req: CreateUser) -> User {
        self.lock().create_user(req)
    }

    /// Sets the user's default payout method (a `rail`: `paypal`, `ach`, ...) and auto payout,
    /// as `PATCH /v2/users/{id}` does; `None` leaves a field as it is. `None` back: no such user.
    pub fn set_auto_payout(
        &self,
        user: Uuid,
        default_payout_method: Option<&str>,
        auto_payout_enabled: Option<bool>,
    ) -> Option<User> {
        self.lock().update_payout_settings(
            user,
            default_payout_method.map(str::to_string),
            auto_payout_enabled,
        )
    }

    /// New transfers to `user` stay `pending` until [`Sim::release_transfers`].
    pub fn hold_transfers(&self, user: Uuid) {
        self.lock().hold_transfers(user, true);
    }

    /// Completes the user's pending transfers and stops holding new ones; how many changed.
    pub fn release_transfers(&self, user: Uuid) -> usize {
        self.lock().release_transfers(user)
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

    /// The state, with every transfer batch due on the sim clock completed first: what reads of
    /// transfers and batches use.
    fn settled(&self) -> std::sync::MutexGuard<'_, state::State> {
        let now = self.clock().now();
        let mut st = self.lock();
        st.settle_batches(now);
        st
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
