//! Reading a marketplace's own database for scheduled batches: runs the schedule's query
//! (read-only use is the operator's responsibility; payrun never writes there) and streams the
//! rows out as CSV with the intake columns, so they go through exactly the same validation as
//! an uploaded file.

use std::io::Write;

use futures::TryStreamExt;
use sqlx::{Column, Row};

use super::StoreError;

/// Runs `query` on `url` (sqlite:// or postgres://) and writes the rows as CSV to `out`, with
/// a header from the column names. Columns must be text or integers (cast decimals to text:
/// `amount::text` on PostgreSQL). Returns the number of rows.
pub async fn export_query_csv<W: Write>(url: &str, query: &str, out: W) -> Result<u64, StoreError> {
    let mut w = csv::Writer::from_writer(out);
    let sql = sqlx::AssertSqlSafe(query.to_string());
    let io = |e: csv::Error| StoreError::Corrupt(format!("writing CSV: {e}"));
    let mut n = 0u64;
    macro_rules! export {
        ($pool:expr) => {{
            let pool = $pool;
            let mut rows = sqlx::query(sql).fetch(&pool);
            while let Some(row) = rows.try_next().await? {
                if n == 0 {
                    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
                    w.write_record(&names).map_err(io)?;
                }
                let mut rec = Vec::with_capacity(row.len());
                for i in 0..row.len() {
                    let v = match row.try_get::<Option<String>, _>(i) {
                        Ok(v) => v.unwrap_or_default(),
                        Err(_) => row
                            .try_get::<Option<i64>, _>(i)?
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                    };
                    rec.push(v);
                }
                w.write_record(&rec).map_err(io)?;
                n += 1;
            }
            drop(rows);
            pool.close().await;
        }};
    }
    // A connection failure must not show the URL's password (`StoreError::connect`).
    let opened = |e: sqlx::Error| StoreError::connect(url, e.into());
    if url.starts_with("sqlite:") {
        export!(sqlx::SqlitePool::connect(url).await.map_err(opened)?);
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        export!(sqlx::PgPool::connect(url).await.map_err(opened)?);
    } else {
        return Err(StoreError::BadUrl(super::redact_url(url)));
    }
    w.flush()
        .map_err(|e| StoreError::Corrupt(format!("writing CSV: {e}")))?;
    Ok(n)
}

/// One seller of the demo's stand-in marketplace: what they are owed and how to reach them.
#[derive(Debug, Clone, Default)]
pub struct ExampleSeller {
    pub seller_id: String,
    pub balance_cents: i64,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub country_code: String,
    pub phone_number: String,
}

/// Writes the demo's stand-in for a marketplace database: table `seller_balances` (seller_id,
/// balance_cents, contact details, memo) in a fresh SQLite file. The contact details make
/// every row payable on any payrun database, even one that has never seen the seller.
pub async fn write_example_marketplace(
    path: &std::path::Path,
    sellers: &[ExampleSeller],
) -> Result<(), StoreError> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
    }
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?;
    sqlx::raw_sql(
        "CREATE TABLE seller_balances (seller_id TEXT PRIMARY KEY, balance_cents INTEGER NOT NULL,
             first_name TEXT, last_name TEXT, email TEXT, country_code TEXT, phone_number TEXT,
             memo TEXT)",
    )
    .execute(&pool)
    .await?;
    for s in sellers {
        sqlx::query("INSERT INTO seller_balances VALUES ($1, $2, $3, $4, $5, $6, $7, 'next week')")
            .bind(&s.seller_id)
            .bind(s.balance_cents)
            .bind(&s.first_name)
            .bind(&s.last_name)
            .bind(&s.email)
            .bind(&s.country_code)
            .bind(&s.phone_number)
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    Ok(())
}
