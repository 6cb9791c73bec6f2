//! Smaller protocol edges: POST-as-GET to newNonce, and a dns identifier with a trailing dot.

use serde_json::json;

use crate::env::{Raw, TestEnv, TestKey};

#[tokio::test]
async fn post_as_get_to_new_nonce_answers_200_with_a_fresh_nonce() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = TestKey::new();
    let kid = raw.new_account(&key).await;
    let url = env.url("/acme/new-nonce");

    let sent = raw.nonce().await;
    let protected = json!({ "alg": "ES256", "nonce": sent, "url": url, "kid": kid });
    let r = raw.post(&url, &key.sign(&protected, None)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["cache-control"], "no-store");
    let fresh = r.headers["replay-nonce"].to_str().unwrap().to_owned();
    assert_ne!(fresh, sent, "a new nonce, not the one just used");
    // The nonce it gave works for the next request ...
    let protected = json!({ "alg": "ES256", "nonce": fresh, "url": url, "kid": kid });
    assert_eq!(raw.post(&url, &key.sign(&protected, None)).await.status, 200);
    // ... and it is checked like any POST-as-GET: the used nonce is refused, as is no account.
    raw.post(&url, &key.sign(&protected, None)).await.assert_problem(400, "badNonce");
    let stranger = TestKey::new();
    raw.signed(&stranger, None, &url, None).await.assert_problem(400, "malformed");
    raw.post_bytes(&url, "application/jose+json", b"{}".to_vec()).await.assert_problem(400, "malformed");
}

#[tokio::test]
async fn a_dns_identifier_ending_in_a_dot_is_rejected_not_rewritten() {
    let env = TestEnv::start_with(|c| c.policy.allowed_domains = vec!["lab.test".into()]).await;
    let raw = Raw::new(&env);
    let key = TestKey::new();
    let kid = raw.new_account(&key).await;
    let new_order = env.url("/acme/new-order");
    let before = env.counts().await;
    for ids in [
        json!([{"type": "dns", "value": "a.lab.test."}]),
        json!([{"type": "dns", "value": "a.lab.test"}, {"type": "dns", "value": "b.lab.test."}]),
    ] {
        let r = raw.signed(&key, Some(&kid), &new_order, Some(&json!({ "identifiers": ids }))).await;
        r.assert_problem(400, "rejectedIdentifier");
        assert!(r.body["detail"].as_str().unwrap().contains("ends with a dot"), "{}", r.body);
    }
    assert_eq!(env.counts().await, before, "nothing stored for a refused order");
    // Without the dot the same name is ordered as sent.
    let r = raw
        .signed(&key, Some(&kid), &new_order, Some(&json!({"identifiers": [{"type": "dns", "value": "a.lab.test"}]})))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["identifiers"], json!([{"type": "dns", "value": "a.lab.test"}]));
}
