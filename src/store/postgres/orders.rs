//! Orders (RFC 8555 §7.4) with their authorizations and challenges (§7.5), on PostgreSQL: where
//! an order is created, and where validation moves it from `pending` to `ready` or `invalid`.

use super::{Postgres, authz_and_order_of, load_authz, load_order};
use crate::store::{
    AuthzRow, ChallengeRow, Claimed, ClaimedChallenge, OrderInsert, OrderRow, Result, StoreError, insert_challenges,
    rows::RawClaim,
};

impl Postgres {
    pub(in crate::store) async fn create_order(&self, new: &OrderInsert) -> Result<Option<OrderRow>> {
        let mut tx = self.pool.begin().await?;
        if let Some(replaces) = &new.replaces {
            // Under READ COMMITTED, two renewals inserting at once would not see each other's
            // row in the NOT EXISTS below: the second waits here until the first commits, and
            // its insert then sees the first order.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('vacme.replaces:' || $1, 0))")
                .bind(replaces)
                .execute(&mut *tx)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO orders (id, account_id, status, expires_at, identifiers, not_before, not_after,
                                 profile, replaces, created_at, updated_at, client_user_agent, client_ip)
             SELECT $1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $9, $10, $11
             WHERE $8 IS NULL OR NOT EXISTS (
                 SELECT 1 FROM orders WHERE replaces = $8
                   AND (status IN ('processing', 'valid') OR (status IN ('pending', 'ready') AND expires_at > $9)))",
        )
        .bind(&new.id)
        .bind(&new.account_id)
        .bind(new.expires_at)
        .bind(&new.identifiers)
        .bind(new.not_before)
        .bind(new.not_after)
        .bind(&new.profile)
        .bind(&new.replaces)
        .bind(new.now)
        .bind(&new.user_agent)
        .bind(&new.client_ip)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        for (position, authz) in new.authzs.iter().enumerate() {
            sqlx::query(
                "INSERT INTO authorizations (id, order_id, account_id, identifier_type, identifier_value,
                                             wildcard, status, expires_at, position)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)",
            )
            .bind(&authz.id)
            .bind(&new.id)
            .bind(&new.account_id)
            .bind(authz.kind)
            .bind(&authz.value)
            .bind(authz.wildcard)
            .bind(new.expires_at)
            .bind(position as i64)
            .execute(&mut *tx)
            .await?;
            if authz.challenges.is_empty() {
                continue;
            }
            let sql = insert_challenges(authz.challenges.len());
            let mut insert = sqlx::query(&sql).bind(&authz.id);
            for (id, kind, token) in &authz.challenges {
                insert = insert.bind(id).bind(*kind).bind(token);
            }
            insert.execute(&mut *tx).await?;
        }
        let order = load_order(&mut tx, &new.id)
            .await?
            .ok_or(StoreError::Corrupt { table: "orders", what: "order vanished right after insert".into() })?;
        tx.commit().await?;
        Ok(Some(order))
    }

    pub(in crate::store) async fn order(&self, id: &str) -> Result<Option<OrderRow>> {
        load_order(&mut *self.pool.acquire().await?, id).await
    }

    pub(in crate::store) async fn order_ids_of_account(
        &self,
        account_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>> {
        // The insertion order is the `seq` column's.
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT id FROM orders WHERE account_id = $1
               AND ($2 IS NULL OR (created_at, seq) >
                                  (SELECT created_at, seq FROM orders WHERE id = $2 AND account_id = $1))
             ORDER BY created_at, seq LIMIT $3",
        )
        .bind(account_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- authorizations and challenges ----

    pub(in crate::store) async fn authorization(&self, id: &str) -> Result<Option<AuthzRow>> {
        load_authz(&mut *self.pool.acquire().await?, id).await
    }

    pub(in crate::store) async fn challenge(&self, id: &str) -> Result<Option<(ChallengeRow, AuthzRow)>> {
        let mut conn = self.pool.acquire().await?;
        let authz_id = sqlx::query_scalar::<_, String>("SELECT authz_id FROM challenges WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(authz_id) = authz_id else {
            return Ok(None);
        };
        let Some(authz) = load_authz(&mut conn, &authz_id).await? else {
            return Ok(None);
        };
        let chall = authz.challenges.iter().find(|c| c.id == id).cloned();
        Ok(chall.map(|c| (c, authz)))
    }

    pub(in crate::store) async fn start_challenge(&self, id: &str, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Two challenges of one authorization answered at once (two replicas) would each see the
        // other still pending: lock the authorization, so the second sees the first.
        sqlx::query(
            "SELECT 1 FROM authorizations WHERE id = (SELECT authz_id FROM challenges WHERE id = $1) FOR UPDATE",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE challenges SET status = 'processing', started_at = $2, next_attempt_at = $2, attempts = 0
             WHERE id = $1 AND status = 'pending'
               AND EXISTS (SELECT 1 FROM authorizations a WHERE a.id = challenges.authz_id
                           AND a.status = 'pending' AND a.expires_at > $2)
               AND NOT EXISTS (SELECT 1 FROM challenges o WHERE o.authz_id = challenges.authz_id
                               AND o.id <> challenges.id AND o.status <> 'pending')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(done == 1)
    }

    pub(in crate::store) async fn claim_due_challenges(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Claimed<ClaimedChallenge>> {
        let (ids, taken_over) = claim_due(&self.pool, "challenges", now, lease_until, limit).await?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let raw = sqlx::query_as::<_, RawClaim>(
                "SELECT c.id, c.type, c.token, c.started_at, c.attempts, a.identifier_type, a.identifier_value,
                        a.wildcard, a.order_id, acc.id AS account_id, acc.key_thumbprint
                 FROM challenges c
                 JOIN authorizations a ON a.id = c.authz_id
                 JOIN accounts acc ON acc.id = a.account_id
                 WHERE c.id = $1",
            )
            .bind(&id)
            .fetch_one(&self.pool)
            .await?;
            claimed.push(ClaimedChallenge::try_from(raw)?);
        }
        Ok(Claimed { items: claimed, taken_over })
    }

    pub(in crate::store) async fn renew_challenge_leases(&self, ids: Vec<String>, lease_until: i64) -> Result<()> {
        renew_leases(&self.pool, "challenges", &ids, lease_until).await
    }

    pub(in crate::store) async fn challenge_succeeded(&self, id: &str, now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Only while the authorization lives: a result that comes after its expiry changes nothing.
        let done = sqlx::query(
            "UPDATE challenges SET status = 'valid', validated_at = $2, error = NULL, claimed_until = NULL
             WHERE id = $1 AND status = 'processing'
               AND EXISTS (SELECT 1 FROM authorizations a WHERE a.id = challenges.authz_id AND a.expires_at > $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            sqlx::query(
                "UPDATE challenges SET status = 'invalid', claimed_until = NULL WHERE id = $1 AND status = 'processing'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        } else {
            let (authz_id, order_id) = authz_and_order_of(&mut tx, id).await?;
            // Two authorizations of the order passing at once (two replicas) would each see the
            // other still pending, and the order would never become ready: the order's lock makes
            // the second see the first.
            sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE").bind(&order_id).execute(&mut *tx).await?;
            sqlx::query("UPDATE authorizations SET status = 'valid' WHERE id = $1 AND status = 'pending'")
                .bind(&authz_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE orders SET status = 'ready', updated_at = $2
                 WHERE id = $1 AND status = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM authorizations WHERE order_id = $1 AND status <> 'valid')",
            )
            .bind(&order_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn challenge_retry(
        &self,
        id: &str,
        problem: &serde_json::Value,
        next_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE challenges SET error = $2, attempts = attempts + 1, next_attempt_at = $3, claimed_until = NULL
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(id)
        .bind(problem.to_string())
        .bind(next_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn challenge_failed(
        &self,
        id: &str,
        problem: &serde_json::Value,
        order_problem: &serde_json::Value,
        pause_after: u32,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let mut paused = false;
        let done = sqlx::query(
            "UPDATE challenges SET status = 'invalid', error = $2, attempts = attempts + 1, claimed_until = NULL,
                                   failed_at = $3
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(id)
        .bind(problem.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let (authz_id, order_id) = authz_and_order_of(&mut tx, id).await?;
            // An expired authorization (and order) stays expired.
            sqlx::query(
                "UPDATE authorizations SET status = 'invalid' WHERE id = $1 AND status = 'pending' AND expires_at > $2",
            )
            .bind(&authz_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE orders SET status = 'invalid', error = $2, updated_at = $3
                 WHERE id = $1 AND status IN ('pending', 'ready') AND expires_at > $3",
            )
            .bind(&order_id)
            .bind(order_problem.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if pause_after > 0 {
                let (account_id, kind, value) = sqlx::query_as::<_, (String, String, String)>(
                    "SELECT account_id, identifier_type, identifier_value FROM authorizations WHERE id = $1",
                )
                .bind(&authz_id)
                .fetch_one(&mut *tx)
                .await?;
                paused = super::limits::pause_if_failing(&mut tx, &account_id, &kind, &value, pause_after, now).await?;
            }
        }
        tx.commit().await?;
        Ok(paused)
    }

    pub(in crate::store) async fn deactivate_authz(
        &self,
        id: &str,
        order_problem: &serde_json::Value,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Rows in the order every PostgreSQL transaction takes them: the order before its
        // authorizations (see `challenge_succeeded`), so the two cannot deadlock.
        sqlx::query("SELECT 1 FROM orders WHERE id = (SELECT order_id FROM authorizations WHERE id = $1) FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let order_id = sqlx::query_scalar::<_, String>(
            "UPDATE authorizations SET status = 'deactivated'
             WHERE id = $1 AND status IN ('pending', 'valid') AND expires_at > $2
             RETURNING order_id",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(order_id) = order_id else {
            tx.rollback().await?;
            return Ok(false);
        };
        sqlx::query(
            "UPDATE orders SET status = 'invalid', error = $2, updated_at = $3 WHERE id = $1 AND status IN ('pending', 'ready')",
        )
        .bind(&order_id)
        .bind(order_problem.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE challenges SET status = 'invalid' WHERE authz_id = $1 AND status = 'pending'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(in crate::store) async fn next_challenge_due(&self) -> Result<Option<i64>> {
        next_due(&self.pool, "challenges").await
    }
}

/// Leases up to `limit` rows of `table` (`challenges` or `orders`) that are `processing` and
/// due, in one statement; returns their IDs. Rows another replica is claiming are skipped, not
/// waited for.
pub(super) async fn claim_due(
    pool: &sqlx::PgPool,
    table: &'static str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<(Vec<String>, usize)> {
    // The due rows are chosen once, in a materialized CTE: PostgreSQL may run an
    // `IN (SELECT ... LIMIT)` subquery again for each row it updates, and so lease every due row,
    // not `limit` of them. `held`: someone's lease ran out on the row (a take-over).
    let sql = format!(
        "WITH due AS MATERIALIZED (
             SELECT id, claimed_until IS NOT NULL AS held FROM {table}
             WHERE status = 'processing' AND next_attempt_at <= $1
               AND (claimed_until IS NULL OR claimed_until < $1)
             ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
         UPDATE {table} SET claimed_until = $2
         FROM due
         WHERE {table}.id = due.id
           AND {table}.status = 'processing' AND ({table}.claimed_until IS NULL OR {table}.claimed_until < $1)
         RETURNING {table}.id, due.held"
    );
    let rows =
        sqlx::query_as::<_, (String, bool)>(&sql).bind(now).bind(lease_until).bind(limit).fetch_all(pool).await?;
    let taken_over = rows.iter().filter(|(_, held)| *held).count();
    Ok((rows.into_iter().map(|(id, _)| id).collect(), taken_over))
}

/// Extends the leases on `ids` of `table` that are still held (a finished item has none).
pub(super) async fn renew_leases(
    pool: &sqlx::PgPool,
    table: &'static str,
    ids: &[String],
    lease_until: i64,
) -> Result<()> {
    let sql = format!(
        "UPDATE {table} SET claimed_until = $2
         WHERE id = ANY($1) AND status = 'processing' AND claimed_until IS NOT NULL AND claimed_until < $2"
    );
    sqlx::query(&sql).bind(ids).bind(lease_until).execute(pool).await?;
    Ok(())
}

/// Earliest time a `processing` row of `table` is due and not leased.
pub(super) async fn next_due(pool: &sqlx::PgPool, table: &'static str) -> Result<Option<i64>> {
    let sql = format!(
        "SELECT MIN(GREATEST(next_attempt_at, COALESCE(claimed_until + 1, 0))) FROM {table} WHERE status = 'processing'"
    );
    Ok(sqlx::query_scalar::<_, Option<i64>>(&sql).fetch_one(pool).await?)
}
