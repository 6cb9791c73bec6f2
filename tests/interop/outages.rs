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
