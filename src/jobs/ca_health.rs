//! The CA's health, watched: every `INTERVAL` the issuer's cheap probe (`Issuer::health`: Vault's
//! `sys/health`, or the local CA's key) is asked, and `/metrics` shows the answer as
//! `vacme_ca_reachable`, so an alert fires on a CA that stays away even while nobody orders.

use std::{sync::Arc, time::Duration};

use crate::{
    issuer::Issuer,
    jobs::{Outcome, Periodic},
    metrics::Metrics,
};

/// Time between checks.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Longest wait for one answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the health check needs.
#[derive(Clone, Debug)]
pub struct CaHealth {
    pub issuer: Arc<dyn Issuer>,
    pub metrics: Arc<Metrics>,
}

impl Periodic for CaHealth {
    fn name(&self) -> &'static str {
        "ca_health"
    }

    fn interval(&self) -> Duration {
        INTERVAL
    }

    async fn tick(&self) -> Outcome {
        let answer = tokio::time::timeout(TIMEOUT, self.issuer.health()).await;
        let up = matches!(answer, Ok(Ok(())));
        if !up {
            let why = match answer {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {} s", TIMEOUT.as_secs()),
            };
            tracing::warn!(issuer = self.issuer.name(), error = %why, "the CA's health check failed");
        }
        self.metrics.set_ca_reachable(self.issuer.name(), up);
        if up { Outcome::Done } else { Outcome::Retry }
    }
}
