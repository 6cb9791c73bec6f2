//! Telling the CA about revocations vacme has recorded, and which reasons a subscriber may give.
//! The revokeCert handler records a revocation and queues its push here (then waits briefly for
//! it); the issuance job queues the retries for a certificate the CA signed wrongly; the clean-up
//! run pushes whatever is still pending, and the admin CLI pushes its own revocation directly.
//! A CA that is down is told by a later clean-up run, so a revocation is never lost.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, oneshot};

use crate::{
    acme::{Problem, ProblemType},
    clock::Clock,
    issuer::Issuer,
    jobs::{Job, MemoryQueue, Outcome, backoff},
    state::Lifecycle,
    store::{CertificateRow, RejectedRow, Store, StoreError},
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
/// `true` when the CA took it.
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

/// Retries of a rejected certificate's revocation after the first one failed, 1, 2, 4, ... 32
/// seconds apart; then the clean-up run takes over.
const REJECTED_RETRIES: i64 = 6;

/// One push to the CA.
#[derive(Debug)]
pub enum Push {
    /// A revocation a subscriber made; `told` hears whether the CA took it.
    Certificate { record: CertificateRow, told: oneshot::Sender<bool> },
    /// A certificate the CA signed wrongly, on its `attempt`th retry.
    Rejected { record: RejectedRow, attempt: i64 },
}

/// The pushes waiting for the revocation job: what handlers and other jobs hold.
#[derive(Debug, Default)]
pub struct Revocations {
    queue: MemoryQueue<Push>,
}

impl Revocations {
    /// Queues the push of a revocation recorded in the store and waits up to `wait` for it:
    /// `Some(true)` when the CA took it, `Some(false)` when it did not (it stays pending for the
    /// clean-up run), `None` when the push is not done yet (it goes on in the background).
    pub async fn push(&self, record: CertificateRow, now: i64, wait: Duration) -> Option<bool> {
        let (told, answer) = oneshot::channel();
        if !self.queue.push(now, Push::Certificate { record, told }) {
            tracing::warn!("too many revocations queued; this one is pushed by the next clean-up run");
            return Some(false);
        }
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(taken)) => Some(taken),
            Ok(Err(_)) => Some(false),
            Err(_) => None,
        }
    }

    /// Queues the retries of a rejected certificate whose revocation the CA did not take.
    pub fn retry_rejected(&self, record: RejectedRow, now: i64) {
        self.queue.push(now + backoff(0, 32), Push::Rejected { record, attempt: 1 });
    }
}

/// The revocation push job: tells the CA about queued revocations.
#[derive(Clone, Debug)]
pub struct RevocationPush {
    pub store: Store,
    pub issuer: Arc<dyn Issuer>,
    pub lifecycle: Arc<Lifecycle>,
    pub clock: Arc<dyn Clock>,
    pub revocations: Arc<Revocations>,
}

impl Job for RevocationPush {
    type Item = Push;

    fn name(&self) -> &'static str {
        "revocation"
    }

    fn wake(&self) -> &Notify {
        self.revocations.queue.wake()
    }

    async fn claim(&self, now: i64, _lease_until: i64, n: usize) -> Result<Vec<Push>, StoreError> {
        Ok(self.revocations.queue.take_due(now, n))
    }

    async fn next_due(&self) -> Option<i64> {
        self.revocations.queue.next_due()
    }

    async fn run(&self, push: Push) -> Outcome {
        let now = self.clock.unix();
        match push {
            Push::Certificate { record, told } => {
                let taken = tell_ca(self.issuer.as_ref(), &self.store, &self.lifecycle, &record, now).await;
                let _ = told.send(taken);
                if taken { Outcome::Done } else { Outcome::Retry }
            }
            Push::Rejected { record, attempt } => {
                if revoke_rejected(self.issuer.as_ref(), &self.store, &record, now).await {
                    return Outcome::Done;
                }
                if attempt < REJECTED_RETRIES {
                    let next = Push::Rejected { record, attempt: attempt + 1 };
                    self.revocations.queue.push(now + backoff(attempt, 32), next);
                }
                // Past the last retry it is still pending in the store: the clean-up run pushes it.
                Outcome::Retry
            }
        }
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
    fn leaf_of_a_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n";
        assert_eq!(leaf_pem(chain), "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
    }
}
