//! Issuance, on SQLite: where an order goes from `ready` through `processing` to `valid` (with
//! its certificate) or `invalid`.

use super::{Sqlite, execute, optional, orders};
use crate::store::{Claimed, NewCertificate, NewRejected, OrderRow, Result, StoreError, rows::RawOrder};

/// The new certificate `$1` renews the account's (`$2`) earlier certificates for the same names
/// (`$3`, the order's identifiers as stored). The first successor is kept.
const RENEWS_SAME_NAMES: &str = "UPDATE certificates SET renewed_by = $1
     WHERE account_id = $2 AND identifiers = $3 AND renewed_by IS NULL AND id <> $1";
/// The new certificate `$1` renews the one its order said it `replaces` (certID `$2`, RFC 9773).
const RENEWS_REPLACED: &str =
    "UPDATE certificates SET renewed_by = $1 WHERE ari_id = $2 AND renewed_by IS NULL AND id <> $1";

impl Sqlite {
    pub(in crate::store) async fn begin_issuance(&self, order_id: &str, csr_der: &[u8], now: i64) -> Result<bool> {
        let (order_id, csr_der) = (order_id.to_owned(), csr_der.to_vec());
        let done = self
            .write(move |c| {
                execute(
                    c,
                    "UPDATE orders SET status = 'processing', csr = $2, attempts = 0, next_attempt_at = $3, updated_at = $3
                     WHERE id = $1 AND status = 'ready' AND expires_at > $3",
                    &[&order_id, &csr_der, &now],
                )
            })
            .await?;
        Ok(done == 1)
    }

    pub(in crate::store) async fn claim_due_issuances(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Claimed<OrderRow>> {
        let (raw, taken_over) = self
            .write(move |c| {
                let (ids, taken_over) = orders::claim_due(c, "orders", now, lease_until, limit)?;
                let mut claimed = Vec::with_capacity(ids.len());
                for id in ids {
                    claimed.extend(optional(c, orders::ORDER_BY_ID, &[&id], RawOrder::from_lite)?);
                }
                Ok((claimed, taken_over))
            })
            .await?;
        let items = raw.into_iter().map(OrderRow::from_raw).collect::<Result<_>>()?;
        Ok(Claimed { items, taken_over })
    }

    pub(in crate::store) async fn renew_issuance_leases(&self, ids: Vec<String>, lease_until: i64) -> Result<()> {
        self.write(move |c| orders::renew_leases(c, "orders", &ids, lease_until)).await
    }

    pub(in crate::store) async fn mark_signing(&self, order_id: &str, now: i64) -> Result<()> {
        let order_id = order_id.to_owned();
        self.write(move |c| {
            execute(
                c,
                "UPDATE orders SET sign_started_at = COALESCE(sign_started_at, $2) WHERE id = $1 AND status = 'processing'",
                &[&order_id, &now],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn issuance_unsent(&self, order_id: &str, next_at: i64) -> Result<()> {
        let order_id = order_id.to_owned();
        self.write(move |c| {
            execute(
                c,
                "UPDATE orders SET attempts = attempts + 1, next_attempt_at = $2, claimed_until = NULL,
                 sign_started_at = NULL WHERE id = $1 AND status = 'processing'",
                &[&order_id, &next_at],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn issuance_retry(&self, order_id: &str, next_at: i64) -> Result<()> {
        let order_id = order_id.to_owned();
        self.write(move |c| {
            execute(
                c,
                "UPDATE orders SET attempts = attempts + 1, next_attempt_at = $2, claimed_until = NULL
                 WHERE id = $1 AND status = 'processing'",
                &[&order_id, &next_at],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn issuance_failed(
        &self,
        order_id: &str,
        problem: &serde_json::Value,
        now: i64,
    ) -> Result<()> {
        let (order_id, problem) = (order_id.to_owned(), problem.to_string());
        self.write(move |c| {
            execute(
                c,
                "UPDATE orders SET status = 'invalid', error = $2, claimed_until = NULL, updated_at = $3
                 WHERE id = $1 AND status = 'processing'",
                &[&order_id, &problem, &now],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn issuance_succeeded(
        &self,
        order: OrderRow,
        cert: NewCertificate,
        cert_id: String,
        identifiers: String,
        now: i64,
    ) -> Result<()> {
        self.write(move |c| {
            execute(
                c,
                "INSERT INTO certificates (id, order_id, account_id, serial, issuer, identifiers, chain_pem,
                                           not_before, not_after, created_at, profile, ari_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &cert_id,
                    &order.id,
                    &order.account_id,
                    &cert.serial,
                    &cert.issuer,
                    &identifiers,
                    &cert.chain_pem,
                    &cert.not_before,
                    &cert.not_after,
                    &now,
                    &order.profile,
                    &cert.ari_id,
                ],
            )?;
            execute(c, RENEWS_SAME_NAMES, &[&cert_id, &order.account_id, &identifiers])?;
            if let Some(replaces) = &order.replaces {
                execute(c, RENEWS_REPLACED, &[&cert_id, replaces])?;
            }
            let valid = execute(
                c,
                "UPDATE orders SET status = 'valid', certificate_id = $2, claimed_until = NULL, updated_at = $3
                 WHERE id = $1 AND status = 'processing'",
                &[&order.id, &cert_id, &now],
            )?;
            if valid != 1 {
                return Err(StoreError::Corrupt {
                    table: "orders",
                    what: format!("order {} left processing", order.id),
                });
            }
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn issuance_rejected(
        &self,
        id: String,
        order: OrderRow,
        cert: NewRejected,
        names: String,
        problem: String,
        now: i64,
    ) -> Result<()> {
        self.write(move |c| {
            execute(
                c,
                "INSERT INTO rejected_certificates
                     (id, serial, order_id, account_id, identifiers, leaf_pem, mount, reason, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &id,
                    &cert.serial,
                    &order.id,
                    &order.account_id,
                    &names,
                    &cert.leaf_pem,
                    &cert.mount,
                    &cert.reason,
                    &now,
                ],
            )?;
            execute(
                c,
                "UPDATE orders SET status = 'invalid', error = $2, claimed_until = NULL, updated_at = $3
                 WHERE id = $1 AND status = 'processing'",
                &[&order.id, &problem, &now],
            )?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn next_issuance_due(&self) -> Result<Option<i64>> {
        self.read(|c| orders::next_due(c, "orders")).await
    }
}
