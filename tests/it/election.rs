//! The issuance worker after a signing call that failed, against a fake Vault (an error path;
//! tests/interop/ha.rs is the real cluster): a call every node redirected (an election) or
//! answered sealed cannot have signed, so the retry signs at once; a call answered with a 500
//! may have signed, so the retry looks in `pki_int/certs` first (twice, 2 s apart) and only then
//! signs. Either way the order ends valid with one certificate.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, extract::Request, response::IntoResponse};
use http::{Method, StatusCode};
use rcgen::{BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

use crate::env::TestEnv;

/// A Vault that answers `sign` from a script of statuses, then signs the CSR with its own CA;
/// it counts its `sign` calls and its `LIST pki_int/certs`.
#[derive(Clone)]
struct FakeVault {
    script: Arc<Mutex<VecDeque<u16>>>,
    ca_pem: String,
    issuer: Arc<Issuer<'static, KeyPair>>,
    signs: Arc<AtomicUsize>,
    lists: Arc<AtomicUsize>,
}

impl FakeVault {
    async fn start(script: &[u16]) -> (FakeVault, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Fake Vault CA");
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let fake = FakeVault {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            ca_pem,
            issuer: Arc::new(Issuer::new(params, key)),
            signs: Arc::default(),
            lists: Arc::default(),
        };
        let served = fake.clone();
        let app = Router::new().fallback(move |req: Request| {
            let fake = served.clone();
            async move { fake.answer(req).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, url)
    }

    async fn answer(&self, req: Request) -> axum::response::Response {
        let (method, path, query) =
            (req.method().clone(), req.uri().path().to_owned(), req.uri().query().unwrap_or("").to_owned());
        match (method, path.as_str()) {
            (Method::GET, "/v1/sys/health") => StatusCode::OK.into_response(),
            (Method::GET, "/v1/pki_int/ca_chain") => self.ca_pem.clone().into_response(),
            (Method::GET, "/v1/pki_int/certs") if query.contains("list=true") => {
                self.lists.fetch_add(1, Ordering::SeqCst);
                // As Vault answers an empty list.
                (StatusCode::NOT_FOUND, axum::Json(json!({"errors": []}))).into_response()
            }
            (Method::POST, "/v1/pki_int/sign/lab-internal") => {
                self.signs.fetch_add(1, Ordering::SeqCst);
                let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap();
                let scripted = self.script.lock().unwrap().pop_front();
                if let Some(code) = scripted {
                    let why = if code == 503 { "Vault is sealed" } else { "scripted failure" };
                    let errors = json!({"errors": [why]});
                    return (StatusCode::from_u16(code).unwrap(), axum::Json(errors)).into_response();
                }
                let csr = CertificateSigningRequestParams::from_pem(body["csr"].as_str().unwrap()).unwrap();
                let leaf = csr.signed_by(&self.issuer).unwrap();
                let data = json!({
                    "certificate": leaf.pem(), "issuing_ca": self.ca_pem, "ca_chain": [self.ca_pem],
                    "serial_number": "01:02",
                });
                axum::Json(json!({"data": data})).into_response()
            }
            _ => (StatusCode::NOT_FOUND, axum::Json(json!({"errors": []}))).into_response(),
        }
    }
}

/// One order through vacme in front of a fake Vault that first answers `sign` with `first`;
/// returns (sign calls, LISTs of pki_int/certs).
async fn order_after(first: u16) -> (usize, usize) {
    let (fake, url) = FakeVault::start(&[first]).await;
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "hvs.test").unwrap();
    let vault = format!("address = \"{url}\"\ntimeout_secs = 5\n[auth]\ntoken_file = \"{}\"\n", token.path().display());
    let env = TestEnv::start_with(|c| {
        c.vault = Some(toml::from_str(&vault).unwrap());
        c.issuance.finalize_wait_secs = 1;
    })
    .await;
    let (account, _) = env.account().await;
    let (_, chain) = env.issue(&account, &["elected.localhost"]).await;
    assert!(chain.contains("BEGIN CERTIFICATE"));
    let counts = env.counts().await;
    assert_eq!(counts.certificates, 1, "one certificate for the order");
    (fake.signs.load(Ordering::SeqCst), fake.lists.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_that_was_redirected_is_sent_again_without_a_look_for_its_certificate() {
    assert_eq!(order_after(307).await, (2, 0), "redirected: signed at the next attempt, nothing listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_that_met_a_sealed_node_is_sent_again_without_a_look_for_its_certificate() {
    assert_eq!(order_after(503).await, (2, 0), "sealed: signed at the next attempt, nothing listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_answered_with_a_500_is_looked_for_before_it_is_sent_again() {
    assert_eq!(order_after(500).await, (2, 2), "a 500 may follow a signature: looked for twice, then signed");
}
