//! DESIGN.md's "What bad input gets": each bad request gets its problem type and status, and the
//! store is unchanged afterwards.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::env::{Raw, TestEnv, TestKey};

/// One account with one pending order; returns (key, kid, order URL, finalize URL).
async fn setup(env: &TestEnv, raw: &Raw) -> (TestKey, String, String, String) {
    let key = TestKey::new();
    let kid = raw.new_account(&key).await;
    let payload = json!({"identifiers": [{"type": "dns", "value": "a.localhost"}]});
    let o = raw.signed(&key, Some(&kid), &env.url("/acme/new-order"), Some(&payload)).await;
    assert_eq!(o.status, 201);
    let order = o.headers["location"].to_str().unwrap().to_owned();
    let finalize = o.body["finalize"].as_str().unwrap().to_owned();
    (key, kid, order, finalize)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn malformed_bodies_and_headers() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let (key, kid, _order, _) = setup(&env, &raw).await;
    let url = env.url("/acme/new-order");
    let before = env.counts().await;
    let payload = json!({"identifiers": [{"type": "dns", "value": "b.localhost"}]});

    // Not JSON, not UTF-8, a JSON array, compact serialization.
    for body in [&b"hello"[..], &[0xff, 0xfe, 0x00][..], b"[]", b"eyJhbGciOiJFUzI1NiJ9.e30.c2ln"] {
        raw.post_bytes(&url, "application/jose+json", body.to_vec()).await.assert_problem(400, "malformed");
    }
    // Wrong content type.
    let good = key.sign(&json!({"alg": "ES256", "nonce": raw.nonce().await, "url": url, "kid": kid}), Some(&payload));
    raw.post_bytes(&url, "application/json", good.to_string().into_bytes()).await.assert_problem(400, "malformed");

    // An unprotected header, and the general serialization.
    let mut with_header =
        key.sign(&json!({"alg": "ES256", "nonce": raw.nonce().await, "url": url, "kid": kid}), Some(&payload));
    with_header["header"] = json!({"kid": kid});
    raw.post(&url, &with_header).await.assert_problem(400, "malformed");
    let signed = key.sign(&json!({"alg": "ES256", "nonce": raw.nonce().await, "url": url, "kid": kid}), Some(&payload));
    let general = json!({"payload": signed["payload"], "signatures": [{"protected": signed["protected"], "signature": signed["signature"]}]});
    raw.post(&url, &general).await.assert_problem(400, "malformed");

    // Padding in base64url.
    let mut padded =
        key.sign(&json!({"alg": "ES256", "nonce": raw.nonce().await, "url": url, "kid": kid}), Some(&payload));
    padded["signature"] = json!(format!("{}==", padded["signature"].as_str().unwrap()));
    raw.post(&url, &padded).await.assert_problem(400, "malformed");

    // Both jwk and kid.
    let both = key.sign(
        &json!({"alg": "ES256", "nonce": raw.nonce().await, "url": url, "kid": kid, "jwk": key.jwk()}),
        Some(&payload),
    );
    raw.post(&url, &both).await.assert_problem(400, "malformed");

    // A signature by another key.
    let other = TestKey::new();
    let forged =
        other.sign(&json!({"alg": "ES256", "nonce": raw.nonce().await, "url": url, "kid": kid}), Some(&payload));
    raw.post(&url, &forged).await.assert_problem(400, "malformed");

    // Private key material in the jwk.
    let mut jwk = key.jwk();
    jwk["d"] = json!("AAAA");
    let r = raw
        .post(
            &env.url("/acme/new-account"),
            &key.sign(
                &json!({"alg": "ES256", "nonce": raw.nonce().await, "url": env.url("/acme/new-account"), "jwk": jwk}),
                Some(&json!({})),
            ),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    assert_eq!(env.counts().await, before, "bad requests change nothing");
}

#[tokio::test]
async fn nonces_algorithms_urls_and_accounts() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let (key, kid, order, _) = setup(&env, &raw).await;
    let url = env.url("/acme/new-order");
    let before = env.counts().await;
    let payload = json!({"identifiers": [{"type": "dns", "value": "b.localhost"}]});

    // Unknown nonce, missing nonce, reused nonce: badNonce with the text acme.sh looks for.
    let r = raw
        .post(
            &url,
            &key.sign(&json!({"alg": "ES256", "nonce": "bm90LWlzc3VlZA", "url": url, "kid": kid}), Some(&payload)),
        )
        .await;
    r.assert_problem(400, "badNonce");
    assert_eq!(r.body["detail"], "JWS has an invalid anti-replay nonce");
    raw.post(&url, &key.sign(&json!({"alg": "ES256", "url": url, "kid": kid}), Some(&payload)))
        .await
        .assert_problem(400, "badNonce");
    let nonce = raw.nonce().await;
    let read_order = key.sign(&json!({"alg": "ES256", "nonce": nonce, "url": order, "kid": kid}), None);
    assert_eq!(raw.post(&order, &read_order).await.status, 200);
    // Replayed, even at another endpoint.
    let replay = key.sign(&json!({"alg": "ES256", "nonce": nonce, "url": url, "kid": kid}), Some(&payload));
    raw.post(&url, &replay).await.assert_problem(400, "badNonce");

    // Algorithms: none, HS256 and RS384 are refused with the list of accepted ones.
    for alg in ["none", "HS256", "RS384"] {
        let protected = json!({"alg": alg, "nonce": raw.nonce().await, "url": url, "kid": kid});
        let jws = json!({"protected": b64(&protected), "payload": b64(&payload), "signature": ""});
        let r = raw.post(&url, &jws).await;
        r.assert_problem(400, "badSignatureAlgorithm");
        assert!(r.body["algorithms"].as_array().unwrap().contains(&json!("ES256")), "{}", r.body);
    }
    // ES384 claimed for a P-256 key.
    let mismatch =
        key.sign(&json!({"alg": "ES384", "nonce": raw.nonce().await, "url": url, "kid": kid}), Some(&payload));
    raw.post(&url, &mismatch).await.assert_problem(400, "badSignatureAlgorithm");

    // The signed url is not the request URL.
    let r = raw
        .post(
            &url,
            &key.sign(&json!({"alg": "ES256", "nonce": raw.nonce().await, "url": order, "kid": kid}), Some(&payload)),
        )
        .await;
    r.assert_problem(401, "unauthorized");

    // kid of no account, kid of another server.
    let ghost = env.url("/acme/acct/doesnotexist");
    raw.signed(&key, Some(&ghost), &url, Some(&payload)).await.assert_problem(400, "accountDoesNotExist");
    raw.signed(&key, Some("https://evil.example/acme/acct/1"), &url, Some(&payload))
        .await
        .assert_problem(400, "accountDoesNotExist");

    // jwk where kid is needed.
    raw.signed(&key, None, &url, Some(&payload)).await.assert_problem(400, "malformed");

    assert_eq!(env.counts().await, before, "bad requests change nothing");
}

#[tokio::test]
async fn identifiers_outside_policy_and_invalid_names() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let (key, kid, _, _) = setup(&env, &raw).await;
    let url = env.url("/acme/new-order");
    let before = env.counts().await;
    let cases = [
        (json!([{"type": "dns", "value": "nas.lab.example"}]), "rejectedIdentifier"),
        (
            json!([{"type": "dns", "value": "ok.localhost"}, {"type": "dns", "value": "evil.example"}]),
            "rejectedIdentifier",
        ),
        (json!([{"type": "dns", "value": "bad_name.localhost"}]), "rejectedIdentifier"),
        (json!([{"type": "dns", "value": "*.localhost"}]), "rejectedIdentifier"),
        (json!([{"type": "dns", "value": "a..localhost"}]), "rejectedIdentifier"),
        (json!([{"type": "email", "value": "a@localhost"}]), "unsupportedIdentifier"),
        (json!([]), "malformed"),
    ];
    for (ids, kind) in cases {
        let r = raw.signed(&key, Some(&kid), &url, Some(&json!({"identifiers": ids}))).await;
        r.assert_problem(400, kind);
    }
    let r = raw
        .signed(
            &key,
            Some(&kid),
            &url,
            Some(
                &json!({"identifiers": [{"type": "dns", "value": "x.example"}, {"type": "dns", "value": "y.example"}]}),
            ),
        )
        .await;
    assert_eq!(r.body["subproblems"].as_array().unwrap().len(), 2, "one subproblem per refused identifier");
    assert_eq!(r.body["subproblems"][0]["identifier"], json!({"type": "dns", "value": "x.example"}));
    // A payload that isn't an order at all.
    raw.signed(&key, Some(&kid), &url, Some(&json!({"identifiers": "a.localhost"})))
        .await
        .assert_problem(400, "malformed");
    assert_eq!(env.counts().await, before);
}

#[tokio::test]
async fn other_accounts_objects_are_not_found() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let (_key, kid, order, _) = setup(&env, &raw).await;
    let mallory = TestKey::new();
    let mallory_kid = raw.new_account(&mallory).await;
    let before = env.counts().await;

    let r = raw.signed(&mallory, Some(&mallory_kid), &order, None).await;
    r.assert_problem(404, "malformed");
    assert!(r.body.get("identifiers").is_none(), "never the other account's data");
    let authz = env.state.store.order(order.rsplit('/').next().unwrap()).await.unwrap().unwrap().authz_ids[0].clone();
    let authz_url = env.url(&format!("/acme/authz/{authz}"));
    raw.signed(&mallory, Some(&mallory_kid), &authz_url, None).await.assert_problem(404, "malformed");
    let chall = env.state.store.authorization(&authz).await.unwrap().unwrap().challenges[0].id.clone();
    let chall_url = env.url(&format!("/acme/chall/{chall}"));
    raw.signed(&mallory, Some(&mallory_kid), &chall_url, Some(&json!({}))).await.assert_problem(404, "malformed");
    // Someone else's account URL and orders list.
    raw.signed(&mallory, Some(&mallory_kid), &kid, None).await.assert_problem(401, "unauthorized");
    raw.signed(&mallory, Some(&mallory_kid), &format!("{kid}/orders"), None).await.assert_problem(401, "unauthorized");
    assert_eq!(env.counts().await, before);
    let still = env.state.store.authorization(&authz).await.unwrap().unwrap();
    assert_eq!(still.challenges[0].status.as_str(), "pending", "mallory's POST did not start the challenge");
}

#[tokio::test]
async fn finalize_before_ready_and_with_a_bad_csr() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let (key, kid, order, finalize) = setup(&env, &raw).await;
    let csr_for = |names: &[&str]| {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let kp = rcgen::KeyPair::generate().unwrap();
        URL_SAFE_NO_PAD.encode(params.serialize_request(&kp).unwrap().der())
    };
    let r = raw.signed(&key, Some(&kid), &finalize, Some(&json!({"csr": csr_for(&["a.localhost"])}))).await;
    r.assert_problem(403, "orderNotReady");

    // Make it ready through the real validation path.
    let order_id = order.rsplit('/').next().unwrap().to_owned();
    let authz = env.state.store.order(&order_id).await.unwrap().unwrap().authz_ids[0].clone();
    let chall = env
        .state
        .store
        .authorization(&authz)
        .await
        .unwrap()
        .unwrap()
        .challenges
        .into_iter()
        .find(|c| c.kind == vacme::acme::types::ChallengeType::Http01)
        .unwrap();
    let thumb = env.state.store.account(kid.rsplit('/').next().unwrap()).await.unwrap().unwrap().thumbprint;
    env.responder.set(&chall.token, &format!("{}.{thumb}", chall.token));
    let r = raw
        .signed(&key, Some(&kid), &env.url(&format!("/acme/chall/{}", chall.id)), Some(&json!({"type": "http-01"})))
        .await;
    assert_eq!(r.status, 200, "leftover fields in a challenge POST mean 'respond': {}", r.body);
    for _ in 0..100 {
        if env.state.store.order(&order_id).await.unwrap().unwrap().status.as_str() == "ready" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let before = env.counts().await;
    for (csr, kind) in [
        (csr_for(&["a.localhost", "b.localhost"]), "badCSR"),
        (csr_for(&["b.localhost"]), "badCSR"),
        ("not base64 !!".to_owned(), "malformed"),
        (URL_SAFE_NO_PAD.encode(b"not a csr"), "badCSR"),
    ] {
        let r = raw.signed(&key, Some(&kid), &finalize, Some(&json!({"csr": csr}))).await;
        r.assert_problem(400, kind);
    }
    let o = env.state.store.order(&order_id).await.unwrap().unwrap();
    assert_eq!(o.status.as_str(), "ready", "a bad CSR leaves the order ready");
    assert_eq!(env.counts().await, before);

    // The right CSR still works, and a second finalize is orderNotReady.
    let r = raw.signed(&key, Some(&kid), &finalize, Some(&json!({"csr": csr_for(&["a.localhost"])}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "valid");
    let r = raw.signed(&key, Some(&kid), &finalize, Some(&json!({"csr": csr_for(&["a.localhost"])}))).await;
    r.assert_problem(403, "orderNotReady");
    assert_eq!(env.counts().await.certificates, 1);
}

#[tokio::test]
async fn oversized_bodies_wrong_methods_and_unknown_paths() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let before = env.counts().await;
    let big = vec![b'a'; 1024 * 1024];
    raw.post_bytes(&env.url("/acme/new-order"), "application/jose+json", big).await.assert_problem(413, "malformed");
    let http = env.http();
    let r = http.get(env.url("/acme/new-order")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = http.get(env.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(env.counts().await, before);
}

#[tokio::test]
async fn slow_clients_are_disconnected() {
    let env = TestEnv::start_with(|c| c.server.header_timeout_secs = 1).await;
    // A TCP connection that never starts the TLS handshake.
    let mut idle = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut idle, &mut buf))
            .await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the server closes the idle connection");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "closed after the header timeout, not held");
}
