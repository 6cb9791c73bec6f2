//! What the rate limits count (src/ratelimit.rs), read from the rows the protocol writes anyway, so
//! every replica and every restart sees the same counts; and the validation pauses an
//! administrator lifts.

use sqlx::FromRow;

use super::{Load, Result, Store};
use crate::acme::Identifier;

/// Events inside a window: how many, and when the oldest happened (it leaves the window first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromRow)]
pub struct WindowCount {
    pub count: i64,
    pub oldest: Option<i64>,
}

/// A name an account may not order or validate (`vacme limits list`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, FromRow)]
pub struct PauseRow {
    pub account_id: String,
    pub identifier_type: String,
    pub identifier_value: String,
    pub paused_at: i64,
    /// Failed validations in the hour that led to the pause.
    pub failures: i64,
    /// When an administrator lifted it; `None` while paused.
    pub lifted_at: Option<i64>,
}

/// The window every hourly limit counts over.
pub const HOUR: i64 = 3600;

impl Store {
    /// Nonce rows in the store (shared-store nonces).
    pub async fn nonce_count(&self) -> Result<u64> {
        let n: i64 = on!(self, read, |db| sqlx::query_scalar("SELECT COUNT(*) FROM nonces").fetch_one(db).await?);
        Ok(n.max(0) as u64)
    }

    /// Work waiting for the workers: answered challenges, and finalized orders.
    pub async fn queue_depths(&self) -> Result<(i64, i64)> {
        Ok(on!(self, read, |db| {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT (SELECT COUNT(*) FROM challenges WHERE status = 'processing'),
                        (SELECT COUNT(*) FROM orders WHERE status = 'processing')",
            )
            .fetch_one(db)
            .await?
        }))
    }

    /// Accounts created from `ip` since `since`.
    pub async fn accounts_created_from(&self, ip: &str, since: i64) -> Result<WindowCount> {
        self.window(
            "SELECT COUNT(*) AS count, MIN(created_at) AS oldest FROM accounts WHERE created_ip = $1 AND created_at >= $2",
            ip,
            since,
        )
        .await
    }

    /// Orders the account created since `since`.
    pub async fn orders_created_by(&self, account_id: &str, since: i64) -> Result<WindowCount> {
        self.window(
            "SELECT COUNT(*) AS count, MIN(created_at) AS oldest FROM orders WHERE account_id = $1 AND created_at >= $2",
            account_id,
            since,
        )
        .await
    }

    /// The account's pending, unexpired authorizations, and when the first of them expires.
    pub async fn pending_authorizations(&self, account_id: &str, now: i64) -> Result<WindowCount> {
        self.window(
            "SELECT COUNT(*) AS count, MIN(expires_at) AS oldest FROM authorizations
             WHERE account_id = $1 AND status = 'pending' AND expires_at > $2",
            account_id,
            now,
        )
        .await
    }

    /// A count and its oldest time, from `sql` with `$1 = key` and `$2 = at`: on the calling
    /// thread when SQLite allows (lite.rs), as each newAccount and newOrder asks.
    async fn window(&self, sql: &str, key: &str, at: i64) -> Result<WindowCount> {
        if let Some(lite) = self.lite() {
            let row = lite.optional(sql, &[&key, &at], |r| Ok(WindowCount { count: r.get(0)?, oldest: r.get(1)? }))?;
            return Ok(row.unwrap_or_default());
        }
        Ok(on!(self, read, |db| sqlx::query_as::<_, WindowCount>(sql).bind(key).bind(at).fetch_one(db).await?))
    }

    /// Which of `identifiers` (compared by their base: a wildcard's domain) the account may not
    /// order or validate.
    pub async fn paused_identifiers(&self, account_id: &str, identifiers: &[Identifier]) -> Result<Vec<Identifier>> {
        const PAUSED: &str = "SELECT identifier_type, identifier_value FROM validation_pauses
                              WHERE account_id = $1 AND lifted_at IS NULL";
        let paused = match self.lite() {
            Some(lite) => lite.all(PAUSED, &[&account_id], |r| Ok((r.get(0)?, r.get(1)?)))?,
            None => on!(self, read, |db| {
                sqlx::query_as::<_, (String, String)>(PAUSED).bind(account_id).fetch_all(db).await?
            }),
        };
        if paused.is_empty() {
            return Ok(Vec::new());
        }
        Ok(identifiers
            .iter()
            .filter(|id| {
                let base = id.base();
                paused.iter().any(|(kind, value)| kind == base.kind() && *value == base.value())
            })
            .cloned()
            .collect())
    }

    /// After a failed validation: pauses the name for the account once `limit` validations of it
    /// failed within the hour (counting only failures after the last lift). `true` when this call
    /// paused it.
    pub async fn pause_if_failing(
        &self,
        account_id: &str,
        identifier: &Identifier,
        limit: u32,
        now: i64,
    ) -> Result<bool> {
        if limit == 0 {
            return Ok(false);
        }
        let base = identifier.base();
        on!(self, write, |db| {
            let mut tx = db.begin().await?;
            let paused = tx.pause_if_failing(account_id, base.kind(), &base.value(), limit, now).await?;
            tx.commit().await?;
            Ok(paused)
        })
    }

    /// Pauses, newest first: those still in force, or all with `include_lifted`.
    pub async fn pauses(&self, account_id: Option<&str>, include_lifted: bool) -> Result<Vec<PauseRow>> {
        Ok(on!(self, read, |db| {
            sqlx::query_as::<_, PauseRow>(
                "SELECT * FROM validation_pauses
                 WHERE ($1 IS NULL OR account_id = $1) AND ($2 OR lifted_at IS NULL)
                 ORDER BY paused_at DESC, account_id, identifier_value",
            )
            .bind(account_id)
            .bind(include_lifted)
            .fetch_all(db)
            .await?
        }))
    }

    /// Lifts the account's pauses (of one name, or all). Returns how many were in force.
    pub async fn unpause(&self, account_id: &str, name: Option<&str>, now: i64) -> Result<u64> {
        Ok(on!(self, write, |db| {
            sqlx::query(
                "UPDATE validation_pauses SET lifted_at = $3
                 WHERE account_id = $1 AND ($2 IS NULL OR identifier_value = $2) AND lifted_at IS NULL",
            )
            .bind(account_id)
            .bind(name)
            .bind(now)
            .execute(db)
            .await?
            .rows_affected()
        }))
    }
}
