//! Issuance, on PostgreSQL: where an order goes from `ready` through `processing` to `valid`
//! (with its certificate) or `invalid`.

use super::{Postgres, load_order, orders};
use crate::store::{Claimed, NewCertificate, NewRejected, OrderRow, Result, StoreError};

/// The new certificate `$1` renews the account's (`$2`) earlier certificates for the same names
/// (`$3`, the order's identifiers as stored). The first successor is kept.
const RENEWS_SAME_NAMES: &str = "UPDATE certificates SET renewed_by = $1
     WHERE account_id = $2 AND identifiers = $3 AND renewed_by IS NULL AND id <> $1";
/// The new certificate `$1` renews the one its order said it `replaces` (certID `$2`, RFC 9773).
const RENEWS_REPLACED: &str =
    "UPDATE certificates SET renewed_by = $1 WHERE ari_id = $2 AND renewed_by IS NULL AND id <> $1";

impl Postgres {
    pub(in crate::store) async fn begin_issuance(&self, order_id: &str, csr_der: &[u8], now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE orders SET status = 'processing', csr = $2, attempts = 0, next_attempt_at = $3, updated_at = $3
             WHERE id = $1 AND status = 'ready' AND expires_at > $3",
        )
        .bind(order_id)
        .bind(csr_der)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(in crate::store) async fn claim_due_issuances(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Claimed<OrderRow>> {
        let (ids, taken_over) = orders::claim_due(&self.pool, "orders", now, lease_until, limit).await?;
        let mut conn = self.pool.acquire().await?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            claimed.extend(load_order(&mut conn, &id).await?);
        }
        Ok(Claimed { items: claimed, taken_over })
    }

    pub(in crate::store) async fn renew_issuance_leases(&self, ids: Vec<String>, lease_until: i64) -> Result<()> {
        orders::renew_leases(&self.pool, "orders", &ids, lease_until).await
    }

    pub(in crate::store) async fn mark_signing(&self, order_id: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE orders SET sign_started_at = COALESCE(sign_started_at, $2) WHERE id = $1 AND status = 'processing'",
        )
        .bind(order_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn issuance_unsent(&self, order_id: &str, next_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE orders SET attempts = attempts + 1, next_attempt_at = $2, claimed_until = NULL,
             sign_started_at = NULL WHERE id = $1 AND status = 'processing'",
        )
        .bind(order_id)
        .bind(next_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn issuance_retry(&self, order_id: &str, next_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE orders SET attempts = attempts + 1, next_attempt_at = $2, claimed_until = NULL
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(order_id)
        .bind(next_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn issuance_failed(
        &self,
        order_id: &str,
        problem: &serde_json::Value,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE orders SET status = 'invalid', error = $2, claimed_until = NULL, updated_at = $3
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(order_id)
        .bind(problem.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn issuance_succeeded(
        &self,
        order: &OrderRow,
        cert: &NewCertificate,
        cert_id: &str,
        identifiers: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO certificates (id, order_id, account_id, serial, issuer, identifiers, chain_pem,
                                       not_before, not_after, created_at, profile, ari_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(cert_id)
        .bind(&order.id)
        .bind(&order.account_id)
        .bind(&cert.serial)
        .bind(&cert.issuer)
        .bind(identifiers)
        .bind(&cert.chain_pem)
        .bind(cert.not_before)
        .bind(cert.not_after)
        .bind(now)
        .bind(&order.profile)
        .bind(&cert.ari_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(RENEWS_SAME_NAMES)
            .bind(cert_id)
            .bind(&order.account_id)
            .bind(identifiers)
            .execute(&mut *tx)
            .await?;
        if let Some(replaces) = &order.replaces {
            sqlx::query(RENEWS_REPLACED).bind(cert_id).bind(replaces).execute(&mut *tx).await?;
        }
        let done = sqlx::query(
            "UPDATE orders SET status = 'valid', certificate_id = $2, claimed_until = NULL, updated_at = $3
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(&order.id)
        .bind(cert_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Corrupt { table: "orders", what: format!("order {} left processing", order.id) });
        }
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn issuance_rejected(
        &self,
        id: &str,
        order: &OrderRow,
        cert: &NewRejected,
        names: &str,
        problem: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO rejected_certificates
                 (id, serial, order_id, account_id, identifiers, leaf_pem, mount, reason, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(&cert.serial)
        .bind(&order.id)
        .bind(&order.account_id)
        .bind(names)
        .bind(&cert.leaf_pem)
        .bind(&cert.mount)
        .bind(&cert.reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE orders SET status = 'invalid', error = $2, claimed_until = NULL, updated_at = $3
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(&order.id)
        .bind(problem)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn next_issuance_due(&self) -> Result<Option<i64>> {
        orders::next_due(&self.pool, "orders").await
    }
}
