//! SQLite on threads vacme drives itself, never on a tokio worker.
//!
//! - `Writer`: every write runs on one writer thread, as a job. The thread takes every job
//!   waiting, runs each in a savepoint of one transaction, commits once, and only then answers
//!   them: one thread hop per job, and one fsync for all of them (group commit). A job that fails
//!   is rolled back to its savepoint alone. An in-memory database has only this connection, so
//!   its reads run here too.
//! - `Readers`: reads run on tokio's blocking threads, each on a read-only connection taken from
//!   a small pool and put back with its statement cache. WAL lets them see each commit as soon as
//!   it is made; a reader waits only while a checkpoint resets the WAL.
//!
//! Statements name their parameters `$1`, `$2`, ... as PostgreSQL does, so a statement both
//! backends run can be one constant.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, Row, Statement, ToSql};

use crate::store::{Result, StoreError};

/// How long a connection waits for a lock another process (the admin CLI) holds.
const BUSY: Duration = Duration::from_secs(10);

/// Prepared statements each connection keeps.
const STATEMENTS: usize = 96;

/// Opens a connection with vacme's settings.
pub(super) fn open(path: &Path, mode: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI)?;
    conn.busy_timeout(BUSY)?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS);
    Ok(conn)
}

/// Runs a statement that writes; the number of rows it changed.
pub(super) fn execute(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> Result<usize> {
    let mut stmt = prepare(conn, sql)?;
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
    let mut stmt = prepare(conn, sql)?;
    bind(&mut stmt, args)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// The first row of a statement, mapped, if any.
pub(super) fn optional<T>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
    mut map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    let mut stmt = prepare(conn, sql)?;
    bind(&mut stmt, args)?;
    let mut rows = stmt.raw_query();
    Ok(match rows.next()? {
        Some(row) => Some(map(row)?),
        None => None,
    })
}

/// The one row of a statement that always returns one (an aggregate).
pub(super) fn one<T>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<T> {
    optional(conn, sql, args, map)?.ok_or(StoreError::Lite(rusqlite::Error::QueryReturnedNoRows))
}

/// A statement from the connection's cache (parsing it costs more than running most of them).
/// In the store's own tests, each statement's plan is checked the first time it is prepared
/// (`plan::check`).
fn prepare<'c>(conn: &'c Connection, sql: &str) -> Result<rusqlite::CachedStatement<'c>> {
    #[cfg(test)]
    super::plan::check(conn, sql)?;
    Ok(conn.prepare_cached(sql)?)
}

/// Binds `args` to `stmt` by the `$N` names in its SQL: `$N` is `args[N - 1]`, wherever and
/// however often it appears. (SQLite numbers named parameters by first appearance, so binding by
/// position would put `$2` first in `... $2 ... $1`.)
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

/// A transaction control statement, prepared once per connection.
fn control(conn: &Connection, sql: &str) -> std::result::Result<(), String> {
    conn.prepare_cached(sql).and_then(|mut stmt| stmt.raw_execute()).map(drop).map_err(|e| e.to_string())
}

/// Runs `f` inside one read transaction, so that the statements it runs see one snapshot.
pub(super) fn snapshot<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    if !conn.is_autocommit() {
        // Already inside the writer's transaction: that is one snapshot.
        return f(conn);
    }
    control(conn, "BEGIN").map_err(StoreError::Sqlite)?;
    let out = f(conn);
    // A read transaction has nothing to keep: ending it cannot lose anything.
    let _ = control(conn, "COMMIT");
    out
}

/// Idle reader connections kept for reuse; more are opened when more threads read at once.
const IDLE: usize = 8;

/// Read-only connections to one SQLite file, used on blocking threads.
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

    /// Runs `f` on an idle connection, on a blocking thread.
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let out = catch_unwind(AssertUnwindSafe(|| f(&conn)))
                .unwrap_or_else(|_| Err(StoreError::Sqlite("a read panicked".into())));
            readers.put(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Sqlite(format!("a read did not finish: {e}")))?
    }
}

/// Jobs one transaction takes at most: a bound on how long the first waits for the last.
const BATCH: usize = 64;

/// A job runs its statements (given a connection; `None` when its transaction has already
/// failed) and says whether they stand (`true`), and how to answer its caller once the
/// transaction's fate is known (`Some(error)` when it failed).
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Answer) + Send>;
type Answer = Box<dyn FnOnce(Option<String>) + Send>;

/// What the writer thread is asked to do: a job in the next transaction, or work that must run
/// outside any transaction (a checkpoint, `VACUUM INTO`).
enum Work {
    Tx(Job),
    Alone(Box<dyn FnOnce(&Connection) + Send>),
}

/// The writer thread's queue.
pub(super) struct Writer {
    jobs: mpsc::Sender<Work>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread on `conn` (opened read-write and migrated). The thread ends when
    /// the last `Writer` is dropped, closing the connection (which checkpoints the WAL).
    pub(super) fn start(conn: Connection) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("vacme-sqlite-writer".into())
            .spawn(move || run(conn, queue))
            .map_err(|e| StoreError::Refused(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `f` in the next transaction and returns its result once that transaction is
    /// committed (or `f`'s error, with its statements undone).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_or_undo(move |conn| f(conn).map(|out| (out, true))).await
    }

    /// As `run`, for a job that decides itself whether its statements stand: `f` returns
    /// `(result, false)` to have them undone and still answer `result`.
    pub(super) async fn run_or_undo<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<(T, bool)> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let out = conn.map(|conn| {
                catch_unwind(AssertUnwindSafe(|| f(conn)))
                    .unwrap_or_else(|_| Err(StoreError::Sqlite("a write job panicked".into())))
            });
            let stands = matches!(out, Some(Ok((_, true))));
            let out = out.map(|out| out.map(|(out, _)| out));
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
        self.jobs.send(Work::Tx(job)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs `f` on the writer's connection between two transactions.
    pub(super) async fn run_alone<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let work = Work::Alone(Box::new(move |conn| {
            let out = catch_unwind(AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(StoreError::Sqlite("a write job panicked".into())));
            let _ = tx.send(out);
        }));
        self.jobs.send(work).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Sqlite("the SQLite writer thread has stopped".into())
}

/// The writer thread: a transaction per batch of waiting jobs, each job in a savepoint.
fn run(conn: Connection, queue: mpsc::Receiver<Work>) {
    while let Ok(first) = queue.recv() {
        let first = match first {
            Work::Tx(job) => job,
            Work::Alone(f) => {
                f(&conn);
                continue;
            }
        };
        let mut batch = vec![first];
        let mut after = None;
        while batch.len() < BATCH
            && let Ok(work) = queue.try_recv()
        {
            match work {
                Work::Tx(job) => batch.push(job),
                Work::Alone(f) => {
                    after = Some(f);
                    break;
                }
            }
        }
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
        if let Some(why) = &failed {
            tracing::error!(error = %why, "SQLite write transaction failed; its jobs are answered with the error");
        }
        for answer in answers {
            answer(failed.clone());
        }
        if let Some(f) = after {
            f(&conn);
        }
    }
}
