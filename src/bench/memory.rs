//! The memory benchmark: the worker's RSS while it pays N items, with the simulator in its own
//! process (its ledger grows with every transfer: that is Dots' memory, not the worker's).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use super::{BenchBackend, fresh_db, rss_mib, run::work};
use crate::app::{SubmitOptions, Submitted, submit_file};
use crate::config::Settings;
use crate::dots::client::DotsClient;
use crate::dots::sim::SimConfig;
use crate::dots::types::CreateUser;
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
    let mut s = Settings::builtin();
    s.dots.base_url = base_url;
    s.dots.client_id = sim.client_id.clone();
    s.dots.api_key = sim.api_key.clone();
    s.dots.rate_limit_rps = 0.0;
    s.worker.concurrency = 16;
    s.worker.queue_poll_ms = 50;
    s.worker.backoff_base_ms = 100;
    s.worker.backoff_max_secs = 5;
    let store = Store::connect(&db.url).await?;
    let dots = DotsClient::new(s.client_config())?;
    // Payees with Dots users, made through the API like any client would.
    let users: Vec<uuid::Uuid> = futures::stream::iter(0..items)
        .map(|n| {
            let dots = dots.clone();
            async move {
                dots.create_user(&CreateUser {
                    first_name: "Bench".into(),
                    last_name: format!("Seller{n}"),
                    email: format!("m{n}@example.com"),
                    country_code: "1".into(),
                    phone_number: format!("8{n:09}"),
                    metadata: None,
                })
                .await
                .map(|u| u.id)
            }
        })
        .buffered(32)
        .try_collect()
        .await?;
    let csv = db.dir().join(format!("memory-{items}.csv"));
    let mut out = String::from("payee_id,amount,dots_user_id\n");
    for (n, u) in users.iter().enumerate() {
        out.push_str(&format!("m-{n:08},{}.{:02},{u}\n", 1 + n % 900, n % 100));
    }
    std::fs::write(&csv, out)?;
    drop(users);
    let mut queue = Queue::new(&store, Duration::from_secs(s.worker.heartbeat_secs));
    let Submitted::New { batch, .. } =
        submit_file(&store, &mut queue, &csv, &SubmitOptions::default()).await?
    else {
        anyhow::bail!("expected a new batch")
    };
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
