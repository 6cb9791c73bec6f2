//! What every handler and worker shares.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::{Notify, watch};

use crate::{
    acme::Urls,
    clock::Clock,
    config::{LimitsConfig, ProfileConfig, RenewalConfig},
    eab::EabSecret,
    issuer::{
        CsrKey, Issuer, KeyKind, KeyPolicy, SignTarget,
        role::{KeyRule, RoleBook, RoleRef, RoleState, VaultRoutes, key_rules, refusal_detail},
    },
    jobs::{renewal::CaChecks, revocation::Revocations},
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
    /// The renewal-info CA check: the CA's answers, kept `renewal.ca_check_secs`, and the
    /// questions waiting for the job that asks them.
    pub ca_checks: Arc<CaChecks>,
    /// Revocations waiting for the job that pushes them to the CA.
    pub revocations: Arc<Revocations>,
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
    /// `vault.mount`, `vault.role` and `[vault.roles_by_key]`; `None` with the local CA.
    pub vault: Option<VaultRoutes>,
    /// What the Vault issuer last read about the roles it signs with.
    pub roles: Arc<RoleBook>,
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

    /// What an order of `profile` whose CSR has `key` is signed with: the one routing decision,
    /// used by finalize (to check the role takes the key) and by the issuance worker (to sign),
    /// so both see the same role. Inside a profile: its `roles_by_key`, then its `role`; then
    /// `[vault.roles_by_key]`; then `vault.role` (`role: None`).
    pub fn route(&self, profile: Option<&str>, key: CsrKey) -> SignTarget {
        let mut target = self.target(profile);
        let kind = key.kind();
        let cfg = target.profile.as_deref().and_then(|p| self.profiles.get(p));
        let chosen = cfg
            .and_then(|c| c.roles_by_key.get(kind).map(str::to_owned).or_else(|| c.role.clone()))
            .or_else(|| self.vault.as_ref().and_then(|v| v.by_key.get(kind)).map(str::to_owned));
        if chosen.is_some() {
            target.role = chosen;
        }
        target
    }

    /// The Vault role (mount and name) `target` is signed with; `None` with the local CA.
    pub fn role_of(&self, target: &SignTarget) -> Option<RoleRef> {
        let v = self.vault.as_ref()?;
        Some(RoleRef::new(
            target.mount.clone().unwrap_or_else(|| v.mount.clone()),
            target.role.clone().unwrap_or_else(|| v.role.clone()),
        ))
    }

    /// Every Vault role an order can be signed with: the defaults, `roles_by_key` and each
    /// profile's, once each.
    pub fn all_roles(&self) -> Vec<RoleRef> {
        let mut out = std::collections::BTreeSet::new();
        if self.vault.is_none() {
            return Vec::new();
        }
        let profiles = std::iter::once(None).chain(self.profiles.keys().map(|p| Some(p.as_str())));
        for profile in profiles {
            for key in [CsrKey::Ec { bits: 256 }, CsrKey::Rsa { bits: 2048 }, CsrKey::Ed25519] {
                out.extend(self.role_of(&self.route(profile, key)));
            }
        }
        out.into_iter().collect()
    }

    /// The keys the roles serving `profile` take, as far as they are known.
    pub fn key_rules(&self, profile: Option<&str>) -> Vec<KeyRule> {
        key_rules(|kind| {
            let key = match kind {
                KeyKind::Ec => CsrKey::Ec { bits: 256 },
                KeyKind::Rsa => CsrKey::Rsa { bits: 2048 },
                KeyKind::Ed25519 => CsrKey::Ed25519,
            };
            self.role_of(&self.route(profile, key)).and_then(|r| self.roles.get(&r))
        })
    }

    /// Finalize's key check: `Err(detail)` when the role `key` is routed to is known and does
    /// not take it. A role not (yet) read passes, as before roles were read (Vault judges), and
    /// asks the reader for another look.
    pub fn check_key(&self, profile: Option<&str>, key: CsrKey) -> Result<(), String> {
        let Some(role) = self.role_of(&self.route(profile, key)) else { return Ok(()) };
        match self.roles.get(&role) {
            Some(RoleState::Known(info)) if info.takes(key) => Ok(()),
            Some(RoleState::Known(_)) => Err(refusal_detail(&self.key_rules(profile), key)),
            Some(RoleState::Unknown(_)) | None => {
                self.roles.want_refresh();
                Ok(())
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::role::{RoleInfo, RolesByKey};

    fn lifecycle(vault: Option<VaultRoutes>) -> Lifecycle {
        let dir = tempfile::tempdir().unwrap();
        let profile = |role: Option<&str>, mount: Option<&str>, rsa: Option<&str>| ProfileConfig {
            role: role.map(str::to_owned),
            mount: mount.map(str::to_owned),
            roles_by_key: RolesByKey { rsa: rsa.map(str::to_owned), ..RolesByKey::default() },
            ..ProfileConfig::default()
        };
        let profiles = BTreeMap::from([
            ("plain".to_owned(), profile(None, None, None)),
            ("short".to_owned(), profile(Some("lab-short"), None, None)),
            ("short-rsa".to_owned(), profile(Some("lab-short"), Some("pki_other"), Some("lab-short-rsa"))),
        ]);
        Lifecycle {
            eab: EabSecret::load_or_create(&dir.path().join("eab")).unwrap(),
            eab_required: false,
            profiles,
            default_profile: None,
            renewal: RenewalConfig::default(),
            vault,
            roles: Arc::new(RoleBook::default()),
        }
    }

    fn routes(rsa: Option<&str>) -> VaultRoutes {
        VaultRoutes {
            mount: "pki_int".into(),
            role: "lab-internal".into(),
            by_key: RolesByKey { rsa: rsa.map(str::to_owned), ..RolesByKey::default() },
        }
    }

    #[test]
    fn routing_table() {
        let (ec, rsa, ed) = (CsrKey::Ec { bits: 256 }, CsrKey::Rsa { bits: 2048 }, CsrKey::Ed25519);
        let routed = lifecycle(Some(routes(Some("lab-internal-rsa"))));
        let unrouted = lifecycle(Some(routes(None)));
        let table: &[(&Lifecycle, Option<&str>, CsrKey, &str)] = &[
            (&routed, None, ec, "pki_int/lab-internal"),
            (&routed, None, rsa, "pki_int/lab-internal-rsa"),
            (&routed, None, ed, "pki_int/lab-internal"),
            (&unrouted, None, rsa, "pki_int/lab-internal"),
            // A profile without a role of its own uses vacme's routing.
            (&routed, Some("plain"), rsa, "pki_int/lab-internal-rsa"),
            (&routed, Some("plain"), ec, "pki_int/lab-internal"),
            // A profile's role plays the part of vault.role: vacme's roles_by_key does not apply.
            (&routed, Some("short"), rsa, "pki_int/lab-short"),
            (&routed, Some("short"), ec, "pki_int/lab-short"),
            (&routed, Some("short-rsa"), rsa, "pki_other/lab-short-rsa"),
            (&routed, Some("short-rsa"), ec, "pki_other/lab-short"),
            (&unrouted, Some("short-rsa"), rsa, "pki_other/lab-short-rsa"),
            // An unknown profile name is the default.
            (&routed, Some("nope"), rsa, "pki_int/lab-internal-rsa"),
        ];
        for &(lc, profile, key, want) in table {
            let role = lc.role_of(&lc.route(profile, key)).unwrap();
            assert_eq!(role.to_string(), want, "{profile:?} {key}");
        }
        let local = lifecycle(None);
        assert_eq!(local.role_of(&local.route(None, rsa)), None, "the local CA has no roles");
        assert!(local.check_key(None, rsa).is_ok());
        assert!(local.all_roles().is_empty());
        let all: Vec<String> = routed.all_roles().iter().map(ToString::to_string).collect();
        assert_eq!(
            all,
            [
                "pki_int/lab-internal",
                "pki_int/lab-internal-rsa",
                "pki_int/lab-short",
                "pki_other/lab-short",
                "pki_other/lab-short-rsa"
            ]
        );
    }

    #[test]
    fn finalize_key_check() {
        let ec_role = |kt: &str| {
            RoleState::Known(RoleInfo::from_vault(&serde_json::json!({"key_type": kt, "key_bits": 0})).unwrap())
        };
        let lc = lifecycle(Some(routes(None)));
        let rsa = CsrKey::Rsa { bits: 2048 };
        // Not read yet, or unreadable: Vault judges, as before.
        assert!(lc.check_key(None, rsa).is_ok());
        lc.roles.set(RoleRef::new("pki_int", "lab-internal"), RoleState::Unknown("HTTP 403".into()));
        assert!(lc.check_key(None, rsa).is_ok());
        lc.roles.set(RoleRef::new("pki_int", "lab-internal"), ec_role("ec"));
        let detail = lc.check_key(None, rsa).unwrap_err();
        assert!(detail.starts_with("this CA signs ECDSA keys (P-256 or larger); your CSR has an RSA 2048-bit key."));
        assert!(lc.check_key(None, CsrKey::Ec { bits: 384 }).is_ok());

        let lc = lifecycle(Some(routes(Some("lab-internal-rsa"))));
        lc.roles.set(RoleRef::new("pki_int", "lab-internal"), ec_role("ec"));
        lc.roles.set(RoleRef::new("pki_int", "lab-internal-rsa"), ec_role("rsa"));
        assert!(lc.check_key(None, rsa).is_ok());
        let detail = lc.check_key(None, CsrKey::Ed25519).unwrap_err();
        assert!(detail.contains("ECDSA keys (P-256 or larger) and RSA keys of 2048 bits or more"), "{detail}");
        assert_eq!(lc.key_rules(None).iter().map(|r| r.short()).collect::<Vec<_>>(), ["ECDSA P-256+", "RSA 2048+"]);
    }
}
