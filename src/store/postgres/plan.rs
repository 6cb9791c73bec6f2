//! In the store's tests on PostgreSQL: every statement of this backend (read from its source
//! files) is prepared and explained with sequential scans disabled; a plan that still reads a
//! growing table sequentially has no index to use, and fails the test. Statements that list
//! everything on purpose begin with `/* full listing */`, as on SQLite.

use sqlx::{Connection, Executor, PgConnection, Row};

use crate::store::{GROWING, testdb::TestDb};

const SOURCES: &[(&str, &str)] = &[
    ("accounts.rs", include_str!("accounts.rs")),
    ("audit.rs", include_str!("audit.rs")),
    ("certificates.rs", include_str!("certificates.rs")),
    ("issuance.rs", include_str!("issuance.rs")),
    ("limits.rs", include_str!("limits.rs")),
    ("mod.rs", include_str!("mod.rs")),
    ("nonces.rs", include_str!("nonces.rs")),
    ("orders.rs", include_str!("orders.rs")),
    ("upkeep.rs", include_str!("upkeep.rs")),
];

/// The SQL string literals of a source file, with `{table}` expanded for both queue tables and
/// `{STALE}` for its constant.
fn statements(source: &str) -> Vec<String> {
    let stale = literal_after(source, "const STALE: &str = ");
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        let text = &after[..end];
        rest = &after[end + 1..];
        let head = text.trim_start().trim_start_matches("/* full listing */").trim_start();
        let is_sql = ["SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WITH "].iter().any(|k| head.starts_with(k));
        if !is_sql || text.trim_start().starts_with("/* full listing */") || text.contains("pg_advisory_xact_lock") {
            continue;
        }
        let text = match &stale {
            Some(stale) => text.replace("{STALE}", stale),
            None => text.to_owned(),
        };
        if text.contains("{table}") {
            out.extend(["challenges", "orders"].map(|t| text.replace("{table}", t)));
        } else {
            out.push(text);
        }
    }
    out
}

fn literal_after(source: &str, marker: &str) -> Option<String> {
    let at = source.find(marker)? + marker.len();
    let body = source[at..].strip_prefix('"')?;
    Some(body[..body.find('"')?].to_owned())
}

/// How many parameters (`$N`) a statement takes.
fn parameters(sql: &str) -> usize {
    (1..=20).rev().find(|n| sql.contains(&format!("${n}"))).unwrap_or(0)
}

/// `PREPARE name AS sql`. sqlx sends each parameter's type with it; here a parameter whose type
/// the statement does not determine (`$1 IS NULL OR ...`) is given one: text, bigint or boolean,
/// whichever the statement takes.
async fn prepare(conn: &mut PgConnection, name: &str, sql: &str) -> Result<(), sqlx::Error> {
    const GUESSES: &[&str] = &["unknown", "text", "bigint", "boolean"];
    let mut types = vec![0usize; parameters(sql)];
    let mut last: Option<usize> = None;
    for _ in 0..4 * types.len().max(1) {
        let list = if types.is_empty() {
            String::new()
        } else {
            format!("({})", types.iter().map(|t| GUESSES[*t]).collect::<Vec<_>>().join(", "))
        };
        let err = match conn.execute(format!("PREPARE {name}{list} AS {sql}").as_str()).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let text = err.to_string();
        let undetermined = text
            .split("could not determine data type of parameter $")
            .nth(1)
            .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok());
        let param = match (undetermined, last) {
            (Some(n), _) => n - 1,
            // The last guess did not fit: try the next type for that parameter.
            (None, Some(i)) => i,
            (None, None) => return Err(err),
        };
        if types[param] + 1 >= GUESSES.len() {
            return Err(err);
        }
        types[param] += 1;
        last = Some(param);
    }
    Err(sqlx::Error::Protocol(format!("no parameter types fit {sql}")))
}

#[tokio::test]
async fn no_statement_scans_a_growing_table_on_postgres() {
    let Some(db) = TestDb::create("no_statement_scans_a_growing_table").await else { return };
    // Migrated, with the store's own schema.
    let store = crate::store::Store::connect(&db.url).await.unwrap();
    store.close().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute("SET enable_seqscan = off").await.unwrap();
    conn.execute("SET plan_cache_mode = force_generic_plan").await.unwrap();
    let mut checked = 0;
    let mut scans = Vec::new();
    for (file, source) in SOURCES {
        for (i, sql) in statements(source).into_iter().enumerate() {
            let name = format!("s{checked}_{i}");
            prepare(&mut conn, &name, &sql).await.unwrap_or_else(|e| panic!("{file}: cannot prepare {sql}: {e}"));
            let args = vec!["NULL"; parameters(&sql)].join(", ");
            let explain = if args.is_empty() {
                format!("EXPLAIN EXECUTE {name}")
            } else {
                format!("EXPLAIN EXECUTE {name}({args})")
            };
            let plan: Vec<String> =
                conn.fetch_all(explain.as_str()).await.unwrap().iter().map(|r| r.get::<String, _>(0)).collect();
            for table in GROWING {
                if plan.iter().any(|l| {
                    l.contains(&format!("Seq Scan on {table} "))
                        || plan.iter().any(|l| l.trim_end().ends_with(&format!("Seq Scan on {table}")))
                }) {
                    scans.push(format!("{file}: {table}: {sql}\n{}", plan.join("\n")));
                }
            }
            conn.execute(format!("DEALLOCATE {name}").as_str()).await.unwrap();
            checked += 1;
        }
    }
    // The check itself: a statement no index serves is seen.
    prepare(&mut conn, "bad", "SELECT * FROM orders WHERE identifiers = $1").await.unwrap();
    let plan: Vec<String> =
        conn.fetch_all("EXPLAIN EXECUTE bad(NULL)").await.unwrap().iter().map(|r| r.get::<String, _>(0)).collect();
    assert!(plan.iter().any(|l| l.contains("Seq Scan on orders ")), "{plan:?}");
    conn.close().await.unwrap();
    db.drop().await;
    assert!(checked > 60, "the statements were found in the sources ({checked})");
    assert!(scans.is_empty(), "statements that scan a growing table:\n{}", scans.join("\n\n"));
}
