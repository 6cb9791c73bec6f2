//! What an operator watches: `/metrics` after real flows, and the audit trail of issuances,
//! refusals and revocations (in the store and through `vacme audit`).

use instant_acme::{Identifier, NewOrder, RevocationRequest};
use serde_json::Value;
use vacme::{
    cli::{Admin, run},
    config::{Config, Overrides},
};

use crate::env::TestEnv;

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_requests_problems_validations_and_issuances() {
    let env = TestEnv::start().await;
    let (account, _) = env.account().await;
    env.issue(&account, &["m1.localhost"]).await;
    // A refused name: a problem of type rejectedIdentifier.
    let refused = account.new_order(&NewOrder::new(&[Identifier::Dns("www.example.com".into())])).await;
    assert!(refused.is_err());

    let res = env.http().get(env.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.unwrap();
    assert_eq!(metric(&text, r#"vacme_http_requests_total{resource="/acme/new-order",status="201"}"#), 1.0);
    assert_eq!(metric(&text, r#"vacme_http_requests_total{resource="/acme/new-order",status="400"}"#), 1.0);
    assert_eq!(metric(&text, r#"vacme_problems_total{type="rejectedIdentifier"}"#), 1.0);
    assert_eq!(metric(&text, r#"vacme_validations_total{type="http-01",outcome="valid"}"#), 1.0);
    assert_eq!(metric(&text, r#"vacme_validation_duration_seconds_count{type="http-01"}"#), 1.0);
    assert_eq!(metric(&text, r#"vacme_issuances_total{outcome="issued"}"#), 1.0);
    assert_eq!(metric(&text, r#"vacme_ca_request_duration_seconds_count{issuer="local",op="sign"}"#), 1.0);
    assert_eq!(metric(&text, "vacme_orders_processing"), 0.0);
    assert_eq!(metric(&text, "vacme_challenges_processing"), 0.0);
    assert_eq!(metric(&text, "vacme_accounts"), 1.0);
    assert_eq!(metric(&text, "vacme_certificates"), 1.0);
    assert!(metric(&text, "vacme_nonces") >= 5.0);
    // Routes, never URLs with object IDs, label the series.
    assert!(!text.contains("/acme/order/") || text.contains(r#"/acme/order/{id}"#), "{text}");
    for line in text.lines().filter(|l| l.contains("/acme/order/")) {
        assert!(line.contains("{id}"), "{line}");
    }
}

fn config_of(env: &TestEnv) -> Config {
    let overrides = Overrides { data_dir: Some(env.dir.path().to_owned()), ..Default::default() };
    Config::load(None, Vec::new(), &overrides).unwrap()
}

#[tokio::test]
async fn the_audit_trail_names_who_got_which_names_and_serial() {
    let env = TestEnv::start().await;
    let (account, _) = env.account().await;
    let (_, chain) = env.issue(&account, &["a1.localhost", "a2.localhost"]).await;
    let refused = account.new_order(&NewOrder::new(&[Identifier::Dns("www.example.com".into())])).await;
    assert!(refused.is_err());
    let der = x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes()).next().unwrap().unwrap().contents;
    let serial = x509_parser::parse_x509_certificate(&der).unwrap().1.raw_serial_as_string().replace(':', "");
    account.revoke(&RevocationRequest { certificate: &der.clone().into(), reason: None }).await.unwrap();

    let config = config_of(&env);
    let events: Value =
        serde_json::from_str(&run(&config, Admin::Audit { account: None, limit: 50 }, true).await.unwrap()).unwrap();
    let events = events.as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["revoked", "order_refused", "issued", "account_created"], "newest first");
    let account_id = events[3]["account_id"].as_str().unwrap();
    assert_eq!(events[3]["client_ip"], "127.0.0.1");

    let issued = &events[2];
    assert_eq!(issued["actor"], format!("account:{account_id}"));
    assert_eq!(issued["serial"].as_str().unwrap().trim_start_matches('0'), serial.trim_start_matches('0'));
    let names: Vec<&str> =
        issued["identifiers"].as_array().unwrap().iter().map(|i| i["value"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["a1.localhost", "a2.localhost"]);

    let refusal = &events[1];
    assert_eq!(refusal["identifiers"][0]["value"], "www.example.com");
    assert!(refusal["detail"].as_str().unwrap().starts_with("rejectedIdentifier:"), "{refusal}");

    assert_eq!(events[0]["certificate_id"], issued["certificate_id"]);
    assert_eq!(events[0]["actor"], format!("account:{account_id}"));

    let table = run(&config, Admin::Audit { account: Some(account_id.to_owned()), limit: 2 }, false).await.unwrap();
    assert_eq!(table.lines().count(), 3, "header and two events:\n{table}");
    assert!(table.contains("revoked") && table.contains("www.example.com"), "{table}");
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_every_certificate() {
    let env = TestEnv::start().await;
    let (account, _) = env.account().await;
    let (_, chain) = env.issue(&account, &["b1.localhost"]).await;
    let config = config_of(&env);
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().join("backup");
    let out = run(&config, Admin::Backup { dir: dir.clone() }, true).await.unwrap();
    let files: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(files["files"].as_array().unwrap().len(), 4, "{files}");
    use std::os::unix::fs::PermissionsExt;
    for secret in ["ca/ca.key", "eab.secret"] {
        let mode = std::fs::metadata(dir.join(secret)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{secret}");
    }
    // A second backup into the same folder is refused rather than mixed.
    assert!(run(&config, Admin::Backup { dir: dir.clone() }, false).await.is_err());

    // The copy is a whole store: the same rows, and the certificate as issued.
    let restored = vacme::store::Store::connect(&format!("sqlite://{}", dir.join("vacme.db").display())).await.unwrap();
    assert_eq!(restored.counts().await.unwrap(), env.counts().await);
    let certs = restored.certificates(None).await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].chain_pem, chain);
    assert_eq!(std::fs::read(dir.join("ca/ca.pem")).unwrap(), std::fs::read(&env.ca).unwrap());
}

#[tokio::test]
async fn metrics_show_the_ca_reachable_the_last_signing_and_failed_names() {
    let env = TestEnv::start().await;
    let (account, _) = env.account().await;
    env.issue(&account, &["m9.localhost"]).await;
    // A challenge nobody answers (the responder has no token for it) fails for good.
    let ids = [Identifier::Dns("nobody-home.localhost".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        authz.challenge(instant_acme::ChallengeType::Http01).unwrap().set_ready().await.unwrap();
    }
    assert!(order.poll_ready(&instant_acme::RetryPolicy::default()).await.is_err());
    let text = env.http().get(env.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, "vacme_ca_reachable{issuer=\"local\"}"), 1.0);
    let signed = metric(&text, "vacme_last_issuance_timestamp_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - 60.0..=now + 1.0).contains(&signed), "{signed} vs {now}");
    assert_eq!(metric(&text, "vacme_validation_failures_total{name=\"nobody-home.localhost\"}"), 1.0);
}
