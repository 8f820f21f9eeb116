//! The `payrun` binary: parses the command line, loads configuration, wires the library.
//! All behaviour lives in the library (`payrun::app` and below).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use payrun::app::{self, exit};
use payrun::config::Settings;
use payrun::dots::client::DotsClient;
use payrun::dots::sim::{Sim, SimConfig};
use payrun::jobs::{Engine, Queue};
use payrun::store::Store;

#[derive(Parser)]
#[command(
    name = "payrun",
    version,
    about = "Durable batch payouts through the Dots API: submit a CSV, pay every seller exactly once, follow up until each payee has their money."
)]
struct Cli {
    /// Database: sqlite://PATH (default, embedded) or postgres://...
    #[arg(long, global = true, env = "PAYRUN_DATABASE_URL")]
    database_url: Option<String>,
    /// Extra config file (TOML), read after config/default.toml and config/$PAYRUN_ENV.toml.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole batch (examples/sellers.csv) against the built-in Dots simulator on a fresh SQLite file.
    Demo {
        /// Database for the demo (recreated on each run).
        #[arg(long, default_value = "sqlite://data/demo.db")]
        demo_database_url: String,
    },
    /// Validate a CSV and store it as a batch; prints the batch id. Nothing is paid until a worker runs.
    Submit {
        file: PathBuf,
        /// Validate and summarise only; store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Store the file even if the same content was submitted before.
        #[arg(long)]
        allow_duplicate: bool,
    },
    /// Work queued items and poll open flows until SIGINT/SIGTERM (in-flight jobs finish first).
    Worker {
        /// Items worked at once.
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Submit FILE, then work until the batch settles. Exit 0: all completed or waiting on payees; 1: some failed; 2: bad input.
    Run {
        file: PathBuf,
        #[arg(long)]
        allow_duplicate: bool,
    },
    /// Show batches (or one batch) with item counts and totals per state.
    Status {
        batch: Option<String>,
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
    /// Run the Dots API simulator (credentials from DOTS_CLIENT_ID / DOTS_API_KEY).
    Sim(SimArgs),
}

#[derive(clap::Args)]
struct SimArgs {
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    /// TOML file with the same keys as the flags (flags win).
    #[arg(long = "sim-config")]
    sim_config: Option<PathBuf>,
    /// Simulated payees finish a flow this many seconds after it is created.
    #[arg(long)]
    complete_after: Option<f64>,
    /// Share (0..1) of payees who never finish their flow.
    #[arg(long)]
    never_complete: Option<f64>,
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Share of requests answered 500/502/503.
    #[arg(long)]
    error_rate: Option<f64>,
    /// Share of transfers committed whose response is then lost.
    #[arg(long)]
    drop_rate: Option<f64>,
    /// Share of requests answered 429 with Retry-After.
    #[arg(long)]
    throttle_rate: Option<f64>,
    /// Share of requests that stall for 10 seconds.
    #[arg(long)]
    stall_rate: Option<f64>,
    /// Requests per second over which the simulator answers 429.
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Where to send webhooks.
    #[arg(long)]
    webhook_url: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(
        cli.log_format,
        matches!(cli.command, Command::Demo { .. } | Command::Run { .. }),
    );
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILED as u8)
        }
    }
}

fn init_tracing(format: LogFormat, quiet: bool) {
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
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut s = Settings::load(std::path::Path::new("config"), cli.config.as_deref())?;
    if let Some(url) = &cli.database_url {
        s.database.url = url.clone();
    }
    Ok(s)
}

async fn open(s: &Settings) -> anyhow::Result<Store> {
    Store::connect(&s.database.url).await.with_context(|| {
        format!(
            "opening database {}",
            payrun::store::redact_url(&s.database.url)
        )
    })
}

fn engine(s: &Settings, store: &Store) -> anyhow::Result<Engine> {
    let dots = DotsClient::new(s.client_config())?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let owner = format!(
        "{host}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    Ok(Engine::new(store.clone(), dots, s.worker.clone(), &owner))
}

async fn shutdown_signal() {
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

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Demo { demo_database_url } => {
            app::run_demo(app::DemoOptions {
                database_url: demo_database_url.clone(),
                ..Default::default()
            })
            .await
        }
        Command::Sim(args) => run_sim(args).await,
        Command::Submit {
            file,
            dry_run,
            allow_duplicate,
        } => {
            let s = settings(&cli)?;
            let store = open(&s).await?;
            let mut queue = Queue::new(&store, Duration::from_secs(s.worker.heartbeat_secs));
            let opts = app::SubmitOptions {
                dry_run: *dry_run,
                allow_duplicate: *allow_duplicate,
            };
            match app::submit_file(&store, &mut queue, file, &opts).await {
                Ok(app::Submitted::New { batch, summary }) => {
                    eprintln!(
                        "stored {} items, {} total",
                        summary.rows,
                        payrun::money::format_cents(summary.total_cents)
                    );
                    println!("{batch}");
                    Ok(exit::OK)
                }
                Ok(app::Submitted::Existing { batch, .. }) => {
                    eprintln!(
                        "this file was already submitted as batch {batch}; nothing new stored (use --allow-duplicate to pay it again)"
                    );
                    println!("{batch}");
                    Ok(exit::OK)
                }
                Ok(app::Submitted::DryRun { summary }) => {
                    println!(
                        "valid: {} items, {} total, {} rows rely on known payees; nothing stored",
                        summary.rows,
                        payrun::money::format_cents(summary.total_cents),
                        summary.rows_needing_known_payee
                    );
                    Ok(exit::OK)
                }
                Err(e) if e.is_bad_input() => {
                    eprintln!("error: {e}");
                    Ok(exit::BAD_INPUT)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Worker { concurrency } => {
            let mut s = settings(&cli)?;
            if let Some(c) = concurrency {
                s.worker.concurrency = *c;
            }
            let store = open(&s).await?;
            let engine = engine(&s, &store)?;
            app::work_until(engine, shutdown_signal()).await?;
            Ok(exit::OK)
        }
        Command::Run {
            file,
            allow_duplicate,
        } => {
            let s = settings(&cli)?;
            let store = open(&s).await?;
            let mut queue = Queue::new(&store, Duration::from_secs(s.worker.heartbeat_secs));
            let opts = app::SubmitOptions {
                dry_run: false,
                allow_duplicate: *allow_duplicate,
            };
            let batch = match app::submit_file(&store, &mut queue, file, &opts).await {
                Ok(sub) => sub.batch().expect("not a dry run"),
                Err(e) if e.is_bad_input() => {
                    eprintln!("error: {e}");
                    return Ok(exit::BAD_INPUT);
                }
                Err(e) => return Err(e.into()),
            };
            eprintln!("batch {batch}");
            let engine = engine(&s, &store)?;
            let total = store.batch(batch).await?.map(|b| b.item_count).unwrap_or(0) as u64;
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} settled  {msg}")
                    .expect("template"),
            );
            let watch = store.clone();
            let pb = bar.clone();
            let until = async move {
                let _ = app::wait_settled(&watch, batch, Duration::from_millis(500), |counts| {
                    let settled: i64 = counts
                        .iter()
                        .filter(|c| c.state.is_settled())
                        .map(|c| c.count)
                        .sum();
                    pb.set_position(settled as u64);
                    pb.set_message(
                        counts
                            .iter()
                            .map(|c| format!("{} {}", c.state, c.count))
                            .collect::<Vec<_>>()
                            .join(", "),
                    );
                })
                .await;
            };
            tokio::select! {
                r = app::work_until(engine, until) => r?,
                _ = shutdown_signal() => {}
            }
            bar.finish();
            let status = app::batch_status(&store, batch)
                .await?
                .expect("batch exists");
            print_status(&status);
            let failed = status
                .states
                .iter()
                .any(|s| s.state == "failed" && s.items > 0);
            Ok(if failed {
                exit::FAILED
            } else if status.settled {
                exit::OK
            } else {
                exit::FAILED
            })
        }
        Command::Status { batch, json } => {
            let s = settings(&cli)?;
            let store = open(&s).await?;
            let list = match batch {
                Some(b) => {
                    let id = match b.parse() {
                        Ok(id) => id,
                        Err(e) => {
                            eprintln!("error: {e}");
                            return Ok(exit::BAD_INPUT);
                        }
                    };
                    match app::batch_status(&store, id).await? {
                        Some(st) => vec![st],
                        None => {
                            eprintln!("error: no batch {id}; `payrun status` lists batches");
                            return Ok(exit::BAD_INPUT);
                        }
                    }
                }
                None => app::list_status(&store, 50).await?,
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no batches yet; `payrun submit FILE` stores one");
            } else {
                list.iter().for_each(print_status);
            }
            Ok(exit::OK)
        }
        Command::Audit { batch, json } => {
            let s = settings(&cli)?;
            let store = open(&s).await?;
            let id = match batch.parse() {
                Ok(id) => id,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::BAD_INPUT);
                }
            };
            if store.batch(id).await?.is_none() {
                eprintln!("error: no batch {id}; `payrun status` lists batches");
                return Ok(exit::BAD_INPUT);
            }
            let dots = DotsClient::new(s.client_config())?;
            let r = app::audit::audit_batch(&store, &dots, id).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "batch {id}: {} items, {} transfers at Dots name this batch",
                    r.items, r.transfers
                );
                for (what, list) in [
                    ("paid in payrun, no transfer at Dots", &r.missing),
                    ("more than one transfer", &r.duplicated),
                    ("transfer with another amount, user or id", &r.mismatched),
                    ("transfer at Dots not recorded in payrun", &r.unrecorded),
                    ("transfers naming no item of the batch", &r.orphans),
                ] {
                    println!(
                        "  {what}: {}",
                        if list.is_empty() {
                            "none".to_string()
                        } else {
                            list.join(", ")
                        }
                    );
                }
                println!(
                    "{}",
                    if r.ok() {
                        "OK: every item paid at most once, as recorded"
                    } else {
                        "MISMATCH: investigate before rerunning anything"
                    }
                );
            }
            Ok(if r.ok() { exit::OK } else { exit::FAILED })
        }
        Command::Report { batch, output } => {
            let s = settings(&cli)?;
            let store = open(&s).await?;
            let id = match batch.parse() {
                Ok(id) => id,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::BAD_INPUT);
                }
            };
            if store.batch(id).await?.is_none() {
                eprintln!("error: no batch {id}; `payrun status` lists batches");
                return Ok(exit::BAD_INPUT);
            }
            let n = match output {
                Some(path) => {
                    app::write_report(
                        &store,
                        id,
                        std::fs::File::create(path)
                            .with_context(|| format!("creating {}", path.display()))?,
                    )
                    .await?
                }
                None => app::write_report(&store, id, std::io::stdout().lock()).await?,
            };
            eprintln!("{n} items");
            Ok(exit::OK)
        }
    }
}

fn print_status(s: &app::BatchStatus) {
    println!(
        "batch {}  {}  {} items  {}  {}",
        s.batch_id,
        s.source,
        s.items,
        payrun::money::format_cents(s.total_cents),
        if s.settled { "settled" } else { "in progress" }
    );
    for l in &s.states {
        println!(
            "  {:<16} {:>7} items  {:>12}",
            l.state,
            l.items,
            payrun::money::format_cents(l.cents)
        );
    }
}

async fn run_sim(a: &SimArgs) -> anyhow::Result<i32> {
    let mut c: SimConfig = match &a.sim_config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => SimConfig::default(),
    };
    if let Ok(v) = std::env::var("DOTS_CLIENT_ID") {
        c.client_id = v;
    }
    if let Ok(v) = std::env::var("DOTS_API_KEY") {
        c.api_key = v;
    }
    macro_rules! set { ($($f:ident => $k:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$k = v; } )* } }
    set!(complete_after => complete_after_secs, never_complete => never_complete, latency_ms => latency_ms,
         error_rate => error_rate, drop_rate => drop_rate, throttle_rate => throttle_rate, stall_rate => stall_rate);
    if a.rate_limit.is_some() {
        c.rate_limit = a.rate_limit;
    }
    if a.webhook_url.is_some() {
        c.webhook_url = a.webhook_url.clone();
    }
    let handle = Sim::new(c)
        .spawn(&a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    eprintln!(
        "Dots simulator serving {} (ledger: http://{}/_sim/ledger)",
        handle.base_url, handle.addr
    );
    shutdown_signal().await;
    Ok(exit::OK)
}
