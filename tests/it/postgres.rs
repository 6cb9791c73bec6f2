//! Two vacme replicas (the production `App`, in-process) sharing one PostgreSQL database, as
//! behind a load balancer: one base URL, the same local CA, and requests that land on either.
//! A nonce from one replica is accepted once by the other; racing finalizations on both issue
//! one certificate; a whole instant-acme flow alternating between them succeeds.
//!
//! Needs `VACME_TEST_POSTGRES_URL`, an administrator's URL to a server (scripts/postgres starts
//! one); each test makes its own database there. Unset, each test says SKIPPED and passes.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{
    Account, BodyWrapper, BytesResponse, ChallengeType, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use serde_json::{Value, json};

use crate::{
    env::{Raw, Reply, TestEnv, TestKey},
    pgdb::Database,
};

/// Replicas `a` and `b` on one database. Both answer for `a`'s base URL (the name clients use),
/// share `a`'s data directory (CA and EAB secret) and validate http-01 against `a`'s responder.
struct Replicas {
    a: TestEnv,
    b: TestEnv,
    db: Database,
}

impl Replicas {
    async fn start(test: &str) -> Option<Self> {
        let db = Database::create(&format!("postgres::{test}")).await?;
        let url = db.url.clone();
        let a = TestEnv::start_with(|c| c.database.url = Some(url.clone())).await;
        let (base, dir, port) = (a.url(""), a.dir.path().to_owned(), a.responder.port);
        let b = TestEnv::start_with(|c| {
            c.database.url = Some(url);
            c.server.base_url = Some(base);
            c.server.data_dir = dir;
            c.validation.http01_port = port;
        })
        .await;
        Some(Self { a, b, db })
    }

    /// The shared base URL, as the JWS `url` header names it.
    fn base(&self) -> String {
        self.a.url("")
    }

    /// `url` (under the shared base) as reached on replica `b` itself.
    fn on_b(&self, url: &str) -> String {
        url.replacen(&self.base(), &format!("https://localhost:{}", self.b.addr.port()), 1)
    }

    async fn stop(mut self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
        self.db.drop().await;
    }
}

/// A signed request with a nonce the caller got (from either replica), posted to `to`.
async fn post_with(
    raw: &Raw,
    key: &TestKey,
    kid: Option<&str>,
    nonce: &str,
    url: &str,
    to: &str,
    payload: Option<&Value>,
) -> Reply {
    let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": url});
    match kid {
        Some(kid) => protected["kid"] = json!(kid),
        None => protected["jwk"] = key.jwk(),
    }
    raw.post(to, &key.sign(&protected, payload)).await
}

/// A nonce from replica `b`.
async fn nonce_of_b(r: &Replicas, raw: &Raw) -> String {
    let res = raw.client.head(r.on_b(&r.a.url("/acme/new-nonce"))).send().await.unwrap();
    res.headers()["replay-nonce"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_nonce_from_one_replica_is_accepted_once_by_the_other() {
    let Some(r) = Replicas::start("a_nonce_from_one_replica_is_accepted_once_by_the_other").await else { return };
    let raw = Raw::new(&r.a);
    let key = TestKey::new();
    let url = r.a.url("/acme/new-account");
    let payload = json!({"termsOfServiceAgreed": true});

    let from_a = raw.nonce().await;
    let mut protected = json!({"alg": "ES256", "nonce": from_a, "url": url, "jwk": key.jwk()});
    let jws = key.sign(&protected, Some(&payload));
    let first = raw.post(&r.on_b(&url), &jws).await;
    assert_eq!(first.status, 201, "A's nonce at B: {}", first.body);
    raw.post(&r.on_b(&url), &jws).await.assert_problem(400, "badNonce");
    raw.post(&url, &jws).await.assert_problem(400, "badNonce");

    // And the other way: B's nonce at A, once.
    protected["nonce"] = json!(nonce_of_b(&r, &raw).await);
    let jws = key.sign(&protected, Some(&payload));
    assert_eq!(raw.post(&url, &jws).await.status, 200, "B's nonce at A (the account exists)");
    raw.post(&url, &jws).await.assert_problem(400, "badNonce");
    raw.post(&r.on_b(&url), &jws).await.assert_problem(400, "badNonce");
    r.stop().await;
}

#[tokio::test]
async fn racing_finalizations_on_both_replicas_issue_one_certificate() {
    let Some(r) = Replicas::start("racing_finalizations_on_both_replicas_issue_one_certificate").await else {
        return;
    };
    let raw = Raw::new(&r.a);
    let key = TestKey::new();
    let kid = raw.new_account(&key).await;
    let thumbprint = vacme::jws::PublicJwk::from_json(&key.jwk()).unwrap().thumbprint();

    // The order on A; its challenge answered on B.
    let name = "race.localhost";
    let new_order = r.a.url("/acme/new-order");
    let ids = json!({"identifiers": [{"type": "dns", "value": name}]});
    let o = post_with(&raw, &key, Some(&kid), &raw.nonce().await, &new_order, &new_order, Some(&ids)).await;
    assert_eq!(o.status, 201, "{}", o.body);
    let order_url = o.headers["location"].to_str().unwrap().to_owned();
    let authz_url = o.body["authorizations"][0].as_str().unwrap().to_owned();
    let authz = post_with(&raw, &key, Some(&kid), &raw.nonce().await, &authz_url, &authz_url, None).await;
    let chall = authz.body["challenges"].as_array().unwrap().iter().find(|c| c["type"] == "http-01").unwrap();
    let token = chall["token"].as_str().unwrap();
    r.a.responder.set(token, &format!("{token}.{thumbprint}"));
    let chall_url = chall["url"].as_str().unwrap();
    let nonce = nonce_of_b(&r, &raw).await;
    let started = post_with(&raw, &key, Some(&kid), &nonce, chall_url, &r.on_b(chall_url), Some(&json!({}))).await;
    assert_eq!(started.status, 200, "{}", started.body);
    let store = &r.a.state.store;
    let order_id = order_url.rsplit('/').next().unwrap().to_owned();
    let status = |want: &'static str| {
        let order_id = order_id.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let s = store.order(&order_id).await.unwrap().unwrap().status.as_str().to_owned();
                if s == want || Instant::now() > deadline {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(status("ready").await, "ready");

    // Eight finalizations at once, half on each replica, each with a nonce of the other.
    let csr = {
        let cert_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.serialize_request(&cert_key).unwrap().der().to_vec()
    };
    let payload = json!({"csr": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &csr)});
    let finalize = o.body["finalize"].as_str().unwrap().to_owned();
    let mut requests = Vec::new();
    for i in 0..8 {
        let (nonce, to) = if i % 2 == 0 {
            (nonce_of_b(&r, &raw).await, finalize.clone())
        } else {
            (raw.nonce().await, r.on_b(&finalize))
        };
        requests.push((nonce, to));
    }
    let replies = futures_util::future::join_all(
        requests.iter().map(|(nonce, to)| post_with(&raw, &key, Some(&kid), nonce, &finalize, to, Some(&payload))),
    )
    .await;
    let won: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(won.len(), 1, "one finalization wins: {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for lost in replies.iter().filter(|r| r.status != 200) {
        lost.assert_problem(403, "orderNotReady");
    }

    assert_eq!(status("valid").await, "valid");
    // Give a second issuance (if any) the time to happen before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.a.counts().await.certificates, 1, "exactly one certificate");
    assert_eq!(r.b.counts().await.certificates, 1, "the same store on both");
    r.stop().await;
}

/// An instant-acme HTTP client that sends each request to the next replica in turn (rewriting the
/// shared base URL to that replica's address), and counts `badNonce` answers.
struct Alternating {
    client: reqwest::Client,
    base: String,
    replicas: [String; 2],
    next: AtomicUsize,
    hits: Arc<[AtomicUsize; 2]>,
    bad_nonces: Arc<AtomicUsize>,
}

impl HttpClient for Alternating {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % 2;
        self.hits[i].fetch_add(1, Ordering::Relaxed);
        let url = req.uri().to_string().replacen(&self.base, &self.replicas[i], 1);
        let (client, bad_nonces) = (self.client.clone(), self.bad_nonces.clone());
        Box::pin(async move {
            let other = |e: reqwest::Error| instant_acme::Error::Other(Box::new(e));
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let res =
                client.request(parts.method, url).headers(parts.headers).body(body).send().await.map_err(other)?;
            let mut out = http::Response::builder().status(res.status());
            for (k, v) in res.headers() {
                out = out.header(k, v);
            }
            let bytes = res.bytes().await.map_err(other)?;
            if String::from_utf8_lossy(&bytes).contains("urn:ietf:params:acme:error:badNonce") {
                bad_nonces.fetch_add(1, Ordering::Relaxed);
            }
            Ok(BytesResponse::from(out.body(Full::new(bytes)).unwrap()))
        })
    }
}

#[tokio::test]
async fn instant_acme_alternating_between_replicas_gets_a_certificate() {
    let Some(r) = Replicas::start("instant_acme_alternating_between_replicas_gets_a_certificate").await else {
        return;
    };
    let hits: Arc<[AtomicUsize; 2]> = Arc::default();
    let bad_nonces: Arc<AtomicUsize> = Arc::default();
    let http = Alternating {
        client: r.a.http(),
        base: r.base(),
        replicas: [r.base(), format!("https://localhost:{}", r.b.addr.port())],
        next: AtomicUsize::new(0),
        hits: hits.clone(),
        bad_nonces: bad_nonces.clone(),
    };
    let (account, _) = Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
            r.a.directory.clone(),
            None,
        )
        .await
        .unwrap();
    let ids = [Identifier::Dns("alt-1.localhost".into()), Identifier::Dns("alt-2.localhost".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.unwrap();
        let mut chall = authz.challenge(ChallengeType::Http01).unwrap();
        r.a.responder.set(&chall.token, chall.key_authorization().as_str());
        chall.set_ready().await.unwrap();
    }
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
    order.finalize().await.unwrap();
    let chain = order.poll_certificate(&RetryPolicy::default()).await.unwrap();
    assert!(chain.starts_with("-----BEGIN CERTIFICATE-----"), "{chain}");

    let (on_a, on_b) = (hits[0].load(Ordering::Relaxed), hits[1].load(Ordering::Relaxed));
    assert!(on_a >= 5 && on_b >= 5, "requests on A: {on_a}, on B: {on_b}");
    assert_eq!(bad_nonces.load(Ordering::Relaxed), 0, "every nonce of one replica was good at the other");
    assert_eq!(r.a.counts().await.certificates, 1);
    r.stop().await;
}

/// One vacme on SQLite moves to PostgreSQL: `vacme copy-store` copies every row, and vacme on
/// PostgreSQL then serves the same account, order and certificate, and issues more.
#[tokio::test]
async fn copy_store_moves_a_sqlite_vacme_to_postgresql() {
    let Some(db) = Database::create("postgres::copy_store_moves_a_sqlite_vacme_to_postgresql").await else { return };
    let env = TestEnv::start().await;
    let (account, credentials) = env.account().await;
    let (order_url, chain) = env.issue(&account, &["moved.localhost"]).await;
    let before = env.counts().await;
    let overrides = vacme::config::Overrides { data_dir: Some(env.dir.path().to_owned()), ..Default::default() };
    let config = vacme::config::Config::load(None, Vec::new(), &overrides).unwrap();
    let audit_before = env.state.store.audit_events(None, 100).await.unwrap().len();
    let window = vacme::acme::renewal::WindowPercents { start: 33, end: 67 };
    let now = env.state.clock.unix();
    let states_before = env.state.store.renewal_counts(window, now).await.unwrap();

    let out = vacme::cli::run(&config, vacme::cli::Admin::CopyStore { to: db.url.clone() }, true).await.unwrap();
    let copied: Value = serde_json::from_str(&out).unwrap();
    assert!(copied.as_array().unwrap().iter().any(|t| t["table"] == "certificates" && t["rows"] == 1), "{copied}");
    // A second copy into the now non-empty store is refused and changes nothing.
    assert!(vacme::cli::run(&config, vacme::cli::Admin::CopyStore { to: db.url.clone() }, false).await.is_err());

    let url = db.url.clone();
    let moved = env.restart_with(move |c| c.database.url = Some(url)).await;
    assert!(moved.state.store.is_postgres());
    assert_eq!(moved.counts().await, before, "every row arrived");
    assert_eq!(moved.state.store.renewal_counts(window, now).await.unwrap(), states_before, "and their states");
    assert_eq!(moved.state.store.audit_events(None, 100).await.unwrap().len(), audit_before);
    // The same account key finds its account, sees its order and certificate, and orders again.
    let account = Account::builder_with_root(&moved.ca).unwrap().from_credentials(credentials).await.unwrap();
    let mut order = account.order(order_url).await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Valid);
    assert_eq!(order.certificate().await.unwrap().unwrap(), chain);
    moved.issue(&account, &["moved-again.localhost"]).await;
    assert_eq!(moved.counts().await.certificates, 2);
    // The PostgreSQL counters go on from the copied rows.
    moved.issue(&account, &["moved.localhost"]).await;
    let states = moved.state.store.renewal_counts(window, now).await.unwrap();
    use vacme::acme::renewal::RenewalState;
    assert_eq!((states.of(RenewalState::Renewed), states.of(RenewalState::Active)), (1, 2), "{states:?}");
    drop(moved);
    db.drop().await;
}
