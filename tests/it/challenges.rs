//! dns-01 and wildcards, through a DNS server the test runs on loopback.

use std::{net::Ipv4Addr, time::Duration};

use instant_acme::{ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy};

use crate::{dns::TestDns, env::TestEnv};

async fn env_with_dns(dns: &TestDns) -> TestEnv {
    let ns = dns.addr().to_string();
    TestEnv::start_with(move |c| {
        c.policy.allowed_domains = vec!["lab.test".into()];
        c.policy.allow_wildcards = true;
        c.validation.nameservers = vec![ns];
        c.validation.retry_window_secs = 10;
    })
    .await
}

#[tokio::test]
async fn wildcard_and_base_by_dns01_with_a_record_published_late() {
    let dns = TestDns::with_zone("lab.test", Ipv4Addr::LOCALHOST).await;
    let env = env_with_dns(&dns).await;
    let (account, _) = env.account().await;
    let ids = [Identifier::Dns("*.lab.test".into()), Identifier::Dns("lab.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    let mut values = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.unwrap();
            let wildcard = authz.wildcard;
            let offered: Vec<_> = authz.challenges.iter().map(|c| c.r#type.clone()).collect();
            if wildcard {
                assert_eq!(offered, vec![ChallengeType::Dns01], "a wildcard is proven by dns-01 only");
            } else {
                assert!(offered.contains(&ChallengeType::Http01) && offered.contains(&ChallengeType::Dns01));
            }
            let mut chall = authz.challenge(ChallengeType::Dns01).unwrap();
            values.push(chall.key_authorization().dns_value());
            // Answered before the record exists: the first attempt fails and is retried.
            chall.set_ready().await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Pending, "still retrying, not failed");
    // Both authorizations share _acme-challenge.lab.test: two TXT values at one name.
    for v in &values {
        dns.add_txt("_acme-challenge.lab.test", v);
    }
    let status = order.poll_ready(&RetryPolicy::default().timeout(Duration::from_secs(20))).await.unwrap();
    assert_eq!(status, OrderStatus::Ready);
    order.finalize().await.unwrap();
    let chain = order.poll_certificate(&RetryPolicy::default()).await.unwrap();
    let pem = x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes()).next().unwrap().unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut sans: Vec<String> =
        cert.subject_alternative_name().unwrap().unwrap().value.general_names.iter().map(|n| format!("{n}")).collect();
    sans.sort();
    assert_eq!(sans, vec!["DNSName(*.lab.test)", "DNSName(lab.test)"]);
}

#[tokio::test]
async fn wrong_txt_record_fails_with_what_was_found() {
    let dns = TestDns::with_zone("lab.test", Ipv4Addr::LOCALHOST).await;
    let env = TestEnv::start_with({
        let ns = dns.addr().to_string();
        move |c| {
            c.policy.allowed_domains = vec!["lab.test".into()];
            c.validation.nameservers = vec![ns];
            c.validation.retry_window_secs = 2;
        }
    })
    .await;
    dns.add_txt("_acme-challenge.nas.lab.test", "not-the-right-value");
    let (account, _) = env.account().await;
    let ids = [Identifier::Dns("nas.lab.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        authz.challenge(ChallengeType::Dns01).unwrap().set_ready().await.unwrap();
    }
    let err = match order.poll_ready(&RetryPolicy::default().timeout(Duration::from_secs(20))).await {
        Err(instant_acme::Error::Api(p)) => p,
        other => panic!("expected the order's problem, got {other:?}"),
    };
    let detail = err.detail.unwrap();
    assert!(detail.contains("Incorrect TXT record \"not-the-right-value\""), "{detail}");
    assert!(detail.contains("_acme-challenge.nas.lab.test"), "{detail}");
}

#[tokio::test]
async fn dns01_follows_a_cname_to_a_delegated_name() {
    let dns = TestDns::with_zone("lab.test", Ipv4Addr::LOCALHOST).await;
    // acme-dns style: the owner points _acme-challenge at a name another system updates.
    dns.set_cname("_acme-challenge.nas.lab.test", "f00d.acme-dns.lab.test");
    let env = env_with_dns(&dns).await;
    let (account, _) = env.account().await;
    let ids = [Identifier::Dns("nas.lab.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let mut chall = authz.challenge(ChallengeType::Dns01).unwrap();
        dns.add_txt("f00d.acme-dns.lab.test", &chall.key_authorization().dns_value());
        chall.set_ready().await.unwrap();
    }
    let status = order.poll_ready(&RetryPolicy::default().timeout(Duration::from_secs(20))).await.unwrap();
    assert_eq!(status, OrderStatus::Ready);
}

#[tokio::test]
async fn ip_identifier_gets_a_certificate_with_an_ip_san() {
    let env = TestEnv::start_with(|c| c.policy.allowed_ips = vec!["127.0.0.0/8".into()]).await;
    let (account, _) = env.account().await;
    let ids = [Identifier::Ip("127.0.0.1".parse().unwrap())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let offered: Vec<_> = authz.challenges.iter().map(|c| c.r#type.clone()).collect();
        assert!(!offered.contains(&ChallengeType::Dns01), "dns-01 cannot prove an address (RFC 8738)");
        let mut chall = authz.challenge(ChallengeType::Http01).unwrap();
        env.responder.set(&chall.token, chall.key_authorization().as_str());
        chall.set_ready().await.unwrap();
    }
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
    order.finalize().await.unwrap();
    let chain = order.poll_certificate(&RetryPolicy::default()).await.unwrap();
    let pem = x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes()).next().unwrap().unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names.len(), 1);
    assert!(matches!(san.value.general_names[0], x509_parser::extensions::GeneralName::IPAddress([127, 0, 0, 1])));
}

#[tokio::test]
async fn challenges_never_reach_the_metadata_address() {
    let env = TestEnv::start_with(|c| {
        c.policy.allowed_ips = vec!["169.254.169.254".into()];
        c.validation.retry_window_secs = 1;
    })
    .await;
    let (account, _) = env.account().await;
    let ids = [Identifier::Ip("169.254.169.254".parse().unwrap())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        authz.challenge(ChallengeType::Http01).unwrap().set_ready().await.unwrap();
    }
    let err = match order.poll_ready(&RetryPolicy::default()).await {
        Err(instant_acme::Error::Api(p)) => p,
        other => panic!("expected the order's problem, got {other:?}"),
    };
    assert_eq!(err.r#type.as_deref(), Some("urn:ietf:params:acme:error:connection"));
    assert!(err.detail.unwrap().contains("cloud metadata"));
}

/// Serves one self-signed tls-alpn-01 certificate on `listener` (RFC 8737 §3).
fn serve_tls_alpn(listener: tokio::net::TcpListener, name: &str, digest: &[u8]) {
    #[derive(Debug)]
    struct Fixed(std::sync::Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).unwrap();
    let certified = std::sync::Arc::new(rustls::sign::CertifiedKey::new(vec![cert.der().clone()], signing));
    let mut cfg =
        rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(std::sync::Arc::new(Fixed(certified)));
    cfg.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
}

#[tokio::test]
async fn tls_alpn01_through_the_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let env = TestEnv::start_with(move |c| c.validation.tls_alpn01_port = port).await;
    let (account, _) = env.account().await;
    let ids = [Identifier::Dns("alpn.localhost".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let mut chall = authz.challenge(ChallengeType::TlsAlpn01).expect("tls-alpn-01 offered");
        serve_tls_alpn(listener, "alpn.localhost", chall.key_authorization().digest().as_ref());
        chall.set_ready().await.unwrap();
    }
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
    order.finalize().await.unwrap();
    order.poll_certificate(&RetryPolicy::default()).await.unwrap();
}

/// One http-01 order for `name` under CAA; Ok(()) when it got ready, else the order's problem.
async fn order_under_caa(env: &TestEnv, name: &str) -> Result<(), instant_acme::Problem> {
    let (account, _) = env.account().await;
    let ids = [Identifier::Dns(name.into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let mut chall = authz.challenge(ChallengeType::Http01).unwrap();
        env.responder.set(&chall.token, chall.key_authorization().as_str());
        chall.set_ready().await.unwrap();
    }
    match order.poll_ready(&RetryPolicy::default().timeout(Duration::from_secs(20))).await {
        Ok(OrderStatus::Ready) => Ok(()),
        Err(instant_acme::Error::Api(p)) => Err(p),
        other => panic!("{other:?}"),
    }
}

async fn caa_env(dns: &TestDns) -> TestEnv {
    let ns = dns.addr().to_string();
    TestEnv::start_with(move |c| {
        c.policy.allowed_domains = vec!["lab.test".into()];
        c.policy.caa_identities = vec!["vacme.test".into()];
        c.validation.nameservers = vec![ns];
    })
    .await
}

#[tokio::test]
async fn caa_forbids_and_allows_by_issuer_account_and_method() {
    let dns = TestDns::with_zone("lab.test", Ipv4Addr::LOCALHOST).await;
    // The parent's record governs every name below it (RFC 8659 §3).
    dns.add_caa("lab.test", 0, "issue", "other-ca.example");
    dns.add_caa("ok.lab.test", 0, "issue", "vacme.test; validationmethods=http-01,dns-01");
    dns.add_caa("dns-only.lab.test", 0, "issue", "vacme.test; validationmethods=dns-01");
    dns.add_caa("acct.lab.test", 0, "issue", "vacme.test; accounturi=https://localhost/acme/acct/someone-else");
    dns.add_caa("critical.lab.test", 128, "tbs", "unknown");
    let env = caa_env(&dns).await;
    let dir: serde_json::Value = env.http().get(&env.directory).send().await.unwrap().json().await.unwrap();
    assert_eq!(dir["meta"]["caaIdentities"], serde_json::json!(["vacme.test"]));

    let p = order_under_caa(&env, "nas.lab.test").await.unwrap_err();
    assert_eq!(p.r#type.as_deref(), Some("urn:ietf:params:acme:error:caa"));
    assert!(p.detail.as_deref().unwrap().contains("CAA record for lab.test"), "{p:?}");
    order_under_caa(&env, "ok.lab.test").await.unwrap();
    for name in ["dns-only.lab.test", "acct.lab.test", "critical.lab.test"] {
        let p = order_under_caa(&env, name).await.unwrap_err();
        assert_eq!(p.r#type.as_deref(), Some("urn:ietf:params:acme:error:caa"), "{name}: {p:?}");
    }
}

#[tokio::test]
async fn caa_accounturi_of_the_ordering_account_allows() {
    let dns = TestDns::with_zone("lab.test", Ipv4Addr::LOCALHOST).await;
    let env = caa_env(&dns).await;
    let (account, _) = env.account().await;
    let uri = env.url(&format!("/acme/acct/{}", account.id().rsplit('/').next().unwrap()));
    dns.add_caa("mine.lab.test", 0, "issue", &format!("vacme.test; accounturi={uri}"));
    let ids = [Identifier::Dns("mine.lab.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let mut chall = authz.challenge(ChallengeType::Http01).unwrap();
        env.responder.set(&chall.token, chall.key_authorization().as_str());
        chall.set_ready().await.unwrap();
    }
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
}
