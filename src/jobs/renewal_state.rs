//! The renewal-state refresh: every interval, counts the certificates per renewal state
//! (`acme::renewal`) and finds the next expiry, for the gauges `/metrics` shows. A scrape reads
//! the last counts; it never reads the certificates itself. It also tells the operator, once per
//! certificate, when one goes past its renewal window (`renewal_overdue`) or comes within
//! `EXPIRING_WITHIN` of its expiry (`expiring`) with nothing renewing it: audit events, which
//! the webhooks deliver.

use std::{sync::Arc, time::Duration};

use crate::{
    acme::{Identifier, renewal::WindowPercents},
    clock::{Clock, rfc3339},
    jobs::{Outcome, Periodic},
    metrics::Metrics,
    store::{AuditEvent, CertificateRow, RenewalCounts, Store},
};

/// How close to its expiry an unrenewed certificate is reported as `expiring`.
pub const EXPIRING_WITHIN: i64 = 7 * 86_400;

/// Most certificates reported per kind and run (the rest come in the next runs).
const REPORTS_PER_RUN: i64 = 100;

/// Time between refreshes: the states move by the hour, not by the second.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// What the refresh needs.
#[derive(Clone, Debug)]
pub struct RenewalStateRefresh {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub window: WindowPercents,
    pub interval: Duration,
}

impl Periodic for RenewalStateRefresh {
    fn name(&self) -> &'static str {
        "renewal_state"
    }

    /// Runs once at start, then every `interval`.
    fn interval(&self) -> Duration {
        self.interval
    }

    async fn tick(&self) -> Outcome {
        match self.once().await {
            Some(_) => Outcome::Done,
            None => Outcome::Error,
        }
    }
}

impl RenewalStateRefresh {
    /// One refresh: the counts it published, or `None` (logged) when the store failed; the
    /// gauges then keep the last counts.
    pub async fn once(&self) -> Option<RenewalCounts> {
        self.at(self.clock.unix()).await
    }

    /// One refresh as of `now` (tests move time with it).
    pub async fn at(&self, now: i64) -> Option<RenewalCounts> {
        if let Err(e) = self.report_crossings(now).await {
            tracing::warn!(error = %e, "cannot report overdue or expiring certificates");
        }
        match self.store.renewal_counts(self.window, now).await {
            Ok(counts) => {
                let by_state: Vec<(&'static str, i64)> = counts.counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
                self.metrics.set_renewal_states(&by_state, counts.next_expiry);
                Some(counts)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot count certificates per renewal state");
                None
            }
        }
    }
}

impl RenewalStateRefresh {
    /// Audits the certificates that went past their window, or came within `EXPIRING_WITHIN`
    /// of their expiry, since they were last looked at; each once (on any replica).
    async fn report_crossings(&self, now: i64) -> crate::store::Result<()> {
        let end = i64::from(self.window.end);
        for cert in self.store.newly_overdue(end, now, REPORTS_PER_RUN).await? {
            if self.store.mark_notified(&cert.id, true, now).await? {
                let detail = format!(
                    "past its renewal window ({end}% of its lifetime) and not renewed; it expires {}",
                    rfc3339(cert.not_after)
                );
                self.report("renewal_overdue", &cert, detail, now).await;
            }
        }
        for cert in self.store.newly_expiring(now + EXPIRING_WITHIN, now, REPORTS_PER_RUN).await? {
            if self.store.mark_notified(&cert.id, false, now).await? {
                let days = (cert.not_after - now) / 86_400;
                let detail = format!("expires {} (in {days} days) and was not renewed", rfc3339(cert.not_after));
                self.report("expiring", &cert, detail, now).await;
            }
        }
        Ok(())
    }

    async fn report(&self, event: &str, cert: &CertificateRow, detail: String, now: i64) {
        let names: Vec<String> = cert.identifiers.iter().map(Identifier::value).collect();
        tracing::warn!(certificate_id = %cert.id, serial = %cert.serial, identifiers = ?names, event, "{detail}");
        AuditEvent::new(event, "vacme")
            .account(&cert.account_id)
            .order(&cert.order_id)
            .certificate(&cert.id, &cert.serial)
            .identifiers(&cert.identifiers)
            .detail(detail)
            .record(&self.store, now)
            .await;
    }
}
