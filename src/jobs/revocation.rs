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

/// The CA's answer to "did you revoke this serial?", kept per serial for `ttl` so that
/// renewal-info (unauthenticated, asked by every client on every renewal check) costs at most
/// one CA call per certificate per period, however many requests arrive: the first request of a
/// period marks the entry as checked before it asks, so requests that come meanwhile use the
/// previous answer instead of asking too.
#[derive(Debug)]
pub struct CaRevocations {
    ttl_secs: i64,
    /// serial -> (when last asked, what the CA said).
    seen: std::sync::Mutex<std::collections::HashMap<String, (i64, Option<i64>)>>,
}

/// What `CaRevocations::lookup` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaAnswer {
    /// The CA's answer of this period: when it revoked the certificate, or `None`.
    Known(Option<i64>),
    /// No answer of this period: ask the CA.
    Ask,
}

/// Most serials remembered; past it, answers older than `ttl` are dropped, then all of them.
const MAX_REMEMBERED: usize = 10_000;

impl CaRevocations {
    /// Answers are kept `ttl_secs` (`renewal.ca_check_secs`).
    pub fn new(ttl_secs: u64) -> Self {
        Self { ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX), seen: Default::default() }
    }

    /// `Known(answer)` when a fresh answer is known (or another request is asking now), else
    /// `Ask`: the caller asks the CA and reports with `record`. Marks the serial as asked.
    pub fn lookup(&self, serial: &str, now: i64) -> CaAnswer {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((asked, answer)) = seen.get_mut(serial) {
            if now.saturating_sub(*asked) < self.ttl_secs {
                return CaAnswer::Known(*answer);
            }
            *asked = now;
            return CaAnswer::Ask;
        }
        if seen.len() >= MAX_REMEMBERED {
            let ttl = self.ttl_secs;
            seen.retain(|_, (asked, _)| now.saturating_sub(*asked) < ttl);
            if seen.len() >= MAX_REMEMBERED {
                seen.clear();
            }
        }
        seen.insert(serial.to_owned(), (now, None));
        CaAnswer::Ask
    }

    /// What the CA said about `serial` (`None`: not revoked, or it could not tell).
    pub fn record(&self, serial: &str, revoked_at: Option<i64>, now: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(serial.to_owned(), (now, revoked_at));
    }
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
    fn the_ca_is_asked_once_per_serial_and_period() {
        let cache = CaRevocations::new(300);
        assert_eq!(cache.lookup("0a", 1000), CaAnswer::Ask, "first request asks");
        // Requests while the first is still asking, and after its answer, do not ask again.
        assert_eq!(cache.lookup("0a", 1000), CaAnswer::Known(None));
        cache.record("0a", None, 1001);
        for t in 1001..1300 {
            assert_eq!(cache.lookup("0a", t), CaAnswer::Known(None), "{t}");
        }
        assert_eq!(cache.lookup("0a", 1301), CaAnswer::Ask, "a stale answer is asked again");
        assert_eq!(cache.lookup("0a", 1301), CaAnswer::Known(None), "by one request only");
        cache.record("0a", Some(1200), 1302);
        assert_eq!(cache.lookup("0a", 1303), CaAnswer::Known(Some(1200)));
        assert_eq!(cache.lookup("0b", 1303), CaAnswer::Ask, "another serial asks for itself");
        let none = CaRevocations::new(0);
        assert_eq!(none.lookup("0a", 5), CaAnswer::Ask);
        assert_eq!(none.lookup("0a", 5), CaAnswer::Ask, "ttl 0 asks every time");
    }

    #[test]
    fn remembers_a_bounded_number_of_serials() {
        let cache = CaRevocations::new(300);
        for i in 0..(MAX_REMEMBERED + 10) {
            let _ = cache.lookup(&format!("{i:x}"), 0);
        }
        assert!(cache.seen.lock().unwrap().len() <= MAX_REMEMBERED);
    }

    #[test]
    fn leaf_of_a_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n";
        assert_eq!(leaf_pem(chain), "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
    }
}
