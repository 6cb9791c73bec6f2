//! The renewal-info CA check: whether the CA revoked a certificate behind vacme's back (RFC 9773
//! renewal info says "renew now" for it). The handler asks here and waits at most
//! `CA_CHECK_TIMEOUT`; the job makes the CA call. Answers are kept per serial, so the CA is asked
//! at most once per certificate per `renewal.ca_check_secs`.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, oneshot};

use crate::{
    issuer::Issuer,
    jobs::{Job, MemoryQueue, Outcome},
    store::{Claimed, StoreError},
};

/// How long renewal info waits for Vault to say whether it revoked a certificate.
pub const CA_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// One question for the CA.
#[derive(Debug)]
pub struct Check {
    serial: String,
    mount: Option<String>,
    /// When the cache marked the serial as asked: the answer is recorded as of then.
    asked: i64,
    answer: oneshot::Sender<Option<i64>>,
}

/// The CA's answers and the questions waiting for the job: what the renewal-info handler holds.
#[derive(Debug)]
pub struct CaChecks {
    answers: CaRevocations,
    queue: MemoryQueue<Check>,
}

impl CaChecks {
    /// Answers are kept `ttl_secs` (`renewal.ca_check_secs`).
    pub fn new(ttl_secs: u64) -> Self {
        Self { answers: CaRevocations::new(ttl_secs), queue: MemoryQueue::default() }
    }

    /// When the CA revoked `serial` (under `mount`), as far as it is known at `now`: this
    /// period's answer, or the job's, waited for at most `CA_CHECK_TIMEOUT`. `None`: not
    /// revoked, or the CA could not tell in time.
    pub async fn revoked_at(&self, serial: &str, mount: Option<String>, now: i64) -> Option<i64> {
        match self.answers.lookup(serial, now) {
            CaAnswer::Known(answer) => answer,
            CaAnswer::Ask => {
                let (tx, rx) = oneshot::channel();
                if !self.queue.push(now, Check { serial: serial.to_owned(), mount, asked: now, answer: tx }) {
                    return None;
                }
                match tokio::time::timeout(CA_CHECK_TIMEOUT, rx).await {
                    Ok(Ok(answer)) => answer,
                    _ => None,
                }
            }
        }
    }
}

/// The CA-check job: asks the CA about the serials renewal info wants to know about.
#[derive(Clone, Debug)]
pub struct RenewalCheck {
    pub issuer: Arc<dyn Issuer>,
    pub checks: Arc<CaChecks>,
}

impl Job for RenewalCheck {
    type Item = Check;

    fn name(&self) -> &'static str {
        "renewal_check"
    }

    fn wake(&self) -> &Notify {
        self.checks.queue.wake()
    }

    async fn claim(&self, now: i64, _lease_until: i64, n: usize) -> Result<Claimed<Check>, StoreError> {
        Ok(self.checks.queue.take_due(now, n).into())
    }

    async fn next_due(&self) -> Option<i64> {
        self.checks.queue.next_due()
    }

    async fn run(&self, check: Check) -> Outcome {
        let asked =
            tokio::time::timeout(CA_CHECK_TIMEOUT, self.issuer.revoked_at(&check.serial, check.mount.as_deref()));
        let (answer, outcome) = match asked.await {
            Ok(Ok(at)) => (at, Outcome::Done),
            _ => (None, Outcome::Error),
        };
        self.checks.answers.record(&check.serial, answer, check.asked);
        let _ = check.answer.send(answer);
        outcome
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

#[cfg(test)]
mod job_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        clock::SystemClock,
        issuer::{IssuanceRequest, IssueError, Issued},
        jobs::{Runner, Slots},
        metrics::Metrics,
    };

    /// A CA that says every serial was revoked at 1234, after `delay`.
    #[derive(Debug)]
    struct Revoker {
        delay: Duration,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Issuer for Revoker {
        async fn sign(&self, _: &IssuanceRequest) -> Result<Issued, IssueError> {
            Err(IssueError::unavailable("not in this test"))
        }
        async fn revoke(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), IssueError> {
            Ok(())
        }
        async fn revoked_at(&self, _: &str, _: Option<&str>) -> Result<Option<i64>, IssueError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            Ok(Some(1234))
        }
        async fn chain(&self) -> Result<Vec<String>, IssueError> {
            Ok(Vec::new())
        }
        async fn health(&self) -> Result<(), IssueError> {
            Ok(())
        }
        fn name(&self) -> &'static str {
            "revoker"
        }
    }

    #[tokio::test]
    async fn concurrent_askers_cost_one_ca_call() {
        let ca = Arc::new(Revoker { delay: Duration::from_millis(200), calls: AtomicUsize::new(0) });
        let checks = Arc::new(CaChecks::new(300));
        let runner = Runner { clock: Arc::new(SystemClock), metrics: Arc::new(Metrics::default()) };
        let job = RenewalCheck { issuer: ca.clone(), checks: checks.clone() };
        tokio::spawn(runner.queue(job, Slots { slots: 4, lease_secs: 0 }, std::future::pending()));
        let first = tokio::spawn({
            let checks = checks.clone();
            async move { checks.revoked_at("0a", None, 1000).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // While the first asks, others get the previous answer (none yet) without asking.
        assert_eq!(checks.revoked_at("0a", None, 1000).await, None);
        assert_eq!(first.await.unwrap(), Some(1234), "the first asker waits for the CA");
        assert_eq!(checks.revoked_at("0a", None, 1100).await, Some(1234), "then the answer is kept");
        assert_eq!(ca.calls.load(Ordering::SeqCst), 1);
    }
}
