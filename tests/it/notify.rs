//! Webhooks: a receiver on loopback gets each event once, signed; one that is down for 30 s gets
//! every event it missed, in order, once it is back, and a restart of vacme meanwhile loses none.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use instant_acme::RevocationRequest;
use ring::hmac;
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use vacme::config::{Config, WebhookConfig, WebhookFormat};

use crate::env::TestEnv;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    event: String,
    delivery: i64,
    signature: String,
    body: Vec<u8>,
}

/// A webhook receiver that can be stopped and started again on the same port.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

async fn take(State(got): State<Arc<Mutex<Vec<Got>>>>, headers: HeaderMap, body: Bytes) -> &'static str {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    got.lock().unwrap().push(Got {
        event: header("x-vacme-event"),
        delivery: header("x-vacme-delivery").parse().unwrap_or(-1),
        signature: header("x-vacme-signature"),
        body: body.to_vec(),
    });
    "ok"
}

impl Receiver {
    async fn start() -> Self {
        let mut r = Self { addr: "127.0.0.1:0".parse().unwrap(), got: Arc::default(), running: None };
        r.resume().await;
        r
    }

    async fn resume(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let app = Router::new().route("/hook", post(take)).with_state(self.got.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((tx, task));
    }

    async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.await.unwrap();
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until `n` requests arrived.
    async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.got().len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.got()
    }
}

const SECRET: &str = "a-shared-webhook-secret";

fn with_webhook(c: &mut Config, addr: SocketAddr, secret_file: std::path::PathBuf) {
    c.notify.webhooks = vec![WebhookConfig {
        name: Some("ops".into()),
        url: format!("http://{addr}/hook"),
        events: vec!["issued".into(), "revoked".into(), "validation_failed".into()],
        format: WebhookFormat::Json,
        secret_file: Some(secret_file),
    }];
}

fn verify(got: &Got) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let hex = got.signature.strip_prefix("sha256=").unwrap_or_else(|| panic!("no signature: {got:?}"));
    let tag: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    hmac::verify(&key, &got.body, &tag).unwrap_or_else(|_| panic!("bad signature on {got:?}"));
}

fn body(got: &Got) -> Value {
    serde_json::from_slice(&got.body).unwrap()
}

#[tokio::test]
async fn a_receiver_gets_every_event_once_in_order_across_its_outage_and_a_restart() {
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("hook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let mut receiver = Receiver::start().await;
    let addr = receiver.addr;
    let env = TestEnv::start_with(|c| with_webhook(c, addr, secret_file.clone())).await;
    let (account, _) = env.account().await;

    // Issued and revoked, each delivered once, signed, naming the certificate.
    let (_, chain) = env.issue(&account, &["w1.localhost"]).await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].event, "issued");
    verify(&got[0]);
    let issued = body(&got[0]);
    assert_eq!(issued["event"], "issued");
    assert_eq!(issued["names"], serde_json::json!(["w1.localhost"]));
    let cert_id = issued["certificate"]["id"].as_str().unwrap().to_owned();
    assert!(issued["certificate"]["serial"].is_string(), "{issued}");
    let der = x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes()).next().unwrap().unwrap().contents;
    account.revoke(&RevocationRequest { certificate: &der.clone().into(), reason: None }).await.unwrap();
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.iter().map(|g| g.event.as_str()).collect::<Vec<_>>(), ["issued", "revoked"]);
    verify(&got[1]);
    assert_eq!(body(&got[1])["certificate"]["id"], cert_id.as_str());

    // The receiver goes away for 30 s; meanwhile three events happen and vacme restarts.
    receiver.stop().await;
    let (_, second) = env.issue(&account, &["w2.localhost"]).await;
    env.issue(&account, &["w3.localhost"]).await;
    let der = x509_parser::pem::Pem::iter_from_buffer(second.as_bytes()).next().unwrap().unwrap().contents;
    account.revoke(&RevocationRequest { certificate: &der.into(), reason: None }).await.unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let env = env.restart_with(|c| with_webhook(c, addr, secret_file.clone())).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(receiver.got().len(), 2, "nothing arrives while the receiver is down");
    receiver.resume().await;

    let got = receiver.wait_for(5, Duration::from_secs(60)).await;
    let kinds: Vec<&str> = got.iter().map(|g| g.event.as_str()).collect();
    assert_eq!(kinds, ["issued", "revoked", "issued", "issued", "revoked"], "{got:?}");
    let names: Vec<Value> = got[2..].iter().map(|g| body(g)["names"][0].clone()).collect();
    assert_eq!(names, ["w2.localhost", "w3.localhost", "w2.localhost"]);
    for g in &got {
        verify(g);
    }
    let deliveries: Vec<i64> = got.iter().map(|g| g.delivery).collect();
    assert!(deliveries.windows(2).all(|w| w[0] < w[1]), "in the order they happened, once each: {deliveries:?}");
    // Nothing more comes: each event once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.got().len(), 5);

    let metrics = env.http().get(env.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vacme_webhook_deliveries_total{webhook=\"ops\",outcome=\"delivered\"} 3\n"), "{metrics}");
    assert!(metrics.contains("vacme_webhook_dropped_total{webhook=\"ops\"} 0\n"), "{metrics}");
    assert_eq!(env.state.store.webhook_cursors().await.unwrap()[0].2, 0, "nothing dropped");
}

#[test]
fn a_webhook_at_a_refused_address_is_refused_when_the_configuration_loads() {
    let with_url = |url: &str, allowed: &[&str]| {
        let mut c = Config::load(None, Vec::new(), &vacme::config::Overrides::default()).unwrap();
        c.validation.allowed_targets = allowed.iter().map(|a| (*a).to_owned()).collect();
        c.notify.webhooks = vec![WebhookConfig {
            name: None,
            url: url.into(),
            events: vec!["issued".into()],
            format: WebhookFormat::Text,
            secret_file: None,
        }];
        c.validate().map_err(|e| e.to_string())
    };
    // 169.254.169.254 is link-local (cloud metadata): refused whatever allowed_targets lists.
    let err = with_url("http://169.254.169.254/hook", &["169.254.0.0/16"]).unwrap_err();
    assert!(err.contains("webhook-1") && err.contains("169.254.169.254"), "{err}");
    // Loopback and private ranges only when listed.
    assert!(with_url("http://127.0.0.1:9/hook", &[]).unwrap_err().contains("allowed_targets"));
    assert!(with_url("http://[::ffff:10.0.0.5]/hook", &[]).is_err(), "a mapped address is judged as what it carries");
    with_url("http://127.0.0.1:9/hook", &["127.0.0.0/8"]).unwrap();
    with_url("https://hooks.lab.internal/vacme", &[]).unwrap();
}

#[tokio::test]
async fn a_renewal_is_sent_as_renewed_naming_the_certificate_it_renews_and_the_client() {
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("hook.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let receiver = Receiver::start().await;
    let addr = receiver.addr;
    let env = TestEnv::start_with(|c| {
        with_webhook(c, addr, secret_file.clone());
        c.notify.webhooks[0].events = vacme::config::WEBHOOK_EVENTS.iter().map(|e| (*e).to_owned()).collect();
    })
    .await;
    let (account, _) = env.account().await;
    env.issue(&account, &["w5.localhost"]).await;
    env.issue(&account, &["w5.localhost"]).await;
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.iter().map(|g| g.event.as_str()).collect::<Vec<_>>(), ["issued", "renewed"], "{got:?}");
    let (first, second) = (body(&got[0]), body(&got[1]));
    assert_eq!(second["certificate"]["renews"], serde_json::json!([first["certificate"]["id"]]));
    assert_eq!(second["certificate"]["state"], "active");
    assert_eq!(second["client"]["address"], "127.0.0.1");
    assert!(second["client"]["user_agent"].as_str().is_some_and(|ua| !ua.is_empty()), "{second}");
}

/// An HTTPS receiver with a certificate from a CA of its own; returns its address, the CA's
/// PEM, and what it got.
async fn tls_receiver() -> (SocketAddr, String, Arc<Mutex<Vec<Got>>>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "webhook test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let app = Router::new().route("/hook", post(take)).with_state(got.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca.pem(), got)
}

#[tokio::test]
async fn an_https_receiver_is_reached_when_its_root_is_in_notify_ca_bundle_and_only_then() {
    let (addr, ca_pem, got) = tls_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, ca_pem).unwrap();
    let hook = |c: &mut Config| {
        c.notify.webhooks = vec![WebhookConfig {
            name: Some("tls".into()),
            url: format!("https://{addr}/hook"),
            events: vec!["issued".into()],
            format: WebhookFormat::Json,
            secret_file: None,
        }];
    };
    // Without its root (the system's roots do not have it): refused, retried, nothing arrives.
    let env = TestEnv::start_with(hook).await;
    let (account, _) = env.account().await;
    env.issue(&account, &["t1.localhost"]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(got.lock().unwrap().is_empty(), "a certificate from an unknown CA is refused");
    // With it: the pending event arrives.
    let env = env
        .restart_with(|c| {
            hook(c);
            c.notify.ca_bundle = Some(bundle.clone());
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(body(&got[0])["names"], serde_json::json!(["t1.localhost"]));
    drop(env);
}
