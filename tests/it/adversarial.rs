//! Requests an attacker (or a badly broken client) would send, beyond the bad input of
//! `bad_input.rs`: key confusion, weak or mismatched keys, misdirected signatures, dead and
//! unknown accounts, other accounts' objects, racing finalizations, hostile names and CSRs,
//! hostile bytes inside a well-formed JWS, and connection floods. Each test checks the answer
//! and that the store holds exactly what it held before.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    hmac,
    rand::SystemRandom,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
        RSA_PKCS1_SHA256, RsaKeyPair,
    },
};
use serde_json::{Value, json};
use x509_parser::{
    certification_request::X509CertificationRequest, extensions::GeneralName, pem::Pem, prelude::FromDer,
    public_key::PublicKey,
};

use crate::env::{Raw, Reply, TestEnv};

// ---- helpers ----

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The last path segment of a URL: the store ID of an account, order or authorization.
fn id_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// A P-256 key whose private half the test holds, to sign whatever bytes it likes.
struct Key {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl Key {
    fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Self { pair, pkcs8: pkcs8.as_ref().to_vec() }
    }

    /// The uncompressed point 04 || x || y.
    fn point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    fn jwk(&self) -> Value {
        let p = self.point();
        json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
    }

    /// The SubjectPublicKeyInfo DER (RFC 5480), as a CSR or certificate carries the key.
    fn spki_der(&self) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
            0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        der.extend_from_slice(self.point());
        der
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
    }

    /// A CSR for `names` (SAN only, empty subject, as instant-acme sends) signed by this key.
    fn csr(&self, names: &[&str]) -> Vec<u8> {
        self.csr_with(names, |_| {})
    }

    fn csr_with(&self, names: &[&str], tweak: impl FnOnce(&mut rcgen::CertificateParams)) -> Vec<u8> {
        let key = rcgen::KeyPair::try_from(self.pkcs8.as_slice()).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        tweak(&mut params);
        params.serialize_request(&key).unwrap().der().to_vec()
    }
}

/// A flattened JWS over exactly these protected-header and payload bytes (empty payload:
/// POST-as-GET), with the signature `sign` makes over the signing input.
fn jws(protected: &[u8], payload: &[u8], sign: impl FnOnce(&[u8]) -> Vec<u8>) -> Value {
    let (p, b) = (b64(protected), b64(payload));
    let sig = sign(format!("{p}.{b}").as_bytes());
    json!({"protected": p, "payload": b, "signature": b64(sig)})
}

/// A well-formed protected header: `alg`, a fresh nonce, `url`, and `kid` (or the jwk when `None`).
async fn header(raw: &Raw, key: &Key, alg: &str, kid: Option<&str>, url: &str) -> Value {
    let mut h = json!({"alg": alg, "nonce": raw.nonce().await, "url": url});
    match kid {
        Some(kid) => h["kid"] = json!(kid),
        None => h["jwk"] = key.jwk(),
    }
    h
}

/// Signs `payload` (`None`: POST-as-GET) as a correct client would, and posts it to `url`.
async fn post(raw: &Raw, key: &Key, kid: Option<&str>, url: &str, payload: Option<&Value>) -> Reply {
    let h = header(raw, key, "ES256", kid, url).await;
    let body = payload.map(|p| p.to_string()).unwrap_or_default();
    raw.post(url, &jws(h.to_string().as_bytes(), body.as_bytes(), |m| key.sign(m))).await
}

async fn new_account(env: &TestEnv, raw: &Raw, key: &Key) -> String {
    let r = post(raw, key, None, &env.url("/acme/new-account"), Some(&json!({"termsOfServiceAgreed": true}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.headers["location"].to_str().unwrap().to_owned()
}

fn dns_ids(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|n| json!({"type": "dns", "value": n})).collect())
}

async fn new_order(env: &TestEnv, raw: &Raw, key: &Key, kid: &str, names: &[&str]) -> Reply {
    post(raw, key, Some(kid), &env.url("/acme/new-order"), Some(&json!({"identifiers": dns_ids(names)}))).await
}

/// The order's status in the store.
async fn order_status(env: &TestEnv, order_url: &str) -> String {
    env.state.store.order(id_of(order_url)).await.unwrap().unwrap().status.as_str().to_owned()
}

/// Polls the store until the order is `want` (10 s at most); returns the last status.
async fn wait_for(env: &TestEnv, order_url: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = order_status(env, order_url).await;
        if status == want || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Orders `names` and proves every one by http-01 through the real validation path; returns
/// (order URL, finalize URL, the order as newOrder returned it).
async fn ready_order(env: &TestEnv, raw: &Raw, key: &Key, kid: &str, names: &[&str]) -> (String, String, Value) {
    let o = new_order(env, raw, key, kid, names).await;
    assert_eq!(o.status, 201, "{}", o.body);
    let order = o.headers["location"].to_str().unwrap().to_owned();
    let thumbprint = env.state.store.account(id_of(kid)).await.unwrap().unwrap().thumbprint;
    for authz_url in o.body["authorizations"].as_array().unwrap() {
        let authz = post(raw, key, Some(kid), authz_url.as_str().unwrap(), None).await;
        let chall = authz.body["challenges"].as_array().unwrap().iter().find(|c| c["type"] == "http-01").unwrap();
        let token = chall["token"].as_str().unwrap();
        env.responder.set(token, &format!("{token}.{thumbprint}"));
        let r = post(raw, key, Some(kid), chall["url"].as_str().unwrap(), Some(&json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(wait_for(env, &order, "ready").await, "ready");
    let finalize = o.body["finalize"].as_str().unwrap().to_owned();
    (order, finalize, o.body)
}

/// The leaf certificate of an issued order, from the store.
async fn leaf_of(env: &TestEnv, order_url: &str) -> Vec<u8> {
    let order = env.state.store.order(id_of(order_url)).await.unwrap().unwrap();
    let cert = env.state.store.certificate(order.certificate_id.as_deref().unwrap()).await.unwrap().unwrap();
    Pem::iter_from_buffer(cert.chain_pem.as_bytes()).next().unwrap().unwrap().contents
}

/// The DNS names of a certificate's subjectAltName.
fn san_names(leaf_der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf_der).unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("the leaf has a SAN");
    san.value
        .general_names
        .iter()
        .map(|gn| match gn {
            GeneralName::DNSName(n) => (*n).to_owned(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

// ---- key confusion and key checks ----

/// Everything public an attacker could use as an HMAC key for `key`: the JWK as a client sends
/// it, its RFC 7638 canonical form, the SPKI DER and the raw point.
fn public_forms(key: &Key) -> Vec<Vec<u8>> {
    let p = key.point();
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, b64(&p[1..33]), b64(&p[33..65]));
    vec![key.jwk().to_string().into_bytes(), canonical.into_bytes(), key.spki_der(), p.to_vec()]
}

#[tokio::test]
async fn hs256_keyed_with_the_account_public_key_is_refused() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = Key::generate();
    let kid = new_account(&env, &raw, &key).await;
    let newcomer = Key::generate();
    let before = env.counts().await;
    let (new_order_url, new_account_url) = (env.url("/acme/new-order"), env.url("/acme/new-account"));
    let order = json!({"identifiers": dns_ids(&["hs.localhost"])}).to_string();
    for (alg, mac) in [("HS256", hmac::HMAC_SHA256), ("HS512", hmac::HMAC_SHA512)] {
        for (i, (mine, theirs)) in public_forms(&key).iter().zip(public_forms(&newcomer)).enumerate() {
            // With the account's kid: the server knows the public key, so does the attacker.
            let mac_key = hmac::Key::new(mac, mine);
            let h = header(&raw, &key, alg, Some(&kid), &new_order_url).await;
            let body = jws(h.to_string().as_bytes(), order.as_bytes(), |m| hmac::sign(&mac_key, m).as_ref().to_vec());
            let r = raw.post(&new_order_url, &body).await;
            r.assert_problem(400, "badSignatureAlgorithm");
            let offered = r.body["algorithms"].as_array().unwrap();
            assert!(!offered.iter().any(|a| a.as_str().unwrap().starts_with("HS")), "{alg} form {i}: {}", r.body);
            // With the public key embedded, at newAccount.
            let mac_key = hmac::Key::new(mac, &theirs);
            let h = header(&raw, &newcomer, alg, None, &new_account_url).await;
            let body = jws(h.to_string().as_bytes(), b"{}", |m| hmac::sign(&mac_key, m).as_ref().to_vec());
            raw.post(&new_account_url, &body).await.assert_problem(400, "badSignatureAlgorithm");
        }
    }
    assert_eq!(env.counts().await, before, "no order and no account came of it");
}

/// The 2048-bit RSA test key of the JWS unit tests, for RS256.
fn rsa2048() -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(include_bytes!("../../src/jws/testdata/rsa2048.pk8.der")).unwrap()
}

fn rsa_jwk(pair: &RsaKeyPair) -> Value {
    let parts = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    json!({"kty": "RSA", "n": b64(&parts.n), "e": b64(&parts.e)})
}

fn rs256(pair: &RsaKeyPair, msg: &[u8]) -> Vec<u8> {
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig).unwrap();
    sig
}

#[tokio::test]
async fn weak_and_mismatched_account_keys_are_refused_at_new_account() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let url = env.url("/acme/new-account");
    let payload = br#"{"termsOfServiceAgreed":true}"#;
    let before = env.counts().await;

    // A real 1024-bit RSA key (the one in the CSR test data). ring signs with 2048 bits and up
    // only, so the signature is filler: the key is refused before any signature is checked.
    let csr = include_bytes!("../../src/issuer/testdata/rsa1024-a.lab.test.csr.der");
    let (_, req) = X509CertificationRequest::from_der(csr).unwrap();
    let PublicKey::RSA(rsa) = req.certification_request_info.subject_pki.parsed().unwrap() else {
        panic!("test data is an RSA key")
    };
    assert_eq!(rsa.key_size(), 1024);
    let weak =
        json!({"kty": "RSA", "n": b64(rsa.modulus.strip_prefix(&[0]).unwrap_or(rsa.modulus)), "e": b64(rsa.exponent)});
    let h = json!({"alg": "RS256", "nonce": raw.nonce().await, "url": url, "jwk": weak});
    let r = raw.post(&url, &jws(h.to_string().as_bytes(), payload, |_| vec![0x5a; 128])).await;
    r.assert_problem(400, "badPublicKey");

    // The algorithm named must be the key's: each key signs correctly, under the wrong name.
    let p256 = Key::generate();
    let rsa = rsa2048();
    let rng = SystemRandom::new();
    let p384_der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let p384 = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, p384_der.as_ref(), &rng).unwrap();
    let p384_point = p384.public_key().as_ref();
    let p384_jwk = json!({"kty": "EC", "crv": "P-384", "x": b64(&p384_point[1..49]), "y": b64(&p384_point[49..97])});
    let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(ed.public_key().as_ref())});
    type Signer<'a> = Box<dyn Fn(&[u8]) -> Vec<u8> + 'a>;
    let cases: Vec<(&str, Value, Signer)> = vec![
        ("ES256", rsa_jwk(&rsa), Box::new(|m| rs256(&rsa, m))),
        ("ES384", p256.jwk(), Box::new(|m| p256.sign(m))),
        ("RS256", p256.jwk(), Box::new(|m| p256.sign(m))),
        ("PS256", p256.jwk(), Box::new(|m| p256.sign(m))),
        ("EdDSA", p256.jwk(), Box::new(|m| p256.sign(m))),
        ("ES256", p384_jwk, Box::new(|m| p384.sign(&rng, m).unwrap().as_ref().to_vec())),
        ("ES256", ed_jwk.clone(), Box::new(|m| ed.sign(m).as_ref().to_vec())),
        ("RS256", ed_jwk, Box::new(|m| ed.sign(m).as_ref().to_vec())),
    ];
    for (alg, jwk, sign) in cases {
        let h = json!({"alg": alg, "nonce": raw.nonce().await, "url": url, "jwk": jwk});
        let r = raw.post(&url, &jws(h.to_string().as_bytes(), payload, sign)).await;
        assert_eq!(
            r.problem_type(),
            "urn:ietf:params:acme:error:badSignatureAlgorithm",
            "{alg} with {jwk}: {}",
            r.body
        );
        r.assert_problem(400, "badSignatureAlgorithm");
    }
    assert_eq!(env.counts().await, before, "no account was created");

    // The same RSA key, named correctly, is fine: the refusals above were about the names.
    let h = json!({"alg": "RS256", "nonce": raw.nonce().await, "url": url, "jwk": rsa_jwk(&rsa)});
    let r = raw.post(&url, &jws(h.to_string().as_bytes(), payload, |m| rs256(&rsa, m))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(env.counts().await.accounts, before.accounts + 1);
}

// ---- where a signature was meant to go ----

#[tokio::test]
async fn signed_url_must_be_exactly_the_request_url() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = Key::generate();
    let kid = new_account(&env, &raw, &key).await;
    let before = env.counts().await;
    let target = env.url("/acme/new-order");
    let port = env.addr.port();
    let payload = json!({"identifiers": dns_ids(&["url.localhost"])});
    // The request always goes to `target`; the signature names something else.
    let signed_for = [
        format!("https://127.0.0.1:{port}/acme/new-order"), // this server, by another name
        "https://acme.evil.example/acme/new-order".to_owned(),
        format!("http://localhost:{port}/acme/new-order"),
        format!("https://localhost:{}/acme/new-order", port.wrapping_add(1)),
        format!("{target}/"),
        format!("{target}?x=1"),
        format!("{target}#x"),
        target.to_uppercase(),
        env.url("/acme/NEW-ORDER"),
        env.url("/acme/./new-order"),
        env.url("//acme/new-order"),
        env.url("/acme/new%2Dorder"),
        format!(" {target}"),
        String::new(),
    ];
    for url in &signed_for {
        let h = json!({"alg": "ES256", "nonce": raw.nonce().await, "url": url, "kid": kid});
        let r =
            raw.post(&target, &jws(h.to_string().as_bytes(), payload.to_string().as_bytes(), |m| key.sign(m))).await;
        assert_eq!(r.status, 401, "signed for {url:?}: {}", r.body);
        r.assert_problem(401, "unauthorized");
    }
    // A url that is not a string is no url at all.
    let h = json!({"alg": "ES256", "nonce": raw.nonce().await, "url": 5, "kid": kid});
    let r = raw.post(&target, &jws(h.to_string().as_bytes(), payload.to_string().as_bytes(), |m| key.sign(m))).await;
    r.assert_problem(400, "malformed");
    // Sent to a path that is no resource, signed for that same path: nothing there to reach.
    let stray = format!("{target}/");
    let r = post(&raw, &key, Some(&kid), &stray, Some(&payload)).await;
    r.assert_problem(404, "malformed");
    assert_eq!(env.counts().await, before);
}

// ---- accounts that are gone or never were ----

#[tokio::test]
async fn deactivated_and_unknown_accounts_change_nothing() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = Key::generate();
    let kid = new_account(&env, &raw, &key).await;
    let o = new_order(&env, &raw, &key, &kid, &["gone.localhost"]).await;
    assert_eq!(o.status, 201);
    let order = o.headers["location"].to_str().unwrap().to_owned();
    let finalize = o.body["finalize"].as_str().unwrap().to_owned();
    let authz = o.body["authorizations"][0].as_str().unwrap().to_owned();
    let chall = env.state.store.authorization(id_of(&authz)).await.unwrap().unwrap().challenges[0].id.clone();
    let chall_url = env.url(&format!("/acme/chall/{chall}"));
    let r = post(&raw, &key, Some(&kid), &kid, Some(&json!({"status": "deactivated"}))).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("deactivated")), "{}", r.body);

    let before = env.counts().await;
    let authz_before = env.state.store.authorization(id_of(&authz)).await.unwrap().unwrap();
    assert_eq!(authz_before.status.as_str(), "deactivated", "deactivation took the pending authorization");

    // Everything the account could do, signed correctly with its key: 401 each time.
    let new_key = Key::generate();
    let inner_h = json!({"alg": "ES256", "url": env.url("/acme/key-change"), "jwk": new_key.jwk()});
    let inner_p = json!({"account": kid, "oldKey": key.jwk()});
    let inner = jws(inner_h.to_string().as_bytes(), inner_p.to_string().as_bytes(), |m| new_key.sign(m));
    let attempts: Vec<(String, Option<Value>)> = vec![
        (env.url("/acme/new-order"), Some(json!({"identifiers": dns_ids(&["again.localhost"])}))),
        (finalize.clone(), Some(json!({"csr": b64(key.csr(&["gone.localhost"]))}))),
        (chall_url.clone(), Some(json!({}))),
        (authz.clone(), Some(json!({"status": "deactivated"}))),
        (authz.clone(), None),
        (order.clone(), None),
        (kid.clone(), Some(json!({"status": "valid"}))),
        (kid.clone(), Some(json!({"contact": ["mailto:back@lab.example"]}))),
        (format!("{kid}/orders"), None),
        (env.url("/acme/key-change"), Some(inner)),
        (env.url("/acme/revoke-cert"), Some(json!({"certificate": b64(b"not a certificate")}))),
    ];
    for (url, payload) in &attempts {
        let r = post(&raw, &key, Some(&kid), url, payload.as_ref()).await;
        assert_eq!(r.status, 401, "{url}: {}", r.body);
        r.assert_problem(401, "unauthorized");
    }
    // Without the key, the account's state is not even revealed: the signature is checked first.
    let stranger = Key::generate();
    let r = post(
        &raw,
        &stranger,
        Some(&kid),
        &env.url("/acme/new-order"),
        Some(&json!({"identifiers": dns_ids(&["x.localhost"])})),
    )
    .await;
    r.assert_problem(400, "malformed");

    // kids that name no account of this server.
    let id = id_of(&kid);
    let port = env.addr.port();
    for ghost in [
        format!("https://127.0.0.1:{port}/acme/acct/{id}"),
        format!("{kid}/"),
        format!("{kid}/orders"),
        format!("{kid}x"),
        format!("{kid}%00"),
        env.url("/acme/acct/"),
        env.url(&format!("/acme/acct/../acct/{id}")),
        String::new(),
    ] {
        let r = post(
            &raw,
            &key,
            Some(&ghost),
            &env.url("/acme/new-order"),
            Some(&json!({"identifiers": dns_ids(&["x.localhost"])})),
        )
        .await;
        assert_eq!(r.status, 400, "kid {ghost:?}: {}", r.body);
        r.assert_problem(400, "accountDoesNotExist");
    }

    assert_eq!(env.counts().await, before);
    let acct = env.state.store.account(id).await.unwrap().unwrap();
    assert_eq!(acct.status.as_str(), "deactivated", "no way back (RFC 8555 §7.3.6)");
    assert!(acct.contact.is_empty(), "contact unchanged");
    assert_eq!(acct.thumbprint, thumbprint_of(&key), "key unchanged");
    assert!(env.state.store.account_by_thumbprint(&thumbprint_of(&new_key)).await.unwrap().is_none());
    let authz_after = env.state.store.authorization(id_of(&authz)).await.unwrap().unwrap();
    assert_eq!(authz_after.status, authz_before.status);
    assert_eq!(
        authz_after.challenges.iter().map(|c| c.status).collect::<Vec<_>>(),
        authz_before.challenges.iter().map(|c| c.status).collect::<Vec<_>>(),
        "no challenge was started"
    );
}

/// RFC 7638 thumbprint of a P-256 key.
fn thumbprint_of(key: &Key) -> String {
    vacme::jws::PublicJwk::from_json(&key.jwk()).unwrap().thumbprint()
}

// ---- other accounts' objects ----

#[tokio::test]
async fn another_accounts_orders_and_certificates_cannot_be_used() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let alice = Key::generate();
    let alice_kid = new_account(&env, &raw, &alice).await;
    let (ready, ready_finalize, _) = ready_order(&env, &raw, &alice, &alice_kid, &["alice-ready.localhost"]).await;
    let (issued, issued_finalize, _) = ready_order(&env, &raw, &alice, &alice_kid, &["alice-issued.localhost"]).await;
    let r = post(
        &raw,
        &alice,
        Some(&alice_kid),
        &issued_finalize,
        Some(&json!({"csr": b64(alice.csr(&["alice-issued.localhost"]))})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_for(&env, &issued, "valid").await, "valid");
    let cert_url = env.url(&format!(
        "/acme/cert/{}",
        env.state.store.order(id_of(&issued)).await.unwrap().unwrap().certificate_id.unwrap()
    ));

    let mallory = Key::generate();
    let mallory_kid = new_account(&env, &raw, &mallory).await;
    let before = env.counts().await;

    // Finalize alice's ready order with a CSR that matches it: as if the order did not exist.
    let csr = json!({"csr": b64(mallory.csr(&["alice-ready.localhost"]))});
    let r = post(&raw, &mallory, Some(&mallory_kid), &ready_finalize, Some(&csr)).await;
    r.assert_problem(404, "malformed");
    // Her valid order answers the same (not orderNotReady, which would say it exists).
    let csr = json!({"csr": b64(mallory.csr(&["alice-issued.localhost"]))});
    let r = post(&raw, &mallory, Some(&mallory_kid), &issued_finalize, Some(&csr)).await;
    r.assert_problem(404, "malformed");
    // Her certificate.
    let r = post(&raw, &mallory, Some(&mallory_kid), &cert_url, None).await;
    r.assert_problem(404, "malformed");
    assert!(!r.body.to_string().contains("BEGIN CERTIFICATE"), "never the certificate: {}", r.body);
    // Her account: deactivate it, or move it to mallory's key.
    let r = post(&raw, &mallory, Some(&mallory_kid), &alice_kid, Some(&json!({"status": "deactivated"}))).await;
    r.assert_problem(401, "unauthorized");
    let inner_h = json!({"alg": "ES256", "url": env.url("/acme/key-change"), "jwk": mallory.jwk()});
    let inner_p = json!({"account": alice_kid, "oldKey": alice.jwk()});
    let inner = jws(inner_h.to_string().as_bytes(), inner_p.to_string().as_bytes(), |m| mallory.sign(m));
    let r = post(&raw, &mallory, Some(&mallory_kid), &env.url("/acme/key-change"), Some(&inner)).await;
    assert_eq!(r.status / 100, 4, "{}", r.body);

    assert_eq!(env.counts().await, before);
    assert_eq!(order_status(&env, &ready).await, "ready", "alice can still finalize it");
    let alice_row = env.state.store.account(id_of(&alice_kid)).await.unwrap().unwrap();
    assert_eq!((alice_row.status.as_str(), alice_row.thumbprint), ("valid", thumbprint_of(&alice)));
    // And alice's own requests still work.
    let r = post(&raw, &alice, Some(&alice_kid), &cert_url, None).await;
    assert_eq!(r.status, 200);
}

// ---- racing finalizations ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_finalizations_issue_exactly_one_certificate() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = Key::generate();
    let kid = new_account(&env, &raw, &key).await;
    let (order, finalize, _) = ready_order(&env, &raw, &key, &kid, &["race.localhost"]).await;
    let before = env.counts().await;

    // Eight valid finalize requests, each with its own CSR key and nonce, sent at once.
    let cert_keys: Vec<Key> = (0..8).map(|_| Key::generate()).collect();
    let mut bodies = Vec::new();
    for k in &cert_keys {
        let h = header(&raw, &key, "ES256", Some(&kid), &finalize).await;
        let payload = json!({"csr": b64(k.csr(&["race.localhost"]))}).to_string();
        bodies.push(jws(h.to_string().as_bytes(), payload.as_bytes(), |m| key.sign(m)));
    }
    let replies = futures_util::future::join_all(bodies.iter().map(|b| raw.post(&finalize, b))).await;

    let winners: Vec<usize> = (0..replies.len()).filter(|&i| replies[i].status == 200).collect();
    assert_eq!(winners.len(), 1, "{:?}", replies.iter().map(|r| (r.status, r.body.clone())).collect::<Vec<_>>());
    for (i, r) in replies.iter().enumerate() {
        assert!(r.status < 500, "request {i}: {} {}", r.status, r.body);
        if i != winners[0] {
            r.assert_problem(403, "orderNotReady");
        }
    }
    let won = &replies[winners[0]];
    assert!(matches!(won.body["status"].as_str(), Some("processing" | "valid")), "{}", won.body);

    assert_eq!(wait_for(&env, &order, "valid").await, "valid");
    let after = env.counts().await;
    assert_eq!(after.certificates, before.certificates + 1, "exactly one certificate");
    assert_eq!(
        (after.orders, after.authorizations, after.challenges),
        (before.orders, before.authorizations, before.challenges)
    );
    // It certifies the key of the CSR whose request won.
    let der = leaf_of(&env, &order).await;
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(leaf.public_key().raw, cert_keys[winners[0]].spki_der().as_slice());
}

// ---- identifiers ----

#[tokio::test]
async fn an_order_with_more_identifiers_than_the_policy_allows_is_rejected() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = Key::generate();
    let kid = new_account(&env, &raw, &key).await;
    let max = env.state.policy.max_identifiers();
    let names: Vec<String> = (0..1000).map(|i| format!("n{i}.localhost")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = env.counts().await;
    for count in [1000, max + 1] {
        let payload = json!({"identifiers": dns_ids(&refs[..count])});
        // Small enough for the body limit: it is the identifier cap that refuses it.
        assert!(payload.to_string().len() * 4 / 3 < env.state.limits.max_body_bytes - 1024);
        let r = post(&raw, &key, Some(&kid), &env.url("/acme/new-order"), Some(&payload)).await;
        r.assert_problem(400, "rejectedIdentifier");
        assert!(r.body["detail"].as_str().unwrap().contains(&max.to_string()), "{}", r.body);
    }
    assert_eq!(env.counts().await, before, "nothing stored");
    // Exactly the maximum is an order.
    let r = new_order(&env, &raw, &key, &kid, &refs[..max]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["identifiers"].as_array().unwrap().len(), max);
}

#[tokio::test]
async fn invalid_names_are_rejected_and_spellings_are_normalised() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = Key::generate();
    let kid = new_account(&env, &raw, &key).await;
    let before = env.counts().await;
    let long_label = format!("{}.localhost", "a".repeat(64));
    let long_name = format!("{}localhost", "abcdefghij.".repeat(23)); // 262 characters
    let bad = [
        "xn--a.localhost",          // Punycode for U+0080, a control character
        "xn--9999999999.localhost", // not Punycode at all
        "xn--a-b.localhost",        // ends inside a Punycode number
        "xn--wca.localhost",        // upper-case Ü, which IDNA never allows
        "xn--.localhost",
        "bücher.localhost", // a U-label: clients must send the A-label
        long_label.as_str(),
        long_name.as_str(),
        "a..b.localhost",
        ".a.localhost",
        "a.localhost..",
        "-a.localhost",
        "a-.localhost",
        "ab--c.localhost",
        "under_score.localhost",
        "*.*.localhost",
        "a.*.localhost",
        "*",
        "*.",
        "127.0.0.1",
        "::1",
        "[::1]",
        "a.localhost/x",
        "a b.localhost",
        "a.localhost\u{0}",
        "",
        // A trailing dot is refused, not rewritten: the order names what the client sent.
        "b.localhost.",
        "MiXeD.LocalHost.",
    ];
    for name in bad {
        let r = new_order(&env, &raw, &key, &kid, &[name]).await;
        assert_eq!(r.problem_type(), "urn:ietf:params:acme:error:rejectedIdentifier", "{name:?}: {}", r.body);
        r.assert_problem(400, "rejectedIdentifier");
    }
    assert_eq!(env.counts().await, before, "nothing stored for a refused name");

    // Case is spelling, not a different name: normalised, de-duplicated.
    let spelled = ["MiXeD.LocalHost", "b.localhost", "B.LOCALHOST", "XN--BCHER-KVA.localhost"];
    let (order, finalize, body) = ready_order(&env, &raw, &key, &kid, &spelled).await;
    let want = ["b.localhost", "mixed.localhost", "xn--bcher-kva.localhost"];
    assert_eq!(body["identifiers"], dns_ids(&want));
    assert_eq!(body["authorizations"].as_array().unwrap().len(), 3, "one authorization per distinct name");
    for authz in body["authorizations"].as_array().unwrap() {
        let row = env.state.store.authorization(id_of(authz.as_str().unwrap())).await.unwrap().unwrap();
        assert!(want.contains(&row.identifier.value().as_str()), "{:?}", row.identifier);
    }
    // A CSR may spell them in any case (not with a trailing dot: that is badCSR, see
    // csrs_that_do_not_match_or_do_not_verify_are_bad_csr); the certificate names the canonical form.
    let csr = key.csr(&["MiXeD.LocalHost", "B.LOCALHOST", "xn--bcher-kva.LOCALHOST"]);
    let r = post(&raw, &key, Some(&kid), &finalize, Some(&json!({"csr": b64(csr)}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_for(&env, &order, "valid").await, "valid");
    let mut sans = san_names(&leaf_of(&env, &order).await);
    sans.sort();
    assert_eq!(sans, want);
}

// ---- CSRs ----

#[tokio::test]
async fn csrs_that_do_not_match_or_do_not_verify_are_bad_csr() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = Key::generate();
    let kid = new_account(&env, &raw, &key).await;
    let names = ["c1.localhost", "c2.localhost"];
    let (order, finalize, _) = ready_order(&env, &raw, &key, &kid, &names).await;
    let before = env.counts().await;
    let cert_key = Key::generate();

    // Names the order does not have: an IP address, an email address, a common name.
    let extra_ip = cert_key.csr(&["c1.localhost", "c2.localhost", "127.0.0.1"]);
    let extra_email = cert_key.csr_with(&names, |p| {
        p.subject_alt_names.push(rcgen::SanType::Rfc822Name("root@c1.localhost".try_into().unwrap()));
    });
    let extra_cn =
        cert_key.csr_with(&names, |p| p.distinguished_name.push(rcgen::DnType::CommonName, "evil.localhost"));
    let missing = cert_key.csr(&["c1.localhost"]);
    // A dNSName with a trailing dot: order identifiers never have one.
    let trailing_dot = cert_key.csr(&["c1.localhost.", "c2.localhost"]);
    // A valid CSR whose key was swapped for another one of the same size: the signature was
    // made by a key the CSR no longer names.
    let good = cert_key.csr(&names);
    let other = Key::generate();
    let at = good.windows(91).position(|w| w == cert_key.spki_der().as_slice()).expect("the CSR holds the SPKI");
    let mut swapped = good.clone();
    swapped[at..at + 91].copy_from_slice(&other.spki_der());
    X509CertificationRequest::from_der(&swapped).expect("still a well-formed CSR");
    // The same CSR with one bit of its signature flipped.
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x01;
    X509CertificationRequest::from_der(&flipped).expect("still a well-formed CSR");

    for (what, csr) in [
        ("extra IP SAN", extra_ip),
        ("extra email SAN", extra_email),
        ("extra CN", extra_cn),
        ("missing name", missing),
        ("trailing dot", trailing_dot),
        ("swapped key", swapped),
        ("flipped signature", flipped),
    ] {
        let r = post(&raw, &key, Some(&kid), &finalize, Some(&json!({"csr": b64(csr)}))).await;
        assert_eq!(r.problem_type(), "urn:ietf:params:acme:error:badCSR", "{what}: {}", r.body);
        r.assert_problem(400, "badCSR");
    }
    assert_eq!(order_status(&env, &order).await, "ready", "a bad CSR leaves the order ready");
    assert_eq!(env.counts().await, before);

    // The order's names, spelled in upper case, are the order's names.
    let csr = cert_key.csr(&["C1.LOCALHOST", "c2.LocalHost"]);
    let r = post(&raw, &key, Some(&kid), &finalize, Some(&json!({"csr": b64(csr)}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_for(&env, &order, "valid").await, "valid");
    let mut sans = san_names(&leaf_of(&env, &order).await);
    sans.sort();
    assert_eq!(sans, names);
}

// ---- hostile bytes inside a well-formed JWS ----

#[tokio::test]
async fn non_utf8_in_the_protected_header_or_payload_is_malformed() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = Key::generate();
    let kid = new_account(&env, &raw, &key).await;
    let url = env.url("/acme/new-order");
    let before = env.counts().await;
    let good_payload = json!({"identifiers": dns_ids(&["u.localhost"])}).to_string().into_bytes();

    // Protected headers: a kid with an invalid byte, a stray continuation byte, an overlong '/'.
    for bad in [&[0xffu8][..], &[0x80], &[0xc0, 0xaf]] {
        let mut h =
            format!(r#"{{"alg":"ES256","nonce":"{}","url":"{url}","kid":"{kid}"#, raw.nonce().await).into_bytes();
        h.extend_from_slice(bad);
        h.extend_from_slice(br#""}"#);
        let r = raw.post(&url, &jws(&h, &good_payload, |m| key.sign(m))).await;
        r.assert_problem(400, "malformed");
    }
    // Payloads, correctly signed: invalid UTF-8 in a name, a lone surrogate escape, bytes that
    // are not text at all.
    let mut in_name = br#"{"identifiers":[{"type":"dns","value":"a"#.to_vec();
    in_name.extend_from_slice(&[0xff, 0xfe]);
    in_name.extend_from_slice(br#".localhost"}]}"#);
    let surrogate = br#"{"identifiers":[{"type":"dns","value":"a\ud800.localhost"}]}"#.to_vec();
    let binary = vec![0x00, 0xff, 0x10, 0x80, 0x7b];
    for payload in [in_name, surrogate, binary] {
        let h = header(&raw, &key, "ES256", Some(&kid), &url).await;
        let r = raw.post(&url, &jws(h.to_string().as_bytes(), &payload, |m| key.sign(m))).await;
        r.assert_problem(400, "malformed");
    }
    assert_eq!(env.counts().await, before);
}

#[tokio::test]
async fn a_megabyte_payload_in_a_valid_jws_is_too_large() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key = Key::generate();
    let kid = new_account(&env, &raw, &key).await;
    let url = env.url("/acme/new-order");
    let before = env.counts().await;
    let payload = json!({"identifiers": dns_ids(&["big.localhost"]), "padding": "x".repeat(1 << 20)});
    let r = post(&raw, &key, Some(&kid), &url, Some(&payload)).await;
    r.assert_problem(413, "malformed");
    assert_eq!(env.counts().await, before);
    // The server is fine afterwards.
    let r = post(&raw, &key, Some(&kid), &url, Some(&json!({"identifiers": dns_ids(&["big.localhost"])}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

// ---- connection floods ----

/// An HTTPS client trusting vacme's CA whose connections come from `source` (any 127/8 address
/// is this host), so that it counts as another client for vacme's per-address cap.
fn client_from(env: &TestEnv, source: Ipv4Addr) -> reqwest::Client {
    let pem = std::fs::read(&env.ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(IpAddr::V4(source))
        .resolve("localhost", env.addr)
        .build()
        .unwrap()
}

/// One newAccount on new connections from `source` (nonce, then POST), as a fresh client sends
/// it. `Err` is a network-level failure (refused, reset, closed during the handshake).
async fn fresh_new_account(env: &TestEnv, source: Ipv4Addr) -> Result<Reply, reqwest::Error> {
    let client = client_from(env, source);
    let key = Key::generate();
    let url = env.url("/acme/new-account");
    let res = client.head(env.url("/acme/new-nonce")).send().await?;
    let nonce = res.headers()["replay-nonce"].to_str().unwrap().to_owned();
    let h = json!({"alg": "ES256", "nonce": nonce, "url": url, "jwk": key.jwk()});
    let body = jws(h.to_string().as_bytes(), br#"{"termsOfServiceAgreed":true}"#, |m| key.sign(m));
    let res = client.post(&url).header("content-type", "application/jose+json").body(body.to_string()).send().await?;
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = res.json().await.unwrap_or(Value::Null);
    Ok(Reply { status, headers, body })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_lock_out_a_client() {
    // 10,000 client sockets plus the at most `server.max_connections` that vacme accepts live in
    // this one process. The cap is lowered to 1024 here so that the flood is ten times it and the
    // test does not depend on how fast a loaded machine closes 4096 sockets. The open-file limit here is 20,000 with soft = hard, so there is
    // nothing to raise (raising it would need unsafe code or a dependency the crate lacks).
    const IDLE: usize = 10_000;
    let (mut cap, mut per_ip) = (0, 0);
    let env = TestEnv::start_with(|c| {
        c.server.header_timeout_secs = 2;
        c.server.max_connections = 1024;
        (cap, per_ip) = (c.server.max_connections, c.server.max_connections_per_ip);
    })
    .await;
    assert!(IDLE > cap, "the flood must be larger than the global cap");
    let started = Instant::now();

    // The flood comes from many addresses, each below the per-address cap, so that it is the
    // global cap that fills up (a botnet, not one noisy host). None ever sends a byte.
    let per_source = per_ip - 6;
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..IDLE {
        let source = Ipv4Addr::new(127, 0, 1, u8::try_from(1 + i / per_source).unwrap());
        let addr = env.addr;
        opening.spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).ok()?;
            // Past the kernel's accept queue a connect waits for retransmits: a few seconds each.
            tokio::time::timeout(Duration::from_secs(4), socket.connect(addr)).await.ok()?.ok()
        });
    }
    let mut idle = Vec::with_capacity(IDLE);
    while let Some(done) = opening.join_next().await {
        if let Some(stream) = done.unwrap() {
            idle.push(stream);
        }
    }
    assert!(idle.len() > cap, "only {} connections opened: vacme was never full", idle.len());

    // While they are all still open, a client from yet another address gets through once the
    // header timeout has freed places. Its packets may be dropped while the accept queue is
    // full, so it tries again after a network error, as clients do.
    let asked = Instant::now();
    let mut failures = Vec::new();
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(6), fresh_new_account(&env, Ipv4Addr::new(127, 0, 2, 1))).await {
            Ok(Ok(reply)) => break reply,
            Ok(Err(e)) => failures.push(format!("{:?}: {e}", asked.elapsed())),
            Err(_) => failures.push(format!("{:?}: no answer within 6 s", asked.elapsed())),
        }
        assert!(asked.elapsed() < Duration::from_secs(12), "not served within 12 s: {failures:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reply.status, 201, "{}", reply.body);

    // vacme closed the idle connections it held, rather than keeping them: at least a full
    // cap's worth of reads end (EOF or reset). The others may never have reached it (half-open
    // in the kernel while its accept queue was full); the test closes them below.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut closing = tokio::task::JoinSet::new();
    for mut stream in idle.drain(..) {
        closing.spawn(async move {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut stream, &mut buf)).await;
            matches!(read, Ok(Ok(0) | Err(_)))
        });
    }
    let mut closed = 0;
    while closed < cap
        && let Some(done) = closing.join_next().await
    {
        closed += usize::from(done.unwrap());
    }
    closing.shutdown().await; // drops every remaining idle connection
    assert!(closed >= cap, "vacme closed only {closed} idle connections after its header timeout");

    // The flooding addresses themselves are served again, at the first try, and vacme is up.
    let reply = fresh_new_account(&env, Ipv4Addr::new(127, 0, 1, 1)).await.expect("served at the first try");
    assert_eq!(reply.status, 201, "{}", reply.body);
    let r = client_from(&env, Ipv4Addr::LOCALHOST).get(&env.directory).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.counts().await.accounts, 2);
    assert!(started.elapsed() < Duration::from_secs(45), "took {:?}", started.elapsed());
}
