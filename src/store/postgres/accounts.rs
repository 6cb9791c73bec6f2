//! Accounts (RFC 8555 §7.3) and the EAB keys that bind them (§7.3.4), on PostgreSQL.

use super::Postgres;
use crate::store::{
    AccountRow, EabKeyRow, NewAccountRow, NewEabKey, Result,
    rows::{RawAccount, RawEabKey},
};

impl Postgres {
    pub(in crate::store) async fn account(&self, id: &str) -> Result<Option<AccountRow>> {
        let raw = sqlx::query_as::<_, RawAccount>("SELECT * FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        raw.map(AccountRow::try_from).transpose()
    }

    pub(in crate::store) async fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<AccountRow>> {
        let raw = sqlx::query_as::<_, RawAccount>("SELECT * FROM accounts WHERE key_thumbprint = $1")
            .bind(thumbprint)
            .fetch_optional(&self.pool)
            .await?;
        raw.map(AccountRow::try_from).transpose()
    }

    /// `Some(true)` when inserted, `Some(false)` when the key already had an account, `None` when
    /// the EAB key could not be bound (nothing written).
    pub(in crate::store) async fn create_account(&self, new: &NewAccountRow<'_>) -> Result<Option<bool>> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, key_thumbprint, jwk, status, contact, tos_agreed, eab_kid, created_ip, created_at)
             VALUES ($1, $2, $3, 'valid', $4, $5, $6, $7, $8) ON CONFLICT (key_thumbprint) DO NOTHING",
        )
        .bind(&new.id)
        .bind(new.thumbprint)
        .bind(&new.jwk)
        .bind(&new.contact)
        .bind(new.tos_agreed)
        .bind(new.eab_kid)
        .bind(new.ip)
        .bind(new.now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1
            && let Some(kid) = new.eab_kid
        {
            let bound = sqlx::query(
                "UPDATE eab_keys SET used_at = $2, account_id = $3
                 WHERE kid = $1 AND used_at IS NULL AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(kid)
            .bind(new.now)
            .bind(&new.id)
            .execute(&mut *tx)
            .await?;
            if bound.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        tx.commit().await?;
        Ok(Some(inserted == 1))
    }

    pub(in crate::store) async fn update_contact(&self, id: &str, contact: &str) -> Result<()> {
        sqlx::query("UPDATE accounts SET contact = $1 WHERE id = $2 AND status = 'valid'")
            .bind(contact)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn deactivate_account(&self, id: &str, problem: &str, now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE accounts SET status = 'deactivated' WHERE id = $1 AND status = 'valid'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE orders SET status = 'invalid', error = $2, updated_at = $3
             WHERE account_id = $1 AND status = 'pending' AND expires_at > $3",
        )
        .bind(id)
        .bind(problem)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE authorizations SET status = 'deactivated'
             WHERE account_id = $1 AND status = 'pending' AND expires_at > $2",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `Some(changed)`, or `None` when another account has the new key.
    pub(in crate::store) async fn change_key(
        &self,
        account_id: &str,
        old_thumbprint: &str,
        new_thumbprint: &str,
        jwk: &str,
    ) -> Result<Option<bool>> {
        let done = sqlx::query(
            "UPDATE accounts SET key_thumbprint = $3, jwk = $4 WHERE id = $1 AND key_thumbprint = $2 AND status = 'valid'",
        )
        .bind(account_id)
        .bind(old_thumbprint)
        .bind(new_thumbprint)
        .bind(jwk)
        .execute(&self.pool)
        .await;
        match done {
            Ok(d) => Ok(Some(d.rows_affected() == 1)),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    // ---- EAB keys ----

    pub(in crate::store) async fn create_eab_key(&self, key: &NewEabKey, scope: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO eab_keys (kid, scope, profile, comment, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(scope)
        .bind(&key.profile)
        .bind(&key.comment)
        .bind(key.expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(in crate::store) async fn eab_key(&self, kid: &str) -> Result<Option<EabKeyRow>> {
        let raw = sqlx::query_as::<_, RawEabKey>("SELECT * FROM eab_keys WHERE kid = $1")
            .bind(kid)
            .fetch_optional(&self.pool)
            .await?;
        raw.map(EabKeyRow::try_from).transpose()
    }

    pub(in crate::store) async fn eab_keys(&self) -> Result<Vec<EabKeyRow>> {
        let raw =
            sqlx::query_as::<_, RawEabKey>("/* full listing */ SELECT * FROM eab_keys ORDER BY created_at DESC, kid")
                .fetch_all(&self.pool)
                .await?;
        raw.into_iter().map(EabKeyRow::try_from).collect()
    }

    pub(in crate::store) async fn revoke_eab_key(&self, kid: &str, now: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE eab_keys SET revoked_at = $2 WHERE kid = $1 AND revoked_at IS NULL")
            .bind(kid)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
