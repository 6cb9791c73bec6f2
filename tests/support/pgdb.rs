//! A PostgreSQL database of a test's own, on the server `VACME_TEST_POSTGRES_URL` names (an
//! administrator's URL; scripts/postgres starts one). Unset, the test says SKIPPED and passes.

use std::io::Write;

use sqlx::{Connection, Executor, PgConnection};

pub const ENV: &str = "VACME_TEST_POSTGRES_URL";

/// A database of this test's own on the test server.
pub struct Database {
    admin: String,
    name: String,
    /// What vacme's `database.url` is set to.
    pub url: String,
}

impl Database {
    /// A new empty database, or `None` after a loud note naming `test`.
    pub async fn create(test: &str) -> Option<Self> {
        let Ok(admin) = std::env::var(ENV) else {
            // Straight to stderr: the harness captures `eprintln!` of passing tests.
            let _ = writeln!(std::io::stderr(), "SKIPPED (no {ENV}): {test}");
            return None;
        };
        let name = format!("vacme_it_{}", hex(&rand_bytes()));
        let mut conn = PgConnection::connect(&admin).await.unwrap();
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        conn.close().await.unwrap();
        let (base, query) = admin.split_once('?').map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let authority_end = base.find("://").map_or(0, |i| i + 3);
        let authority_end = base[authority_end..].find('/').map_or(base.len(), |i| authority_end + i);
        let url = format!("{}/{name}{}", &base[..authority_end], query.map(|q| format!("?{q}")).unwrap_or_default());
        Some(Self { admin, name, url })
    }

    pub async fn drop(self) {
        let mut conn = PgConnection::connect(&self.admin).await.unwrap();
        conn.execute(format!("DROP DATABASE {} WITH (FORCE)", self.name).as_str()).await.unwrap();
        conn.close().await.unwrap();
    }
}

fn rand_bytes() -> [u8; 8] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
