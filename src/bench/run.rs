//! Benchmarks that run the worker: throughput at 0 ms latency (beside apalis' no-op rate),
//! API-bound runs under a rate limit (with webhooks and polling only), and worker memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::*;

use super::{BenchBackend, BenchMode, fresh_db, per_sec, rss_mib};
use crate::app::{SubmitOptions, Submitted, submit_file};
use crate::batch::BatchId;
use crate::config::Settings;
use crate::dots::client::{ClientConfig, DotsClient};
use crate::dots::sim::{Sim, SimConfig, SimHandle};
use crate::dots::types::CreateUser;
use crate::jobs::{Engine, Queue, worker};
use crate::store::Store;

struct Rig {
    store: Store,
    sim: SimHandle,
    engine: Engine,
    queue: Queue,
    settings: Settings,
}

async fn rig(
    db_url: &str,
    sim: SimConfig,
    concurrency: usize,
    rate: f64,
    prune: bool,
    mode: BenchMode,
) -> anyhow::Result<Rig> {
    let store = Store::connect(db_url).await?;
    let handle = Sim::new(sim.clone()).spawn("127.0.0.1:0").await?;
    let mut s = bench_settings(&handle.base_url, &sim, concurrency, rate, prune);
    s.dots.transfer_mode = mode.transfer_mode();
    let engine = Engine::new(
        store.clone(),
        DotsClient::new(ClientConfig::from_settings(&s.dots, &s.worker))?,
        s.worker.clone(),
        "bench",
    )
    .with_transfers(s.dots.transfer_mode, s.dots.transfer_batch_size);
    let queue = Queue::new(&store, Duration::from_secs(s.worker.heartbeat_secs));
    Ok(Rig {
        store,
        sim: handle,
        engine,
        queue,
        settings: s,
    })
}

/// The worker's settings for a benchmark against the simulator at `base_url`.
pub(super) fn bench_settings(
    base_url: &str,
    sim: &SimConfig,
    concurrency: usize,
    rate: f64,
    prune: bool,
) -> Settings {
    let mut s = Settings::builtin();
    s.dots.base_url = base_url.to_string();
    s.dots.client_id = sim.client_id.clone();
    s.dots.api_key = sim.api_key.clone();
    s.dots.rate_limit_rps = rate;
    s.worker.concurrency = concurrency;
    s.worker.queue_poll_ms = 50;
    if !prune {
        s.worker.prune_done_ms = 0;
    }
    s.worker.backoff_base_ms = 100;
    s.worker.backoff_max_secs = 5;
    // Benchmarks pay large generated batches: no guard rails.
    s.limits = crate::config::Limits::default();
    s
}

/// Benchmark payee number `n`, as a Dots user to create.
pub(super) fn bench_user(n: u64) -> CreateUser {
    CreateUser {
        first_name: "Bench".into(),
        last_name: format!("Seller{n}"),
        email: format!("b{n}@example.com"),
        country_code: "1".into(),
        phone_number: format!("9{n:09}"),
        metadata: None,
    }
}

/// Writes a CSV at `csv` paying each of `users` (payee n is user n) and submits it.
pub(super) async fn submit_paying(
    store: &Store,
    queue: &mut Queue,
    csv: &std::path::Path,
    users: &[uuid::Uuid],
) -> anyhow::Result<BatchId> {
    let mut out = String::from("payee_id,amount,dots_user_id\n");
    for (n, u) in users.iter().enumerate() {
        out.push_str(&format!("b-{n:08},{}.{:02},{u}\n", 1 + n % 900, n % 100));
    }
    std::fs::write(csv, out)?;
    match submit_file(store, queue, csv, &SubmitOptions::default()).await? {
        Submitted::New { batch, .. } => Ok(batch),
        other => anyhow::bail!("unexpected {other:?}"),
    }
}

/// N known payees (Dots users made directly in the simulator) and a CSV paying them.
async fn known_batch(r: &mut Rig, dir: &std::path::Path, items: u64) -> anyhow::Result<BatchId> {
    let users: Vec<_> = (0..items)
        .map(|n| r.sim.sim.create_user(bench_user(n)).id)
        .collect();
    let csv = dir.join(format!("bench-{items}.csv"));
    submit_paying(&r.store, &mut r.queue, &csv, &users).await
}

/// Runs a worker until the batch settles; returns the time and RSS samples (MiB).
pub(super) async fn work(engine: &Engine, batch: BatchId) -> anyhow::Result<(Duration, Vec<f64>)> {
    let start = Instant::now();
    let store = engine.store.clone();
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = samples.clone();
    let until = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            s2.lock().expect("samples").push(rss_mib().0);
            if store.batch_is_settled(batch).await.unwrap_or(false) {
                return;
            }
        }
    };
    let started_ms = crate::store::now_ms();
    worker::run(engine.clone(), Vec::new(), until).await?;
    let s = samples.lock().expect("samples").clone();
    // The time to the batch's last write, not to the check that noticed it (checks are 500 ms
    // apart, which would add up to a third to a 1,000-item run).
    let last = engine.store.batch_last_update(batch).await?;
    let took = if last > started_ms {
        Duration::from_millis((last - started_ms) as u64)
    } else {
        start.elapsed()
    };
    Ok((took, s))
}

/// At most this long for apalis' no-op drain: with 100,000 jobs queued apalis-sqlite takes
/// about an hour; its rate over the first minutes is the rate at that queue length.
const NOOP_LIMIT: Duration = Duration::from_secs(90);

/// apalis alone: N no-op jobs pushed in bulk, drained by 16 concurrent handlers (for at most
/// [`NOOP_LIMIT`]). Returns the jobs done and the time taken.
async fn apalis_noop(store: &Store, n: u64) -> anyhow::Result<(u64, Duration)> {
    #[derive(Clone, serde::Serialize, serde::Deserialize)]
    struct Noop(u64);
    type Done = Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>;
    let done = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx: Done = Arc::new(std::sync::Mutex::new(Some(tx)));
    async fn noop(_j: Noop, ctx: Data<(Arc<AtomicU64>, u64, Done)>) -> Result<(), BoxDynError> {
        let (done, n, tx) = &*ctx;
        if done.fetch_add(1, Ordering::SeqCst) + 1 == *n
            && let Some(tx) = tx.lock().expect("tx").take()
        {
            let _ = tx.send(());
        }
        Ok(())
    }
    let data = (done.clone(), n, tx);
    let jobs: Vec<_> = (0..n).map(|i| TaskBuilder::new(Noop(i)).build()).collect();
    let strategy = Strategy::new().interval(Duration::from_millis(50));
    let rx = async move {
        let _ = tokio::time::timeout(NOOP_LIMIT, rx).await;
        Ok::<(), std::io::Error>(())
    };
    let start;
    crate::store::on_apalis!(store.pool(), p, Storage, Config => {
        let mut s = Storage::<Noop>::new(p)
            .with_config(Config::default().queue("payrun.bench.noop").batch_size(16));
        s.push_all(&mut futures::stream::iter(jobs)).await?;
        start = Instant::now();
        WorkerBuilder::new(format!("noop-{}", uuid::Uuid::new_v4().simple()))
            .backend(s.poll_with_strategy(strategy))
            .concurrency(16)
            .data(data)
            .build(noop)
            .run_until(rx)
            .await?;
    });
    Ok((done.load(Ordering::SeqCst).min(n), start.elapsed()))
}

pub async fn throughput(
    backend: BenchBackend,
    sizes: &[u64],
    concurrency: usize,
    prune: bool,
    mode: BenchMode,
    pg_admin: &str,
) -> anyhow::Result<()> {
    println!(
        "throughput on {backend:?}, transfer mode {mode:?}, simulator at 0 ms, {concurrency} concurrent items, pruning finished jobs: {prune}"
    );
    let mut first = None;
    for &n in sizes {
        let db = fresh_db(backend, pg_admin).await?;
        let mut r = rig(
            &db.url,
            SimConfig {
                complete_after_secs: 1e9,
                ..SimConfig::default()
            },
            concurrency,
            0.0,
            prune,
            mode,
        )
        .await?;
        let batch = known_batch(&mut r, db.dir(), n).await?;
        let (took, _) = work(&r.engine, batch).await?;
        let rate = per_sec(n, took);
        let noop_db = fresh_db(backend, pg_admin).await?;
        let noop_store = Store::connect(&noop_db.url).await?;
        let (noop_done, noop) = apalis_noop(&noop_store, n).await?;
        noop_store.close().await;
        noop_db.drop_pg().await;
        r.store.close().await;
        db.drop_pg().await;
        let base = *first.get_or_insert(rate);
        println!(
            "  {n:>7} items: {:>7.1} s  {rate:>7.0} items/s ({:+.0}% vs the smallest run)   apalis no-op: {:>7.0} jobs/s{}",
            took.as_secs_f64(),
            (rate / base - 1.0) * 100.0,
            per_sec(noop_done, noop),
            if noop_done < n {
                format!(
                    " ({noop_done} of {n} done in the first {} s)",
                    NOOP_LIMIT.as_secs()
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

pub async fn api(
    backend: BenchBackend,
    items: u64,
    latency_ms: u64,
    rate: u32,
    mode: BenchMode,
    pg_admin: &str,
) -> anyhow::Result<()> {
    // Dots calls a paid item needs at best: transfer, payout flow, one read of the flow (single);
    // the transfer shared by a chunk (batch mode; the target is 2.1).
    let per_item = match mode {
        BenchMode::Single => 3.0,
        BenchMode::Batch => 2.1,
    };
    println!(
        "API-bound on {backend:?}, transfer mode {mode:?}: {items} items, simulator latency {latency_ms} ms, rate limit {rate} req/s (ideal {:.1} items/s = R/{per_item})",
        rate as f64 / per_item
    );
    for webhooks in [true, false] {
        let db = fresh_db(backend, pg_admin).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hook = format!(
            "http://{}{}",
            listener.local_addr()?,
            crate::webhook::server::PATH
        );
        let sim = SimConfig {
            latency_ms,
            rate_limit: Some(rate),
            complete_after_secs: 1.0,
            webhook_url: webhooks.then_some(hook),
            ..SimConfig::default()
        };
        let mut r = rig(&db.url, sim, 64, rate as f64 * 0.98, true, mode).await?;
        r.engine = Engine::new(
            r.store.clone(),
            DotsClient::new(ClientConfig::from_settings(
                &r.settings.dots,
                &r.settings.worker,
            ))?,
            crate::config::WorkerSettings {
                poll_cron: "* * * * * *".into(),
                poll_schedule_secs: if webhooks {
                    vec![60, 300, 1800, 3600]
                } else {
                    vec![2, 5, 10, 30]
                },
                ..r.settings.worker.clone()
            },
            "bench",
        )
        .with_transfers(
            r.settings.dots.transfer_mode,
            r.settings.dots.transfer_batch_size,
        );
        if webhooks {
            let router = crate::app::serve::router(
                r.engine.clone(),
                r.queue.clone(),
                Some(crate::dots::sim::DEFAULT_WEBHOOK_SECRET),
                None,
            )?;
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        let before_429 = crate::metrics::dots_requests_with_outcome("429");
        let batch = known_batch(&mut r, db.dir(), items).await?;
        let start = Instant::now();
        // Paid = transferred; settle until every payee also finished their flow.
        let store = r.store.clone();
        let until = async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let c = store.batch_counts(batch).await.unwrap_or_default();
                if c.iter().all(|c| c.state.is_terminal()) {
                    return;
                }
            }
        };
        worker::run(r.engine.clone(), Vec::new(), until).await?;
        let took = start.elapsed();
        let throttled = crate::metrics::dots_requests_with_outcome("429") - before_429;
        let calls: u64 = [
            "POST /v2/flows",
            "GET /v2/flows/{id}",
            "GET /v2/flows",
            "POST /v2/transfers",
            "GET /v2/transfers",
            "GET /v2/transfers/{id}",
            "POST /v2/transfer-batches",
            "GET /v2/transfer-batches",
            "GET /v2/transfer-batches/{id}",
        ]
        .iter()
        .map(|e| r.sim.sim.request_count(e))
        .sum();
        let rate_items = per_sec(items, took);
        println!(
            "  {:<13} {:>6.1} s  {:>6.1} items/s = {:>5.1}% of R/{per_item}   429s: {throttled:<4}  Dots calls per paid item: {:.2}",
            if webhooks {
                "webhooks:"
            } else {
                "polling only:"
            },
            took.as_secs_f64(),
            rate_items,
            rate_items / (rate as f64 / per_item) * 100.0,
            calls as f64 / items as f64
        );
        r.store.close().await;
        db.drop_pg().await;
    }
    Ok(())
}
