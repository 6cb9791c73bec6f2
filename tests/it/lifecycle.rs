//! The certificate lifecycle as a client sees it: revocation (RFC 8555 §7.6), key rollover
//! (§7.3.5), external account binding (§7.3.4), renewal information and `replaces` (RFC 9773),
//! profiles (draft-ietf-acme-profiles) and authorization deactivation (§7.5.2). Each test checks
//! the answers and what the store holds afterwards.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ExternalAccountKey, Identifier,
    NewAccount, NewOrder, Order, OrderStatus, RetryPolicy, RevocationReason, RevocationRequest,
};
use ring::{
    hmac,
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use vacme::{config::ProfileConfig, store::NewEabKey};
use x509_parser::{extensions::ParsedExtension, pem::Pem};

use crate::env::{Raw, Reply, TestEnv, TestKey};

// ---- helpers ----

/// An ES256 key whose private half the test holds: a certificate's own key, or an instant-acme
/// account key (for requests instant-acme refuses to send).
struct Es256 {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl Es256 {
    fn generate() -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        Self::from_pkcs8(pkcs8.as_ref())
    }

    fn from_pkcs8(der: &[u8]) -> Self {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new()).unwrap();
        Self { pair, pkcs8: der.to_vec() }
    }

    /// The key of an instant-acme account.
    fn of_account(creds: &AccountCredentials) -> Self {
        Self::from_pkcs8(creds.private_key().secret_pkcs8_der())
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// A CSR for `names` signed by this key, with an empty subject (as instant-acme sends).
    fn csr(&self, names: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::try_from(self.pkcs8.as_slice()).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    /// POSTs `payload` signed with a fresh nonce; `kid` None means embed the jwk.
    async fn post(&self, raw: &Raw, kid: Option<&str>, url: &str, payload: &Value) -> Reply {
        let mut protected = json!({ "alg": "ES256", "nonce": raw.nonce().await, "url": url });
        match kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.jwk(),
        }
        let p = URL_SAFE_NO_PAD.encode(protected.to_string());
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        let sig = self.pair.sign(&SystemRandom::new(), format!("{p}.{body}").as_bytes()).unwrap();
        let jws = json!({ "protected": p, "payload": body, "signature": URL_SAFE_NO_PAD.encode(sig.as_ref()) });
        raw.post(url, &jws).await
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The store ID of an account from its URL (the kid).
fn id_of(account_url: &str) -> &str {
    account_url.rsplit('/').next().unwrap()
}

/// The leaf of a PEM chain, as DER.
fn leaf_der(chain_pem: &str) -> Vec<u8> {
    Pem::iter_from_buffer(chain_pem.as_bytes()).next().unwrap().unwrap().contents
}

/// (notBefore, notAfter) of the leaf, in Unix seconds.
fn validity(chain_pem: &str) -> (i64, i64) {
    let pem = Pem::iter_from_buffer(chain_pem.as_bytes()).next().unwrap().unwrap();
    let cert = pem.parse_x509().unwrap();
    (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp())
}

/// RFC 9773 §4.1 certID of the leaf: base64url(AKI keyIdentifier) "." base64url(serial content octets).
fn cert_id(chain_pem: &str) -> String {
    let pem = Pem::iter_from_buffer(chain_pem.as_bytes()).next().unwrap().unwrap();
    let cert = pem.parse_x509().unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0.to_vec()),
            _ => None,
        })
        .expect("the leaf has an authority key identifier");
    format!("{}.{}", URL_SAFE_NO_PAD.encode(aki), URL_SAFE_NO_PAD.encode(cert.raw_serial()))
}

/// The certID as instant-acme takes it for `replaces`.
fn replaces_id(cert_id: &str) -> CertificateIdentifier<'static> {
    let (aki, serial) = cert_id.split_once('.').unwrap();
    CertificateIdentifier { authority_key_identifier: aki.to_owned().into(), serial: serial.to_owned().into() }
}

/// Asserts that instant-acme got the problem `kind` with `status`.
#[track_caller]
fn assert_api_problem<T>(result: Result<T, instant_acme::Error>, status: u16, kind: &str) {
    match result {
        Err(instant_acme::Error::Api(p)) => {
            let urn = format!("urn:ietf:params:acme:error:{kind}");
            assert_eq!((p.status, p.r#type.as_deref()), (Some(status), Some(urn.as_str())), "{p:?}");
        }
        Err(other) => panic!("expected the problem {kind}, got {other:?}"),
        Ok(_) => panic!("expected the problem {kind}, got success"),
    }
}

/// A plain GET (renewal info is not signed).
async fn get(env: &TestEnv, url: &str) -> Reply {
    let res = env.http().get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, headers, body }
}

async fn directory(env: &TestEnv) -> Value {
    env.http().get(&env.directory).send().await.unwrap().json().await.unwrap()
}

/// Places `new`, answers every http-01 challenge, finalizes with `csr` (instant-acme's own key and
/// CSR when `None`) and returns the order and its PEM chain.
async fn issue_order(env: &TestEnv, account: &Account, new: &NewOrder<'_>, csr: Option<&[u8]>) -> (Order, String) {
    let mut order = account.new_order(new).await.unwrap();
    env.answer_all(&mut order).await;
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
    match csr {
        Some(csr) => order.finalize_csr(csr).await.unwrap(),
        None => drop(order.finalize().await.unwrap()),
    }
    let chain = order.poll_certificate(&RetryPolicy::default()).await.unwrap();
    (order, chain)
}

fn dns(names: &[&str]) -> Vec<Identifier> {
    names.iter().map(|n| Identifier::Dns((*n).to_owned())).collect()
}

/// The store's record of the certificate whose leaf is `chain_pem`'s.
async fn stored(env: &TestEnv, chain_pem: &str) -> vacme::store::CertificateRow {
    let leaf = leaf_der(chain_pem);
    let all = env.state.store.certificates(None).await.unwrap();
    all.into_iter().find(|c| leaf_der(&c.chain_pem) == leaf).expect("the store holds the issued certificate")
}

// ---- revocation (RFC 8555 §7.6) ----

#[tokio::test]
async fn revoke_by_the_account_records_reason_and_refuses_others() {
    let env = TestEnv::start().await;
    let (alice, _) = env.account().await;
    let (bob, _) = env.account().await;
    let (_, chain) = env.issue(&alice, &["rev.localhost"]).await;
    let der = CertificateDer::from(leaf_der(&chain));
    let revoke = |reason| RevocationRequest { certificate: &der, reason };

    // Another account may not revoke it.
    assert_api_problem(bob.revoke(&revoke(Some(RevocationReason::KeyCompromise))).await, 401, "unauthorized");
    // cACompromise is the CA's to state, not a subscriber's (RFC 5280 §5.3.1).
    assert_api_problem(alice.revoke(&revoke(Some(RevocationReason::CaCompromise))).await, 400, "badRevocationReason");
    let before = stored(&env, &chain).await;
    assert_eq!((before.revoked_at, before.revocation_reason, before.ca_revoked_at), (None, None, None));

    let t0 = now();
    alice.revoke(&revoke(Some(RevocationReason::KeyCompromise))).await.unwrap();
    let after = stored(&env, &chain).await;
    let at = after.revoked_at.expect("revoked_at is recorded");
    assert!((t0 - 1..=now() + 1).contains(&at), "revoked_at {at} is the time of the request");
    assert_eq!(after.revocation_reason, Some(1), "keyCompromise");
    assert!(after.ca_revoked_at.is_some(), "the local CA took the revocation at once");

    // The second time: alreadyRevoked, and the record keeps the first reason.
    assert_api_problem(alice.revoke(&revoke(Some(RevocationReason::Superseded))).await, 400, "alreadyRevoked");
    assert_api_problem(alice.revoke(&revoke(None)).await, 400, "alreadyRevoked");
    let again = stored(&env, &chain).await;
    assert_eq!((again.revoked_at, again.revocation_reason), (Some(at), Some(1)));
}

#[tokio::test]
async fn revoke_by_the_certificate_key_without_an_account() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let (alice, _) = env.account().await;
    let cert_key = Es256::generate();
    let ids = dns(&["own-key.localhost"]);
    let (_, chain) = issue_order(&env, &alice, &NewOrder::new(&ids), Some(&cert_key.csr(&["own-key.localhost"]))).await;
    let url = env.url("/acme/revoke-cert");
    let payload = |reason: i64| json!({"certificate": URL_SAFE_NO_PAD.encode(leaf_der(&chain)), "reason": reason});

    // Reasons other than 0, 1, 3, 4, 5 and 9 are refused (7 is not even assigned).
    cert_key.post(&raw, None, &url, &payload(7)).await.assert_problem(400, "badRevocationReason");
    // A key that is neither the certificate's nor an account's.
    Es256::generate().post(&raw, None, &url, &payload(4)).await.assert_problem(401, "unauthorized");
    // A certificate this server never issued.
    let stranger_key = rcgen::KeyPair::generate().unwrap();
    let other_cert = rcgen::CertificateParams::new(vec!["own-key.localhost".to_owned()])
        .unwrap()
        .self_signed(&stranger_key)
        .unwrap();
    let unknown = json!({"certificate": URL_SAFE_NO_PAD.encode(other_cert.der())});
    cert_key.post(&raw, None, &url, &unknown).await.assert_problem(404, "malformed");
    assert_eq!(stored(&env, &chain).await.revoked_at, None);

    let r = cert_key.post(&raw, None, &url, &payload(4)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let row = stored(&env, &chain).await;
    assert!(row.revoked_at.is_some());
    assert_eq!(row.revocation_reason, Some(4), "superseded");
    assert!(row.ca_revoked_at.is_some());
    cert_key.post(&raw, None, &url, &payload(4)).await.assert_problem(400, "alreadyRevoked");
    assert_eq!(env.counts().await.accounts, 1, "revoking by certificate key makes no account");
}

// ---- key rollover (RFC 8555 §7.3.5) ----

#[tokio::test]
async fn key_change_with_instant_acme_retires_the_old_key() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let (mut account, old_creds) = env.account().await;
    let kid = account.id().to_owned();
    let before = env.state.store.account(id_of(&kid)).await.unwrap().unwrap();

    let new_creds = account.update_key().await.unwrap();
    let after = env.state.store.account(id_of(&kid)).await.unwrap().unwrap();
    assert_ne!(after.thumbprint, before.thumbprint);
    assert_eq!(after.jwk, Es256::of_account(&new_creds).jwk(), "the store holds the new key");
    assert_eq!((after.id, after.status, after.contact), (before.id, before.status, before.contact));

    // The new key works, for the same account.
    let ids = dns(&["rolled.localhost"]);
    account.new_order(&NewOrder::new(&ids)).await.unwrap();
    let new_key = Es256::of_account(&new_creds);
    let r = new_key.post(&raw, None, &env.url("/acme/new-account"), &json!({"onlyReturnExisting": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["location"].to_str().unwrap(), kid);

    // The old key finds no account, and cannot sign for this one.
    let old_key = Es256::of_account(&old_creds);
    let r = old_key.post(&raw, None, &env.url("/acme/new-account"), &json!({"onlyReturnExisting": true})).await;
    r.assert_problem(400, "accountDoesNotExist");
    let payload = json!({"identifiers": [{"type": "dns", "value": "stale.localhost"}]});
    old_key.post(&raw, Some(&kid), &env.url("/acme/new-order"), &payload).await.assert_problem(400, "malformed");
    assert_eq!(env.counts().await.accounts, 1);
}

/// The inner JWS of a key change: signed by `new_key` (embedded as jwk), no nonce.
fn key_change_inner(new_key: &TestKey, url: &str, account: &str, old_jwk: &Value) -> Value {
    new_key.sign(
        &json!({"alg": "ES256", "jwk": new_key.jwk(), "url": url}),
        Some(&json!({"account": account, "oldKey": old_jwk})),
    )
}

#[tokio::test]
async fn key_change_to_a_taken_key_or_with_a_wrong_inner_url_is_refused() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let key_change = env.url("/acme/key-change");
    let (alice, bob) = (TestKey::new(), TestKey::new());
    let alice_kid = raw.new_account(&alice).await;
    let bob_kid = raw.new_account(&bob).await;
    let alice_before = env.state.store.account(id_of(&alice_kid)).await.unwrap().unwrap();

    // Bob's key: 409 with the account that has it.
    let inner = key_change_inner(&bob, &key_change, &alice_kid, &alice.jwk());
    let r = raw.signed(&alice, Some(&alice_kid), &key_change, Some(&inner)).await;
    r.assert_problem(409, "malformed");
    assert_eq!(r.headers["location"].to_str().unwrap(), bob_kid);

    // The inner url must be the key-change URL.
    let fresh = TestKey::new();
    let inner = key_change_inner(&fresh, &env.url("/acme/new-account"), &alice_kid, &alice.jwk());
    raw.signed(&alice, Some(&alice_kid), &key_change, Some(&inner)).await.assert_problem(400, "malformed");

    // An inner JWS with a nonce.
    let inner = fresh.sign(
        &json!({"alg": "ES256", "jwk": fresh.jwk(), "url": key_change, "nonce": raw.nonce().await}),
        Some(&json!({"account": alice_kid, "oldKey": alice.jwk()})),
    );
    raw.signed(&alice, Some(&alice_kid), &key_change, Some(&inner)).await.assert_problem(400, "malformed");

    // Nothing changed: Alice still signs with her key, and the fresh key has no account.
    assert_eq!(env.state.store.account(id_of(&alice_kid)).await.unwrap().unwrap(), alice_before);
    let r = raw.signed(&alice, Some(&alice_kid), &alice_kid, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = raw.signed(&fresh, None, &env.url("/acme/new-account"), Some(&json!({"onlyReturnExisting": true}))).await;
    r.assert_problem(400, "accountDoesNotExist");

    // A correct rollover to the fresh key works.
    let inner = key_change_inner(&fresh, &key_change, &alice_kid, &alice.jwk());
    let r = raw.signed(&alice, Some(&alice_kid), &key_change, Some(&inner)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = raw.signed(&fresh, Some(&alice_kid), &alice_kid, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

// ---- external account binding (RFC 8555 §7.3.4) ----

/// An `externalAccountBinding` over `jwk`, MACed (HS256) with the base64url `key` of `kid`.
fn eab_binding(kid: &str, key: &str, jwk: &Value, url: &str) -> Value {
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &URL_SAFE_NO_PAD.decode(key).unwrap());
    let protected = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": kid, "url": url}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(jwk.to_string());
    let tag = hmac::sign(&mac_key, format!("{protected}.{payload}").as_bytes());
    json!({"protected": protected, "payload": payload, "signature": URL_SAFE_NO_PAD.encode(tag.as_ref())})
}

/// A new EAB key limited to `*.x.localhost`: (kid, base64url HMAC key).
async fn scoped_eab_key(env: &TestEnv) -> (String, String) {
    let (kid, key) = env.state.lifecycle.eab.new_key().unwrap();
    let record = NewEabKey {
        kid: kid.clone(),
        scope: vec!["*.x.localhost".into()],
        profile: None,
        comment: String::new(),
        expires_at: None,
    };
    env.state.store.create_eab_key(&record, now()).await.unwrap();
    (kid, key)
}

#[tokio::test]
async fn eab_required_binds_each_key_once_and_scopes_orders() {
    let env = TestEnv::start_with(|c| c.eab.required = true).await;
    let raw = Raw::new(&env);
    let new_account = env.url("/acme/new-account");
    let new_order = env.url("/acme/new-order");
    assert_eq!(directory(&env).await["meta"]["externalAccountRequired"], json!(true));

    // No binding.
    let alice = TestKey::new();
    let r = raw.signed(&alice, None, &new_account, Some(&json!({"termsOfServiceAgreed": true}))).await;
    r.assert_problem(403, "externalAccountRequired");
    assert_eq!(env.counts().await.accounts, 0);

    // A good binding: 201, and the key is spent on this account.
    let (kid, key) = scoped_eab_key(&env).await;
    assert_eq!(env.state.store.eab_key(&kid).await.unwrap().unwrap().state(now()), "unused");
    let binding = eab_binding(&kid, &key, &alice.jwk(), &new_account);
    let r = raw
        .signed(
            &alice,
            None,
            &new_account,
            Some(&json!({"termsOfServiceAgreed": true, "externalAccountBinding": binding})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let alice_kid = r.headers["location"].to_str().unwrap().to_owned();
    let record = env.state.store.eab_key(&kid).await.unwrap().unwrap();
    assert_eq!(record.state(now()), "used");
    assert_eq!(record.account_id.as_deref(), Some(id_of(&alice_kid)));
    let account = env.state.store.account(id_of(&alice_kid)).await.unwrap().unwrap();
    assert_eq!(account.eab_kid.as_deref(), Some(kid.as_str()));

    // The same EAB key for another account key; then a MAC made with another kid's key.
    let bob = TestKey::new();
    let (other_kid, _) = scoped_eab_key(&env).await;
    for binding_kid in [&kid, &other_kid] {
        let binding = eab_binding(binding_kid, &key, &bob.jwk(), &new_account);
        let payload = json!({"termsOfServiceAgreed": true, "externalAccountBinding": binding});
        raw.signed(&bob, None, &new_account, Some(&payload)).await.assert_problem(401, "unauthorized");
    }
    assert_eq!(env.counts().await.accounts, 1);
    assert_eq!(env.state.store.eab_key(&other_kid).await.unwrap().unwrap().state(now()), "unused");

    // Alice orders inside her scope only.
    let order = |names: &[&str]| json!({"identifiers": names.iter().map(|n| json!({"type": "dns", "value": n})).collect::<Vec<_>>()});
    let r = raw.signed(&alice, Some(&alice_kid), &new_order, Some(&order(&["a.x.localhost"]))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let orders_before = env.counts().await.orders;
    let r = raw.signed(&alice, Some(&alice_kid), &new_order, Some(&order(&["elsewhere.localhost"]))).await;
    r.assert_problem(400, "rejectedIdentifier");
    let r = raw.signed(&alice, Some(&alice_kid), &new_order, Some(&order(&["b.x.localhost", "x.localhost"]))).await;
    r.assert_problem(400, "rejectedIdentifier");
    let subproblems = r.body["subproblems"].as_array().expect("the refused identifier is named");
    assert_eq!(subproblems.len(), 1, "{}", r.body);
    assert_eq!(subproblems[0]["identifier"], json!({"type": "dns", "value": "x.localhost"}));
    assert_eq!(env.counts().await.orders, orders_before);
}

#[tokio::test]
async fn instant_acme_account_with_eab_gets_a_certificate_in_scope() {
    let env = TestEnv::start_with(|c| c.eab.required = true).await;
    let (kid, key) = scoped_eab_key(&env).await;
    let eab = ExternalAccountKey::new(kid.clone(), &URL_SAFE_NO_PAD.decode(&key).unwrap());
    let new = NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
    let (account, _) =
        Account::builder_with_root(&env.ca).unwrap().create(&new, env.directory.clone(), Some(&eab)).await.unwrap();
    let record = env.state.store.eab_key(&kid).await.unwrap().unwrap();
    assert_eq!((record.state(now()), record.account_id.as_deref()), ("used", Some(id_of(account.id()))));

    let (_, chain) = env.issue(&account, &["www.x.localhost"]).await;
    assert_eq!(stored(&env, &chain).await.account_id, id_of(account.id()));
    let ids = dns(&["www.localhost"]);
    assert_api_problem(account.new_order(&NewOrder::new(&ids)).await, 400, "rejectedIdentifier");

    // The spent key does not make a second account.
    let again = Account::builder_with_root(&env.ca).unwrap().create(&new, env.directory.clone(), Some(&eab)).await;
    assert_api_problem(again, 401, "unauthorized");
    assert_eq!(env.counts().await.accounts, 1);
}

// ---- renewal information and replaces (RFC 9773) ----

#[tokio::test]
async fn renewal_info_window_and_revoked_certificates() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let (alice, alice_creds) = env.account().await;
    let dir = directory(&env).await;
    let base = dir["renewalInfo"].as_str().expect("the directory has renewalInfo").to_owned();
    assert_eq!(base, env.url("/acme/renewal-info"));

    let (_, chain) = env.issue(&alice, &["ari.localhost"]).await;
    let id = cert_id(&chain);
    let (not_before, not_after) = validity(&chain);
    assert_eq!(stored(&env, &chain).await.ari_id.as_deref(), Some(id.as_str()));

    let r = get(&env, &format!("{base}/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().expect("Retry-After in seconds");
    assert!(retry_after > 0);
    let at = |field: &str| {
        let s = r.body["suggestedWindow"][field].as_str().unwrap_or_else(|| panic!("{field} in {}", r.body));
        OffsetDateTime::parse(s, &Rfc3339).unwrap().unix_timestamp()
    };
    let (start, end) = (at("start"), at("end"));
    assert!(
        not_before < start && start < end && end < not_after,
        "window {start}..{end} inside {not_before}..{not_after}"
    );
    let life = not_after - not_before;
    assert!((start - (not_before + life * 33 / 100)).abs() <= 2, "starts at a third of the lifetime");
    assert!((end - (not_before + life * 67 / 100)).abs() <= 2, "ends at two thirds of the lifetime");
    assert!(start > now(), "a fresh certificate is not due yet");

    // Unknown and malformed certIDs.
    let (aki, _) = id.split_once('.').unwrap();
    get(&env, &format!("{base}/{aki}.AQIDBA")).await.assert_problem(404, "malformed");
    for bad in ["not-a-cert-id", "a+b.c", &format!("{aki}.")] {
        get(&env, &format!("{base}/{bad}")).await.assert_problem(400, "malformed");
    }

    // Revoked: the window has already begun, so the client renews at once.
    let revoke = json!({"certificate": URL_SAFE_NO_PAD.encode(leaf_der(&chain)), "reason": 1});
    let r = Es256::of_account(&alice_creds).post(&raw, Some(alice.id()), &env.url("/acme/revoke-cert"), &revoke).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(&env, &format!("{base}/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    let end = OffsetDateTime::parse(r.body["suggestedWindow"]["end"].as_str().unwrap(), &Rfc3339).unwrap();
    let start = OffsetDateTime::parse(r.body["suggestedWindow"]["start"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(start < end && end.unix_timestamp() <= now(), "window {start}..{end} is in the past");
}

#[tokio::test]
async fn replaces_is_echoed_once_per_certificate_and_only_for_its_account() {
    let env = TestEnv::start().await;
    let (alice, _) = env.account().await;
    let (bob, _) = env.account().await;
    let (_, chain) = env.issue(&alice, &["renew.localhost", "other.localhost"]).await;
    let id = cert_id(&chain);
    let ids = dns(&["renew.localhost"]);

    // Another account's certificate.
    let by_bob = bob.new_order(&NewOrder::new(&ids).replaces(replaces_id(&id))).await;
    assert_api_problem(by_bob, 401, "unauthorized");

    // The owner: accepted, echoed, recorded.
    let mut first = alice.new_order(&NewOrder::new(&ids).replaces(replaces_id(&id))).await.unwrap();
    assert_eq!(first.state().replaces.as_ref().map(ToString::to_string), Some(id.clone()));
    let order_id = first.url().rsplit('/').next().unwrap().to_owned();
    assert_eq!(env.state.store.order(&order_id).await.unwrap().unwrap().replaces.as_deref(), Some(id.as_str()));

    // A second live order replacing the same certificate.
    let second = alice.new_order(&NewOrder::new(&ids).replaces(replaces_id(&id))).await;
    assert_api_problem(second, 409, "alreadyReplaced");
    let orders_before = env.counts().await.orders;

    // Once the first replacement is given up (its authorization deactivated, the order invalid),
    // the certificate can be replaced again, and the new order completes.
    {
        let mut authzs = first.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        authz.deactivate().await.unwrap();
    }
    assert_eq!(first.refresh().await.unwrap().status, OrderStatus::Invalid);
    let (order, new_chain) = issue_order(&env, &alice, &NewOrder::new(&ids).replaces(replaces_id(&id)), None).await;
    assert_eq!(order.into_parts().1.replaces.map(|r| r.to_string()), Some(id.clone()));
    assert_eq!(env.counts().await.orders, orders_before + 1);
    assert_ne!(cert_id(&new_chain), id);
    // The replacement is valid now, so the old certificate stays replaced.
    let third = alice.new_order(&NewOrder::new(&ids).replaces(replaces_id(&id))).await;
    assert_api_problem(third, 409, "alreadyReplaced");
}

// ---- profiles (draft-ietf-acme-profiles) ----

async fn with_profiles() -> TestEnv {
    TestEnv::start_with(|c| {
        let profile = |description: &str, max_days| ProfileConfig {
            description: description.into(),
            max_days,
            ..Default::default()
        };
        c.profiles.insert("short".into(), profile("one day", Some(1)));
        c.profiles.insert("standard".into(), profile("the local CA's default", None));
        c.issuance.default_profile = Some("standard".into());
    })
    .await
}

#[tokio::test]
async fn profiles_are_listed_checked_recorded_and_bound_the_lifetime() {
    let env = with_profiles().await;
    let meta = &directory(&env).await["meta"];
    assert_eq!(meta["profiles"], json!({"short": "one day", "standard": "the local CA's default"}));
    let (account, _) = env.account().await;
    let listed: Vec<(String, String)> =
        account.profiles().map(|p| (p.name.to_owned(), p.description.to_owned())).collect();
    assert_eq!(listed.len(), 2, "{listed:?}");

    let ids = dns(&["profile.localhost"]);
    assert_api_problem(account.new_order(&NewOrder::new(&ids).profile("nope")).await, 400, "invalidProfile");

    let (short, short_chain) = issue_order(&env, &account, &NewOrder::new(&ids).profile("short"), None).await;
    assert_eq!(short.into_parts().1.profile.as_deref(), Some("short"));
    let (nb, na) = validity(&short_chain);
    assert!(na > now() && na - nb <= 86_400 + 120, "about a day: {} s", na - nb);
    assert_eq!(stored(&env, &short_chain).await.profile.as_deref(), Some("short"));

    // No profile named: the default one, and the CA's default lifetime (90 days).
    let (standard, chain) = issue_order(&env, &account, &NewOrder::new(&ids), None).await;
    assert_eq!(standard.into_parts().1.profile.as_deref(), Some("standard"));
    let (nb, na) = validity(&chain);
    assert!(na - nb > 89 * 86_400, "{} s", na - nb);
    assert_eq!(stored(&env, &chain).await.profile.as_deref(), Some("standard"));
}

#[tokio::test]
async fn profile_max_days_bounds_the_whole_validity_period() {
    let env = with_profiles().await;
    let (account, _) = env.account().await;
    let ids = dns(&["day.localhost"]);
    let (_, chain) = issue_order(&env, &account, &NewOrder::new(&ids).profile("short"), None).await;
    let (nb, na) = validity(&chain);
    assert!(na - nb <= 86_400, "max_days = 1 allows at most 86400 s from notBefore to notAfter, got {}", na - nb);
}

// ---- authorization deactivation (RFC 8555 §7.5.2) ----

#[tokio::test]
async fn deactivating_a_pending_authorization_invalidates_its_order() {
    let env = TestEnv::start().await;
    let raw = Raw::new(&env);
    let (account, creds) = env.account().await;
    let ids = dns(&["quit.localhost", "stay.localhost"]);
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    let authz_url = {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let state = authz.deactivate().await.unwrap();
        assert_eq!(state.status, AuthorizationStatus::Deactivated);
        authz.url().to_owned()
    };
    let state = order.refresh().await.unwrap();
    assert_eq!(state.status, OrderStatus::Invalid);
    let error = state.error.as_ref().expect("the invalid order says why");
    assert_eq!(error.r#type.as_deref(), Some("urn:ietf:params:acme:error:unauthorized"));

    let authz_id = authz_url.rsplit('/').next().unwrap();
    let row = env.state.store.authorization(authz_id).await.unwrap().unwrap();
    assert_eq!(row.status, vacme::acme::types::AuthorizationStatus::Deactivated);
    let invalid = vacme::acme::types::ChallengeStatus::Invalid;
    assert!(row.challenges.iter().all(|c| c.status == invalid), "no challenge is left pending");

    // A second deactivation (instant-acme refuses to send it): malformed, nothing changes.
    let key = Es256::of_account(&creds);
    let r = key.post(&raw, Some(account.id()), &authz_url, &json!({"status": "deactivated"})).await;
    r.assert_problem(400, "malformed");
    // Any other update is malformed too.
    let other_authz = order.state().authorizations[1].url.clone();
    let r = key.post(&raw, Some(account.id()), &other_authz, &json!({"status": "valid"})).await;
    r.assert_problem(400, "malformed");
    // Another account cannot see it.
    let stranger = TestKey::new();
    let stranger_kid = raw.new_account(&stranger).await;
    let r = raw.signed(&stranger, Some(&stranger_kid), &other_authz, Some(&json!({"status": "deactivated"}))).await;
    r.assert_problem(404, "malformed");
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Invalid);
}

#[tokio::test]
async fn deactivating_a_valid_authorization_keeps_the_issued_order() {
    let env = TestEnv::start().await;
    let (account, _) = env.account().await;
    let (order_url, chain) = env.issue(&account, &["done.localhost"]).await;
    let mut order = account.order(order_url).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        assert_eq!(authz.status, AuthorizationStatus::Valid);
        assert_eq!(authz.deactivate().await.unwrap().status, AuthorizationStatus::Deactivated);
    }
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Valid, "an issued order stays valid");
    assert_eq!(order.poll_certificate(&RetryPolicy::default()).await.unwrap(), chain);
    assert_eq!(stored(&env, &chain).await.revoked_at, None);
}

// ---- clean-up ----

/// A revocation the CA did not take (it was down) is pushed by the next clean-up run.
#[tokio::test]
async fn cleanup_pushes_revocations_the_ca_has_not_confirmed() {
    let env = TestEnv::start().await;
    let (account, _) = env.account().await;
    let (_, chain) = env.issue(&account, &["late.localhost"]).await;
    let cert = stored(&env, &chain).await;
    // Recorded in the store only, as when Vault did not answer.
    assert!(env.state.store.revoke_certificate(&cert.id, 4, now()).await.unwrap());
    assert_eq!(env.state.store.pending_ca_revocations(10).await.unwrap().len(), 1);
    let cleanup = vacme::Cleanup {
        store: env.state.store.clone(),
        issuer: env.state.issuer.clone(),
        lifecycle: env.state.lifecycle.clone(),
        clock: env.state.clock.clone(),
        interval: std::time::Duration::from_secs(3600),
        retention_secs: 30 * 86_400,
        audit_retention_secs: 0,
    };
    let (_, confirmed) = cleanup.once().await;
    assert_eq!(confirmed, 1);
    assert!(env.state.store.pending_ca_revocations(10).await.unwrap().is_empty());
    assert!(env.state.store.certificate(&cert.id).await.unwrap().unwrap().ca_revoked_at.is_some());
}
