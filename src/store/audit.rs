//! The audit trail's rows (src/audit.rs writes them, `vacme audit` reads them).

use sqlx::FromRow;

use super::{Db, Result, Store, StoreError, corrupt};
use crate::{acme::Identifier, audit::AuditEvent};

#[derive(FromRow)]
struct RawAudit {
    id: i64,
    at: i64,
    event: String,
    actor: String,
    account_id: Option<String>,
    order_id: Option<String>,
    certificate_id: Option<String>,
    serial: Option<String>,
    identifiers: String,
    client_ip: Option<String>,
    detail: String,
}

/// An audit event as stored, with its sequence number and time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl Store {
    pub async fn insert_audit(&self, e: &AuditEvent, now: i64) -> Result<()> {
        let ids = serde_json::to_string(&e.identifiers).map_err(|err| corrupt("audit_events", err))?;
        const INSERT: &str = "INSERT INTO audit_events (at, event, actor, account_id, order_id, certificate_id, serial,
                                                   identifiers, client_ip, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        if let Some(writer) = self.writer() {
            let e = e.clone();
            return writer
                .run(move |c| {
                    super::lite::execute(
                        c,
                        INSERT,
                        &[
                            &now,
                            &e.event,
                            &e.actor,
                            &e.account_id,
                            &e.order_id,
                            &e.certificate_id,
                            &e.serial,
                            &ids,
                            &e.client_ip,
                            &e.detail,
                        ],
                    )
                    .map(drop)
                })
                .await;
        }
        on!(self, write, |db| {
            sqlx::query(INSERT)
                .bind(now)
                .bind(&e.event)
                .bind(&e.actor)
                .bind(&e.account_id)
                .bind(&e.order_id)
                .bind(&e.certificate_id)
                .bind(&e.serial)
                .bind(ids)
                .bind(&e.client_ip)
                .bind(&e.detail)
                .execute(db)
                .await?;
        });
        Ok(())
    }

    /// A consistent copy of the whole database in a new file (SQLite `VACUUM INTO`), taken while
    /// the server runs. PostgreSQL is backed up with its own tools.
    pub async fn backup_to(&self, path: &std::path::Path) -> Result<()> {
        match &self.db {
            Db::Sqlite { read, .. } => {
                sqlx::query("VACUUM INTO $1").bind(path.display().to_string()).execute(read).await?;
                Ok(())
            }
            Db::Postgres(_) => {
                Err(StoreError::Unsupported("the store is on PostgreSQL: back it up with pg_dump, not vacme backup"))
            }
        }
    }

    /// The newest `limit` events (of one account, or all), newest first.
    pub async fn audit_events(&self, account_id: Option<&str>, limit: i64) -> Result<Vec<AuditRow>> {
        let raw = on!(self, read, |db| {
            sqlx::query_as::<_, RawAudit>(
                "SELECT * FROM audit_events WHERE ($1 IS NULL OR account_id = $1) ORDER BY id DESC LIMIT $2",
            )
            .bind(account_id)
            .bind(limit)
            .fetch_all(db)
            .await?
        });
        raw.into_iter()
            .map(|r| {
                let identifiers: Vec<Identifier> =
                    serde_json::from_str(&r.identifiers).map_err(|e| corrupt("audit_events", e))?;
                Ok(AuditRow {
                    id: r.id,
                    at: r.at,
                    event: AuditEvent {
                        event: r.event,
                        actor: r.actor,
                        account_id: r.account_id,
                        order_id: r.order_id,
                        certificate_id: r.certificate_id,
                        serial: r.serial,
                        identifiers,
                        client_ip: r.client_ip,
                        detail: r.detail,
                    },
                })
            })
            .collect()
    }
}
