//! What every handler and worker shares.

use std::{sync::Arc, time::Duration};

use crate::{
    acme::Urls,
    clock::Clock,
    config::LimitsConfig,
    issuer::{Issuer, TrustAnchor},
    jobs::{Wake, renewal::CaChecks, revocation::Revocations},
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
    /// newOrder's and finalize's checks (the issuance job shares it).
    pub admission: Arc<Admission>,
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
    /// The root `/roots.pem` serves, kept fresh in the background.
    pub trust: Arc<TrustAnchor>,
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
            rate: LimitsConfig::default(),
            request_timeout: Duration::from_secs(30),
            max_url_bytes: 2048,
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
