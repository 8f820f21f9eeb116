//! Operator commands behind the CLI: submit, run, status, report, and the demo. Each returns
//! data (the binary prints it) and never calls `exit` itself.

pub mod audit;
pub mod control;
pub mod dashboard;
mod demo;
pub mod events;
pub mod metrics_endpoint;
pub mod ops;
mod report;
pub mod routes;
pub mod schedule;
pub mod serve;
mod submit;
pub mod wallet;

pub use demo::{DemoOptions, run_demo};
pub use report::{BatchStatus, batch_status, list_status, write_report};
pub use submit::{SubmitError, SubmitOptions, Submitted, submit_file};

use std::future::Future;
use std::time::Duration;

use crate::batch::BatchId;
use crate::jobs::{Engine, worker};
use crate::store::Store;

/// Exit codes every command uses.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const BAD_INPUT: i32 = 2;
}

/// Resolves once every item of `batch` is terminal or waiting on its payee, checking the store
/// every `every`, calling `on_tick` with the state counts each time (for progress display).
pub async fn wait_settled(
    store: &Store,
    batch: BatchId,
    every: Duration,
    mut on_tick: impl FnMut(&[crate::store::StateCount]),
) -> Result<(), crate::store::StoreError> {
    loop {
        let counts = store.batch_counts(batch).await?;
        on_tick(&counts);
        if counts.iter().all(|c| c.state.is_settled()) {
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs a worker in this process until `until` resolves, then shuts it down gracefully.
pub async fn work_until<F>(engine: Engine, until: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    worker::run(engine, Vec::new(), until).await
}

/// Runs a worker with scheduled batches: first any tick missed while every worker was down
/// (if `schedules.catch_up`), then the item worker, the poller and one cron job per schedule.
pub async fn work_until_with<F>(
    engine: Engine,
    schedules: Vec<schedule::Schedule>,
    settings: &crate::config::Settings,
    until: F,
) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let store = engine.store.clone();
    let queue =
        crate::jobs::Queue::new(&store, Duration::from_secs(settings.worker.heartbeat_secs));
    let limits = settings.limits;
    if settings.schedules.catch_up {
        for s in &schedules {
            if let Some(at) = schedule::missed_tick(&store, s, crate::store::now_ms()).await? {
                let out = schedule::tick(&store, &mut queue.clone(), s, at, &limits).await?;
                tracing::info!(schedule = %s.name, tick_at = at, outcome = %out, "ran a missed tick");
            }
        }
    }
    let crons = schedules
        .into_iter()
        .map(|s| {
            let s = std::sync::Arc::new(s);
            let (store, queue) = (store.clone(), queue.clone());
            worker::CronTask {
                name: s.name.clone(),
                schedule: s.cron.clone(),
                tz: s.tz,
                run: std::sync::Arc::new(move |at| {
                    let (store, mut queue, s) = (store.clone(), queue.clone(), s.clone());
                    Box::pin(async move {
                        let out = schedule::tick(&store, &mut queue, &s, at, &limits).await?;
                        tracing::info!(schedule = %s.name, tick_at = at, outcome = %out, "schedule ticked");
                        Ok(())
                    })
                }),
            }
        })
        .collect();
    worker::run(engine, crons, until).await
}
