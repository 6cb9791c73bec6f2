//! The trust anchor: the self-signed root that the CA's certificates chain to, which devices
//! install (`GET /roots.pem`, `vacme root`). It is worked out from the CA's own chain (Vault's
//! `<mount>/ca_chain`, the local CA's `ca.pem`), or, when Vault's chain stops at the
//! intermediate, from a configured file that the chain must verify to. The server reads it at
//! start and again in the background, and answers requests from memory.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use x509_parser::{
    pem::Pem,
    prelude::{FromDer, X509Certificate},
};

use super::{Issuer, csr::pem_encode};

/// How soon an unknown root is asked for again.
const RETRY_UNKNOWN: Duration = Duration::from_secs(10);

/// Why the root is not known.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The configured root file cannot be read or holds no usable certificate.
    #[error("cannot use vault.root_file {path}: {why}")]
    File { path: PathBuf, why: String },
    /// The CA's chain cannot be read now (Vault down, sealed, unreachable): asked again later.
    #[error("the CA's chain cannot be read: {0}")]
    Unavailable(String),
    /// The chain does not lead to a root vacme can name: the operator must change the configuration.
    #[error("{0}")]
    NoRoot(String),
}

/// A root certificate, with its SHA-256 fingerprint (of the DER, as every platform computes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pem: String,
    sha256: [u8; 32],
    subject: String,
}

impl Root {
    fn from_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        Self { pem: pem_encode("CERTIFICATE", der), sha256, subject: subject_of(der) }
    }

    /// The root as one PEM block (with a final newline).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// `AB:CD:...`: upper-case hex pairs joined by colons, as `openssl x509 -fingerprint -sha256`
    /// and most certificate viewers show it.
    pub fn fingerprint(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }

    /// Plain lower-case hex of the same digest (`sha256sum` of the DER file).
    pub fn fingerprint_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The root's subject, e.g. `CN=Lab Root CA`.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// The DER of every certificate in a PEM text.
fn ders(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(text.as_bytes()) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        X509Certificate::from_der(&block.contents).map_err(|e| format!("unreadable certificate: {e}"))?;
        out.push(block.contents);
    }
    Ok(out)
}

fn subject_of(der: &[u8]) -> String {
    X509Certificate::from_der(der).map_or_else(|_| "?".into(), |(_, c)| c.subject().to_string())
}

fn issuer_of(der: &[u8]) -> String {
    X509Certificate::from_der(der).map_or_else(|_| "?".into(), |(_, c)| c.issuer().to_string())
}

/// Self-signed: its subject is its issuer and its own key verifies its signature. Only that
/// makes it a trust anchor; a subject equal to the issuer alone proves nothing.
fn is_self_signed(der: &[u8]) -> bool {
    X509Certificate::from_der(der).is_ok_and(|(_, c)| c.subject() == c.issuer() && c.verify_signature(None).is_ok())
}

/// `child` names `parent` as its issuer and `parent`'s key verifies its signature.
fn issued_by(child: &[u8], parent: &[u8]) -> bool {
    match (X509Certificate::from_der(child), X509Certificate::from_der(parent)) {
        (Ok((_, c)), Ok((_, p))) => c.issuer() == p.subject() && c.verify_signature(Some(p.public_key())).is_ok(),
        _ => false,
    }
}

/// The root `chain` (PEM, issuing CA first, as `Issuer::chain` gives it) leads to. When its
/// last certificate is not self-signed, the walk goes on through `configured` (the root file's
/// certificates), each step checked by signature, until it reaches a self-signed root.
pub(crate) fn root_of(chain: &[String], configured: &[Vec<u8>]) -> Result<Root, TrustError> {
    let mut certs = Vec::new();
    for pem in chain {
        certs.extend(ders(pem).map_err(|e| TrustError::Unavailable(format!("the CA's chain: {e}")))?);
    }
    let Some(mut top) = certs.last().cloned() else {
        return Err(TrustError::Unavailable("the CA's chain has no certificate".into()));
    };
    // Each step uses another certificate of the file, so the walk ends.
    for _ in 0..=configured.len() {
        if is_self_signed(&top) {
            if !configured.is_empty() && !configured.contains(&top) {
                return Err(TrustError::NoRoot(format!(
                    "the CA's chain ends at the root {} (SHA-256 {}), which vault.root_file does not hold: \
                     fix the file or remove vault.root_file",
                    subject_of(&top),
                    Root::from_der(&top).fingerprint()
                )));
            }
            return Ok(Root::from_der(&top));
        }
        let Some(next) = configured.iter().find(|c| issued_by(&top, c)) else {
            let hint = if configured.is_empty() {
                "set vault.root_file to the PEM of the root it chains to"
            } else {
                "vault.root_file holds no certificate that signed it"
            };
            return Err(TrustError::NoRoot(format!(
                "the CA's chain stops at {}, issued by {}: {hint}",
                subject_of(&top),
                issuer_of(&top)
            )));
        };
        top = next.clone();
    }
    Err(TrustError::NoRoot("vault.root_file leads to no self-signed root".into()))
}

/// The certificates of a root file, read once at start. A file vacme cannot use is an error at
/// start, not a surprise later.
pub(crate) fn read_root_file(path: &Path) -> Result<Vec<Vec<u8>>, TrustError> {
    let bad = |why: String| TrustError::File { path: path.to_owned(), why };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let certs = ders(&text).map_err(bad)?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    if !certs.iter().any(|c| is_self_signed(c)) {
        return Err(bad("no self-signed root in it".into()));
    }
    Ok(certs)
}

/// The root the server serves: known (and checked against the CA's chain) or why not.
#[derive(Debug)]
pub struct TrustAnchor {
    configured: Vec<Vec<u8>>,
    current: RwLock<Result<Arc<Root>, String>>,
}

impl TrustAnchor {
    /// Reads `root_file` now; the root itself is known after the first `refresh`.
    pub fn new(root_file: Option<&Path>) -> Result<Self, TrustError> {
        let configured = root_file.map(read_root_file).transpose()?.unwrap_or_default();
        Ok(Self { configured, current: RwLock::new(Err("not read from the CA yet".into())) })
    }

    /// The root, or why it is not known. Never calls the CA.
    pub fn current(&self) -> Result<Arc<Root>, String> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks the CA for its chain and works out the root again. While the CA cannot be asked,
    /// the root already known stays; a chain that no longer leads to a root vacme can name
    /// (the CA moved to a new root, a stale root file) stops it being served.
    pub async fn refresh(&self, issuer: &dyn Issuer) -> Result<Arc<Root>, TrustError> {
        let found = match issuer.chain().await {
            Ok(chain) => root_of(&chain, &self.configured),
            Err(e) => Err(TrustError::Unavailable(e.to_string())),
        };
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        match found {
            Ok(root) => {
                if current.as_ref().is_ok_and(|old| **old != root) {
                    tracing::warn!(sha256 = %root.fingerprint(), subject = %root.subject(), "the CA's root changed");
                }
                let root = Arc::new(root);
                *current = Ok(root.clone());
                Ok(root)
            }
            Err(e @ TrustError::Unavailable(_)) if current.is_ok() => Err(e),
            Err(e) => {
                *current = Err(e.to_string());
                Err(e)
            }
        }
    }

    /// Refreshes every `every` (every few seconds while the root is not known) until `stop`.
    pub async fn keep_fresh(self: Arc<Self>, issuer: Arc<dyn Issuer>, every: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let wait = if self.current().is_ok() { every } else { RETRY_UNKNOWN.min(every) };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = self.refresh(&*issuer).await {
                tracing::warn!(error = %e, "cannot read the root certificate; /roots.pem keeps its last answer");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    use super::*;

    struct Ca {
        pem: String,
        der: Vec<u8>,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    fn params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    fn root(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let p = params(cn);
        let cert = p.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), der: cert.der().to_vec(), issuer: rcgen::Issuer::new(p, key) }
    }

    fn intermediate(cn: &str, parent: &Ca) -> Ca {
        let key = KeyPair::generate().unwrap();
        let p = params(cn);
        let cert = p.signed_by(&key, &parent.issuer).unwrap();
        Ca { pem: cert.pem(), der: cert.der().to_vec(), issuer: rcgen::Issuer::new(p, key) }
    }

    /// `root_of` with the PEMs of `chain` and the DERs of `file`.
    fn find(chain: &[&Ca], file: &[&Ca]) -> Result<Root, TrustError> {
        let pems: Vec<String> = chain.iter().map(|c| c.pem.clone()).collect();
        let ders: Vec<Vec<u8>> = file.iter().map(|c| c.der.clone()).collect();
        root_of(&pems, &ders)
    }

    #[test]
    fn the_top_of_a_chain_with_its_root_is_the_root() {
        let r = root("Lab Root CA");
        let i = intermediate("Lab Intermediate CA", &r);
        let found = find(&[&i, &r], &[]).unwrap();
        assert_eq!(found.pem(), r.pem.replace("\r\n", "\n"));
        assert_eq!(found.subject(), "CN=Lab Root CA");
        // The local CA: a chain of one self-signed certificate.
        assert_eq!(find(&[&r], &[]).unwrap(), found);
    }

    #[test]
    fn fingerprints_are_sha256_of_the_der() {
        let r = root("Lab Root CA");
        let found = find(&[&r], &[]).unwrap();
        let want: String =
            ring::digest::digest(&ring::digest::SHA256, &r.der).as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(found.fingerprint_hex(), want);
        assert_eq!(found.fingerprint().len(), 32 * 3 - 1);
        assert_eq!(found.fingerprint().replace(':', "").to_lowercase(), want);
    }

    #[test]
    fn a_chain_that_stops_at_the_intermediate_needs_the_root_file_it_verifies_to() {
        let r = root("Lab Root CA");
        let i = intermediate("Lab Intermediate CA", &r);
        let e = find(&[&i], &[]).unwrap_err();
        assert!(matches!(e, TrustError::NoRoot(_)) && e.to_string().contains("vault.root_file"), "{e}");
        assert_eq!(find(&[&i], &[&r]).unwrap().pem(), find(&[&r], &[]).unwrap().pem());
        // A root with the same name but another key did not sign the intermediate.
        let impostor = root("Lab Root CA");
        let e = find(&[&i], &[&impostor]).unwrap_err();
        assert!(e.to_string().contains("holds no certificate that signed it"), "{e}");
        // A file with the intermediate and the root (a full bundle) works too.
        assert!(find(&[&i], &[&i, &r]).is_ok());
    }

    #[test]
    fn a_root_file_that_disagrees_with_the_chains_own_root_is_refused() {
        let r = root("Lab Root CA");
        let other = root("Other Root CA");
        let i = intermediate("Lab Intermediate CA", &r);
        let e = find(&[&i, &r], &[&other]).unwrap_err();
        assert!(e.to_string().contains("does not hold"), "{e}");
        assert!(find(&[&i, &r], &[&r]).is_ok());
    }

    #[test]
    fn a_two_level_chain_walks_through_the_file() {
        let r = root("Root");
        let i1 = intermediate("Policy CA", &r);
        let i2 = intermediate("Issuing CA", &i1);
        let found = find(&[&i2], &[&r, &i1]).unwrap();
        assert_eq!(found.subject(), "CN=Root");
    }

    #[test]
    fn root_files_must_hold_a_self_signed_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = root("Lab Root CA");
        let i = intermediate("Lab Intermediate CA", &r);
        let cases: [(&str, &str, &str); 4] = [
            ("missing.pem", "", "No such file"),
            ("empty.pem", "not a certificate\n", "no certificate"),
            ("int.pem", &i.pem, "no self-signed root"),
            ("garbage.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "unreadable"),
        ];
        for (name, body, want) in cases {
            let path = dir.path().join(name);
            if !body.is_empty() {
                std::fs::write(&path, body).unwrap();
            }
            let e = read_root_file(&path).unwrap_err();
            assert!(e.to_string().contains(want), "{name}: {e}");
        }
        let path = dir.path().join("root.pem");
        std::fs::write(&path, format!("{}{}", i.pem, r.pem)).unwrap();
        assert_eq!(read_root_file(&path).unwrap(), vec![i.der.clone(), r.der.clone()]);
    }

    #[test]
    fn unreadable_chains_are_unavailable_not_a_panic() {
        for chain in [
            vec![],
            vec!["junk".to_owned()],
            vec!["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned()],
        ] {
            let e = root_of(&chain, &[]).unwrap_err();
            assert!(matches!(e, TrustError::Unavailable(_)), "{chain:?}: {e}");
        }
    }

    #[derive(Debug)]
    struct Chain(std::sync::Mutex<Result<Vec<String>, ()>>);

    #[async_trait::async_trait]
    impl Issuer for Chain {
        async fn sign(
            &self,
            _: &crate::issuer::IssuanceRequest,
        ) -> Result<crate::issuer::Issued, crate::issuer::IssueError> {
            Err(crate::issuer::IssueError::unavailable("test"))
        }
        async fn revoke(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), crate::issuer::IssueError> {
            Ok(())
        }
        async fn chain(&self) -> Result<Vec<String>, crate::issuer::IssueError> {
            self.0.lock().unwrap().clone().map_err(|()| crate::issuer::IssueError::unavailable("down"))
        }
        async fn health(&self) -> Result<(), crate::issuer::IssueError> {
            Ok(())
        }
        fn name(&self) -> &'static str {
            "test"
        }
    }

    #[tokio::test]
    async fn an_outage_keeps_the_known_root_and_a_new_chain_replaces_it() {
        let (r1, r2) = (root("One"), root("Two"));
        let ca = Chain(std::sync::Mutex::new(Err(())));
        let anchor = TrustAnchor::new(None).unwrap();
        assert!(anchor.current().is_err());
        assert!(matches!(anchor.refresh(&ca).await, Err(TrustError::Unavailable(_))));
        assert!(anchor.current().unwrap_err().contains("down"));
        *ca.0.lock().unwrap() = Ok(vec![r1.pem.clone()]);
        let first = anchor.refresh(&ca).await.unwrap();
        *ca.0.lock().unwrap() = Err(());
        assert!(anchor.refresh(&ca).await.is_err());
        assert_eq!(anchor.current().unwrap(), first, "an outage keeps the root");
        *ca.0.lock().unwrap() = Ok(vec![r2.pem.clone()]);
        assert_eq!(anchor.refresh(&ca).await.unwrap().subject(), "CN=Two");
        // A chain that stops at an intermediate nobody configured: not served any more.
        *ca.0.lock().unwrap() = Ok(vec![intermediate("Int", &r2).pem]);
        assert!(matches!(anchor.refresh(&ca).await, Err(TrustError::NoRoot(_))));
        assert!(anchor.current().is_err());
    }
}
