//! The audit trail's rows (`AuditEvent::record` writes them, `vacme audit` reads them, the
//! webhook job follows them with a cursor per webhook), on PostgreSQL.

use super::Postgres;
use crate::store::{AuditEvent, AuditRow, Result, rows::RawAudit};

impl Postgres {
    pub(in crate::store) async fn insert_audit(&self, e: &AuditEvent, identifiers: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_events (at, event, actor, account_id, order_id, certificate_id, serial,
                                       identifiers, client_ip, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(now)
        .bind(&e.event)
        .bind(&e.actor)
        .bind(&e.account_id)
        .bind(&e.order_id)
        .bind(&e.certificate_id)
        .bind(&e.serial)
        .bind(identifiers)
        .bind(&e.client_ip)
        .bind(&e.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn audit_events(&self, account_id: Option<&str>, limit: i64) -> Result<Vec<AuditRow>> {
        let raw = sqlx::query_as::<_, RawAudit>(
            "/* full listing */ SELECT * FROM audit_events WHERE ($1 IS NULL OR account_id = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(account_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        raw.into_iter().map(AuditRow::try_from).collect()
    }

    pub(in crate::store) async fn purge_audit(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM audit_events WHERE at < $1").bind(before).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    pub(in crate::store) async fn last_audit_id(&self) -> Result<i64> {
        let id: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM audit_events").fetch_one(&self.pool).await?;
        Ok(id)
    }

    pub(in crate::store) async fn audit_after(&self, after_id: i64, until: i64, limit: i64) -> Result<Vec<AuditRow>> {
        let raw =
            sqlx::query_as::<_, RawAudit>("SELECT * FROM audit_events WHERE id > $1 AND at <= $2 ORDER BY id LIMIT $3")
                .bind(after_id)
                .bind(until)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        raw.into_iter().map(AuditRow::try_from).collect()
    }

    pub(in crate::store) async fn claim_webhook(
        &self,
        name: &str,
        start_id: i64,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<i64>> {
        sqlx::query("INSERT INTO webhook_cursors (webhook, last_id) VALUES ($1, $2) ON CONFLICT (webhook) DO NOTHING")
            .bind(name)
            .bind(start_id)
            .execute(&self.pool)
            .await?;
        let last: Option<i64> = sqlx::query_scalar(
            "UPDATE webhook_cursors SET lease_until = $1 WHERE webhook = $2 AND lease_until <= $3 RETURNING last_id",
        )
        .bind(lease_until)
        .bind(name)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(last)
    }

    pub(in crate::store) async fn advance_webhook(
        &self,
        name: &str,
        last_id: i64,
        dropped: i64,
        lease_until: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_cursors SET last_id = $1, dropped = dropped + $2, lease_until = $3 WHERE webhook = $4",
        )
        .bind(last_id)
        .bind(dropped)
        .bind(lease_until)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn webhook_cursors(&self) -> Result<Vec<(String, i64, i64)>> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT webhook, last_id, dropped FROM webhook_cursors ORDER BY webhook")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows)
    }

    pub(in crate::store) async fn renewed_by(&self, certificate_id: &str) -> Result<Vec<String>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM certificates WHERE renewed_by = $1 ORDER BY created_at")
                .bind(certificate_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(ids)
    }
}
