//! The attack of issue 12 against the real OpenBao: the role `lab-internal` keeps
//! `use_csr_sans` at its default (true), so OpenBao would certify whatever names it finds in a
//! CSR. An account that proved `a.lab.test` finalizes with each hostile CSR naming
//! `victim.lab.test` as well (a name the role allows): vacme answers badCSR before Vault is
//! called, and `LIST pki_int/certs` shows that OpenBao signed nothing. A good CSR then issues
//! exactly one certificate, for exactly the proven name.

use std::time::Duration;

use instant_acme::{Error, OrderStatus, RetryPolicy};

use crate::{bao::Bao, install_provider, procs::tools_bin, vault_auth::Site, verify_chain};

#[path = "../support/hostile_csr.rs"]
mod build;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_csrs_are_refused_before_openbao_signs_anything() {
    let Some(tools) = tools_bin("hostile_csrs_are_refused_before_openbao_signs_anything") else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let auth = format!("token_file = \"{}\"\n", bao.token_file.display());
    let site = Site::start("hostile", dir.path(), &bao, &auth).await;
    let vacme = &site.vacme;
    let mut order = site.ready_order("a").await;
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
    let path = site.dir.join("a.pem");
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
        let cert = site.dir.join("direct.pem");
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
