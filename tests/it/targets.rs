//! Where validation may connect: `validation.allowed_targets` is empty by default, so a name
//! that resolves to loopback is refused before any connection, unless the range is listed;
//! names under `.localhost` (RFC 6761) validate on loopback with nothing listed.

use std::{net::Ipv4Addr, time::Duration};

use instant_acme::{AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy};
use vacme::config::ValidationConfig;

use crate::{dns::TestDns, env::TestEnv};

/// vacme with `lab.test` resolving to 127.0.0.1 and `allowed_targets` as given.
async fn env(dns: &TestDns, allowed_targets: Vec<String>) -> TestEnv {
    let ns = dns.addr().to_string();
    TestEnv::start_with(move |c| {
        c.policy.allowed_domains = vec!["lab.test".into(), "localhost".into()];
        c.validation.nameservers = vec![ns];
        c.validation.allowed_targets = allowed_targets;
    })
    .await
}

/// Orders `name`, answers http-01 correctly, and waits for the order to settle.
async fn order_and_answer(
    env: &TestEnv,
    name: &str,
) -> (instant_acme::Order, Result<OrderStatus, instant_acme::Error>) {
    let (account, _) = env.account().await;
    let mut order = account.new_order(&NewOrder::new(&[Identifier::Dns(name.into())])).await.unwrap();
    env.answer_all(&mut order).await;
    let settled = order.poll_ready(&RetryPolicy::default().timeout(Duration::from_secs(20))).await;
    (order, settled)
}

#[tokio::test]
async fn a_name_on_loopback_is_refused_by_default_without_a_connection() {
    let dns = TestDns::with_zone("lab.test", Ipv4Addr::LOCALHOST).await;
    let env = env(&dns, ValidationConfig::default().allowed_targets).await;
    let (mut order, settled) = order_and_answer(&env, "nas.lab.test").await;
    let problem = match settled {
        Err(instant_acme::Error::Api(p)) => p,
        other => panic!("expected the order's problem, got {other:?}"),
    };
    let detail = problem.detail.unwrap_or_default();
    assert!(
        detail
            .contains("vacme does not connect to 127.0.0.1: loopback addresses are not in validation.allowed_targets"),
        "{detail}"
    );
    // The challenge says the same, as a connection problem.
    let mut authzs = order.authorizations();
    let authz = authzs.next().await.unwrap().unwrap();
    assert_eq!(authz.status, AuthorizationStatus::Invalid);
    let chall = authz.challenges.iter().find(|c| c.r#type == ChallengeType::Http01).unwrap();
    let error = chall.error.as_ref().expect("the failed challenge carries its problem");
    assert_eq!(error.r#type.as_deref(), Some("urn:ietf:params:acme:error:connection"), "{error:?}");
    assert_eq!(env.responder.connections(), 0, "the refusal came before any connection");
}

#[tokio::test]
async fn a_name_on_loopback_validates_when_loopback_is_listed() {
    let dns = TestDns::with_zone("lab.test", Ipv4Addr::LOCALHOST).await;
    let env = env(&dns, vec!["127.0.0.0/8".into()]).await;
    let (account, _) = env.account().await;
    let (_, chain) = env.issue(&account, &["nas.lab.test"]).await;
    assert!(chain.contains("BEGIN CERTIFICATE"));
    assert!(env.responder.connections() > 0, "validation fetched the file from the responder");
}

#[tokio::test]
async fn a_localhost_name_validates_on_loopback_by_default() {
    let dns = TestDns::with_zone("lab.test", Ipv4Addr::LOCALHOST).await;
    let env = env(&dns, ValidationConfig::default().allowed_targets).await;
    let (_, settled) = order_and_answer(&env, "host.localhost").await;
    assert_eq!(settled.unwrap(), OrderStatus::Ready);
    assert!(env.responder.connections() > 0, "validation fetched the file from the responder");
    assert!(ValidationConfig::default().allowed_targets.is_empty(), "nothing is listed by default");
}
