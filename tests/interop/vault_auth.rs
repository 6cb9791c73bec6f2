//! Vault auth that never lapses, against the real OpenBao: three vacme processes share one
//! OpenBao and keep issuing while their tokens live only seconds.
//! - a token file holding an 8 s renewable token: vacme renews it;
//! - AppRole with 6 s tokens and a 15 s max TTL: vacme renews, then logs in again;
//! - Kubernetes auth (OpenBao's `kubernetes` method, whose TokenReview calls go to a small API
//!   server this test runs): vacme logs in with the service-account JWT from a file, and picks up
//!   a rotated file at its next login.
//!
//! Midway, every AppRole token is revoked: the next signing call gets 403, logs in again and
//! issues.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use instant_acme::{Account, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    Vacme,
    bao::{Bao, ZONE},
    config_args,
    dns::TestDns,
    install_provider,
    lifecycle::step,
    procs::{free_port, tools_bin},
    verify_chain,
};

/// One vacme on the shared OpenBao, with an account and an http-01 responder.
pub(crate) struct Site {
    name: &'static str,
    pub(crate) dir: PathBuf,
    pub(crate) vacme: Vacme,
    account: Account,
    answers: Arc<Mutex<HashMap<String, String>>>,
    _dns: TestDns,
}

impl Site {
    pub(crate) async fn start(name: &'static str, root: &Path, bao: &Bao, auth: &str) -> Site {
        Site::start_with(name, root, bao, auth, "").await
    }

    /// `start` with more configuration sections (`extra`, TOML) before `[vault]`.
    pub(crate) async fn start_with(name: &'static str, root: &Path, bao: &Bao, auth: &str, extra: &str) -> Site {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
        let (port, http01) = (free_port(), free_port());
        let vault = format!("{extra}[vault]\naddress = \"{}\"\ntimeout_secs = 5\n\n[vault.auth]\n{auth}", bao.addr);
        let args = config_args(&dir, port, http01, &dns, &vault);
        let vacme = Vacme::start(args, port, &dir.join("data"), &dir).await;

        let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let shared = answers.clone();
        let app = axum::Router::new().route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(move |axum::extract::Path(t): axum::extract::Path<String>| {
                let v = shared.lock().unwrap().get(&t).cloned().unwrap_or_default();
                async move { v }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", http01)).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (account, _) = Account::builder_with_root(vacme.ca_bundle())
            .unwrap()
            .create(
                &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
                vacme.directory(),
                None,
            )
            .await
            .unwrap();
        Site { name, dir, vacme, account, answers, _dns: dns }
    }

    /// An order for `<host>.lab.test`, validated and ready to finalize.
    pub(crate) async fn ready_order(&self, host: &str) -> instant_acme::Order {
        let name = format!("{host}.{ZONE}");
        let mut order = self.account.new_order(&NewOrder::new(&[Identifier::Dns(name)])).await.unwrap();
        {
            let mut authzs = order.authorizations();
            let mut authz = authzs.next().await.unwrap().unwrap();
            let mut chall = authz.challenge(ChallengeType::Http01).unwrap();
            self.answers.lock().unwrap().insert(chall.token.clone(), chall.key_authorization().as_str().to_owned());
            chall.set_ready().await.unwrap();
        }
        assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
        order
    }

    /// One whole flow; the chain must lead to OpenBao's root.
    async fn issue(&self, host: &str, root_pem: &str) {
        let name = format!("{host}.{ZONE}");
        let mut order = self.ready_order(host).await;
        order.finalize().await.unwrap();
        let chain = order
            .poll_certificate(&RetryPolicy::default().timeout(Duration::from_secs(30)))
            .await
            .unwrap_or_else(|e| panic!("{}: {name}: {e}\n{}", self.name, self.vacme.process.output()));
        let path = self.dir.join(format!("{host}.pem"));
        std::fs::write(&path, chain).unwrap();
        let (sans, issuer) = verify_chain(&path, root_pem);
        assert_eq!((sans, issuer.as_str()), (vec![name], "Lab Intermediate CA"));
    }

    pub(crate) fn log(&self) -> String {
        self.vacme.process.output()
    }
}

/// A stand-in for the Kubernetes API's TokenReview: a JWT is authenticated while it is in `valid`.
async fn token_review_api(valid: Arc<Mutex<HashSet<String>>>, reviews: Arc<Mutex<u32>>) -> String {
    let app = axum::Router::new().route(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let token = body["spec"]["token"].as_str().unwrap_or_default().to_owned();
            let ok = valid.lock().unwrap().contains(&token);
            *reviews.lock().unwrap() += 1;
            async move {
                let status = if ok {
                    json!({"authenticated": true, "user": {
                        "username": "system:serviceaccount:vacme:vacme", "uid": "0d6b7e5c-vacme",
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:vacme"]}})
                } else {
                    json!({"authenticated": false, "error": "token is not valid"})
                };
                axum::Json(json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A service-account JWT as the kubelet projects it (OpenBao reads its claims; the TokenReview
/// API vouches for it). `n` makes each rotation a different token.
fn service_account_jwt(n: u32) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": "test"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(
        json!({
            "iss": "kubernetes/serviceaccount",
            "sub": "system:serviceaccount:vacme:vacme",
            "kubernetes.io/serviceaccount/namespace": "vacme",
            "kubernetes.io/serviceaccount/secret.name": format!("vacme-token-{n}"),
            "kubernetes.io/serviceaccount/service-account.name": "vacme",
            "kubernetes.io/serviceaccount/service-account.uid": "0d6b7e5c-vacme",
        })
        .to_string(),
    );
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode(format!("signature-{n}")))
}

fn write_private(path: &Path, value: &str) {
    std::fs::write(path, value).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_vault_tokens_are_renewed_and_replaced_while_issuing() {
    let test = "short_lived_vault_tokens_are_renewed_and_replaced_while_issuing";
    let Some(tools) = tools_bin(test) else { return };
    install_provider();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let post = |path: &'static str, body: Value| bao.api(Method::POST, path, Some(body));

    // A token that lives 8 s unless renewed.
    let short = post("auth/token/create", json!({"policies": ["vacme"], "ttl": "8s", "no_default_policy": true})).await;
    let short_token = short["auth"]["client_token"].as_str().unwrap().to_owned();
    let token_file = dir.path().join("short-token");
    write_private(&token_file, &short_token);

    // AppRole tokens of 6 s, renewable up to 15 s.
    post("auth/approle/role/short", json!({"token_policies": ["vacme"], "token_ttl": "6s", "token_max_ttl": "15s"}))
        .await;
    let role_id = bao.api(Method::GET, "auth/approle/role/short/role-id", None).await;
    let secret_id = post("auth/approle/role/short/secret-id", json!({})).await;
    let (role_id_file, secret_id_file) = (dir.path().join("short-role-id"), dir.path().join("short-secret-id"));
    write_private(&role_id_file, role_id["data"]["role_id"].as_str().unwrap());
    write_private(&secret_id_file, secret_id["data"]["secret_id"].as_str().unwrap());

    // Kubernetes auth, reviewing tokens with this test's API server.
    let valid: Arc<Mutex<HashSet<String>>> = Arc::default();
    let reviews: Arc<Mutex<u32>> = Arc::default();
    let k8s = token_review_api(valid.clone(), reviews.clone()).await;
    post("sys/auth/kubernetes", json!({"type": "kubernetes"})).await;
    post(
        "auth/kubernetes/config",
        // The API server here speaks plain HTTP; OpenBao still wants a CA for it.
        json!({"kubernetes_host": k8s, "disable_local_ca_jwt": true, "kubernetes_ca_cert": bao.root_pem,
               "token_reviewer_jwt": service_account_jwt(0)}),
    )
    .await;
    post(
        "auth/kubernetes/role/vacme",
        json!({"bound_service_account_names": ["vacme"], "bound_service_account_namespaces": ["vacme"],
               "token_policies": ["vacme"], "token_ttl": "6s", "token_max_ttl": "15s"}),
    )
    .await;
    let jwt_file = dir.path().join("sa-token");
    valid.lock().unwrap().insert(service_account_jwt(1));
    write_private(&jwt_file, &service_account_jwt(1));

    let token_site = Site::start(
        "token",
        dir.path(),
        &bao,
        &format!("method = \"token\"\ntoken_file = \"{}\"\n", token_file.display()),
    )
    .await;
    let approle_site = Site::start(
        "approle",
        dir.path(),
        &bao,
        &format!(
            "method = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"\n",
            role_id_file.display(),
            secret_id_file.display()
        ),
    )
    .await;
    let k8s_site = Site::start(
        "kubernetes",
        dir.path(),
        &bao,
        &format!("method = \"kubernetes\"\nkubernetes_role = \"vacme\"\njwt_file = \"{}\"\n", jwt_file.display()),
    )
    .await;
    step(started, "OpenBao and three vacme up");

    // About 36 s of issuing: several lifetimes of every token.
    let sites = [&token_site, &approle_site, &k8s_site];
    let mut issued = 0;
    for round in 0..12 {
        if round == 5 {
            // Every AppRole token dies at once; the secret_id still works.
            bao.api(Method::POST, "sys/leases/revoke-prefix/auth/approle", None).await;
            // The kubelet rotates the service-account token; the old one stops being valid.
            write_private(&jwt_file, &service_account_jwt(2));
            *valid.lock().unwrap() = HashSet::from([service_account_jwt(2)]);
            step(started, "AppRole tokens revoked, service-account token rotated");
        }
        let hosts: Vec<String> = sites.iter().map(|s| format!("{}-{round}", s.name)).collect();
        let flows = sites.iter().zip(&hosts).map(|(s, host)| s.issue(host, &bao.root_pem));
        futures_util::future::join_all(flows).await;
        issued += sites.len();
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    step(started, &format!("{issued} certificates issued"));
    assert_eq!(bao.issued_serials().await.len(), issued, "OpenBao signed once per order");

    // The fixed token was kept alive by renewal, not replaced: it is still valid now, long
    // after its first 8 s.
    let looked = bao.api(Method::POST, "auth/token/lookup", Some(json!({"token": short_token}))).await;
    assert!(looked["data"]["ttl"].as_u64().unwrap() > 0, "{looked}");
    assert!(token_site.log().contains("renewed the Vault token"), "{}", token_site.log());
    // AppRole and Kubernetes reached their max TTL and logged in again, more than once.
    for site in [&approle_site, &k8s_site] {
        let log = site.log();
        assert!(log.contains("renewed the Vault token"), "{}: {log}", site.name);
        let relogins = log.matches("logged in to Vault again").count();
        assert!(relogins >= 2, "{}: {relogins} logins before expiry\n{log}", site.name);
    }
    assert!(approle_site.log().contains("Vault answered 403; logging in again"), "{}", approle_site.log());
    // The rotated service-account token was read from the file at the next login.
    assert!(*reviews.lock().unwrap() >= 3);
    assert!(!k8s_site.log().contains("token is not valid"), "{}", k8s_site.log());
}
