//! The PostgreSQL backend, through sqlx: the store several replicas share. Statements run under
//! READ COMMITTED at the same time as other replicas', so the few transactions that read before
//! they write take a row or advisory lock first (each says why). Each aggregate's statements are
//! in its own file.

mod accounts;
mod admin;
mod audit;
mod certificates;
mod issuance;
mod limits;
mod nonces;
mod orders;
#[cfg(test)]
mod plan;
mod upkeep;

use std::str::FromStr;

use sqlx::{
    PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{AuthzRow, OrderRow, Result, StoreError, rows};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections of one replica to PostgreSQL: request handlers and the workers share them.
const CONNECTIONS: u32 = 16;

/// A PostgreSQL store.
#[derive(Clone, Debug)]
pub(super) struct Postgres {
    pool: PgPool,
}

impl Postgres {
    /// Connects and migrates. Replicas starting together: the migrator holds an advisory lock
    /// while it runs.
    pub(super) async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new().max_connections(CONNECTIONS).connect_with(opts).await?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Migrate(e.to_string()))?;
        Ok(Self { pool })
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool, for copy-store.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// An order with its authorization IDs as a JSON array text, in the order of its identifiers.
const ORDER_BY_ID: &str = "SELECT o.*,
    (SELECT COALESCE(json_agg(id ORDER BY position), '[]')::text FROM authorizations WHERE order_id = o.id) AS authz_ids
    FROM orders o WHERE o.id = $1";
const AUTHZ_BY_ID: &str = "SELECT * FROM authorizations WHERE id = $1";
const CHALLENGES_OF_AUTHZ: &str = "SELECT * FROM challenges WHERE authz_id = $1 ORDER BY type";

/// An order and its authorization IDs (one round trip), on a connection or in a transaction.
async fn load_order(c: &mut PgConnection, id: &str) -> Result<Option<OrderRow>> {
    let Some(raw) = sqlx::query_as::<_, rows::RawOrder>(ORDER_BY_ID).bind(id).fetch_optional(&mut *c).await? else {
        return Ok(None);
    };
    OrderRow::from_raw(raw).map(Some)
}

/// An authorization with its challenges.
async fn load_authz(c: &mut PgConnection, id: &str) -> Result<Option<AuthzRow>> {
    let Some(raw) = sqlx::query_as::<_, rows::RawAuthz>(AUTHZ_BY_ID).bind(id).fetch_optional(&mut *c).await? else {
        return Ok(None);
    };
    let challs = sqlx::query_as::<_, rows::RawChallenge>(CHALLENGES_OF_AUTHZ).bind(id).fetch_all(&mut *c).await?;
    AuthzRow::from_raw(raw, challs).map(Some)
}

/// The authorization and the order of a challenge.
async fn authz_and_order_of(c: &mut PgConnection, challenge_id: &str) -> Result<(String, String)> {
    Ok(sqlx::query_as::<_, (String, String)>(
        "SELECT a.id, a.order_id FROM challenges c JOIN authorizations a ON a.id = c.authz_id WHERE c.id = $1",
    )
    .bind(challenge_id)
    .fetch_one(&mut *c)
    .await?)
}
