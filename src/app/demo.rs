//! `payrun demo`: the whole pipeline on a fresh SQLite file against the in-process simulator.
//!
//! Sellers in `examples/known_sellers.csv` were "onboarded in an earlier batch": the demo makes
//! their Dots users in the simulator and records them as known payees. Then it submits
//! `examples/sellers.csv`, runs a worker until every item is terminal or waiting on its payee
//! (the payee who never finishes stays waiting), prints a summary, and audits the simulator's
//! ledger over HTTP: exactly one transfer per item, of the right amount, to the right user.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::dots::client::{ClientConfig, DotsClient};
use crate::dots::sim::{Ledger, Sim, SimConfig};
use crate::dots::types::CreateUser;
use crate::item::ItemState;
use crate::jobs::{Engine, Queue};
use crate::store::Store;
use crate::store::source::ExampleSeller;

use super::audit::{SeenTransfer, compare};
use super::{SubmitOptions, Submitted, submit_file};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub database_url: String,
    pub sellers: PathBuf,
    pub known_sellers: PathBuf,
    /// Payee who never completes their payout flow.
    pub never_completes: String,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            database_url: "sqlite://data/demo.db".into(),
            sellers: "examples/sellers.csv".into(),
            known_sellers: "examples/known_sellers.csv".into(),
            never_completes: "seller-017".into(),
        }
    }
}

/// How long the demo waits for its batch to settle before it stops and reports what it has.
const DEMO_LIMIT: Duration = Duration::from_secs(300);

/// Runs the demo, printing as it goes. Returns the process exit code.
pub async fn run_demo(opts: DemoOptions) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    if let Some(path) = opts.database_url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    let sim_config = SimConfig {
        complete_after_secs: 2.0,
        never_complete_payees: vec![opts.never_completes.clone()],
        error_rate: 0.05,
        throttle_rate: 0.03,
        drop_rate: 0.03,
        retry_after_secs: 1,
        ..SimConfig::default()
    };
    let sim = Sim::new(sim_config.clone());
    let handle = sim
        .clone()
        .spawn("127.0.0.1:0")
        .await
        .context("starting the simulator")?;
    println!(
        "Dots simulator listening on {} (5% 5xx, 3% 429, 3% commit-then-drop)",
        handle.base_url
    );

    let store = Store::connect(&opts.database_url)
        .await
        .context("opening the database")?;
    // Sellers onboarded before this batch: Dots users exist, payrun knows them.
    let mut known = 0;
    let mut contacts: HashMap<String, ExampleSeller> = HashMap::new();
    let mut rdr = csv::Reader::from_path(&opts.known_sellers)
        .with_context(|| format!("reading {}", opts.known_sellers.display()))?;
    for rec in rdr.deserialize::<HashMap<String, String>>() {
        let r = rec?;
        let g = |k: &str| r.get(k).cloned().unwrap_or_default();
        let user = sim.create_user(CreateUser {
            first_name: g("first_name"),
            last_name: g("last_name"),
            email: g("email"),
            country_code: g("country_code"),
            phone_number: g("phone_number"),
            metadata: None,
        });
        store.remember_payee(&g("payee_id"), user.id).await?;
        contacts.insert(
            g("payee_id"),
            ExampleSeller {
                seller_id: g("payee_id"),
                first_name: g("first_name"),
                last_name: g("last_name"),
                email: g("email"),
                country_code: g("country_code"),
                phone_number: g("phone_number"),
                ..Default::default()
            },
        );
        known += 1;
    }
    println!("{known} sellers already have Dots users");

    let mut settings = Settings::builtin();
    settings.dots.base_url = handle.base_url.clone();
    settings.dots.client_id = sim_config.client_id.clone();
    settings.dots.api_key = sim_config.api_key.clone();
    settings.dots.timeout_secs = 5;
    settings.worker.poll_cron = "* * * * * *".into();
    settings.worker.poll_schedule_secs = vec![1];
    settings.worker.backoff_base_ms = 100;
    settings.worker.backoff_max_secs = 2;
    settings.worker.queue_poll_ms = 50;
    let dots = DotsClient::new(ClientConfig::from_settings(
        &settings.dots,
        &settings.worker,
    ))?;
    let owner = format!("demo-{}", std::process::id());
    let engine = Engine::new(store.clone(), dots, settings.worker.clone(), &owner);
    let mut queue = Queue::new(&store, Duration::from_secs(settings.worker.heartbeat_secs));

    let submitted =
        submit_file(&store, &mut queue, &opts.sellers, &SubmitOptions::default()).await?;
    let Submitted::New { batch, summary, .. } = submitted else {
        anyhow::bail!("the demo database was not fresh");
    };
    println!(
        "batch {batch}: {} items, {} total",
        summary.rows,
        crate::money::format_cents(summary.total_cents)
    );

    // Work until settled, then give payees who will finish time to do so.
    let started = Instant::now();
    let watch_store = store.clone();
    let never = opts.never_completes.clone();
    let stop = async move {
        let mut settled_at: Option<Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(items) = watch_store.batch_items(batch).await else {
                continue;
            };
            let settled = items.iter().all(|i| i.state.is_settled());
            let only_never = items
                .iter()
                .all(|i| i.state.is_terminal() || i.payee_id == never);
            // Settled must hold for the whole grace period: a batch whose new payees are
            // all still onboarding is settled for a moment, then their transfers start.
            if !settled {
                settled_at = None;
            } else if settled_at.is_none() {
                settled_at = Some(Instant::now());
            }
            if only_never || settled_at.is_some_and(|t| t.elapsed() > Duration::from_secs(15)) {
                return;
            }
            if started.elapsed() > DEMO_LIMIT {
                eprintln!(
                    "the batch did not settle within {}s: stopping the worker",
                    DEMO_LIMIT.as_secs()
                );
                return;
            }
        }
    };
    super::work_until(engine, stop).await?;
    println!("settled in {:.1}s\n", started.elapsed().as_secs_f64());

    let items = store.batch_items(batch).await?;
    println!(
        "{:<12} {:>9}  {:<10} {:<16} {:<38} link",
        "payee", "amount", "onboarded", "state", "transfer"
    );
    for i in &items {
        println!(
            "{:<12} {:>9}  {:<10} {:<16} {:<38} {}",
            i.payee_id,
            crate::money::format_cents(i.amount.get()),
            if i.onboarding_flow_id.is_some() {
                "yes"
            } else {
                "-"
            },
            i.state,
            i.transfer_id.map_or("-".into(), |t| t.to_string()),
            i.payout_link.as_deref().unwrap_or("-"),
        );
    }
    let status = super::batch_status(&store, batch)
        .await?
        .expect("batch exists");
    println!();
    for s in &status.states {
        println!(
            "{:<16} {:>4} items  {:>10}",
            s.state,
            s.items,
            crate::money::format_cents(s.cents)
        );
    }

    // Audit the ledger through the simulator's HTTP route, as an outside auditor would.
    let ledger: Ledger = reqwest::get(format!("http://{}/_sim/ledger", handle.addr))
        .await?
        .json()
        .await?;
    let seen: Vec<SeenTransfer> = ledger.transfers.iter().map(SeenTransfer::from).collect();
    let audit = compare(batch, &items, &seen);
    println!(
        "\nledger audit: {} items, {} transfers in the ledger, {} for this batch: {} missing, {} duplicated, {} wrong amount or user, {} unrecorded, {} orphans",
        audit.items,
        ledger.transfers.len(),
        audit.transfers,
        audit.missing.len(),
        audit.duplicated.len(),
        audit.mismatched.len(),
        audit.unrecorded.len(),
        audit.orphans.len()
    );
    let one_per_item = ledger.transfers.len() == items.len();
    write_marketplace_example(&items, &contacts).await?;
    let all_settled = items
        .iter()
        .all(|i| matches!(i.state, ItemState::Completed | ItemState::AwaitingPayout));
    store.close().await;
    Ok(if audit.ok() && all_settled && one_per_item {
        super::exit::OK
    } else {
        super::exit::FAILED
    })
}

/// The example source table `jobs/weekly-sellers.toml` reads: the sellers' next balances and
/// contact details, in `data/marketplace.db` (a stand-in for the marketplace's own database).
/// With the contact details, `payrun jobs run weekly-sellers` makes a payable batch on any
/// payrun database — the default one included, which has never seen these sellers.
async fn write_marketplace_example(
    items: &[crate::store::ItemRecord],
    known: &HashMap<String, ExampleSeller>,
) -> anyhow::Result<()> {
    let path = std::path::Path::new("data/marketplace.db");
    let sellers: Vec<ExampleSeller> = items
        .iter()
        .map(|i| {
            let contact = known.get(&i.payee_id).cloned().unwrap_or_else(|| {
                let f = |v: &Option<String>| v.clone().unwrap_or_default();
                ExampleSeller {
                    first_name: f(&i.first_name),
                    last_name: f(&i.last_name),
                    email: f(&i.email),
                    country_code: f(&i.country_code),
                    phone_number: f(&i.phone_number),
                    ..Default::default()
                }
            });
            ExampleSeller {
                seller_id: i.payee_id.clone(),
                balance_cents: i.amount.get() / 2 + 1,
                ..contact
            }
        })
        .collect();
    crate::store::source::write_example_marketplace(path, &sellers).await?;
    println!(
        "example source table for jobs/weekly-sellers.toml written to {} (try `payrun jobs list`, then `payrun jobs run weekly-sellers`)",
        path.display()
    );
    Ok(())
}
