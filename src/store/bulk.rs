//! Bulk insert of a batch's rows as `pending` items, inside the caller's transaction:
//! PostgreSQL streams them with `COPY ... FROM STDIN`, SQLite takes multi-row `INSERT`s.
//!
//! Guarantees: rows are written in the order given, with ids from [`ItemId::for_line`]; the
//! first row error stops the stream (the caller rolls back, so nothing of it is kept); memory
//! is one buffer (1 MiB, or `SQLITE_ROWS` rows), whatever the size of the batch. Uniqueness of
//! a payee within the batch is the database's (the unique index), not a set held here.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

use super::StoreError;
use crate::batch::Row;
use crate::batch::{BatchId, ItemId};

/// A pool that gives the connection a batch is stored on.
pub trait IntakePool {
    type Db: sqlx::Database;
    fn intake_connection(
        &self,
    ) -> impl Future<Output = Result<PoolConnection<Self::Db>, sqlx::Error>> + Send;
}

/// SQLite settings for the connection that stores a batch, set before its transaction begins
/// (SQLite ignores `foreign_keys` inside one):
/// - no foreign key check per row: each item refers to the batch inserted just before it in
///   the same transaction (PostgreSQL has no such key at all, see the migration
///   `bulk_intake_and_feed`);
/// - a larger page cache (`INTAKE_CACHE_KIB`) for the four b-trees the rows go into.
///
/// The journal (WAL, shared with running workers) and `synchronous` are left as they are.
const SQLITE_INTAKE_PRAGMAS: &str = "PRAGMA foreign_keys = OFF; PRAGMA cache_size = -16384";

impl IntakePool for SqlitePool {
    type Db = Sqlite;
    async fn intake_connection(&self) -> Result<PoolConnection<Sqlite>, sqlx::Error> {
        let mut conn = self.acquire().await?;
        // Never back into the pool with these settings, however the intake ends.
        conn.close_on_drop();
        let pragmas = std::env::var("XP_PRAGMAS").unwrap_or(SQLITE_INTAKE_PRAGMAS.to_string());
        sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas))
            .execute(&mut *conn)
            .await?;
        Ok(conn)
    }
}

impl IntakePool for PgPool {
    type Db = Postgres;
    async fn intake_connection(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        self.acquire().await
    }
}

/// What was written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub rows: i64,
    pub total_cents: i64,
    /// Rows with neither a Dots user nor contact details: the payee must already be known.
    pub needing_known_payee: i64,
}

/// Why writing stopped early.
#[derive(Debug)]
pub enum BulkError {
    /// The row source reported a bad row (or a changed file).
    Source(String),
    /// The database refused a row: a payee twice in the file (unique index).
    Duplicate(String),
    Store(StoreError),
}

impl From<sqlx::Error> for BulkError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                BulkError::Duplicate(d.message().to_string())
            }
            _ => BulkError::Store(StoreError::Db(e)),
        }
    }
}

/// A connection that can take a batch's rows in bulk.
pub trait BulkItems {
    fn insert_items<I>(
        &mut self,
        batch: BatchId,
        now: i64,
        rows: I,
    ) -> impl Future<Output = Result<Written, BulkError>> + Send
    where
        I: Iterator<Item = Result<Row, String>> + Send;
}

const COPY_ITEMS: &str = "COPY items (id, batch_id, line, payee_id, amount_cents, memo, first_name, \
     last_name, email, country_code, phone_number, dots_user_id, state, updated_at) FROM STDIN";
const COPY_BUFFER: usize = 1 << 20;

impl BulkItems for PgConnection {
    async fn insert_items<I>(
        &mut self,
        batch: BatchId,
        now: i64,
        rows: I,
    ) -> Result<Written, BulkError>
    where
        I: Iterator<Item = Result<Row, String>> + Send,
    {
        let mut copy = self.copy_in_raw(COPY_ITEMS).await?;
        let mut buf = Vec::with_capacity(COPY_BUFFER + 4096);
        let mut w = Written::default();
        let batch_text = batch.to_string();
        let now_text = now.to_string();
        for row in rows {
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    copy.abort(e.clone()).await?;
                    return Err(BulkError::Source(e));
                }
            };
            count(&mut w, &row);
            encode_copy_row(&mut buf, batch, &batch_text, &now_text, &row);
            if buf.len() >= COPY_BUFFER {
                copy.send(buf.as_slice()).await?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            copy.send(buf.as_slice()).await?;
        }
        copy.finish().await?;
        Ok(w)
    }
}

fn count(w: &mut Written, row: &Row) {
    w.rows += 1;
    w.total_cents += row.amount.get();
    if row.dots_user_id.is_none() && row.contact.is_none() {
        w.needing_known_payee += 1;
    }
}

/// One row in COPY's text format: tab-separated, `\N` for NULL, backslash escapes.
fn encode_copy_row(buf: &mut Vec<u8>, batch: BatchId, batch_text: &str, now: &str, row: &Row) {
    use std::io::Write;
    let c = row.contact.as_ref();
    let id = ItemId::for_line(batch, row.line);
    let _ = write!(buf, "{id}\t{batch_text}\t{}\t", row.line);
    copy_text(buf, Some(&row.payee_id));
    let _ = write!(buf, "\t{}\t", row.amount.get());
    copy_text(buf, row.memo.as_deref());
    for f in [
        c.map(|c| c.first_name.as_str()),
        c.map(|c| c.last_name.as_str()),
        c.map(|c| c.email.as_str()),
        c.map(|c| c.country_code.as_str()),
        c.map(|c| c.phone_number.as_str()),
    ] {
        buf.push(b'\t');
        copy_text(buf, f);
    }
    buf.push(b'\t');
    match row.dots_user_id {
        Some(u) => {
            let _ = write!(buf, "{u}");
        }
        None => buf.extend_from_slice(b"\\N"),
    }
    let _ = writeln!(buf, "\tpending\t{now}");
}

fn copy_text(buf: &mut Vec<u8>, v: Option<&str>) {
    let Some(v) = v else {
        buf.extend_from_slice(b"\\N");
        return;
    };
    for b in v.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

/// Rows per SQLite `INSERT` (14 parameters each; SQLite allows 32,766 per statement).
const SQLITE_ROWS: usize = 256;
fn xp_rows() -> usize {
    std::env::var("XP_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(SQLITE_ROWS)
}
const SQLITE_COLUMNS: usize = 14;

fn sqlite_insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO items (id, batch_id, line, payee_id, amount_cents, memo, first_name, \
         last_name, email, country_code, phone_number, dots_user_id, state, updated_at) VALUES ",
    );
    // Anonymous `?`s: sqlx finds each numbered parameter's number by name, and SQLite's
    // name lookup walks every parameter, which made a 3,584-parameter statement quadratic.
    let one = format!("({})", vec!["?"; SQLITE_COLUMNS].join(","));
    sql.push_str(&vec![one; rows].join(","));
    sql
}

async fn sqlite_flush(
    conn: &mut SqliteConnection,
    batch: BatchId,
    batch_text: &Arc<str>,
    now: i64,
    pending: &mut Vec<Row>,
    full_sql: &str,
) -> Result<(), BulkError> {
    if pending.is_empty() {
        return Ok(());
    }
    let partial;
    let sql = if pending.len() == xp_rows() {
        full_sql
    } else {
        partial = sqlite_insert_sql(pending.len());
        &partial
    };
    let pending_text: Arc<str> = Arc::from("pending");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in pending.drain(..) {
        let c = row.contact;
        let (first, last, email, cc, phone) = match c {
            Some(c) => (
                Some(c.first_name),
                Some(c.last_name),
                Some(c.email),
                Some(c.country_code),
                Some(c.phone_number),
            ),
            None => (None, None, None, None, None),
        };
        q = q
            .bind(ItemId::for_line(batch, row.line).to_string())
            .bind(batch_text.clone())
            .bind(row.line as i64)
            .bind(row.payee_id)
            .bind(row.amount.get())
            .bind(row.memo)
            .bind(first)
            .bind(last)
            .bind(email)
            .bind(cc)
            .bind(phone)
            .bind(row.dots_user_id.map(|u| u.to_string()))
            .bind(pending_text.clone())
            .bind(now);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

impl BulkItems for SqliteConnection {
    async fn insert_items<I>(
        &mut self,
        batch: BatchId,
        now: i64,
        rows: I,
    ) -> Result<Written, BulkError>
    where
        I: Iterator<Item = Result<Row, String>> + Send,
    {
        let full_sql = sqlite_insert_sql(xp_rows());
        let batch_text: Arc<str> = Arc::from(batch.to_string());
        let mut pending = Vec::with_capacity(xp_rows());
        let mut w = Written::default();
        for row in rows {
            let row = row.map_err(BulkError::Source)?;
            count(&mut w, &row);
            pending.push(row);
            if pending.len() == xp_rows() {
                sqlite_flush(self, batch, &batch_text, now, &mut pending, &full_sql).await?;
            }
        }
        sqlite_flush(self, batch, &batch_text, now, &mut pending, &full_sql).await?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut b = Vec::new();
        copy_text(&mut b, Some("a\tb\\c\nd\re"));
        assert_eq!(b, b"a\\tb\\\\c\\nd\\re");
        b.clear();
        copy_text(&mut b, None);
        assert_eq!(b, b"\\N");
    }

    #[test]
    fn the_sqlite_statement_has_a_placeholder_per_value() {
        let sql = sqlite_insert_sql(2);
        assert_eq!(sql.matches('?').count(), 2 * SQLITE_COLUMNS);
        assert!(sql.ends_with("(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"));
    }
}
