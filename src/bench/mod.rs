//! `payrun bench`: measured figures, printed — not timed tests. Each benchmark makes its own
//! fresh database (a SQLite file in a temp dir, or a new PostgreSQL database) and runs the
//! simulator in-process, so figures are comparable run to run on one machine.
//!
//! - `ingest`: a generated CSV of N rows through `submit` (validate + store in one
//!   transaction), beside PostgreSQL `COPY` / `sqlite3 .import` of the same file into an
//!   equivalent keyed table; rows/s and peak RSS.
//! - `throughput`: N items against the simulator at 0 ms latency until settled, items/s,
//!   beside apalis' own no-op job rate for N jobs on the same backend.
//! - `api`: simulator latency and rate limit R: items/s as a share of R/3, 429s, and Dots
//!   calls per paid item, with webhooks and with polling only.
//! - `memory`: worker RSS sampled while it works N items (simulator in its own process).

mod ingest;
mod memory;
mod run;

pub use ingest::ingest;
pub use memory::memory;
pub use run::{api, throughput};

use std::time::Duration;

use uuid::Uuid;

/// Which database a benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    Sqlite,
    Postgres,
}

/// How the benchmarked worker sends transfers (`dots.transfer_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    /// One `POST /v2/transfers` per item.
    Single,
    /// Chunks of `dots.transfer_batch_size` (500) through `POST /v2/transfer-batches`.
    Batch,
}

impl BenchMode {
    pub fn transfer_mode(self) -> crate::config::TransferMode {
        match self {
            BenchMode::Single => crate::config::TransferMode::Single,
            BenchMode::Batch => crate::config::TransferMode::Batch,
        }
    }
}

/// A fresh database for one benchmark run, removed when dropped (SQLite) or left for the
/// next `.ci/run` sweep (PostgreSQL `payrun_b_*`).
pub struct FreshDb {
    pub url: String,
    pub admin_url: String,
    pub name: Option<String>,
    _dir: tempfile::TempDir,
}

pub async fn fresh_db(backend: BenchBackend, pg_admin: &str) -> anyhow::Result<FreshDb> {
    let dir = tempfile::tempdir()?;
    match backend {
        BenchBackend::Sqlite => Ok(FreshDb {
            url: format!("sqlite://{}", dir.path().join("bench.db").display()),
            admin_url: String::new(),
            name: None,
            _dir: dir,
        }),
        BenchBackend::Postgres => {
            let name = format!("payrun_b_{}", Uuid::new_v4().simple());
            let url = crate::store::admin::create_pg_database(pg_admin, &name).await?;
            Ok(FreshDb {
                url,
                admin_url: pg_admin.to_string(),
                name: Some(name),
                _dir: dir,
            })
        }
    }
}

impl FreshDb {
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Drops a PostgreSQL benchmark database.
    pub async fn drop_pg(&self) {
        if let Some(name) = &self.name {
            let _ = crate::store::admin::drop_pg_database(&self.admin_url, name).await;
        }
    }
}

/// Resident set size now and at its peak (VmRSS, VmHWM), in MiB.
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// `payrun bench all`: every benchmark at the sizes the targets name, both backends.
pub async fn all(pg_admin: &str) -> anyhow::Result<()> {
    for backend in [BenchBackend::Sqlite, BenchBackend::Postgres] {
        ingest(backend, 1_000_000, pg_admin).await?;
    }
    for mode in [BenchMode::Single, BenchMode::Batch] {
        for backend in [BenchBackend::Sqlite, BenchBackend::Postgres] {
            throughput(backend, &[1_000, 100_000], 16, true, mode, pg_admin).await?;
        }
    }
    for mode in [BenchMode::Single, BenchMode::Batch] {
        api(BenchBackend::Sqlite, 300, 50, 30, mode, pg_admin).await?;
    }
    // In a fresh process: this one still holds what the runs above allocated (their
    // in-process simulators' ledgers among it), which is not the worker's memory.
    let status = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "bench",
            "memory",
            "--items",
            "100000",
            "--backend",
            "sqlite",
        ])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "bench memory failed: {status}");
    Ok(())
}
