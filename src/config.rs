//! Layered configuration: built-in defaults (`config/default.toml`, compiled in so a fresh
//! machine needs no files), then `config/default.toml` and `config/$PAYRUN_ENV.toml` from the
//! working directory, then an explicit `--config` file, then environment variables.
//!
//! Secrets are never read from files: `DOTS_API_KEY` and `DOTS_WEBHOOK_SECRET` come only from
//! the environment, and are held as [`Secret`]s, so `Debug` of [`Settings`] shows `***`. The
//! database URL stays a `String` (the operator's text, handed to the driver as is); its
//! `Debug` masks the password (`secret::redact_url`).
//!
//! A leaf: it imports only `secret` (itself a leaf); the Dots client's settings are built from
//! these by `dots::client::ClientConfig::from_settings`.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::secret::{Secret, redact_url};

const BUILTIN: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config in {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid value for {var}: {reason}")]
    Env { var: String, reason: String },
}

#[derive(Clone, Deserialize)]
pub struct DatabaseSettings {
    /// May hold the database password: `Debug` shows it masked (`secret::redact_url`).
    pub url: String,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DotsSettings {
    pub base_url: String,
    pub client_id: String,
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub rate_limit_rps: f64,
    /// From `DOTS_API_KEY` only.
    #[serde(skip)]
    pub api_key: Secret,
    /// From `DOTS_WEBHOOK_SECRET` only.
    #[serde(skip)]
    pub webhook_secret: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub poll_cron: String,
    pub poll_schedule_secs: Vec<u64>,
    pub onboarding_steps: Vec<String>,
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    pub max_attempts: u32,
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
}

/// Guard rails on what a batch may pay. Zero means "no limit".
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct Limits {
    pub max_item_cents: i64,
    pub max_batch_cents: i64,
    /// A batch whose total is above this waits in `awaiting_approval` until approved.
    pub approval_threshold_cents: i64,
}

#[derive(Debug, Clone, Deserialize)]
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
pub struct DashboardSettings {
    pub secure_cookie: SecureCookie,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub dots: DotsSettings,
    pub worker: WorkerSettings,
    pub limits: Limits,
    pub schedules: ScheduleSettings,
    pub dashboard: DashboardSettings,
}

impl Settings {
    /// The compiled-in defaults only (no files, no environment): for tests and the demo.
    pub fn builtin() -> Settings {
        toml::from_str(BUILTIN).expect("built-in config/default.toml parses")
    }

    /// Defaults, then files from `dir` (usually `config/`), then `extra`, then the environment.
    pub fn load(dir: &Path, extra: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut merged: toml::Table = toml::from_str(BUILTIN).expect("built-in config parses");
        let env_name = std::env::var("PAYRUN_ENV").ok();
        let mut files = vec![dir.join("default.toml")];
        if let Some(e) = &env_name {
            files.push(dir.join(format!("{e}.toml")));
        }
        for f in files
            .iter()
            .filter(|f| f.exists())
            .map(|f| f.as_path())
            .chain(extra)
        {
            let text = std::fs::read_to_string(f).map_err(|source| ConfigError::Read {
                path: f.display().to_string(),
                source,
            })?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: f.display().to_string(),
                    source,
                })?;
            merge(&mut merged, table);
        }
        let mut s: Settings =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|source| ConfigError::Parse {
                    path: "merged configuration".into(),
                    source,
                })?;
        s.apply_env(|k| std::env::var(k).ok())?;
        Ok(s)
    }

    /// Environment overrides, read through `get` so tests need not touch the process env.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("PAYRUN_DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = get("DOTS_BASE_URL") {
            self.dots.base_url = v;
        }
        if let Some(v) = get("DOTS_CLIENT_ID") {
            self.dots.client_id = v;
        }
        if let Some(v) = get("DOTS_API_KEY") {
            self.dots.api_key = Secret::new(v);
        }
        self.dots.webhook_secret = get("DOTS_WEBHOOK_SECRET")
            .map(Secret::new)
            .or(self.dots.webhook_secret.take());
        let num = |var: &str, v: String| -> Result<u64, ConfigError> {
            v.parse().map_err(|e| ConfigError::Env {
                var: var.into(),
                reason: format!("{e}"),
            })
        };
        if let Some(v) = get("PAYRUN_DOTS_TIMEOUT_SECS") {
            self.dots.timeout_secs = num("PAYRUN_DOTS_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("PAYRUN_DOTS_RATE_LIMIT") {
            self.dots.rate_limit_rps = v.parse().map_err(|e| ConfigError::Env {
                var: "PAYRUN_DOTS_RATE_LIMIT".into(),
                reason: format!("{e}"),
            })?;
        }
        if let Some(v) = get("PAYRUN_CONCURRENCY") {
            self.worker.concurrency = num("PAYRUN_CONCURRENCY", v)? as usize;
        }
        if let Some(v) = get("PAYRUN_POLL_CRON") {
            self.worker.poll_cron = v;
        }
        let cents = |var: &str, v: String| -> Result<i64, ConfigError> {
            v.parse().map_err(|e| ConfigError::Env {
                var: var.into(),
                reason: format!("{e}"),
            })
        };
        if let Some(v) = get("PAYRUN_MAX_ITEM_CENTS") {
            self.limits.max_item_cents = cents("PAYRUN_MAX_ITEM_CENTS", v)?;
        }
        if let Some(v) = get("PAYRUN_MAX_BATCH_CENTS") {
            self.limits.max_batch_cents = cents("PAYRUN_MAX_BATCH_CENTS", v)?;
        }
        if let Some(v) = get("PAYRUN_APPROVAL_THRESHOLD_CENTS") {
            self.limits.approval_threshold_cents = cents("PAYRUN_APPROVAL_THRESHOLD_CENTS", v)?;
        }
        if let Some(v) = get("PAYRUN_SCHEDULES_DIR") {
            self.schedules.dir = v;
        }
        if let Some(v) = get("PAYRUN_DASHBOARD_SECURE_COOKIE") {
            self.dashboard.secure_cookie =
                SecureCookie::parse(&v).ok_or_else(|| ConfigError::Env {
                    var: "PAYRUN_DASHBOARD_SECURE_COOKIE".into(),
                    reason: format!("{v:?} is not auto, true or false"),
                })?;
        }
        Ok(())
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_defaults_use_embedded_sqlite() {
        let s = Settings::builtin();
        assert!(s.database.url.starts_with("sqlite://"));
        assert_eq!(s.worker.onboarding_steps, vec!["compliance"]);
    }

    #[test]
    fn secure_cookie_auto_means_secure_unless_listening_on_loopback() {
        assert_eq!(
            Settings::builtin().dashboard.secure_cookie,
            SecureCookie::Auto
        );
        for lo in [
            "127.0.0.1:8080",
            "127.1.2.3:80",
            "[::1]:8080",
            "localhost:8080",
            "::1",
        ] {
            assert!(!SecureCookie::Auto.resolve(lo), "{lo}");
            assert!(SecureCookie::Always.resolve(lo), "{lo}");
        }
        for public in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.0.0.5:8080",
            "payrun.example:443",
        ] {
            assert!(SecureCookie::Auto.resolve(public), "{public}");
            assert!(!SecureCookie::Never.resolve(public), "{public}");
        }
        let t: DashboardSettings = toml::from_str("secure_cookie = false").unwrap();
        assert_eq!(t.secure_cookie, SecureCookie::Never);
        let t: DashboardSettings = toml::from_str("secure_cookie = \"auto\"").unwrap();
        assert_eq!(t.secure_cookie, SecureCookie::Auto);
        assert!(toml::from_str::<DashboardSettings>("secure_cookie = \"maybe\"").is_err());
        let mut s = Settings::builtin();
        s.apply_env(|k| (k == "PAYRUN_DASHBOARD_SECURE_COOKIE").then(|| "true".into()))
            .unwrap();
        assert_eq!(s.dashboard.secure_cookie, SecureCookie::Always);
    }

    #[test]
    fn the_database_password_stays_out_of_debug() {
        let mut s = Settings::builtin();
        for url in [
            "postgres://u:s3cretpw@127.0.0.1:notaport/db",
            "postgres://u:s3cretpw@[::1]:5432/db",
            "postgres://u:pa@ss#word@host/db",
        ] {
            s.database.url = url.into();
            let shown = format!("{s:?}");
            assert!(
                !shown.contains("s3cretpw") && !shown.contains("ss#word"),
                "{shown}"
            );
            assert!(shown.contains("u:***@"), "{shown}");
        }
    }

    #[test]
    fn environment_overrides_files_and_secrets_stay_out_of_debug() {
        let mut s = Settings::builtin();
        s.apply_env(|k| match k {
            "PAYRUN_DATABASE_URL" => Some("postgres://u@h/db".into()),
            "DOTS_API_KEY" => Some("topsecret".into()),
            "PAYRUN_CONCURRENCY" => Some("3".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.database.url, "postgres://u@h/db");
        assert_eq!(s.worker.concurrency, 3);
        assert_eq!(s.dots.api_key.expose(), "topsecret");
        assert!(!format!("{s:?}").contains("topsecret"));
        let bad =
            Settings::builtin().apply_env(|k| (k == "PAYRUN_CONCURRENCY").then(|| "x".into()));
        assert!(bad.unwrap_err().to_string().contains("PAYRUN_CONCURRENCY"));
    }
}
