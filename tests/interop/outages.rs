//! Vault sealed in the middle of finalize, against the real OpenBao: finalize answers
//! `processing`, `/readyz` says the CA is unavailable while `/healthz` stays up, and after the
//! unseal the order is issued, signed once.

use std::time::Duration;

use instant_acme::{OrderStatus, RetryPolicy};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{bao::Bao, install_provider, procs::tools_bin, vault_auth::Site, verify_chain};

/// The dev server prints its unseal key once, after start (the output may lag).
async fn unseal_key(bao: &Bao) -> String {
    for _ in 0..100 {
        let out = bao.process.output();
        if let Some(key) = out.lines().find_map(|l| l.trim().strip_prefix("Unseal Key: ")) {
            return key.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no unseal key in the dev server's output\n{}", bao.process.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_sealed_during_finalize_then_unsealed_issues_the_order_once() {
    let Some(tools) = tools_bin("vault_sealed_during_finalize_then_unsealed_issues_the_order_once") else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let key = unseal_key(&bao).await;
    // AppRole, so the login after the unseal is a real one.
    let auth = format!(
        "method = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"\n",
        bao.role_id_file.display(),
        bao.secret_id_file.display()
    );
    let site = Site::start("sealed", dir.path(), &bao, &auth).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(site.vacme.ca_bundle()).unwrap()).unwrap())
        .build()
        .unwrap();
    let base = site.vacme.directory().replace("/directory", "");
    let mut order = site.ready_order("nas").await;

    bao.api(Method::PUT, "sys/seal", None).await;
    order.finalize().await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Processing, "finalize answers processing while Vault is sealed");
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["issuer"]["state"], "unavailable", "{body}");
    assert_eq!(client.get(format!("{base}/healthz")).send().await.unwrap().status(), 200, "liveness stays up");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Processing, "nothing lost, nothing failed");

    // Unsealing needs no token.
    let http = reqwest::Client::new();
    let unsealed: Value = http
        .put(format!("{}/v1/sys/unseal", bao.addr))
        .json(&json!({"key": key}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unsealed["sealed"], false, "{unsealed}");
    let chain = order
        .poll_certificate(&RetryPolicy::default().timeout(Duration::from_secs(90)).backoff(1.2))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", site.log()));
    let path = site.dir.join("nas.pem");
    std::fs::write(&path, chain).unwrap();
    let (sans, issuer) = verify_chain(&path, &bao.root_pem);
    assert_eq!((sans, issuer.as_str()), (vec!["nas.lab.test".to_owned()], "Lab Intermediate CA"));
    assert_eq!(bao.issued_serials().await.len(), 1, "signed exactly once");
    assert_eq!(client.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vacme_issuances_total{outcome=\"unavailable\"}"), "{metrics}");
}

/// Orders are finalized while OpenBao is frozen, so their signing calls are in flight; vacme is
/// killed with SIGKILL; OpenBao wakes and may sign those requests after all; vacme restarts.
/// Every order ends valid, and OpenBao signed exactly one certificate per order: the recorded
/// intent makes the restarted worker look for an earlier signature before signing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacme_killed_while_signing_restarts_and_signs_each_order_once() {
    let Some(tools) = tools_bin("vacme_killed_while_signing_restarts_and_signs_each_order_once") else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let auth = format!("method = \"token\"\ntoken_file = \"{}\"\n", bao.token_file.display());
    let mut site = Site::start_with("crash", dir.path(), &bao, &auth, "[issuance]\nfinalize_wait_secs = 1\n\n").await;
    let mut orders = Vec::new();
    for i in 0..6 {
        orders.push(site.ready_order(&format!("c{i}")).await);
    }

    bao.process.signal("STOP");
    let finalized = futures_util::future::join_all(orders.iter_mut().map(|o| o.finalize())).await;
    assert!(finalized.iter().all(Result::is_ok), "{finalized:?}");
    assert!(orders.iter_mut().all(|o| o.state().status == OrderStatus::Processing));
    site.vacme.process.signal("KILL");
    let (args, port, data, logs) =
        (site.vacme.args.clone(), site.vacme.port, site.vacme.data_dir.clone(), site.vacme.log_dir.clone());
    // OpenBao answers the signing requests of the dead process (or drops them).
    bao.process.signal("CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let signed_before_restart = bao.issued_serials().await.len();

    site.vacme = crate::Vacme::start(args, port, &data, &logs).await;
    let retry = RetryPolicy::default().timeout(Duration::from_secs(60)).backoff(1.2);
    let mut serials = Vec::new();
    for (i, order) in orders.iter_mut().enumerate() {
        let chain = order.poll_certificate(&retry).await.unwrap_or_else(|e| panic!("c{i}: {e}\n{}", site.log()));
        let path = site.dir.join(format!("c{i}.pem"));
        std::fs::write(&path, &chain).unwrap();
        let (sans, _) = verify_chain(&path, &bao.root_pem);
        assert_eq!(sans, vec![format!("c{i}.lab.test")]);
        serials.push(crate::lifecycle::leaf_facts(&path).1);
    }
    let in_vault = bao.issued_serials().await;
    eprintln!("OpenBao signed {signed_before_restart} of 6 while vacme was down; {} in all", in_vault.len());
    assert_eq!(in_vault.len(), 6, "one signature per order, not one per attempt: {in_vault:?}");
    for s in &serials {
        assert!(
            in_vault.iter().any(|v| v.replace(':', "").trim_start_matches('0') == s.trim_start_matches('0')),
            "{s}"
        );
    }
}

/// `tls.source = "issuer"`: vacme's own HTTPS certificate is signed by OpenBao's pki_int (a key
/// vacme made, for the names it serves), so clients that trust the lab's root trust vacme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_certificate_signed_by_openbao() {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

    let Some(tools) = tools_bin("serving_certificate_signed_by_openbao") else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let port = crate::procs::free_port();
    let config = dir.path().join("vacme.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nbase_url = \"https://acme.lab.test:{port}\"\ndata_dir = \"{}\"\n\n\
             [tls]\nsource = \"issuer\"\nnames = [\"acme.lab.test\"]\n\n\
             [policy]\nallowed_domains = [\"lab.test\"]\n\n\
             [vault]\naddress = \"{}\"\n\n[vault.auth]\ntoken_file = \"{}\"\n",
            dir.path().join("data").display(),
            bao.addr,
            bao.token_file.display()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(crate::VACME);
    cmd.args(["--config", &config.display().to_string(), "serve"]);
    let vacme = crate::procs::Subprocess::spawn("vacme-tls", &mut cmd, dir.path());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(bao.root_pem.as_bytes()).unwrap()).unwrap();
    let tls = std::sync::Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let mut leaf = None;
    for _ in 0..100 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let name = ServerName::try_from("acme.lab.test").unwrap();
            if let Ok(stream) = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await {
                leaf = stream.get_ref().1.peer_certificates().map(|c| c[0].to_vec());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leaf = leaf.unwrap_or_else(|| panic!("no handshake trusting OpenBao's root\n{}", vacme.output()));
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert_eq!(cert.issuer().to_string(), "CN=Lab Intermediate CA");
    let sans: Vec<String> =
        cert.subject_alternative_name().unwrap().unwrap().value.general_names.iter().map(|n| format!("{n}")).collect();
    assert_eq!(sans, vec!["DNSName(acme.lab.test)"]);
    assert_eq!(bao.issued_serials().await.len(), 1, "one signature for vacme's own certificate");
    assert!(vacme.output().contains("serving a certificate from the issuer"), "{}", vacme.output());
}
