//! Clean-up, counts and the admin CLI's account listing, on PostgreSQL.

use super::Postgres;
use crate::store::{AccountRow, AccountSummary, CleanupReport, Counts, Result, rows::RawAccount};

/// Orders that never got a certificate and expired before `$1`.
const STALE: &str = "SELECT id FROM orders WHERE status = 'invalid' AND certificate_id IS NULL AND expires_at <= $1
                     AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.order_id = orders.id)";

impl Postgres {
    pub(in crate::store) async fn cleanup(
        &self,
        now: i64,
        retention_secs: i64,
        problem: &str,
    ) -> Result<CleanupReport> {
        let cutoff = now - retention_secs;
        let mut report = CleanupReport { nonces: self.purge_nonces(now).await?, ..Default::default() };
        report.expired_authorizations =
            sqlx::query("UPDATE authorizations SET status = 'expired' WHERE status = 'pending' AND expires_at <= $1")
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected();
        report.expired_orders = sqlx::query(
            "UPDATE orders SET status = 'invalid', error = COALESCE(error, $2), updated_at = $1
             WHERE status IN ('pending', 'ready') AND expires_at <= $1",
        )
        .bind(now)
        .bind(problem)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "DELETE FROM challenges WHERE authz_id IN (SELECT id FROM authorizations WHERE order_id IN ({STALE}))"
        ))
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!("DELETE FROM authorizations WHERE order_id IN ({STALE})"))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
        report.deleted_orders = sqlx::query(&format!("DELETE FROM orders WHERE id IN ({STALE})"))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(report)
    }

    pub(in crate::store) async fn counts(&self) -> Result<Counts> {
        let (accounts, orders, authorizations, challenges, certificates) =
            sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(
                "/* full listing */ SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM orders),
                        (SELECT COUNT(*) FROM authorizations), (SELECT COUNT(*) FROM challenges),
                        (SELECT COUNT(*) FROM certificates)",
            )
            .fetch_one(&self.pool)
            .await?;
        Ok(Counts { accounts, orders, authorizations, challenges, certificates })
    }

    pub(in crate::store) async fn totals(&self) -> Result<(i64, i64)> {
        let (accounts, certificates) = sqlx::query_as::<_, (Option<i64>, Option<i64>)>(
            "SELECT (SELECT n FROM totals WHERE name = 'accounts'), (SELECT n FROM totals WHERE name = 'certificates')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((accounts.unwrap_or(0), certificates.unwrap_or(0)))
    }

    pub(in crate::store) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(in crate::store) async fn account_summaries(&self) -> Result<Vec<AccountSummary>> {
        let raw = sqlx::query_as::<_, RawAccount>("/* full listing */ SELECT * FROM accounts ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            let account = AccountRow::try_from(r)?;
            let (orders, certificates) = sqlx::query_as::<_, (i64, i64)>(
                "SELECT (SELECT COUNT(*) FROM orders WHERE account_id = $1),
                        (SELECT COUNT(*) FROM certificates WHERE account_id = $1)",
            )
            .bind(&account.id)
            .fetch_one(&self.pool)
            .await?;
            out.push(AccountSummary { account, orders, certificates });
        }
        Ok(out)
    }
}
