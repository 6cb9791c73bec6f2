//! What the rate limits count (src/policy/ratelimit.rs), read from the rows the protocol writes anyway,
//! so every replica and every restart sees the same counts; and the validation pauses an
//! administrator lifts, on PostgreSQL.

use sqlx::PgConnection;

use super::Postgres;
use crate::store::{HOUR, PauseRow, Result, WindowCount};

impl Postgres {
    pub(in crate::store) async fn queue_depths(&self) -> Result<(i64, i64)> {
        Ok(sqlx::query_as::<_, (i64, i64)>(
            "SELECT (SELECT COUNT(*) FROM challenges WHERE status = 'processing'),
                    (SELECT COUNT(*) FROM orders WHERE status = 'processing')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub(in crate::store) async fn accounts_created_from(&self, ip: &str, since: i64) -> Result<WindowCount> {
        self.window(
            "SELECT COUNT(*) AS count, MIN(created_at) AS oldest FROM accounts WHERE created_ip = $1 AND created_at >= $2",
            ip,
            since,
        )
        .await
    }

    pub(in crate::store) async fn orders_created_by(&self, account_id: &str, since: i64) -> Result<WindowCount> {
        self.window(
            "SELECT COUNT(*) AS count, MIN(created_at) AS oldest FROM orders WHERE account_id = $1 AND created_at >= $2",
            account_id,
            since,
        )
        .await
    }

    pub(in crate::store) async fn pending_authorizations(&self, account_id: &str, now: i64) -> Result<WindowCount> {
        self.window(
            "SELECT COUNT(*) AS count, MIN(expires_at) AS oldest FROM authorizations
             WHERE account_id = $1 AND status = 'pending' AND expires_at > $2",
            account_id,
            now,
        )
        .await
    }

    /// A count and its oldest time, from `sql` with `$1 = key` and `$2 = at`.
    async fn window(&self, sql: &'static str, key: &str, at: i64) -> Result<WindowCount> {
        let (count, oldest) =
            sqlx::query_as::<_, (i64, Option<i64>)>(sql).bind(key).bind(at).fetch_one(&self.pool).await?;
        Ok(WindowCount { count, oldest })
    }

    /// The names (type, value) paused for the account.
    pub(in crate::store) async fn paused_names(&self, account_id: &str) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as::<_, (String, String)>(
            "SELECT identifier_type, identifier_value FROM validation_pauses WHERE account_id = $1 AND lifted_at IS NULL",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(in crate::store) async fn pause_if_failing(
        &self,
        account_id: &str,
        kind: &str,
        value: &str,
        limit: u32,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let paused = pause_if_failing(&mut tx, account_id, kind, value, limit, now).await?;
        tx.commit().await?;
        Ok(paused)
    }

    pub(in crate::store) async fn pauses(
        &self,
        account_id: Option<&str>,
        include_lifted: bool,
    ) -> Result<Vec<PauseRow>> {
        let rows = sqlx::query_as::<_, (String, String, String, i64, i64, Option<i64>)>(
            "/* full listing */ SELECT account_id, identifier_type, identifier_value, paused_at, failures, lifted_at FROM validation_pauses
             WHERE ($1 IS NULL OR account_id = $1) AND ($2 OR lifted_at IS NULL)
             ORDER BY paused_at DESC, account_id, identifier_value",
        )
        .bind(account_id)
        .bind(include_lifted)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(account_id, identifier_type, identifier_value, paused_at, failures, lifted_at)| PauseRow {
                account_id,
                identifier_type,
                identifier_value,
                paused_at,
                failures,
                lifted_at,
            })
            .collect())
    }

    pub(in crate::store) async fn unpause(&self, account_id: &str, name: Option<&str>, now: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE validation_pauses SET lifted_at = $3
             WHERE account_id = $1 AND ($2 IS NULL OR identifier_value = $2) AND lifted_at IS NULL",
        )
        .bind(account_id)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

/// Pauses the name (`kind`, `value`: an authorization's identifier) for the account once `limit`
/// of its validations failed within the hour, counting only failures after the last lift, inside
/// the caller's transaction. `true` when this call paused it.
pub(super) async fn pause_if_failing(
    c: &mut PgConnection,
    account_id: &str,
    kind: &str,
    value: &str,
    limit: u32,
    now: i64,
) -> Result<bool> {
    // Racing failures (any replica) may both count enough: the insert (or re-pause of a lifted
    // pause) is guarded, so one of them pauses and reports it.
    let lifted: Option<i64> = sqlx::query_scalar(
        "SELECT lifted_at FROM validation_pauses WHERE account_id = $1 AND identifier_type = $2 AND identifier_value = $3",
    )
    .bind(account_id)
    .bind(kind)
    .bind(value)
    .fetch_optional(&mut *c)
    .await?
    .flatten();
    // Failures up to the second of the lift were forgiven with it.
    let since = lifted.map_or(now - HOUR, |l| (l + 1).max(now - HOUR));
    let failures: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM challenges c JOIN authorizations a ON a.id = c.authz_id
         WHERE a.account_id = $1 AND a.identifier_type = $2 AND a.identifier_value = $3 AND c.failed_at >= $4",
    )
    .bind(account_id)
    .bind(kind)
    .bind(value)
    .bind(since)
    .fetch_one(&mut *c)
    .await?;
    if failures < i64::from(limit) {
        return Ok(false);
    }
    let paused = sqlx::query(
        "INSERT INTO validation_pauses (account_id, identifier_type, identifier_value, paused_at, failures)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (account_id, identifier_type, identifier_value) DO UPDATE
           SET paused_at = excluded.paused_at, failures = excluded.failures, lifted_at = NULL
           WHERE validation_pauses.lifted_at IS NOT NULL",
    )
    .bind(account_id)
    .bind(kind)
    .bind(value)
    .bind(now)
    .bind(failures)
    .execute(&mut *c)
    .await?;
    Ok(paused.rows_affected() == 1)
}
