//! vacme's own HTTPS certificate, kept fresh while it serves:
//! - from `tls.cert_file`/`key_file`, reloaded when either file changes (a certbot or
//!   cert-manager renewal of vacme's own certificate needs no restart);
//! - made by the local CA (the default), renewed at two thirds of its life;
//! - or, with `tls.source = "issuer"`, signed by vacme's issuer (Vault's `sign` with the
//!   configured role, or the local CA) for a key vacme generates, renewed at two thirds of its
//!   life. While the issuer cannot sign (Vault down at start), the local CA's certificate is
//!   served and the issuer is asked again every 30 seconds.
//!
//! A certificate that fails to load or sign never replaces the one being served.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use time::OffsetDateTime;

use crate::{
    acme::Identifier,
    issuer::{IssuanceRequest, Issuer, KeyPolicy, LocalCa},
};

/// The certificate handshakes get; swapped in place when renewed or reloaded.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl ServingCert {
    pub fn new(first: CertifiedKey) -> Self {
        Self { current: RwLock::new(Arc::new(first)) }
    }

    fn set(&self, next: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }

    /// The leaf being served (DER), for tests and logs.
    pub fn leaf_der(&self) -> Vec<u8> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }
}

/// A chain (leaf first) and its key, both PEM, as rustls serves them.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("private key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("private key: {e}"))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| format!("the key does not belong to the certificate: {e}"))?;
    Ok(ck)
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum Source {
    Files { cert: PathBuf, key: PathBuf, every: Duration },
    Local { ca: Arc<LocalCa>, names: Vec<String> },
    Issuer { issuer: Arc<dyn Issuer>, names: Vec<String>, lifetime: Option<Duration>, fallback: Arc<LocalCa> },
}

/// One certificate obtained, and when to get the next.
struct Obtained {
    key: CertifiedKey,
    renew_in: Duration,
}

/// Two thirds of the time left until `not_after`, at least `floor`.
fn two_thirds_of_what_is_left(not_after: OffsetDateTime, floor: Duration) -> Duration {
    let left = (not_after - OffsetDateTime::now_utc()).whole_milliseconds().max(0) as u64;
    Duration::from_millis(left * 2 / 3).max(floor)
}

const RETRY: Duration = Duration::from_secs(30);

impl Source {
    /// The first certificate, at start: the issuer's if it answers within `wait`, else the local
    /// CA's (and the loop keeps asking the issuer).
    pub async fn first(&self, wait: Duration) -> Result<(CertifiedKey, Duration), String> {
        match self {
            Source::Files { cert, key, every } => Ok((load_files(cert, key)?, *every)),
            Source::Local { ca, names } => local(ca, names).map(|o| (o.key, o.renew_in)),
            Source::Issuer { issuer, names, lifetime, fallback } => {
                match tokio::time::timeout(wait, from_issuer(issuer.as_ref(), names, *lifetime)).await {
                    Ok(Ok(o)) => {
                        tracing::info!(issuer = issuer.name(), "serving a certificate from the issuer");
                        Ok((o.key, o.renew_in))
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the issuer cannot sign vacme's certificate yet; serving the local CA's");
                        local(fallback, names).map(|o| (o.key, RETRY))
                    }
                    Err(_) => {
                        tracing::warn!("the issuer did not answer in time; serving the local CA's certificate for now");
                        local(fallback, names).map(|o| (o.key, RETRY))
                    }
                }
            }
        }
    }

    /// Keeps `serving` fresh until `stop` resolves; `first_in` is when to look first.
    pub async fn keep_fresh(self, serving: Arc<ServingCert>, first_in: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut wait = first_in;
        let mut seen = match &self {
            Source::Files { cert, key, .. } => stamps(cert, key),
            _ => None,
        };
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = match &self {
                Source::Files { cert, key, every } => {
                    let now_seen = stamps(cert, key);
                    if now_seen != seen {
                        match load_files(cert, key) {
                            Ok(ck) => {
                                serving.set(ck);
                                seen = now_seen;
                                tracing::info!(cert = %cert.display(), "reloaded the serving certificate");
                            }
                            // Half-written files (cert renewed, key not yet): try again next time.
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot reload the serving certificate; keeping the old one")
                            }
                        }
                    }
                    *every
                }
                Source::Local { ca, names } => match local(ca, names) {
                    Ok(o) => {
                        serving.set(o.key);
                        tracing::info!("renewed the serving certificate (local CA)");
                        o.renew_in
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the serving certificate");
                        RETRY
                    }
                },
                Source::Issuer { issuer, names, lifetime, .. } => {
                    match from_issuer(issuer.as_ref(), names, *lifetime).await {
                        Ok(o) => {
                            serving.set(o.key);
                            tracing::info!(issuer = issuer.name(), "renewed the serving certificate from the issuer");
                            o.renew_in
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot renew the serving certificate from the issuer; trying again");
                            RETRY
                        }
                    }
                }
            };
        }
    }
}

/// Modification times of the two files (None if either cannot be read).
fn stamps(cert: &PathBuf, key: &PathBuf) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn load_files(cert: &PathBuf, key: &PathBuf) -> Result<CertifiedKey, String> {
    let chain = std::fs::read_to_string(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_pem = std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
    certified_key(&chain, &key_pem)
}

fn local(ca: &LocalCa, names: &[String]) -> Result<Obtained, String> {
    let (chain, key) = ca.issue_serving(names).map_err(|e| e.to_string())?;
    let not_after = OffsetDateTime::now_utc() + time::Duration::days(90);
    Ok(Obtained { key: certified_key(&chain, &key)?, renew_in: two_thirds_of_what_is_left(not_after, RETRY) })
}

/// A fresh P-256 key, a CSR for `names`, and the issuer's signature, checked like any order's.
async fn from_issuer(issuer: &dyn Issuer, names: &[String], lifetime: Option<Duration>) -> Result<Obtained, String> {
    let ids: Vec<Identifier> = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Identifier::Ip(ip),
            Err(_) => Identifier::Dns(n.trim_end_matches('.').to_ascii_lowercase()),
        })
        .collect();
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = ids
        .iter()
        .map(|id| match id {
            Identifier::Ip(ip) => Ok(rcgen::SanType::IpAddress(*ip)),
            Identifier::Dns(n) => n.clone().try_into().map(rcgen::SanType::DnsName),
        })
        .collect::<Result<_, _>>()
        .map_err(|e: rcgen::Error| e.to_string())?;
    // No subject: the names are the SANs (a CN would have to be one of them anyway).
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    let not_after = lifetime.map(|l| OffsetDateTime::now_utc() + l);
    let req = IssuanceRequest::new(&ids, csr.der(), &KeyPolicy::default(), None, not_after).map_err(|p| p.detail)?;
    let issued = issuer.sign(&req).await.map_err(|e| e.to_string())?;
    let ck = certified_key(&issued.full_chain_pem(), &key.serialize_pem())?;
    Ok(Obtained { key: ck, renew_in: two_thirds_of_what_is_left(issued.not_after, Duration::from_secs(1)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_two_thirds_of_what_is_left() {
        let in_90s = OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let d = two_thirds_of_what_is_left(in_90s, Duration::from_secs(1));
        assert!((58..=60).contains(&d.as_secs()), "{d:?}");
        let past = OffsetDateTime::now_utc() - time::Duration::seconds(5);
        assert_eq!(two_thirds_of_what_is_left(past, Duration::from_secs(1)), Duration::from_secs(1));
    }
}
