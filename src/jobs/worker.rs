//! The worker process: an apalis worker for item jobs, an apalis-cron worker for the flow
//! poller, both on the same database as the store, both stopped by one shutdown future.
//!
//! Guarantees:
//! - every part runs under the watchdog (`jobs::watchdog`): one that dies or stalls is reported
//!   (`/healthz` 503, an ERROR line) and makes `run` return an error within a bound, instead of
//!   leaving a process that looks alive and does nothing; add a new background loop with
//!   `Watchdog::spawn` so it is watched too;
//! - in batch mode (`dots.transfer_mode`) the chunker (`jobs::chunk`) sends first transfers in
//!   chunks and walks the batches' feed cursors;
//! - the feeder (`jobs::feed`) keeps a window of due items in the queue; a job lost between a
//!   batch's commit and its enqueue, or with a crashed worker, is replaced when its claim
//!   lapses (at once on start-up when no queued job stands behind the claim);
//! - a restarted worker feeds at once the items a dead one had claimed for the queue;
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

use super::poll;
use super::queue::on_queue;
use super::watchdog::{Liveness, Pulse, Watchdog};
use super::{Engine, ItemJob, Next, Queue, feed};
use crate::store::now_ms;

/// How often the settle sweep runs (see the "settler" component).
const SETTLE_SWEEP: Duration = Duration::from_secs(5);

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

/// A job that failed on a store error (database busy or unreachable) defers its item along the
/// backoff as if at this attempt: `worker.backoff_base_ms` × 2³, jittered — long enough for a
/// busy database or a reconnect, without counting against the item's own attempts (the error is
/// not the item's, and its state is unchanged).
const JOB_ERROR_BACKOFF_STEP: i64 = 3;

#[derive(Clone)]
struct Shared {
    engine: Engine,
    polling: Arc<tokio::sync::Mutex<()>>,
    /// The poller's pulse (`jobs::watchdog`): a tick whose store calls fail reports it.
    poller: Pulse,
    /// The queue worker's pulse: item jobs note their store errors on it.
    queue: Pulse,
}

async fn handle_item(job: ItemJob, shared: Data<Shared>) -> Result<(), BoxDynError> {
    let id = job.item_id.parse()?;
    let started = std::time::Instant::now();
    let outcome = shared.engine.process_item(id).await;
    crate::metrics::job_finished(started.elapsed());
    match outcome {
        // The item is handed back with its next attempt time (or to the worker holding it);
        // the feeder queues it again when it is due.
        Ok(Next::RetryAt(_)) => crate::metrics::retry(crate::metrics::Retry::Step),
        Ok(Next::Busy(_) | Next::Idle) => {}
        Err(e) => {
            error!(item_id = %id, error = %e, "item job failed");
            shared.queue.noted(&e);
            crate::metrics::retry(crate::metrics::Retry::JobError);
            let at = now_ms()
                + shared
                    .engine
                    .backoff(JOB_ERROR_BACKOFF_STEP, None)
                    .as_millis() as i64;
            if let Err(e) = shared.engine.store.defer_item(id, at).await {
                // Its claim lapses after `worker.claim_secs` and the feeder hands it over again.
                warn!(item_id = %id, error = %e, "cannot defer the item");
            }
        }
    }
    Ok(())
}

async fn handle_tick(_tick: Tick, shared: Data<Shared>) -> Result<(), BoxDynError> {
    // Ticks do not overlap in one process: a slow poll (rate-limited Dots) skips ticks.
    let Ok(_running) = shared.polling.try_lock() else {
        return Ok(());
    };
    // No Dots calls while a circuit is open (`jobs::circuit`).
    if shared.engine.circuits.blocked().is_some() {
        return Ok(());
    }
    // Items it moves back to work (onboarded payees) are fed by the feeder.
    match poll::poll_due(&shared.engine, now_ms(), 1000).await {
        Ok(_) => shared.poller.ok(),
        Err(e) => {
            shared.poller.failed(&e);
            return Err(e.into());
        }
    }
    Ok(())
}

/// At start-up: claims no queued job stands behind (left by a worker that crashed or was
/// stopped by its watchdog, e.g. claimed before a full disk refused their jobs) are dropped so
/// their items are fed at once (see `Store::drop_claims_without_job`).
pub async fn resume(engine: &Engine) -> anyhow::Result<u64> {
    Ok(engine.store.drop_claims_without_job(now_ms()).await?)
}

/// How long a worker stopped by its watchdog waits for its jobs in flight before it exits (its
/// database may be what failed; their leases lapse after `worker.lease_secs` anyway).
const WATCHDOG_DRAIN: Duration = Duration::from_secs(10);

/// Runs the item worker, the poller, the feeder, the pruner and the schedule crons under the
/// watchdog (`jobs::watchdog`) until `shutdown` resolves, then lets jobs in flight finish.
/// Returns an error (the process exits 1) when the watchdog finds a part dead or stalled.
pub async fn run(
    engine: Engine,
    crons: Vec<CronTask>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = engine.settings.clone();
    let heartbeat = Duration::from_secs(settings.heartbeat_secs.max(1));
    let queue = Queue::new(&engine.store, heartbeat);
    // Before the watchdog runs: a database that stays locked fails the start-up instead.
    let stall = Duration::from_secs(settings.stall_secs.max(1));
    let resumed = tokio::time::timeout(stall, resume(&engine))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "resuming took over worker.stall_secs ({stall:?}): is the database locked?"
            )
        })??;
    info!(resumed, worker = %engine.owner, "worker starting");
    // One probe decides the credentials circuit before any item is touched.
    engine.start_probe().await?;
    let schedule = cron::Schedule::from_str(&settings.poll_cron)
        .map_err(|e| anyhow::anyhow!("bad poll_cron {:?}: {e}", settings.poll_cron))?;
    let shared = Shared {
        engine: engine.clone(),
        polling: Arc::default(),
        poller: Pulse::default(),
        queue: Pulse::default(),
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let tx = Arc::new(tx);
    let mut dog = Watchdog::new(engine.health.clone(), &settings, rx.clone());
    // Finished queue rows slow apalis' acknowledgements down as they pile up: prune them.
    if settings.prune_done_ms > 0 {
        let store = engine.store.clone();
        let every = Duration::from_millis(settings.prune_done_ms);
        spawn_every(
            &mut dog,
            "pruner",
            every,
            rx.clone(),
            "pruning finished jobs failed",
            move || {
                let store = store.clone();
                async move { store.prune_done_jobs().await }
            },
        );
    }
    // The settle sweep: a batch is reported settled/completed right after the item write that
    // made it so (`Store::report_if_settled`); this catches the one whose writer died between
    // its commit and that check.
    {
        let store = engine.store.clone();
        spawn_every(
            &mut dog,
            "settler",
            SETTLE_SWEEP,
            rx.clone(),
            "the settle sweep failed",
            move || {
                let store = store.clone();
                async move { store.report_settled_batches().await }
            },
        );
    }
    // The feeder: keeps a window of due items in the queue (see `jobs::feed`).
    {
        let (engine, mut queue, mut stop) = (engine.clone(), queue.clone(), rx.clone());
        let every = Duration::from_millis(settings.feed_ms.max(10));
        let liveness = Liveness::Beats {
            every_ms: every.as_millis() as i64,
        };
        dog.spawn("feeder", liveness, |pulse| async move {
            loop {
                match feed::feed_once(&engine, &mut queue).await {
                    Ok(_) => pulse.ok(),
                    Err(e) => {
                        warn!(error = %e, "feeding the queue failed");
                        pulse.failed(&e);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|v| *v) => return Ok::<(), String>(()),
                }
            }
        });
    }
    // Batch mode: the chunker sends first transfers in chunks (see `jobs::chunk`).
    if engine.chunked() {
        let (engine, stop) = (engine.clone(), rx.clone());
        let every = Duration::from_millis(settings.feed_ms.max(10));
        let liveness = Liveness::Beats {
            every_ms: every.as_millis() as i64,
        };
        dog.spawn("chunker", liveness, |pulse| {
            super::chunk::run(engine, pulse, stop)
        });
    }
    // The deliverer of outbound events (`jobs::outbound`).
    if let Some(out) = engine.outbound.clone() {
        let (store, owner, stop) = (engine.store.clone(), engine.owner.clone(), rx.clone());
        let liveness = Liveness::Beats {
            every_ms: out.poll.as_millis() as i64 + out.lease_ms,
        };
        dog.spawn("deliverer", liveness, |pulse| {
            super::outbound::run(out, store, owner, pulse, stop)
        });
    }
    // Half-open probes of open circuits (`jobs::circuit`).
    tokio::spawn(super::circuit::run_probes(
        engine.clone(),
        Duration::from_millis(250),
        rx.clone(),
    ));
    // The funds probe: lifts funds holds once the App wallet covers them (see `jobs::funds`).
    tokio::spawn(super::funds::probe_loop(engine.clone(), rx.clone()));
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
    }
    let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
        Ok::<(), std::io::Error>(())
    };
    let interval = Duration::from_millis(settings.queue_poll_ms.max(10));
    let strategy = || apalis::prelude::Strategy::new().interval(interval);
    // apalis' worker beats with its heartbeats; its run future ends when it dies.
    let beats = Liveness::Beats {
        every_ms: heartbeat.as_millis() as i64,
    };
    dog.spawn("queue", beats, |pulse| {
        let name = format!("{}-items", engine.owner);
        let shared = Shared {
            queue: pulse.clone(),
            ..shared.clone()
        };
        let concurrency = settings.concurrency.max(1);
        let rx = rx.clone();
        let on_event = move |_: &WorkerContext, e: &Event| {
            if matches!(e, Event::HeartBeat) {
                pulse.ok();
            }
        };
        on_queue!(queue.clone(), s => WorkerBuilder::new(name)
            .backend(s.poll_with_strategy(strategy()))
            .concurrency(concurrency)
            .data(shared)
            .on_event(on_event)
            .build(handle_item)
            .run_until(signal(rx))
            .boxed())
    });
    dog.spawn("poller", Liveness::Turns, |pulse| {
        let shared = Shared {
            poller: pulse,
            ..shared
        };
        WorkerBuilder::new(format!("{}-poll", engine.owner))
            .backend(CronScheduler::new(schedule))
            .data(shared)
            .build(handle_tick)
            .run_until(signal(rx.clone()))
    });
    for task in crons {
        let name = format!("schedule.{}", task.name);
        dog.spawn(name, Liveness::Turns, |_| {
            WorkerBuilder::new(format!("{}-cron-{}", engine.owner, task.name))
                .backend(CronScheduler::new(task.schedule.clone()).with_timezone(task.tz))
                .data(task)
                .build(handle_cron)
                .run_until(signal(rx.clone()))
        });
    }
    if let Err(exit) = dog.watch().await {
        // Stop the other parts; jobs in flight get a bounded time to finish.
        let _ = tx.send(true);
        if !dog.join(Some(WATCHDOG_DRAIN)).await {
            warn!("jobs in flight did not finish; their leases lapse");
        }
        return Err(exit.into());
    }
    dog.join(None).await;
    info!(worker = %engine.owner, "worker stopped");
    Ok(())
}

/// Spawns watchdog component `name`: `turn` every `every` until shutdown, each failure logged
/// as `failed` and reported to the watchdog (its liveness: a beat every `every`).
fn spawn_every<F, Fut, T, E>(
    dog: &mut Watchdog,
    name: &str,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    failed: &'static str,
    turn: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send,
    E: std::fmt::Display,
{
    let liveness = Liveness::Beats {
        every_ms: every.as_millis() as i64,
    };
    dog.spawn(name, liveness, |pulse| async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|v| *v) => return Ok::<(), String>(()),
            }
            match turn().await {
                Ok(_) => pulse.ok(),
                Err(e) => {
                    warn!(error = %e, "{failed}");
                    pulse.failed(&e);
                }
            }
        }
    });
}
