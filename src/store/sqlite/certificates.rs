//! Certificates after issuance, on SQLite: revocation (RFC 8555 §7.6), renewal information
//! (RFC 9773), and the certificates the CA signed wrongly.

use super::{Sqlite, execute, one, optional, query};
use crate::store::{
    CertificateRow, RejectedRow, Result,
    rows::{RawCertificate, RawRejected},
};

impl Sqlite {
    pub(in crate::store) async fn certificate(&self, id: &str) -> Result<Option<CertificateRow>> {
        self.certificate_where("SELECT * FROM certificates WHERE id = $1", id).await
    }

    pub(in crate::store) async fn certificate_by_ari_id(&self, ari_id: &str) -> Result<Option<CertificateRow>> {
        self.certificate_where("SELECT * FROM certificates WHERE ari_id = $1 LIMIT 1", ari_id).await
    }

    async fn certificate_where(&self, sql: &'static str, key: &str) -> Result<Option<CertificateRow>> {
        let key = key.to_owned();
        let raw = self.read(move |c| optional(c, sql, &[&key], RawCertificate::from_lite)).await?;
        raw.map(CertificateRow::try_from).transpose()
    }

    /// `sql` with `$1 = arg`, as certificates.
    async fn certificates_where<A: rusqlite::ToSql + Send + 'static>(
        &self,
        sql: &'static str,
        arg: A,
    ) -> Result<Vec<CertificateRow>> {
        let raw = self.read(move |c| query(c, sql, &[&arg], RawCertificate::from_lite)).await?;
        raw.into_iter().map(CertificateRow::try_from).collect()
    }

    pub(in crate::store) async fn certificates_by_serial(&self, serial: &str) -> Result<Vec<CertificateRow>> {
        // `ltrim(serial, '0')` is an indexed expression (certificates_serial_digits).
        self.certificates_where(
            "SELECT * FROM certificates WHERE ltrim(serial, '0') = ltrim($1, '0') ORDER BY created_at, id",
            serial.to_owned(),
        )
        .await
    }

    pub(in crate::store) async fn certificates(&self, account_id: Option<&str>) -> Result<Vec<CertificateRow>> {
        self.certificates_where(
            "/* full listing */ SELECT * FROM certificates WHERE $1 IS NULL OR account_id = $1
             ORDER BY created_at DESC, id",
            account_id.map(str::to_owned),
        )
        .await
    }

    pub(in crate::store) async fn live_certificates(&self) -> Result<Vec<CertificateRow>> {
        // A scan of the partial index certificates_live: only certificates neither renewed nor revoked.
        self.read(|c| {
            query(
                c,
                "SELECT * FROM certificates WHERE renewed_by IS NULL AND revoked_at IS NULL ORDER BY not_after, id",
                &[],
                RawCertificate::from_lite,
            )
        })
        .await?
        .into_iter()
        .map(CertificateRow::try_from)
        .collect()
    }

    pub(in crate::store) async fn next_expiries(&self, now: i64, limit: i64) -> Result<Vec<CertificateRow>> {
        let raw = self
            .read(move |c| {
                query(
                    c,
                    "SELECT * FROM certificates WHERE renewed_by IS NULL AND revoked_at IS NULL AND not_after > $1
                     ORDER BY not_after LIMIT $2",
                    &[&now, &limit],
                    RawCertificate::from_lite,
                )
            })
            .await?;
        raw.into_iter().map(CertificateRow::try_from).collect()
    }

    /// The validity of every certificate neither renewed nor revoked (certificates_live).
    pub(in crate::store) async fn live_lifetimes(&self) -> Result<Vec<(i64, i64)>> {
        self.read(|c| {
            query(
                c,
                "SELECT not_before, not_after FROM certificates WHERE renewed_by IS NULL AND revoked_at IS NULL",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    /// Renewed and revoked certificates, as the triggers count them.
    pub(in crate::store) async fn final_totals(&self) -> Result<(i64, i64)> {
        self.read(|c| {
            one(
                c,
                "SELECT (SELECT n FROM totals WHERE name = 'renewed'), (SELECT n FROM totals WHERE name = 'revoked')",
                &[],
                |r| Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
            )
        })
        .await
    }

    pub(in crate::store) async fn pending_ca_revocations(&self, limit: i64) -> Result<Vec<CertificateRow>> {
        self.certificates_where(
            "SELECT * FROM certificates WHERE revoked_at IS NOT NULL AND ca_revoked_at IS NULL ORDER BY revoked_at LIMIT $1",
            limit,
        )
        .await
    }

    pub(in crate::store) async fn revoke_certificate(&self, id: &str, reason: u8, now: i64) -> Result<bool> {
        let id = id.to_owned();
        let done = self
            .write(move |c| {
                execute(
                    c,
                    "UPDATE certificates SET revoked_at = $2, revocation_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &now, &i64::from(reason)],
                )
            })
            .await?;
        Ok(done == 1)
    }

    pub(in crate::store) async fn ca_revoked(&self, id: &str, now: i64) -> Result<()> {
        self.update_one("UPDATE certificates SET ca_revoked_at = $2 WHERE id = $1 AND ca_revoked_at IS NULL", id, now)
            .await
    }

    pub(in crate::store) async fn revoked_by_ca(&self, id: &str, revoked_at: i64) -> Result<()> {
        self.update_one(
            "UPDATE certificates SET revoked_at = $2, revocation_reason = 0, ca_revoked_at = $2
             WHERE id = $1 AND revoked_at IS NULL",
            id,
            revoked_at,
        )
        .await
    }

    /// `sql` with `$1 = id` and `$2 = at`.
    async fn update_one(&self, sql: &'static str, id: &str, at: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| execute(c, sql, &[&id, &at]).map(drop)).await
    }

    pub(in crate::store) async fn certificates_without_ari_id(&self) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            query(c, "SELECT id, chain_pem FROM certificates WHERE ari_id IS NULL", &[], |r| Ok((r.get(0)?, r.get(1)?)))
        })
        .await
    }

    pub(in crate::store) async fn set_ari_id(&self, id: &str, ari_id: &str) -> Result<()> {
        let (id, ari_id) = (id.to_owned(), ari_id.to_owned());
        self.write(move |c| execute(c, "UPDATE certificates SET ari_id = $2 WHERE id = $1", &[&id, &ari_id]).map(drop))
            .await
    }

    // ---- certificates the CA signed wrongly ----

    pub(in crate::store) async fn rejected_revoked(&self, id: &str, now: i64) -> Result<()> {
        self.update_one(
            "UPDATE rejected_certificates SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            id,
            now,
        )
        .await
    }

    pub(in crate::store) async fn pending_rejected_revocations(&self, limit: i64) -> Result<Vec<RejectedRow>> {
        let raw = self
            .read(move |c| {
                query(
                    c,
                    "SELECT * FROM rejected_certificates WHERE revoked_at IS NULL ORDER BY created_at, id LIMIT $1",
                    &[&limit],
                    RawRejected::from_lite,
                )
            })
            .await?;
        raw.into_iter().map(RejectedRow::try_from).collect()
    }

    pub(in crate::store) async fn rejected_certificates(&self, account_id: Option<&str>) -> Result<Vec<RejectedRow>> {
        let account_id = account_id.map(str::to_owned);
        let raw = self
            .read(move |c| {
                query(
                    c,
                    "/* full listing */ SELECT * FROM rejected_certificates WHERE $1 IS NULL OR account_id = $1
                     ORDER BY created_at DESC, id",
                    &[&account_id],
                    RawRejected::from_lite,
                )
            })
            .await?;
        raw.into_iter().map(RejectedRow::try_from).collect()
    }

    pub(in crate::store) async fn newly_overdue(
        &self,
        end_percent: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<CertificateRow>> {
        self.crossings(
            "SELECT * FROM certificates WHERE renewed_by IS NULL AND revoked_at IS NULL AND not_after > $2
                     AND overdue_notified_at IS NULL AND not_before + (not_after - not_before) * $1 / 100 <= $2
                     ORDER BY not_after LIMIT $3",
            end_percent,
            now,
            limit,
        )
        .await
    }

    pub(in crate::store) async fn newly_expiring(
        &self,
        before: i64,
        now: i64,
        limit: i64,
    ) -> Result<Vec<CertificateRow>> {
        self.crossings(
            "SELECT * FROM certificates WHERE renewed_by IS NULL AND revoked_at IS NULL AND not_after > $2
                     AND expiring_notified_at IS NULL AND not_after <= $1
                     ORDER BY not_after LIMIT $3",
            before,
            now,
            limit,
        )
        .await
    }

    /// Live certificates (the partial index certificates_live) matching `sql`.
    async fn crossings(&self, sql: &'static str, bound: i64, now: i64, limit: i64) -> Result<Vec<CertificateRow>> {
        self.read(move |c| query(c, sql, &[&bound, &now, &limit], RawCertificate::from_lite))
            .await?
            .into_iter()
            .map(CertificateRow::try_from)
            .collect()
    }

    pub(in crate::store) async fn mark_notified(&self, id: &str, overdue: bool, now: i64) -> Result<bool> {
        let id = id.to_owned();
        let sql = if overdue {
            "UPDATE certificates SET overdue_notified_at = $1 WHERE id = $2 AND overdue_notified_at IS NULL"
        } else {
            "UPDATE certificates SET expiring_notified_at = $1 WHERE id = $2 AND expiring_notified_at IS NULL"
        };
        Ok(self.write(move |c| execute(c, sql, &[&now, &id])).await? == 1)
    }
}
