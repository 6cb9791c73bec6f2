//! Revocation outside HTTP: which reasons a subscriber may give, and telling the CA about a
//! revocation vacme has recorded. The API, the admin CLI and the clean-up task share it; a CA
//! that is down is told by a later clean-up run, so a revocation is never lost.

use crate::{
    acme::{Problem, ProblemType},
    issuer::Issuer,
    state::Lifecycle,
    store::{CertificateRow, RejectedRow, Store},
};

/// RFC 5280 §5.3.1 reasons a subscriber may give: unspecified, keyCompromise,
/// affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn. The others
/// (cACompromise, certificateHold, removeFromCRL, aACompromise) are the CA's to state.
pub const SUBSCRIBER_REASONS: &[u8] = &[0, 1, 3, 4, 5, 9];

/// `badRevocationReason` unless the reason is one a subscriber may give (absent means 0).
pub fn check_reason(reason: Option<i64>) -> Result<u8, Problem> {
    let r = reason.unwrap_or(0);
    match u8::try_from(r) {
        Ok(r) if SUBSCRIBER_REASONS.contains(&r) => Ok(r),
        _ => Err(Problem::new(
            ProblemType::BadRevocationReason,
            format!("revocation reason {r} is not accepted; use one of {SUBSCRIBER_REASONS:?} (RFC 5280 §5.3.1)"),
        )),
    }
}

/// Pushes one recorded revocation to the CA; on failure it stays pending for the next clean-up run.
pub async fn tell_ca(
    issuer: &dyn Issuer,
    store: &Store,
    lifecycle: &Lifecycle,
    record: &CertificateRow,
    now: i64,
) -> bool {
    let mount = lifecycle.target(record.profile.as_deref()).mount;
    let leaf = leaf_pem(&record.chain_pem);
    match issuer.revoke(&record.serial, &leaf, mount.as_deref()).await {
        Ok(()) => {
            if let Err(e) = store.ca_revoked(&record.id, now).await {
                tracing::error!(certificate_id = %record.id, error = %e, "cannot record the CA's revocation");
            }
            true
        }
        Err(e) => {
            tracing::warn!(certificate_id = %record.id, serial = %record.serial, error = %e,
                "the CA did not take the revocation yet; it is retried");
            false
        }
    }
}

/// Revokes a certificate the CA signed wrongly (a post-sign mismatch); on success the store
/// records the CA's confirmation, on failure it stays pending for the next clean-up run.
pub async fn revoke_rejected(issuer: &dyn Issuer, store: &Store, record: &RejectedRow, now: i64) -> bool {
    match issuer.revoke(&record.serial, &record.leaf_pem, record.mount.as_deref()).await {
        Ok(()) => {
            if let Err(e) = store.rejected_revoked(&record.id, now).await {
                tracing::error!(serial = %record.serial, error = %e, "cannot record the revocation of a rejected certificate");
            }
            tracing::info!(serial = %record.serial, order_id = %record.order_id, "the CA revoked the rejected certificate");
            true
        }
        Err(e) => {
            tracing::error!(serial = %record.serial, order_id = %record.order_id, error = %e,
                "the CA did not revoke a certificate it signed wrongly yet; it is retried");
            false
        }
    }
}

/// Pushes up to `limit` pending revocations of rejected certificates; returns how many the CA took.
pub async fn push_rejected(issuer: &dyn Issuer, store: &Store, limit: i64, now: i64) -> usize {
    let mut done = 0;
    match store.pending_rejected_revocations(limit).await {
        Ok(pending) => {
            for record in pending {
                if revoke_rejected(issuer, store, &record, now).await {
                    done += 1;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list pending revocations of rejected certificates"),
    }
    done
}

/// The first PEM block of a chain.
fn leaf_pem(chain_pem: &str) -> String {
    match chain_pem.find("-----END CERTIFICATE-----") {
        Some(i) => format!("{}\n", &chain_pem[..i + "-----END CERTIFICATE-----".len()]),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(check_reason(None).unwrap(), 0);
        assert_eq!(check_reason(Some(1)).unwrap(), 1);
        for bad in [2, 6, 7, 8, 10, 11, -1, 300] {
            assert_eq!(check_reason(Some(bad)).unwrap_err().kind.code(), "badRevocationReason", "{bad}");
        }
    }

    #[test]
    fn leaf_of_a_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n";
        assert_eq!(leaf_pem(chain), "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
    }
}
