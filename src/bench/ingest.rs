//! The ingest benchmark: generate a CSV, run the whole `payrun submit` process on it, and
//! compare with the databases' own bulk loaders run on the same file just after.
//!
//! What is timed is what an operator waits for: a child `payrun submit FILE` process, from
//! spawn to exit (start-up, connecting, validating and storing every row, the first queue
//! window), against a database already migrated. Its peak RSS is the child's own high-water
//! mark (`wait4`'s `ru_maxrss`), not this process's.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{BenchBackend, fresh_db, per_sec};
use crate::store::Store;

/// Writes a CSV of `rows` payees that already have Dots users (the common weekly case).
pub fn generate_csv(path: &Path, rows: u64) -> std::io::Result<()> {
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

/// A finished child process: how long it ran and its peak RSS.
struct ChildRun {
    elapsed: Duration,
    peak_rss_mib: f64,
    status: std::process::ExitStatus,
    stderr: String,
}

/// Runs `payrun --database-url URL submit CSV` in `dir` and waits for it with `wait4`, which
/// reports the child's own peak RSS.
fn run_submit(url: &str, csv: &Path, dir: &Path) -> anyhow::Result<ChildRun> {
    use std::os::unix::process::ExitStatusExt;
    let stderr = dir.join("submit.stderr");
    let start = Instant::now();
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("--database-url")
        .arg(url)
        .arg("submit")
        .arg(csv)
        .current_dir(dir)
        .env("RUST_LOG", "payrun=error")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in; `pid` is our own child, which
    // nothing else waits for (the `Child` handle is dropped without waiting).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    drop(child);
    anyhow::ensure!(got == pid, "wait4: {}", std::io::Error::last_os_error());
    Ok(ChildRun {
        elapsed,
        // ru_maxrss is in KiB on Linux.
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        status: std::process::ExitStatus::from_raw(status),
        stderr: std::fs::read_to_string(&stderr).unwrap_or_default(),
    })
}

/// The load average over the last minute (the machine is shared: figures come with it).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub async fn ingest(backend: BenchBackend, rows: u64, pg_admin: &str) -> anyhow::Result<()> {
    let db = fresh_db(backend, pg_admin).await?;
    let csv = db.dir().join("ingest.csv");
    generate_csv(&csv, rows)?;
    let size = std::fs::metadata(&csv)?.len();
    // Migrated here, so the child finds the schema in place (as a real submit would).
    Store::connect(&db.url).await?.close().await;

    let load_before = load_average();
    let dir = db.dir().to_path_buf();
    let (url, path) = (db.url.clone(), csv.clone());
    let submit = tokio::task::spawn_blocking(move || run_submit(&url, &path, &dir)).await??;
    anyhow::ensure!(
        submit.status.success(),
        "payrun submit failed ({}): {}",
        submit.status,
        submit.stderr
    );
    let store = Store::connect(&db.url).await?;
    let batches = store.list_batches(2).await?;
    store.close().await;
    anyhow::ensure!(
        batches.len() == 1 && batches[0].item_count == rows as i64,
        "expected one batch of {rows} items, found {:?}",
        batches.iter().map(|b| b.item_count).collect::<Vec<_>>()
    );

    let baseline = match backend {
        BenchBackend::Postgres => {
            let base = fresh_db(backend, pg_admin).await?;
            let t = crate::store::admin::pg_copy_baseline(&base.url, &csv)?;
            base.drop_pg().await;
            ("psql \\copy (keyed table)", t)
        }
        BenchBackend::Sqlite => {
            let t =
                crate::store::admin::sqlite_import_baseline(&db.dir().join("baseline.db"), &csv)?;
            ("sqlite3 .import (keyed table)", t)
        }
    };
    let load_after = load_average();
    db.drop_pg().await;
    println!(
        "ingest on {backend:?}: {rows} rows, {:.1} MiB CSV (load average {load_before} before, {load_after} after)",
        size as f64 / 1048576.0
    );
    println!(
        "  payrun submit (whole process): {:>8.2} s  {:>9.0} rows/s  = {:.2}x the baseline",
        submit.elapsed.as_secs_f64(),
        per_sec(rows, submit.elapsed),
        submit.elapsed.as_secs_f64() / baseline.1.as_secs_f64()
    );
    println!(
        "  {:<30} {:>8.2} s  {:>9.0} rows/s",
        baseline.0,
        baseline.1.as_secs_f64(),
        per_sec(rows, baseline.1)
    );
    println!(
        "  peak RSS of the submit process: {:.1} MiB",
        submit.peak_rss_mib
    );
    Ok(())
}
