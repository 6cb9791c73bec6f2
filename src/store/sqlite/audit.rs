//! The audit trail's rows (`AuditEvent::record` writes them, `vacme audit` reads them, the
//! webhook job follows them with a cursor per webhook), on SQLite.

use super::{Sqlite, execute, one, optional, query};
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

    pub(in crate::store) async fn last_audit_id(&self) -> Result<i64> {
        self.read(|c| one(c, "SELECT coalesce(max(id), 0) FROM audit_events", &[], |r| r.get(0))).await
    }

    pub(in crate::store) async fn audit_after(&self, after_id: i64, until: i64, limit: i64) -> Result<Vec<AuditRow>> {
        let raw = self
            .read(move |c| {
                query(
                    c,
                    "SELECT * FROM audit_events WHERE id > $1 AND at <= $2 ORDER BY id LIMIT $3",
                    &[&after_id, &until, &limit],
                    RawAudit::from_lite,
                )
            })
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
        let name = name.to_owned();
        self.write(move |c| {
            execute(
                c,
                "INSERT INTO webhook_cursors (webhook, last_id) VALUES ($1, $2) ON CONFLICT (webhook) DO NOTHING",
                &[&name, &start_id],
            )?;
            optional(
                c,
                "UPDATE webhook_cursors SET lease_until = $1 WHERE webhook = $2 AND lease_until <= $3 RETURNING last_id",
                &[&lease_until, &name, &now],
                |r| r.get(0),
            )
        })
        .await
    }

    pub(in crate::store) async fn advance_webhook(
        &self,
        name: &str,
        last_id: i64,
        dropped: i64,
        lease_until: i64,
    ) -> Result<()> {
        let name = name.to_owned();
        self.write(move |c| {
            execute(
                c,
                "UPDATE webhook_cursors SET last_id = $1, dropped = dropped + $2, lease_until = $3 WHERE webhook = $4",
                &[&last_id, &dropped, &lease_until, &name],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn webhook_cursors(&self) -> Result<Vec<(String, i64, i64)>> {
        self.read(|c| {
            query(c, "SELECT webhook, last_id, dropped FROM webhook_cursors ORDER BY webhook", &[], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .await
    }

    pub(in crate::store) async fn renewed_by(&self, certificate_id: &str) -> Result<Vec<String>> {
        let id = certificate_id.to_owned();
        self.read(move |c| {
            query(c, "SELECT id FROM certificates WHERE renewed_by = $1 ORDER BY created_at", &[&id], |r| r.get(0))
        })
        .await
    }
}
