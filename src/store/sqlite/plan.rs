//! In the store's own tests: every statement the SQLite backend prepares is checked once with
//! `EXPLAIN QUERY PLAN`, and one that reads a whole table growing with use fails the test that
//! ran it. So a new query that scans (a missing index, a `NOT IN` the planner cannot turn into a
//! lookup) is caught by the suite that exercises it, not by a slow production store.
//!
//! Statements that list everything on purpose (the admin CLI's listings, copy-store) begin with
//! `FULL_LISTING`; they are not on a request or worker path.

use std::{collections::HashSet, sync::Mutex};

use rusqlite::Connection;

use crate::store::{GROWING, Result, StoreError};

use super::FULL_LISTING;

static CHECKED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// `Err` naming the table when `sql`'s plan scans a growing table.
pub(super) fn check(conn: &Connection, sql: &str) -> Result<()> {
    let head = sql.trim_start();
    let control = ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA", "VACUUM"];
    if head.starts_with(FULL_LISTING) || control.iter().any(|c| head.starts_with(c)) {
        return Ok(());
    }
    {
        let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
        if !checked.get_or_insert_with(HashSet::new).insert(sql.to_owned()) {
            return Ok(());
        }
    }
    let (scans, plan) = scans(conn, sql)?;
    if scans.is_empty() {
        return Ok(());
    }
    CHECKED.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashSet::new).remove(sql);
    Err(StoreError::Sqlite(format!("statement scans {}: {sql}\nplan: {}", scans.join(", "), plan.join(" | "))))
}

/// The growing tables `sql`'s plan reads in full (`SCAN <table>`, with or without an index), and
/// the plan.
pub(in crate::store) fn scans(conn: &Connection, sql: &str) -> Result<(Vec<String>, Vec<String>)> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    // Unbound parameters are NULL: the plan does not depend on their values.
    let mut rows = stmt.raw_query();
    let mut details: Vec<String> = Vec::new();
    while let Some(row) = rows.next()? {
        details.push(row.get(3)?);
    }
    // SQLite names a table by its alias when it has one: resolve aliases from the SQL itself.
    let words: Vec<&str> =
        sql.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')').filter(|w| !w.is_empty()).collect();
    let table_of = |name: &str| -> Option<&'static str> {
        if let Some(t) = GROWING.iter().find(|t| **t == name) {
            return Some(t);
        }
        words
            .windows(2)
            .find(|w| w[1] == name && GROWING.contains(&w[0]))
            .and_then(|w| GROWING.iter().find(|t| **t == w[0]).copied())
            .or_else(|| {
                words
                    .windows(3)
                    .find(|w| w[2] == name && w[1].eq_ignore_ascii_case("AS") && GROWING.contains(&w[0]))
                    .and_then(|w| GROWING.iter().find(|t| **t == w[0]).copied())
            })
    };
    // A scan of a partial index reads only the rows in its WHERE (those in flight), not the table.
    let partial = |index: &str| -> bool {
        conn.query_row("SELECT partial FROM pragma_index_list(tbl) JOIN (SELECT name AS tbl FROM sqlite_schema WHERE type = 'table') WHERE name = ?1", [index], |r| r.get::<_, bool>(0))
            .unwrap_or(false)
    };
    let scans = details
        .iter()
        .filter_map(|d| d.strip_prefix("SCAN "))
        .filter(|rest| !rest.split(" INDEX ").nth(1).is_some_and(|index| partial(index.trim())))
        .filter_map(|rest| table_of(rest.split_whitespace().next().unwrap_or("")))
        .map(str::to_owned)
        .collect();
    Ok((scans, details))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrate::run(&mut conn).unwrap();
        conn
    }

    #[test]
    fn a_scan_of_a_growing_table_is_caught_and_a_lookup_is_not() {
        let conn = migrated();
        let (found, plan) = super::scans(&conn, "SELECT * FROM orders WHERE identifiers = $1").unwrap();
        assert_eq!(found, vec!["orders"], "{plan:?}");
        let (found, plan) = super::scans(
            &conn,
            "SELECT c.id FROM challenges c JOIN authorizations a ON a.id = c.authz_id WHERE a.status = $1",
        )
        .unwrap();
        assert_eq!(found, vec!["authorizations"], "an alias is resolved to its table: {plan:?}");
        assert!(
            check(&conn, "SELECT * FROM certificates WHERE not_after < $1")
                .unwrap_err()
                .to_string()
                .contains("scans certificates")
        );
        // The serial's digits, a partial index of what is in flight, and a primary key.
        for sql in [
            "SELECT * FROM certificates WHERE ltrim(serial, '0') = ltrim($1, '0')",
            "SELECT COUNT(*) FROM orders WHERE status = 'processing'",
            "SELECT * FROM accounts WHERE id = $1",
        ] {
            let (found, plan) = super::scans(&conn, sql).unwrap();
            assert!(found.is_empty(), "{sql}: {plan:?}");
        }
        assert!(check(&conn, "/* full listing */ SELECT * FROM certificates").is_ok());
    }
}
