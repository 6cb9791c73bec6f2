//! The renewal-state refresh: every interval, counts the certificates per renewal state
//! (`acme::renewal`) and finds the next expiry, for the gauges `/metrics` shows. A scrape reads
//! the last counts; it never reads the certificates itself.

use std::{sync::Arc, time::Duration};

use crate::{
    acme::renewal::WindowPercents,
    clock::Clock,
    jobs::{Outcome, Periodic},
    metrics::Metrics,
    store::{RenewalCounts, Store},
};

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
