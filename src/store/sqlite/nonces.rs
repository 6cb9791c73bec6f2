//! Nonces (RFC 8555 §6.5) shared by every replica's requests, on SQLite.

use super::{Sqlite, execute, one};
use crate::store::Result;

impl Sqlite {
    pub(in crate::store) async fn new_nonce(&self, nonce: String, expires_at: i64) -> Result<()> {
        self.write(move |c| {
            execute(c, "INSERT INTO nonces (value, expires_at) VALUES ($1, $2)", &[&nonce, &expires_at]).map(drop)
        })
        .await
    }

    pub(in crate::store) async fn redeem_nonce(&self, nonce: &str, now: i64) -> Result<bool> {
        let nonce = nonce.to_owned();
        let done = self
            .write(move |c| execute(c, "DELETE FROM nonces WHERE value = $1 AND expires_at > $2", &[&nonce, &now]))
            .await?;
        Ok(done == 1)
    }

    pub(in crate::store) async fn purge_nonces(&self, now: i64) -> Result<u64> {
        let done = self.write(move |c| execute(c, "DELETE FROM nonces WHERE expires_at <= $1", &[&now])).await?;
        Ok(done as u64)
    }

    pub(in crate::store) async fn nonce_count(&self) -> Result<u64> {
        // Every row lives at most the nonce lifetime: the clean-up purges them as they expire.
        let n: i64 = self.read(|c| one(c, "SELECT COUNT(*) FROM nonces", &[], |r| r.get(0))).await?;
        Ok(n.max(0) as u64)
    }
}
