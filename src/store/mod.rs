//! The store: the only module that contains SQL. It owns payrun's tables (batches, items,
//! payees, the append-only item event log) on SQLite or PostgreSQL, and runs both migration
//! sets — ours (table `_payrun_migrations`) and apalis' own (sqlx's default table) — so the
//! two never trip over each other in one database (apalis issue 26).
//!
//! Guarantees:
//! - every item state change goes through [`ItemState::can_become`] and is guarded by the old
//!   state in the `WHERE` clause, in the same transaction as its event row;
//! - no method holds a transaction across an `.await` on anything but the database;
//! - a batch and all its items are stored in one transaction, or nothing is.
//!
//! Both backends use the same runtime-checked SQL text (`$1` placeholders work on both). The
//! `on_pool!` macro expands each query once per backend, so the compiler type-checks the binds
//! for both; the test suite runs every query on both (see ARCHITECTURE.md, "Two backends").

pub mod admin;
mod batches;
mod bulk;
mod chunks;
mod control;
mod feed;
mod funding;
mod guarded;
mod items;
mod migrate_lock;
mod outbox;
mod outbox_batch;
mod outbox_delivery;
mod payees;
mod queue_tables;
mod record;
mod reminders;
pub mod source;
mod systemic;
mod transitions;
mod writes;

pub use crate::secret::redact_url;
pub use batches::*;
pub use chunks::{CallClose, ChunkOutcome, ChunkRecord, ChunkWritten, Handover, OpenChunk, Opened};
pub use control::{Block, Blocked, PauseOutcome, ResumeOutcome};
pub use funding::FundingVerdict;
pub use items::*;
pub use outbox::OutboxEvent;
pub use outbox_delivery::{
    ClaimedDelivery, DeliveryView, EndpointBacklog, EventDeliveries, ReplaySelector, TryOutcome,
};
pub use payees::PayeeRoute;
pub use queue_tables::ITEM_QUEUE;
pub(crate) use queue_tables::on_apalis;
pub use record::ItemRecord;
pub use writes::*;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// Database errors, classified for the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    BadUrl(String),
    /// Opening the database failed. Holds only the redacted URL and the driver's message
    /// scrubbed of the URL and password (never the `sqlx::Error`, whose text may hold them).
    #[error("cannot open database {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("illegal item transition {from} -> {to}")]
    IllegalTransition {
        from: crate::item::ItemState,
        to: crate::item::ItemState,
    },
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A connection-time failure on `url`: driver errors lose the URL and password.
    pub(crate) fn connect(url: &str, e: StoreError) -> StoreError {
        match e {
            StoreError::Db(e) => StoreError::Connect {
                url: redact_url(url),
                reason: crate::secret::scrub(&e.to_string(), url),
            },
            StoreError::Migrate(e) => StoreError::Connect {
                url: redact_url(url),
                reason: crate::secret::scrub(&format!("migration failed: {e}"), url),
            },
            StoreError::Corrupt(m) => StoreError::Corrupt(crate::secret::scrub(&m, url)),
            other => other,
        }
    }

    /// Busy/locked databases and lost connections pass; constraint violations do not.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Db(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(d) => {
                    let m = d.message().to_ascii_lowercase();
                    m.contains("locked")
                        || m.contains("busy")
                        || d.code().as_deref() == Some("40001")
                }
                _ => false,
            },
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool of whichever backend is in use.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Pool,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Connections a process opens unless configured (`database.max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// SQLite has one writer at a time: more pooled connections than this only queue on its lock
/// (and each keeps its own page cache).
const SQLITE_MAX_CONNECTIONS: u32 = 8;

impl Store {
    /// Opens (creating if needed) the database at `url` and runs both migration sets. A
    /// failure to connect is [`StoreError::Connect`]: its text never holds the password.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`Store::connect`] with a pool of at most `max_connections` (`database.max_connections`):
    /// every worker process holds up to that many, and the server refuses clients past its own
    /// limit, so the operator sizes it to the number of processes sharing the database.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Store::open(url, max_connections.max(1))
            .await
            .map_err(|e| StoreError::connect(url, e))
    }

    async fn open(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // apalis' setup turns synchronous OFF; money needs NORMAL (with WAL) at least.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                // SQLite's default page cache (2 MB) per connection, made explicit: memory
                // stays bounded however large a batch is (bulk intake appends to its indexes,
                // so a bigger cache buys little).
                .pragma("cache_size", "-2000")
                .foreign_keys(true);
            if let Some(parent) = std::path::Path::new(opts.get_filename()).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
            }
            // One process at a time creates, switches to WAL and migrates the file.
            let lock = migrate_lock::SetupLock::sqlite(opts.get_filename()).await?;
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.min(SQLITE_MAX_CONNECTIONS))
                .connect_with(opts.clone())
                .await?;
            let setup = Store {
                pool: Pool::Sqlite(pool),
            };
            setup.migrate().await?;
            // apalis' setup sets PRAGMAs on whichever connection ran it (synchronous OFF, a
            // 256 MB page cache, in-memory temp tables): no connection that ran it serves us.
            setup.close().await;
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.min(SQLITE_MAX_CONNECTIONS))
                .connect_with(opts)
                .await?;
            lock.release().await?;
            Ok(Store {
                pool: Pool::Sqlite(pool),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts.clone())
                .await?;
            // One process at a time sets the database up (see `migrate_lock`).
            let lock = migrate_lock::SetupLock::postgres(&opts).await?;
            let store = Store {
                pool: Pool::Postgres(pool),
            };
            store.migrate().await?;
            lock.release().await?;
            Ok(store)
        } else {
            Err(StoreError::BadUrl(redact_url(url)))
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                // apalis first (its tables); its connection PRAGMAs are discarded by `connect`.
                apalis_sqlite::SqliteStorage::setup(p)
                    .await
                    .map_err(|e| StoreError::Corrupt(format!("apalis setup: {e}")))?;
                let mut m = sqlx::migrate!("./migrations/sqlite");
                m.dangerous_set_table_name("_payrun_migrations");
                m.run(p).await?;
            }
            Pool::Postgres(p) => {
                sqlx::query("CREATE EXTENSION IF NOT EXISTS hstore")
                    .execute(p)
                    .await?;
                apalis_postgres::PostgresStorage::setup(p)
                    .await
                    .map_err(|e| StoreError::Corrupt(format!("apalis setup: {e}")))?;
                let mut m = sqlx::migrate!("./migrations/postgres");
                m.dangerous_set_table_name("_payrun_migrations");
                m.run(p).await?;
            }
        }
        Ok(())
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub async fn close(&self) {
        on_pool!(&self.pool, p => p.close().await)
    }
}
