//! Signs orders in `processing`: the runner claims them from the store; this asks the CA and
//! records the certificate. A CA that is down leaves the order `processing` and is retried with
//! backoff; a CA that refuses makes the order `invalid`.

use std::{sync::Arc, time::Duration};

use serde_json::json;
use tokio::sync::Notify;

use crate::{
    acme::{Problem, ari},
    clock::Clock,
    issuer::{IssuanceRequest, IssueError, Issued, Issuer},
    jobs::{
        Job, Outcome, Wake,
        revocation::{Revocations, revoke_rejected},
    },
    policy::Admission,
    store::{AuditEvent, Claimed, NewCertificate, NewRejected, OrderRow, RejectedRow, Store, StoreError},
};

/// The issuance worker and its dependencies.
#[derive(Clone, Debug)]
pub struct IssuanceWorker {
    pub store: Store,
    pub issuer: Arc<dyn Issuer>,
    pub clock: Arc<dyn Clock>,
    pub wake: Arc<Wake>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The admission checks, asked again just before signing.
    pub admission: Arc<Admission>,
    /// Where revocations the CA did not take at once are retried.
    pub revocations: Arc<Revocations>,
}

impl Job for IssuanceWorker {
    type Item = OrderRow;

    fn name(&self) -> &'static str {
        "issuance"
    }

    fn wake(&self) -> &Notify {
        &self.wake.issuance
    }

    async fn claim(&self, now: i64, lease_until: i64, n: usize) -> Result<Claimed<OrderRow>, StoreError> {
        self.store.claim_due_issuances(now, lease_until, n as i64).await
    }

    const STORE_LEASES: bool = true;

    fn lease_id(&self, order: &OrderRow) -> Option<String> {
        Some(order.id.clone())
    }

    async fn renew(&self, ids: Vec<String>, lease_until: i64) -> Result<(), StoreError> {
        self.store.renew_issuance_leases(ids, lease_until).await
    }

    async fn next_due(&self) -> Option<i64> {
        self.store.next_issuance_due().await.ok().flatten()
    }

    async fn run(&self, order: OrderRow) -> Outcome {
        self.issue(order).await
    }

    /// Finalize waits on this for its order.
    fn finished(&self) {
        self.wake.issued();
    }
}

impl IssuanceWorker {
    async fn issue(&self, order: OrderRow) -> Outcome {
        let now = self.clock.unix();
        match self.admission.recheck(&order).await {
            Ok(None) => {}
            Ok(Some(p)) => return self.refuse_before_signing(&order, p, now).await,
            Err(e) => {
                // Cannot tell: sign nothing now, try again later.
                tracing::warn!(order_id = %order.id, error = %e, "cannot re-check the order before signing");
                if let Err(e) = self.store.issuance_retry(&order.id, now + backoff(order.attempts)).await {
                    tracing::error!(order_id = %order.id, error = %e, "cannot record an issuance result");
                    return Outcome::Error;
                }
                return Outcome::Retry;
            }
        }
        let started = std::time::Instant::now();
        let result = match self.request(&order) {
            Ok(req) => self.sign_once(&order, &req, now).await,
            Err(p) => Err(IssueError::Refused(p.detail)),
        };
        let outcome = match &result {
            Ok(_) => "issued",
            Err(IssueError::Refused(_)) => "refused",
            Err(IssueError::Unavailable(_)) => "unavailable",
            Err(IssueError::Mismatch { .. }) => "mismatch",
        };
        self.metrics.issuance(self.issuer.name(), outcome, started.elapsed());
        let done = if matches!(result, Err(IssueError::Unavailable(_))) { Outcome::Retry } else { Outcome::Done };
        // This attempt recorded the intent, and no CA node can have run its call (an election:
        // every node redirected or refused the connection): the retry need not look for a
        // certificate first, which costs a read per stored certificate and a pause.
        let unsent = order.sign_started_at.is_none() && result.as_ref().is_err_and(IssueError::signed_nothing);
        let outcome = match result {
            Ok(issued) => {
                let cert = NewCertificate {
                    serial: issued.serial.clone(),
                    issuer: self.issuer.name().to_owned(),
                    chain_pem: issued.full_chain_pem(),
                    not_before: issued.not_before.unix_timestamp(),
                    not_after: issued.not_after.unix_timestamp(),
                    ari_id: ari::cert_id_of_pem(&issued.leaf_pem),
                };
                tracing::info!(order_id = %order.id, serial = %issued.serial, issuer = self.issuer.name(),
                    identifiers = ?order.identifiers.iter().map(|i| i.value()).collect::<Vec<_>>(), "certificate issued");
                match self.store.issuance_succeeded(&order, &cert, now).await {
                    Ok(cert_id) => {
                        self.metrics.issued_at(now);
                        AuditEvent::by_account("issued", &order.account_id)
                            .order(&order.id)
                            .certificate(&cert_id, &issued.serial)
                            .identifiers(&order.identifiers)
                            .client_ip_text(order.client_ip.as_deref())
                            .detail(issued_detail(self.issuer.name(), order.client_user_agent.as_deref()))
                            .record(&self.store, now)
                            .await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Err(IssueError::Refused(why)) => {
                tracing::warn!(order_id = %order.id, reason = %why, "CA refused the order");
                AuditEvent::by_account("ca_refused", &order.account_id)
                    .order(&order.id)
                    .identifiers(&order.identifiers)
                    .detail(why.clone())
                    .record(&self.store, now)
                    .await;
                let p = Problem::bad_csr(format!("the CA refused to sign: {why}"));
                self.store
                    .issuance_failed(&order.id, &serde_json::to_value(&p).unwrap_or_else(|_| json!({})), now)
                    .await
            }
            Err(e @ IssueError::Mismatch { .. }) => self.mismatch(&order, e, now).await,
            Err(IssueError::Unavailable(e)) => {
                let delay = backoff(order.attempts);
                tracing::warn!(order_id = %order.id, error = %e, retry_in_secs = delay, "CA unavailable; order stays processing");
                if order.attempts == 0 {
                    // Once per order, not per retry: what the operator is told (webhooks).
                    AuditEvent::by_account("ca_unavailable", &order.account_id)
                        .order(&order.id)
                        .identifiers(&order.identifiers)
                        .detail(format!("the CA did not answer; the order stays processing and is retried ({e})"))
                        .record(&self.store, now)
                        .await;
                }
                if unsent {
                    self.store.issuance_unsent(&order.id, now + delay).await
                } else {
                    self.store.issuance_retry(&order.id, now + delay).await
                }
            }
        };
        match outcome {
            Ok(()) => done,
            Err(e) => {
                tracing::error!(order_id = %order.id, error = %e, "cannot record an issuance result");
                Outcome::Error
            }
        }
    }

    /// The CA signed something other than the order: an incident, not a retry. The certificate
    /// is recorded (with the CA's names) and the order made `invalid` first, so the serial is
    /// known even if vacme stops now; then it is revoked at once. A revocation the CA does not
    /// take is retried a few times by the revocation job and then by every clean-up run until it
    /// goes through.
    async fn mismatch(&self, order: &OrderRow, e: IssueError, now: i64) -> crate::store::Result<()> {
        let IssueError::Mismatch { serial, names, leaf_pem, mount, why } = &e else { return Ok(()) };
        let got: Vec<String> = names.iter().map(|i| i.value()).collect();
        tracing::error!(order_id = %order.id, serial = %serial, issuer = self.issuer.name(), ca_names = ?got,
            reason = %why, "the CA issued a certificate that does not match the order; revoking it");
        self.metrics.post_sign_mismatch(self.issuer.name());
        let rejected = NewRejected {
            serial: serial.clone(),
            identifiers: names.clone(),
            leaf_pem: leaf_pem.clone(),
            mount: mount.clone(),
            reason: why.clone(),
        };
        let p = Problem::from(e);
        let problem = serde_json::to_value(&p).unwrap_or_else(|_| json!({}));
        let id = self.store.issuance_rejected(order, &rejected, &problem, now).await?;
        AuditEvent::by_account("post_sign_mismatch", &order.account_id)
            .order(&order.id)
            .certificate(&id, &rejected.serial)
            .identifiers(&rejected.identifiers)
            .detail(format!("the CA issued a certificate for [{}]; {}; revoked", got.join(", "), rejected.reason))
            .record(&self.store, now)
            .await;
        let record = RejectedRow {
            id,
            serial: rejected.serial,
            order_id: order.id.clone(),
            account_id: order.account_id.clone(),
            identifiers: rejected.identifiers,
            leaf_pem: rejected.leaf_pem,
            mount: rejected.mount,
            reason: rejected.reason,
            created_at: now,
            revoked_at: None,
        };
        if !revoke_rejected(self.issuer.as_ref(), &self.store, &record, now).await {
            self.revocations.retry_rejected(record, self.clock.unix());
        }
        Ok(())
    }

    /// The order becomes `invalid` with `p`, audited; the CA is never called.
    async fn refuse_before_signing(&self, order: &OrderRow, p: Problem, now: i64) -> Outcome {
        tracing::warn!(order_id = %order.id, reason = %p.detail, "order refused before signing");
        AuditEvent::by_account("issuance_refused", &order.account_id)
            .order(&order.id)
            .identifiers(&order.identifiers)
            .detail(p.detail.clone())
            .record(&self.store, now)
            .await;
        let problem = serde_json::to_value(&p).unwrap_or_else(|_| json!({}));
        if let Err(e) = self.store.issuance_failed(&order.id, &problem, now).await {
            tracing::error!(order_id = %order.id, error = %e, "cannot record an issuance result");
            return Outcome::Error;
        }
        Outcome::Done
    }

    /// Signs the order, at most once: the intent is recorded before the first call, and an order
    /// that already had one (its earlier call's answer was lost to a crash or a timeout) first
    /// asks the CA for the certificate that call may have produced.
    async fn sign_once(&self, order: &OrderRow, req: &IssuanceRequest, now: i64) -> Result<Issued, IssueError> {
        match order.sign_started_at {
            Some(since) => {
                // A call the CA took in before it stalled can still finish once it answers again,
                // at the same time as this look: look, give such a call a moment to land, and look
                // once more before signing a second time.
                for look in 0..2 {
                    if look > 0 {
                        tokio::time::sleep(SETTLE).await;
                    }
                    if let Some(found) = self.issuer.already_signed(req, crate::clock::from_unix(since)).await? {
                        tracing::info!(order_id = %order.id, serial = %found.serial,
                            "the CA had signed this order in an earlier attempt; using that certificate");
                        return Ok(found);
                    }
                }
            }
            None => {
                self.store
                    .mark_signing(&order.id, now)
                    .await
                    .map_err(|e| IssueError::unavailable(format!("cannot record the signing intent: {e}")))?;
            }
        }
        self.issuer.sign(req).await
    }

    /// The checked request from the stored CSR, from the same place finalize checked it
    /// (`Admission::signing_request`: names, key policy, role and lifetime).
    fn request(&self, order: &OrderRow) -> Result<IssuanceRequest, Problem> {
        let csr = order.csr.as_deref().ok_or_else(|| Problem::bad_csr("order has no CSR"))?;
        self.admission.signing_request(order, csr, self.clock.unix())
    }
}

/// How long a signing call the CA had already taken in is given to finish before vacme looks for
/// its certificate a second time.
const SETTLE: Duration = Duration::from_secs(2);

/// 1, 2, 4, ... up to 60 seconds between attempts while the CA is down.
fn backoff(attempts: i64) -> i64 {
    crate::jobs::backoff(attempts, 60)
}

/// The `issued` event's detail: the CA, and the client that holds the certificate.
fn issued_detail(issuer: &str, user_agent: Option<&str>) -> String {
    match user_agent {
        Some(ua) => format!("issuer {issuer}; client {ua}"),
        None => format!("issuer {issuer}"),
    }
}
