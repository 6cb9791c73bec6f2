//! One typed configuration: TOML file, then `VACME_*` environment variables, then flags.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::issuer::role::RolesByKey;

/// Everything vacme can be told. Each field's default is stated in its doc comment and in docs/configuration.md.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub tls: TlsConfig,
    pub policy: PolicyConfig,
    pub validation: ValidationConfig,
    pub issuance: IssuanceConfig,
    pub eab: EabConfig,
    pub renewal: RenewalConfig,
    pub cleanup: CleanupConfig,
    pub limits: LimitsConfig,
    /// Certificate profiles (draft-ietf-acme-profiles), by name. Default none.
    pub profiles: BTreeMap<String, ProfileConfig>,
    pub vault: Option<VaultConfig>,
    pub notify: NotifyConfig,
    pub admin: AdminConfig,
}

/// The admin dashboard (docs/dashboard.md): its own HTTPS listener, read-only.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the dashboard. Default true.
    pub enabled: bool,
    /// Its listen address. Default `127.0.0.1:8444`.
    pub listen: SocketAddr,
    /// File holding the bearer token that requests from other than loopback must send.
    /// Default unset: only loopback is served.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 8444)), token_file: None }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTPS listen address. Default `127.0.0.1:8443`.
    pub listen: SocketAddr,
    /// URL clients use. Default `https://localhost:<port>` for loopback/unspecified `listen`, else `https://<ip>:<port>`.
    pub base_url: Option<String>,
    /// SQLite file, local CA and serving certificate. Default `./vacme-data`.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes. Default 65536.
    pub max_body_bytes: usize,
    /// Seconds a TLS handshake and request headers may take. Default 10.
    pub header_timeout_secs: u64,
    /// Seconds a graceful shutdown waits for in-flight requests. Default 10.
    pub shutdown_grace_secs: u64,
    /// Seconds one request may take from its headers to its last response byte; longer gets 503.
    /// Default 30.
    pub request_timeout_secs: u64,
    /// Longest request target (path and query), in bytes; longer gets 414. Default 2048.
    pub max_url_bytes: usize,
    /// Largest request head (request line and headers), in bytes; larger gets 431. Default 16384.
    pub max_header_bytes: usize,
    /// Seconds an HTTP connection may stay open in all, however busy; then it is closed gracefully.
    /// Default 600.
    pub max_connection_secs: u64,
    /// Connections served at once; more wait in the kernel's accept queue. Default 4096.
    pub max_connections: usize,
    /// Connections from one client address at once (trusted proxies exempt); more are closed at
    /// once. Default 256.
    pub max_connections_per_ip: usize,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` names the client, for the per-address
    /// account limit. Default none: the TCP peer is the client.
    #[serde(deserialize_with = "string_or_list")]
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            base_url: None,
            data_dir: PathBuf::from("vacme-data"),
            max_body_bytes: 64 * 1024,
            header_timeout_secs: 10,
            shutdown_grace_secs: 10,
            request_timeout_secs: 30,
            max_url_bytes: 2048,
            max_header_bytes: 16 * 1024,
            max_connection_secs: 600,
            max_connections: 4096,
            max_connections_per_ip: 256,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Store URL. Default `sqlite://<data_dir>/vacme.db`.
    pub url: Option<String>,
    /// SQLite: `full` (each commit on disk before the answer) or `normal` (a power cut may lose
    /// the last commits; a crash of vacme does not). Default `full`.
    pub synchronous: Synchronous,
}

/// The URL's password never shows, as tokens don't (see `redact_url`).
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("synchronous", &self.synchronous)
            .finish()
    }
}

/// SQLite durability of commits.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Names on the generated serving certificate. Default localhost, 127.0.0.1, ::1 and the base URL's host.
    #[serde(deserialize_with = "string_or_list")]
    pub names: Vec<String>,
    /// PEM certificate chain to serve instead of the generated one. Default unset.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`. Default unset.
    pub key_file: Option<PathBuf>,
    /// Who signs the serving certificate when there are no files: `local` (the local CA) or
    /// `issuer` (Vault's `sign` with `vault.role`, or the local CA without Vault). Default `local`.
    pub source: TlsSource,
    /// Seconds between checks of `cert_file`/`key_file` for a new certificate. Default 60.
    pub reload_secs: u64,
    /// Lifetime asked of the issuer for the serving certificate, in seconds. Default unset (the
    /// issuer's own default).
    pub lifetime_secs: Option<u64>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            cert_file: None,
            key_file: None,
            source: TlsSource::Local,
            reload_secs: 60,
            lifetime_secs: None,
        }
    }
}

/// Who signs vacme's own serving certificate.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsSource {
    #[default]
    Local,
    Issuer,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// DNS suffixes that may be ordered (the name itself and names below it). Default `["localhost"]`.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_domains: Vec<String>,
    /// Most identifiers in one order. Default 100.
    pub max_identifiers: usize,
    /// Whether `*.<allowed domain>` may be ordered (proven by dns-01 only). Default false.
    pub allow_wildcards: bool,
    /// CIDRs (or single addresses) that may be ordered as `ip` identifiers. Default none.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_ips: Vec<String>,
    /// This CA's issuer domains for CAA (RFC 8659); empty turns CAA checking off. Default empty.
    #[serde(deserialize_with = "string_or_list")]
    pub caa_identities: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            allowed_domains: vec!["localhost".into()],
            max_identifiers: 100,
            allow_wildcards: false,
            allowed_ips: Vec::new(),
            caa_identities: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Port vacme connects to for http-01. Default 80.
    pub http01_port: u16,
    /// Port vacme connects to for tls-alpn-01. Default 443.
    pub tls_alpn01_port: u16,
    /// DNS servers (`ip:port`, or `ip` for port 53) used to resolve names to validate. Default: the system resolver.
    #[serde(deserialize_with = "string_or_list")]
    pub nameservers: Vec<String>,
    /// Concurrent validations. Default 16.
    pub workers: usize,
    /// Connect and read timeout of one validation attempt, in seconds. Default 10.
    pub timeout_secs: u64,
    /// http-01 redirects followed. Default 10.
    pub max_redirects: usize,
    /// A failing challenge is retried until this many seconds after it was answered. Default 45.
    pub retry_window_secs: u64,
    /// Loopback and private ranges validation may connect to. Default `[]`: none, except that names
    /// under `.localhost` (RFC 6761) are validated on loopback.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_targets: Vec<String>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            http01_port: 80,
            tls_alpn01_port: 443,
            nameservers: Vec::new(),
            workers: 16,
            timeout_secs: 10,
            max_redirects: 10,
            retry_window_secs: 45,
            allowed_targets: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuanceConfig {
    /// Concurrent signing calls to the CA. Default 8.
    pub workers: usize,
    /// Lifetime of certificates from the local CA when the order names none, in days. Default 90.
    pub local_default_days: u32,
    /// Longest lifetime the local CA grants, in days. Default 365.
    pub local_max_days: u32,
    /// Seconds finalize waits for the CA before answering `processing`. Default 5.
    pub finalize_wait_secs: u64,
    /// Profile of orders that name none (must be a key of `[profiles]`). Default unset.
    pub default_profile: Option<String>,
}

impl Default for IssuanceConfig {
    fn default() -> Self {
        Self { workers: 8, local_default_days: 90, local_max_days: 365, finalize_wait_secs: 5, default_profile: None }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EabConfig {
    /// Whether newAccount needs an external account binding (`meta.externalAccountRequired`). Default false.
    pub required: bool,
    /// File with the secret EAB keys are derived from (created 0600 if missing). Default `<data_dir>/eab.secret`.
    pub secret_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenewalConfig {
    /// Start of the suggested renewal window (RFC 9773), in percent of the certificate's lifetime. Default 33.
    pub window_start_percent: u8,
    /// End of the suggested renewal window, in percent of the lifetime. Default 67.
    pub window_end_percent: u8,
    /// `Retry-After` on renewalInfo answers, in seconds. Default 21600.
    pub retry_after_secs: u64,
    /// Seconds the CA's answer to "was this certificate revoked?" is kept for renewalInfo, so
    /// a flood of requests costs at most one CA call per certificate in that time. Default 300.
    pub ca_check_secs: u64,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        Self { window_start_percent: 33, window_end_percent: 67, retry_after_secs: 6 * 3600, ca_check_secs: 300 }
    }
}

/// The events a webhook can be sent (`[[notify.webhooks]] events`).
pub const WEBHOOK_EVENTS: &[&str] = &[
    "issued",
    "renewed",
    "renewal_overdue",
    "expiring",
    "validation_failed",
    "revoked",
    "ca_unavailable",
    "ca_refused",
    "incident",
];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Where events are sent (`[[notify.webhooks]]`). Default none.
    pub webhooks: Vec<WebhookConfig>,
    /// Most events a webhook may fall behind (its receiver down); past it the oldest are
    /// dropped and counted in `vacme_webhook_dropped_total`. Default 10000.
    pub max_backlog: u32,
    /// Seconds one delivery may take. Default 10.
    pub timeout_secs: u64,
    /// PEM roots an `https://` webhook's certificate must chain to. Default the system's
    /// bundle (`/etc/ssl/certs/ca-certificates.crt` or `/etc/pki/tls/certs/ca-bundle.crt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self { webhooks: Vec::new(), max_backlog: 10_000, timeout_secs: 10, ca_bundle: None }
    }
}

/// One webhook.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name in metrics, logs and the store (where it is in the audit trail). Default
    /// `webhook-<position>`, counting from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `http://` or `https://`; its address follows `validation.allowed_targets`.
    pub url: String,
    /// Which of `WEBHOOK_EVENTS` it gets. Default all.
    #[serde(default = "all_webhook_events")]
    pub events: Vec<String>,
    /// `json` (default) or `text` (one plain line: ntfy, Gotify, chat bridges).
    #[serde(default)]
    pub format: WebhookFormat,
    /// File holding the key of `X-Vacme-Signature` (HMAC-SHA256 of the body). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

fn all_webhook_events() -> Vec<String> {
    WEBHOOK_EVENTS.iter().map(|e| (*e).to_owned()).collect()
}

/// The body a webhook is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Text,
}

impl NotifyConfig {
    /// Each webhook's name: its own, or `webhook-<position>`.
    pub fn names(&self) -> Vec<String> {
        self.webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| w.name.clone().unwrap_or_else(|| format!("webhook-{}", i + 1)))
            .collect()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanupConfig {
    /// Seconds between clean-up runs. Default 3600.
    pub interval_secs: u64,
    /// Days an expired, unissued order (with its authorizations) is kept. Default 30.
    pub retention_days: u32,
    /// Days audit events are kept; 0 keeps them for ever. Default 0.
    pub audit_retention_days: u32,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self { interval_secs: 3600, retention_days: 30, audit_retention_days: 0 }
    }
}

/// Rate limits (docs/security.md). Counted from the store, so they hold across restarts and
/// replicas; 0 turns a limit off.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// New accounts from one client address in any hour. Default 20.
    pub accounts_per_ip_per_hour: u32,
    /// New orders by one account in any hour. Default 300.
    pub orders_per_account_per_hour: u32,
    /// Failed validations of one name by one account in an hour after which that account may not
    /// order or validate the name until `vacme limits unpause`. Default 10.
    pub failed_validations_per_name_per_hour: u32,
    /// Pending authorizations one account may hold at once. Default 300.
    pub pending_authorizations_per_account: u32,
    /// Orders per page of an account's orders list (`Link: rel="next"`). Default 100.
    pub orders_per_page: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            accounts_per_ip_per_hour: 20,
            orders_per_account_per_hour: 300,
            failed_validations_per_name_per_hour: 10,
            pending_authorizations_per_account: 300,
            orders_per_page: 100,
        }
    }
}

/// One certificate profile: what an order naming it gets.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Shown to clients in `meta.profiles`. Default empty.
    pub description: String,
    /// Vault role used to sign. Default `vault.role`.
    pub role: Option<String>,
    /// Vault PKI mount used to sign. Default `vault.mount`.
    pub mount: Option<String>,
    /// Longest lifetime, in days; a longer `notAfter` is clamped. Default: the CA's limit.
    pub max_days: Option<u32>,
    /// Role per CSR key family inside this profile (`role` serves the families not listed).
    /// Default empty.
    #[serde(skip_serializing_if = "RolesByKey::is_empty")]
    pub roles_by_key: RolesByKey,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Vault or OpenBao address, e.g. `https://vault.lab.example:8200`, or a list of the
    /// cluster's nodes (`["https://vault-0:8200", "https://vault-1:8200"]`): vacme uses one at a
    /// time and moves to the next when it fails. Required.
    pub address: VaultAddresses,
    /// PKI mount. Default `pki_int`.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// Role used for `sign`. Default `lab-internal`.
    #[serde(default = "default_role")]
    pub role: String,
    /// Role per CSR key family (`ec`, `rsa`, `ed25519`); `role` serves the families not listed.
    /// Default empty.
    #[serde(default, skip_serializing_if = "RolesByKey::is_empty")]
    pub roles_by_key: RolesByKey,
    /// Seconds between two reads of the roles vacme signs with. Default 300.
    #[serde(default = "default_roles_refresh")]
    pub roles_refresh_secs: u64,
    /// CA bundle for Vault's TLS certificate. Default unset.
    pub ca_bundle: Option<PathBuf>,
    /// PEM root that `<mount>/ca_chain` verifies to, served at `/roots.pem` when Vault's chain
    /// stops at the intermediate. Default unset (the chain's own self-signed top).
    pub root_file: Option<PathBuf>,
    /// Vault Enterprise / OpenBao namespace. Default unset.
    pub namespace: Option<String>,
    /// PEM client certificate for Vault's TLS (mutual TLS). Default unset.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`. Default unset.
    pub client_key_file: Option<PathBuf>,
    /// Timeout of one Vault request, in seconds. Default 30.
    #[serde(default = "default_vault_timeout")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub auth: VaultAuthConfig,
}

/// `vault.address`: one URL, or the nodes of one cluster in the order vacme tries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultAddresses(pub Vec<String>);

impl<'de> Deserialize<'de> for VaultAddresses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(VaultAddresses(match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => vec![a],
            OneOrMany::Many(list) => list,
        }))
    }
}

impl Serialize for VaultAddresses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

fn default_mount() -> String {
    "pki_int".into()
}
fn default_role() -> String {
    "lab-internal".into()
}
fn default_roles_refresh() -> u64 {
    300
}
fn default_vault_timeout() -> u64 {
    30
}

/// How vacme logs in to Vault.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VaultAuthMethod {
    /// A token from `token_file`, `VACME_VAULT_TOKEN` or `VAULT_TOKEN`.
    #[default]
    Token,
    /// AppRole login with role_id and a secret_id file.
    Approle,
    /// Kubernetes login with the pod's service-account token.
    Kubernetes,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultAuthConfig {
    /// `token`, `approle` or `kubernetes`. Default `token`.
    pub method: VaultAuthMethod,
    /// File holding the token. Default unset (then `VACME_VAULT_TOKEN`, then `VAULT_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// AppRole role_id. Default unset.
    pub role_id: Option<String>,
    /// File holding the AppRole role_id. Default unset.
    pub role_id_file: Option<PathBuf>,
    /// File holding the AppRole secret_id. Default unset.
    pub secret_id_file: Option<PathBuf>,
    /// Mount path of the AppRole auth method. Default `approle`.
    pub approle_mount: String,
    /// Vault role of the Kubernetes auth method. Default unset (required for `kubernetes`).
    pub kubernetes_role: Option<String>,
    /// Service-account token file, read at every login. Default
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    pub jwt_file: PathBuf,
    /// Mount path of the Kubernetes auth method. Default `kubernetes`.
    pub kubernetes_mount: String,
}

impl Default for VaultAuthConfig {
    fn default() -> Self {
        Self {
            method: VaultAuthMethod::Token,
            token_file: None,
            role_id: None,
            role_id_file: None,
            secret_id_file: None,
            approle_mount: "approle".into(),
            kubernetes_role: None,
            jwt_file: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            kubernetes_mount: "kubernetes".into(),
        }
    }
}

/// Why a configuration was refused; `vacme` exits 64 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Command-line overrides, applied last.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub http01_port: Option<u16>,
}

impl Config {
    /// File (if any), then `VACME_*` variables from `env`, then `overrides`; then `validate`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut tree = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Parse(e.to_string()))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            if let Some(path) = key.strip_prefix("VACME_") {
                // Secrets read from the environment at login time, not config keys.
                if path == "VAULT_TOKEN" || path.is_empty() || path.starts_with("TEST_") || !path.contains("__") {
                    continue;
                }
                set_path(&mut tree, path, &value)?;
            }
        }
        let mut config: Config =
            toml::Value::Table(tree).try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir = dir.clone();
        }
        if let Some(port) = overrides.http01_port {
            config.validation.http01_port = port;
        }
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks, before anything binds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.policy.allowed_domains.is_empty() {
            return bad("policy.allowed_domains is empty: no name could ever be issued".into());
        }
        for d in &self.policy.allowed_domains {
            if crate::acme::identifier::normalize_dns(d).is_err() && d != "localhost" {
                return bad(format!("policy.allowed_domains: {d:?} is not a DNS name"));
            }
        }
        if let Some(url) = &self.server.base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return bad(format!("server.base_url {url:?} must start with https://"));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return bad("tls.cert_file and tls.key_file go together".into());
        }
        if self.tls.cert_file.is_some() && self.tls.source == TlsSource::Issuer {
            return bad("tls.source = \"issuer\" and tls.cert_file exclude each other".into());
        }
        if self.tls.reload_secs == 0 {
            return bad("tls.reload_secs must be at least 1".into());
        }
        for (key, list) in [
            ("policy.allowed_ips", &self.policy.allowed_ips),
            ("validation.allowed_targets", &self.validation.allowed_targets),
            ("server.trusted_proxies", &self.server.trusted_proxies),
        ] {
            for net in list {
                if parse_net(net).is_none() {
                    return bad(format!("{key}: {net:?} is not a CIDR or an IP address"));
                }
            }
        }
        for ns in &self.validation.nameservers {
            if parse_nameserver(ns).is_none() {
                return bad(format!("validation.nameservers: {ns:?} is not ip or ip:port"));
            }
        }
        if self.server.max_header_bytes < 8192 {
            return bad("server.max_header_bytes must be at least 8192".into());
        }
        if self.server.request_timeout_secs == 0 || self.server.max_url_bytes < 256 {
            return bad("server.request_timeout_secs must be at least 1 and server.max_url_bytes at least 256".into());
        }
        if self.server.max_connections == 0 || self.server.max_connections_per_ip == 0 {
            return bad("server.max_connections and server.max_connections_per_ip must be at least 1".into());
        }
        if self.limits.orders_per_page == 0 {
            return bad("limits.orders_per_page must be at least 1".into());
        }
        if self.validation.workers == 0 || self.issuance.workers == 0 {
            return bad("validation.workers and issuance.workers must be at least 1".into());
        }
        if self.validation.retry_window_secs > 55 {
            return bad("validation.retry_window_secs must be at most 55: clients give up after about 60 s".into());
        }
        if self.issuance.local_default_days == 0 || self.issuance.local_default_days > self.issuance.local_max_days {
            return bad("issuance.local_default_days must be between 1 and local_max_days".into());
        }
        if let Some(p) = &self.issuance.default_profile
            && !self.profiles.contains_key(p)
        {
            return bad(format!("issuance.default_profile {p:?} is not a key of [profiles]"));
        }
        for (name, p) in &self.profiles {
            let ok_name = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !ok_name {
                return bad(format!("profiles: {name:?} is not a profile name (letters, digits, - _ .)"));
            }
            if p.max_days == Some(0) {
                return bad(format!("profiles.{name}.max_days must be at least 1"));
            }
        }
        if self.renewal.window_start_percent >= self.renewal.window_end_percent || self.renewal.window_end_percent > 100
        {
            return bad("renewal: window_start_percent must be below window_end_percent, which is at most 100".into());
        }
        if self.cleanup.interval_secs == 0 {
            return bad("cleanup.interval_secs must be at least 1".into());
        }
        self.check_notify()?;
        if let Some(v) = &self.vault {
            if v.address.0.is_empty() {
                return bad("vault.address: the list is empty".into());
            }
            for a in &v.address.0 {
                if !(a.starts_with("http://") || a.starts_with("https://")) {
                    return bad(format!("vault.address {a:?} must be an http(s) URL"));
                }
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = v.address.0.iter().find(|a| !seen.insert(a.trim_end_matches('/'))) {
                return bad(format!("vault.address {twice:?} is listed twice"));
            }
            if v.auth.method == VaultAuthMethod::Approle
                && ((v.auth.role_id.is_none() && v.auth.role_id_file.is_none()) || v.auth.secret_id_file.is_none())
            {
                return bad("vault.auth: approle needs role_id (or role_id_file) and secret_id_file".into());
            }
            if v.roles_refresh_secs == 0 {
                return bad("vault.roles_refresh_secs must be at least 1".into());
            }
        }
        Ok(())
    }

    /// The public base URL, without a trailing slash, for a listener bound to `bound`
    /// (which differs from `server.listen` when that asks for port 0).
    pub fn base_url(&self, bound: SocketAddr) -> String {
        if let Some(url) = &self.server.base_url {
            return url.trim_end_matches('/').to_owned();
        }
        let addr = bound;
        let host = match addr.ip() {
            ip if ip.is_loopback() || ip.is_unspecified() => "localhost".to_owned(),
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        format!("https://{host}:{}", addr.port())
    }

    /// The store URL.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.server.data_dir.join("vacme.db").display()),
        }
    }

    /// Nameservers as socket addresses (validated already).
    pub fn nameservers(&self) -> Vec<SocketAddr> {
        self.validation.nameservers.iter().filter_map(|s| parse_nameserver(s)).collect()
    }

    /// `[notify]`: URLs, event names, unique webhook names.
    fn check_notify(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let names = self.notify.names();
        for (w, name) in self.notify.webhooks.iter().zip(&names) {
            let shown = redact_url(&w.url);
            let url = match reqwest::Url::parse(&w.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
                _ => return bad(format!("notify.webhooks {name}: url {shown:?} must be an http(s) URL with a host")),
            };
            // An address written in the URL is judged now; a name, at each delivery.
            let literal = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<std::net::IpAddr>()
                && let Err(why) = crate::validation::TargetPolicy::new(self.allowed_targets()).check(ip)
            {
                return bad(format!("notify.webhooks {name}: {why}"));
            }
            if let Some(e) = w.events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
                return bad(format!("notify.webhooks {name}: event {e:?} is not one of {}", WEBHOOK_EVENTS.join(", ")));
            }
            let ok_name = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !ok_name {
                return bad(format!("notify.webhooks: {name:?} is not a webhook name (letters, digits, - _ .)"));
            }
        }
        if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
            return bad(format!("notify.webhooks: two webhooks are named {dup:?}"));
        }
        if self.notify.timeout_secs == 0 || self.notify.max_backlog == 0 {
            return bad("notify.timeout_secs and notify.max_backlog must be at least 1".into());
        }
        Ok(())
    }

    /// `validation.allowed_targets` parsed (validated already).
    pub fn allowed_targets(&self) -> Vec<ipnet::IpNet> {
        self.validation.allowed_targets.iter().filter_map(|s| parse_net(s)).collect()
    }

    /// The file EAB keys are derived from.
    pub fn eab_secret_file(&self) -> PathBuf {
        self.eab.secret_file.clone().unwrap_or_else(|| self.server.data_dir.join("eab.secret"))
    }

    pub fn validation_timeout(&self) -> Duration {
        Duration::from_secs(self.validation.timeout_secs)
    }

    /// The effective configuration as TOML, for `check-config`. Holds no secrets: those live in
    /// files, and a password inside a URL (`postgres://user:secret@host/db`) is shown as `***`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = shown.database.url.as_deref().map(redact_url);
        shown.server.base_url = shown.server.base_url.as_deref().map(redact_url);
        if let Some(v) = shown.vault.as_mut() {
            v.address.0 = v.address.0.iter().map(|a| redact_url(a)).collect();
        }
        for w in &mut shown.notify.webhooks {
            w.url = redact_url(&w.url);
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// `url` with its secrets replaced by `***`: the password of the userinfo
/// (`postgres://user:***@host/db`, RFC 3986 §3.2.1 deprecates it but libpq takes it) and the
/// values of query parameters that carry one (`?password=`, `sslpassword=`, `token=`).
/// Anything that is not a URL is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((t, f)) => (t, Some(f)),
        None => (tail, None),
    };
    let tail = match before_fragment.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if is_secret_param(key) => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => before_fragment.to_owned(),
    };
    match fragment {
        Some(f) => format!("{scheme}://{authority}{tail}#{f}"),
        None => format!("{scheme}://{authority}{tail}"),
    }
}

/// Query parameters whose value is a secret (libpq's `password` and `sslpassword`, and tokens).
fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "pwd", "secret", "token"].iter().any(|k| key.contains(k))
}

/// A CIDR, or a single address as its /32 or /128.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

fn parse_nameserver(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// Sets `a__b__c` (lower-cased) in the TOML tree to `value`, typed as a TOML literal when it parses as one.
fn set_path(tree: &mut toml::Table, path: &str, value: &str) -> Result<(), ConfigError> {
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    let (last, parents) = keys.split_last().ok_or_else(|| ConfigError::Parse(format!("bad variable VACME_{path}")))?;
    let mut table = tree;
    for key in parents {
        let entry = table.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table =
            entry.as_table_mut().ok_or_else(|| ConfigError::Parse(format!("VACME_{path}: {key} is not a section")))?;
    }
    let typed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    table.insert(last.clone(), typed);
    Ok(())
}

/// Accepts a TOML list or a comma-separated string (handy in environment variables).
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
        Either::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(f.path()), env, &Overrides::default())
    }

    #[test]
    fn defaults_are_the_zero_config() {
        let c = Config::load(None, Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(c.base_url(c.server.listen), "https://localhost:8443");
        assert_eq!(c.database_url(), "sqlite://vacme-data/vacme.db");
        assert_eq!(c.policy.allowed_domains, vec!["localhost"]);
        assert!(c.vault.is_none());
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let c = load(
            "[server]\nlisten = \"127.0.0.1:9000\"\n[vault]\naddress = \"http://127.0.0.1:8200\"\n",
            &[
                ("VACME_VAULT__ROLE", "other"),
                ("VACME_POLICY__ALLOWED_DOMAINS", "lab.example, home.arpa"),
                ("VACME_VALIDATION__HTTP01_PORT", "5002"),
                ("VACME_VAULT_TOKEN", "s.secret"),
            ],
        )
        .unwrap();
        let v = c.vault.unwrap();
        assert_eq!(v.role, "other");
        assert_eq!(v.mount, "pki_int");
        assert_eq!(c.policy.allowed_domains, vec!["lab.example", "home.arpa"]);
        assert_eq!(c.validation.http01_port, 5002);

        let o = Overrides { http01_port: Some(6000), ..Default::default() };
        let c = Config::load(None, vec![("VACME_VALIDATION__HTTP01_PORT".into(), "5002".into())], &o).unwrap();
        assert_eq!(c.validation.http01_port, 6000);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(matches!(load("[server]\nlisten_addr = \"x\"\n", &[]), Err(ConfigError::Parse(_))));
        assert!(matches!(load("[policy]\nallowed_domains = []\n", &[]), Err(ConfigError::Invalid(_))));
        assert!(matches!(load("[validation]\nnameservers = [\"dns.lab\"]\n", &[]), Err(ConfigError::Invalid(_))));
        assert!(matches!(
            load("[vault]\naddress = \"http://v:8200\"\n[vault.auth]\nmethod = \"approle\"\n", &[]),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(load("", &[("VACME_SERVER__NOPE", "1")]), Err(ConfigError::Parse(_))));
    }

    /// `vault.address` takes one URL or a list; `check-config` shows it the way it was given.
    #[test]
    fn vault_address_is_one_url_or_a_list() {
        let one = load("[vault]\naddress = \"http://v:8200\"\n", &[]).unwrap();
        assert_eq!(one.vault.as_ref().unwrap().address.0, ["http://v:8200"]);
        assert!(one.to_toml().contains("address = \"http://v:8200\"\n"), "{}", one.to_toml());
        let three =
            load("[vault]\naddress = [\"http://a:8200\", \"http://b:8200\", \"https://c:8200\"]\n", &[]).unwrap();
        assert_eq!(three.vault.as_ref().unwrap().address.0, ["http://a:8200", "http://b:8200", "https://c:8200"]);
        assert!(three.to_toml().contains("address = [\n"), "{}", three.to_toml());
        for bad in [
            "address = []",
            "address = [\"http://a:8200\", \"ftp://b\"]",
            "address = [\"http://a:8200\", \"http://a:8200/\"]",
        ] {
            assert!(matches!(load(&format!("[vault]\n{bad}\n"), &[]), Err(ConfigError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn nameserver_without_port_means_53() {
        let c = load("[validation]\nnameservers = [\"10.0.0.53\", \"127.0.0.1:5353\"]\n", &[]).unwrap();
        assert_eq!(c.nameservers(), vec!["10.0.0.53:53".parse().unwrap(), "127.0.0.1:5353".parse().unwrap()]);
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    /// docs/configuration.md names every key `check-config` prints, in its section.
    #[test]
    #[allow(clippy::field_reassign_with_default)]
    fn configuration_doc_covers_every_key() {
        let doc = include_str!("../docs/configuration.md");
        let mut config = Config::default();
        config.vault = Some(VaultConfig {
            address: VaultAddresses(vec!["http://v".into()]),
            mount: default_mount(),
            role: default_role(),
            roles_by_key: RolesByKey { ec: Some("e".into()), rsa: Some("r".into()), ed25519: Some("d".into()) },
            roles_refresh_secs: 300,
            ca_bundle: Some("x".into()),
            root_file: Some("root".into()),
            namespace: Some("n".into()),
            client_cert_file: Some("c".into()),
            client_key_file: Some("k".into()),
            timeout_secs: 30,
            auth: VaultAuthConfig {
                token_file: Some("t".into()),
                role_id: Some("r".into()),
                role_id_file: Some("r".into()),
                secret_id_file: Some("s".into()),
                kubernetes_role: Some("k".into()),
                ..VaultAuthConfig::default()
            },
        });
        config.server.base_url = Some("https://x".into());
        config.database.url = Some("sqlite://x".into());
        config.tls.cert_file = Some("c".into());
        config.tls.key_file = Some("k".into());
        config.issuance.default_profile = Some("short".into());
        config.eab.secret_file = Some("e".into());
        config.admin.token_file = Some("t".into());
        config.profiles.insert(
            "short".into(),
            ProfileConfig {
                role: Some("r".into()),
                mount: Some("m".into()),
                max_days: Some(1),
                roles_by_key: RolesByKey { rsa: Some("r".into()), ..RolesByKey::default() },
                ..Default::default()
            },
        );
        let rendered: toml::Table = config.to_toml().parse().unwrap();
        let mut missing = Vec::new();
        fn walk(prefix: &str, t: &toml::Table, doc: &str, missing: &mut Vec<String>) {
            for (k, v) in t {
                match v {
                    toml::Value::Table(sub) => {
                        let section = match prefix {
                            "" => k.clone(),
                            "profiles" => "profiles.<name>".to_owned(),
                            _ => format!("{prefix}.{k}"),
                        };
                        if !doc.contains(&format!("`[{section}]`")) {
                            missing.push(format!("[{section}]"));
                        }
                        walk(&section, sub, doc, missing);
                    }
                    _ if !doc.contains(&format!("`{k}`")) => missing.push(format!("{prefix}.{k}")),
                    _ => {}
                }
            }
        }
        walk("", &rendered, doc, &mut missing);
        assert!(missing.is_empty(), "docs/configuration.md lacks {missing:?}");
    }

    #[test]
    fn urls_are_shown_without_their_passwords() {
        for (url, shown) in [
            ("postgres://vacme:s3cret@db.lab.test:5432/vacme", "postgres://vacme:***@db.lab.test:5432/vacme"),
            (
                "postgresql://vacme:p%40ss:word@db/vacme?sslmode=require",
                "postgresql://vacme:***@db/vacme?sslmode=require",
            ),
            (
                "postgres://vacme@db/vacme?password=s3cret&sslmode=require",
                "postgres://vacme@db/vacme?password=***&sslmode=require",
            ),
            ("postgres://db/vacme?sslpassword=s3cret#x", "postgres://db/vacme?sslpassword=***#x"),
            ("https://user:s3cret@vault.lab.test:8200", "https://user:***@vault.lab.test:8200"),
            ("postgres://vacme@db/vacme", "postgres://vacme@db/vacme"),
            ("sqlite://vacme-data/vacme.db", "sqlite://vacme-data/vacme.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("https://acme.lab.test:8443/a@b", "https://acme.lab.test:8443/a@b"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let mut c = Config::default();
        c.database.url = Some("postgres://vacme:s3cret@db.lab.test/vacme?password=other-s3cret".into());
        for text in [c.to_toml(), format!("{c:?}")] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("postgres://vacme:***@db.lab.test/vacme?password=***"), "{text}");
        }
        assert_eq!(
            c.database_url(),
            "postgres://vacme:s3cret@db.lab.test/vacme?password=other-s3cret",
            "still used as given"
        );
    }
}
