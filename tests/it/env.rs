//! A running vacme (the production `App`, in-process, on a free port) with an http-01 responder.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, extract::Path as UrlPath, routing::get, serve::ListenerExt};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use instant_acme::{
    Account, AccountCredentials, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};
use vacme::{
    App, AppState,
    config::{Config, Overrides},
    store::Counts,
};

/// An http-01 responder: token -> key authorization.
#[derive(Clone)]
pub struct Responder {
    pub port: u16,
    answers: Arc<Mutex<HashMap<String, String>>>,
    accepted: Arc<AtomicUsize>,
}

impl Responder {
    pub async fn start() -> Self {
        let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let shared = answers.clone();
        let app = Router::new().route(
            "/.well-known/acme-challenge/{token}",
            get(move |UrlPath(token): UrlPath<String>| {
                let shared = shared.clone();
                async move {
                    match shared.lock().unwrap().get(&token) {
                        Some(v) => (http::StatusCode::OK, v.clone()),
                        None => (http::StatusCode::NOT_FOUND, "not here".to_owned()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { port, answers, accepted }
    }

    /// TCP connections this responder has accepted: what shows validation reached it at all.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn set(&self, token: &str, key_authorization: &str) {
        self.answers.lock().unwrap().insert(token.to_owned(), key_authorization.to_owned());
    }
}

pub struct TestEnv {
    pub dir: Arc<tempfile::TempDir>,
    pub addr: SocketAddr,
    pub directory: String,
    pub ca: PathBuf,
    pub state: AppState,
    pub responder: Responder,
    /// The dashboard's address (each test its own port).
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TestEnv {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let responder = Responder::start().await;
        Self::launch(dir, "127.0.0.1:0".parse().unwrap(), responder, tweak).await
    }

    async fn launch(
        dir: Arc<tempfile::TempDir>,
        listen: SocketAddr,
        responder: Responder,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        install_provider();
        let overrides = Overrides {
            listen: Some(listen),
            data_dir: Some(dir.path().to_owned()),
            http01_port: Some(responder.port),
        };
        let mut config = Config::load(None, Vec::new(), &overrides).unwrap();
        config.validation.retry_window_secs = 3;
        config.validation.timeout_secs = 2;
        // The tests' names (lab.test through the tests' DNS server, 127.0.0.1 as an IP
        // identifier) are served on loopback, which only a listed range reaches; `.localhost`
        // names would validate there without it.
        config.validation.allowed_targets = vec!["127.0.0.0/8".into()];
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        tweak(&mut config);
        config.validate().unwrap();
        let app = App::build(config).await.unwrap();
        let addr = app.local_addr().unwrap();
        let directory = app.directory_url();
        let ca = app.ca_bundle().clone();
        let state = app.state().clone();
        let admin = app.admin_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            app.serve(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self { dir, addr, directory, ca, state, responder, admin, stop: Some(tx), task: Some(task) }
    }

    /// Stops vacme (graceful shutdown) and starts it again on the same port and data directory.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// As `restart`, with the configuration changed by `tweak`.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> Self {
        self.shutdown().await;
        let (dir, addr, responder) = (self.dir.clone(), self.addr, self.responder.clone());
        Self::launch(dir, addr, responder, tweak).await
    }

    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub async fn counts(&self) -> Counts {
        self.state.store.counts().await.unwrap()
    }

    /// A new instant-acme account on this server.
    pub async fn account(&self) -> (Account, AccountCredentials) {
        Account::builder_with_root(&self.ca)
            .unwrap()
            .create(
                &NewAccount {
                    contact: &["mailto:ops@lab.example"],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                None,
            )
            .await
            .unwrap()
    }

    /// Orders `names`, answers every http-01 challenge, finalizes and returns (order URL, PEM chain).
    pub async fn issue(&self, account: &Account, names: &[&str]) -> (String, String) {
        let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns((*n).to_owned())).collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
        self.answer_all(&mut order).await;
        let status = order.poll_ready(&RetryPolicy::default()).await.unwrap();
        assert_eq!(status, OrderStatus::Ready);
        order.finalize().await.unwrap();
        let chain = order.poll_certificate(&RetryPolicy::default()).await.unwrap();
        (order.url().to_owned(), chain)
    }

    pub async fn answer_all(&self, order: &mut instant_acme::Order) {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.unwrap();
            let mut chall = authz.challenge(ChallengeType::Http01).expect("http-01 offered");
            self.responder.set(&chall.token, chall.key_authorization().as_str());
            chall.set_ready().await.unwrap();
        }
    }

    /// A raw HTTPS client trusting vacme's CA.
    pub fn http(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca).unwrap();
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()).build().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        self.directory.replace("/directory", path)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// An ES256 account key that signs JWS by hand, for requests a normal client would never send.
pub struct TestKey {
    pair: EcdsaKeyPair,
}

impl TestKey {
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self { pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap() }
    }

    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// A flattened JWS over `protected` and `payload` (`None` = POST-as-GET).
    pub fn sign(&self, protected: &Value, payload: Option<&Value>) -> Value {
        let p = URL_SAFE_NO_PAD.encode(protected.to_string());
        let body = payload.map(|v| URL_SAFE_NO_PAD.encode(v.to_string())).unwrap_or_default();
        let sig = self.pair.sign(&SystemRandom::new(), format!("{p}.{body}").as_bytes()).unwrap();
        json!({ "protected": p, "payload": body, "signature": URL_SAFE_NO_PAD.encode(sig.as_ref()) })
    }
}

/// What a raw request got back.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(
            (self.status, self.problem_type()),
            (status, format!("urn:ietf:params:acme:error:{kind}").as_str()),
            "body: {}",
            self.body
        );
        assert_eq!(self.headers.get("content-type").unwrap(), "application/problem+json");
        assert!(self.headers.contains_key("replay-nonce"), "every ACME response carries a fresh nonce");
    }
}

/// Raw ACME requests.
pub struct Raw {
    pub client: reqwest::Client,
    pub env_base: String,
}

impl Raw {
    pub fn new(env: &TestEnv) -> Self {
        Self { client: env.http(), env_base: env.url("") }
    }

    pub async fn nonce(&self) -> String {
        let res = self.client.head(format!("{}/acme/new-nonce", self.env_base)).send().await.unwrap();
        res.headers()["replay-nonce"].to_str().unwrap().to_owned()
    }

    pub async fn post_bytes(&self, url: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let res = self.client.post(url).header("content-type", content_type).body(body).send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply { status, headers, body }
    }

    pub async fn post(&self, url: &str, jws: &Value) -> Reply {
        self.post_bytes(url, "application/jose+json", jws.to_string().into_bytes()).await
    }

    /// Signs with a fresh nonce and `url` = the request URL; `kid` None means embed the jwk.
    pub async fn signed(&self, key: &TestKey, kid: Option<&str>, url: &str, payload: Option<&Value>) -> Reply {
        let mut protected = json!({ "alg": "ES256", "nonce": self.nonce().await, "url": url });
        match kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = key.jwk(),
        }
        self.post(url, &key.sign(&protected, payload)).await
    }

    /// Creates an account for `key`; returns its URL (the kid).
    pub async fn new_account(&self, key: &TestKey) -> String {
        let url = format!("{}/acme/new-account", self.env_base);
        let r = self.signed(key, None, &url, Some(&json!({"termsOfServiceAgreed": true}))).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.headers["location"].to_str().unwrap().to_owned()
    }
}
