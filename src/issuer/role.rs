//! What vacme knows about the Vault roles it signs with (`GET <mount>/roles/<role>`), and the
//! pure decisions made from it: which keys a role takes, which role a key goes to, and what a
//! client is told when no role takes its key.
//!
//! Vault's `sign` judges a CSR's key only after vacme validated the order; a refusal there turns
//! an order the client already proved into `invalid`. Knowing the role's key rule beforehand
//! lets finalize answer `badCSR` while the order is still `ready` (RFC 8555 §7.4: the client may
//! finalize again with another CSR).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::RwLock,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use super::{CsrKey, KeyKind};

/// A role's `key_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKeyType {
    /// `rsa`.
    Rsa,
    /// `ec`.
    Ec,
    /// `ed25519`.
    Ed25519,
    /// `any`: every family Vault can sign.
    Any,
}

/// The parts of a Vault PKI role that decide what vacme may send to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleInfo {
    /// `key_type`.
    pub key_type: RoleKeyType,
    /// `key_bits`, with Vault's 0 ("default") resolved: 2048 for rsa, 256 for ec, 0 otherwise.
    pub key_bits: u32,
    /// Vault takes the SANs from the CSR instead of `alt_names`/`ip_sans` (Vault's default: true).
    pub use_csr_sans: bool,
    /// Vault takes the CN from the CSR instead of `common_name` (Vault's default: true).
    pub use_csr_common_name: bool,
    /// `max_ttl`; `None` when the role leaves it to the mount.
    pub max_ttl: Option<Duration>,
    /// `allowed_domains`.
    pub allowed_domains: Vec<String>,
    /// `allow_subdomains`.
    pub allow_subdomains: bool,
    /// `allow_wildcard_certificates`.
    pub allow_wildcard_certificates: bool,
    /// `allow_ip_sans`.
    pub allow_ip_sans: bool,
    /// `allow_bare_domains`.
    pub allow_bare_domains: bool,
    /// `allow_any_name`.
    pub allow_any_name: bool,
}

impl RoleInfo {
    /// Reads the `data` object of Vault's answer to `GET <mount>/roles/<role>`. Fields Vault
    /// leaves out take Vault's defaults; a missing or unknown `key_type` is an error, since the
    /// one thing vacme must not do is guess which keys a role takes.
    pub fn from_vault(data: &Value) -> Result<RoleInfo, String> {
        let key_type = match data["key_type"].as_str() {
            Some("rsa") => RoleKeyType::Rsa,
            Some("ec") => RoleKeyType::Ec,
            Some("ed25519") => RoleKeyType::Ed25519,
            Some("any") => RoleKeyType::Any,
            Some(other) => return Err(format!("unknown key_type {other:?}")),
            None => return Err("no key_type in the role".into()),
        };
        let bits = data["key_bits"].as_u64().unwrap_or(0).min(u64::from(u32::MAX)) as u32;
        let key_bits = match (key_type, bits) {
            (RoleKeyType::Rsa, 0) => 2048,
            (RoleKeyType::Ec, 0) => 256,
            (RoleKeyType::Ed25519 | RoleKeyType::Any, _) => 0,
            (_, b) => b,
        };
        let flag = |k: &str, default: bool| data[k].as_bool().unwrap_or(default);
        // Vault answers max_ttl in seconds; older releases answered a duration string.
        let max_ttl = match &data["max_ttl"] {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim_end_matches('s').parse().ok(),
            _ => None,
        }
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
        let allowed_domains = match &data["allowed_domains"] {
            Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Value::String(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(RoleInfo {
            key_type,
            key_bits,
            use_csr_sans: flag("use_csr_sans", true),
            use_csr_common_name: flag("use_csr_common_name", true),
            max_ttl,
            allowed_domains,
            allow_subdomains: flag("allow_subdomains", false),
            allow_wildcard_certificates: flag("allow_wildcard_certificates", true),
            allow_ip_sans: flag("allow_ip_sans", true),
            allow_bare_domains: flag("allow_bare_domains", false),
            allow_any_name: flag("allow_any_name", false),
        })
    }

    /// Whether Vault's `sign` would take a CSR with `key` (OpenBao 2.7's rule): the family must
    /// be `key_type` unless that is `any`, and the size at least `key_bits` (for EC the curve
    /// size, so a P-384 key passes a 256 role); an RSA key is never below 2048 bits.
    pub fn takes(&self, key: CsrKey) -> bool {
        if matches!(key, CsrKey::Rsa { bits } if bits < 2048) {
            return false;
        }
        match (self.key_type, key.kind()) {
            (RoleKeyType::Any, _) => true,
            (RoleKeyType::Rsa, KeyKind::Rsa) | (RoleKeyType::Ec, KeyKind::Ec) => key.bits() >= self.key_bits,
            (RoleKeyType::Ed25519, KeyKind::Ed25519) => true,
            _ => false,
        }
    }

    /// The smallest key of `kind` this role takes, if it takes that family at all.
    pub fn accepts(&self, kind: KeyKind) -> Option<KeyRule> {
        let min_bits = match (self.key_type, kind) {
            (RoleKeyType::Any, KeyKind::Rsa) => 2048,
            (RoleKeyType::Any, KeyKind::Ec) => 256,
            (RoleKeyType::Any, KeyKind::Ed25519) | (RoleKeyType::Ed25519, KeyKind::Ed25519) => 0,
            (RoleKeyType::Rsa, KeyKind::Rsa) => self.key_bits.max(2048),
            (RoleKeyType::Ec, KeyKind::Ec) => self.key_bits,
            _ => return None,
        };
        Some(KeyRule { kind, min_bits })
    }

    /// Vault would take names from the CSR rather than those vacme sends.
    pub fn reads_names_from_csr(&self) -> bool {
        self.use_csr_sans || self.use_csr_common_name
    }
}

/// One key family a role takes, from a minimum size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRule {
    /// The family.
    pub kind: KeyKind,
    /// Smallest size taken (curve size for EC; 0 for Ed25519).
    pub min_bits: u32,
}

impl KeyRule {
    /// For a sentence: "ECDSA keys (P-256 or larger)".
    pub fn long(&self) -> String {
        match self.kind {
            KeyKind::Ec => format!("ECDSA keys (P-{} or larger)", self.min_bits),
            KeyKind::Rsa => format!("RSA keys of {} bits or more", self.min_bits),
            KeyKind::Ed25519 => "Ed25519 keys".into(),
        }
    }

    /// For a list: "ECDSA P-256+".
    pub fn short(&self) -> String {
        match self.kind {
            KeyKind::Ec => format!("ECDSA P-{}+", self.min_bits),
            KeyKind::Rsa => format!("RSA {}+", self.min_bits),
            KeyKind::Ed25519 => "Ed25519".into(),
        }
    }
}

/// `[vault.roles_by_key]` / `[profiles.<name>.roles_by_key]`: the role for each key family;
/// a family not named goes to the `role` beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RolesByKey {
    /// Role for ECDSA keys. Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec: Option<String>,
    /// Role for RSA keys. Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsa: Option<String>,
    /// Role for Ed25519 keys. Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ed25519: Option<String>,
}

impl RolesByKey {
    /// The role named for `kind`, if any.
    pub fn get(&self, kind: KeyKind) -> Option<&str> {
        match kind {
            KeyKind::Ec => self.ec.as_deref(),
            KeyKind::Rsa => self.rsa.as_deref(),
            KeyKind::Ed25519 => self.ed25519.as_deref(),
        }
    }

    /// Every role named, in family order.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        [&self.ec, &self.rsa, &self.ed25519].into_iter().filter_map(|r| r.as_deref())
    }

    /// Nothing configured (the section is left out of `check-config`'s output).
    pub fn is_empty(&self) -> bool {
        self.ec.is_none() && self.rsa.is_none() && self.ed25519.is_none()
    }
}

/// A role by mount and name: `pki_int` + `lab-internal`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleRef {
    /// The PKI mount.
    pub mount: String,
    /// The role under it.
    pub role: String,
}

impl RoleRef {
    /// A role under a mount.
    pub fn new(mount: impl Into<String>, role: impl Into<String>) -> Self {
        Self { mount: mount.into(), role: role.into() }
    }

    /// The path vacme reads: `<mount>/roles/<role>`.
    pub fn path(&self) -> String {
        format!("{}/roles/{}", self.mount, self.role)
    }

    /// The policy line that lets vacme read the role.
    pub fn policy_line(&self) -> String {
        format!("path \"{}\" {{ capabilities = [\"read\"] }}", self.path())
    }

    /// The command that makes Vault take names only from vacme. `patch` changes only these two
    /// fields; `write` would replace the role with one holding only them.
    pub fn fix_command(&self) -> String {
        format!("vault patch {} use_csr_sans=false use_csr_common_name=false", self.path())
    }
}

impl fmt::Display for RoleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mount, self.role)
    }
}

/// What vacme knows of one role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleState {
    /// Read from Vault.
    Known(RoleInfo),
    /// Could not be read (no `read` in the policy, no such role, Vault down): vacme sends
    /// requests as before and lets Vault judge them.
    Unknown(String),
}

/// The roles vacme signs with and what it last read about each. Filled by the Vault issuer's
/// background reader; read by finalize, the directory and readiness.
#[derive(Debug, Default)]
pub struct RoleBook {
    roles: RwLock<BTreeMap<RoleRef, RoleState>>,
    /// Asks the reader for an early look (a role that was unknown when an order needed it).
    wanted: Notify,
}

impl RoleBook {
    /// What is known about `role`; `None` when it was never looked at.
    pub fn get(&self, role: &RoleRef) -> Option<RoleState> {
        self.roles.read().unwrap_or_else(|p| p.into_inner()).get(role).cloned()
    }

    /// Records what a read found; returns what was there before.
    pub fn set(&self, role: RoleRef, state: RoleState) -> Option<RoleState> {
        self.roles.write().unwrap_or_else(|p| p.into_inner()).insert(role, state)
    }

    /// Every role with its state.
    pub fn all(&self) -> Vec<(RoleRef, RoleState)> {
        self.roles.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(r, s)| (r.clone(), s.clone())).collect()
    }

    /// Asks the reader to read the roles again soon.
    pub fn want_refresh(&self) {
        self.wanted.notify_one();
    }

    /// Resolves when someone asked for a refresh.
    pub async fn refresh_wanted(&self) {
        self.wanted.notified().await;
    }

    /// The lines `/readyz` (and the start-up log) report: roles that cannot be read, and roles
    /// that take names from the CSR. Empty when every role is known and safe.
    pub fn report(&self) -> Vec<String> {
        self.all().iter().filter_map(|(r, s)| report_line(r, s)).collect()
    }
}

/// The report line of one role, if it needs one.
pub fn report_line(role: &RoleRef, state: &RoleState) -> Option<String> {
    match state {
        RoleState::Unknown(why) => Some(format!(
            "role {role} cannot be read ({why}): Vault judges each CSR's key itself; \
             add `{}` to vacme's Vault policy",
            role.policy_line()
        )),
        RoleState::Known(info) if info.reads_names_from_csr() => Some(format!(
            "role {role} takes names from the CSR (use_csr_sans={}, use_csr_common_name={}); \
             vacme refuses CSRs it does not fully understand and checks every certificate, \
             but fix the role: {}",
            info.use_csr_sans,
            info.use_csr_common_name,
            role.fix_command()
        )),
        RoleState::Known(_) => None,
    }
}

/// Where orders are signed when Vault is the CA: `vault.mount`, `vault.role` and
/// `[vault.roles_by_key]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultRoutes {
    /// `vault.mount`.
    pub mount: String,
    /// `vault.role`.
    pub role: String,
    /// `[vault.roles_by_key]`.
    pub by_key: RolesByKey,
}

/// The keys, across families, that the roles serving one profile take (unknown roles left out).
pub fn key_rules(role_for: impl Fn(KeyKind) -> Option<RoleState>) -> Vec<KeyRule> {
    let mut rules = BTreeSet::new();
    for kind in [KeyKind::Ec, KeyKind::Rsa, KeyKind::Ed25519] {
        if let Some(RoleState::Known(info)) = role_for(kind)
            && let Some(rule) = info.accepts(kind)
        {
            rules.insert(rule);
        }
    }
    rules.into_iter().collect()
}

/// `badCSR` detail for a key no role takes: what this server signs, what the CSR has, and how
/// the common clients ask for a key that works.
pub fn refusal_detail(rules: &[KeyRule], key: CsrKey) -> String {
    let signs = match rules {
        [] => format!("this CA signs no {} keys", key_family_word(key.kind())),
        [one] => format!("this CA signs {}", one.long()),
        many => {
            let (last, rest) = many.split_last().unwrap_or((&many[0], &[]));
            let rest: Vec<String> = rest.iter().map(KeyRule::long).collect();
            format!("this CA signs {} and {}", rest.join(", "), last.long())
        }
    };
    // "an RSA", "an ECDSA", "an Ed25519": every family starts with a vowel sound.
    let mut out = format!("{signs}; your CSR has an {key} key");
    let hint = if rules.iter().any(|r| r.kind == KeyKind::Ec) {
        Some(
            "cert-manager: set spec.privateKey.algorithm: ECDSA; certbot: --key-type ecdsa; \
             lego: --key-type ec256; acme.sh: -k ec-256; \
             Traefik: certificatesResolvers.<name>.acme.keyType=EC256; Caddy: ECDSA is its default"
                .to_owned(),
        )
    } else {
        rules.iter().find(|r| r.kind == KeyKind::Rsa).map(|r| {
            let bits = r.min_bits.max(2048);
            format!(
                "cert-manager: set spec.privateKey.algorithm: RSA and size: {bits}; \
                 certbot: --key-type rsa --rsa-key-size {bits}; lego: --key-type rsa{bits}; \
                 acme.sh: -k {bits}; Traefik: certificatesResolvers.<name>.acme.keyType=RSA{bits}"
            )
        })
    };
    if let Some(h) = hint {
        out.push_str(". ");
        out.push_str(&h);
    }
    out
}

fn key_family_word(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Ec => "ECDSA",
        KeyKind::Rsa => "RSA",
        KeyKind::Ed25519 => "Ed25519",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(key_type: RoleKeyType, key_bits: u32) -> RoleInfo {
        RoleInfo {
            key_type,
            key_bits,
            use_csr_sans: false,
            use_csr_common_name: false,
            max_ttl: None,
            allowed_domains: vec![],
            allow_subdomains: true,
            allow_wildcard_certificates: true,
            allow_ip_sans: true,
            allow_bare_domains: false,
            allow_any_name: false,
        }
    }

    #[test]
    fn parses_a_real_openbao_role() {
        let answer: Value = serde_json::from_str(include_str!("testdata/openbao-2.7-role.json")).unwrap();
        let info = RoleInfo::from_vault(&answer["data"]).unwrap();
        assert_eq!(
            info,
            RoleInfo {
                key_type: RoleKeyType::Ec,
                key_bits: 256,
                use_csr_sans: true,
                use_csr_common_name: true,
                max_ttl: Some(Duration::from_secs(8760 * 3600)),
                allowed_domains: vec!["lab.test".into()],
                allow_subdomains: true,
                allow_wildcard_certificates: true,
                allow_ip_sans: true,
                allow_bare_domains: false,
                allow_any_name: false,
            }
        );
        assert!(info.reads_names_from_csr());
    }

    #[test]
    fn parse_defaults_and_refusals() {
        let rsa0 = RoleInfo::from_vault(&serde_json::json!({"key_type": "rsa", "key_bits": 0})).unwrap();
        assert_eq!((rsa0.key_bits, rsa0.use_csr_sans, rsa0.use_csr_common_name), (2048, true, true));
        let ec0 = RoleInfo::from_vault(&serde_json::json!({"key_type": "ec"})).unwrap();
        assert_eq!(ec0.key_bits, 256);
        let any = RoleInfo::from_vault(&serde_json::json!({"key_type": "any", "key_bits": 0,
            "use_csr_sans": false, "use_csr_common_name": false, "max_ttl": "3600s"}))
        .unwrap();
        assert_eq!((any.key_type, any.max_ttl), (RoleKeyType::Any, Some(Duration::from_secs(3600))));
        assert!(!any.reads_names_from_csr());
        for bad in [serde_json::json!({}), serde_json::json!({"key_type": "dsa"}), Value::Null] {
            assert!(RoleInfo::from_vault(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn takes_follows_vaults_sign_rule() {
        use CsrKey::*;
        use RoleKeyType as T;
        let table: &[(T, u32, CsrKey, bool)] = &[
            (T::Ec, 256, Ec { bits: 256 }, true),
            (T::Ec, 256, Ec { bits: 384 }, true),
            (T::Ec, 384, Ec { bits: 256 }, false),
            (T::Ec, 384, Ec { bits: 384 }, true),
            (T::Ec, 256, Rsa { bits: 2048 }, false),
            (T::Ec, 256, Rsa { bits: 4096 }, false),
            (T::Ec, 256, Ed25519, false),
            (T::Rsa, 2048, Rsa { bits: 2048 }, true),
            (T::Rsa, 2048, Rsa { bits: 4096 }, true),
            (T::Rsa, 2048, Rsa { bits: 1024 }, false),
            (T::Rsa, 3072, Rsa { bits: 2048 }, false),
            (T::Rsa, 3072, Rsa { bits: 3072 }, true),
            (T::Rsa, 2048, Ec { bits: 256 }, false),
            (T::Rsa, 2048, Ed25519, false),
            (T::Ed25519, 0, Ed25519, true),
            (T::Ed25519, 0, Ec { bits: 256 }, false),
            (T::Ed25519, 0, Rsa { bits: 2048 }, false),
            (T::Any, 0, Ec { bits: 256 }, true),
            (T::Any, 0, Ec { bits: 384 }, true),
            (T::Any, 0, Rsa { bits: 2048 }, true),
            (T::Any, 0, Rsa { bits: 1024 }, false),
            (T::Any, 0, Ed25519, true),
        ];
        for &(kt, bits, key, want) in table {
            assert_eq!(role(kt, bits).takes(key), want, "role {kt:?}/{bits} with {key}");
        }
    }

    #[test]
    fn role_reports() {
        let r = RoleRef::new("pki_int", "lab-internal");
        assert_eq!(report_line(&r, &RoleState::Known(role(RoleKeyType::Ec, 256))), None);
        let mut csr_names = role(RoleKeyType::Ec, 256);
        csr_names.use_csr_sans = true;
        let line = report_line(&r, &RoleState::Known(csr_names)).unwrap();
        assert!(line.contains("use_csr_sans=true"), "{line}");
        assert!(
            line.contains("vault patch pki_int/roles/lab-internal use_csr_sans=false use_csr_common_name=false"),
            "{line}"
        );
        let line = report_line(&r, &RoleState::Unknown("HTTP 403".into())).unwrap();
        assert!(line.contains(r#"path "pki_int/roles/lab-internal" { capabilities = ["read"] }"#), "{line}");
    }

    #[test]
    fn refusal_names_what_is_signed_and_how_to_ask_for_it() {
        let ec = role(RoleKeyType::Ec, 256);
        let rsa = role(RoleKeyType::Rsa, 2048);
        let ec_only = key_rules(|k| (k == KeyKind::Ec).then(|| RoleState::Known(ec.clone())));
        assert_eq!(
            refusal_detail(&ec_only, CsrKey::Rsa { bits: 2048 }),
            "this CA signs ECDSA keys (P-256 or larger); your CSR has an RSA 2048-bit key. \
             cert-manager: set spec.privateKey.algorithm: ECDSA; certbot: --key-type ecdsa; \
             lego: --key-type ec256; acme.sh: -k ec-256; \
             Traefik: certificatesResolvers.<name>.acme.keyType=EC256; Caddy: ECDSA is its default"
        );
        // An ec role serving every family still only takes EC.
        assert_eq!(key_rules(|_| Some(RoleState::Known(ec.clone()))), ec_only);
        let both = key_rules(|k| match k {
            KeyKind::Rsa => Some(RoleState::Known(rsa.clone())),
            _ => Some(RoleState::Known(ec.clone())),
        });
        let d = refusal_detail(&both, CsrKey::Ed25519);
        assert!(
            d.starts_with(
                "this CA signs ECDSA keys (P-256 or larger) and RSA keys of 2048 bits or more; your CSR has an Ed25519 key."
            ),
            "{d}"
        );
        let rsa3072 = key_rules(|_| Some(RoleState::Known(role(RoleKeyType::Rsa, 3072))));
        let d = refusal_detail(&rsa3072, CsrKey::Ec { bits: 256 });
        assert!(d.contains("RSA keys of 3072 bits or more; your CSR has an ECDSA P-256 key"), "{d}");
        assert!(d.contains("certbot: --key-type rsa --rsa-key-size 3072; lego: --key-type rsa3072"), "{d}");
        // Unknown roles say nothing about keys.
        assert!(key_rules(|_| Some(RoleState::Unknown("403".into()))).is_empty());
        assert_eq!(
            refusal_detail(&[], CsrKey::Rsa { bits: 2048 }),
            "this CA signs no RSA keys; your CSR has an RSA 2048-bit key"
        );
    }
}
