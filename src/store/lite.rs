//! SQLite on threads vacme drives itself, instead of through sqlx.
//!
//! sqlx runs each SQLite connection on a thread of its own: every statement sent through it is a
//! message to that thread and a wake-up back, two thread switches that cost more than the
//! statement. Here:
//!
//! - `Readers`: the reads every request makes (its account, the order, authorization or challenge
//!   it names, the workers' next due time) take microseconds of SQLite, so they run on the task's
//!   own thread, on connections opened read-only. WAL lets them see each commit as soon as it is
//!   made.
//! - `Writer`: the writes of the issuance path run on one writer thread, as jobs. The thread takes
//!   every job waiting, runs each in a savepoint of one transaction, commits once, and only then
//!   answers them: one thread hop per job instead of per statement, and one fsync for all of them
//!   (group commit). A job that fails is rolled back to its savepoint alone.
//!
//! Writes still made through sqlx take the same `gate` as the writer thread, so SQLite never sees
//! two writers at once (and no one sleeps in its busy handler).
//!
//! The price: each hot write is written twice, for the writer thread (rusqlite) and for sqlx
//! (PostgreSQL, and the in-memory SQLite of the tests), with the SQL text shared. The store tests
//! run both (`sqlite_file` and `sqlite`/`postgres`).

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::PathBuf,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, Row, Statement, ToSql};

use super::{
    CHALLENGES_OF_AUTHZ, Result, StoreError,
    rows::{RawAuthz, RawChallenge},
};

/// The lock every SQLite writer holds while it writes: sqlx's writer connection (in `on!`) and the
/// writer thread (for each batch).
pub(super) type Gate = Arc<tokio::sync::Mutex<()>>;

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
        // A reader waits only while a checkpoint resets the WAL, which is rare and short.
        open(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
    }

    fn take(&self) -> Result<Connection> {
        match self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn put(&self, conn: Connection) {
        if !conn.is_autocommit() {
            // A read transaction left open would pin an old snapshot: not worth keeping.
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE {
            idle.push(conn);
        }
    }

    /// Runs `f` on an idle connection (one read transaction per statement, as autocommit does).
    fn with<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let conn = self.take()?;
        let out = f(&conn);
        self.put(conn);
        out
    }

    /// The first row of `sql`, mapped, if any.
    pub(super) fn optional<T>(
        &self,
        sql: &str,
        args: &[&dyn ToSql],
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        self.with(|conn| Ok(query(conn, sql, args, map)?.into_iter().next()))
    }

    /// Every row of `sql`, mapped.
    pub(super) fn all<T>(
        &self,
        sql: &str,
        args: &[&dyn ToSql],
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.with(|conn| query(conn, sql, args, map))
    }

    /// The authorization `authz_sql` selects (by the one parameter `key`) with its challenges, in
    /// one read transaction.
    pub(super) fn authz(&self, authz_sql: &str, key: &str) -> Result<Option<(RawAuthz, Vec<RawChallenge>)>> {
        self.with(|conn| {
            control(conn, "BEGIN").map_err(StoreError::Sqlite)?;
            let read =
                query(conn, authz_sql, &[&key], RawAuthz::from_lite).and_then(|authz| match authz.into_iter().next() {
                    None => Ok(None),
                    Some(authz) => {
                        let challs = query(conn, CHALLENGES_OF_AUTHZ, &[&authz.id()], RawChallenge::from_lite)?;
                        Ok(Some((authz, challs)))
                    }
                });
            // A read transaction has nothing to keep: ending it cannot lose anything.
            let _ = control(conn, "COMMIT");
            read
        })
    }
}

/// Binds `args` to `stmt` by the `$N` names in its SQL, as sqlx does: `$N` is `args[N - 1]`,
/// wherever and however often it appears. (SQLite numbers named parameters by first appearance,
/// so binding by position would put `$2` first in `... $2 ... $1`.)
fn bind(stmt: &mut Statement<'_>, args: &[&dyn ToSql]) -> rusqlite::Result<()> {
    for i in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=args.len()).contains(n))
            .ok_or(rusqlite::Error::InvalidParameterCount(i, args.len()))?;
        stmt.raw_bind_parameter(i, args[n - 1])?;
    }
    Ok(())
}

/// Runs a statement that writes; the number of rows it changed.
pub(super) fn execute(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, args)?;
    Ok(stmt.raw_execute()?)
}

/// The rows of a statement, mapped.
pub(super) fn query<T>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
    mut map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, args)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// A transaction control statement, prepared once per connection (parsing it costs more than
/// running it).
fn control(conn: &Connection, sql: &str) -> std::result::Result<(), String> {
    conn.prepare_cached(sql).and_then(|mut stmt| stmt.raw_execute()).map(drop).map_err(|e| e.to_string())
}

fn open(path: &std::path::Path, mode: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Jobs one transaction takes at most: a bound on how long the first waits for the last.
const BATCH: usize = 64;

/// A job runs its statements (given a connection; `None` when its transaction has already
/// failed) and says whether they stand (`true`), and how to answer its caller once the
/// transaction's fate is known (`Some(error)` when it failed).
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Answer) + Send>;
type Answer = Box<dyn FnOnce(Option<String>) + Send>;

/// The writer thread's queue.
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread on the database file at `path` (created and migrated).
    /// `durable`: `synchronous=FULL`, else `NORMAL`. The thread ends when the last `Writer` is
    /// dropped.
    pub(super) fn start(path: PathBuf, durable: bool, gate: Gate) -> Result<Self> {
        let conn = open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("vacme-sqlite-writer".into())
            .spawn(move || run(conn, queue, gate))
            .map_err(|e| StoreError::Refused(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `f` in the next transaction and returns its result once that transaction is
    /// committed (or `f`'s error, with its statements undone).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let out = conn.map(|conn| {
                catch_unwind(AssertUnwindSafe(|| f(conn)))
                    .unwrap_or_else(|_| Err(StoreError::Sqlite("a write job panicked".into())))
            });
            let stands = matches!(out, Some(Ok(_)));
            let answer: Answer = Box::new(move |failed| {
                let _ = tx.send(match (out, failed) {
                    (Some(out), None) => out,
                    // Its own error says more than the transaction's.
                    (Some(Err(e)), Some(_)) => Err(e),
                    (_, Some(why)) => Err(StoreError::Sqlite(why)),
                    (None, None) => Err(StoreError::Sqlite("the write was not run".into())),
                });
            });
            (stands, answer)
        });
        self.jobs.send(job).map_err(|_| StoreError::Sqlite("the SQLite writer thread has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Sqlite("the SQLite writer thread has stopped".into()))?
    }
}

/// The writer thread: a transaction per batch of waiting jobs, each job in a savepoint.
fn run(conn: Connection, queue: mpsc::Receiver<Job>, gate: Gate) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH
            && let Ok(job) = queue.try_recv()
        {
            batch.push(job);
        }
        let held = gate.blocking_lock();
        let mut answers = Vec::with_capacity(batch.len());
        let mut failed = control(&conn, "BEGIN IMMEDIATE").err();
        for job in batch {
            if failed.is_none()
                && let Err(e) = control(&conn, "SAVEPOINT job")
            {
                failed = Some(e);
            }
            if failed.is_some() {
                // The transaction is gone: the rest are answered with its error, unrun.
                answers.push(job(None).1);
                continue;
            }
            let (stands, answer) = job(Some(&conn));
            let undo = if stands { Ok(()) } else { control(&conn, "ROLLBACK TO job") };
            if let Err(e) = undo.and_then(|()| control(&conn, "RELEASE job")) {
                failed = Some(e);
            }
            answers.push(answer);
        }
        if failed.is_none()
            && let Err(e) = control(&conn, "COMMIT")
        {
            failed = Some(e);
        }
        if failed.is_some() && !conn.is_autocommit() {
            let _ = control(&conn, "ROLLBACK");
        }
        drop(held);
        if let Some(why) = &failed {
            tracing::error!(error = %why, "SQLite write transaction failed; its jobs are answered with the error");
        }
        for answer in answers {
            answer(failed.clone());
        }
    }
}
