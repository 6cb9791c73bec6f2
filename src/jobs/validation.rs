//! Validates answered challenges in the background: the runner claims due challenges from the
//! store (so any replica can do it and a restart resumes it) and runs at most `validation.workers`
//! at once; a failing challenge is retried with backoff inside the retry window, then the final
//! result is recorded.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Notify;

use crate::{
    acme::{Identifier, Problem, Subproblem},
    clock::Clock,
    jobs::Wake,
    jobs::{Job, Outcome},
    store::{AuditEvent, Claimed, ClaimedChallenge, Store, StoreError},
    validation::Validator,
};

/// How the validation job judges attempts.
#[derive(Clone, Debug)]
pub struct ValidationWorkerSettings {
    /// A challenge is retried until this long after it was answered.
    pub retry_window_secs: i64,
    /// Failed validations of one name by one account within an hour that pause it (0: never).
    pub pause_after_failures: u32,
}

/// The validation worker's dependencies.
#[derive(Clone, Debug)]
pub struct ValidationWorker {
    pub store: Store,
    pub validator: Arc<dyn Validator>,
    pub clock: Arc<dyn Clock>,
    pub wake: Arc<Wake>,
    pub urls: Arc<crate::acme::Urls>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub settings: ValidationWorkerSettings,
}

impl Job for ValidationWorker {
    type Item = ClaimedChallenge;

    fn name(&self) -> &'static str {
        "validation"
    }

    fn wake(&self) -> &Notify {
        &self.wake.validation
    }

    async fn claim(&self, now: i64, lease_until: i64, n: usize) -> Result<Claimed<ClaimedChallenge>, StoreError> {
        self.store.claim_due_challenges(now, lease_until, n as i64).await
    }

    const STORE_LEASES: bool = true;

    fn lease_id(&self, item: &ClaimedChallenge) -> Option<String> {
        Some(item.id.clone())
    }

    async fn renew(&self, ids: Vec<String>, lease_until: i64) -> Result<(), StoreError> {
        self.store.renew_challenge_leases(ids, lease_until).await
    }

    async fn next_due(&self) -> Option<i64> {
        self.store.next_challenge_due().await.ok().flatten()
    }

    async fn run(&self, chall: ClaimedChallenge) -> Outcome {
        self.attempt(chall).await
    }
}

impl ValidationWorker {
    /// One attempt at one challenge, and its outcome written to the store.
    async fn attempt(&self, chall: ClaimedChallenge) -> Outcome {
        let key_authz = format!("{}.{}", chall.token, chall.account_thumbprint);
        let started = std::time::Instant::now();
        let mut result = self.validator.validate(chall.kind, &chall.identifier, &chall.token, &key_authz).await;
        let mut final_failure = false;
        if result.is_ok() {
            // CAA names the identifier as ordered (a wildcard consults issuewild).
            let ordered = match &chall.identifier {
                Identifier::Dns(base) if chall.wildcard => Identifier::Dns(format!("*.{base}")),
                other => other.clone(),
            };
            if let Err(p) = self.validator.caa(&ordered, &self.urls.account(&chall.account_id), chall.kind).await {
                // A CAA refusal is the domain owner's decision, not a glitch: no retry.
                final_failure = p.kind == crate::acme::ProblemType::Caa;
                result = Err(p);
            }
        }
        let now = self.clock.unix();
        let took = started.elapsed();
        let (done, recorded) = match result {
            Ok(()) => {
                self.metrics.validation(chall.kind.as_str(), "valid", took);
                tracing::info!(challenge_type = %chall.kind, identifier = %chall.identifier, "challenge valid");
                (Outcome::Done, self.store.challenge_succeeded(&chall.id, now).await)
            }
            Err(problem) => {
                let delay = backoff(chall.attempts);
                let wire = serde_json::to_value(&problem).unwrap_or_else(|_| json!({}));
                if !final_failure && now + delay - chall.started_at <= self.settings.retry_window_secs {
                    tracing::debug!(challenge_type = %chall.kind, identifier = %chall.identifier,
                        detail = %problem.detail, "challenge attempt failed; retrying");
                    self.metrics.validation(chall.kind.as_str(), "retry", took);
                    (Outcome::Retry, self.store.challenge_retry(&chall.id, &wire, now + delay).await)
                } else {
                    tracing::info!(challenge_type = %chall.kind, identifier = %chall.identifier,
                        detail = %problem.detail, "challenge invalid");
                    self.metrics.validation(chall.kind.as_str(), "invalid", took);
                    self.metrics.validation_failed(&chall.identifier.value());
                    let order_problem = order_problem(&chall, &problem);
                    let limit = self.settings.pause_after_failures;
                    let failed = match self.store.challenge_failed(&chall.id, &wire, &order_problem, limit, now).await {
                        Ok(paused) => {
                            AuditEvent::by_account("validation_failed", &chall.account_id)
                                .order(&chall.order_id)
                                .identifiers(std::slice::from_ref(&chall.identifier))
                                .detail(format!("{}: {}", chall.kind, problem.detail))
                                .record(&self.store, now)
                                .await;
                            if paused {
                                self.paused(&chall, now).await;
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    };
                    (Outcome::Done, failed)
                }
            }
        };
        match recorded {
            Ok(()) => done,
            Err(e) => {
                // The lease runs out and the challenge is tried again.
                tracing::error!(error = %e, challenge = %chall.id, "cannot record a validation result");
                Outcome::Error
            }
        }
    }
}

impl ValidationWorker {
    /// Too many failures of one name by one account in an hour paused it (src/policy/ratelimit.rs); the
    /// pause was recorded with the failure, in one transaction.
    async fn paused(&self, chall: &ClaimedChallenge, now: i64) {
        let limit = self.settings.pause_after_failures;
        tracing::warn!(account_id = %chall.account_id, identifier = %chall.identifier,
            "validation paused after {limit} failures within an hour; `vacme limits unpause` lifts it");
        AuditEvent::new("paused", "vacme")
            .identifiers(std::slice::from_ref(&chall.identifier))
            .detail(format!("{limit} failed validations within an hour"))
            .account(&chall.account_id)
            .record(&self.store, now)
            .await;
    }
}

/// 1, 2, 4, 8, then 10 seconds between attempts.
fn backoff(attempts: i64) -> i64 {
    crate::jobs::backoff(attempts, 10)
}

/// RFC 8555 §7.1.3/§6.7.1: the order's error names the identifier that failed.
fn order_problem(chall: &ClaimedChallenge, problem: &Problem) -> serde_json::Value {
    let sub =
        Subproblem { kind: problem.kind, detail: problem.detail.clone(), identifier: Some(chall.identifier.clone()) };
    let order =
        Problem::new(problem.kind, format!("validation of {} failed: {}", chall.identifier.value(), problem.detail))
            .with_subproblems(vec![sub]);
    serde_json::to_value(&order).unwrap_or_else(|_| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        assert_eq!((0..12).map(backoff).collect::<Vec<_>>(), vec![1, 2, 4, 8, 10, 10, 10, 10, 10, 10, 10, 10]);
    }
}
