//! tls-alpn-01 (RFC 8737): connect with ALPN `acme-tls/1` and SNI = the name (RFC 8738 §6: the
//! reverse-DNS name for an address), and require a certificate whose only SAN is the identifier
//! and whose critical id-pe-acmeIdentifier extension holds SHA-256 of the key authorization.
//! The certificate is self-signed by design, so it is judged by those fields, not by a CA.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use x509_parser::{extensions::GeneralName, oid_registry::Oid, prelude::FromDer, prelude::X509Certificate};

use super::{Resolver, TargetPolicy, is_localhost_name};
use crate::acme::{Identifier, Problem, ProblemType};

/// RFC 8737 §3: the ALPN protocol of the challenge.
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// RFC 8737 §6.1: id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31.
const ACME_IDENTIFIER_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 31];

/// Accepts any certificate chain (the check is on the certificate's fields, after the
/// handshake) but still verifies the handshake signature, so the peer holds the key. webpki
/// cannot do that part: it refuses the critical acmeIdentifier extension, so the signature is
/// checked with ring against the certificate's public key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

fn verify_handshake(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    use ring::signature as sig;
    let bad = |why: &str| rustls::Error::General(format!("handshake signature: {why}"));
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|_| bad("certificate does not parse"))?;
    let key = &parsed.public_key().subject_public_key.data;
    let alg: &dyn sig::VerificationAlgorithm = match dss.scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 => &sig::ECDSA_P256_SHA256_ASN1,
        SignatureScheme::ECDSA_NISTP384_SHA384 => &sig::ECDSA_P384_SHA384_ASN1,
        SignatureScheme::ED25519 => &sig::ED25519,
        SignatureScheme::RSA_PSS_SHA256 => &sig::RSA_PSS_2048_8192_SHA256,
        SignatureScheme::RSA_PSS_SHA384 => &sig::RSA_PSS_2048_8192_SHA384,
        SignatureScheme::RSA_PSS_SHA512 => &sig::RSA_PSS_2048_8192_SHA512,
        SignatureScheme::RSA_PKCS1_SHA256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        SignatureScheme::RSA_PKCS1_SHA384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        SignatureScheme::RSA_PKCS1_SHA512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        _ => return Err(bad("unsupported scheme")),
    };
    sig::UnparsedPublicKey::new(alg, key.as_ref())
        .verify(message, dss.signature())
        .map(|()| HandshakeSignatureValid::assertion())
        .map_err(|_| bad("does not verify"))
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // RFC 8446 §4.2.3: no PKCS#1 v1.5 signatures in TLS 1.3 handshakes.
        if matches!(
            dss.scheme,
            SignatureScheme::RSA_PKCS1_SHA256 | SignatureScheme::RSA_PKCS1_SHA384 | SignatureScheme::RSA_PKCS1_SHA512
        ) {
            return Err(rustls::Error::General("handshake signature: scheme not allowed in TLS 1.3".into()));
        }
        verify_handshake(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The tls-alpn-01 checker.
pub struct TlsAlpn01 {
    connector: TlsConnector,
    resolver: Arc<Resolver>,
    targets: Arc<TargetPolicy>,
    /// `targets` plus loopback, for names under `.localhost` only (RFC 6761 §6.3).
    localhost_targets: TargetPolicy,
    port: u16,
    timeout: Duration,
}

impl std::fmt::Debug for TlsAlpn01 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAlpn01").field("port", &self.port).finish_non_exhaustive()
    }
}

impl TlsAlpn01 {
    pub fn new(resolver: Arc<Resolver>, targets: Arc<TargetPolicy>, port: u16, timeout: Duration) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algs = provider.signature_verification_algorithms;
        let mut config = ClientConfig::builder_with_provider(provider.clone() as Arc<CryptoProvider>)
            .with_safe_default_protocol_versions() // TLS 1.2 and 1.3 (RFC 8737 §4: at least 1.2)
            .map(|b| {
                b.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(algs))).with_no_client_auth()
            })
            .unwrap_or_else(|_| {
                // Invariant: the ring provider supports the default versions; fall back to TLS 1.3 only.
                ClientConfig::builder_with_provider(provider as Arc<CryptoProvider>)
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map(|b| {
                        b.dangerous()
                            .with_custom_certificate_verifier(Arc::new(AnyCertificate(algs)))
                            .with_no_client_auth()
                    })
                    .unwrap_or_else(|_| unreachable_config())
            });
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        let localhost_targets = targets.with_loopback();
        Self { connector: TlsConnector::from(Arc::new(config)), resolver, targets, localhost_targets, port, timeout }
    }

    pub async fn validate(&self, id: &Identifier, key_authorization: &str) -> Result<(), Problem> {
        let (sni, ips) = match id {
            Identifier::Dns(name) => (name.clone(), self.resolver.lookup_ips(name).await?),
            Identifier::Ip(ip) => (reverse_name(*ip), vec![*ip]),
        };
        let conn = |why: String| Problem::new(ProblemType::Connection, why);
        let targets = match id {
            Identifier::Dns(name) if is_localhost_name(name) => &self.localhost_targets,
            _ => &*self.targets,
        };
        let ip = ips.iter().copied().find(|ip| targets.check(*ip).is_ok()).ok_or_else(|| {
            let why = ips.first().and_then(|ip| targets.check(*ip).err());
            conn(why.unwrap_or_else(|| "no address to connect to".into()))
        })?;
        let addr = SocketAddr::new(ip, self.port);
        let server_name =
            ServerName::try_from(sni.clone()).map_err(|_| conn(format!("{sni} is not a valid TLS server name")))?;
        let handshake = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| conn(format!("{addr}: {e}")))?;
            self.connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| Problem::new(ProblemType::Tls, format!("{addr}: TLS handshake failed: {e}")))
        };
        let tls =
            tokio::time::timeout(self.timeout, handshake).await.map_err(|_| conn(format!("{addr}: timed out")))??;
        let (_, session) = tls.get_ref();
        if session.alpn_protocol() != Some(ACME_TLS_ALPN) {
            return Err(Problem::unauthorized(format!("{addr} did not negotiate the acme-tls/1 protocol")));
        }
        let cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| Problem::unauthorized(format!("{addr} sent no certificate")))?;
        check_certificate(cert, id, key_authorization).map_err(|why| Problem::unauthorized(format!("{addr}: {why}")))
    }
}

#[cold]
fn unreachable_config() -> ClientConfig {
    // Invariant: ring supports TLS 1.3, so this is never reached; an empty config fails closed.
    ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
}

/// RFC 8738 §6: the SNI for an address is its reverse-DNS name.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// RFC 8737 §3: exactly one SAN, the identifier; a critical acmeIdentifier extension whose
/// value is the DER OCTET STRING of SHA-256(key authorization).
fn check_certificate(der: &CertificateDer<'_>, id: &Identifier, key_authorization: &str) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| "the certificate does not parse".to_owned())?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        _ => return Err("the certificate has no subjectAltName".into()),
    };
    let matches = match (names.as_slice(), id) {
        ([GeneralName::DNSName(n)], Identifier::Dns(want)) => n.eq_ignore_ascii_case(want),
        ([GeneralName::IPAddress(b)], Identifier::Ip(IpAddr::V4(want))) => *b == want.octets(),
        ([GeneralName::IPAddress(b)], Identifier::Ip(IpAddr::V6(want))) => *b == want.octets(),
        _ => false,
    };
    if !matches {
        return Err(format!("the certificate must have exactly one SAN, {}", id.value()));
    }
    let oid = Oid::from(ACME_IDENTIFIER_OID).map_err(|_| "internal OID error".to_owned())?;
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid == oid)
        .ok_or_else(|| "the certificate has no acmeIdentifier extension".to_owned())?;
    if !ext.critical {
        return Err("the acmeIdentifier extension is not critical".into());
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let mut expected = vec![0x04, 0x20];
    expected.extend_from_slice(digest.as_ref());
    if ext.value != expected.as_slice() {
        return Err("the acmeIdentifier extension does not hold SHA-256 of the key authorization".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, CustomExtension, KeyPair};
    use tokio_rustls::TlsAcceptor;

    use super::*;

    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    /// A tls-alpn-01 responder that presents a certificate for `names` with `digest_of` hashed
    /// into the extension, speaking `alpn`.
    async fn responder(names: Vec<String>, digest_of: &str, alpn: &[u8]) -> u16 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, digest_of.as_bytes());
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
        let cert = params.self_signed(&key).unwrap();
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        // with_single_cert would refuse the critical acmeIdentifier extension, so the
        // certificate is served through a resolver that checks nothing.
        let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).unwrap();
        let certified = Arc::new(rustls::sign::CertifiedKey::new(vec![cert.der().clone()], signing));
        let mut cfg =
            rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(Arc::new(Fixed(certified)));
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    }
                });
            }
        });
        port
    }

    fn checker(port: u16) -> TlsAlpn01 {
        let resolver = Arc::new(Resolver::new(&["127.0.0.1:1".parse().unwrap()], Duration::from_secs(2)).unwrap());
        let targets = Arc::new(TargetPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]));
        TlsAlpn01::new(resolver, targets, port, Duration::from_secs(3))
    }

    #[tokio::test]
    async fn accepts_the_right_certificate_and_explains_the_wrong_ones() {
        let name = Identifier::Dns("nas.localhost".into());
        let good = responder(vec!["nas.localhost".into()], "tok.thumb", ACME_TLS_ALPN).await;
        checker(good).validate(&name, "tok.thumb").await.unwrap();

        let p = checker(good).validate(&name, "other.thumb").await.unwrap_err();
        assert!(p.detail.contains("SHA-256 of the key authorization"), "{}", p.detail);

        let extra = responder(vec!["nas.localhost".into(), "evil.localhost".into()], "tok.thumb", ACME_TLS_ALPN).await;
        let p = checker(extra).validate(&name, "tok.thumb").await.unwrap_err();
        assert!(p.detail.contains("exactly one SAN"), "{}", p.detail);

        let no_alpn = responder(vec!["nas.localhost".into()], "tok.thumb", b"h2").await;
        let p = checker(no_alpn).validate(&name, "tok.thumb").await.unwrap_err();
        assert!(matches!(p.kind.code(), "tls" | "unauthorized"), "{p:?}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap().port();
        drop(listener);
        assert_eq!(checker(closed).validate(&name, "tok.thumb").await.unwrap_err().kind.code(), "connection");
    }

    #[tokio::test]
    async fn with_nothing_listed_only_localhost_names_reach_loopback() {
        let resolver = Arc::new(Resolver::new(&["127.0.0.1:1".parse().unwrap()], Duration::from_secs(2)).unwrap());
        let port = responder(vec!["nas.localhost".into()], "tok.thumb", ACME_TLS_ALPN).await;
        let c = TlsAlpn01::new(resolver, Arc::new(TargetPolicy::new(vec![])), port, Duration::from_secs(3));
        c.validate(&Identifier::Dns("nas.localhost".into()), "tok.thumb").await.unwrap();
        let p = c.validate(&Identifier::Ip("127.0.0.1".parse().unwrap()), "tok.thumb").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert!(p.detail.contains("loopback addresses are not in validation.allowed_targets"), "{}", p.detail);
    }

    #[tokio::test]
    async fn ip_identifiers_use_the_reverse_name_and_an_ip_san() {
        assert_eq!(reverse_name("10.0.0.5".parse().unwrap()), "5.0.0.10.in-addr.arpa");
        assert!(reverse_name("2001:db8::1".parse().unwrap()).ends_with(".8.b.d.0.1.0.0.2.ip6.arpa"));
        let port = responder(vec!["127.0.0.1".into()], "tok.thumb", ACME_TLS_ALPN).await;
        checker(port).validate(&Identifier::Ip("127.0.0.1".parse().unwrap()), "tok.thumb").await.unwrap();
    }
}
