//! The worker process: an apalis worker for item jobs, an apalis-cron worker for the flow
//! poller, both on the same database as the store, both stopped by one shutdown future.
//!
//! Guarantees:
//! - on start, every item with work due is enqueued again (a job lost between a batch commit
//!   and its enqueue, or by a crash, is never stranded); the poller repeats this sweep for
//!   items untouched for `STALE_MS`;
//! - on shutdown, jobs in flight finish (apalis drains them) before `run` returns; a job killed
//!   mid-flight is retried after its lease and apalis' heartbeat expire, and the item's stored
//!   state decides what it does (see `jobs::transfer` for why that never pays twice).

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use apalis::prelude::*;
use apalis_cron::{CronScheduler, Tick};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tracing::{error, info, warn};

use super::{Engine, ItemJob, Next, Queue};
use crate::poll;
use crate::store::now_ms;

/// A cron job registered beside the poller (e.g. a scheduled batch). `run` gets the tick's
/// scheduled time in unix ms.
#[derive(Clone)]
pub struct CronTask {
    pub name: String,
    pub schedule: cron::Schedule,
    pub tz: chrono_tz::Tz,
    pub run: Arc<dyn Fn(i64) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>,
}

async fn handle_cron(tick: Tick<chrono_tz::Tz>, task: Data<CronTask>) -> Result<(), BoxDynError> {
    let at = tick.get_timestamp() as i64 * 1000;
    if let Err(e) = (task.run)(at).await {
        error!(schedule = %task.name, error = %e, "scheduled job failed");
        return Err(e.into());
    }
    Ok(())
}

#[derive(Clone)]
struct Shared {
    engine: Engine,
    queue: Queue,
    polling: Arc<tokio::sync::Mutex<()>>,
}

async fn handle_item(job: ItemJob, shared: Data<Shared>) -> Result<(), BoxDynError> {
    let id = job.item_id.parse()?;
    let mut queue = shared.queue.clone();
    match shared.engine.process_item(id).await {
        Ok(Next::RetryAt(at) | Next::Busy(at)) => queue.push(&[id], Some(at)).await?,
        Ok(Next::Idle) => {}
        Err(e) => {
            // Leave the item as stored; the sweep or apalis' own retry brings it back.
            error!(item_id = %id, error = %e, "item job failed");
            let at = now_ms() + shared.engine.backoff(3, None).as_millis() as i64;
            queue.push(&[id], Some(at)).await?;
        }
    }
    Ok(())
}

async fn handle_tick(_tick: Tick, shared: Data<Shared>) -> Result<(), BoxDynError> {
    // Ticks do not overlap in one process: a slow poll (rate-limited Dots) skips ticks.
    let Ok(_running) = shared.polling.try_lock() else {
        return Ok(());
    };
    let mut queue = shared.queue.clone();
    let report = poll::poll_due(&shared.engine, now_ms(), 1000).await?;
    if !report.onboarded.is_empty() {
        queue.push(&report.onboarded, None).await?;
    }
    sweep_stranded(&shared.engine, &mut queue).await?;
    Ok(())
}

/// Re-enqueues items that have work due but no job: a job lost between a batch's commit and
/// its enqueue, or a retry whose push died with its process. Only when the item queue is empty
/// — while jobs wait, a workable item is most likely one of them, and re-enqueueing it would
/// only grow the queue (each tick, on every worker). Items touched in the last
/// `worker.stale_secs` are left alone (their worker may be pushing their next job).
pub async fn sweep_stranded(engine: &Engine, queue: &mut Queue) -> anyhow::Result<usize> {
    if engine.store.queued_jobs().await? > 0 {
        return Ok(0);
    }
    let now = now_ms();
    let stale_before = now - engine.settings.stale_secs as i64 * 1000;
    let ids = engine
        .store
        .workable_items(now, stale_before, 10_000)
        .await?;
    if !ids.is_empty() {
        warn!(
            count = ids.len(),
            "re-enqueueing items that had work due but no job"
        );
        queue.push(&ids, None).await?;
    }
    Ok(ids.len())
}

/// At start-up: everything with work due and no job (see [`sweep_stranded`]), without the
/// "untouched lately" grace — nothing in this process is working them yet.
pub async fn resume(engine: &Engine, queue: &mut Queue) -> anyhow::Result<usize> {
    if engine.store.queued_jobs().await? > 0 {
        return Ok(0);
    }
    let ids = engine
        .store
        .workable_items(now_ms(), now_ms(), i64::MAX)
        .await?;
    queue.push(&ids, None).await?;
    Ok(ids.len())
}

/// Runs the item worker and the poller until `shutdown` resolves, then lets jobs in flight
/// finish.
pub async fn run(
    engine: Engine,
    crons: Vec<CronTask>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = engine.settings.clone();
    let heartbeat = Duration::from_secs(settings.heartbeat_secs.max(1));
    let mut queue = Queue::new(&engine.store, heartbeat);
    let resumed = resume(&engine, &mut queue).await?;
    info!(resumed, worker = %engine.owner, "worker starting");
    let schedule = cron::Schedule::from_str(&settings.poll_cron)
        .map_err(|e| anyhow::anyhow!("bad poll_cron {:?}: {e}", settings.poll_cron))?;
    let shared = Shared {
        engine: engine.clone(),
        queue: queue.clone(),
        polling: Arc::default(),
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    // Finished queue rows slow apalis' acknowledgements down as they pile up: prune them.
    if settings.prune_done_ms > 0 {
        let (store, mut stop) = (engine.store.clone(), rx.clone());
        let every = Duration::from_millis(settings.prune_done_ms);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|v| *v) => return,
                }
                if let Err(e) = store.prune_done_jobs().await {
                    warn!(error = %e, "pruning finished jobs failed");
                }
            }
        });
    }
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
        Ok::<(), std::io::Error>(())
    };
    let interval = Duration::from_millis(settings.queue_poll_ms.max(10));
    let strategy = || apalis::prelude::Strategy::new().interval(interval);
    let items = {
        let name = format!("{}-items", engine.owner);
        let shared = shared.clone();
        let concurrency = settings.concurrency.max(1);
        let rx = rx.clone();
        match queue.clone() {
            Queue::Sqlite(s) => WorkerBuilder::new(name)
                .backend(s.poll_with_strategy(strategy()))
                .concurrency(concurrency)
                .data(shared)
                .build(handle_item)
                .run_until(signal(rx))
                .boxed(),
            Queue::Postgres(s) => WorkerBuilder::new(name)
                .backend(s.poll_with_strategy(strategy()))
                .concurrency(concurrency)
                .data(shared)
                .build(handle_item)
                .run_until(signal(rx))
                .boxed(),
        }
    };
    let poller = WorkerBuilder::new(format!("{}-poll", engine.owner))
        .backend(CronScheduler::new(schedule))
        .data(shared)
        .build(handle_tick)
        .run_until(signal(rx.clone()));
    let scheduled = futures::future::join_all(crons.into_iter().map(|task| {
        WorkerBuilder::new(format!("{}-cron-{}", engine.owner, task.name))
            .backend(CronScheduler::new(task.schedule.clone()).with_timezone(task.tz))
            .data(task)
            .build(handle_cron)
            .run_until(signal(rx.clone()))
    }));
    let (a, b, c) = tokio::join!(items, poller, scheduled);
    a?;
    b?;
    for r in c {
        r?;
    }
    info!(worker = %engine.owner, "worker stopped");
    Ok(())
}
