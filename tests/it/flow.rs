//! Whole flows, as a client sees them.

use instant_acme::{Account, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy};
use serde_json::json;
use x509_parser::{pem::Pem, prelude::*};

use crate::env::{Raw, TestEnv, TestKey};

/// Leaf SANs, and that each certificate is signed by the next and the last by `root_pem`.
fn check_chain(chain_pem: &str, root_pem: &[u8]) -> Vec<String> {
    let pems: Vec<Pem> = Pem::iter_from_buffer(chain_pem.as_bytes()).map(|p| p.unwrap()).collect();
    let root = Pem::iter_from_buffer(root_pem).next().unwrap().unwrap();
    let mut certs: Vec<X509Certificate> = pems.iter().map(|p| p.parse_x509().unwrap()).collect();
    let root = root.parse_x509().unwrap();
    certs.push(root);
    for pair in certs.windows(2) {
        pair[0].verify_signature(Some(pair[1].public_key())).expect("each certificate is signed by the next");
        assert_eq!(pair[0].issuer(), pair[1].subject());
    }
    let leaf = &certs[0];
    assert!(leaf.validity().is_valid());
    let san = leaf.subject_alternative_name().unwrap().expect("leaf has SANs");
    let mut names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn instant_acme_gets_a_certificate_from_the_local_ca() {
    let env = TestEnv::start().await;
    let (account, _) = env.account().await;
    let (_, chain) = env.issue(&account, &["b.localhost", "A.localhost"]).await;
    let root = std::fs::read(&env.ca).unwrap();
    assert_eq!(check_chain(&chain, &root), vec!["a.localhost", "b.localhost"]);
    let c = env.counts().await;
    assert_eq!((c.accounts, c.orders, c.authorizations, c.certificates), (1, 1, 2, 1));
}

#[tokio::test]
async fn order_survives_restarts_between_new_order_and_finalize() {
    let env = TestEnv::start().await;
    let ca_before = std::fs::read(&env.ca).unwrap();
    let (account, creds) = env.account().await;
    let creds = serde_json::to_value(&creds).unwrap();
    let ids = [Identifier::Dns("nas.localhost".into())];
    let order_url = account.new_order(&NewOrder::new(&ids)).await.unwrap().url().to_owned();

    // Restart 1: between newOrder and the challenge.
    let env = env.restart().await;
    assert_eq!(std::fs::read(&env.ca).unwrap(), ca_before, "the local CA is kept, not regenerated");
    let restore = |env: &TestEnv| {
        let creds = serde_json::from_value(creds.clone()).unwrap();
        Account::builder_with_root(&env.ca).unwrap().from_credentials(creds)
    };
    let account = restore(&env).await.unwrap();
    let mut order = account.order(order_url.clone()).await.unwrap();
    env.answer_all(&mut order).await;
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);

    // Restart 2: between ready and finalize; the same account key still works.
    let env = env.restart().await;
    let account = restore(&env).await.unwrap();
    let mut order = account.order(order_url).await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Ready);
    order.finalize().await.unwrap();
    let chain = order.poll_certificate(&RetryPolicy::default()).await.unwrap();
    assert_eq!(check_chain(&chain, &ca_before), vec!["nas.localhost"]);
    let c = env.counts().await;
    assert_eq!((c.accounts, c.orders, c.certificates), (1, 1, 1));
}

#[tokio::test]
async fn failed_http01_makes_challenge_authz_and_order_invalid_with_a_problem() {
    let env = TestEnv::start().await;
    let (account, _) = env.account().await;
    let ids = [Identifier::Dns("nothing.localhost".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let mut chall = authz.challenge(ChallengeType::Http01).unwrap();
        // Nothing set on the responder: it answers 404.
        chall.set_ready().await.unwrap();
    }
    // instant-acme reports an invalid order as the order's problem document.
    let err = match order.poll_ready(&RetryPolicy::default()).await {
        Err(instant_acme::Error::Api(p)) => p,
        other => panic!("expected the order's problem, got {other:?}"),
    };
    assert_eq!(order.state().status, OrderStatus::Invalid);
    assert_eq!(err.r#type.as_deref(), Some("urn:ietf:params:acme:error:unauthorized"));
    assert!(err.detail.as_deref().unwrap().contains("404"), "{:?}", err.detail);
    assert_eq!(err.subproblems.len(), 1, "one subproblem names the identifier");
    // The challenge itself carries the problem too.
    let mut authzs = order.authorizations();
    let mut authz = authzs.next().await.unwrap().unwrap();
    let chall = authz.challenge(ChallengeType::Http01).unwrap();
    assert_eq!(chall.status, instant_acme::ChallengeStatus::Invalid);
    assert!(chall.error.as_ref().unwrap().detail.as_deref().unwrap().contains("404"));
    assert_eq!(env.counts().await.certificates, 0);
}

#[tokio::test]
async fn directory_and_nonce_headers() {
    let env = TestEnv::start().await;
    let http = env.http();
    let res = http.get(&env.directory).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("replay-nonce"));
    let dir: serde_json::Value = res.json().await.unwrap();
    assert_eq!(dir["newNonce"], env.url("/acme/new-nonce"));
    assert_eq!(dir["newOrder"], env.url("/acme/new-order"));
    assert_eq!(dir["revokeCert"], env.url("/acme/revoke-cert"));
    assert_eq!(dir["keyChange"], env.url("/acme/key-change"));
    assert_eq!(dir["renewalInfo"], env.url("/acme/renewal-info"));
    assert_eq!(dir["meta"]["externalAccountRequired"], false);
    assert!(dir["meta"].get("profiles").is_none(), "no profiles configured, none advertised");

    let head = http.head(env.url("/acme/new-nonce")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["cache-control"], "no-store");
    let link = head.headers()["link"].to_str().unwrap();
    assert_eq!(link, format!("<{}>;rel=\"index\"", env.directory));
    let get = http.get(env.url("/acme/new-nonce")).send().await.unwrap();
    assert_eq!(get.status(), 204);
    let (a, b) = (head.headers()["replay-nonce"].clone(), get.headers()["replay-nonce"].clone());
    assert_ne!(a, b);
}

#[tokio::test]
async fn accounts_new_existing_update_deactivate_and_orders_list() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = TestKey::new();
    let new_account = env.url("/acme/new-account");

    let r = raw.signed(&key, None, &new_account, Some(&json!({"onlyReturnExisting": true}))).await;
    r.assert_problem(400, "accountDoesNotExist");
    assert_eq!(env.counts().await.accounts, 0);

    let kid = raw.new_account(&key).await;
    let again = raw.signed(&key, None, &new_account, Some(&json!({}))).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.headers["location"].to_str().unwrap(), kid);

    let r = raw.signed(&key, Some(&kid), &kid, Some(&json!({"contact": ["mailto:new@lab.example"]}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["contact"], json!(["mailto:new@lab.example"]));
    let r = raw.signed(&key, Some(&kid), &kid, Some(&json!({"contact": ["tel:+100"]}))).await;
    r.assert_problem(400, "unsupportedContact");

    let new_order = env.url("/acme/new-order");
    let o = raw
        .signed(&key, Some(&kid), &new_order, Some(&json!({"identifiers": [{"type": "dns", "value": "x.localhost"}]})))
        .await;
    assert_eq!(o.status, 201, "{}", o.body);
    let order_url = o.headers["location"].to_str().unwrap().to_owned();
    let list = raw.signed(&key, Some(&kid), &format!("{kid}/orders"), None).await;
    assert_eq!(list.body["orders"], json!([order_url]));

    let r = raw.signed(&key, Some(&kid), &kid, Some(&json!({"status": "deactivated"}))).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("deactivated")));
    let r = raw.signed(&key, Some(&kid), &order_url, None).await;
    r.assert_problem(401, "unauthorized");
    let r = raw.signed(&key, None, &new_account, Some(&json!({}))).await;
    r.assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn not_before_and_not_after_are_accepted_and_clamped() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = TestKey::new();
    let kid = raw.new_account(&key).await;
    let far = ::time::OffsetDateTime::now_utc() + ::time::Duration::days(3650);
    let payload = json!({
        "identifiers": [{"type": "dns", "value": "cm.localhost"}],
        "notAfter": far.format(&::time::format_description::well_known::Rfc3339).unwrap(),
    });
    let r = raw.signed(&key, Some(&kid), &env.url("/acme/new-order"), Some(&payload)).await;
    assert_eq!(r.status, 201, "cert-manager sends notAfter; it must not be rejected: {}", r.body);
}
