//! The audit trail's rows (src/audit.rs writes them, `vacme audit` reads them), on PostgreSQL.

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
}
