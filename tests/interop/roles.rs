//! vacme knows the Vault roles it signs with, against the real OpenBao: RSA keys routed to an RSA
//! role by `[vault.roles_by_key]` (certbot and lego), an RSA key refused at finalize when no role
//! takes it (the order stays `ready`, OpenBao signs nothing), and a role that takes names from the
//! CSR reported in `/readyz` until `bao patch` fixes it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;
use x509_parser::{pem::Pem, public_key::PublicKey};

use crate::{
    Vacme,
    bao::{ROOT_TOKEN, RSA_ROLE_OU, ZONE},
    lifecycle::{Lab, certbot, text},
    procs::{tools_bin, wait_until},
    verify_chain,
};

/// OpenBao plus vacme with roles read every second and `vault_tail` appended after `[vault]`'s keys.
async fn start(tools: &Path, before: &str, vault_tail: &str) -> Lab {
    Lab::start_full(tools, before, "roles_refresh_secs = 1\n", vault_tail, "info,vacme=debug").await
}

/// certbot certonly for one name with these key options, under its own lineage name.
async fn certbot_key(tools: &Path, lab: &Lab, name: &str, key: &[&str]) -> std::process::Output {
    let mut args: Vec<String> =
        ["certonly", "--agree-tos", "--register-unsafely-without-email", "-d", name, "--cert-name", name]
            .into_iter()
            .map(str::to_owned)
            .collect();
    args.extend(key.iter().map(|s| (*s).to_owned()));
    certbot(tools, lab.dir.path(), &lab.vacme, lab.http01, &args).await
}

/// The leaf's key family and subject OU (the RSA role sets one).
fn leaf_key_and_ou(crt: &Path) -> (&'static str, Option<String>) {
    let text = std::fs::read_to_string(crt).unwrap();
    let pem = Pem::iter_from_buffer(text.as_bytes()).next().unwrap().unwrap();
    let cert = pem.parse_x509().unwrap();
    let kind = match cert.public_key().parsed().unwrap() {
        PublicKey::RSA(_) => "rsa",
        PublicKey::EC(_) => "ec",
        _ => "other",
    };
    let ou = cert.subject().iter_organizational_unit().next().map(|a| a.as_str().unwrap().to_owned());
    (kind, ou)
}

async fn readyz(vacme: &Vacme) -> (u16, Value) {
    let pem = std::fs::read(vacme.ca_bundle()).unwrap();
    let client =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()).build().unwrap();
    let res = client.get(format!("https://localhost:{}/readyz", vacme.port)).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn role_lines(ready: &Value) -> Vec<String> {
    ready["issuer"]["roles"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// (a) Two roles, routed by key family: certbot and lego with RSA keys are signed through
/// `lab-internal-rsa` (its `ou` is in the leaf), certbot with ECDSA through `lab-internal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_are_routed_to_the_rsa_role() {
    let name = "rsa_keys_are_routed_to_the_rsa_role";
    let Some(tools) = tools_bin(name) else { return };
    let lab = start(&tools, "", "[vault.roles_by_key]\nrsa = \"lab-internal-rsa\"\n").await;

    let out = certbot_key(&tools, &lab, "rsa.lab.test", &["--key-type", "rsa", "--rsa-key-size", "2048"]).await;
    assert!(out.status.success(), "certbot --key-type rsa\n{}\n{}", text(&out), lab.vacme.process.output());
    let live = lab.dir.path().join("certbot/config/live");
    let (sans, issuer) = verify_chain(&live.join("rsa.lab.test/fullchain.pem"), &lab.bao.root_pem);
    assert_eq!((sans, issuer.as_str()), (vec!["rsa.lab.test".to_owned()], "Lab Intermediate CA"));
    assert_eq!(
        leaf_key_and_ou(&live.join("rsa.lab.test/cert.pem")),
        ("rsa", Some(RSA_ROLE_OU.to_owned())),
        "an RSA leaf with the RSA role's ou: signed through lab-internal-rsa"
    );

    let out = certbot_key(&tools, &lab, "ec.lab.test", &["--key-type", "ecdsa"]).await;
    assert!(out.status.success(), "certbot --key-type ecdsa\n{}", text(&out));
    verify_chain(&live.join("ec.lab.test/fullchain.pem"), &lab.bao.root_pem);
    assert_eq!(leaf_key_and_ou(&live.join("ec.lab.test/cert.pem")), ("ec", None), "signed through lab-internal");
    assert_eq!(lab.bao.issued_serials().await.len(), 2);

    let lego = std::env::var_os("VACME_LEGO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/lego"));
    if !lego.exists() {
        eprintln!("\n*** SKIPPED: {name} (lego part): lego not installed (Debian package `lego`) ***\n");
        return;
    }
    let lego_dir = lab.dir.path().join("lego");
    let mut cmd = Command::new(&lego);
    cmd.args(["--accept-tos", "--email", "ops@lab.example", "--server", &lab.vacme.directory()])
        .args(["--domains", "lego.lab.test", "--key-type", "rsa2048"])
        .args(["--http", "--http.port", &format!("127.0.0.1:{}", lab.http01)])
        .arg("--path")
        .arg(&lego_dir)
        .arg("run")
        .env("LEGO_CA_CERTIFICATES", lab.vacme.ca_bundle());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "lego --key-type rsa2048\n{}\n{}", text(&out), lab.vacme.process.output());
    let crt = lego_dir.join("certificates/lego.lab.test.crt");
    verify_chain(&crt, &lab.bao.root_pem);
    assert_eq!(leaf_key_and_ou(&crt), ("rsa", Some(RSA_ROLE_OU.to_owned())), "lego's RSA key: the RSA role");
}

/// (b) Without the RSA route, an RSA key is refused at finalize with what this CA signs: the
/// order stays `ready` and OpenBao signs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_without_an_rsa_role_is_refused_at_finalize() {
    let Some(tools) = tools_bin("rsa_key_without_an_rsa_role_is_refused_at_finalize") else { return };
    let lab = start(&tools, "", "").await;
    let out = certbot_key(&tools, &lab, "rsa.lab.test", &["--key-type", "rsa", "--rsa-key-size", "2048"]).await;
    let said = text(&out);
    assert!(!out.status.success(), "certbot must fail\n{said}");
    let log = std::fs::read_to_string(lab.dir.path().join("certbot/logs/letsencrypt.log")).unwrap_or_default();
    for want in
        ["this CA signs ECDSA keys (P-256 or larger); your CSR has an RSA 2048-bit key", "certbot: --key-type ecdsa"]
    {
        assert!(said.contains(want) || log.contains(want), "certbot shows {want:?}\n{said}");
    }
    assert!(said.contains("badCSR") || log.contains("badCSR"), "{said}");

    let db = lab.dir.path().join("data/vacme.db");
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let orders: Vec<(String, bool)> = conn
        .prepare("SELECT status, csr IS NULL FROM orders")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(orders, vec![("ready".to_owned(), true)], "the order stays ready, no CSR recorded");
    let refused: i64 =
        conn.query_row("SELECT COUNT(*) FROM audit_events WHERE event = 'finalize_refused'", [], |r| r.get(0)).unwrap();
    assert_eq!(refused, 1, "the refusal is audited");
    assert!(lab.bao.issued_serials().await.is_empty(), "OpenBao signed nothing");
}

/// (c) A role that takes names from the CSR (lab-internal, left at OpenBao's default) and one
/// vacme cannot read are reported in /readyz (which stays 200) and by check-config; after
/// `bao patch` the first report goes away within the refresh, and the role keeps its settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_reading_names_from_the_csr_are_reported_until_patched() {
    let Some(tools) = tools_bin("roles_reading_names_from_the_csr_are_reported_until_patched") else { return };
    let lab = start(&tools, "[profiles.noread]\nrole = \"lab-noread\"\n\n", "").await;
    let (status, ready) = readyz(&lab.vacme).await;
    assert_eq!(status, 200, "{ready}");
    let lines = role_lines(&ready);
    let csr_line = |l: &String| l.starts_with("role pki_int/lab-internal takes names from the CSR");
    assert!(lines.iter().any(|l| csr_line(l) && l.contains("use_csr_sans=true")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("role pki_int/lab-noread cannot be read")
            && l.contains(r#"path "pki_int/roles/lab-noread" { capabilities = ["read"] }"#)),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("lab-short") || l.contains("lab-internal-rsa")), "{lines:?}");

    let out = Command::new(crate::VACME).arg("--config").arg(&lab.config).arg("check-config").output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("vault patch pki_int/roles/lab-internal use_csr_sans=false use_csr_common_name=false"),
        "{printed}"
    );

    // The fix the docs give, with OpenBao's CLI.
    let out = Command::new(tools.join("bao"))
        .args(["patch", "pki_int/roles/lab-internal", "use_csr_sans=false", "use_csr_common_name=false"])
        .env("BAO_ADDR", &lab.bao.addr)
        .env("BAO_TOKEN", ROOT_TOKEN)
        .env("HOME", lab.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "bao patch\n{}", text(&out));
    let role = lab.bao.api(reqwest::Method::GET, "pki_int/roles/lab-internal", None).await;
    let d = &role["data"];
    assert_eq!(
        (d["use_csr_sans"].as_bool(), d["key_type"].as_str(), d["allowed_domains"][0].as_str()),
        (Some(false), Some("ec"), Some(ZONE)),
        "patch changed only the two settings"
    );

    let vacme = &lab.vacme;
    let fixed = wait_until(Duration::from_secs(20), || async move {
        let (_, ready) = readyz(vacme).await;
        !role_lines(&ready).iter().any(|l| l.contains("pki_int/lab-internal "))
    })
    .await;
    let (status, ready) = readyz(&lab.vacme).await;
    assert!(fixed, "the report went away after the patch: {ready}");
    assert_eq!(status, 200);
    assert!(role_lines(&ready).iter().any(|l| l.contains("lab-noread")), "the unreadable role is still reported");
}
