//! Vault / OpenBao PKI as the CA: `POST <mount>/sign/<role>` over one pooled HTTP client.
//! The token lives only in this struct (as a `Secret`) and in the `X-Vault-Token` header.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
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

use super::{IssuanceRequest, IssueError, Issued, Issuer, normalize_serial};
use crate::{acme::Identifier, secret::Secret};

/// How vacme logs in to Vault.
#[derive(Clone, Debug)]
pub enum VaultAuth {
    /// A fixed token.
    Token(Secret),
    /// A token read from a file at every login (so a rotated file is picked up).
    TokenFile(PathBuf),
    /// AppRole: role_id plus a secret_id read from a file at every login.
    AppRole { mount: String, role_id: String, secret_id_file: PathBuf },
}

/// Where Vault is and how to use it.
#[derive(Clone, Debug)]
pub struct VaultSettings {
    pub address: String,
    pub mount: String,
    pub role: String,
    pub ca_bundle: Option<PathBuf>,
    pub namespace: Option<String>,
    pub timeout: Duration,
    pub auth: VaultAuth,
}

/// The Vault issuer.
#[derive(Debug)]
pub struct VaultIssuer {
    settings: VaultSettings,
    http: reqwest::Client,
    token: RwLock<Option<Secret>>,
    login: Mutex<()>,
    /// Set when a call failed in transport (timeout, connection, 5xx). A `sign` that timed out may
    /// still run when Vault wakes up, so no further `sign` is sent until `sys/health` answers:
    /// an outage costs at most the requests in flight when it began, not one per retry.
    suspect: AtomicBool,
}

/// Vault's error answers: `{"errors": ["..."]}`.
fn vault_errors(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["errors"].as_array().cloned())
        .map(|errs| errs.iter().filter_map(Value::as_str).map(str::trim).collect::<Vec<_>>().join("; "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "no error text".into())
}

impl VaultIssuer {
    /// Builds the client. Does not log in: vacme starts even while Vault is down, and the
    /// first signing call (or readiness probe) logs in.
    pub async fn new(settings: VaultSettings) -> Result<Self, IssueError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(32)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .use_rustls_tls();
        if let Some(path) = &settings.ca_bundle {
            let pem = std::fs::read(path)
                .map_err(|e| IssueError::unavailable(format!("cannot read vault.ca_bundle {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| IssueError::unavailable(format!("vault.ca_bundle {}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| IssueError::unavailable(format!("HTTP client: {e}")))?;
        Ok(Self { settings, http, token: RwLock::new(None), login: Mutex::new(()), suspect: AtomicBool::new(false) })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.settings.address.trim_end_matches('/'), path.trim_start_matches('/'))
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, self.url(path));
        if let Some(ns) = &self.settings.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        req
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
        let token = self.log_in().await?;
        *self.token.write().await = Some(token.clone());
        Ok(token)
    }

    async fn log_in(&self) -> Result<Secret, IssueError> {
        match &self.settings.auth {
            VaultAuth::Token(t) => Ok(t.clone()),
            VaultAuth::TokenFile(path) => read_secret(path),
            VaultAuth::AppRole { mount, role_id, secret_id_file } => {
                let secret_id = read_secret(secret_id_file)?;
                let res = self
                    .request(Method::POST, &format!("auth/{mount}/login"))
                    .json(&json!({"role_id": role_id, "secret_id": secret_id.expose()}))
                    .send()
                    .await
                    .map_err(|e| IssueError::unavailable(format!("AppRole login: {}", without_url(&e))))?;
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                if !status.is_success() {
                    return Err(IssueError::unavailable(format!(
                        "AppRole login: HTTP {status}: {}",
                        vault_errors(&body)
                    )));
                }
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let token = v["auth"]["client_token"]
                    .as_str()
                    .ok_or_else(|| IssueError::unavailable("AppRole login: no client_token in the answer"))?;
                tracing::info!(mount = %mount, "logged in to Vault with AppRole");
                Ok(Secret::new(token))
            }
        }
    }

    /// One authenticated call. 403 drops the token, logs in again and retries once.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, IssueError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut req = self.request(method.clone(), path).header("X-Vault-Token", token.expose());
            if let Some(b) = body {
                req = req.json(b);
            }
            let res = req.send().await.map_err(|e| {
                self.suspect.store(true, Ordering::Relaxed);
                IssueError::unavailable(format!("{path}: {}", without_url(&e)))
            })?;
            let status = res.status();
            if status.is_server_error() {
                self.suspect.store(true, Ordering::Relaxed);
            }
            let text = res.text().await.unwrap_or_default();
            match status {
                s if s.is_success() => {
                    return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
                }
                StatusCode::FORBIDDEN if attempt == 0 => {
                    tracing::warn!(path, "Vault answered 403; logging in again");
                    *self.token.write().await = None;
                }
                StatusCode::FORBIDDEN => {
                    return Err(IssueError::unavailable(format!("{path}: permission denied: {}", vault_errors(&text))));
                }
                StatusCode::BAD_REQUEST => return Err(IssueError::Refused(vault_errors(&text))),
                s => {
                    return Err(IssueError::unavailable(format!("{path}: HTTP {s}: {}", vault_errors(&text))));
                }
            }
        }
        Err(IssueError::unavailable(format!("{path}: permission denied")))
    }
}

/// A reqwest error without the URL (which is fine) or anything else from the request.
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

fn read_secret(path: &PathBuf) -> Result<Secret, IssueError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| IssueError::unavailable(format!("cannot read {}: {e}", path.display())))?;
    let s = s.trim();
    if s.is_empty() {
        return Err(IssueError::unavailable(format!("{} is empty", path.display())));
    }
    Ok(Secret::new(s))
}

/// Vault wants serials as colon-separated hex pairs.
fn colon_serial(serial: &str) -> String {
    let hex = normalize_serial(serial);
    let padded = if hex.len() % 2 == 1 { format!("0{hex}") } else { hex };
    padded.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap_or("00")).collect::<Vec<_>>().join(":")
}

/// The leaf's SANs as identifiers, and its validity.
fn inspect_leaf(pem: &str) -> Result<(Vec<Identifier>, OffsetDateTime, OffsetDateTime), String> {
    let block = Pem::iter_from_buffer(pem.as_bytes()).next().ok_or("no certificate")?.map_err(|e| e.to_string())?;
    let (_, cert) = X509Certificate::from_der(&block.contents).map_err(|e| e.to_string())?;
    let mut ids = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(d) => ids.push(Identifier::Dns(d.to_ascii_lowercase())),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    ids.push(Identifier::Ip(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())))
                }
                GeneralName::IPAddress(b) if b.len() == 16 => {
                    ids.push(Identifier::Ip(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())))
                }
                other => return Err(format!("unexpected SAN {other:?}")),
            }
        }
    }
    ids.sort();
    ids.dedup();
    Ok((ids, cert.validity().not_before.to_datetime(), cert.validity().not_after.to_datetime()))
}

fn is_self_signed(pem: &str) -> bool {
    let Some(Ok(block)) = Pem::iter_from_buffer(pem.as_bytes()).next() else {
        return false;
    };
    X509Certificate::from_der(&block.contents).is_ok_and(|(_, c)| c.subject() == c.issuer())
}

#[async_trait::async_trait]
impl Issuer for VaultIssuer {
    async fn sign(&self, req: &IssuanceRequest) -> Result<Issued, IssueError> {
        if self.suspect.load(Ordering::Relaxed) {
            self.health().await?;
        }
        let dns: Vec<String> = req
            .identifiers
            .iter()
            .filter_map(|i| match i {
                Identifier::Dns(n) if *n != req.common_name => Some(n.clone()),
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
        let now = OffsetDateTime::now_utc();
        if let Some(na) = req.not_after.filter(|t| *t > now + time::Duration::minutes(5)) {
            // Vault caps this at the role's max_ttl.
            body["ttl"] = json!(format!("{}s", (na - now).whole_seconds()));
        }
        let path = format!("{}/sign/{}", self.settings.mount, self.settings.role);
        let v = self.call(Method::POST, &path, Some(&body)).await?;
        let data = &v["data"];
        let leaf = data["certificate"]
            .as_str()
            .ok_or_else(|| IssueError::unavailable("sign: no certificate in the answer"))?;
        let mut chain: Vec<String> = match data["ca_chain"].as_array() {
            Some(a) if !a.is_empty() => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => data["issuing_ca"].as_str().map(|s| vec![s.to_owned()]).unwrap_or_default(),
        };
        chain.retain(|c| !is_self_signed(c));
        let (sans, not_before, not_after) =
            inspect_leaf(leaf).map_err(|e| IssueError::unavailable(format!("sign: unreadable certificate: {e}")))?;
        if sans != req.identifiers {
            // Never hand out a certificate with names nobody validated.
            return Err(IssueError::Refused(format!(
                "Vault returned a certificate for {:?}, not the order's names",
                sans.iter().map(Identifier::value).collect::<Vec<_>>()
            )));
        }
        let serial = data["serial_number"].as_str().map(normalize_serial).unwrap_or_default();
        Ok(Issued { serial, leaf_pem: leaf.to_owned(), chain_pem: chain, not_before, not_after })
    }

    async fn revoke(&self, serial: &str) -> Result<(), IssueError> {
        let path = format!("{}/revoke", self.settings.mount);
        match self.call(Method::POST, &path, Some(&json!({"serial_number": colon_serial(serial)}))).await {
            Ok(_) => Ok(()),
            Err(IssueError::Refused(msg)) if msg.contains("already revoked") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn chain(&self) -> Result<Vec<String>, IssueError> {
        let res = self
            .request(Method::GET, &format!("{}/ca_chain", self.settings.mount))
            .send()
            .await
            .map_err(|e| IssueError::unavailable(format!("ca_chain: {}", without_url(&e))))?;
        if !res.status().is_success() {
            return Err(IssueError::unavailable(format!("ca_chain: HTTP {}", res.status())));
        }
        let text = res.text().await.map_err(|e| IssueError::unavailable(format!("ca_chain: {}", without_url(&e))))?;
        Ok(Pem::iter_from_buffer(text.as_bytes())
            .filter_map(Result::ok)
            .map(|p| super::csr::pem_encode("CERTIFICATE", &p.contents))
            .collect())
    }

    async fn health(&self) -> Result<(), IssueError> {
        let res =
            self.request(Method::GET, "sys/health?standbyok=true&perfstandbyok=true").send().await.map_err(|e| {
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
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{Json, Router, extract::State, http::HeaderMap, routing::post};
    use rcgen::{CertificateParams, KeyPair};

    use super::*;
    use crate::issuer::{KeyPolicy, LocalCa};

    #[derive(Clone)]
    struct Fake {
        ca: Arc<LocalCa>,
        logins: Arc<AtomicUsize>,
        /// Status of the next sign answers, in order; then success.
        script: Arc<std::sync::Mutex<Vec<u16>>>,
        extra_san: bool,
    }

    async fn fake_login(State(f): State<Fake>) -> Json<Value> {
        let n = f.logins.fetch_add(1, Ordering::SeqCst);
        Json(json!({"auth": {"client_token": format!("tok-{n}")}}))
    }

    async fn fake_sign(
        State(f): State<Fake>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        assert!(headers["x-vault-token"].to_str().unwrap().starts_with("tok-"));
        let next = f.script.lock().unwrap().pop();
        if let Some(code) = next {
            return (
                StatusCode::from_u16(code).unwrap(),
                Json(json!({"errors": ["common name x not allowed by this role"]})),
            );
        }
        let der = pem_der(body["csr"].as_str().unwrap());
        let mut ids = vec![Identifier::Dns(body["common_name"].as_str().unwrap().to_owned())];
        if f.extra_san {
            ids.push(Identifier::Dns("extra.lab.test".into()));
        }
        let mut p = CertificateParams::new(ids.iter().map(Identifier::value).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        let _ = der;
        let key = KeyPair::generate().unwrap();
        let csr = p.serialize_request(&key).unwrap();
        let req = IssuanceRequest::new(&ids, csr.der(), &KeyPolicy::default(), None, None).unwrap();
        let issuer =
            crate::issuer::LocalIssuer::new(f.ca.clone(), Duration::from_secs(3600), Duration::from_secs(7200));
        let issued = issuer.sign(&req).await.unwrap();
        (
            StatusCode::OK,
            Json(
                json!({"data": {"certificate": issued.leaf_pem, "ca_chain": [f.ca.ca_pem()], "serial_number": "0a:0b"}}),
            ),
        )
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        Pem::iter_from_buffer(pem.as_bytes()).next().unwrap().unwrap().contents
    }

    async fn fake(script: Vec<u16>, extra_san: bool) -> (VaultIssuer, Fake, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let f = Fake {
            ca: Arc::new(LocalCa::load_or_create(&dir.path().join("ca")).unwrap()),
            logins: Arc::default(),
            script: Arc::new(std::sync::Mutex::new(script)),
            extra_san,
        };
        let app = Router::new()
            .route("/v1/auth/approle/login", post(fake_login))
            .route("/v1/pki_int/sign/lab-internal", post(fake_sign))
            .with_state(f.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        std::fs::write(dir.path().join("secret-id"), "s3cr3t\n").unwrap();
        let issuer = VaultIssuer::new(VaultSettings {
            address: format!("http://{addr}"),
            mount: "pki_int".into(),
            role: "lab-internal".into(),
            ca_bundle: None,
            namespace: None,
            timeout: Duration::from_secs(5),
            auth: VaultAuth::AppRole {
                mount: "approle".into(),
                role_id: "rid".into(),
                secret_id_file: dir.path().join("secret-id"),
            },
        })
        .await
        .unwrap();
        (issuer, f, dir)
    }

    fn request() -> IssuanceRequest {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["a.lab.test".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        let der = p.serialize_request(&key).unwrap().der().to_vec();
        IssuanceRequest::new(&[Identifier::Dns("a.lab.test".into())], &der, &KeyPolicy::default(), None, None).unwrap()
    }

    #[tokio::test]
    async fn signs_and_relogs_in_once_on_403() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (issuer, f, _dir) = fake(vec![403], false).await;
        let issued = issuer.sign(&request()).await.unwrap();
        assert_eq!(issued.serial, "0a0b");
        assert_eq!(f.logins.load(Ordering::SeqCst), 2, "one login, one re-login after the 403");
        assert!(issued.chain_pem.is_empty(), "self-signed roots are not part of the served chain");
        assert!(!format!("{issuer:?}").contains("tok-"), "the token never shows in Debug");
    }

    #[tokio::test]
    async fn refusals_outages_and_extra_names() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (issuer, _, _dir) = fake(vec![400], false).await;
        match issuer.sign(&request()).await {
            Err(IssueError::Refused(msg)) => {
                assert!(msg.contains("not allowed by this role"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        let (issuer, _, _dir) = fake(vec![503], false).await;
        assert!(matches!(issuer.sign(&request()).await, Err(IssueError::Unavailable(_))));
        let (issuer, _, _dir) = fake(vec![403, 403], false).await;
        assert!(matches!(issuer.sign(&request()).await, Err(IssueError::Unavailable(_))));
        let (issuer, _, _dir) = fake(vec![], true).await;
        assert!(matches!(issuer.sign(&request()).await, Err(IssueError::Refused(_))));
    }

    #[tokio::test]
    async fn after_an_outage_no_sign_is_sent_until_health_answers() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (issuer, f, _dir) = fake(vec![503, 503], false).await;
        assert!(matches!(issuer.sign(&request()).await, Err(IssueError::Unavailable(_))));
        // The fake has no sys/health (404): the second attempt stops at the probe.
        assert!(matches!(issuer.sign(&request()).await, Err(IssueError::Unavailable(_))));
        assert_eq!(f.script.lock().unwrap().len(), 1, "the second sign never reached Vault");
    }

    #[tokio::test]
    async fn unreachable_vault_is_unavailable_not_fatal() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let issuer = VaultIssuer::new(VaultSettings {
            address: "http://127.0.0.1:1".into(),
            mount: "pki_int".into(),
            role: "r".into(),
            ca_bundle: None,
            namespace: None,
            timeout: Duration::from_secs(2),
            auth: VaultAuth::Token(Secret::new("t")),
        })
        .await
        .unwrap();
        assert!(matches!(issuer.health().await, Err(IssueError::Unavailable(_))));
        assert!(matches!(issuer.sign(&request()).await, Err(IssueError::Unavailable(_))));
    }

    #[test]
    fn serial_forms() {
        assert_eq!(colon_serial("0a0B1c"), "0a:0b:1c");
        assert_eq!(colon_serial("a0b"), "0a:0b");
        assert_eq!(normalize_serial("0A:0b:1C"), "0a0b1c");
    }
}
