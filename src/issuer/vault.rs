//! Vault / OpenBao PKI as the CA: `POST <mount>/sign/<role>` over one pooled reqwest client.
//!
//! Not vaultrs: its `VaultClientSettings` derives `Debug` with the token in it, its builder
//! defaults read `VAULT_TOKEN`/`VAULT_SKIP_VERIFY` from the environment, re-login needs
//! `&mut` access to the client, and 0.8 brings reqwest 0.13 beside the 0.12 the validators use.
//! The four endpoints vacme calls (`sign`, `revoke`, `ca_chain`, AppRole `login`) are a
//! few lines each here. The token lives only in this struct (as a `Secret`) and in the
//! `X-Vault-Token` header.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Mutex, RwLock};
use x509_parser::{
    extensions::GeneralName,
    pem::Pem,
    prelude::{FromDer, X509Certificate},
};

use super::{
    IssuanceRequest, IssueError, Issued, Issuer,
    csr::pem_encode,
    role::{RoleBook, RoleInfo, RoleRef, RoleState},
};
use crate::{
    acme::{Identifier, Serial},
    secret::Secret,
};

/// How vacme logs in to Vault.
#[derive(Clone, Debug)]
pub enum VaultAuth {
    /// A fixed token. On a 403 it is simply tried once more.
    Token(Secret),
    /// A token read (and trimmed) from a file at every login, so a rotated file (a Vault agent
    /// sink) is picked up on the next 403.
    TokenFile(PathBuf),
    /// AppRole: `role_id` plus a `secret_id` read from a file at every login, at `auth/<mount>/login`.
    AppRole { mount: String, role_id: String, secret_id_file: PathBuf },
    /// Kubernetes: the pod's service-account JWT, read from `jwt_file` at every login (the kubelet
    /// rotates it), sent with `role` to `auth/<mount>/login`.
    Kubernetes { mount: String, role: String, jwt_file: PathBuf },
}

impl VaultAuth {
    /// Whether vacme can get a new token by itself (a fixed token cannot be replaced).
    fn can_log_in_again(&self) -> bool {
        !matches!(self, VaultAuth::Token(_))
    }
}

/// Where Vault is and how to use it.
#[derive(Clone, Debug)]
pub struct VaultSettings {
    /// `https://vault.lab.example:8200` (no `/v1`), or every node of one cluster: one serves
    /// at a time, and vacme moves to the next when it cannot (see `Nodes`).
    pub addresses: Vec<String>,
    /// The PKI mount that signs, e.g. `pki_int`.
    pub mount: String,
    /// The role under that mount, e.g. `lab-internal`.
    pub role: String,
    /// PEM file of the CA(s) that sign Vault's HTTPS certificate. There are no other roots:
    /// without it only `http://` (or a certificate from a public CA vacme cannot check) works.
    pub ca_bundle: Option<PathBuf>,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Whole-request timeout of every Vault call.
    pub timeout: Duration,
    pub auth: VaultAuth,
    /// PEM client certificate and key for Vault's TLS (a listener with `tls_require_and_verify_client_cert`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// What Vault said about the token's life: renewed or replaced at two thirds of `ttl`.
#[derive(Clone, Copy, Debug)]
struct Lease {
    obtained: tokio::time::Instant,
    /// Zero: the token never expires (a root or periodic-less token without TTL).
    ttl: Duration,
    renewable: bool,
}

impl Lease {
    fn from_auth(auth: &Value) -> Option<Lease> {
        Some(Lease {
            obtained: tokio::time::Instant::now(),
            ttl: Duration::from_secs(auth["lease_duration"].as_u64()?),
            renewable: auth["renewable"].as_bool().unwrap_or(false),
        })
    }

    fn renew_at(&self) -> tokio::time::Instant {
        self.obtained + self.ttl * 2 / 3
    }
}

/// The addresses of one Vault cluster, and the one in use. vacme talks to one node at a time
/// and moves to the next (round the list) when that node cannot serve: it is unreachable or
/// times out, it is sealed, it answers 5xx, or it redirects to another node (a standby that
/// knows no live leader during an election). A standby that forwards to the active node serves.
///
/// A failover is counted when a node other than the last one that served answers: during an
/// election vacme may go round the list many times before one does, and that is one failover.
#[derive(Debug)]
struct Nodes {
    addresses: Vec<String>,
    current: AtomicUsize,
    /// The node that answered last (the first address until one has).
    serving: AtomicUsize,
    failovers: AtomicU64,
}

impl Nodes {
    fn new(addresses: &[String]) -> Self {
        Self {
            addresses: addresses.iter().map(|a| a.trim_end_matches('/').to_owned()).collect(),
            current: AtomicUsize::new(0),
            serving: AtomicUsize::new(0),
            failovers: AtomicU64::new(0),
        }
    }

    fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.addresses.len().max(1)
    }

    fn url(&self, node: usize, path: &str) -> String {
        format!("{}/v1/{}", self.addresses[node], path.trim_start_matches('/'))
    }

    /// Moves on from `node` after it failed, unless another call already did (the requests in
    /// flight when a node dies all fail; the cluster moves once).
    fn fail_over(&self, node: usize, why: &str) {
        let n = self.addresses.len();
        if n < 2 {
            return;
        }
        let next = (node + 1) % n;
        if self.current.compare_exchange(node, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            // The serving node's failure is news; the rest of a trip round the list is not.
            if node == self.serving.load(Ordering::Relaxed) {
                tracing::warn!(from = %self.addresses[node], to = %self.addresses[next], reason = why,
                    "Vault node failed; moving to the next address");
            } else {
                tracing::debug!(from = %self.addresses[node], to = %self.addresses[next], reason = why,
                    "Vault node failed; moving to the next address");
            }
        }
    }

    /// `node` answered a request (not a cluster status read): if another node served before,
    /// that is a failover.
    fn served(&self, node: usize, path: &str, status: StatusCode) {
        let before = self.serving.swap(node, Ordering::Relaxed);
        if before != node {
            let count = self.failovers.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(from = %self.addresses[before], to = %self.addresses[node], failovers = count,
                path, status = status.as_u16(), "Vault failover: another node serves");
        }
    }
}

/// Whether a request that failed on one node may be sent again to the next at once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Reads, logins, renewals and revocations: doing them twice changes nothing.
    Always,
    /// A `sign`: only when the node cannot have run it (no connection, sealed, redirected);
    /// after a timeout or a lost answer the issuance job looks for the certificate first.
    IfNotRun,
}

/// How one node failed a request.
enum NodeFailure {
    /// No answer (`is_connect`: the request never reached the node).
    Transport(reqwest::Error),
    /// An answer that says this node cannot serve now.
    Status(reqwest::Response),
    /// A 503, read: Vault's own "sealed" answer, or another (a proxy's, which can come after the
    /// node took the request).
    Unavailable { body: String, sealed: bool },
}

/// A status that says the node, not the request, is the problem: sealed (503), a redirect to
/// another node, or another server error.
fn node_cannot_serve(status: StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 307 | 308)
}

/// Whether the node surely did not run a request it answered with `status` (or did not answer).
fn not_run(failure: &NodeFailure) -> bool {
    match failure {
        NodeFailure::Transport(e) => e.is_connect(),
        // A standby that redirects instead of forwarding, or a sealed node: nothing was done.
        NodeFailure::Status(res) => matches!(res.status().as_u16(), 307 | 308),
        NodeFailure::Unavailable { sealed, .. } => *sealed,
    }
}

/// The Vault issuer: one pooled HTTP client, one cached token.
pub struct VaultIssuer {
    settings: VaultSettings,
    nodes: Nodes,
    http: reqwest::Client,
    token: RwLock<Option<Secret>>,
    /// The current token's lease; `None` until known.
    lease: std::sync::Mutex<Option<Lease>>,
    login: Mutex<()>,
    /// Set when a call failed in transport (timeout, connection, 5xx). A `sign` that timed out may
    /// still run when Vault wakes up, so no further `sign` is sent until `sys/health` answers:
    /// an outage costs at most the requests in flight when it began, not one per retry.
    suspect: AtomicBool,
    /// `ca_chain` of the last successful sign, for `chain()` when Vault cannot be asked.
    last_chain: RwLock<Vec<String>>,
}

impl fmt::Debug for VaultIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.settings.auth {
            VaultAuth::Token(_) => "token",
            VaultAuth::TokenFile(_) => "token_file",
            VaultAuth::AppRole { .. } => "approle",
            VaultAuth::Kubernetes { .. } => "kubernetes",
        };
        f.debug_struct("VaultIssuer")
            .field("addresses", &self.nodes.addresses)
            .field("mount", &self.settings.mount)
            .field("role", &self.settings.role)
            .field("namespace", &self.settings.namespace)
            .field("auth", &auth)
            .finish_non_exhaustive()
    }
}

/// Vault's error answers: `{"errors": ["..."]}`, joined and trimmed.
fn vault_errors(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["errors"].as_array().cloned())
        .map(|errs| errs.iter().filter_map(Value::as_str).map(str::trim).collect::<Vec<_>>().join("; "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "no error text".into())
}

impl VaultIssuer {
    /// Builds the client; fails only on local configuration (an unreadable `ca_bundle`).
    /// It does not call Vault: vacme starts while Vault is down or sealed, and the first
    /// `health` (the startup probe) or `sign` logs in.
    pub async fn new(settings: VaultSettings) -> Result<Self, IssueError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(32)
            // A redirect would resend the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .use_rustls_tls();
        if let Some(path) = &settings.ca_bundle {
            let pem = std::fs::read(path)
                .map_err(|e| IssueError::unavailable(format!("cannot read vault.ca_bundle {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| IssueError::unavailable(format!("vault.ca_bundle {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(IssueError::unavailable(format!("vault.ca_bundle {} has no certificate", path.display())));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &settings.client_cert {
            let mut pem = std::fs::read(cert).map_err(|e| {
                IssueError::unavailable(format!("cannot read vault.client_cert_file {}: {e}", cert.display()))
            })?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| {
                IssueError::unavailable(format!("cannot read vault.client_key_file {}: {e}", key.display()))
            })?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
                IssueError::unavailable("vault.client_cert_file / client_key_file: not a PEM certificate and key")
            })?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| IssueError::unavailable(format!("HTTP client: {e}")))?;
        if settings.addresses.is_empty() {
            return Err(IssueError::unavailable("vault.address names no node"));
        }
        Ok(Self {
            nodes: Nodes::new(&settings.addresses),
            settings,
            http,
            token: RwLock::new(None),
            lease: std::sync::Mutex::new(None),
            login: Mutex::new(()),
            suspect: AtomicBool::new(false),
            last_chain: RwLock::new(Vec::new()),
        })
    }

    fn request_at(&self, node: usize, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, self.nodes.url(node, path));
        if let Some(ns) = &self.settings.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        req
    }

    /// Sends `method path` (with what `add` puts on it: token, body) to the node in use. A node
    /// that cannot serve is left for the next address, and the request goes there too when
    /// `resend` allows, once round the list. The last failure is the answer: a transport error,
    /// or the response (5xx, a redirect) for the caller to read.
    async fn send(
        &self,
        method: Method,
        path: &str,
        resend: Resend,
        add: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.send_from(None, method, path, resend, add).await
    }

    /// As `send`, starting at `first` (the active node, for a read that must not lag) when given.
    async fn send_from(
        &self,
        first: Option<usize>,
        method: Method,
        path: &str,
        resend: Resend,
        add: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let tries = self.nodes.addresses.len();
        let mut node = first.unwrap_or_else(|| self.nodes.current());
        for attempt in 1..=tries {
            let failure = match add(self.request_at(node, method.clone(), path)).send().await {
                Ok(res) if !node_cannot_serve(res.status()) => {
                    // A standby answers `sys/health` and `sys/leader` itself even while it
                    // cannot serve anything else (an election): only real work counts, and
                    // only on the address in use (not a read sent to the active node).
                    if first.is_none() && !path.starts_with("sys/") {
                        self.nodes.served(node, path, res.status());
                    }
                    return Ok(res);
                }
                Ok(res) if res.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let body = res.text().await.unwrap_or_default();
                    NodeFailure::Unavailable { sealed: vault_errors(&body).contains("is sealed"), body }
                }
                Ok(res) => NodeFailure::Status(res),
                Err(e) => NodeFailure::Transport(e),
            };
            let why = match &failure {
                NodeFailure::Transport(e) => without_url(e),
                NodeFailure::Status(res) => format!("HTTP {}", res.status()),
                NodeFailure::Unavailable { sealed: true, .. } => "HTTP 503 (sealed)".to_owned(),
                NodeFailure::Unavailable { sealed: false, .. } => "HTTP 503".to_owned(),
            };
            self.nodes.fail_over(node, &why);
            let again = attempt < tries && (resend == Resend::Always || not_run(&failure));
            if !again {
                return match failure {
                    NodeFailure::Transport(e) => Err(e),
                    NodeFailure::Status(res) => Ok(res),
                    // The answer, as read, for the caller to read.
                    NodeFailure::Unavailable { body, .. } => {
                        let mut res = http::Response::new(body);
                        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        Ok(reqwest::Response::from(res))
                    }
                };
            }
            tracing::debug!(path, node = %self.nodes.addresses[node], reason = %why, "sending to the next Vault node");
            node = self.nodes.current();
        }
        unreachable!("the last attempt returns")
    }

    /// The node that is active now, when `sys/leader` names one of vacme's addresses (a
    /// standby answers some reads itself and may lag it by a moment).
    async fn active_node(&self) -> Option<usize> {
        let res = self.send(Method::GET, "sys/leader", Resend::Always, |r| r).await.ok()?;
        if !res.status().is_success() {
            return None;
        }
        let v: Value = res.json().await.ok()?;
        let leader = v["leader_address"].as_str()?.trim_end_matches('/');
        self.nodes.addresses.iter().position(|a| a == leader)
    }

    /// The current token, logging in if there is none.
    async fn token(&self) -> Result<Secret, IssueError> {
        if let Some(t) = self.token.read().await.clone() {
            return Ok(t);
        }
        let _one_login_at_a_time = self.login.lock().await;
        if let Some(t) = self.token.read().await.clone() {
            return Ok(t);
        }
        let (token, lease) = self.log_in().await?;
        let lease = match lease {
            Some(l) => Some(l),
            None => {
                let looked = self.look_up(&token).await;
                if looked.is_none() {
                    tracing::warn!(
                        "cannot read the Vault token's TTL (grant auth/token/lookup-self and renew-self): \
                         it is not renewed, only replaced after a 403"
                    );
                }
                looked
            }
        };
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = lease;
        *self.token.write().await = Some(token.clone());
        Ok(token)
    }

    /// The lease of a token vacme was given (not one it logged in for): `auth/token/lookup-self`.
    /// `None` if Vault cannot say (the token is then only replaced after a 403).
    async fn look_up(&self, token: &Secret) -> Option<Lease> {
        let res = self
            .send(Method::GET, "auth/token/lookup-self", Resend::Always, |r| r.header("X-Vault-Token", token.expose()))
            .await
            .ok()?;
        if !res.status().is_success() {
            return None;
        }
        let v: Value = res.json().await.ok()?;
        Some(Lease {
            obtained: tokio::time::Instant::now(),
            ttl: Duration::from_secs(v["data"]["ttl"].as_u64()?),
            renewable: v["data"]["renewable"].as_bool().unwrap_or(false),
        })
    }

    /// Keeps the token alive for as long as the returned task runs (it ends when the issuer is
    /// dropped): renews it at two thirds of its TTL, and logs in again when Vault will not renew
    /// it any more (refused, revoked, or at its max TTL).
    pub fn keep_alive(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                tokio::time::sleep(wait).await;
                let Some(me) = weak.upgrade() else { return };
                wait = me.tend_token().await;
            }
        })
    }

    /// One look at the token; returns how long until the next.
    async fn tend_token(&self) -> Duration {
        const RETRY: Duration = Duration::from_secs(5);
        const IDLE: Duration = Duration::from_secs(60);
        let Some(token) = self.token.read().await.clone() else {
            // Not logged in yet (or dropped after a 403): log in now, not on the next order.
            return match self.token().await {
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::debug!(error = %e, "Vault login failed; trying again");
                    RETRY
                }
            };
        };
        let lease = *self.lease.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lease) = lease.filter(|l| !l.ttl.is_zero()) else { return IDLE };
        let now = tokio::time::Instant::now();
        if now < lease.renew_at() {
            return (lease.renew_at() - now).max(Duration::from_millis(200));
        }
        if lease.renewable {
            match self.renew(&token).await {
                // Renewed for (nearly) as long as before: done until two thirds of that.
                Ok(new) if new.ttl * 2 >= lease.ttl && !new.ttl.is_zero() => {
                    tracing::debug!(ttl_secs = new.ttl.as_secs(), "renewed the Vault token");
                    *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
                    return Duration::ZERO;
                }
                Ok(new) => {
                    tracing::info!(ttl_secs = new.ttl.as_secs(), "the Vault token is near its max TTL");
                    *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(new);
                }
                Err(RenewError::Refused(why)) => tracing::info!(reason = %why, "Vault refused to renew the token"),
                Err(RenewError::Unavailable(why)) => {
                    tracing::debug!(reason = %why, "cannot renew the Vault token now");
                    return RETRY;
                }
            }
        }
        if !self.settings.auth.can_log_in_again() {
            tracing::warn!("the Vault token cannot be renewed and vacme cannot get another: give it a longer TTL");
            return IDLE;
        }
        self.forget(&token).await;
        match self.token().await {
            Ok(_) => {
                tracing::info!("logged in to Vault again before the token expired");
                Duration::ZERO
            }
            Err(e) => {
                tracing::warn!(error = %e, "Vault login failed; trying again");
                RETRY
            }
        }
    }

    async fn renew(&self, token: &Secret) -> Result<Lease, RenewError> {
        let res = self
            .send(Method::POST, "auth/token/renew-self", Resend::Always, |r| {
                r.header("X-Vault-Token", token.expose()).json(&json!({}))
            })
            .await
            .map_err(|e| RenewError::Unavailable(without_url(&e)))?;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        if status.is_server_error() {
            return Err(RenewError::Unavailable(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(RenewError::Refused(format!("HTTP {status}: {}", vault_errors(&body))));
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        Lease::from_auth(&v["auth"]).ok_or_else(|| RenewError::Refused("no lease in the answer".into()))
    }

    /// Drops `stale` after a 403, unless a concurrent call already replaced it (one re-login, not one per call).
    async fn forget(&self, stale: &Secret) {
        let mut token = self.token.write().await;
        if token.as_ref() == Some(stale) {
            *token = None;
        }
    }

    /// A token, with its lease when the login said it.
    async fn log_in(&self) -> Result<(Secret, Option<Lease>), IssueError> {
        match &self.settings.auth {
            VaultAuth::Token(t) => Ok((t.clone(), None)),
            VaultAuth::TokenFile(path) => Ok((read_secret(path)?, None)),
            VaultAuth::AppRole { mount, role_id, secret_id_file } => {
                let secret_id = read_secret(secret_id_file)?;
                let body = json!({"role_id": role_id, "secret_id": secret_id.expose()});
                self.login_at("AppRole", mount, &body).await
            }
            VaultAuth::Kubernetes { mount, role, jwt_file } => {
                let jwt = read_secret(jwt_file)?;
                let body = json!({"role": role, "jwt": jwt.expose()});
                self.login_at("Kubernetes", mount, &body).await
            }
        }
    }

    /// `POST auth/<mount>/login` with `body` (which holds a credential and is never logged).
    async fn login_at(&self, method: &str, mount: &str, body: &Value) -> Result<(Secret, Option<Lease>), IssueError> {
        let res = self
            .send(Method::POST, &format!("auth/{mount}/login"), Resend::Always, |r| r.json(body))
            .await
            .map_err(|e| IssueError::unavailable(format!("{method} login: {}", without_url(&e))))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(IssueError::unavailable(format!("{method} login: HTTP {status}: {}", vault_errors(&text))));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let token = v["auth"]["client_token"]
            .as_str()
            .ok_or_else(|| IssueError::unavailable(format!("{method} login: no client_token in the answer")))?;
        let lease = Lease::from_auth(&v["auth"]);
        tracing::info!(mount = %mount, ttl_secs = lease.map(|l| l.ttl.as_secs()), "logged in to Vault with {method}");
        Ok((Secret::new(token), lease))
    }

    /// One authenticated call. A 403 (expired or revoked token) drops the token, logs in again
    /// and retries once; 400 is the CA's answer to this request (`Refused`); everything else
    /// that is not a success is `Unavailable`.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, IssueError> {
        self.call_at(None, method, path, body, Resend::Always).await
    }

    /// `call`, starting at node `first` when given, resending to other nodes as `resend` says.
    async fn call_at(
        &self,
        first: Option<usize>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        resend: Resend,
    ) -> Result<Value, IssueError> {
        // For a `sign`: which failures say that no node can have run it.
        let unsent = |e: IssueError| if resend == Resend::IfNotRun { IssueError::unsent(e) } else { e };
        for attempt in 0..2 {
            let token = self.token().await.map_err(unsent)?;
            let res = self
                .send_from(first, method.clone(), path, resend, |r| {
                    let r = r.header("X-Vault-Token", token.expose());
                    match body {
                        Some(b) => r.json(b),
                        None => r,
                    }
                })
                .await
                .map_err(|e| {
                    self.suspect.store(true, Ordering::Relaxed);
                    let err = IssueError::unavailable(format!("{path}: {}", without_url(&e)));
                    // Only the last node's failure is here: a `sign` went on round the list only
                    // while the nodes before could not have run it.
                    if e.is_connect() { unsent(err) } else { err }
                })?;
            let status = res.status();
            if node_cannot_serve(status) {
                self.suspect.store(true, Ordering::Relaxed);
            }
            let text = res.text().await.unwrap_or_default();
            match status {
                s if s.is_success() => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if let Some(warnings) = v["warnings"].as_array().filter(|w| !w.is_empty()) {
                        tracing::debug!(path, ?warnings, "Vault warnings");
                    }
                    return Ok(v);
                }
                StatusCode::FORBIDDEN if attempt == 0 => {
                    tracing::warn!(path, "Vault answered 403; logging in again");
                    self.forget(&token).await;
                }
                StatusCode::FORBIDDEN => {
                    return Err(unsent(IssueError::unavailable(format!(
                        "{path}: permission denied: {}",
                        vault_errors(&text)
                    ))));
                }
                StatusCode::BAD_REQUEST => return Err(IssueError::Refused(vault_errors(&text))),
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => {
                    return Err(unsent(IssueError::unavailable(format!(
                        "{path}: HTTP {status}: every node redirects to another (the cluster is electing a leader?)"
                    ))));
                }
                // Vault's own "sealed" answer, not a proxy's 503 (which may follow a request it
                // did pass on, when the node closed before answering).
                StatusCode::SERVICE_UNAVAILABLE if vault_errors(&text).contains("is sealed") => {
                    return Err(unsent(IssueError::unavailable(format!(
                        "{path}: HTTP {status}: {}",
                        vault_errors(&text)
                    ))));
                }
                s => {
                    return Err(IssueError::unavailable(format!("{path}: HTTP {s}: {}", vault_errors(&text))));
                }
            }
        }
        Err(IssueError::unavailable(format!("{path}: permission denied")))
    }
}

/// Reading the roles vacme signs with (`GET <mount>/roles/<role>`, which needs `read` on that
/// path in vacme's policy).
impl VaultIssuer {
    /// One role. `Ok` is Vault's definite answer (read, or refused with 403/404: the role stays
    /// unknown until the policy or the role changes); `Err` is a failure to ask (Vault down,
    /// sealed, no token), after which the last answer still holds.
    pub async fn read_role(&self, role: &RoleRef) -> Result<RoleState, String> {
        let token = self.token().await.map_err(|e| e.to_string())?;
        // Not `call`: a 403 here is a policy without `read`, not an expired token, and must not
        // cost a login on every refresh.
        let res = self
            .send(Method::GET, &role.path(), Resend::Always, |r| r.header("X-Vault-Token", token.expose()))
            .await
            .map_err(|e| without_url(&e))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        match status {
            s if s.is_success() => {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                Ok(match RoleInfo::from_vault(&v["data"]) {
                    Ok(info) => RoleState::Known(info),
                    Err(e) => RoleState::Unknown(format!("unreadable answer: {e}")),
                })
            }
            StatusCode::FORBIDDEN => {
                Ok(RoleState::Unknown(format!("HTTP 403, vacme's policy has no read on {}", role.path())))
            }
            StatusCode::NOT_FOUND => Ok(RoleState::Unknown("HTTP 404, no such role".into())),
            s => Err(format!("HTTP {s}: {}", vault_errors(&text))),
        }
    }

    /// Reads every role in `roles` into `book`, logging what changed (once per change, not per read).
    pub async fn read_roles(&self, book: &RoleBook, roles: &[RoleRef]) {
        for role in roles {
            let before = book.get(role);
            let now = match self.read_role(role).await {
                Ok(state) => state,
                Err(_) if matches!(before, Some(RoleState::Known(_))) => continue,
                Err(why) => RoleState::Unknown(why),
            };
            book.set(role.clone(), now.clone());
            log_role_change(role, before.as_ref(), &now);
        }
    }

    /// Reads the roles every `every`, and a few seconds after `book.want_refresh()`, for as
    /// long as the issuer lives.
    pub fn watch_roles(
        self: &std::sync::Arc<Self>,
        book: std::sync::Arc<RoleBook>,
        roles: Vec<RoleRef>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = book.refresh_wanted() => {}
                }
                let Some(me) = weak.upgrade() else { return };
                me.read_roles(&book, &roles).await;
                drop(me);
                // Asks in a burst (every finalize of an unreadable role asks) cost one read.
                tokio::time::sleep(every.min(Duration::from_secs(5))).await;
            }
        })
    }
}

fn log_role_change(role: &RoleRef, before: Option<&RoleState>, now: &RoleState) {
    match (before, now) {
        (Some(RoleState::Unknown(_)), RoleState::Unknown(_)) => {}
        (_, RoleState::Unknown(why)) => tracing::warn!(
            role = %role,
            reason = %why,
            policy_line = %role.policy_line(),
            "cannot read the Vault role: Vault alone judges each CSR's key; add the policy line to vacme's Vault policy"
        ),
        (Some(RoleState::Known(old)), RoleState::Known(new)) if old == new => {}
        (_, RoleState::Known(info)) => {
            tracing::info!(role = %role, key_type = ?info.key_type, key_bits = info.key_bits,
                use_csr_sans = info.use_csr_sans, use_csr_common_name = info.use_csr_common_name, "read the Vault role");
            if info.reads_names_from_csr() {
                tracing::warn!(
                    role = %role,
                    fix = %role.fix_command(),
                    "the Vault role takes names from the CSR (use_csr_sans / use_csr_common_name): \
                     vacme checks every CSR and certificate, but fix the role"
                );
            }
        }
    }
}

/// Why a renewal did not happen.
enum RenewError {
    /// Vault said no (revoked, not renewable, permission): log in again.
    Refused(String),
    /// Vault could not be asked: try again soon with the same token.
    Unavailable(String),
}

/// A reqwest error without the URL or anything else from the request: what failed, and why.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut msg = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

fn read_secret(path: &Path) -> Result<Secret, IssueError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| IssueError::unavailable(format!("cannot read {}: {e}", path.display())))?;
    let s = s.trim();
    if s.is_empty() {
        return Err(IssueError::unavailable(format!("{} is empty", path.display())));
    }
    Ok(Secret::new(s))
}

/// Vault wants serials as colon-separated hex pairs (`2c:51:0e:...`); plain hex is "not found".
fn colon_serial(serial: &str) -> String {
    Serial::parse(serial).map_or_else(String::new, |s| s.colon_hex())
}

/// What vacme checks in the certificate Vault returned.
struct Leaf {
    /// SANs as identifiers, sorted and de-duplicated like `IssuanceRequest::identifiers`.
    names: Vec<Identifier>,
    spki: Vec<u8>,
    serial: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

fn inspect_leaf(pem: &str) -> Result<Leaf, String> {
    let block = Pem::iter_from_buffer(pem.as_bytes()).next().ok_or("no certificate")?.map_err(|e| e.to_string())?;
    let (_, cert) = X509Certificate::from_der(&block.contents).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Some(san) = cert.subject_alternative_name().map_err(|e| e.to_string())? {
        for gn in &san.value.general_names {
            names.push(match gn {
                GeneralName::DNSName(d) => Identifier::Dns(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                    Ok(v4) => Identifier::Ip(v4.into()),
                    Err(_) => Identifier::Ip(<[u8; 16]>::try_from(*b).map_err(|_| "bad IP SAN")?.into()),
                },
                // An email or URI SAN is a name nobody validated.
                other => return Err(format!("unexpected SAN {other}")),
            });
        }
    }
    names.sort();
    names.dedup();
    Ok(Leaf {
        names,
        spki: cert.public_key().raw.to_vec(),
        serial: Serial::from_bytes(cert.raw_serial()).into(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

fn is_self_signed(pem: &str) -> bool {
    let Some(Ok(block)) = Pem::iter_from_buffer(pem.as_bytes()).next() else {
        return false;
    };
    X509Certificate::from_der(&block.contents).is_ok_and(|(_, c)| c.subject() == c.issuer())
}

/// Every certificate in a PEM text, each re-armoured on its own (Vault's `ca_chain` endpoint
/// concatenates them without a final newline).
fn split_pems(text: &str) -> Vec<String> {
    Pem::iter_from_buffer(text.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| pem_encode("CERTIFICATE", &p.contents))
        .collect()
}

/// The JSON body of `POST <mount>/sign/<role>`.
fn sign_body(req: &IssuanceRequest, now: OffsetDateTime) -> Value {
    // Vault puts `common_name` into the SANs itself (unless the role says exclude_cn_from_sans).
    let dns: Vec<&str> = req
        .identifiers
        .iter()
        .filter_map(|i| match i {
            Identifier::Dns(n) if *n != req.common_name => Some(n.as_str()),
            _ => None,
        })
        .collect();
    let ips: Vec<String> = req
        .identifiers
        .iter()
        .filter_map(|i| match i {
            Identifier::Ip(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    let mut body = json!({
        "csr": req.csr_pem,
        "common_name": req.common_name,
        "alt_names": dns.join(","),
        "ip_sans": ips.join(","),
        "format": "pem",
    });
    // Without `ttl` the role's default applies; with one, Vault caps it at the role's max_ttl
    // (with a warning, not an error). A notAfter closer than 5 minutes is not worth honouring.
    if let Some(na) = req.not_after.filter(|t| *t > now + time::Duration::minutes(5)) {
        body["ttl"] = json!(format!("{}s", (na - now).whole_seconds()));
    }
    body
}

/// `Issued` from the `data` of a sign answer, after checking that Vault signed what was asked.
fn issued_from(req: &IssuanceRequest, data: &Value) -> Result<(Issued, Vec<String>), IssueError> {
    let leaf_pem =
        data["certificate"].as_str().ok_or_else(|| IssueError::unavailable("sign: no certificate in the answer"))?;
    let ca_chain: Vec<String> = match data["ca_chain"].as_array() {
        Some(a) if !a.is_empty() => a.iter().filter_map(Value::as_str).flat_map(split_pems).collect(),
        _ => data["issuing_ca"].as_str().map(split_pems).unwrap_or_default(),
    };
    let leaf =
        inspect_leaf(leaf_pem).map_err(|e| IssueError::unavailable(format!("sign: unreadable certificate: {e}")))?;
    let serial = data["serial_number"].as_str().and_then(Serial::parse).map_or(leaf.serial, String::from);
    // Never hand out a certificate with names nobody validated (a role that adds names, or one
    // that dropped some) or for another key. It exists in the CA now: the worker revokes it.
    let why = if leaf.names != req.identifiers {
        Some(format!(
            "the order is for [{}]",
            req.identifiers.iter().map(Identifier::value).collect::<Vec<_>>().join(", ")
        ))
    } else if leaf.spki != req.spki_der {
        Some("the certificate is for a different public key".to_owned())
    } else {
        None
    };
    if let Some(why) = why {
        return Err(IssueError::Mismatch {
            serial,
            names: leaf.names,
            leaf_pem: pem_encode_first(leaf_pem),
            mount: req.target.mount.clone(),
            why,
        });
    }
    let issued = Issued {
        serial,
        leaf_pem: pem_encode_first(leaf_pem),
        // The root is what clients already trust; RFC 8446 §4.4.2 lets it be left out.
        chain_pem: ca_chain.iter().filter(|c| !is_self_signed(c)).cloned().collect(),
        not_before: leaf.not_before,
        not_after: leaf.not_after,
    };
    Ok((issued, ca_chain))
}

/// The first certificate of a PEM text, armoured with a final newline.
fn pem_encode_first(pem: &str) -> String {
    split_pems(pem).into_iter().next().unwrap_or_else(|| pem.to_owned())
}

#[async_trait::async_trait]
impl Issuer for VaultIssuer {
    async fn sign(&self, req: &IssuanceRequest) -> Result<Issued, IssueError> {
        if self.suspect.load(Ordering::Relaxed) {
            self.health().await.map_err(IssueError::unsent)?;
        }
        let mount = req.target.mount.as_deref().unwrap_or(&self.settings.mount);
        let role = req.target.role.as_deref().unwrap_or(&self.settings.role);
        let path = format!("{mount}/sign/{role}");
        let body = sign_body(req, OffsetDateTime::now_utc());
        let v = self.call_at(None, Method::POST, &path, Some(&body), Resend::IfNotRun).await?;
        let (issued, ca_chain) = issued_from(req, &v["data"])?;
        if !ca_chain.is_empty() {
            *self.last_chain.write().await = ca_chain;
        }
        Ok(issued)
    }

    async fn revoke(&self, serial: &str, leaf_pem: &str, mount: Option<&str>) -> Result<(), IssueError> {
        let path = format!("{}/revoke", mount.unwrap_or(&self.settings.mount));
        // OpenBao answers 200 again for a serial it already revoked; older Vaults said so in a 400.
        let already = |msg: &str| msg.contains("already revoked");
        match self.call(Method::POST, &path, Some(&json!({"serial_number": colon_serial(serial)}))).await {
            Ok(_) => Ok(()),
            Err(IssueError::Refused(msg)) if already(&msg) => Ok(()),
            // A role with no_store keeps no record of the serial: revoke by the certificate itself.
            Err(IssueError::Refused(_)) if !leaf_pem.is_empty() => {
                match self.call(Method::POST, &path, Some(&json!({"certificate": leaf_pem}))).await {
                    Ok(_) => Ok(()),
                    Err(IssueError::Refused(msg)) if already(&msg) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `LIST <mount>/certs`, then each certificate (16 at a time) until one has the request's
    /// key and names and a notBefore no earlier than `since` (less Vault's 30 s backdating).
    /// Only asked after a signing call whose outcome vacme does not know, so its cost (one read
    /// per stored certificate, at most 20 000) is paid rarely.
    async fn already_signed(&self, req: &IssuanceRequest, since: OffsetDateTime) -> Result<Option<Issued>, IssueError> {
        use futures_util::{StreamExt, stream};
        const MOST: usize = 20_000;
        let mount = req.target.mount.as_deref().unwrap_or(&self.settings.mount);
        // A standby lists and reads certificates from its own copy, which may not have the
        // last signature yet: the active node is asked when vacme knows which it is.
        let active = if self.nodes.addresses.len() > 1 { self.active_node().await } else { None };
        let listed =
            match self.call_at(active, Method::GET, &format!("{mount}/certs?list=true"), None, Resend::Always).await {
                Ok(v) => v,
                // Vault answers a LIST with nothing in it with 404.
                Err(IssueError::Unavailable(e)) if e.to_string().contains("HTTP 404") => return Ok(None),
                // An older policy without `list` on <mount>/certs: sign again rather than never.
                Err(IssueError::Unavailable(e)) if e.to_string().contains("permission denied") => {
                    tracing::warn!(
                        mount,
                        "cannot list {mount}/certs (grant it in vacme's policy): signing again without looking"
                    );
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
        let serials: Vec<String> = listed["data"]["keys"]
            .as_array()
            .map(|keys| keys.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if serials.len() > MOST {
            tracing::warn!(
                certificates = serials.len(),
                "too many certificates in Vault to look for an earlier signature"
            );
        }
        let earliest = since - time::Duration::minutes(2);
        let mut reads = stream::iter(serials.into_iter().take(MOST))
            .map(|serial| async move {
                let path = format!("{mount}/cert/{serial}");
                let v = self.call_at(active, Method::GET, &path, None, Resend::Always).await.ok()?;
                let pem = v["data"]["certificate"].as_str()?.to_owned();
                let leaf = inspect_leaf(&pem).ok()?;
                (leaf.spki == req.spki_der && leaf.names == req.identifiers && leaf.not_before >= earliest)
                    .then_some((pem, leaf))
            })
            .buffer_unordered(16);
        while let Some(found) = reads.next().await {
            let Some((pem, leaf)) = found else { continue };
            let chain = self.chain().await?;
            return Ok(Some(Issued {
                serial: leaf.serial,
                leaf_pem: pem_encode_first(&pem),
                chain_pem: chain.into_iter().filter(|c| !is_self_signed(c)).collect(),
                not_before: leaf.not_before,
                not_after: leaf.not_after,
            }));
        }
        Ok(None)
    }

    /// `GET <mount>/cert/<serial>`: `revocation_time` is 0 until the serial is revoked.
    async fn revoked_at(&self, serial: &str, mount: Option<&str>) -> Result<Option<i64>, IssueError> {
        let path = format!("{}/cert/{}", mount.unwrap_or(&self.settings.mount), colon_serial(serial));
        let v = self.call(Method::GET, &path, None).await?;
        Ok(v["data"]["revocation_time"].as_i64().filter(|t| *t > 0))
    }

    /// `GET <mount>/ca_chain` (unauthenticated): issuing CA first, and the root too when the
    /// intermediate was imported with it (`set-signed` with a `pem_bundle`). Falls back to the
    /// chain of the last signature when Vault cannot be asked.
    async fn chain(&self) -> Result<Vec<String>, IssueError> {
        let asked = async {
            let res = self
                .send(Method::GET, &format!("{}/ca_chain", self.settings.mount), Resend::Always, |r| r)
                .await
                .map_err(|e| IssueError::unavailable(format!("ca_chain: {}", without_url(&e))))?;
            if !res.status().is_success() {
                return Err(IssueError::unavailable(format!("ca_chain: HTTP {}", res.status())));
            }
            let text =
                res.text().await.map_err(|e| IssueError::unavailable(format!("ca_chain: {}", without_url(&e))))?;
            let chain = split_pems(&text);
            if chain.is_empty() {
                return Err(IssueError::unavailable("ca_chain: no certificate in the answer"));
            }
            Ok(chain)
        }
        .await;
        match asked {
            Ok(chain) => Ok(chain),
            Err(e) => {
                let cached = self.last_chain.read().await.clone();
                if cached.is_empty() { Err(e) } else { Ok(cached) }
            }
        }
    }

    async fn health(&self) -> Result<(), IssueError> {
        // standbyok/perfstandbyok: a standby forwards to the active node, so it is healthy for us.
        // A node that is sealed, not initialized or unreachable is left for the next address.
        let res = self
            .send(Method::GET, "sys/health?standbyok=true&perfstandbyok=true", Resend::Always, |r| r)
            .await
            .map_err(|e| {
            self.suspect.store(true, Ordering::Relaxed);
            IssueError::unavailable(format!("sys/health: {}", without_url(&e)))
        })?;
        let healthy = match res.status().as_u16() {
            200 | 429 | 472 | 473 => self.token().await.map(|_| ()),
            503 => Err(IssueError::unavailable("Vault is sealed")),
            501 => Err(IssueError::unavailable("Vault is not initialized")),
            s => Err(IssueError::unavailable(format!("sys/health: HTTP {s}"))),
        };
        if healthy.is_ok() {
            self.suspect.store(false, Ordering::Relaxed);
        }
        healthy
    }

    fn name(&self) -> &'static str {
        "vault"
    }

    /// The address in use, the list, and how many times vacme moved on.
    fn endpoint(&self) -> Option<super::Endpoint> {
        Some(super::Endpoint {
            addresses: self.nodes.addresses.clone(),
            in_use: self.nodes.current(),
            failovers: self.nodes.failovers.load(Ordering::Relaxed),
            token_ttl_left: (*self.lease.lock().unwrap_or_else(|p| p.into_inner()))
                .filter(|l| !l.ttl.is_zero())
                .map(|l| (l.obtained + l.ttl).saturating_duration_since(tokio::time::Instant::now())),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        net::SocketAddr,
        sync::{
            Arc, Mutex as StdMutex,
            atomic::{AtomicU16, AtomicUsize, Ordering},
        },
    };

    use axum::{
        Json, Router,
        extract::State,
        http::HeaderMap,
        routing::{get, post},
    };
    use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData};

    use super::*;
    use crate::issuer::{KeyPolicy, LocalCa, LocalIssuer};

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Honest,
        /// Adds a name nobody asked for, like a role with extra `alt_names` rules.
        ExtraSan,
        /// Certifies some other key.
        OtherKey,
    }

    /// A Vault that signs with a local CA and records what it was asked.
    #[derive(Clone)]
    struct Fake {
        ca: Arc<LocalCa>,
        /// A certificate signed by the CA, standing in for the intermediate in `ca_chain`.
        intermediate: String,
        mode: Mode,
        /// Statuses to answer `sign` with, in order, before signing.
        script: Arc<StdMutex<VecDeque<u16>>>,
        /// When set, the only token `sign` accepts (else 403).
        valid_token: Arc<StdMutex<Option<String>>>,
        logins: Arc<AtomicUsize>,
        signs: Arc<AtomicUsize>,
        health: Arc<AtomicU16>,
        ca_chain_status: Arc<AtomicU16>,
        bodies: Arc<StdMutex<Vec<Value>>>,
        headers: Arc<StdMutex<Vec<HeaderMap>>>,
    }

    async fn fake_login(State(f): State<Fake>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
        if body["secret_id"] != "s3cr3t" || body["role_id"] != "rid" {
            return (StatusCode::BAD_REQUEST, Json(json!({"errors": ["invalid role or secret ID"]})));
        }
        let n = f.logins.fetch_add(1, Ordering::SeqCst);
        (StatusCode::OK, Json(json!({"auth": {"client_token": format!("tok-{n}")}})))
    }

    async fn fake_sign(
        State(f): State<Fake>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        f.signs.fetch_add(1, Ordering::SeqCst);
        f.headers.lock().unwrap().push(headers.clone());
        f.bodies.lock().unwrap().push(body.clone());
        let token = headers.get("x-vault-token").and_then(|t| t.to_str().ok()).unwrap_or_default().to_owned();
        let valid = f.valid_token.lock().unwrap().clone();
        if valid.is_some_and(|v| v != token) {
            return (StatusCode::FORBIDDEN, Json(json!({"errors": ["permission denied"]})));
        }
        let next = f.script.lock().unwrap().pop_front();
        if let Some(code) = next {
            let errors = if code == 503 {
                json!({"errors": ["Vault is sealed"]})
            } else {
                json!({"errors": ["  common name x.other.test not allowed by this role\n"]})
            };
            return (StatusCode::from_u16(code).unwrap(), Json(errors));
        }
        // Sign the CSR's key for the names in the body, as a role with use_csr_sans would.
        let der = Pem::iter_from_buffer(body["csr"].as_str().unwrap().as_bytes()).next().unwrap().unwrap().contents;
        let split = |k: &str| body[k].as_str().unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::to_owned);
        let mut names: Vec<String> = split("alt_names").chain(split("ip_sans")).collect();
        names.extend(body["common_name"].as_str().filter(|s| !s.is_empty()).map(str::to_owned));
        let ids: Vec<Identifier> =
            names.iter().map(|n| n.parse().map_or_else(|_| Identifier::Dns(n.clone()), Identifier::Ip)).collect();
        let mut req = IssuanceRequest::new(&ids, &der, &KeyPolicy::default(), None, None).unwrap();
        match f.mode {
            Mode::Honest => {}
            Mode::ExtraSan => req.identifiers.push(Identifier::Dns("extra.lab.test".into())),
            Mode::OtherKey => req.spki_der = KeyPair::generate().unwrap().subject_public_key_info(),
        }
        let issued = LocalIssuer::new(f.ca.clone(), Duration::from_secs(3600), Duration::from_secs(7200))
            .sign(&req)
            .await
            .unwrap();
        let data = json!({
            "certificate": issued.leaf_pem,
            "issuing_ca": f.intermediate,
            "ca_chain": [f.intermediate, f.ca.ca_pem()],
            "serial_number": colon_serial(&issued.serial),
        });
        (StatusCode::OK, Json(json!({"data": data, "warnings": ["the common_name field was provided but ..."]})))
    }

    async fn fake_revoke(State(f): State<Fake>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
        // Like a role with no_store: the serial `de:ad` was never kept, only its certificate works.
        let unknown = body["serial_number"] == "de:ad";
        f.bodies.lock().unwrap().push(body);
        if unknown {
            return (StatusCode::BAD_REQUEST, Json(json!({"errors": ["certificate with serial de:ad not found"]})));
        }
        (StatusCode::OK, Json(json!({"data": {"state": "revoked"}})))
    }

    async fn fake_health(State(f): State<Fake>) -> StatusCode {
        StatusCode::from_u16(f.health.load(Ordering::SeqCst)).unwrap()
    }

    async fn fake_ca_chain(State(f): State<Fake>) -> (StatusCode, String) {
        // Like Vault: concatenated PEM, no final newline.
        let body = format!("{}{}", f.intermediate, f.ca.ca_pem()).trim_end().to_owned();
        (StatusCode::from_u16(f.ca_chain_status.load(Ordering::SeqCst)).unwrap(), body)
    }

    /// `GET <mount>/roles/<role>`: lab-internal as OpenBao 2.7 answers it (503 while `health`
    /// is not 200), lab-noread refused by the policy, lab-flaky always 503, others 404.
    async fn fake_role(
        State(f): State<Fake>,
        axum::extract::Path(role): axum::extract::Path<String>,
    ) -> (StatusCode, String) {
        let up = f.health.load(Ordering::SeqCst) == 200;
        match role.as_str() {
            "lab-internal" if up => (StatusCode::OK, include_str!("testdata/openbao-2.7-role.json").to_owned()),
            "lab-noread" => {
                (StatusCode::FORBIDDEN, r#"{"errors":["1 error occurred:\n\t* permission denied\n\n"]}"#.into())
            }
            "lab-internal" | "lab-flaky" => {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"errors":["Vault is sealed"]}"#.into())
            }
            _ => (StatusCode::NOT_FOUND, r#"{"errors":[]}"#.into()),
        }
    }

    struct Env {
        fake: Fake,
        addr: SocketAddr,
        dir: tempfile::TempDir,
    }

    impl Env {
        fn settings(&self, auth: VaultAuth) -> VaultSettings {
            VaultSettings {
                addresses: vec![format!("http://{}", self.addr)],
                mount: "pki_int".into(),
                role: "lab-internal".into(),
                ca_bundle: None,
                namespace: Some("lab".into()),
                timeout: Duration::from_secs(5),
                auth,
                client_cert: None,
            }
        }

        fn approle(&self) -> VaultAuth {
            VaultAuth::AppRole {
                mount: "approle".into(),
                role_id: "rid".into(),
                secret_id_file: self.dir.path().join("secret-id"),
            }
        }

        async fn issuer(&self) -> VaultIssuer {
            VaultIssuer::new(self.settings(self.approle())).await.unwrap()
        }
    }

    fn router(f: Fake) -> Router {
        Router::new()
            .route("/v1/auth/approle/login", post(fake_login))
            .route("/v1/pki_int/sign/lab-internal", post(fake_sign))
            .route("/v1/pki_int/revoke", post(fake_revoke))
            .route("/v1/pki_int/ca_chain", get(fake_ca_chain))
            .route("/v1/sys/health", get(fake_health))
            .route("/v1/pki_int/roles/{role}", get(fake_role))
            .with_state(f)
    }

    async fn fake(script: &[u16], mode: Mode) -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
        let (serving, _) = ca.issue_serving(&["int.lab.test".into()]).unwrap();
        let fake = Fake {
            intermediate: split_pems(&serving).remove(0),
            ca,
            mode,
            script: Arc::new(StdMutex::new(script.iter().copied().collect())),
            valid_token: Arc::default(),
            logins: Arc::default(),
            signs: Arc::default(),
            health: Arc::new(AtomicU16::new(200)),
            ca_chain_status: Arc::new(AtomicU16::new(200)),
            bodies: Arc::default(),
            headers: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        std::fs::write(dir.path().join("secret-id"), "s3cr3t\n").unwrap();
        Env { fake, addr, dir }
    }

    fn request(names: &[&str], not_after: Option<OffsetDateTime>) -> IssuanceRequest {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        let der = p.serialize_request(&key).unwrap().der().to_vec();
        let ids: Vec<Identifier> =
            names.iter().map(|n| n.parse().map_or_else(|_| Identifier::Dns((*n).into()), Identifier::Ip)).collect();
        IssuanceRequest::new(&ids, &der, &KeyPolicy::default(), None, not_after).unwrap()
    }

    fn simple() -> IssuanceRequest {
        request(&["a.lab.test"], None)
    }

    /// Three nodes: the first is gone (nothing listens), the second redirects (a standby during
    /// an election), the third signs. A sign goes round to the third at once, since neither of
    /// the first two can have run it; a 500 there (the request may have run) is not sent again
    /// but moves vacme on; the health check skips a sealed node.
    #[tokio::test]
    async fn fails_over_to_the_next_node_and_resends_only_what_cannot_have_run() {
        let (standby, active) = (fake(&[307], Mode::Honest).await, fake(&[500], Mode::Honest).await);
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let addresses =
            vec![format!("http://{gone}"), format!("http://{}", standby.addr), format!("http://{}/", active.addr)];
        let issuer = VaultIssuer::new(VaultSettings { addresses, ..active.settings(active.approle()) }).await.unwrap();
        let endpoint = |i: &VaultIssuer| {
            let e = Issuer::endpoint(i).unwrap();
            (e.in_use, e.failovers)
        };
        assert_eq!(endpoint(&issuer), (0, 0));

        let err = issuer.sign(&simple()).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 500"), "{err}");
        assert!(!err.signed_nothing(), "a 500 may come after the signature: the retry looks first");
        assert_eq!(standby.fake.signs.load(Ordering::SeqCst), 1, "redirected: sent on to the next node");
        assert_eq!(active.fake.signs.load(Ordering::SeqCst), 1, "500: not sent again anywhere");
        // The login went from the first node (gone) to the standby, which answered it: one
        // failover. The sign went round the list (gone, standby, active) with no node serving.
        assert_eq!(endpoint(&issuer), (0, 1), "gone, standby, active: round to the first address");

        // The next sign checks health first (the last call failed): the first node is still gone
        // and the second is sealed, so the third serves and signs.
        standby.fake.health.store(503, Ordering::SeqCst);
        let issued = issuer.sign(&simple()).await.unwrap();
        assert_eq!(inspect_leaf(&issued.leaf_pem).unwrap().names, simple().identifiers);
        assert_eq!(endpoint(&issuer), (2, 2), "the third node serves now: the second failover");
        assert_eq!(standby.fake.signs.load(Ordering::SeqCst), 1, "a sealed node is not asked to sign");
        assert_eq!(active.fake.signs.load(Ordering::SeqCst), 2);
        issuer.sign(&simple()).await.unwrap();
        assert_eq!(endpoint(&issuer), (2, 2), "a node that serves is kept");
        let logins = standby.fake.logins.load(Ordering::SeqCst) + active.fake.logins.load(Ordering::SeqCst);
        assert_eq!(logins, 1, "the token is the cluster's: one login, on the first node that answered");
    }

    /// A sign that no node can have run says so, and the issuance job signs again without
    /// looking for its certificate: every address refused the connection or redirected (an
    /// election), the only node is sealed (Vault's 503), or the health check kept the call from
    /// being sent. A timeout or a proxy's 503 may come after the signature, and does not.
    #[tokio::test]
    async fn a_sign_no_node_can_have_run_says_so() {
        let standby = fake(&[307, 503], Mode::Honest).await;
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let addresses = vec![format!("http://{gone}"), format!("http://{}", standby.addr)];
        let settings = VaultSettings { addresses, ..standby.settings(standby.approle()) };
        let issuer = VaultIssuer::new(settings.clone()).await.unwrap();
        let err = issuer.sign(&simple()).await.unwrap_err();
        assert!(err.signed_nothing(), "redirected, then refused: {err}");
        assert_eq!(standby.fake.signs.load(Ordering::SeqCst), 1, "the standby was asked once");

        // The last call failed, so the next sign asks sys/health first: every node is down.
        standby.fake.health.store(503, Ordering::SeqCst);
        let err = issuer.sign(&simple()).await.unwrap_err();
        assert!(err.signed_nothing(), "not sent: {err}");
        assert_eq!(standby.fake.signs.load(Ordering::SeqCst), 1, "the second sign was not sent");

        // A single node that passes the health check, then answers the sign with 503 (sealed).
        standby.fake.health.store(200, Ordering::SeqCst);
        let addresses = vec![format!("http://{}", standby.addr)];
        let issuer = VaultIssuer::new(VaultSettings { addresses, ..settings.clone() }).await.unwrap();
        let err = issuer.sign(&simple()).await.unwrap_err();
        assert!(err.signed_nothing() && err.to_string().contains("HTTP 503"), "sealed: {err}");
        assert_eq!(standby.fake.signs.load(Ordering::SeqCst), 2);
        issuer.sign(&simple()).await.unwrap();

        // A proxy's 503 (Envoy's, after the node it passed the request to closed) is not
        // Vault's "sealed": the node may have signed.
        let proxy = axum::Router::new()
            .route(
                "/v1/pki_int/sign/lab-internal",
                axum::routing::post(|| async {
                    (StatusCode::SERVICE_UNAVAILABLE, "upstream connect error or disconnect/reset before headers")
                }),
            )
            .fallback(|| async { StatusCode::NOT_FOUND });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let next = fake(&[], Mode::Honest).await;
        let addresses = vec![format!("http://{}", listener.local_addr().unwrap()), format!("http://{}", next.addr)];
        tokio::spawn(async move { axum::serve(listener, proxy).await.unwrap() });
        let behind_proxy =
            VaultSettings { addresses, auth: VaultAuth::Token(Secret::new("hvs.t")), ..settings.clone() };
        let err = VaultIssuer::new(behind_proxy).await.unwrap().sign(&simple()).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 503"), "{err}");
        assert!(!err.signed_nothing(), "a proxy's 503 is not proof of nothing: {err}");
        assert_eq!(next.fake.signs.load(Ordering::SeqCst), 0, "nor is it sent on to the next node");

        // Vault's own sealed answer is: the sign goes on to the next node at once.
        let sealed = fake(&[503], Mode::Honest).await;
        let addresses = vec![format!("http://{}", sealed.addr), format!("http://{}", next.addr)];
        let settings_sealed =
            VaultSettings { addresses, auth: VaultAuth::Token(Secret::new("hvs.t")), ..settings.clone() };
        VaultIssuer::new(settings_sealed).await.unwrap().sign(&simple()).await.unwrap();
        assert_eq!((sealed.fake.signs.load(Ordering::SeqCst), next.fake.signs.load(Ordering::SeqCst)), (1, 1));

        // A node that takes the request and never answers may still sign it.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addresses = vec![format!("http://{}", silent.local_addr().unwrap())];
        let quick = VaultSettings {
            addresses,
            timeout: Duration::from_millis(300),
            auth: VaultAuth::Token(Secret::new("hvs.t")),
            ..settings
        };
        let held = tokio::spawn(async move {
            let (conn, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(conn);
        });
        let issuer = VaultIssuer::new(quick).await.unwrap();
        let err = issuer.sign(&simple()).await.unwrap_err();
        assert!(err.to_string().contains("sign/lab-internal: timed out"), "{err}");
        assert!(!err.signed_nothing(), "a timeout is not proof of nothing: {err}");
        held.abort();
    }

    #[tokio::test]
    async fn signs_what_was_asked() {
        let env = fake(&[], Mode::Honest).await;
        let issuer = env.issuer().await;
        let not_after = OffsetDateTime::now_utc() + time::Duration::hours(2);
        let req = request(&["b.lab.test", "a.lab.test", "10.0.0.5"], Some(not_after));
        let issued = issuer.sign(&req).await.unwrap();

        let body = env.fake.bodies.lock().unwrap()[0].clone();
        assert_eq!(body["common_name"], "a.lab.test");
        assert_eq!(body["alt_names"], "b.lab.test", "the CN is not repeated");
        assert_eq!(body["ip_sans"], "10.0.0.5");
        assert_eq!(body["format"], "pem");
        assert_eq!(body["csr"], req.csr_pem.as_str());
        let ttl: i64 = body["ttl"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
        assert!((7190..=7200).contains(&ttl), "{ttl}");
        let headers = env.fake.headers.lock().unwrap()[0].clone();
        assert_eq!(headers["x-vault-namespace"], "lab");
        assert_eq!(headers["x-vault-token"], "tok-0");

        let leaf = inspect_leaf(&issued.leaf_pem).unwrap();
        assert_eq!(leaf.names, req.identifiers);
        assert_eq!(issued.serial, leaf.serial, "serial_number, normalised");
        assert!(!issued.serial.contains(':'));
        assert_eq!(issued.chain_pem, vec![env.fake.intermediate.clone()], "the self-signed root is left out");
        assert_eq!(issued.full_chain_pem().matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(issued.not_after, leaf.not_after);
        assert!(body.get("ttl").is_some());

        // Without a requested notAfter the role's default TTL applies.
        issuer.sign(&simple()).await.unwrap();
        assert!(env.fake.bodies.lock().unwrap()[1].get("ttl").is_none());
        assert_eq!(env.fake.logins.load(Ordering::SeqCst), 1, "the token is reused");
    }

    #[tokio::test]
    async fn reads_roles_and_keeps_the_last_answer_through_an_outage() {
        use crate::issuer::role::RoleKeyType;
        let env = fake(&[], Mode::Honest).await;
        let issuer = env.issuer().await;
        let book = RoleBook::default();
        let roles: Vec<RoleRef> =
            ["lab-internal", "lab-noread", "lab-gone", "lab-flaky"].map(|r| RoleRef::new("pki_int", r)).into();
        issuer.read_roles(&book, &roles).await;
        match book.get(&roles[0]) {
            Some(RoleState::Known(info)) => {
                assert_eq!((info.key_type, info.key_bits, info.use_csr_sans), (RoleKeyType::Ec, 256, true))
            }
            other => panic!("{other:?}"),
        }
        let unknown = |i: usize| match book.get(&roles[i]) {
            Some(RoleState::Unknown(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(unknown(1).contains("HTTP 403"), "{}", unknown(1));
        assert!(unknown(2).contains("no such role"), "{}", unknown(2));
        assert!(unknown(3).contains("HTTP 503"), "{}", unknown(3));
        assert_eq!(env.fake.logins.load(Ordering::SeqCst), 1, "a 403 on a role read costs no login");
        assert_eq!(book.report().len(), 4, "three unreadable roles and one that takes names from the CSR");

        // Vault down: what was read still holds (the role did not change because Vault is sealed).
        env.fake.health.store(503, Ordering::SeqCst);
        issuer.read_roles(&book, &roles[..1]).await;
        assert!(matches!(book.get(&roles[0]), Some(RoleState::Known(_))));
    }

    #[tokio::test]
    async fn relogs_in_once_on_403() {
        let env = fake(&[403], Mode::Honest).await;
        let issuer = env.issuer().await;
        issuer.sign(&simple()).await.unwrap();
        assert_eq!(env.fake.logins.load(Ordering::SeqCst), 2, "one login, one re-login after the 403");
        assert_eq!(env.fake.signs.load(Ordering::SeqCst), 2, "one retry");
        let tokens: Vec<_> = env.fake.headers.lock().unwrap().iter().map(|h| h["x-vault-token"].clone()).collect();
        assert_eq!(tokens, ["tok-0", "tok-1"]);
        assert!(!format!("{issuer:?}").contains("tok-"), "the token never shows in Debug");

        let env = fake(&[403, 403], Mode::Honest).await;
        let issuer = env.issuer().await;
        let err = issuer.sign(&simple()).await.unwrap_err();
        assert!(matches!(&err, IssueError::Unavailable(e) if e.to_string().contains("permission denied")), "{err}");
        assert!(!format!("{err:?} {err}").contains("tok-"));
        assert_eq!(env.fake.logins.load(Ordering::SeqCst), 2);
        assert_eq!(env.fake.signs.load(Ordering::SeqCst), 2, "no second retry");
    }

    #[tokio::test]
    async fn token_file_is_read_again_after_403() {
        let env = fake(&[], Mode::Honest).await;
        *env.fake.valid_token.lock().unwrap() = Some("hvs.new".into());
        let file = env.dir.path().join("token");
        std::fs::write(&file, "hvs.old\n").unwrap();
        let issuer = VaultIssuer::new(env.settings(VaultAuth::TokenFile(file.clone()))).await.unwrap();
        assert!(matches!(issuer.sign(&simple()).await, Err(IssueError::Unavailable(_))));
        std::fs::write(&file, "  hvs.new\n").unwrap(); // rotated by an agent; trimmed
        issuer.sign(&simple()).await.unwrap();
        let tokens: Vec<_> = env.fake.headers.lock().unwrap().iter().map(|h| h["x-vault-token"].clone()).collect();
        assert_eq!(tokens, ["hvs.old", "hvs.old", "hvs.old", "hvs.new"]);
        assert_eq!(env.fake.logins.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn refusals_and_outages() {
        for (status, refused) in [(400, true), (503, false), (500, false), (404, false), (429, false)] {
            let env = fake(&[status], Mode::Honest).await;
            match (env.issuer().await.sign(&simple()).await, refused) {
                (Err(IssueError::Refused(msg)), true) => {
                    assert_eq!(msg, "common name x.other.test not allowed by this role", "Vault's text, trimmed")
                }
                (Err(IssueError::Unavailable(_)), false) => {}
                (other, _) => panic!("HTTP {status}: {other:?}"),
            }
        }
        let env = fake(&[], Mode::Honest).await;
        std::fs::write(env.dir.path().join("secret-id"), "wrong").unwrap();
        assert!(matches!(env.issuer().await.sign(&simple()).await, Err(IssueError::Unavailable(_))), "bad AppRole");
    }

    #[tokio::test]
    async fn never_hands_out_what_was_not_asked_for() {
        for (mode, names, why) in [
            (Mode::ExtraSan, vec!["a.lab.test", "extra.lab.test"], "the order is for [a.lab.test]"),
            (Mode::OtherKey, vec!["a.lab.test"], "different public key"),
        ] {
            let env = fake(&[], mode).await;
            match env.issuer().await.sign(&simple()).await {
                Err(IssueError::Mismatch { serial, names: got, leaf_pem, mount, why: reason }) => {
                    let leaf = inspect_leaf(&leaf_pem).unwrap();
                    assert_eq!(serial, leaf.serial, "the serial of the certificate the CA signed");
                    assert_eq!(got.iter().map(Identifier::value).collect::<Vec<_>>(), names, "the CA's names");
                    assert_eq!(mount, None);
                    assert!(reason.contains(why), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn after_an_outage_no_sign_is_sent_until_health_answers() {
        let env = fake(&[503, 503], Mode::Honest).await;
        let issuer = env.issuer().await;
        assert!(matches!(issuer.sign(&simple()).await, Err(IssueError::Unavailable(_))));
        env.fake.health.store(503, Ordering::SeqCst); // sealed
        let err = issuer.sign(&simple()).await.unwrap_err();
        assert!(err.to_string().contains("sealed"), "{err}");
        assert_eq!(env.fake.signs.load(Ordering::SeqCst), 1, "the second sign never reached Vault");
        env.fake.health.store(200, Ordering::SeqCst);
        assert!(matches!(issuer.sign(&simple()).await, Err(IssueError::Unavailable(_))), "the scripted 503");
        issuer.sign(&simple()).await.unwrap();
    }

    #[tokio::test]
    async fn unreachable_or_silent_vault_is_unavailable_not_fatal() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let settings = |address: String| VaultSettings {
            addresses: vec![address],
            mount: "pki_int".into(),
            role: "r".into(),
            ca_bundle: None,
            namespace: None,
            timeout: Duration::from_millis(500),
            auth: VaultAuth::Token(Secret::new("hvs.t")),
            client_cert: None,
        };
        let issuer = VaultIssuer::new(settings("http://127.0.0.1:1".into())).await.unwrap();
        assert!(matches!(issuer.health().await, Err(IssueError::Unavailable(_))));
        assert!(matches!(issuer.sign(&simple()).await, Err(IssueError::Unavailable(_))));
        assert!(matches!(issuer.chain().await, Err(IssueError::Unavailable(_))));

        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let issuer = VaultIssuer::new(settings(format!("http://{addr}"))).await.unwrap();
        let err = issuer.sign(&simple()).await.unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(!format!("{err:?}").contains("hvs.t"));
    }

    #[tokio::test]
    async fn revoke_and_chain() {
        let env = fake(&[], Mode::Honest).await;
        let issuer = env.issuer().await;
        issuer.revoke("0a0B1c", "", None).await.unwrap();
        assert_eq!(env.fake.bodies.lock().unwrap()[0]["serial_number"], "0a:0b:1c");
        // A serial Vault does not know (no_store): revoked by the certificate itself.
        issuer.revoke("dead", "-----BEGIN CERTIFICATE-----\nAA==\n", None).await.unwrap();
        let bodies = env.fake.bodies.lock().unwrap().clone();
        assert_eq!(
            (bodies[1]["serial_number"].as_str(), bodies[2]["certificate"].as_str()),
            (Some("de:ad"), Some("-----BEGIN CERTIFICATE-----\nAA==\n"))
        );
        env.fake.bodies.lock().unwrap().clear();

        let chain = issuer.chain().await.unwrap();
        assert_eq!(chain, vec![env.fake.intermediate.clone(), env.fake.ca.ca_pem().to_owned()]);
        env.fake.ca_chain_status.store(503, Ordering::SeqCst);
        assert!(matches!(issuer.chain().await, Err(IssueError::Unavailable(_))), "nothing cached yet");
        issuer.sign(&simple()).await.unwrap();
        assert_eq!(issuer.chain().await.unwrap(), chain, "the chain of the last signature");
    }

    #[tokio::test]
    async fn https_with_a_ca_bundle() {
        let env = fake(&[], Mode::Honest).await;
        let (chain, key) = env.fake.ca.issue_serving(&["127.0.0.1".into()]).unwrap();
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs = CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let tls = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
        let addr = serve_tls(router(env.fake.clone()), tls).await;
        let settings = |ca_bundle| VaultSettings {
            addresses: vec![format!("https://{addr}")],
            ca_bundle,
            ..env.settings(env.approle())
        };

        let issuer = VaultIssuer::new(settings(Some(env.fake.ca.ca_path()))).await.unwrap();
        issuer.health().await.unwrap();
        issuer.sign(&simple()).await.unwrap();

        let untrusting = VaultIssuer::new(settings(None)).await.unwrap();
        let err = untrusting.health().await.unwrap_err();
        assert!(matches!(err, IssueError::Unavailable(_)), "{err}");

        let missing = VaultIssuer::new(settings(Some(env.dir.path().join("nope.pem")))).await.unwrap_err();
        assert!(missing.to_string().contains("nope.pem"), "{missing}");
    }

    async fn serve_tls(app: Router, config: rustls::ServerConfig) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        addr
    }

    #[test]
    fn serial_forms() {
        assert_eq!(colon_serial("0a0B1c"), "0a:0b:1c");
        assert_eq!(colon_serial("a0b"), "0a:0b");
        assert_eq!(colon_serial("2c:51:0E"), "2c:51:0e");
    }

    /// Against a real Vault or OpenBao set up like the homelab, e.g. `bao server -dev`, then:
    /// `pki/` root; `pki_int/` intermediate (`intermediate/generate/internal`, signed by
    /// `pki/root/sign-intermediate`, `intermediate/set-signed`); role `lab-internal`
    /// (`allowed_domains=lab.test allow_subdomains=true allow_ip_sans=true key_type=ec key_bits=256`);
    /// a policy with only `update` on `pki_int/sign/lab-internal` and `pki_int/revoke`; a token
    /// (file) and an AppRole (`role_id`, `secret_id` file) with that policy.
    #[tokio::test]
    #[ignore = "needs VACME_TEST_VAULT_ADDR, _TOKEN_FILE, _ROLE_ID and _SECRET_ID_FILE"]
    async fn real_vault_token_and_approle() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let var = |k: &str| std::env::var(format!("VACME_TEST_VAULT_{k}")).unwrap_or_else(|_| panic!("set {k}"));
        let settings = |auth| VaultSettings {
            addresses: vec![var("ADDR")],
            mount: std::env::var("VACME_TEST_VAULT_MOUNT").unwrap_or_else(|_| "pki_int".into()),
            role: std::env::var("VACME_TEST_VAULT_ROLE").unwrap_or_else(|_| "lab-internal".into()),
            ca_bundle: std::env::var("VACME_TEST_VAULT_CA_BUNDLE").ok().map(PathBuf::from),
            namespace: None,
            timeout: Duration::from_secs(10),
            auth,
            client_cert: None,
        };
        let approle = VaultAuth::AppRole {
            mount: "approle".into(),
            role_id: var("ROLE_ID"),
            secret_id_file: var("SECRET_ID_FILE").into(),
        };
        for (how, auth) in [("token", VaultAuth::TokenFile(var("TOKEN_FILE").into())), ("approle", approle)] {
            let issuer = VaultIssuer::new(settings(auth)).await.unwrap();
            issuer.health().await.unwrap();

            let host = format!("{how}-{}.lab.test", OffsetDateTime::now_utc().unix_timestamp());
            let not_after = OffsetDateTime::now_utc() + time::Duration::hours(2);
            let req = request(&[&host, "b.lab.test", "10.0.0.7"], Some(not_after));
            let issued = issuer.sign(&req).await.unwrap();
            let leaf = inspect_leaf(&issued.leaf_pem).unwrap();
            assert_eq!(leaf.names, req.identifiers, "{how}");
            assert_eq!(leaf.serial, issued.serial);
            assert!((not_after - issued.not_after).whole_minutes().abs() <= 1, "ttl honoured: {}", issued.not_after);
            assert!(!issued.chain_pem.is_empty() && issued.chain_pem.iter().all(|c| !is_self_signed(c)));
            let int = Pem::iter_from_buffer(issued.chain_pem[0].as_bytes()).next().unwrap().unwrap();
            let leaf_der = Pem::iter_from_buffer(issued.leaf_pem.as_bytes()).next().unwrap().unwrap();
            let leaf_cert = leaf_der.parse_x509().unwrap();
            leaf_cert.verify_signature(Some(int.parse_x509().unwrap().public_key())).unwrap();
            eprintln!(
                "{how}: signed serial {} until {}, chain of {}",
                issued.serial,
                issued.not_after,
                issued.chain_pem.len()
            );

            issuer.revoke(&issued.serial, &issued.leaf_pem, None).await.unwrap();
            issuer.revoke(&issued.serial, &issued.leaf_pem, None).await.unwrap(); // idempotent

            match issuer.sign(&request(&["x.other.test"], None)).await {
                Err(IssueError::Refused(msg)) => eprintln!("{how}: outside the role: {msg}"),
                other => panic!("{how}: {other:?}"),
            }
            let chain = issuer.chain().await.unwrap();
            assert_eq!(chain[0], issued.chain_pem[0], "issuing CA first");
            eprintln!("{how}: ca_chain has {} certificate(s)", chain.len());
        }
    }

    /// The 403 path for real: an AppRole whose tokens live `VACME_TEST_VAULT_SHORT_TTL_SECS`
    /// (e.g. `token_ttl=3s token_max_ttl=3s`) must log in again after its token expires.
    #[tokio::test]
    #[ignore = "needs VACME_TEST_VAULT_ADDR, _SHORT_ROLE_ID, _SHORT_SECRET_ID_FILE and _SHORT_TTL_SECS"]
    async fn real_vault_logs_in_again_after_token_expiry() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let var = |k: &str| std::env::var(format!("VACME_TEST_VAULT_{k}")).unwrap_or_else(|_| panic!("set {k}"));
        let issuer = VaultIssuer::new(VaultSettings {
            addresses: vec![var("ADDR")],
            mount: "pki_int".into(),
            role: "lab-internal".into(),
            ca_bundle: None,
            namespace: None,
            timeout: Duration::from_secs(10),
            auth: VaultAuth::AppRole {
                mount: "approle".into(),
                role_id: var("SHORT_ROLE_ID"),
                secret_id_file: var("SHORT_SECRET_ID_FILE").into(),
            },
            client_cert: None,
        })
        .await
        .unwrap();
        issuer.sign(&simple()).await.unwrap();
        let before = issuer.token.read().await.clone().unwrap();
        tokio::time::sleep(Duration::from_secs(var("SHORT_TTL_SECS").parse::<u64>().unwrap() + 1)).await;
        issuer.sign(&simple()).await.unwrap();
        assert_ne!(issuer.token.read().await.clone().unwrap(), before, "a new token after the 403");
    }
}
