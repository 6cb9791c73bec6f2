//! Orders (RFC 8555 §7.4) with their authorizations and challenges (§7.5), on SQLite: where an
//! order is created, and where validation moves it from `pending` to `ready` or `invalid`.

use rusqlite::{Connection, ToSql};

use super::{Sqlite, execute, limits, optional, query, snapshot};
use crate::store::{
    AuthzRow, ChallengeRow, Claimed, ClaimedChallenge, OrderInsert, OrderRow, Result, StoreError, insert_challenges,
    rows::{RawAuthz, RawChallenge, RawClaim, RawOrder},
};

/// An order with its authorization IDs as a JSON array text, in the order of its identifiers.
pub(super) const ORDER_BY_ID: &str = "SELECT o.*,
    (SELECT json_group_array(id) FROM (SELECT id FROM authorizations WHERE order_id = o.id ORDER BY position)) AS authz_ids
    FROM orders o WHERE o.id = $1";
const AUTHZ_BY_ID: &str = "SELECT * FROM authorizations WHERE id = $1";
const AUTHZ_OF_CHALLENGE: &str =
    "SELECT * FROM authorizations WHERE id = (SELECT authz_id FROM challenges WHERE id = $1)";
const CHALLENGES_OF_AUTHZ: &str = "SELECT * FROM challenges WHERE authz_id = $1 ORDER BY type";
const AUTHZ_AND_ORDER_OF: &str =
    "SELECT a.id, a.order_id FROM challenges c JOIN authorizations a ON a.id = c.authz_id WHERE c.id = $1";

impl Sqlite {
    pub(in crate::store) async fn create_order(&self, new: OrderInsert) -> Result<Option<OrderRow>> {
        let raw = self
            .write(move |c| {
                let inserted = execute(
                    c,
                    "INSERT INTO orders (id, account_id, status, expires_at, identifiers, not_before, not_after,
                                         profile, replaces, created_at, updated_at, client_user_agent, client_ip)
                     SELECT $1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $9, $10, $11
                     WHERE $8 IS NULL OR NOT EXISTS (
                         SELECT 1 FROM orders WHERE replaces = $8
                           AND (status IN ('processing', 'valid') OR (status IN ('pending', 'ready') AND expires_at > $9)))",
                    &[
                        &new.id,
                        &new.account_id,
                        &new.expires_at,
                        &new.identifiers,
                        &new.not_before,
                        &new.not_after,
                        &new.profile,
                        &new.replaces,
                        &new.now,
                        &new.user_agent,
                        &new.client_ip,
                    ],
                )?;
                if inserted != 1 {
                    return Ok(None);
                }
                for (position, authz) in new.authzs.iter().enumerate() {
                    let position = position as i64;
                    execute(
                        c,
                        "INSERT INTO authorizations (id, order_id, account_id, identifier_type, identifier_value,
                                                     wildcard, status, expires_at, position)
                         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)",
                        &[
                            &authz.id,
                            &new.id,
                            &new.account_id,
                            &authz.kind,
                            &authz.value,
                            &authz.wildcard,
                            &new.expires_at,
                            &position,
                        ],
                    )?;
                    if authz.challenges.is_empty() {
                        continue;
                    }
                    let mut args: Vec<&dyn ToSql> = vec![&authz.id];
                    for (id, kind, token) in &authz.challenges {
                        args.extend([id as &dyn ToSql, kind, token]);
                    }
                    execute(c, &insert_challenges(authz.challenges.len()), &args)?;
                }
                let order = optional(c, ORDER_BY_ID, &[&new.id], RawOrder::from_lite)?
                    .ok_or(StoreError::Corrupt { table: "orders", what: "order vanished right after insert".into() })?;
                Ok(Some(order))
            })
            .await?;
        raw.map(OrderRow::from_raw).transpose()
    }

    pub(in crate::store) async fn order(&self, id: &str) -> Result<Option<OrderRow>> {
        let id = id.to_owned();
        let raw = self.read(move |c| optional(c, ORDER_BY_ID, &[&id], RawOrder::from_lite)).await?;
        raw.map(OrderRow::from_raw).transpose()
    }

    pub(in crate::store) async fn order_ids_of_account(
        &self,
        account_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>> {
        let (account_id, after) = (account_id.to_owned(), after.map(str::to_owned));
        // The insertion order is the rowid's.
        self.read(move |c| {
            query(
                c,
                "SELECT id FROM orders WHERE account_id = $1
                   AND ($2 IS NULL OR (created_at, rowid) >
                                      (SELECT created_at, rowid FROM orders WHERE id = $2 AND account_id = $1))
                 ORDER BY created_at, rowid LIMIT $3",
                &[&account_id, &after, &limit],
                |r| r.get(0),
            )
        })
        .await
    }

    // ---- authorizations and challenges ----

    pub(in crate::store) async fn authorization(&self, id: &str) -> Result<Option<AuthzRow>> {
        let id = id.to_owned();
        let raw = self.read(move |c| authz(c, AUTHZ_BY_ID, &id)).await?;
        raw.map(|(a, challs)| AuthzRow::from_raw(a, challs)).transpose()
    }

    pub(in crate::store) async fn challenge(&self, id: &str) -> Result<Option<(ChallengeRow, AuthzRow)>> {
        let key = id.to_owned();
        let Some((authz, challs)) = self.read(move |c| authz(c, AUTHZ_OF_CHALLENGE, &key)).await? else {
            return Ok(None);
        };
        let authz = AuthzRow::from_raw(authz, challs)?;
        let chall = authz.challenges.iter().find(|c| c.id == id).cloned();
        Ok(chall.map(|c| (c, authz)))
    }

    pub(in crate::store) async fn start_challenge(&self, id: &str, now: i64) -> Result<bool> {
        let id = id.to_owned();
        // One writer: the statement alone is atomic.
        let done = self
            .write(move |c| {
                execute(
                    c,
                    "UPDATE challenges SET status = 'processing', started_at = $2, next_attempt_at = $2, attempts = 0
                     WHERE id = $1 AND status = 'pending'
                       AND EXISTS (SELECT 1 FROM authorizations a WHERE a.id = challenges.authz_id
                                   AND a.status = 'pending' AND a.expires_at > $2)
                       AND NOT EXISTS (SELECT 1 FROM challenges o WHERE o.authz_id = challenges.authz_id
                                       AND o.id <> challenges.id AND o.status <> 'pending')",
                    &[&id, &now],
                )
            })
            .await?;
        Ok(done == 1)
    }

    pub(in crate::store) async fn claim_due_challenges(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Claimed<ClaimedChallenge>> {
        let (raw, taken_over) = self
            .write(move |c| {
                let (ids, taken_over) = claim_due(c, "challenges", now, lease_until, limit)?;
                let mut claimed = Vec::with_capacity(ids.len());
                for id in ids {
                    let raw = optional(
                        c,
                        "SELECT c.id, c.type, c.token, c.started_at, c.attempts, a.identifier_type,
                                a.identifier_value, a.wildcard, a.order_id, acc.id AS account_id, acc.key_thumbprint
                         FROM challenges c
                         JOIN authorizations a ON a.id = c.authz_id
                         JOIN accounts acc ON acc.id = a.account_id
                         WHERE c.id = $1",
                        &[&id],
                        RawClaim::from_lite,
                    )?;
                    claimed.extend(raw);
                }
                Ok((claimed, taken_over))
            })
            .await?;
        let items = raw.into_iter().map(ClaimedChallenge::try_from).collect::<Result<_>>()?;
        Ok(Claimed { items, taken_over })
    }

    pub(in crate::store) async fn renew_challenge_leases(&self, ids: Vec<String>, lease_until: i64) -> Result<()> {
        self.write(move |c| renew_leases(c, "challenges", &ids, lease_until)).await
    }

    pub(in crate::store) async fn challenge_succeeded(&self, id: &str, now: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            // Only while the authorization lives: a result that comes after its expiry changes nothing.
            let valid = execute(
                c,
                "UPDATE challenges SET status = 'valid', validated_at = $2, error = NULL, claimed_until = NULL
                 WHERE id = $1 AND status = 'processing'
                   AND EXISTS (SELECT 1 FROM authorizations a WHERE a.id = challenges.authz_id AND a.expires_at > $2)",
                &[&id, &now],
            )?;
            if valid == 0 {
                execute(
                    c,
                    "UPDATE challenges SET status = 'invalid', claimed_until = NULL WHERE id = $1 AND status = 'processing'",
                    &[&id],
                )?;
                return Ok(());
            }
            let (authz_id, order_id) = authz_and_order_of(c, &id)?;
            execute(c, "UPDATE authorizations SET status = 'valid' WHERE id = $1 AND status = 'pending'", &[&authz_id])?;
            execute(
                c,
                "UPDATE orders SET status = 'ready', updated_at = $2
                 WHERE id = $1 AND status = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM authorizations WHERE order_id = $1 AND status <> 'valid')",
                &[&order_id, &now],
            )?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn challenge_retry(
        &self,
        id: &str,
        problem: &serde_json::Value,
        next_at: i64,
    ) -> Result<()> {
        let (id, problem) = (id.to_owned(), problem.to_string());
        self.write(move |c| {
            execute(
                c,
                "UPDATE challenges SET error = $2, attempts = attempts + 1, next_attempt_at = $3, claimed_until = NULL
                 WHERE id = $1 AND status = 'processing'",
                &[&id, &problem, &next_at],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn challenge_failed(
        &self,
        id: &str,
        problem: &serde_json::Value,
        order_problem: &serde_json::Value,
        pause_after: u32,
        now: i64,
    ) -> Result<bool> {
        let (id, problem, order_problem) = (id.to_owned(), problem.to_string(), order_problem.to_string());
        self.write(move |c| {
            let done = execute(
                c,
                "UPDATE challenges SET status = 'invalid', error = $2, attempts = attempts + 1, claimed_until = NULL,
                                       failed_at = $3
                 WHERE id = $1 AND status = 'processing'",
                &[&id, &problem, &now],
            )?;
            if done != 1 {
                return Ok(false);
            }
            let (authz_id, order_id) = authz_and_order_of(c, &id)?;
            // An expired authorization (and order) stays expired.
            execute(
                c,
                "UPDATE authorizations SET status = 'invalid' WHERE id = $1 AND status = 'pending' AND expires_at > $2",
                &[&authz_id, &now],
            )?;
            execute(
                c,
                "UPDATE orders SET status = 'invalid', error = $2, updated_at = $3
                 WHERE id = $1 AND status IN ('pending', 'ready') AND expires_at > $3",
                &[&order_id, &order_problem, &now],
            )?;
            if pause_after == 0 {
                return Ok(false);
            }
            let (account_id, kind, value): (String, String, String) = optional(
                c,
                "SELECT account_id, identifier_type, identifier_value FROM authorizations WHERE id = $1",
                &[&authz_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .ok_or_else(|| gone("authorizations", &authz_id))?;
            limits::pause_if_failing(c, &account_id, &kind, &value, pause_after, now)
        })
        .await
    }

    pub(in crate::store) async fn deactivate_authz(
        &self,
        id: &str,
        order_problem: &serde_json::Value,
        now: i64,
    ) -> Result<bool> {
        let (id, order_problem) = (id.to_owned(), order_problem.to_string());
        self.write(move |c| {
            let order_id: Option<String> = optional(
                c,
                "UPDATE authorizations SET status = 'deactivated'
                 WHERE id = $1 AND status IN ('pending', 'valid') AND expires_at > $2
                 RETURNING order_id",
                &[&id, &now],
                |r| r.get(0),
            )?;
            let Some(order_id) = order_id else {
                return Ok(false);
            };
            execute(
                c,
                "UPDATE orders SET status = 'invalid', error = $2, updated_at = $3 WHERE id = $1 AND status IN ('pending', 'ready')",
                &[&order_id, &order_problem, &now],
            )?;
            execute(c, "UPDATE challenges SET status = 'invalid' WHERE authz_id = $1 AND status = 'pending'", &[&id])?;
            Ok(true)
        })
        .await
    }

    pub(in crate::store) async fn next_challenge_due(&self) -> Result<Option<i64>> {
        self.read(|c| next_due(c, "challenges")).await
    }
}

/// The authorization `authz_sql` selects (by the one parameter `key`) with its challenges, in
/// one read transaction.
fn authz(conn: &Connection, authz_sql: &str, key: &str) -> Result<Option<(RawAuthz, Vec<RawChallenge>)>> {
    snapshot(conn, |c| {
        let Some(authz) = optional(c, authz_sql, &[&key], RawAuthz::from_lite)? else {
            return Ok(None);
        };
        let challs = query(c, CHALLENGES_OF_AUTHZ, &[&authz.id()], RawChallenge::from_lite)?;
        Ok(Some((authz, challs)))
    })
}

/// The authorization and the order of a challenge.
fn authz_and_order_of(c: &Connection, challenge_id: &str) -> Result<(String, String)> {
    optional(c, AUTHZ_AND_ORDER_OF, &[&challenge_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .ok_or_else(|| gone("challenges", challenge_id))
}

fn gone(table: &'static str, id: &str) -> StoreError {
    StoreError::Corrupt { table, what: format!("{id} vanished inside its own transaction") }
}

/// Leases up to `limit` rows of `table` (`challenges` or `orders`) that are `processing` and
/// due, in one statement; returns their IDs.
pub(super) fn claim_due(
    c: &Connection,
    table: &'static str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<(Vec<String>, usize)> {
    // One writer runs this whole job in its transaction: nothing claims between the look and the lease.
    let (due, lease) = match table {
        "challenges" => (DUE_CHALLENGES, LEASE_CHALLENGE),
        _ => (DUE_ORDERS, LEASE_ORDER),
    };
    let rows: Vec<(String, bool)> = query(c, due, &[&now, &limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut taken_over = 0;
    for (id, held) in rows {
        if execute(c, lease, &[&id, &lease_until])? == 1 {
            taken_over += usize::from(held);
            ids.push(id);
        }
    }
    Ok((ids, taken_over))
}

/// Extends the leases on `ids` of `table` that are still held (a finished item has none).
pub(super) fn renew_leases(c: &Connection, table: &'static str, ids: &[String], lease_until: i64) -> Result<()> {
    let sql = match table {
        "challenges" => RENEW_CHALLENGE,
        _ => RENEW_ORDER,
    };
    for id in ids {
        execute(c, sql, &[id, &lease_until])?;
    }
    Ok(())
}

/// Due `processing` rows not leased now (`$1` now, `$3` at most), and whether someone held them.
macro_rules! due_sql {
    ($table:literal) => {
        concat!(
            "SELECT id, claimed_until IS NOT NULL FROM ",
            $table,
            " WHERE status = 'processing' AND next_attempt_at <= $1
                AND (claimed_until IS NULL OR claimed_until < $1)
              ORDER BY next_attempt_at LIMIT $2"
        )
    };
}
const DUE_CHALLENGES: &str = due_sql!("challenges");
const DUE_ORDERS: &str = due_sql!("orders");
const LEASE_CHALLENGE: &str = "UPDATE challenges SET claimed_until = $2 WHERE id = $1 AND status = 'processing'";
const LEASE_ORDER: &str = "UPDATE orders SET claimed_until = $2 WHERE id = $1 AND status = 'processing'";
const RENEW_CHALLENGE: &str = "UPDATE challenges SET claimed_until = $2
     WHERE id = $1 AND status = 'processing' AND claimed_until IS NOT NULL AND claimed_until < $2";
const RENEW_ORDER: &str = "UPDATE orders SET claimed_until = $2
     WHERE id = $1 AND status = 'processing' AND claimed_until IS NOT NULL AND claimed_until < $2";

/// Earliest time a `processing` row of `table` (`challenges` or `orders`) is due and not leased.
pub(super) fn next_due(c: &Connection, table: &'static str) -> Result<Option<i64>> {
    let sql = match table {
        "challenges" => {
            "SELECT MIN(MAX(next_attempt_at, COALESCE(claimed_until + 1, 0))) FROM challenges WHERE status = 'processing'"
        }
        _ => "SELECT MIN(MAX(next_attempt_at, COALESCE(claimed_until + 1, 0))) FROM orders WHERE status = 'processing'",
    };
    Ok(optional(c, sql, &[], |r| r.get::<_, Option<i64>>(0))?.flatten())
}
