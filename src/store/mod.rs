//! The SQLite state store: referral snapshots, CRM links, cursors, the outbox,
//! failures, run history, per-referral events and a small key-value table.
//!
//! WAL journal with `synchronous=FULL`: a transaction that returned is on disk.
//! Every multi-row change goes through [`Store::write`], one transaction.
//! A command that writes holds the store's [`StoreLock`] first (one writer
//! per store).

mod cursors;
mod cycle_changes;
mod events;
mod failures;
mod kv;
mod links;
mod lock;
mod models;
mod outbox;
mod packed;
mod referrals;
mod repo;
mod runs;
mod schema;
mod status;
mod tenant;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

pub use lock::{Holder, LockError, StoreLock, lock_path};
pub use models::*;
pub use repo::Repo;
pub use tenant::{PartnerCenterOrganization, RecordedTenant, TenantIdentity};
pub use tokens::StoredRefreshToken;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = schema::MIGRATIONS.len() as i64;

/// The SQLite error is part of each message, so it is not also a `source()`
/// (a chain printer would say it twice).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store {path}: {cause}")]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },
    #[error(
        "the state store {path} has schema version {found}, newer than this build's {supported}: upgrade cosell-sync"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("migration to schema version {version} failed: {cause}")]
    Migration {
        version: i64,
        cause: rusqlite::Error,
    },
    #[error("{what} already exists: {detail}")]
    Duplicate { what: &'static str, detail: String },
    #[error("{what} {key} not found")]
    NotFound { what: &'static str, key: String },
    #[error("stored {what} is unreadable: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("state store error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl StoreError {
    /// What an operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            StoreError::Open { .. } => {
                "check that state.path points to a writable directory (systemd: StateDirectory=)"
            }
            StoreError::TooNew { .. } => {
                "run the newer cosell-sync that wrote this file, or restore a backup"
            }
            StoreError::Migration { .. } | StoreError::Corrupt { .. } => {
                "keep a copy of the state file and report the problem; restoring a backup also works"
            }
            StoreError::Duplicate { .. } => "this is a bug in cosell-sync's bookkeeping; report it",
            StoreError::NotFound { .. } => "check the id (see `cosell-sync referrals list`)",
            StoreError::Sqlite(_) => "check disk space and permissions of the state file",
        }
    }
}

/// Turns a constraint violation into a typed duplicate error.
pub(crate) fn classify(e: rusqlite::Error, what: &'static str) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        return StoreError::Duplicate {
            what,
            detail: msg.clone().unwrap_or_else(|| f.to_string()),
        };
    }
    StoreError::Sqlite(e)
}

/// Timestamps are stored as fixed-width RFC 3339 UTC text, so they sort.
pub fn ts(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what: "timestamp",
            detail: format!("{s:?}: {e}"),
        })
}

/// The state store. Cheap to share behind an `Arc`; calls serialize on one
/// connection, which is what SQLite does for writers anyway.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// SQLite's page cache, in KiB (its default is 2,000). At 1 MiB a backfill
/// of new Dataverse customers peaked about 2 MiB lower, for about two more
/// page reads per referral from the OS's cache at 100,000 (BENCHMARKS.md).
pub(crate) const PAGE_CACHE_KIB: i64 = 1024;

impl Store {
    /// Opens (creating if needed) and migrates the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |cause| StoreError::Open {
            path: path.to_path_buf(),
            cause,
        };
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                open_err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot create {}: {e}", dir.display())),
                ))
            })?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        Self::configure(&conn).map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        let store = Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store without creating or migrating it (read-only
    /// commands on a missing file should not create one).
    pub fn open_existing(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        Store::open(path).map(Some)
    }

    fn configure(conn: &Connection) -> rusqlite::Result<()> {
        const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Switching a new file to WAL answers "database is locked" at once,
        // without the busy handler, while another connection is switching it
        // too (a read-only command opening the file the service just made).
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("journal_mode is {mode}, WAL is required")),
            ));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)?;
        // Plans do not depend on bound values: a cached statement is not
        // prepared again each time it is bound to new values (the bundled
        // SQLite is built with STAT4, which otherwise re-plans the outbox
        // queries on every call).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        packed::register_sql_function(conn)?;
        Ok(())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let too_new = |found| StoreError::TooNew {
            path: self.path.clone(),
            found,
            supported: SCHEMA_VERSION,
        };
        let mut current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        while current != SCHEMA_VERSION {
            if current > SCHEMA_VERSION {
                return Err(too_new(current));
            }
            let version = current + 1;
            let migration_err = |cause| StoreError::Migration { version, cause };
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Exclusive)
                .map_err(migration_err)?;
            // Read again inside the write transaction: another process (a
            // read-only command takes no writer lock) may have migrated the
            // file since; then this transaction changes nothing.
            let now_at: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(migration_err)?;
            if now_at != current {
                current = now_at;
                continue;
            }
            let sql = usize::try_from(current)
                .ok()
                .and_then(|i| schema::MIGRATIONS.get(i))
                .ok_or(StoreError::Corrupt {
                    what: "schema version",
                    detail: current.to_string(),
                })?;
            tx.execute_batch(sql)
                .and_then(|_| tx.pragma_update(None, "user_version", version))
                .and_then(|_| tx.commit())
                .map_err(migration_err)?;
            tracing::info!(version, "state store migrated");
            current = version;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        #[cfg(test)]
        worker_probe::touch();
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (an open transaction rolls back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Reads without a transaction.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Repo<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.lock();
        f(&Repo::new(&conn))
    }

    /// Runs `f` in one IMMEDIATE transaction: all of its changes commit
    /// together, or none do (an error rolls everything back).
    pub fn write<T>(
        &self,
        f: impl FnOnce(&Repo<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&Repo::new(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    /// Checks that the store accepts writes (for readiness probes).
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.write(|r| r.kv_set("health.last_check", &ts(Utc::now()), Utc::now()))
    }
}

/// Test instrumentation: a thread marked as an async worker counts every
/// store access made on it. The engine's tests run on a current-thread
/// runtime, whose only async worker is the test's own thread; the blocking
/// pool's threads are others. (`Handle::try_current()` cannot tell the two
/// apart: the blocking pool's threads are inside the runtime's context too.)
#[cfg(test)]
pub(crate) mod worker_probe {
    use std::cell::Cell;

    thread_local! {
        static MARKED: Cell<bool> = const { Cell::new(false) };
        static HITS: Cell<usize> = const { Cell::new(0) };
    }

    /// Marks this thread as an async worker until the guard drops.
    pub(crate) fn mark_this_thread() -> Marked {
        MARKED.with(|m| m.set(true));
        HITS.with(|h| h.set(0));
        Marked(())
    }

    /// Store accesses made on this thread while it was marked.
    pub(crate) fn hits_on_this_thread() -> usize {
        HITS.with(Cell::get)
    }

    pub(super) fn touch() {
        if MARKED.with(Cell::get) {
            HITS.with(|h| h.set(h.get() + 1));
        }
    }

    pub(crate) struct Marked(());

    impl Drop for Marked {
        fn drop(&mut self) {
            MARKED.with(|m| m.set(false));
        }
    }
}

#[cfg(test)]
mod tests;
