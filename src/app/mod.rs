//! Operator commands behind the CLI: submit, run, status, report, and the demo. Each returns
//! data (the binary prints it) and never calls `exit` itself.

pub mod audit;
mod demo;
mod report;
mod submit;

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
    worker::run(engine, until).await
}
