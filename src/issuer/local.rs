//! An on-disk CA: the zero-config issuer, and the source of vacme's own serving certificate.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer as RcIssuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use super::{IssuanceRequest, IssueError, Issued, Issuer};
use crate::acme::Identifier;

/// Why the local CA could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum LocalCaError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} exists without its partner; restore both files or remove both")]
    HalfPresent(PathBuf),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("no randomness available")]
    Random,
    #[error("{0} does not hold the key of ca.pem")]
    KeyMismatch(PathBuf),
}

impl From<LocalCaError> for IssueError {
    /// A request rcgen cannot sign (an unsupported key) is a refusal; a broken disk or RNG is not
    /// the client's fault, so the worker retries.
    fn from(e: LocalCaError) -> Self {
        match e {
            LocalCaError::Rcgen(_) => IssueError::Refused(e.to_string()),
            _ => IssueError::Unavailable(Box::new(e)),
        }
    }
}

/// A CA whose key lives in `<dir>/ca.key` (0600) and certificate in `<dir>/ca.pem`.
pub struct LocalCa {
    dir: PathBuf,
    ca_pem: String,
    issuer: RcIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalCaError + '_ {
    move |source| LocalCaError::Io { path: path.to_owned(), source }
}

fn random_serial() -> Result<SerialNumber, LocalCaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| LocalCaError::Random)?;
    bytes[0] &= 0x7f; // positive (RFC 5280 §4.1.2.2)
    bytes[0] |= 0x01; // and exactly 16 bytes long
    Ok(SerialNumber::from_slice(&bytes))
}

impl LocalCa {
    /// Loads the CA from `dir`, or creates it there on first start. Never regenerates an existing CA.
    pub fn load_or_create(dir: &Path) -> Result<Self, LocalCaError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let ca_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
                let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
                let key = KeyPair::from_pem(&key_pem)?;
                // A swapped key file would sign certificates that chain to nothing: refuse to start.
                let bad = |e: String| rcgen::Error::X509(format!("{}: {e}", cert_path.display()));
                let (_, block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
                let cert = block.parse_x509().map_err(|e| bad(e.to_string()))?;
                if cert.public_key().raw != key.subject_public_key_info().as_slice() {
                    return Err(LocalCaError::KeyMismatch(key_path));
                }
                let issuer = RcIssuer::from_ca_cert_pem(&ca_pem, key)?;
                Ok(Self { dir: dir.to_owned(), ca_pem, issuer })
            }
            (true, false) => Err(LocalCaError::HalfPresent(cert_path)),
            (false, true) => Err(LocalCaError::HalfPresent(key_path)),
            (false, false) => Self::create(dir, &cert_path, &key_path),
        }
    }

    fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<Self, LocalCaError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        set_mode(dir, 0o700).map_err(io(dir))?;
        let key = KeyPair::generate()?;
        let mut suffix = [0u8; 4];
        SystemRandom::new().fill(&mut suffix).map_err(|_| LocalCaError::Random)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("vacme local CA {}", hex(&suffix)));
        dn.push(DnType::OrganizationName, "vacme");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        let ca_pem = cert.pem();
        // Key first, 0600 from the start; the certificate is what marks the CA as complete.
        crate::secret::write_private(key_path, key.serialize_pem().as_bytes()).map_err(io(key_path))?;
        std::fs::write(cert_path, &ca_pem).map_err(io(cert_path))?;
        let issuer = RcIssuer::new(params, key);
        Ok(Self { dir: dir.to_owned(), ca_pem, issuer })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Path of the CA certificate clients must trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// vacme's own HTTPS certificate for `names` (DNS names or IPs), 90 days:
    /// (chain PEM leaf + CA, PKCS#8 key PEM).
    pub fn issue_serving(&self, names: &[String]) -> Result<(String, String), LocalCaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        let mut dn = DistinguishedName::new();
        // RFC 5280 ub-common-name is 64; the SANs are what clients check anyway.
        dn.push(DnType::CommonName, names.first().filter(|n| n.len() <= 64).map_or("vacme", String::as_str));
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(90);
        params.serial_number = Some(random_serial()?);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((format!("{}{}", cert.pem(), self.ca_pem), key.serialize_pem()))
    }

    /// Signs a checked request: fresh extensions (nothing copied from the CSR), SANs exactly the
    /// identifiers, notBefore in [now - 1 min, now], and notAfter at most `max` after notBefore.
    fn sign(&self, req: &IssuanceRequest, default_ttl: Duration, max_ttl: Duration) -> Result<Issued, LocalCaError> {
        let now = OffsetDateTime::now_utc();
        let earliest = now - time::Duration::minutes(1);
        // Whole seconds, so `Issued` says exactly what the certificate says (X.509 times have no fraction).
        let not_before = whole_seconds(req.not_before.map_or(earliest, |t| t.clamp(earliest, now)));
        let latest = not_before + max_ttl;
        let not_after = whole_seconds(req.not_after.filter(|t| *t > now).map_or(now + default_ttl, |t| t.min(latest)));
        let spki = SubjectPublicKeyInfo::from_der(&req.spki_der)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = req
            .identifiers
            .iter()
            .map(|id| match id {
                Identifier::Dns(n) => san(n),
                Identifier::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
        let mut dn = DistinguishedName::new();
        if !req.common_name.is_empty() {
            dn.push(DnType::CommonName, req.common_name.clone());
        }
        params.distinguished_name = dn;
        // No basicConstraints at all: rcgen's explicit cA=FALSE is a DER DEFAULT value, which
        // strict parsers (Python's cryptography, so certbot) refuse.
        params.is_ca = IsCa::NoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        // RFC 5280 §4.2.1.3: keyEncipherment only means something for RSA key transport (the
        // TLS 1.2 RSA key exchange); an EC key only signs.
        params.key_usages = if is_rsa(&req.spki_der) {
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = random_serial()?;
        let serial_text: String = crate::acme::Serial::from_bytes(&serial.to_bytes()).into();
        params.serial_number = Some(serial);
        let cert = params.signed_by(&spki, &self.issuer)?;
        Ok(Issued {
            serial: serial_text,
            leaf_pem: cert.pem(),
            // The CA is the root, but certbot refuses a chain of one certificate, so it is sent.
            chain_pem: vec![self.ca_pem.clone()],
            not_before,
            not_after,
        })
    }
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t - time::Duration::nanoseconds(i64::from(t.nanosecond()))
}

fn is_rsa(spki_der: &[u8]) -> bool {
    use x509_parser::{oid_registry::OID_PKCS1_RSAENCRYPTION, prelude::FromDer, x509::SubjectPublicKeyInfo};
    SubjectPublicKeyInfo::from_der(spki_der).is_ok_and(|(_, spki)| spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION)
}

fn san(name: &str) -> Result<SanType, rcgen::Error> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => Ok(SanType::DnsName(name.try_into()?)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// The local CA as an `Issuer`.
#[derive(Debug)]
pub struct LocalIssuer {
    ca: Arc<LocalCa>,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl LocalIssuer {
    /// Certificates last `default_ttl` unless the order asks for a `notAfter`, which is capped at `max_ttl`.
    pub fn new(ca: Arc<LocalCa>, default_ttl: Duration, max_ttl: Duration) -> Self {
        Self { ca, default_ttl, max_ttl }
    }
}

#[async_trait::async_trait]
impl Issuer for LocalIssuer {
    async fn sign(&self, req: &IssuanceRequest) -> Result<Issued, IssueError> {
        Ok(self.ca.sign(req, self.default_ttl, self.max_ttl)?)
    }

    async fn revoke(&self, _serial: &str, _leaf_pem: &str, _mount: Option<&str>) -> Result<(), IssueError> {
        // The local CA publishes no CRL; revocation is recorded in vacme's store only.
        Ok(())
    }

    async fn chain(&self) -> Result<Vec<String>, IssueError> {
        // Same as the chain sent with each certificate.
        Ok(vec![self.ca.ca_pem().to_owned()])
    }

    async fn health(&self) -> Result<(), IssueError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    use x509_parser::{extensions::GeneralName, pem::Pem};

    use super::*;
    use crate::issuer::KeyPolicy;

    fn parse(pem: &str) -> Pem {
        Pem::iter_from_buffer(pem.as_bytes()).next().unwrap().unwrap()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let a = LocalCa::load_or_create(&dir).unwrap();
        let on_disk = std::fs::read(dir.join("ca.pem")).unwrap();
        let b = LocalCa::load_or_create(&dir).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem());
        assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), on_disk, "never rewritten");
        assert_eq!(a.ca_path(), dir.join("ca.pem"));
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir.join("ca.key")), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }

        let pem = parse(a.ca_pem());
        let ca = pem.parse_x509().unwrap();
        assert!(ca.is_ca());
        ca.verify_signature(None).unwrap();
        let cn = ca.subject().iter_common_name().next().unwrap().as_str().unwrap().to_owned();
        assert!(cn.starts_with("vacme local CA "), "{cn}");
        let years = (ca.validity().not_after.to_datetime() - OffsetDateTime::now_utc()).whole_days() / 365;
        assert_eq!(years, 9, "ten years, less the day in progress");

        // A second CA elsewhere gets a different name, so two labs' roots are told apart.
        let other = LocalCa::load_or_create(&tmp.path().join("other")).unwrap();
        assert_ne!(other.ca_pem(), a.ca_pem());
    }

    #[test]
    fn half_or_mismatched_ca_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
        LocalCa::load_or_create(&one).unwrap();
        LocalCa::load_or_create(&two).unwrap();
        std::fs::copy(two.join("ca.key"), one.join("ca.key")).unwrap();
        assert!(matches!(LocalCa::load_or_create(&one), Err(LocalCaError::KeyMismatch(_))));
        std::fs::remove_file(one.join("ca.key")).unwrap();
        assert!(matches!(LocalCa::load_or_create(&one), Err(LocalCaError::HalfPresent(_))));
        std::fs::remove_file(two.join("ca.pem")).unwrap();
        assert!(matches!(LocalCa::load_or_create(&two), Err(LocalCaError::HalfPresent(_))));
        assert!(!two.join("ca.pem").exists(), "a lone key is never paired with a new certificate");
    }

    fn request(
        names: &[&str],
        key: &KeyPair,
        nb: Option<OffsetDateTime>,
        na: Option<OffsetDateTime>,
    ) -> IssuanceRequest {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = DistinguishedName::new();
        // Asks for more than a TLS certificate; the local CA must not copy anything from the CSR.
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let der = p.serialize_request(key).unwrap().der().to_vec();
        let ids: Vec<Identifier> =
            names.iter().map(|n| n.parse().map_or_else(|_| Identifier::Dns((*n).into()), Identifier::Ip)).collect();
        IssuanceRequest::new(&ids, &der, &KeyPolicy::default(), nb, na).unwrap()
    }

    fn issuer(ca: &Arc<LocalCa>) -> LocalIssuer {
        LocalIssuer::new(ca.clone(), Duration::from_secs(90 * 86400), Duration::from_secs(365 * 86400))
    }

    #[tokio::test]
    async fn signs_exactly_the_identifiers() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(LocalCa::load_or_create(dir.path()).unwrap());
        let key = KeyPair::generate().unwrap();
        let issued = issuer(&ca).sign(&request(&["a.lab.test", "10.1.2.3"], &key, None, None)).await.unwrap();

        let (leaf_pem, ca_pem) = (parse(&issued.leaf_pem), parse(ca.ca_pem()));
        let (leaf, ca_cert) = (leaf_pem.parse_x509().unwrap(), ca_pem.parse_x509().unwrap());
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(leaf.issuer(), ca_cert.subject());
        assert_eq!(leaf.public_key().raw, key.subject_public_key_info().as_slice(), "the CSR's key");
        let sans = &leaf.subject_alternative_name().unwrap().unwrap().value.general_names;
        assert_eq!(sans, &[GeneralName::DNSName("a.lab.test"), GeneralName::IPAddress(&[10, 1, 2, 3])]);
        assert_eq!(leaf.subject().iter_common_name().next().unwrap().as_str().unwrap(), "a.lab.test");
        assert!(!leaf.is_ca());
        assert!(leaf.basic_constraints().unwrap().is_none(), "no explicit cA=FALSE (a DER default certbot refuses)");
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth && !eku.code_signing);
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_encipherment() && !ku.key_cert_sign(), "EC: sign only");
        let aki =
            leaf.extensions().iter().any(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER);
        assert!(aki, "authorityKeyIdentifier");

        assert_eq!(issued.serial.len(), 32, "16 random bytes");
        assert!(leaf.raw_serial()[0] < 0x80, "positive");
        assert_eq!(leaf.raw_serial_as_string().replace(':', ""), issued.serial);
        assert_eq!(issued.chain_pem, vec![ca.ca_pem().to_owned()]);
        assert_eq!(issued.full_chain_pem().matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(leaf.validity().not_after.to_datetime(), issued.not_after);
        assert_eq!(issuer(&ca).chain().await.unwrap(), vec![ca.ca_pem().to_owned()]);
    }

    #[tokio::test]
    async fn rsa_keys_get_key_encipherment() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(LocalCa::load_or_create(dir.path()).unwrap());
        let key = KeyPair::from_pem(include_str!("testdata/rsa2048.pem")).unwrap();
        let issued = issuer(&ca).sign(&request(&["10.1.2.3"], &key, None, None)).await.unwrap();
        let pem = parse(&issued.leaf_pem);
        let leaf = pem.parse_x509().unwrap();
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment());
        assert_eq!(leaf.subject().iter_common_name().count(), 0, "IP only: no CN");
        assert_eq!(leaf.public_key().raw, key.subject_public_key_info().as_slice());
    }

    #[tokio::test]
    async fn validity_is_clamped_never_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(LocalCa::load_or_create(dir.path()).unwrap());
        let key = KeyPair::generate().unwrap();
        let now = OffsetDateTime::now_utc();
        // Certificates carry whole seconds: allow for the truncation.
        let days = |t: OffsetDateTime| (t - now + time::Duration::seconds(1)).whole_days();
        let sign = |nb, na| {
            let (issuer, req) = (issuer(&ca), request(&["a.lab.test"], &key, nb, na));
            async move { issuer.sign(&req).await.unwrap() }
        };

        let default = sign(None, None).await;
        assert_eq!(days(default.not_after), 90);
        let minutes_back = (now - default.not_before).whole_seconds();
        assert!((55..=65).contains(&minutes_back), "notBefore now - 1 min: {minutes_back}s");

        let far = sign(None, Some(now + time::Duration::days(5000))).await;
        assert!((364..=365).contains(&days(far.not_after)), "capped at max_ttl");

        let week = sign(Some(now - time::Duration::days(30)), Some(now + time::Duration::days(7))).await;
        assert_eq!(days(week.not_after), 7, "a shorter notAfter is honoured");
        assert!(now - week.not_before <= time::Duration::minutes(2), "no backdating beyond a minute");

        let future = sign(Some(now + time::Duration::days(3)), None).await;
        assert!(future.not_before <= OffsetDateTime::now_utc(), "a future notBefore starts now");

        let past = sign(None, Some(now - time::Duration::days(1))).await;
        assert_eq!(days(past.not_after), 90, "a notAfter in the past falls back to the default");

        let pem = parse(&far.leaf_pem);
        let leaf = pem.parse_x509().unwrap();
        assert_eq!(leaf.validity().not_after.to_datetime(), far.not_after);
        assert_eq!(leaf.validity().not_before.to_datetime(), far.not_before);
    }

    #[tokio::test]
    async fn serving_certificate_works_with_rustls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let (chain, key) = ca.issue_serving(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(certs.len(), 2, "leaf, then the CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(
            (89..=90).contains(&(leaf.validity().not_after.to_datetime() - OffsetDateTime::now_utc()).whole_days())
        );
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        let server = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();

        // A client that trusts only ca.pem completes a handshake for both names.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.ca_pem().as_bytes()).unwrap()).unwrap();
        let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let (acceptor, connector) =
            (tokio_rustls::TlsAcceptor::from(Arc::new(server)), tokio_rustls::TlsConnector::from(Arc::new(client)));
        for name in ["localhost", "127.0.0.1"] {
            let (c, s) = tokio::io::duplex(16 * 1024);
            let server = tokio::spawn({
                let acceptor = acceptor.clone();
                async move { acceptor.accept(s).await.map(|_| ()) }
            });
            let client = connector.connect(ServerName::try_from(name).unwrap(), c).await.unwrap();
            server.await.unwrap().unwrap();
            drop(client);
        }
    }
}
