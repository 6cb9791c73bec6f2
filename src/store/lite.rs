//! SQLite reads on the calling thread.
//!
//! sqlx runs each SQLite connection on a thread of its own: every statement sent through it is a
//! message to that thread and a wake-up back, two thread switches that cost more than the
//! statement. The reads every request makes (its account, the order, authorization or challenge
//! it names, the workers' next due time) take microseconds of SQLite, so they run here, on the
//! task's own thread, on connections opened read-only. Writes stay on the writer connection;
//! WAL lets these readers see each commit as soon as it is made.

use std::{path::PathBuf, sync::Mutex, time::Duration};

use rusqlite::{Connection, OpenFlags, Params, Row};

use super::{
    CHALLENGES_OF_AUTHZ, Result,
    rows::{RawAuthz, RawChallenge},
};

/// Idle connections kept for reuse; more are opened when more threads read at once.
const IDLE: usize = 8;

/// Read-only connections to one SQLite file.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Readers {
    /// Readers of the database file at `path` (which the writer has created and migrated).
    pub(super) fn open(path: PathBuf) -> Result<Self> {
        let readers = Self { path, idle: Mutex::new(Vec::new()) };
        // Fail at start-up, not at the first request, when the file cannot be opened.
        let conn = readers.connect()?;
        readers.put(conn);
        Ok(readers)
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        // A reader waits only while a checkpoint resets the WAL, which is rare and short.
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn take(&self) -> Result<Connection> {
        match self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE {
            idle.push(conn);
        }
    }

    /// Runs `f` on an idle connection (one read transaction per statement, as autocommit does).
    fn with<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R> {
        let conn = self.take()?;
        let out = f(&conn);
        self.put(conn);
        Ok(out?)
    }

    /// The first row of `sql`, mapped, if any.
    pub(super) fn optional<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params)?;
            rows.next()?.map(map).transpose()
        })
    }

    /// Every row of `sql`, mapped.
    pub(super) fn all<T>(
        &self,
        sql: &str,
        params: impl Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(params, map)?;
            rows.collect()
        })
    }

    /// The authorization `authz_sql` selects (by the one parameter `key`) with its challenges, in
    /// one read transaction.
    pub(super) fn authz(&self, authz_sql: &str, key: &str) -> Result<Option<(RawAuthz, Vec<RawChallenge>)>> {
        self.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            let authz = {
                let mut stmt = tx.prepare_cached(authz_sql)?;
                let mut rows = stmt.query([key])?;
                rows.next()?.map(RawAuthz::from_lite).transpose()?
            };
            let Some(authz) = authz else {
                return Ok(None);
            };
            let challs = {
                let mut stmt = tx.prepare_cached(CHALLENGES_OF_AUTHZ)?;
                let rows = stmt.query_map([authz.id()], RawChallenge::from_lite)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            Ok(Some((authz, challs)))
        })
    }
}
