//! The command-line front end: argument definitions (`args`), and `run`, which loads
//! configuration, opens the store, calls the `app` command and turns its result into output
//! and an exit code (0 ok, 1 failure, 2 bad input). Errors are printed with what to do next.

mod args;
mod commands;
mod print;

pub use args::*;

use std::time::Duration;

use crate::app::exit;
use crate::config::Settings;
use crate::dots::client::{ClientConfig, DotsClient};
use crate::jobs::{Engine, Queue};
use crate::store::Store;

pub fn init_tracing(cli: &Cli) {
    let quiet = matches!(
        cli.command,
        Command::Demo { .. } | Command::Run { .. } | Command::Status { watch: true, .. }
    );
    let default = if quiet {
        "payrun=warn,warn"
    } else {
        "payrun=info,warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// Runs `cli` to completion on a new tokio runtime and returns the exit code. The binary calls
/// this plain function rather than `block_on(run(cli))` itself: an async call tree is compiled
/// where its future is polled, so with `block_on` in `main.rs` a release build compiled the whole
/// tree (every command) a second time in the binary crate, longer than the library itself.
pub fn run_blocking(cli: Cli) -> i32 {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(run(cli))
}

/// Runs the command; returns the exit code.
pub async fn run(cli: Cli) -> i32 {
    match commands::dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", crate::text::printable_lines(&format!("{e:#}")));
            exit::FAILED
        }
    }
}

/// Everything a command may need, opened on demand.
pub(crate) struct Ctx {
    pub settings: Settings,
}

impl Ctx {
    pub fn load(cli: &Cli) -> anyhow::Result<Ctx> {
        let mut settings = Settings::load(std::path::Path::new("config"), cli.config.as_deref())?;
        if let Some(url) = &cli.database_url {
            settings.database.url = url.clone();
        }
        Ok(Ctx { settings })
    }

    pub async fn store(&self) -> anyhow::Result<Store> {
        // The error names the (redacted) URL itself; no context holds the raw one.
        let db = &self.settings.database;
        Ok(Store::connect_with(&db.url, db.max_connections.get()).await?)
    }

    pub fn queue(&self, store: &Store) -> Queue {
        Queue::new(
            store,
            Duration::from_secs(self.settings.worker.heartbeat_secs),
        )
    }

    pub fn dots(&self) -> anyhow::Result<DotsClient> {
        Ok(DotsClient::new(ClientConfig::from_settings(
            &self.settings.dots,
            &self.settings.worker,
        ))?)
    }

    pub fn engine(&self, store: &Store) -> anyhow::Result<Engine> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        let owner = format!(
            "{host}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        Ok(Engine::new(
            store.clone(),
            self.dots()?,
            self.settings.worker.clone(),
            &owner,
        )
        .with_funding(crate::jobs::funds::FundingConfig::from_settings(
            &self.settings,
        ))
        .with_reminders(self.settings.reminders.clone())
        .with_transfers(
            self.settings.dots.transfer_mode,
            self.settings.dots.transfer_batch_size,
        )
        .with_outbound(crate::jobs::outbound::Outbound::from_settings(
            &self.settings.events,
        )?))
    }

    /// The App wallet, read where a batch's total is shown (with `DOTS_APP_ID` set).
    pub fn wallet(&self) -> anyhow::Result<crate::app::wallet::WalletSource> {
        Ok(crate::app::wallet::WalletSource {
            dots: self.dots()?,
            funding: crate::jobs::funds::FundingConfig::from_settings(&self.settings),
        })
    }
}

/// Parses an id argument, or prints why not (exit 2).
pub(crate) fn parse_id<T: std::str::FromStr>(raw: &str) -> Result<T, i32>
where
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(|e: T::Err| {
        eprintln!("error: {}", crate::text::printable_lines(&e.to_string()));
        exit::BAD_INPUT
    })
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing jobs in flight");
}
