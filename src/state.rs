//! What every handler and worker shares.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, watch};

use crate::{
    acme::Urls,
    clock::Clock,
    config::LimitsConfig,
    issuer::{Issuer, KeyPolicy},
    jobs::{renewal::CaChecks, revocation::Revocations},
    jws::{extract::Verifier, nonce::Nonces},
    metrics::Metrics,
    policy::{Admission, Lifecycle, Policy},
    store::Store,
};

/// Shared application state behind one `Arc`: axum clones it for every request and extractor, so
/// a clone is one reference count, not one per part.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What `AppState` holds.
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    pub issuer: Arc<dyn Issuer>,
    pub urls: Arc<Urls>,
    pub policy: Arc<Policy>,
    pub clock: Arc<dyn Clock>,
    pub limits: Arc<Limits>,
    pub wake: Arc<Wake>,
    pub lifecycle: Arc<Lifecycle>,
    pub nonces: Arc<Nonces>,
    pub metrics: Arc<Metrics>,
    /// renewal-info requests per client address.
    pub renewal_info_limit: Arc<crate::policy::ratelimit::AddrBuckets>,
    /// The renewal-info CA check: the CA's answers, kept `renewal.ca_check_secs`, and the
    /// questions waiting for the job that asks them.
    pub ca_checks: Arc<CaChecks>,
    /// Revocations waiting for the job that pushes them to the CA.
    pub revocations: Arc<Revocations>,
}

/// Fixed limits and timings, from the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Seconds a nonce stays redeemable.
    pub nonce_ttl_secs: i64,
    /// Seconds an order (and its authorizations) stays open.
    pub order_ttl_secs: i64,
    /// Largest JWS body accepted.
    pub max_body_bytes: usize,
    /// How long finalize waits for the CA before answering `processing`.
    pub finalize_wait: Duration,
    /// `Retry-After` on objects that are still being worked on.
    pub retry_after_secs: u64,
    /// CSR keys accepted at finalize.
    pub key_policy: KeyPolicy,
    /// Rate limits and the orders list's page size.
    pub rate: LimitsConfig,
    /// Longest time from a request's head to its response; the body must arrive in half of it.
    pub request_timeout: Duration,
    /// Longest request target (path and query).
    pub max_url_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            nonce_ttl_secs: 3600,
            order_ttl_secs: 7 * 24 * 3600,
            max_body_bytes: 64 * 1024,
            finalize_wait: Duration::from_secs(5),
            retry_after_secs: 1,
            key_policy: KeyPolicy::default(),
            rate: LimitsConfig::default(),
            request_timeout: Duration::from_secs(30),
            max_url_bytes: 2048,
        }
    }
}

/// How handlers tell the store-backed jobs there is work, and the jobs tell handlers it is done.
/// (The in-memory queues, `Revocations` and `CaChecks`, wake their job when pushed to.)
#[derive(Debug)]
pub struct Wake {
    pub validation: Notify,
    pub issuance: Notify,
    /// Bumped after every finished issuance, so finalize can wait for its order.
    pub issued: watch::Sender<u64>,
}

impl Default for Wake {
    fn default() -> Self {
        Self { validation: Notify::new(), issuance: Notify::new(), issued: watch::Sender::new(0) }
    }
}

impl Wake {
    /// Signals that an issuance finished (whatever its outcome).
    pub fn issued(&self) {
        self.issued.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl AppState {
    /// What admitting an order consults.
    pub fn admission(&self) -> Admission<'_> {
        Admission {
            store: &self.store,
            policy: &self.policy,
            lifecycle: &self.lifecycle,
            limits: &self.limits.rate,
            key_policy: &self.limits.key_policy,
        }
    }
}

impl Verifier for AppState {
    fn store(&self) -> &Store {
        &self.store
    }
    fn nonces(&self) -> &Nonces {
        &self.nonces
    }
    fn urls(&self) -> &Urls {
        &self.urls
    }
    fn now(&self) -> i64 {
        self.clock.unix()
    }
    fn max_body_bytes(&self) -> usize {
        self.limits.max_body_bytes
    }
    fn request_timeout(&self) -> Duration {
        self.limits.request_timeout
    }
}
