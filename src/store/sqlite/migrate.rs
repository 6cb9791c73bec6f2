//! The SQLite schema's migrations (`migrations/sqlite/`), applied in order at start-up.
//!
//! They are recorded in `_sqlx_migrations`, the table earlier releases of vacme kept: the same
//! columns, and each migration's SHA-384 checksum of its file, so a database any release wrote
//! opens here, and one whose applied migrations were edited, or that a newer vacme migrated
//! further, is refused rather than half understood.

use std::time::Instant;

use ring::digest::{SHA384, digest};
use rusqlite::Connection;

use crate::store::{Result, StoreError};

/// A migration: its version, its description (the file name after the version, with spaces for
/// underscores) and its SQL.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

macro_rules! migrations {
    ($($version:literal $file:literal $description:literal),* $(,)?) => {
        &[$(Migration {
            version: $version,
            description: $description,
            sql: include_str!(concat!("../../../migrations/sqlite/", $file)),
        }),*]
    };
}

/// Every migration, oldest first (a test checks this against the directory).
const MIGRATIONS: &[Migration] = migrations![
    1 "0001_init.sql" "init",
    2 "0002_lifecycle.sql" "lifecycle",
    3 "0003_limits.sql" "limits",
    4 "0004_audit.sql" "audit",
    5 "0005_sign_intent.sql" "sign intent",
    6 "0006_rejected_certificates.sql" "rejected certificates",
    7 "0007_flat_cost.sql" "flat cost",
    8 "0008_renewal_state.sql" "renewal state",
    9 "0009_webhooks.sql" "webhooks",
];

const TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// Brings the database on `conn` up to the newest schema; each migration is one transaction.
pub(super) fn run(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(TABLE)?;
    let applied: Vec<(i64, bool, Vec<u8>)> = {
        let mut stmt = conn.prepare("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?
    };
    for (version, success, checksum) in &applied {
        let Some(known) = MIGRATIONS.iter().find(|m| m.version == *version) else {
            return Err(refused(format!(
                "the database has migration {version}, which this vacme does not know: it was made by a newer release"
            )));
        };
        if !success {
            return Err(refused(format!("migration {version} did not finish; restore the database from a backup")));
        }
        if checksum.as_slice() != digest(&SHA384, known.sql.as_bytes()).as_ref() {
            return Err(refused(format!("migration {version} was changed after it was applied to this database")));
        }
    }
    for m in MIGRATIONS.iter().filter(|m| applied.iter().all(|(v, ..)| *v != m.version)) {
        let start = Instant::now();
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql).map_err(|e| refused(format!("migration {} failed: {e}", m.version)))?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            rusqlite::params![
                m.version,
                m.description,
                digest(&SHA384, m.sql.as_bytes()).as_ref(),
                i64::try_from(start.elapsed().as_nanos()).unwrap_or(i64::MAX)
            ],
        )?;
        tx.commit()?;
    }
    Ok(())
}

fn refused(why: String) -> StoreError {
    StoreError::Migrate(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_directory_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), MIGRATIONS.len(), "a migration file is missing from MIGRATIONS");
        for (file, m) in files.iter().zip(MIGRATIONS) {
            let (version, rest) = file.split_once('_').unwrap();
            assert_eq!(version.parse::<i64>().unwrap(), m.version, "{file}");
            assert_eq!(rest.trim_end_matches(".sql").replace('_', " "), m.description, "{file}");
            assert_eq!(std::fs::read_to_string(format!("{dir}/{file}")).unwrap(), m.sql, "{file}");
        }
    }

    #[test]
    fn a_database_migrated_further_or_edited_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        run(&mut conn).unwrap();
        run(&mut conn).unwrap();
        conn.execute("UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 2", []).unwrap();
        assert!(run(&mut conn).unwrap_err().to_string().contains("migration 2 was changed"));
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = ?1 WHERE version = 2",
            [digest(&SHA384, MIGRATIONS[1].sql.as_bytes()).as_ref()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99, 'x', TRUE, x'00', 0)",
            [],
        )
        .unwrap();
        assert!(run(&mut conn).unwrap_err().to_string().contains("newer release"));
    }
}
