//! The certificate lifecycle after issuance: revocation, key rollover, external account binding
//! keys, renewal information, authorization deactivation, clean-up, and what the admin CLI lists.

use sqlx::FromRow;

use super::{Result, Store, StoreError, corrupt, rows};
use crate::{
    acme::Identifier,
    store::{AccountRow, CertificateRow},
};

#[derive(FromRow)]
struct RawRejected {
    id: String,
    serial: String,
    order_id: String,
    account_id: String,
    identifiers: String,
    leaf_pem: String,
    mount: Option<String>,
    reason: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

/// A certificate the CA signed that did not match its order: never delivered, revoked in the CA.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RejectedRow {
    pub id: String,
    /// Lower-case hex.
    pub serial: String,
    pub order_id: String,
    pub account_id: String,
    /// The names the CA put in the certificate.
    pub identifiers: Vec<Identifier>,
    pub leaf_pem: String,
    /// The mount it was signed through (`None`: the default).
    pub mount: Option<String>,
    /// What differs from the order.
    pub reason: String,
    pub created_at: i64,
    /// When the CA confirmed the revocation; `None` while it is still to be told.
    pub revoked_at: Option<i64>,
}

impl TryFrom<RawRejected> for RejectedRow {
    type Error = StoreError;
    fn try_from(r: RawRejected) -> Result<Self> {
        Ok(Self {
            identifiers: serde_json::from_str(&r.identifiers).map_err(|e| corrupt("rejected_certificates", e))?,
            id: r.id,
            serial: r.serial,
            order_id: r.order_id,
            account_id: r.account_id,
            leaf_pem: r.leaf_pem,
            mount: r.mount,
            reason: r.reason,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// What `Store::issuance_rejected` records about the certificate.
#[derive(Clone, Debug, Default)]
pub struct NewRejected {
    pub serial: String,
    pub identifiers: Vec<Identifier>,
    pub leaf_pem: String,
    pub mount: Option<String>,
    pub reason: String,
}

#[derive(FromRow)]
struct RawEabKey {
    kid: String,
    scope: String,
    profile: Option<String>,
    comment: String,
    expires_at: Option<i64>,
    created_at: i64,
    used_at: Option<i64>,
    account_id: Option<String>,
    revoked_at: Option<i64>,
}

impl TryFrom<RawEabKey> for EabKeyRow {
    type Error = StoreError;
    fn try_from(r: RawEabKey) -> Result<Self> {
        Ok(Self {
            scope: serde_json::from_str(&r.scope).map_err(|e| corrupt("eab_keys", e))?,
            kid: r.kid,
            profile: r.profile,
            comment: r.comment,
            expires_at: r.expires_at,
            created_at: r.created_at,
            used_at: r.used_at,
            account_id: r.account_id,
            revoked_at: r.revoked_at,
        })
    }
}

/// An EAB key as the admin sees it. The HMAC key itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EabKeyRow {
    pub kid: String,
    pub scope: Vec<String>,
    pub profile: Option<String>,
    pub comment: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub used_at: Option<i64>,
    pub account_id: Option<String>,
    pub revoked_at: Option<i64>,
}

impl EabKeyRow {
    /// `unused`, `used`, `revoked` or `expired` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.used_at.is_some() {
            "used"
        } else if self.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "unused"
        }
    }
}

/// A new EAB key's record.
#[derive(Clone, Debug, Default)]
pub struct NewEabKey {
    pub kid: String,
    pub scope: Vec<String>,
    pub profile: Option<String>,
    pub comment: String,
    pub expires_at: Option<i64>,
}

/// The outcome of a key rollover (RFC 8555 §7.3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    Changed,
    /// The new key already belongs to this account.
    Conflict(String),
    /// The account's key or status changed under us.
    Stale,
}

/// An account with its order and certificate counts, for `vacme accounts list`.
#[derive(Clone, Debug)]
pub struct AccountSummary {
    pub account: AccountRow,
    pub orders: i64,
    pub certificates: i64,
}

/// What one clean-up run removed or closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub nonces: u64,
    pub expired_orders: u64,
    pub expired_authorizations: u64,
    pub deleted_orders: u64,
}

impl Store {
    // ---- external account binding (RFC 8555 §7.3.4) ----

    pub async fn create_eab_key(&self, key: &NewEabKey, now: i64) -> Result<()> {
        let scope = serde_json::to_string(&key.scope).map_err(|e| corrupt("eab_keys", e))?;
        on!(self, write, |db| {
            sqlx::query(
                "INSERT INTO eab_keys (kid, scope, profile, comment, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&key.kid)
            .bind(scope)
            .bind(&key.profile)
            .bind(&key.comment)
            .bind(key.expires_at)
            .bind(now)
            .execute(db)
            .await?;
        });
        Ok(())
    }

    pub async fn eab_key(&self, kid: &str) -> Result<Option<EabKeyRow>> {
        let raw = on!(self, read, |db| {
            sqlx::query_as::<_, RawEabKey>("SELECT * FROM eab_keys WHERE kid = $1").bind(kid).fetch_optional(db).await?
        });
        raw.map(EabKeyRow::try_from).transpose()
    }

    /// Every EAB key, newest first.
    pub async fn eab_keys(&self) -> Result<Vec<EabKeyRow>> {
        let raw = on!(self, read, |db| {
            sqlx::query_as::<_, RawEabKey>("SELECT * FROM eab_keys ORDER BY created_at DESC, kid").fetch_all(db).await?
        });
        raw.into_iter().map(EabKeyRow::try_from).collect()
    }

    /// Stops an EAB key from binding new accounts. `false` if there is no such key or it was
    /// already revoked. Accounts bound with it are not touched (`accounts deactivate` is for them).
    pub async fn revoke_eab_key(&self, kid: &str, now: i64) -> Result<bool> {
        let done = on!(self, write, |db| {
            sqlx::query("UPDATE eab_keys SET revoked_at = $2 WHERE kid = $1 AND revoked_at IS NULL")
                .bind(kid)
                .bind(now)
                .execute(db)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    // ---- key rollover (RFC 8555 §7.3.5) ----

    /// Replaces the account's key, if it still has `old_thumbprint` and is valid.
    pub async fn change_key(
        &self,
        account_id: &str,
        old_thumbprint: &str,
        new_thumbprint: &str,
        new_jwk: &serde_json::Value,
    ) -> Result<KeyChange> {
        if let Some(other) = self.account_by_thumbprint(new_thumbprint).await? {
            return Ok(KeyChange::Conflict(other.id));
        }
        let done = on!(self, write, |db| {
            sqlx::query(
                "UPDATE accounts SET key_thumbprint = $3, jwk = $4 WHERE id = $1 AND key_thumbprint = $2 AND status = 'valid'",
            )
            .bind(account_id)
            .bind(old_thumbprint)
            .bind(new_thumbprint)
            .bind(new_jwk.to_string())
            .execute(db)
            .await
            .map(|d| d.rows_affected())
        });
        match done {
            Ok(1) => Ok(KeyChange::Changed),
            Ok(_) => Ok(KeyChange::Stale),
            // Another account took the key between the check and the update.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                match self.account_by_thumbprint(new_thumbprint).await? {
                    Some(other) => Ok(KeyChange::Conflict(other.id)),
                    None => Ok(KeyChange::Stale),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    // ---- revocation (RFC 8555 §7.6) ----

    /// Certificates with this serial (lower-case hex; leading zeros do not matter), oldest first.
    pub async fn certificates_by_serial(&self, serial: &str) -> Result<Vec<CertificateRow>> {
        let raw = on!(self, read, |db| {
            sqlx::query_as::<_, rows::RawCertificate>(
                "SELECT * FROM certificates WHERE ltrim(serial, '0') = ltrim($1, '0') ORDER BY created_at, id",
            )
            .bind(serial)
            .fetch_all(db)
            .await?
        });
        raw.into_iter().map(CertificateRow::try_from).collect()
    }

    /// Records a revocation. `false` if the certificate was already revoked (or does not exist).
    pub async fn revoke_certificate(&self, id: &str, reason: u8, now: i64) -> Result<bool> {
        let done = on!(self, write, |db| {
            sqlx::query(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .bind(i64::from(reason))
            .execute(db)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// The CA has the revocation too.
    pub async fn ca_revoked(&self, id: &str, now: i64) -> Result<()> {
        on!(self, write, |db| {
            sqlx::query("UPDATE certificates SET ca_revoked_at = $2 WHERE id = $1 AND ca_revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(db)
                .await?;
        });
        Ok(())
    }

    /// A revocation the CA made on its own (seen through renewal info): recorded as
    /// `unspecified`, already known to the CA.
    pub async fn revoked_by_ca(&self, id: &str, revoked_at: i64) -> Result<()> {
        on!(self, write, |db| {
            sqlx::query(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = 0, ca_revoked_at = $2
                 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(revoked_at)
            .execute(db)
            .await?;
        });
        Ok(())
    }

    /// Revocations the CA has not confirmed yet (it was down when they were made).
    pub async fn pending_ca_revocations(&self, limit: i64) -> Result<Vec<CertificateRow>> {
        let raw = on!(self, read, |db| {
            sqlx::query_as::<_, rows::RawCertificate>(
                "SELECT * FROM certificates WHERE revoked_at IS NOT NULL AND ca_revoked_at IS NULL ORDER BY revoked_at LIMIT $1",
            )
            .bind(limit)
            .fetch_all(db)
            .await?
        });
        raw.into_iter().map(CertificateRow::try_from).collect()
    }

    // ---- certificates the CA signed wrongly ----

    /// The CA signed something other than the order (a post-sign mismatch): records the
    /// certificate (revocation pending) and makes the order `invalid` with `problem`, in one
    /// transaction, so the serial is known before anyone tries to revoke it. Returns its ID.
    pub async fn issuance_rejected(
        &self,
        order: &super::OrderRow,
        cert: &NewRejected,
        problem: &serde_json::Value,
        now: i64,
    ) -> Result<String> {
        let id = self.random_id()?;
        let names = serde_json::to_string(&cert.identifiers).map_err(|e| corrupt("rejected_certificates", e))?;
        on!(self, write, |db| {
            let mut tx = db.begin().await?;
            sqlx::query(
                "INSERT INTO rejected_certificates
                     (id, serial, order_id, account_id, identifiers, leaf_pem, mount, reason, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&id)
            .bind(&cert.serial)
            .bind(&order.id)
            .bind(&order.account_id)
            .bind(&names)
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
            .bind(problem.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(id)
    }

    /// The CA confirmed the revocation of a rejected certificate.
    pub async fn rejected_revoked(&self, id: &str, now: i64) -> Result<()> {
        on!(self, write, |db| {
            sqlx::query("UPDATE rejected_certificates SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(db)
                .await?;
        });
        Ok(())
    }

    /// Rejected certificates the CA has not confirmed revoked yet, oldest first.
    pub async fn pending_rejected_revocations(&self, limit: i64) -> Result<Vec<RejectedRow>> {
        let raw = on!(self, read, |db| {
            sqlx::query_as::<_, RawRejected>(
                "SELECT * FROM rejected_certificates WHERE revoked_at IS NULL ORDER BY created_at, id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(db)
            .await?
        });
        raw.into_iter().map(RejectedRow::try_from).collect()
    }

    /// Rejected certificates, newest first; only `account_id`'s when given.
    pub async fn rejected_certificates(&self, account_id: Option<&str>) -> Result<Vec<RejectedRow>> {
        let raw = on!(self, read, |db| {
            sqlx::query_as::<_, RawRejected>(
                "SELECT * FROM rejected_certificates WHERE $1 IS NULL OR account_id = $1 ORDER BY created_at DESC, id",
            )
            .bind(account_id)
            .fetch_all(db)
            .await?
        });
        raw.into_iter().map(RejectedRow::try_from).collect()
    }

    // ---- renewal information (RFC 9773) ----

    pub async fn certificate_by_ari_id(&self, ari_id: &str) -> Result<Option<CertificateRow>> {
        let raw = on!(self, read, |db| {
            sqlx::query_as::<_, rows::RawCertificate>("SELECT * FROM certificates WHERE ari_id = $1 LIMIT 1")
                .bind(ari_id)
                .fetch_optional(db)
                .await?
        });
        raw.map(CertificateRow::try_from).transpose()
    }

    /// Certificates recorded before renewal information existed, to give them a certID.
    pub async fn certificates_without_ari_id(&self) -> Result<Vec<(String, String)>> {
        Ok(on!(self, read, |db| {
            sqlx::query_as::<_, (String, String)>("SELECT id, chain_pem FROM certificates WHERE ari_id IS NULL")
                .fetch_all(db)
                .await?
        }))
    }

    pub async fn set_ari_id(&self, id: &str, ari_id: &str) -> Result<()> {
        on!(self, write, |db| {
            sqlx::query("UPDATE certificates SET ari_id = $2 WHERE id = $1").bind(id).bind(ari_id).execute(db).await?;
        });
        Ok(())
    }

    // ---- authorizations (RFC 8555 §7.5.2) ----

    /// The client gives up an authorization: `pending` or `valid` -> `deactivated`, and an order
    /// still waiting on it becomes `invalid` (RFC 8555 §7.1.6). `false` when nothing moved.
    pub async fn deactivate_authz(&self, id: &str, order_problem: &serde_json::Value, now: i64) -> Result<bool> {
        on!(self, write, |db, pg| {
            let mut tx = db.begin().await?;
            if pg {
                // Rows in the order every PostgreSQL transaction takes them: the order before its
                // authorizations (see `challenge_succeeded`), so the two cannot deadlock.
                sqlx::query(
                    "SELECT 1 FROM orders WHERE id = (SELECT order_id FROM authorizations WHERE id = $1) FOR UPDATE",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            let order_id = sqlx::query_scalar::<_, String>(
                "UPDATE authorizations SET status = 'deactivated'
                 WHERE id = $1 AND status IN ('pending', 'valid') AND expires_at > $2
                 RETURNING order_id",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(order_id) = order_id else {
                tx.rollback().await?;
                return Ok(false);
            };
            sqlx::query(
                "UPDATE orders SET status = 'invalid', error = $2, updated_at = $3 WHERE id = $1 AND status IN ('pending', 'ready')",
            )
            .bind(&order_id)
            .bind(order_problem.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE challenges SET status = 'invalid' WHERE authz_id = $1 AND status = 'pending'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    // ---- clean-up ----

    /// Closes what expired and deletes what is no longer anyone's business: expired nonces,
    /// and orders that never got a certificate and expired more than `retention_secs` ago (with
    /// their authorizations and challenges). Certificates, valid orders and accounts stay.
    pub async fn cleanup(
        &self,
        now: i64,
        retention_secs: i64,
        order_problem: &serde_json::Value,
    ) -> Result<CleanupReport> {
        let mut report = CleanupReport { nonces: self.purge_nonces(now).await?, ..Default::default() };
        let cutoff = now - retention_secs;
        let stale = "SELECT id FROM orders WHERE status = 'invalid' AND expires_at <= $1 AND certificate_id IS NULL
                     AND id NOT IN (SELECT order_id FROM certificates)";
        on!(self, write, |db| {
            report.expired_authorizations = sqlx::query(
                "UPDATE authorizations SET status = 'expired' WHERE status = 'pending' AND expires_at <= $1",
            )
            .bind(now)
            .execute(db)
            .await?
            .rows_affected();
            report.expired_orders = sqlx::query(
                "UPDATE orders SET status = 'invalid', error = COALESCE(error, $2), updated_at = $1
                 WHERE status IN ('pending', 'ready') AND expires_at <= $1",
            )
            .bind(now)
            .bind(order_problem.to_string())
            .execute(db)
            .await?
            .rows_affected();
            let mut tx = db.begin().await?;
            sqlx::query(&format!(
                "DELETE FROM challenges WHERE authz_id IN (SELECT id FROM authorizations WHERE order_id IN ({stale}))"
            ))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!("DELETE FROM authorizations WHERE order_id IN ({stale})"))
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            report.deleted_orders = sqlx::query(&format!("DELETE FROM orders WHERE id IN ({stale})"))
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
        });
        Ok(report)
    }

    // ---- what the admin CLI lists ----

    /// Every account with its counts, oldest first.
    pub async fn account_summaries(&self) -> Result<Vec<AccountSummary>> {
        on!(self, read, |db| {
            let raw = sqlx::query_as::<_, rows::RawAccount>("SELECT * FROM accounts ORDER BY created_at, id")
                .fetch_all(db)
                .await?;
            let mut out = Vec::with_capacity(raw.len());
            for r in raw {
                let account = AccountRow::try_from(r)?;
                let (orders, certificates) = sqlx::query_as::<_, (i64, i64)>(
                    "SELECT (SELECT COUNT(*) FROM orders WHERE account_id = $1),
                            (SELECT COUNT(*) FROM certificates WHERE account_id = $1)",
                )
                .bind(&account.id)
                .fetch_one(db)
                .await?;
                out.push(AccountSummary { account, orders, certificates });
            }
            Ok(out)
        })
    }

    /// Certificates, newest first; only `account_id`'s when given.
    pub async fn certificates(&self, account_id: Option<&str>) -> Result<Vec<CertificateRow>> {
        let raw = on!(self, read, |db| {
            sqlx::query_as::<_, rows::RawCertificate>(
                "SELECT * FROM certificates WHERE $1 IS NULL OR account_id = $1 ORDER BY created_at DESC, id",
            )
            .bind(account_id)
            .fetch_all(db)
            .await?
        });
        raw.into_iter().map(CertificateRow::try_from).collect()
    }

    /// Admin deactivation: like the account's own (RFC 8555 §7.3.6). `None` if there is no such
    /// account, `Some(false)` if it was not valid.
    pub async fn admin_deactivate_account(&self, id: &str, now: i64) -> Result<Option<bool>> {
        match self.account(id).await? {
            Some(a) if a.status == crate::acme::types::AccountStatus::Valid => {
                self.deactivate_account(id, now).await?;
                Ok(Some(true))
            }
            Some(_) => Ok(Some(false)),
            None => Ok(None),
        }
    }
}
