//! Rate limits and request limits (docs/security.md): each refusal is `rateLimited` (429) with
//! `Retry-After` and a detail naming the limit, nothing is stored, and the limits hold across a
//! restart because they are counted from the store.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vacme::{
    cli::{Admin, run},
    config::{Config, Overrides},
};

use crate::env::{Raw, Reply, TestEnv, TestKey};

fn order_payload(names: &[&str]) -> Value {
    json!({"identifiers": names.iter().map(|n| json!({"type": "dns", "value": n})).collect::<Vec<_>>()})
}

async fn new_order(env: &TestEnv, raw: &Raw, key: &TestKey, kid: &str, names: &[&str]) -> Reply {
    raw.signed(key, Some(kid), &env.url("/acme/new-order"), Some(&order_payload(names))).await
}

fn assert_limited(r: &Reply, setting: &str) {
    r.assert_problem(429, "rateLimited");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains(setting), "the detail names the limit: {detail}");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
}

#[tokio::test]
async fn new_accounts_per_address_hold_across_a_restart() {
    let env = TestEnv::start_with(|c| c.limits.accounts_per_ip_per_hour = 2).await;
    let raw = Raw::new(&env);
    let first = TestKey::new();
    raw.new_account(&first).await;
    raw.new_account(&TestKey::new()).await;
    let before = env.counts().await;
    let url = env.url("/acme/new-account");
    let r = raw.signed(&TestKey::new(), None, &url, Some(&json!({"termsOfServiceAgreed": true}))).await;
    assert_limited(&r, "limits.accounts_per_ip_per_hour");
    assert!(r.body["detail"].as_str().unwrap().contains("127.0.0.1"));
    assert_eq!(env.counts().await, before, "no account was made");
    // An existing key still finds its account: the limit is on new ones.
    let r = raw.signed(&first, None, &url, Some(&json!({"onlyReturnExisting": true}))).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let env = env.restart_with(|c| c.limits.accounts_per_ip_per_hour = 2).await;
    let raw = Raw::new(&env);
    let r = raw.signed(&TestKey::new(), None, &url, Some(&json!({"termsOfServiceAgreed": true}))).await;
    assert_limited(&r, "limits.accounts_per_ip_per_hour");
    // Raised by the operator: allowed again.
    let env = env.restart_with(|c| c.limits.accounts_per_ip_per_hour = 3).await;
    Raw::new(&env).new_account(&TestKey::new()).await;
}

#[tokio::test]
async fn new_orders_per_account_and_pending_authorizations() {
    let env = TestEnv::start_with(|c| {
        c.limits.orders_per_account_per_hour = 2;
        c.limits.pending_authorizations_per_account = 5;
    })
    .await;
    let raw = Raw::new(&env);
    let key = TestKey::new();
    let kid = raw.new_account(&key).await;
    assert_eq!(new_order(&env, &raw, &key, &kid, &["a.localhost", "b.localhost"]).await.status, 201);
    // 2 pending + 4 asked > 5.
    let before = env.counts().await;
    let r = new_order(&env, &raw, &key, &kid, &["c.localhost", "d.localhost", "e.localhost", "f.localhost"]).await;
    assert_limited(&r, "limits.pending_authorizations_per_account");
    assert_eq!(env.counts().await, before);
    assert_eq!(new_order(&env, &raw, &key, &kid, &["c.localhost"]).await.status, 201);
    let r = new_order(&env, &raw, &key, &kid, &["d.localhost"]).await;
    assert_limited(&r, "limits.orders_per_account_per_hour");
    assert_eq!(env.counts().await.orders, 2);

    // Another account is not held back by the first one's orders.
    let other = TestKey::new();
    let other_kid = raw.new_account(&other).await;
    assert_eq!(new_order(&env, &raw, &other, &other_kid, &["d.localhost"]).await.status, 201);

    // Counted from the store: a restart does not reset it.
    let env = env.restart_with(|c| c.limits.orders_per_account_per_hour = 2).await;
    let raw = Raw::new(&env);
    assert_limited(&new_order(&env, &raw, &key, &kid, &["d.localhost"]).await, "limits.orders_per_account_per_hour");
}

/// The configuration of `env`'s server, as `vacme --data-dir <dir>` would load it.
fn config_of(env: &TestEnv) -> Config {
    let overrides = Overrides { data_dir: Some(env.dir.path().to_owned()), ..Default::default() };
    Config::load(None, Vec::new(), &overrides).unwrap()
}

/// Orders `name`, answers its http-01 challenge without the responder knowing the token, and
/// waits until the order is invalid.
async fn fail_validation(env: &TestEnv, raw: &Raw, key: &TestKey, kid: &str, name: &str) {
    let o = new_order(env, raw, key, kid, &[name]).await;
    assert_eq!(o.status, 201, "{}", o.body);
    let order_url = o.headers["location"].to_str().unwrap().to_owned();
    let authz = raw.signed(key, Some(kid), o.body["authorizations"][0].as_str().unwrap(), None).await;
    let chall = authz.body["challenges"].as_array().unwrap().iter().find(|c| c["type"] == "http-01").unwrap();
    let r = raw.signed(key, Some(kid), chall["url"].as_str().unwrap(), Some(&json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..100 {
        let o = raw.signed(key, Some(kid), &order_url, None).await;
        if o.body["status"] == "invalid" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the order of {name} did not become invalid");
}

#[tokio::test]
async fn failed_validations_pause_a_name_until_an_admin_lifts_it() {
    let env = TestEnv::start_with(|c| {
        c.limits.failed_validations_per_name_per_hour = 2;
        c.validation.retry_window_secs = 0;
    })
    .await;
    let raw = Raw::new(&env);
    let key = TestKey::new();
    let kid = raw.new_account(&key).await;
    let account_id = kid.rsplit('/').next().unwrap().to_owned();
    fail_validation(&env, &raw, &key, &kid, "flaky.localhost").await;
    // One failure: not yet paused.
    assert_eq!(new_order(&env, &raw, &key, &kid, &["flaky.localhost"]).await.status, 201);
    fail_validation(&env, &raw, &key, &kid, "flaky.localhost").await;

    let before = env.counts().await;
    let r = new_order(&env, &raw, &key, &kid, &["ok.localhost", "flaky.localhost"]).await;
    assert_limited(&r, "limits.failed_validations_per_name_per_hour");
    assert!(r.body["detail"].as_str().unwrap().contains("vacme limits unpause"));
    assert_eq!(r.body["subproblems"][0]["identifier"]["value"], "flaky.localhost");
    assert_eq!(r.body["subproblems"].as_array().unwrap().len(), 1, "only the paused name: {}", r.body);
    assert_eq!(env.counts().await, before);
    // The pending order made before the pause cannot be validated either.
    let pending = raw.signed(&key, Some(&kid), &env.url(&format!("/acme/acct/{account_id}/orders")), None).await;
    let pending_order =
        pending.body["orders"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let mut refused = false;
    for url in &pending_order {
        let o = raw.signed(&key, Some(&kid), url, None).await;
        if o.body["status"] == "pending" {
            let authz = raw.signed(&key, Some(&kid), o.body["authorizations"][0].as_str().unwrap(), None).await;
            let chall = &authz.body["challenges"][0];
            let r = raw.signed(&key, Some(&kid), chall["url"].as_str().unwrap(), Some(&json!({}))).await;
            assert_limited(&r, "limits.failed_validations_per_name_per_hour");
            refused = true;
        }
    }
    assert!(refused, "the order made before the pause was found");
    // Other names, and other accounts, are not paused.
    assert_eq!(new_order(&env, &raw, &key, &kid, &["ok.localhost"]).await.status, 201);
    let other = TestKey::new();
    let other_kid = raw.new_account(&other).await;
    assert_eq!(new_order(&env, &raw, &other, &other_kid, &["flaky.localhost"]).await.status, 201);

    // The admin sees the pause and lifts it.
    let config = config_of(&env);
    let list: Value =
        serde_json::from_str(&run(&config, Admin::PausesList { account: None, all: false }, true).await.unwrap())
            .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["account_id"], account_id.as_str());
    assert_eq!(list[0]["identifier_value"], "flaky.localhost");
    assert_eq!(list[0]["failures"], 2);
    let table = run(&config, Admin::PausesList { account: None, all: false }, false).await.unwrap();
    assert!(table.contains("dns:flaky.localhost") && table.contains("paused"), "{table}");
    let out = run(&config, Admin::Unpause { account: account_id.clone(), name: Some("flaky.localhost".into()) }, false)
        .await
        .unwrap();
    assert!(out.contains("lifted 1"), "{out}");
    assert_eq!(new_order(&env, &raw, &key, &kid, &["flaky.localhost"]).await.status, 201);
    let list = run(&config, Admin::PausesList { account: None, all: false }, true).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&list).unwrap(), json!([]));
    // Failures before the lift do not count again: one new failure does not pause it.
    fail_validation(&env, &raw, &key, &kid, "flaky.localhost").await;
    assert_eq!(new_order(&env, &raw, &key, &kid, &["flaky.localhost"]).await.status, 201);
    // An unknown account is "not found" (exit status 2 in the CLI).
    assert!(run(&config, Admin::Unpause { account: "nope".into(), name: None }, false).await.is_err());
}

#[tokio::test]
async fn the_orders_list_is_paged_with_link_next() {
    let env = TestEnv::start_with(|c| c.limits.orders_per_page = 2).await;
    let raw = Raw::new(&env);
    let key = TestKey::new();
    let kid = raw.new_account(&key).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let o = new_order(&env, &raw, &key, &kid, &[&format!("o{i}.localhost")]).await;
        made.push(o.headers["location"].to_str().unwrap().to_owned());
    }
    let account_id = kid.rsplit('/').next().unwrap();
    let mut url = env.url(&format!("/acme/acct/{account_id}/orders"));
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = raw.signed(&key, Some(&kid), &url, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        pages += 1;
        let orders = r.body["orders"].as_array().unwrap();
        assert!(orders.len() <= 2);
        seen.extend(orders.iter().map(|o| o.as_str().unwrap().to_owned()));
        let next = r
            .headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.ends_with("rel=\"next\""))
            .map(|v| v.trim_start_matches('<').split('>').next().unwrap().to_owned());
        match next {
            Some(n) => url = n,
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made, "every order once, oldest first");
    // The signed url must carry the cursor: a signature for the first page does not read another.
    let first = env.url(&format!("/acme/acct/{account_id}/orders"));
    let jws = key.sign(&json!({"alg": "ES256", "nonce": raw.nonce().await, "url": first, "kid": kid}), None);
    raw.post(&url, &jws).await.assert_problem(401, "unauthorized");
    // Another account's list, at any page, is not readable.
    let other = TestKey::new();
    let other_kid = raw.new_account(&other).await;
    raw.signed(&other, Some(&other_kid), &url, None).await.assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn long_urls_and_large_heads_are_refused() {
    let env = TestEnv::start().await;
    let http = env.http();
    let before = env.counts().await;
    let long = env.url(&format!("/acme/new-order?{}", "a".repeat(3000)));
    let r = http.post(&long).header("content-type", "application/jose+json").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 414);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:ietf:params:acme:error:malformed");
    let r = http.get(env.url("/directory")).header("x-padding", "p".repeat(20_000)).send().await;
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        // hyper may close the connection instead of answering over HTTP/2.
        Err(e) => assert!(e.is_request() || e.is_connect(), "{e}"),
    }
    assert_eq!(env.counts().await, before);
    assert_eq!(http.get(env.url("/directory")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    let env = TestEnv::start_with(|c| c.server.max_connections_per_ip = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(env.addr).await.unwrap());
    }
    // The fifth from the same address is closed at once.
    let mut fifth = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let _ = fifth.write_all(b"\x16\x03\x01").await;
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed, not held: {read:?}");
    // Another client address is served meanwhile.
    let pem = std::fs::read(&env.ca).unwrap();
    let other = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    assert_eq!(other.get(env.url("/directory")).send().await.unwrap().status(), 200);
    // Closing one frees a place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.http().get(env.url("/directory")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_slow_body_is_cut_off_with_408() {
    let env = TestEnv::start_with(|c| c.server.request_timeout_secs = 2).await;
    let before = env.counts().await;
    let pem = std::fs::read(&env.ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    let head = "POST /acme/new-order HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/jose+json\r\n\
                content-length: 1000\r\n\r\n{\"protected\":";
    s.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(read.is_ok(), "the server answers instead of waiting for the body");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("urn:ietf:params:acme:error:malformed"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(env.counts().await, before);
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.unwrap()).collect()
}
