//! The command line, as clap sees it. Help texts are what operators read first: each says
//! what the command does and what it never does.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "payrun",
    version,
    about = "Durable batch payouts through the Dots API: submit a CSV, pay every seller exactly once, follow up until each payee has their money.",
    after_help = "Exit codes: 0 ok, 1 failure, 2 bad input or usage.\nConfig: config/default.toml, config/$PAYRUN_ENV.toml, --config FILE, then environment variables.\nSecrets (DOTS_API_KEY, DOTS_WEBHOOK_SECRET) come only from the environment."
)]
pub struct Cli {
    /// Database: sqlite://PATH (default, embedded) or postgres://...
    #[arg(
        long,
        global = true,
        env = "PAYRUN_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Extra config file (TOML), read after config/default.toml and config/$PAYRUN_ENV.toml.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a whole batch (examples/sellers.csv) against the built-in Dots simulator on a fresh SQLite file.
    Demo {
        /// Database for the demo (recreated on each run).
        #[arg(long, default_value = "sqlite://data/demo.db")]
        demo_database_url: String,
    },
    /// Validate a CSV and store it as a batch; prints the batch id. Nothing is paid until a worker runs.
    Submit {
        file: PathBuf,
        /// Validate and print what would be paid (counts, total, new payees); store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Store the file even if the same content was submitted before (pays it again).
        #[arg(long)]
        allow_duplicate: bool,
    },
    /// Work queued items, poll open flows and run schedules until SIGINT/SIGTERM (in-flight jobs finish first).
    Worker {
        /// Items worked at once.
        #[arg(long)]
        concurrency: Option<usize>,
        /// Serve /healthz and /metrics on this address (e.g. 0.0.0.0:9090).
        #[arg(long, env = "PAYRUN_HEALTH_LISTEN")]
        health_listen: Option<String>,
    },
    /// Serve the Dots webhook receiver, the dashboard, /healthz and /metrics (DOTS_WEBHOOK_SECRET, PAYRUN_DASHBOARD_TOKEN from the environment).
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Submit FILE, then work until the batch settles, with a progress bar. Exit 0: all completed or waiting on payees; 1: some failed; 2: bad input.
    Run {
        file: PathBuf,
        #[arg(long)]
        allow_duplicate: bool,
    },
    /// List batches (or show one) with item counts and totals per state.
    Status {
        batch: Option<String>,
        #[arg(long)]
        json: bool,
        /// Keep showing live progress bars until the batch settles (needs BATCH).
        #[arg(long, requires = "batch")]
        watch: bool,
    },
    /// Print one item and its whole event history (state changes, API calls, errors).
    Show {
        item: String,
        #[arg(long)]
        json: bool,
    },
    /// Export one batch's items as CSV (payee, amount, state, user, transfer, link, attempts, last error).
    Report {
        batch: String,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Compare a batch with the transfers Dots reports for its payees; lists every mismatch. Exit 1 if any.
    Audit {
        batch: String,
        #[arg(long)]
        json: bool,
    },
    /// Let a batch that is over the approval threshold run.
    Approve { batch: String },
    /// Pause a batch (or every batch with work left): within one feed interval no new Dots call starts for it; calls in flight finish and are recorded. Safe to run twice.
    Pause(ControlArgs),
    /// Resume a paused batch (or every paused batch): its waiting items are worked at once. Safe to run twice.
    Resume(ControlArgs),
    /// Stop items that have not transferred yet; says which could not be stopped and why.
    Cancel {
        batch: String,
        /// Only this item.
        #[arg(long)]
        item: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Put failed items back through the transfer safety protocol (an item whose transfer may have happened is reconciled first, never re-sent blindly).
    Rerun {
        batch: String,
        /// Only this item.
        #[arg(long)]
        item: Option<String>,
        /// Rerun the failed items (the default and only mode; accepted for clarity).
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make a new flow link for a payee whose link went stale.
    RetryFlow { item: String },
    /// Scheduled batches declared in jobs/*.toml.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// The events outbox: list events and their deliveries, or send some again.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Measure: ingest, throughput, API-bound runs and worker memory (prints figures).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
        /// Server on which PostgreSQL benchmarks create their databases.
        #[arg(
            long,
            global = true,
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        pg_admin_url: String,
    },
    /// Run the Dots API simulator (credentials from DOTS_CLIENT_ID / DOTS_API_KEY).
    Sim(SimArgs),
}

/// `pause` / `resume`: one batch, or `--all`.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct ControlArgs {
    pub batch: Option<String>,
    /// Every batch instead of one.
    #[arg(long)]
    pub all: bool,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Every benchmark at the sizes, on both backends (about 25 minutes): the figures
    /// the README shows.
    All,
    /// Submit a generated CSV of N rows; compare with COPY / sqlite3 .import.
    Ingest {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, value_enum, default_value_t = crate::bench::BenchBackend::Sqlite)]
        backend: crate::bench::BenchBackend,
    },
    /// Items/s at 0 ms simulator latency for each size, beside apalis' no-op rate.
    Throughput {
        #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
        items: Vec<u64>,
        #[arg(long, value_enum, default_value_t = crate::bench::BenchBackend::Sqlite)]
        backend: crate::bench::BenchBackend,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Keep apalis' finished job rows (to see the slowdown pruning removes).
        #[arg(long)]
        no_prune: bool,
        /// How transfers go to Dots (`dots.transfer_mode`).
        #[arg(long, value_enum, default_value_t = crate::bench::BenchMode::Single)]
        transfer_mode: crate::bench::BenchMode,
    },
    /// Items/s under a simulator rate limit, with webhooks and with polling only.
    Api {
        #[arg(long, default_value_t = 300)]
        items: u64,
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        #[arg(long, default_value_t = 30)]
        rate: u32,
        #[arg(long, value_enum, default_value_t = crate::bench::BenchBackend::Sqlite)]
        backend: crate::bench::BenchBackend,
        /// How transfers go to Dots (`dots.transfer_mode`).
        #[arg(long, value_enum, default_value_t = crate::bench::BenchMode::Single)]
        transfer_mode: crate::bench::BenchMode,
    },
    /// Worker RSS while it works N items.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        items: u64,
        #[arg(long, value_enum, default_value_t = crate::bench::BenchBackend::Sqlite)]
        backend: crate::bench::BenchBackend,
    },
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Show each schedule with its source and next run.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run one schedule now (makes at most one batch).
    Run { name: String },
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// One line per event: id, type, created, item, and each endpoint's delivery.
    List {
        #[arg(long)]
        batch: Option<String>,
        /// Only events with a failed delivery.
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make deliveries pending again (same event id, tries from zero).
    Replay {
        /// One event id (`evt_...`).
        #[arg(required_unless_present_any = ["batch", "since"], conflicts_with_all = ["batch", "since"])]
        event: Option<String>,
        /// Every event of this batch.
        #[arg(long, conflicts_with = "since")]
        batch: Option<String>,
        /// Every event created at or after TIME (RFC 3339, or unix ms).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct SimArgs {
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// TOML file with the same keys as the flags (flags win).
    #[arg(long = "sim-config")]
    pub sim_config: Option<PathBuf>,
    /// Simulated payees finish a flow this many seconds after it is created.
    #[arg(long)]
    pub complete_after: Option<f64>,
    /// Share (0..1) of payees who never finish their flow.
    #[arg(long)]
    pub never_complete: Option<f64>,
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Share of requests answered 500/502/503.
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// Share of transfers committed whose response is then lost.
    #[arg(long)]
    pub drop_rate: Option<f64>,
    /// Share of requests answered 429 with Retry-After.
    #[arg(long)]
    pub throttle_rate: Option<f64>,
    /// Share of requests that stall for 10 seconds.
    #[arg(long)]
    pub stall_rate: Option<f64>,
    /// Requests per second over which the simulator answers 429.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Where to send webhooks.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// The App wallet's starting balance, in cents.
    #[arg(long = "app-wallet", value_name = "CENTS")]
    pub app_wallet: Option<i64>,
    /// The simulated App's id (`GET /api/v2/apps/{app_id}`); printed at start.
    #[arg(long = "app-id", value_name = "UUID")]
    pub app_id: Option<uuid::Uuid>,
}
