//! The memory benchmark: the worker's RSS while it pays N items, with the simulator in its own
//! process (its ledger grows with every transfer: that is Dots' memory, not the worker's).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use super::run::{bench_settings, bench_user, submit_paying, work};
use super::{BenchBackend, fresh_db, rss_mib};
use crate::dots::client::{ClientConfig, DotsClient};
use crate::dots::sim::SimConfig;
use crate::jobs::{Engine, Queue};
use crate::store::Store;

/// `payrun sim` as a child process on a free port; killed when dropped.
async fn spawn_sim() -> anyhow::Result<(tokio::process::Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["sim", "--listen", &addr, "--complete-after", "1000000000"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return Ok((child, format!("http://{addr}/api")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the simulator did not start on {addr}")
}

pub async fn memory(backend: BenchBackend, items: u64, pg_admin: &str) -> anyhow::Result<()> {
    let db = fresh_db(backend, pg_admin).await?;
    let (_sim, base_url) = spawn_sim().await?;
    let sim = SimConfig::default();
    let s = bench_settings(&base_url, &sim, 16, 0.0, true);
    let store = Store::connect(&db.url).await?;
    let dots = DotsClient::new(ClientConfig::from_settings(&s.dots, &s.worker))?;
    // Payees with Dots users, made through the API like any client would.
    let users: Vec<uuid::Uuid> = futures::stream::iter(0..items)
        .map(|n| {
            let dots = dots.clone();
            async move { dots.create_user(&bench_user(n)).await.map(|u| u.id) }
        })
        .buffered(32)
        .try_collect()
        .await?;
    let mut queue = Queue::new(&store, Duration::from_secs(s.worker.heartbeat_secs));
    let csv = db.dir().join(format!("memory-{items}.csv"));
    let batch = submit_paying(&store, &mut queue, &csv, &users).await?;
    drop(users);
    let engine = Engine::new(store.clone(), dots, s.worker.clone(), "bench");
    let (took, samples) = work(&engine, batch).await?;
    store.close().await;
    db.drop_pg().await;
    let tenth = |i: usize| {
        samples
            .get(i * samples.len().saturating_sub(1) / 10)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "memory on {backend:?}: worker RSS while working {items} items ({:.0} s; simulator in its own process)",
        took.as_secs_f64()
    );
    println!(
        "  RSS MiB at 0%..100% of the run: {}",
        (0..=10)
            .map(|i| format!("{:.0}", tenth(i)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (min, max) = samples
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
    println!(
        "  min {min:.0} MiB, max {max:.0} MiB, peak {:.0} MiB",
        rss_mib().1
    );
    Ok(())
}
