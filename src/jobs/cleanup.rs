//! The periodic clean-up: closes expired orders and authorizations, deletes what nobody needs
//! any more, and pushes revocations the CA has not confirmed (it was down when they were made).

use std::{sync::Arc, time::Duration};

use crate::{
    acme::{Problem, ari},
    clock::Clock,
    issuer::Issuer,
    jobs::{Outcome, Periodic, revocation::tell_ca},
    policy::Lifecycle,
    store::{CleanupReport, Store},
};

/// Most pending revocations pushed per run.
const REVOCATIONS_PER_RUN: i64 = 100;

/// What the clean-up job needs.
#[derive(Clone, Debug)]
pub struct Cleanup {
    pub store: Store,
    pub issuer: Arc<dyn Issuer>,
    pub lifecycle: Arc<Lifecycle>,
    pub clock: Arc<dyn Clock>,
    pub interval: Duration,
    pub retention_secs: i64,
    /// How long audit events are kept; 0: for ever.
    pub audit_retention_secs: i64,
}

impl Periodic for Cleanup {
    fn name(&self) -> &'static str {
        "cleanup"
    }

    /// Runs once at start, then every `interval`.
    fn interval(&self) -> Duration {
        self.interval
    }

    async fn tick(&self) -> Outcome {
        self.once().await;
        Outcome::Done
    }
}

impl Cleanup {
    /// One run; errors are logged, never fatal. Returns what was cleaned and how many
    /// revocations the CA confirmed.
    pub async fn once(&self) -> (CleanupReport, usize) {
        let now = self.clock.unix();
        let expired = Problem::malformed("the order expired before it was finalized");
        let expired = serde_json::to_value(&expired).unwrap_or_default();
        let report = match self.store.cleanup(now, self.retention_secs, &expired).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "clean-up failed");
                CleanupReport::default()
            }
        };
        if self.audit_retention_secs > 0 {
            match self.store.purge_audit(now - self.audit_retention_secs).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(audit_events = n, "clean-up: audit events past their retention deleted"),
                Err(e) => tracing::warn!(error = %e, "clean-up of audit events failed"),
            }
        }
        if report != CleanupReport::default() {
            tracing::info!(
                nonces = report.nonces,
                expired_orders = report.expired_orders,
                expired_authorizations = report.expired_authorizations,
                deleted_orders = report.deleted_orders,
                "clean-up"
            );
        }
        let mut confirmed = 0;
        match self.store.pending_ca_revocations(REVOCATIONS_PER_RUN).await {
            Ok(pending) => {
                for cert in pending {
                    if tell_ca(self.issuer.as_ref(), &self.store, &self.lifecycle, &cert, now).await {
                        confirmed += 1;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list pending revocations"),
        }
        // Certificates the CA signed wrongly whose revocation did not go through yet.
        confirmed +=
            crate::jobs::revocation::push_rejected(self.issuer.as_ref(), &self.store, REVOCATIONS_PER_RUN, now).await;
        (report, confirmed)
    }
}

/// Gives certificates recorded before renewal information existed their certID.
pub async fn backfill_ari_ids(store: &Store) -> Result<usize, crate::store::StoreError> {
    let mut done = 0;
    for (id, chain) in store.certificates_without_ari_id().await? {
        if let Some(ari_id) = ari::cert_id_of_pem(&chain) {
            store.set_ari_id(&id, &ari_id).await?;
            done += 1;
        }
    }
    Ok(done)
}
