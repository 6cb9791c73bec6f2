//! vacme's own HTTPS certificate: reloaded from files when they change, and renewed from the
//! issuer at two thirds of its life, without a restart.

use std::{sync::Arc, time::Duration};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio_rustls::TlsConnector;
use vacme::config::TlsSource;

use crate::env::TestEnv;

/// The leaf vacme serves, fetched with a client that trusts `root_pem`; `None` if the handshake fails.
async fn served_leaf(env: &TestEnv, root_pem: &[u8]) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let tls =
        TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await.ok()?;
    tls.get_ref().1.peer_certificates().map(|c| c[0].to_vec())
}

fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_renewed_certificate_file_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    let (first, first_key) = self_signed();
    std::fs::write(&cert_file, &first).unwrap();
    std::fs::write(&key_file, &first_key).unwrap();
    let (c, k) = (cert_file.clone(), key_file.clone());
    let env = TestEnv::start_with(move |cfg| {
        cfg.tls.cert_file = Some(c);
        cfg.tls.key_file = Some(k);
        cfg.tls.reload_secs = 1;
    })
    .await;
    assert!(served_leaf(&env, first.as_bytes()).await.is_some(), "the first file is served");

    // Half a renewal (a new certificate, the old key) is not taken: the old pair stays.
    let (second, second_key) = self_signed();
    std::fs::write(&cert_file, &second).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(served_leaf(&env, first.as_bytes()).await.is_some(), "a mismatched pair keeps the old certificate");

    std::fs::write(&key_file, &second_key).unwrap();
    let mut served = false;
    for _ in 0..50 {
        if served_leaf(&env, second.as_bytes()).await.is_some() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the new certificate is served");
    assert!(served_leaf(&env, first.as_bytes()).await.is_none(), "the old one is not");
}

#[tokio::test]
async fn an_issuer_signed_certificate_is_renewed_at_two_thirds_of_its_life() {
    let env = TestEnv::start_with(|cfg| {
        cfg.tls.source = TlsSource::Issuer;
        cfg.tls.lifetime_secs = Some(6);
    })
    .await;
    let ca = std::fs::read(&env.ca).unwrap();
    let first = served_leaf(&env, &ca).await.expect("signed by the issuer (here the local CA)");
    let (_, leaf) = x509_parser::parse_x509_certificate(&first).unwrap();
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!(life <= 6 + 60, "the asked lifetime (plus the CA's backdating): {life}");
    let sans: Vec<String> =
        leaf.subject_alternative_name().unwrap().unwrap().value.general_names.iter().map(|n| format!("{n}")).collect();
    assert!(sans.contains(&"DNSName(localhost)".to_owned()), "{sans:?}");

    let mut renewed = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = served_leaf(&env, &ca).await.unwrap();
        if now != first {
            renewed = Some(now);
            break;
        }
    }
    let renewed = renewed.expect("renewed within 12 s of a 6 s certificate");
    let (_, next) = x509_parser::parse_x509_certificate(&renewed).unwrap();
    assert!(next.validity().not_after.timestamp() > leaf.validity().not_after.timestamp());
    // Requests keep working on the renewed certificate.
    assert_eq!(env.http().get(env.url("/directory")).send().await.unwrap().status(), 200);
}
