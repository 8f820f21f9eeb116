//! One process at a time sets up a database: the locks `Store::connect` holds while apalis'
//! setup and our migrations run.
//!
//! Why: sqlx's migrator reads which migrations are applied, then applies the rest, each in its
//! own transaction; two processes starting together on a fresh database both see nothing
//! applied and the second fails half-way (a duplicate column, a missing index, or on
//! PostgreSQL a duplicate `CREATE EXTENSION`). Serialized, the second finds everything applied.
//!
//! - PostgreSQL: a session advisory lock (`pg_advisory_lock`, scoped to the database) on a
//!   dedicated connection outside the pool, so the pool's connections run the migrations
//!   while it is held. (sqlx's migrator takes its own advisory lock with another key, only
//!   around its own run; apalis' setup and the `hstore` extension are outside it.)
//! - SQLite: an exclusive file lock (`flock`) on `<database>-setup.lock` next to the database
//!   file, held from before the first connection (which may create the file and switch it to
//!   WAL) to after the migrations. A SQLite lock cannot serve: an exclusive transaction on one
//!   connection would block the pool's own connections that run the migrations. The lock file
//!   is separate because opening and closing the database file itself would drop SQLite's
//!   own POSIX locks held in this process. An in-memory database needs no lock.

use std::fs::{File, OpenOptions};
use std::path::Path;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};

use super::StoreError;

/// The advisory lock key ("payrunmg" in ASCII); sqlx's migrator uses a key derived from the
/// database name, so the two never collide in practice.
const PG_SETUP_KEY: i64 = 0x7061_7972_756e_6d67;

/// Held while a database is set up; dropping it releases the lock.
pub(super) enum SetupLock {
    Postgres(PgConnection),
    Sqlite(#[allow(dead_code)] File),
    None,
}

impl SetupLock {
    /// Waits for the PostgreSQL database's setup lock.
    pub(super) async fn postgres(opts: &PgConnectOptions) -> Result<SetupLock, StoreError> {
        let mut conn = PgConnection::connect_with(opts).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(PG_SETUP_KEY)
            .execute(&mut conn)
            .await?;
        Ok(SetupLock::Postgres(conn))
    }

    /// Waits for the SQLite database file's setup lock (none for an in-memory database).
    pub(super) async fn sqlite(db_file: &Path) -> Result<SetupLock, StoreError> {
        let name = db_file.as_os_str();
        if name.is_empty() || name == ":memory:" {
            return Ok(SetupLock::None);
        }
        let mut lock_path = name.to_owned();
        lock_path.push("-setup.lock");
        let file = tokio::task::spawn_blocking(move || {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            f.lock()?;
            Ok::<_, std::io::Error>(f)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("waiting for the setup lock: {e}")))?
        .map_err(sqlx::Error::Io)?;
        Ok(SetupLock::Sqlite(file))
    }

    /// Releases the lock (also released if the process dies: the session or file closes).
    pub(super) async fn release(self) -> Result<(), StoreError> {
        if let SetupLock::Postgres(mut conn) = self {
            conn.execute(sqlx::query("SELECT pg_advisory_unlock($1)").bind(PG_SETUP_KEY))
                .await?;
            conn.close().await?;
        }
        Ok(())
    }
}
