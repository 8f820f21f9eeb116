//! The ingest benchmark: generate, submit, compare with the databases' own bulk loaders.

use std::io::Write;
use std::time::Instant;

use uuid::Uuid;

use super::{BenchBackend, fresh_db, per_sec, rss_mib};
use crate::app::{SubmitOptions, Submitted, submit_file};
use crate::jobs::Queue;
use crate::store::Store;

/// Writes a CSV of `rows` payees that already have Dots users (the common weekly case).
pub fn generate_csv(path: &std::path::Path, rows: u64) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        w,
        "payee_id,amount,dots_user_id,first_name,last_name,email,country_code,phone_number,memo"
    )?;
    for n in 0..rows {
        let cents = 100 + (n * 7919) % 500_000;
        let user = Uuid::from_u128(0x5e11_0000_0000_4000_8000_0000_0000_0000 | n as u128);
        writeln!(
            w,
            "seller-{n:08},{}.{:02},{user},,,,,,week {n}",
            cents / 100,
            cents % 100
        )?;
    }
    w.flush()
}

pub async fn ingest(backend: BenchBackend, rows: u64, pg_admin: &str) -> anyhow::Result<()> {
    let db = fresh_db(backend, pg_admin).await?;
    let csv = db.dir().join("ingest.csv");
    generate_csv(&csv, rows)?;
    let size = std::fs::metadata(&csv)?.len();
    let store = Store::connect(&db.url).await?;
    let mut queue = Queue::new(&store, std::time::Duration::from_secs(10));
    let (_, hwm_before) = rss_mib();

    // Store only (validate + one transaction), then the first queue window, timed apart.
    let opts = SubmitOptions {
        no_enqueue: true,
        ..Default::default()
    };
    let start = Instant::now();
    let sub = submit_file(&store, &mut queue, &csv, &opts).await?;
    let stored = start.elapsed();
    let Submitted::New { .. } = sub else {
        anyhow::bail!("expected a new batch")
    };
    let (_, hwm_after) = rss_mib();
    let start = Instant::now();
    let fed = crate::jobs::feed::top_up(&store, &mut queue, Default::default()).await?;
    let enqueued = start.elapsed();

    let baseline = match backend {
        BenchBackend::Postgres => {
            let base = fresh_db(backend, pg_admin).await?;
            let t = crate::store::admin::pg_copy_baseline(&base.url, &csv)?;
            base.drop_pg().await;
            ("PostgreSQL COPY (keyed table)", t)
        }
        BenchBackend::Sqlite => {
            let t =
                crate::store::admin::sqlite_import_baseline(&db.dir().join("baseline.db"), &csv)?;
            ("sqlite3 .import (keyed table)", t)
        }
    };
    store.close().await;
    db.drop_pg().await;
    println!(
        "ingest on {backend:?}: {rows} rows, {:.1} MiB CSV",
        size as f64 / 1048576.0
    );
    println!(
        "  payrun submit (validate + store): {:>8.2} s  {:>9.0} rows/s  = {:.2}x the baseline",
        stored.as_secs_f64(),
        per_sec(rows, stored),
        stored.as_secs_f64() / baseline.1.as_secs_f64()
    );
    println!(
        "  {:<32} {:>8.2} s  {:>9.0} rows/s",
        baseline.0,
        baseline.1.as_secs_f64(),
        per_sec(rows, baseline.1)
    );
    println!(
        "  first queue window ({fed} jobs; the feeder hands over the rest as they run): {:.3} s",
        enqueued.as_secs_f64()
    );
    println!("  peak RSS: {hwm_after:.1} MiB during submit (before: {hwm_before:.1} MiB)");
    Ok(())
}
