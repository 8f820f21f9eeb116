//! Database administration for benchmarks: fresh PostgreSQL databases, and the baselines the
//! ingest benchmark compares against (`COPY` and `sqlite3 .import` of the same CSV into an
//! equivalent table keyed on payee_id), run through the databases' own command-line tools.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::StoreError;

/// Creates database `name` on the server of `admin_url`; returns its URL.
pub async fn create_pg_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    let mut c = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await?;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    Ok(format!("{base}/{name}"))
}

pub async fn drop_pg_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let mut c = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await?;
    Ok(())
}

const BASELINE_TABLE: &str =
    "CREATE TABLE baseline (payee_id TEXT PRIMARY KEY, amount TEXT NOT NULL,
    dots_user_id TEXT, first_name TEXT, last_name TEXT, email TEXT, country_code TEXT,
    phone_number TEXT, memo TEXT)";

fn run(cmd: &mut Command) -> Result<Duration, StoreError> {
    let start = Instant::now();
    let out = cmd.output().map_err(sqlx::Error::Io)?;
    if !out.status.success() {
        return Err(StoreError::Corrupt(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(start.elapsed())
}

/// `psql -c "\copy baseline FROM csv"` into a keyed table on `url`; the time of the copy alone.
pub fn pg_copy_baseline(url: &str, csv: &Path) -> Result<Duration, StoreError> {
    run(Command::new("psql").args([url, "-q", "-c", BASELINE_TABLE]))?;
    let copy = format!(
        "\\copy baseline FROM '{}' WITH (FORMAT csv, HEADER true)",
        csv.display()
    );
    run(Command::new("psql").args([url, "-q", "-c", &copy]))
}

/// `sqlite3 FILE ".import --csv --skip 1 csv baseline"` into a keyed table; the import's time.
pub fn sqlite_import_baseline(db: &Path, csv: &Path) -> Result<Duration, StoreError> {
    run(Command::new("sqlite3").arg(db).arg(BASELINE_TABLE))?;
    run(Command::new("sqlite3")
        .arg(db)
        .arg(format!(".import --csv --skip 1 {} baseline", csv.display())))
}
