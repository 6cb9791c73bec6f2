//! Accounts (RFC 8555 §7.3) and the EAB keys that bind them (§7.3.4), on SQLite.

use super::{Sqlite, execute, optional, query};
use crate::store::{
    AccountRow, EabKeyRow, NewAccountRow, NewEabKey, Result,
    rows::{RawAccount, RawEabKey},
};

const BY_ID: &str = "SELECT * FROM accounts WHERE id = $1";
const BY_THUMBPRINT: &str = "SELECT * FROM accounts WHERE key_thumbprint = $1";

impl Sqlite {
    pub(in crate::store) async fn account(&self, id: &str) -> Result<Option<AccountRow>> {
        let id = id.to_owned();
        let raw = self.read(move |c| optional(c, BY_ID, &[&id], RawAccount::from_lite)).await?;
        raw.map(AccountRow::try_from).transpose()
    }

    pub(in crate::store) async fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<AccountRow>> {
        let thumbprint = thumbprint.to_owned();
        let raw = self.read(move |c| optional(c, BY_THUMBPRINT, &[&thumbprint], RawAccount::from_lite)).await?;
        raw.map(AccountRow::try_from).transpose()
    }

    /// `Some(true)` when inserted, `Some(false)` when the key already had an account, `None` when
    /// the EAB key could not be bound (nothing written).
    pub(in crate::store) async fn create_account(&self, new: &NewAccountRow<'_>) -> Result<Option<bool>> {
        let (id, thumbprint, jwk, contact) =
            (new.id.clone(), new.thumbprint.to_owned(), new.jwk.clone(), new.contact.clone());
        let (tos, eab, ip, now) = (new.tos_agreed, new.eab_kid.map(str::to_owned), new.ip.map(str::to_owned), new.now);
        self.writer
            .run_or_undo(move |c| {
                let inserted = execute(
                    c,
                    "INSERT INTO accounts (id, key_thumbprint, jwk, status, contact, tos_agreed, eab_kid, created_ip, created_at)
                     VALUES ($1, $2, $3, 'valid', $4, $5, $6, $7, $8) ON CONFLICT (key_thumbprint) DO NOTHING",
                    &[&id, &thumbprint, &jwk, &contact, &tos, &eab, &ip, &now],
                )?;
                if inserted == 1
                    && let Some(kid) = &eab
                {
                    let bound = execute(
                        c,
                        "UPDATE eab_keys SET used_at = $2, account_id = $3
                         WHERE kid = $1 AND used_at IS NULL AND revoked_at IS NULL
                           AND (expires_at IS NULL OR expires_at > $2)",
                        &[kid, &now, &id],
                    )?;
                    if bound != 1 {
                        // The account is not written either.
                        return Ok((None, false));
                    }
                }
                Ok((Some(inserted == 1), true))
            })
            .await
    }

    pub(in crate::store) async fn update_contact(&self, id: &str, contact: String) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            execute(c, "UPDATE accounts SET contact = $1 WHERE id = $2 AND status = 'valid'", &[&contact, &id])
                .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn deactivate_account(&self, id: &str, problem: String, now: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| {
            execute(c, "UPDATE accounts SET status = 'deactivated' WHERE id = $1 AND status = 'valid'", &[&id])?;
            execute(
                c,
                "UPDATE orders SET status = 'invalid', error = $2, updated_at = $3
                 WHERE account_id = $1 AND status = 'pending' AND expires_at > $3",
                &[&id, &problem, &now],
            )?;
            execute(
                c,
                "UPDATE authorizations SET status = 'deactivated'
                 WHERE account_id = $1 AND status = 'pending' AND expires_at > $2",
                &[&id, &now],
            )?;
            Ok(())
        })
        .await
    }

    /// `Some(changed)`, or `None` when another account has the new key.
    pub(in crate::store) async fn change_key(
        &self,
        account_id: &str,
        old_thumbprint: &str,
        new_thumbprint: &str,
        jwk: String,
    ) -> Result<Option<bool>> {
        let (id, old, new) = (account_id.to_owned(), old_thumbprint.to_owned(), new_thumbprint.to_owned());
        self.write(move |c| {
            match execute(
                c,
                "UPDATE accounts SET key_thumbprint = $3, jwk = $4 WHERE id = $1 AND key_thumbprint = $2 AND status = 'valid'",
                &[&id, &old, &new, &jwk],
            ) {
                Ok(n) => Ok(Some(n == 1)),
                Err(crate::store::StoreError::Lite(rusqlite::Error::SqliteFailure(e, _)))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    // ---- EAB keys ----

    pub(in crate::store) async fn create_eab_key(&self, key: NewEabKey, scope: String, now: i64) -> Result<()> {
        self.write(move |c| {
            execute(
                c,
                "INSERT INTO eab_keys (kid, scope, profile, comment, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&key.kid, &scope, &key.profile, &key.comment, &key.expires_at, &now],
            )
            .map(drop)
        })
        .await
    }

    pub(in crate::store) async fn eab_key(&self, kid: &str) -> Result<Option<EabKeyRow>> {
        let kid = kid.to_owned();
        let raw = self
            .read(move |c| optional(c, "SELECT * FROM eab_keys WHERE kid = $1", &[&kid], RawEabKey::from_lite))
            .await?;
        raw.map(EabKeyRow::try_from).transpose()
    }

    pub(in crate::store) async fn eab_keys(&self) -> Result<Vec<EabKeyRow>> {
        let raw = self
            .read(|c| {
                query(
                    c,
                    "/* full listing */ SELECT * FROM eab_keys ORDER BY created_at DESC, kid",
                    &[],
                    RawEabKey::from_lite,
                )
            })
            .await?;
        raw.into_iter().map(EabKeyRow::try_from).collect()
    }

    pub(in crate::store) async fn revoke_eab_key(&self, kid: &str, now: i64) -> Result<bool> {
        let kid = kid.to_owned();
        let done = self
            .write(move |c| {
                execute(c, "UPDATE eab_keys SET revoked_at = $2 WHERE kid = $1 AND revoked_at IS NULL", &[&kid, &now])
            })
            .await?;
        Ok(done == 1)
    }
}
