//! Nonces (RFC 8555 §6.5) shared by every replica, on PostgreSQL.

use super::Postgres;
use crate::store::Result;

impl Postgres {
    pub(in crate::store) async fn new_nonce(&self, nonce: &str, expires_at: i64) -> Result<()> {
        sqlx::query("INSERT INTO nonces (value, expires_at) VALUES ($1, $2)")
            .bind(nonce)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn redeem_nonce(&self, nonce: &str, now: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM nonces WHERE value = $1 AND expires_at > $2")
            .bind(nonce)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn purge_nonces(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM nonces WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    pub(in crate::store) async fn nonce_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nonces").fetch_one(&self.pool).await?;
        Ok(n.max(0) as u64)
    }
}
