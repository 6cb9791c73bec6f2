//! The audit trail's rows (src/audit.rs writes them, `vacme audit` reads them), on SQLite.

use super::{Sqlite, execute, query};
use crate::store::{AuditEvent, AuditRow, Result, rows::RawAudit};

impl Sqlite {
    pub(in crate::store) async fn insert_audit(&self, e: AuditEvent, identifiers: String, now: i64) -> Result<()> {
        self.write(move |c| {
            execute(
                c,
                "INSERT INTO audit_events (at, event, actor, account_id, order_id, certificate_id, serial,
                                           identifiers, client_ip, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &now,
                    &e.event,
                    &e.actor,
                    &e.account_id,
                    &e.order_id,
                    &e.certificate_id,
                    &e.serial,
                    &identifiers,
                    &e.client_ip,
                    &e.detail,
                ],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn audit_events(&self, account_id: Option<&str>, limit: i64) -> Result<Vec<AuditRow>> {
        let account_id = account_id.map(str::to_owned);
        let raw = self
            .read(move |c| match &account_id {
                Some(account_id) => query(
                    c,
                    "SELECT * FROM audit_events WHERE account_id = $1 ORDER BY id DESC LIMIT $2",
                    &[account_id, &limit],
                    RawAudit::from_lite,
                ),
                // The newest rows, read backwards from the end of the table.
                None => query(
                    c,
                    "/* full listing */ SELECT * FROM audit_events ORDER BY id DESC LIMIT $1",
                    &[&limit],
                    RawAudit::from_lite,
                ),
            })
            .await?;
        raw.into_iter().map(AuditRow::try_from).collect()
    }

    pub(in crate::store) async fn purge_audit(&self, before: i64) -> Result<u64> {
        let done = self.write(move |c| execute(c, "DELETE FROM audit_events WHERE at < $1", &[&before])).await?;
        Ok(done as u64)
    }
}
