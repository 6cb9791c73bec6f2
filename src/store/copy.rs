//! `vacme copy-store URL`: every row of a SQLite store into an empty PostgreSQL store, for the move
//! from one vacme to several replicas (docs/operations.md). Tables go parents first, each in its
//! insertion order, in one PostgreSQL transaction: an error leaves the target empty.

use rusqlite::types::Value;

use super::{Backend, Result, Store, StoreError};

/// Parents before children (foreign keys). Nonces are not copied: clients get fresh ones.
/// (`totals` is not either: the target's triggers count the copied rows.)
const TABLES: &[&str] = &[
    "accounts",
    "eab_keys",
    "orders",
    "authorizations",
    "challenges",
    "certificates",
    "validation_pauses",
    "audit_events",
    "webhook_cursors",
    "rejected_certificates",
];

/// Rows copied, per table.
pub type CopyReport = Vec<(&'static str, u64)>;

impl Store {
    /// Copies this (SQLite) store into `target` (PostgreSQL, migrated and empty).
    pub async fn copy_to(&self, target: &Store) -> Result<CopyReport> {
        let (Backend::Sqlite(from), Backend::Postgres(to)) = (&self.db, &target.db) else {
            return Err(StoreError::Refused("copy-store copies a SQLite store into a PostgreSQL one".into()));
        };
        let mut tx = to.pool().begin().await?;
        let mut report = Vec::new();
        for table in TABLES {
            let present: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut *tx).await?;
            if present > 0 {
                return Err(StoreError::Refused(format!("the target is not empty: {table} has {present} rows")));
            }
            // The target's column types decide each value's type (SQLite keeps booleans as 0/1).
            let types: Vec<(String, String)> = sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table)
            .fetch_all(&mut *tx)
            .await?;
            let (columns, rows) = from.dump(table).await?;
            let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
            let sql = format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), placeholders.join(", "));
            for row in &rows {
                let mut insert = sqlx::query(&sql);
                for (column, value) in columns.iter().zip(row) {
                    let target_type = types.iter().find(|(n, _)| n == column).map_or("", |(_, t)| t.as_str());
                    insert = match (target_type, value) {
                        ("boolean", Value::Integer(v)) => insert.bind(Some(*v != 0)),
                        ("boolean", _) => insert.bind(None::<bool>),
                        (_, Value::Blob(v)) => insert.bind(Some(v.clone())),
                        ("bytea", _) => insert.bind(None::<Vec<u8>>),
                        ("bigint" | "integer", Value::Integer(v)) => insert.bind(Some(*v)),
                        ("bigint" | "integer", _) => insert.bind(None::<i64>),
                        (_, Value::Text(v)) => insert.bind(Some(v.clone())),
                        (_, Value::Integer(v)) => insert.bind(Some(v.to_string())),
                        (_, Value::Real(v)) => insert.bind(Some(v.to_string())),
                        (_, Value::Null) => insert.bind(None::<String>),
                    };
                }
                insert.execute(&mut *tx).await?;
            }
            report.push((*table, rows.len() as u64));
        }
        // Identity columns continue after the copied rows.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), COALESCE((SELECT MAX(id) FROM audit_events), 0) + 1, false)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(report)
    }
}
