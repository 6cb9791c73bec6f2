//! What every handler and worker shares.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::{Notify, watch};

use crate::{
    acme::Urls,
    clock::Clock,
    config::{LimitsConfig, ProfileConfig, RenewalConfig},
    eab::EabSecret,
    issuer::{Issuer, KeyPolicy, SignTarget},
    metrics::Metrics,
    nonce::Nonces,
    policy::Policy,
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
    pub renewal_info_limit: Arc<crate::ratelimit::AddrBuckets>,
}

/// Accounts, profiles and renewal: what the lifecycle endpoints need from the configuration.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    pub eab: EabSecret,
    /// `meta.externalAccountRequired`.
    pub eab_required: bool,
    pub profiles: BTreeMap<String, ProfileConfig>,
    pub default_profile: Option<String>,
    pub renewal: RenewalConfig,
}

impl Lifecycle {
    /// What an order of `profile` is signed with (`None`: the issuer's defaults).
    pub fn target(&self, profile: Option<&str>) -> SignTarget {
        match profile.and_then(|p| self.profiles.get(p).map(|cfg| (p, cfg))) {
            Some((name, cfg)) => SignTarget {
                profile: Some(name.to_owned()),
                role: cfg.role.clone(),
                mount: cfg.mount.clone(),
                max_lifetime: cfg.max_days.map(|d| time::Duration::days(i64::from(d))),
            },
            None => SignTarget::default(),
        }
    }
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

/// How handlers tell workers there is work, and workers tell handlers it is done.
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
