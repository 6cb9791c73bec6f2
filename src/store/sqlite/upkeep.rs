//! Clean-up, counts and the admin CLI's account listing, on SQLite.

use super::{Sqlite, execute, one, query};
use crate::store::{AccountRow, AccountSummary, CleanupReport, Counts, Result, rows::RawAccount};

/// Orders that never got a certificate and expired before `$1`.
const STALE: &str = "SELECT id FROM orders WHERE status = 'invalid' AND certificate_id IS NULL AND expires_at <= $1
                     AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.order_id = orders.id)";

impl Sqlite {
    pub(in crate::store) async fn cleanup(
        &self,
        now: i64,
        retention_secs: i64,
        problem: String,
    ) -> Result<CleanupReport> {
        let cutoff = now - retention_secs;
        self.write(move |c| {
            let nonces = execute(c, "DELETE FROM nonces WHERE expires_at <= $1", &[&now])? as u64;
            let expired_authorizations = execute(
                c,
                "UPDATE authorizations SET status = 'expired' WHERE status = 'pending' AND expires_at <= $1",
                &[&now],
            )? as u64;
            let expired_orders = execute(
                c,
                "UPDATE orders SET status = 'invalid', error = COALESCE(error, $2), updated_at = $1
                 WHERE status IN ('pending', 'ready') AND expires_at <= $1",
                &[&now, &problem],
            )? as u64;
            execute(
                c,
                &format!(
                    "DELETE FROM challenges WHERE authz_id IN (SELECT id FROM authorizations WHERE order_id IN ({STALE}))"
                ),
                &[&cutoff],
            )?;
            execute(c, &format!("DELETE FROM authorizations WHERE order_id IN ({STALE})"), &[&cutoff])?;
            let deleted_orders = execute(c, &format!("DELETE FROM orders WHERE id IN ({STALE})"), &[&cutoff])? as u64;
            Ok(CleanupReport { nonces, expired_orders, expired_authorizations, deleted_orders })
        })
        .await
    }

    pub(in crate::store) async fn counts(&self) -> Result<Counts> {
        self.read(|c| {
            one(
                c,
                "/* full listing */ SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM orders),
                        (SELECT COUNT(*) FROM authorizations), (SELECT COUNT(*) FROM challenges),
                        (SELECT COUNT(*) FROM certificates)",
                &[],
                |r| {
                    Ok(Counts {
                        accounts: r.get(0)?,
                        orders: r.get(1)?,
                        authorizations: r.get(2)?,
                        challenges: r.get(3)?,
                        certificates: r.get(4)?,
                    })
                },
            )
        })
        .await
    }

    pub(in crate::store) async fn totals(&self) -> Result<(i64, i64)> {
        self.read(|c| {
            one(
                c,
                "SELECT (SELECT n FROM totals WHERE name = 'accounts'), (SELECT n FROM totals WHERE name = 'certificates')",
                &[],
                |r| Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
            )
        })
        .await
    }

    pub(in crate::store) async fn ping(&self) -> Result<()> {
        self.read(|c| one(c, "SELECT 1", &[], |r| r.get::<_, i64>(0)).map(drop)).await
    }

    pub(in crate::store) async fn account_summaries(&self) -> Result<Vec<AccountSummary>> {
        let rows = self
            .read(|c| {
                query(
                    c,
                    "/* full listing */ SELECT a.*,
                            (SELECT COUNT(*) FROM orders o WHERE o.account_id = a.id) AS order_count,
                            (SELECT COUNT(*) FROM certificates c WHERE c.account_id = a.id) AS certificate_count
                     FROM accounts a ORDER BY created_at, id",
                    &[],
                    |r| Ok((RawAccount::from_lite(r)?, r.get("order_count")?, r.get("certificate_count")?)),
                )
            })
            .await?;
        rows.into_iter()
            .map(|(raw, orders, certificates)| {
                Ok(AccountSummary { account: AccountRow::try_from(raw)?, orders, certificates })
            })
            .collect()
    }
}
