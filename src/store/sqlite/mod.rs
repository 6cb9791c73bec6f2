//! The SQLite backend: one file (or one private in-memory database, for tests), every statement
//! through rusqlite on vacme's own threads (conn.rs). Each aggregate's statements are in its own
//! file; all of them run through `read` or `write` below.

mod accounts;
mod admin;
mod audit;
mod certificates;
mod conn;
mod issuance;
mod limits;
mod migrate;
mod nonces;
mod orders;
#[cfg(test)]
pub(super) mod plan;
mod upkeep;

use std::{path::PathBuf, sync::Arc};

use rusqlite::{Connection, OpenFlags};

use conn::{execute, one, optional, query, snapshot};

use super::{Result, StoreError};

/// A SQLite store.
#[derive(Clone, Debug)]
pub(super) struct Sqlite {
    writer: Arc<conn::Writer>,
    /// `None` for an in-memory database, which only the writer's connection can see.
    readers: Option<Arc<conn::Readers>>,
}

impl Sqlite {
    /// Opens (creating if missing) and migrates the file a `sqlite:` URL names.
    pub(super) async fn open(url: &str, durable: bool) -> Result<Self> {
        let path = path_of(url)?;
        if path.as_os_str() == ":memory:" {
            return Self::memory().await;
        }
        tokio::task::spawn_blocking(move || {
            let mut conn = conn::open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            migrate::run(&mut conn)?;
            let readers = Some(Arc::new(conn::Readers::open(path)?));
            Ok(Self { writer: Arc::new(conn::Writer::start(conn)?), readers })
        })
        .await
        .map_err(|e| StoreError::Sqlite(format!("opening the database did not finish: {e}")))?
    }

    /// A private in-memory database.
    pub(super) async fn memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate::run(&mut conn)?;
        Ok(Self { writer: Arc::new(conn::Writer::start(conn)?), readers: None })
    }

    /// Runs `f` on a reader (a blocking thread), or on the writer for an in-memory database.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        match &self.readers {
            Some(readers) => readers.run(f).await,
            None => self.writer.run(f).await,
        }
    }

    /// Runs `f` in the writer thread's next transaction.
    async fn write<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        self.writer.run(f).await
    }

    /// Moves what the WAL holds into the database file.
    pub(super) async fn close(&self) {
        let _ = self.writer.run_alone(|c| Ok(c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?)).await;
    }

    /// `VACUUM INTO path`: a consistent copy, taken while writes go on.
    pub(super) async fn backup_to(&self, path: PathBuf) -> Result<()> {
        let vacuum = move |c: &Connection| {
            c.execute("VACUUM INTO ?1", [path.display().to_string()])?;
            Ok(())
        };
        match &self.readers {
            Some(readers) => readers.run(vacuum).await,
            None => self.writer.run_alone(vacuum).await,
        }
    }

    /// Every row of `table`, in insertion order, as SQLite values (copy-store).
    pub(super) async fn dump(&self, table: &'static str) -> Result<(Vec<String>, Vec<Vec<rusqlite::types::Value>>)> {
        self.read(move |c| {
            let mut stmt = c.prepare(&format!("{FULL_LISTING} SELECT * FROM {table} ORDER BY rowid"))?;
            let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
            let n = columns.len();
            let rows = stmt
                .query_map([], |r| (0..n).map(|i| r.get::<_, rusqlite::types::Value>(i)).collect())?
                .collect::<rusqlite::Result<Vec<Vec<_>>>>()?;
            Ok((columns, rows))
        })
        .await
    }
}

/// The prefix that marks a statement as reading every row on purpose (see plan.rs).
pub(super) const FULL_LISTING: &str = "/* full listing */";

/// The file a `sqlite:` URL names (`sqlite://FILE`, `sqlite:FILE`, `sqlite::memory:`), without
/// its query string.
fn path_of(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Refused(format!("not a sqlite: or postgres: URL: {url}")))?;
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    if path.is_empty() {
        return Err(StoreError::Refused(format!("no file in the database URL {url}")));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_file() {
        assert_eq!(path_of("sqlite://vacme-data/vacme.db").unwrap(), PathBuf::from("vacme-data/vacme.db"));
        assert_eq!(
            path_of("sqlite:///var/lib/vacme/vacme.db?mode=rwc").unwrap(),
            PathBuf::from("/var/lib/vacme/vacme.db")
        );
        assert_eq!(path_of("sqlite::memory:").unwrap(), PathBuf::from(":memory:"));
        assert!(path_of("sqlite://").is_err());
        assert!(path_of("mysql://x").is_err());
    }
}
