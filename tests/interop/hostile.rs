//! The attack of issue 12 against the real OpenBao: the role `lab-internal` keeps
//! `use_csr_sans` at its default (true), so OpenBao would certify whatever names it finds in a
//! CSR. An account that proved `a.lab.test` finalizes with each hostile CSR naming
//! `victim.lab.test` as well (a name the role allows): vacme answers badCSR before Vault is
//! called, and `LIST pki_int/certs` shows that OpenBao signed nothing. A good CSR then issues
//! exactly one certificate, for exactly the proven name.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use instant_acme::{Account, ChallengeType, Error, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};

use crate::{
    Vacme,
    bao::{Bao, ZONE},
    config_args,
    dns::TestDns,
    install_provider,
    procs::{free_port, tools_bin},
    verify_chain,
};

#[path = "../support/hostile_csr.rs"]
mod build;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_csrs_are_refused_before_openbao_signs_anything() {
    let Some(tools) = tools_bin("hostile_csrs_are_refused_before_openbao_signs_anything") else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
    let (port, http01) = (free_port(), free_port());
    let vault = format!(
        "[vault]\naddress = \"{}\"\nmount = \"pki_int\"\nrole = \"lab-internal\"\n\n[vault.auth]\ntoken_file = \"{}\"\n",
        bao.addr,
        bao.token_file.display()
    );
    let vacme =
        Vacme::start(config_args(dir.path(), port, http01, &dns, &vault), port, &dir.path().join("data"), dir.path())
            .await;

    // An http-01 responder on the validation port.
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
    let mut order = account.new_order(&NewOrder::new(&[Identifier::Dns("a.lab.test".into())])).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let mut chall = authz.challenge(ChallengeType::Http01).unwrap();
        answers.lock().unwrap().insert(chall.token.clone(), chall.key_authorization().as_str().to_owned());
        chall.set_ready().await.unwrap();
    }
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);
    let before = bao.issued_serials().await;

    for (case, der) in build::hostile_csrs(&["a.lab.test"], "victim.lab.test") {
        match order.finalize_csr(&der).await {
            Err(Error::Api(p)) => assert_eq!(
                (p.status, p.r#type.as_deref()),
                (Some(400), Some("urn:ietf:params:acme:error:badCSR")),
                "{case}: {p:?}"
            ),
            other => panic!("{case}: finalize answered {other:?}, not badCSR\n{}", vacme.process.output()),
        }
        assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Ready, "{case}: the order stays ready");
        assert_eq!(bao.issued_serials().await, before, "{case}: OpenBao signed nothing");
    }

    let (_, good) = build::good_csrs(&["a.lab.test"]).into_iter().find(|(n, _)| *n == "certbot").unwrap();
    order.finalize_csr(&good).await.unwrap();
    let chain =
        order.poll_certificate(&RetryPolicy::default().timeout(Duration::from_secs(60)).backoff(1.2)).await.unwrap();
    let path = dir.path().join("a.pem");
    std::fs::write(&path, chain).unwrap();
    let (sans, issuer) = verify_chain(&path, &bao.root_pem);
    assert_eq!((sans, issuer.as_str()), (vec!["a.lab.test".to_owned()], "Lab Intermediate CA"));
    assert_eq!(bao.issued_serials().await.len(), before.len() + 1, "exactly one certificate, for the good CSR");

    // Why this matters: handed straight to OpenBao (as vacme did before its strict reader),
    // with vacme's own names in `alt_names`, the shapes of issue 12 get the victim certified.
    let shapes = [
        "two extensionRequest attributes, the first empty",
        "two extensionRequest attributes, the first only basicConstraints",
        "SAN led by [4] holding a NULL",
        "SAN led by [9] with one zero byte",
        "SAN led by a universal NULL",
    ];
    for (case, der) in build::hostile_csrs(&["a.lab.test"], "victim.lab.test") {
        if !shapes.contains(&case) {
            continue;
        }
        let pem = pem("CERTIFICATE REQUEST", &der);
        let signed = bao
            .api(
                reqwest::Method::POST,
                "pki_int/sign/lab-internal",
                Some(serde_json::json!({"csr": pem, "common_name": "a.lab.test", "alt_names": "a.lab.test"})),
            )
            .await;
        let cert = dir.path().join("direct.pem");
        let data = &signed["data"];
        let (leaf, ca) = (data["certificate"].as_str().unwrap(), data["issuing_ca"].as_str().unwrap());
        std::fs::write(&cert, format!("{leaf}\n{ca}\n")).unwrap();
        let (sans, _) = verify_chain(&cert, &bao.root_pem);
        assert!(sans.contains(&"victim.lab.test".to_owned()), "{case}: OpenBao alone would sign {sans:?}");
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}
