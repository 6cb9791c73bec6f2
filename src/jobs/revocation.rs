//! Telling the CA about revocations vacme has recorded.
//! The revokeCert handler records a revocation and queues its push here (then waits briefly for
//! it); the issuance job queues the retries for a certificate the CA signed wrongly; the clean-up
//! run pushes whatever is still pending, and the admin CLI pushes its own revocation directly.
//! A CA that is down is told by a later clean-up run, so a revocation is never lost.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, oneshot};

use crate::{
    clock::Clock,
    issuer::Issuer,
    jobs::{Job, MemoryQueue, Outcome, backoff},
    policy::Lifecycle,
    store::{CertificateRow, Claimed, RejectedRow, Store, StoreError},
};

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

    async fn claim(&self, now: i64, _lease_until: i64, n: usize) -> Result<Claimed<Push>, StoreError> {
        Ok(self.revocations.queue.take_due(now, n).into())
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
    fn leaf_of_a_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n";
        assert_eq!(leaf_pem(chain), "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
    }
}

#[cfg(test)]
mod push_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        clock::SystemClock,
        issuer::{IssuanceRequest, IssueError, Issued},
        jobs::{Runner, Slots},
        metrics::Metrics,
    };

    /// A CA whose revocations fail the first `fail` times, each taking `delay`.
    #[derive(Debug)]
    struct Flaky {
        fail: usize,
        delay: Duration,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Issuer for Flaky {
        async fn sign(&self, _: &IssuanceRequest) -> Result<Issued, IssueError> {
            Err(IssueError::unavailable("not in this test"))
        }
        async fn revoke(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), IssueError> {
            tokio::time::sleep(self.delay).await;
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err(IssueError::unavailable("down"));
            }
            Ok(())
        }
        async fn chain(&self) -> Result<Vec<String>, IssueError> {
            Ok(Vec::new())
        }
        async fn health(&self) -> Result<(), IssueError> {
            Ok(())
        }
        fn name(&self) -> &'static str {
            "flaky"
        }
    }

    fn record(id: &str) -> CertificateRow {
        CertificateRow {
            id: id.into(),
            order_id: "o".into(),
            account_id: "a".into(),
            serial: "0a".into(),
            issuer: "flaky".into(),
            identifiers: Vec::new(),
            chain_pem: String::new(),
            not_before: 0,
            not_after: 0,
            revoked_at: Some(1),
            revocation_reason: Some(0),
            created_at: 0,
            profile: None,
            ari_id: None,
            ca_revoked_at: None,
            renewed_by: None,
        }
    }

    /// Starts the revocation job against `issuer`; the returned sender stops it.
    async fn start(issuer: Arc<Flaky>) -> (Arc<Revocations>, tokio::sync::oneshot::Sender<()>) {
        let dir = tempfile::tempdir().unwrap();
        let lifecycle = Lifecycle {
            eab: crate::jws::eab::EabSecret::load_or_create(&dir.path().join("eab")).unwrap(),
            eab_required: false,
            profiles: Default::default(),
            default_profile: None,
            renewal: Default::default(),
            vault: None,
            roles: Default::default(),
        };
        let revocations = Arc::new(Revocations::default());
        let job = RevocationPush {
            store: Store::memory().await.unwrap(),
            issuer,
            lifecycle: Arc::new(lifecycle),
            clock: Arc::new(SystemClock),
            revocations: revocations.clone(),
        };
        let runner = Runner { clock: Arc::new(SystemClock), metrics: Arc::new(Metrics::default()) };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(runner.queue(job, Slots { slots: 2, lease_secs: 0 }, async move {
            let _ = stopped.await;
        }));
        (revocations, stop)
    }

    #[tokio::test]
    async fn a_push_is_waited_for_within_its_bound() {
        let wait = Duration::from_secs(5);
        let healthy = Arc::new(Flaky { fail: 0, delay: Duration::ZERO, calls: AtomicUsize::new(0) });
        let (revocations, _stop) = start(healthy.clone()).await;
        assert_eq!(revocations.push(record("c1"), 0, wait).await, Some(true), "a healthy CA takes it");

        let down = Arc::new(Flaky { fail: usize::MAX, delay: Duration::ZERO, calls: AtomicUsize::new(0) });
        let (revocations, _stop) = start(down.clone()).await;
        assert_eq!(revocations.push(record("c2"), 0, wait).await, Some(false), "left pending for clean-up");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(down.calls.load(Ordering::SeqCst), 1, "a subscriber's revocation is tried once here");

        let slow = Arc::new(Flaky { fail: 0, delay: Duration::from_millis(400), calls: AtomicUsize::new(0) });
        let (revocations, _stop) = start(slow.clone()).await;
        let started = std::time::Instant::now();
        assert_eq!(revocations.push(record("c3"), 0, Duration::from_millis(100)).await, None);
        assert!(started.elapsed() < Duration::from_millis(300), "the wait is bounded");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(slow.calls.load(Ordering::SeqCst), 1, "the push goes on after the wait");
    }

    #[tokio::test]
    async fn a_rejected_certificate_is_retried_until_the_ca_takes_it() {
        // The first attempt (made by the issuance job) failed; the CA takes the second retry.
        let ca = Arc::new(Flaky { fail: 1, delay: Duration::ZERO, calls: AtomicUsize::new(0) });
        let (revocations, _stop) = start(ca.clone()).await;
        let rejected = RejectedRow {
            id: "r1".into(),
            serial: "0b".into(),
            order_id: "o".into(),
            account_id: "a".into(),
            identifiers: Vec::new(),
            leaf_pem: String::new(),
            mount: None,
            reason: "test".into(),
            created_at: 0,
            revoked_at: None,
        };
        revocations.retry_rejected(rejected, SystemClock.unix());
        tokio::time::timeout(Duration::from_secs(8), async {
            while ca.calls.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("retried after 1 s, then after 2 s");
        assert_eq!(revocations.queue.next_due(), None, "nothing left to retry once the CA took it");
    }
}
