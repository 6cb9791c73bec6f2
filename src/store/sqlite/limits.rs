//! What the rate limits count (src/policy/ratelimit.rs), read from the rows the protocol writes anyway,
//! and the validation pauses an administrator lifts, on SQLite.

use rusqlite::Connection;

use super::{Sqlite, execute, one, optional, query};
use crate::store::{HOUR, PauseRow, Result, WindowCount};

impl Sqlite {
    pub(in crate::store) async fn queue_depths(&self) -> Result<(i64, i64)> {
        self.read(|c| {
            one(
                c,
                "SELECT (SELECT COUNT(*) FROM challenges WHERE status = 'processing'),
                        (SELECT COUNT(*) FROM orders WHERE status = 'processing')",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    pub(in crate::store) async fn accounts_created_from(&self, ip: &str, since: i64) -> Result<WindowCount> {
        self.window(
            "SELECT COUNT(*), MIN(created_at) FROM accounts WHERE created_ip = $1 AND created_at >= $2",
            ip,
            since,
        )
        .await
    }

    pub(in crate::store) async fn orders_created_by(&self, account_id: &str, since: i64) -> Result<WindowCount> {
        self.window(
            "SELECT COUNT(*), MIN(created_at) FROM orders WHERE account_id = $1 AND created_at >= $2",
            account_id,
            since,
        )
        .await
    }

    pub(in crate::store) async fn pending_authorizations(&self, account_id: &str, now: i64) -> Result<WindowCount> {
        self.window(
            "SELECT COUNT(*), MIN(expires_at) FROM authorizations
             WHERE account_id = $1 AND status = 'pending' AND expires_at > $2",
            account_id,
            now,
        )
        .await
    }

    /// A count and its oldest time, from `sql` with `$1 = key` and `$2 = at`.
    async fn window(&self, sql: &'static str, key: &str, at: i64) -> Result<WindowCount> {
        let key = key.to_owned();
        self.read(move |c| one(c, sql, &[&key, &at], |r| Ok(WindowCount { count: r.get(0)?, oldest: r.get(1)? }))).await
    }

    /// The names (type, value) paused for the account.
    pub(in crate::store) async fn paused_names(&self, account_id: &str) -> Result<Vec<(String, String)>> {
        let account_id = account_id.to_owned();
        self.read(move |c| {
            query(
                c,
                "SELECT identifier_type, identifier_value FROM validation_pauses WHERE account_id = $1 AND lifted_at IS NULL",
                &[&account_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    pub(in crate::store) async fn pause_if_failing(
        &self,
        account_id: &str,
        kind: &str,
        value: &str,
        limit: u32,
        now: i64,
    ) -> Result<bool> {
        let (account_id, kind, value) = (account_id.to_owned(), kind.to_owned(), value.to_owned());
        self.write(move |c| pause_if_failing(c, &account_id, &kind, &value, limit, now)).await
    }

    pub(in crate::store) async fn pauses(
        &self,
        account_id: Option<&str>,
        include_lifted: bool,
    ) -> Result<Vec<PauseRow>> {
        let account_id = account_id.map(str::to_owned);
        self.read(move |c| {
            query(
                c,
                "/* full listing */ SELECT * FROM validation_pauses
                 WHERE ($1 IS NULL OR account_id = $1) AND ($2 OR lifted_at IS NULL)
                 ORDER BY paused_at DESC, account_id, identifier_value",
                &[&account_id, &include_lifted],
                |r| {
                    Ok(PauseRow {
                        account_id: r.get("account_id")?,
                        identifier_type: r.get("identifier_type")?,
                        identifier_value: r.get("identifier_value")?,
                        paused_at: r.get("paused_at")?,
                        failures: r.get("failures")?,
                        lifted_at: r.get("lifted_at")?,
                    })
                },
            )
        })
        .await
    }

    pub(in crate::store) async fn unpause(&self, account_id: &str, name: Option<&str>, now: i64) -> Result<u64> {
        let (account_id, name) = (account_id.to_owned(), name.map(str::to_owned));
        let done = self
            .write(move |c| {
                execute(
                    c,
                    "UPDATE validation_pauses SET lifted_at = $3
                     WHERE account_id = $1 AND ($2 IS NULL OR identifier_value = $2) AND lifted_at IS NULL",
                    &[&account_id, &name, &now],
                )
            })
            .await?;
        Ok(done as u64)
    }
}

/// Pauses the name (`kind`, `value`: an authorization's identifier) for the account once `limit`
/// of its validations failed within the hour, counting only failures after the last lift, inside
/// the caller's transaction. `true` when this call paused it.
pub(super) fn pause_if_failing(
    c: &Connection,
    account_id: &str,
    kind: &str,
    value: &str,
    limit: u32,
    now: i64,
) -> Result<bool> {
    let lifted: Option<i64> = optional(
        c,
        "SELECT lifted_at FROM validation_pauses
         WHERE account_id = $1 AND identifier_type = $2 AND identifier_value = $3",
        &[&account_id, &kind, &value],
        |r| r.get(0),
    )?
    .flatten();
    // Failures up to the second of the lift were forgiven with it.
    let since = lifted.map_or(now - HOUR, |l| (l + 1).max(now - HOUR));
    let failures: i64 = one(
        c,
        "SELECT COUNT(*) FROM challenges c JOIN authorizations a ON a.id = c.authz_id
         WHERE a.account_id = $1 AND a.identifier_type = $2 AND a.identifier_value = $3 AND c.failed_at >= $4",
        &[&account_id, &kind, &value, &since],
        |r| r.get(0),
    )?;
    if failures < i64::from(limit) {
        return Ok(false);
    }
    let paused = execute(
        c,
        "INSERT INTO validation_pauses (account_id, identifier_type, identifier_value, paused_at, failures)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (account_id, identifier_type, identifier_value) DO UPDATE
           SET paused_at = excluded.paused_at, failures = excluded.failures, lifted_at = NULL
           WHERE validation_pauses.lifted_at IS NOT NULL",
        &[&account_id, &kind, &value, &now, &failures],
    )?;
    Ok(paused == 1)
}
