//! Layered configuration, later layers winning: built-in defaults (`config/default.toml`,
//! compiled in so a fresh machine needs no files), then `config/default.toml` and
//! `config/$PAYRUN_ENV.toml` from the config directory, then an explicit `--config` file, then
//! environment variables. The layers are merged and extracted by `figment` (Rocket's config
//! library): it keeps the key path of every error, so an error names the key and the file or
//! variable it came from (`error`). Files are read with figment's TOML provider; the
//! environment is one small provider per variable (`env`), because figment's own `Env` reads
//! only the process environment (tests feed theirs) and cannot name the variable behind a bad
//! value or take the old names as aliases (so figment's `env` feature is not needed; its
//! `parse-value` reads a list written `[60,300]`).
//!
//! Every key of every section can be set as `PAYRUN_<SECTION>_<KEY>` (split at the first `_`
//! after `PAYRUN_`; a key added to a struct here needs no code for it); the old names stay as
//! aliases, the canonical name winning when both are set. Every struct denies unknown keys: a
//! file with a key payrun does not know is an error naming the key and the file.
//!
//! Secrets are never read from files: `DOTS_API_KEY` and `DOTS_WEBHOOK_SECRET` come only from
//! the environment (under those names, never a `PAYRUN_*` one), and are held as [`Secret`]s,
//! so `Debug` of [`Settings`] shows `***`. The database URL stays a `String` (the operator's
//! text, handed to the driver as is); its `Debug` and every error about it mask the password
//! (`secret::redact_url`).
//!
//! A leaf: it imports only `secret` (itself a leaf); the Dots client's settings are built from
//! these by `dots::client::ClientConfig::from_settings`.

mod env;
#[cfg(test)]
mod env_tests;
mod error;
mod events;
mod layers;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::secret::{Secret, redact_url};

pub use env::{ALIASES, NOT_CONFIG};
pub use error::ConfigError;
pub use events::{EVENT_TYPES, EndpointSettings, EventsSettings};

const BUILTIN: &str = include_str!("../config/default.toml");

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May hold the database password: `Debug` shows it masked (`secret::redact_url`).
    pub url: String,
    /// The most connections one process keeps open (its pool's size). Every worker process
    /// holds up to this many, so workers × this must stay under the server's
    /// `max_connections` (PostgreSQL's default: 100) with room for operators' commands.
    pub max_connections: std::num::NonZeroU32,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DotsSettings {
    pub base_url: String,
    pub client_id: String,
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub rate_limit_rps: f64,
    /// `DOTS_APP_ID`: the App whose wallet pays (`GET /v2/apps/{app_id}`); with it set, a
    /// batch is checked against the wallet before its first transfer. Not a secret.
    #[serde(default)]
    pub app_id: Option<uuid::Uuid>,
    /// The unit of the App's `metrics.wallet_balance` (a decimal string): `"dollars"` or
    /// `"cents"`.
    #[serde(default)]
    pub wallet_balance_unit: crate::config::BalanceUnitSetting,
    /// How transfers go to Dots: one `POST /v2/transfers` per item (`"single"`), or the ready
    /// items of a batch in chunks through `POST /v2/transfer-batches` (`"batch"`).
    #[serde(default)]
    pub transfer_mode: TransferMode,
    /// The most items one `POST /v2/transfer-batches` carries (1..=5000, Dots' limit).
    #[serde(default)]
    pub transfer_batch_size: TransferBatchSize,
    /// From `DOTS_API_KEY` only.
    #[serde(skip)]
    pub api_key: Secret,
    /// From `DOTS_WEBHOOK_SECRET` only.
    #[serde(skip)]
    pub webhook_secret: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub poll_cron: String,
    pub poll_schedule_secs: Vec<u64>,
    /// A poll that failed (5xx, 429, timeout, no connection) is retried after about this long,
    /// doubling for each failure in a row, jittered, never later than `poll_retry_max_secs`
    /// unless Dots' `Retry-After` asks for longer (see `jobs::poll_next`).
    pub poll_retry_secs: u64,
    pub poll_retry_max_secs: u64,
    pub onboarding_steps: Vec<String>,
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    /// Deprecated for items (they give up by time: `give_up_after_secs`); still bounds how
    /// often a read-only caller (the audit) asks again.
    pub max_attempts: u32,
    /// A step that keeps failing retryably (or unclearly) fails its item this long after its
    /// first failure.
    pub give_up_after_secs: u64,
    /// Unavailability or 429s open this process' circuit after this many failures in a row...
    pub circuit_open_after: u32,
    /// ... spanning at least this many seconds.
    pub circuit_open_secs: u64,
    /// An open circuit's first probe after this long, doubling per failed probe up to
    /// `circuit_probe_max_secs`.
    pub circuit_probe_base_ms: u64,
    pub circuit_probe_max_secs: u64,
    pub lease_secs: u64,
    pub heartbeat_secs: u64,
    pub queue_poll_ms: u64,
    pub queue_window: usize,
    pub feed_ms: u64,
    pub claim_secs: u64,
    pub prune_done_ms: u64,
    /// A part of the worker (queue worker, poller, feeder, pruner) that makes no progress, or
    /// whose store calls keep failing, this long is stalled (`jobs::watchdog`).
    pub stall_secs: u64,
    /// A stalled part that has not recovered this long after being reported makes the worker
    /// process exit (1) so a supervisor restarts it; a dead part exits it at once.
    pub stall_exit_secs: u64,
    /// After the transfer: always the payout flow, or none for a payee whose Dots user pays
    /// out automatically (`jobs::plan::route`).
    pub payout_flow: PayoutFlowSetting,
    /// How long a payee's auto-payout answer (`GET /v2/users/{id}`) is trusted, in seconds.
    pub user_cache_secs: u64,
}

/// `worker.payout_flow`: what follows a transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutFlowSetting {
    /// The documented Dots flow: every payee gets a payout flow link.
    #[default]
    Always,
    /// A payee whose Dots user has auto payout enabled and a default payout method gets no
    /// flow: the item completes once its transfer is completed.
    UnlessAutoPayout,
}

/// `dots.transfer_mode`: how transfers go to Dots (`jobs::chunk`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    /// One `POST /v2/transfers` per item: the path Dots documents most.
    #[default]
    Single,
    /// The items of a batch that are ready to transfer go in chunks of up to
    /// `dots.transfer_batch_size` through `POST /v2/transfer-batches`, each item with the
    /// idempotency key it would have had alone.
    Batch,
}

/// `dots.transfer_batch_size`: items per `POST /v2/transfer-batches`, 1 to 5000 (the most Dots
/// takes in one batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferBatchSize(usize);

impl TransferBatchSize {
    pub const MAX: usize = 5000;

    /// `n` if it is between 1 and [`TransferBatchSize::MAX`].
    pub fn new(n: usize) -> Option<TransferBatchSize> {
        (1..=Self::MAX).contains(&n).then_some(TransferBatchSize(n))
    }

    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for TransferBatchSize {
    fn default() -> Self {
        TransferBatchSize(500)
    }
}

impl<'de> Deserialize<'de> for TransferBatchSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TransferBatchSize, D::Error> {
        let n = u64::deserialize(d)?;
        usize::try_from(n)
            .ok()
            .and_then(TransferBatchSize::new)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "transfer_batch_size must be between 1 and {}, not {n}",
                    TransferBatchSize::MAX
                ))
            })
    }
}

/// The unit of `app.metrics.wallet_balance` (mirrors `dots::types::BalanceUnit`; config is a
/// leaf and names its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceUnitSetting {
    #[default]
    Dollars,
    Cents,
}

/// What a batch the App wallet cannot cover does (`[funding] policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FundingPolicy {
    /// Hold the whole batch until the wallet covers what it still has to pay.
    #[default]
    Hold,
    /// Pay what fits, in file order, and hold the rest.
    Fit,
}

/// The App wallet: the funding pre-flight and the insufficient-funds hold (`[funding]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FundingSettings {
    pub policy: FundingPolicy,
    /// While a batch is held for funds, the balance is probed (with an app id) or a trial
    /// transfer let through (without) after this long, doubling to `probe_max_secs`.
    pub probe_base_secs: u64,
    pub probe_max_secs: u64,
}

impl Default for FundingSettings {
    fn default() -> Self {
        FundingSettings {
            policy: FundingPolicy::Hold,
            probe_base_secs: 5,
            probe_max_secs: 300,
        }
    }
}

/// Reminders for unclaimed payouts (`[reminders]`, see `jobs::remind`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReminderSettings {
    pub enabled: bool,
    /// Reminder `n` is due `schedule_secs[n-1]` after the previous link (the first payout flow
    /// for reminder 1, reminder `n-1`'s flow after); the item is marked unclaimed when it is
    /// still open the last entry again after the last reminder.
    pub schedule_secs: Vec<u64>,
}

impl Default for ReminderSettings {
    fn default() -> Self {
        ReminderSettings {
            enabled: false,
            schedule_secs: vec![86_400, 259_200, 604_800],
        }
    }
}

/// Guard rails on what a batch may pay. Zero means "no limit".
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_item_cents: i64,
    pub max_batch_cents: i64,
    /// A batch whose total is above this waits in `awaiting_approval` until approved.
    pub approval_threshold_cents: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Directory of `*.toml` schedule declarations.
    pub dir: String,
    /// On start-up, run once a tick missed while every worker was down.
    pub catch_up: bool,
}

/// Whether the dashboard's session cookie is marked `Secure` (sent by browsers over HTTPS
/// only): `"auto"` (Secure unless `serve` listens on a loopback address, i.e. plain HTTP on
/// this machine), `true` (behind a TLS proxy, always) or `false` (never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureCookie {
    Auto,
    Always,
    Never,
}

impl SecureCookie {
    fn parse(v: &str) -> Option<SecureCookie> {
        match v.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(SecureCookie::Auto),
            "true" | "yes" | "on" | "1" => Some(SecureCookie::Always),
            "false" | "no" | "off" | "0" => Some(SecureCookie::Never),
            _ => None,
        }
    }

    /// Whether to mark the cookie Secure when serving on `listen` (`host:port`).
    pub fn resolve(self, listen: &str) -> bool {
        match self {
            SecureCookie::Always => true,
            SecureCookie::Never => false,
            SecureCookie::Auto => !is_loopback(listen),
        }
    }
}

/// `127.0.0.0/8`, `[::1]` or `localhost`, with or without a port.
fn is_loopback(listen: &str) -> bool {
    if let Ok(a) = listen.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    if let Ok(ip) = listen.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    host.eq_ignore_ascii_case("localhost")
}

impl<'de> Deserialize<'de> for SecureCookie {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SecureCookie, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(SecureCookie::Always),
            Raw::Bool(false) => Ok(SecureCookie::Never),
            Raw::Str(s) => SecureCookie::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "secure_cookie must be \"auto\", true or false, not {s:?}"
                ))
            }),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    pub secure_cookie: SecureCookie,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub dots: DotsSettings,
    pub worker: WorkerSettings,
    pub limits: Limits,
    pub schedules: ScheduleSettings,
    pub dashboard: DashboardSettings,
    #[serde(default)]
    pub funding: FundingSettings,
    #[serde(default)]
    pub reminders: ReminderSettings,
    pub events: EventsSettings,
}

impl Settings {
    /// The compiled-in defaults only (no files, no environment): for tests and the demo.
    pub fn builtin() -> Settings {
        static BUILTIN_SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();
        BUILTIN_SETTINGS
            .get_or_init(|| {
                layers::extract(&[layers::Layer::builtin()])
                    .expect("built-in config/default.toml is valid")
            })
            .clone()
    }

    /// The compiled-in defaults with the environment `vars` (name, value) over them, no files:
    /// what a test uses to see an environment without touching the process's.
    pub fn builtin_with_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        Settings::from_layers(None, None, vars)
    }

    /// Defaults, then files from `dir` (usually `config/`), then `extra`, then the process
    /// environment.
    pub fn load(dir: &Path, extra: Option<&Path>) -> Result<Settings, ConfigError> {
        // A name or value that is not UTF-8 is nothing payrun reads (as `std::env::var`).
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Settings::load_with_env(dir, extra, vars)
    }

    /// [`Settings::load`] with the environment given as `vars` (name, value) instead of the
    /// process's: `PAYRUN_ENV`, the secrets and every override are read from them only.
    pub fn load_with_env(
        dir: &Path,
        extra: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        Settings::from_layers(Some(dir), extra, vars)
    }

    fn from_layers(
        dir: Option<&Path>,
        extra: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let env = env::Environment::new(vars);
        let mut layers = vec![layers::Layer::builtin()];
        if let Some(dir) = dir {
            let mut files = vec![dir.join("default.toml")];
            if let Some(e) = env.get("PAYRUN_ENV") {
                files.push(dir.join(format!("{e}.toml")));
            }
            for f in files.iter().filter(|f| f.exists()) {
                layers.push(layers::Layer::file(f)?);
            }
        }
        if let Some(f) = extra {
            layers.push(layers::Layer::file(f)?);
        }
        layers.extend(env.layers());
        let mut s = layers::extract(&layers)?;
        if let Some(v) = env.get("DOTS_API_KEY") {
            s.dots.api_key = Secret::new(v);
        }
        if let Some(v) = env.get("DOTS_WEBHOOK_SECRET") {
            s.dots.webhook_secret = Some(Secret::new(v));
        }
        events::resolve(&mut s.events, |k| env.get(k).map(str::to_owned))
            .map_err(|reason| ConfigError::Events { reason })?;
        Ok(s)
    }
}
