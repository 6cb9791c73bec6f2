//! The store tests' PostgreSQL: a fresh database per test on the server that
//! `VACME_TEST_POSTGRES_URL` names (an administrator's URL; scripts/postgres starts one). Unset,
//! the PostgreSQL variants say so on stderr and pass.

use std::io::Write;

use ring::rand::{SecureRandom, SystemRandom};
use sqlx::{Connection, Executor, PgConnection};

pub const ENV: &str = "VACME_TEST_POSTGRES_URL";

/// A database of its own, dropped by `drop` (a failed test leaves it for the throwaway server).
pub struct TestDb {
    admin: String,
    name: String,
    /// The URL `Store::connect` opens.
    pub url: String,
}

impl TestDb {
    /// A new empty database, or `None` (after a loud note) without a server.
    pub async fn create(test: &str) -> Option<Self> {
        let Ok(admin) = std::env::var(ENV) else {
            skipped(test);
            return None;
        };
        let mut bytes = [0u8; 8];
        SystemRandom::new().fill(&mut bytes).unwrap();
        let name = format!("vacme_test_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let mut conn = PgConnection::connect(&admin).await.unwrap();
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        conn.close().await.unwrap();
        let url = with_database(&admin, &name);
        Some(Self { admin, name, url })
    }

    pub async fn drop(self) {
        let mut conn = PgConnection::connect(&self.admin).await.unwrap();
        conn.execute(format!("DROP DATABASE {} WITH (FORCE)", self.name).as_str()).await.unwrap();
        conn.close().await.unwrap();
    }
}

/// Says loudly that `test` did not run on PostgreSQL.
pub fn skipped(test: &str) {
    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED (no {ENV}): {test} on PostgreSQL");
}

/// `url` with its database (the path) replaced by `name`, query kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[after_scheme..].find('/').map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[test]
fn database_of_a_url_is_replaced() {
    assert_eq!(with_database("postgres://u@h:5/postgres", "x"), "postgres://u@h:5/x");
    assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
    assert_eq!(with_database("postgresql://h/db?sslmode=disable", "x"), "postgresql://h/x?sslmode=disable");
}
