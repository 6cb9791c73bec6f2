//! An on-disk CA: the zero-config issuer, and the source of vacme's own serving certificate.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer as RcIssuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use super::{IssuanceRequest, IssueError, Issued, Issuer, normalize_serial};
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
        write_private(key_path, key.serialize_pem().as_bytes()).map_err(io(key_path))?;
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
        dn.push(DnType::CommonName, names.first().cloned().unwrap_or_else(|| "vacme".into()));
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
    /// identifiers, validity clamped to [now - 1 min, now + max].
    fn sign(&self, req: &IssuanceRequest, default_ttl: Duration, max_ttl: Duration) -> Result<Issued, LocalCaError> {
        let now = OffsetDateTime::now_utc();
        let earliest = now - time::Duration::minutes(1);
        let latest = now + max_ttl;
        let not_before = req.not_before.map_or(earliest, |t| t.clamp(earliest, now));
        let not_after = req.not_after.filter(|t| *t > now).map_or(now + default_ttl, |t| t.min(latest));
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
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = random_serial()?;
        let serial_hex = hex(&serial.to_bytes());
        params.serial_number = Some(serial);
        let cert = params.signed_by(&spki, &self.issuer)?;
        Ok(Issued {
            serial: normalize_serial(&serial_hex),
            leaf_pem: cert.pem(),
            // The CA is the root, but certbot refuses a chain of one certificate, so it is sent.
            chain_pem: vec![self.ca_pem.clone()],
            not_before,
            not_after,
        })
    }
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

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The local CA as an `Issuer`.
#[derive(Debug)]
pub struct LocalIssuer {
    ca: Arc<LocalCa>,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl LocalIssuer {
    pub fn new(ca: Arc<LocalCa>, default_ttl: Duration, max_ttl: Duration) -> Self {
        Self { ca, default_ttl, max_ttl }
    }
}

#[async_trait::async_trait]
impl Issuer for LocalIssuer {
    async fn sign(&self, req: &IssuanceRequest) -> Result<Issued, IssueError> {
        self.ca.sign(req, self.default_ttl, self.max_ttl).map_err(|e| IssueError::Refused(e.to_string()))
    }

    async fn revoke(&self, _serial: &str) -> Result<(), IssueError> {
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
    use x509_parser::pem::Pem;

    use super::*;
    use crate::issuer::KeyPolicy;

    #[test]
    fn created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
        let b = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ca/ca.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_file(dir.path().join("ca/ca.key")).unwrap();
        assert!(matches!(LocalCa::load_or_create(&dir.path().join("ca")), Err(LocalCaError::HalfPresent(_))));
    }

    #[tokio::test]
    async fn signs_exactly_the_identifiers_and_clamps_validity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(LocalCa::load_or_create(dir.path()).unwrap());
        let issuer = LocalIssuer::new(ca.clone(), Duration::from_secs(90 * 86400), Duration::from_secs(365 * 86400));
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["a.lab.test".to_string(), "10.1.2.3".to_string()]).unwrap();
        p.distinguished_name = DistinguishedName::new();
        let der = p.serialize_request(&key).unwrap().der().to_vec();
        let ids = vec![Identifier::Dns("a.lab.test".into()), Identifier::Ip("10.1.2.3".parse().unwrap())];
        let far = OffsetDateTime::now_utc() + ::time::Duration::days(5000);
        let req = IssuanceRequest::new(&ids, &der, &KeyPolicy::default(), None, Some(far)).unwrap();
        let issued = issuer.sign(&req).await.unwrap();
        let leaf_pem = Pem::iter_from_buffer(issued.leaf_pem.as_bytes()).next().unwrap().unwrap();
        let leaf = leaf_pem.parse_x509().unwrap();
        let ca_pem = Pem::iter_from_buffer(ca.ca_pem().as_bytes()).next().unwrap().unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
        let sans = &leaf.subject_alternative_name().unwrap().unwrap().value.general_names;
        assert_eq!(sans.len(), 2);
        assert!(!leaf.is_ca());
        assert!(
            leaf.basic_constraints().unwrap().is_none(),
            "no explicit cA=FALSE (a DER default that certbot refuses)"
        );
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let days = (issued.not_after - OffsetDateTime::now_utc()).whole_days();
        assert!((364..=365).contains(&days), "clamped to max: {days}");
        assert_eq!(issued.serial.len(), 32);
        assert_eq!(leaf.raw_serial_as_string().replace(':', ""), issued.serial);
    }

    #[test]
    fn serving_certificate_loads_into_rustls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let (chain, key) = ca.issue_serving(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(certs.len(), 2);
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    }
}
