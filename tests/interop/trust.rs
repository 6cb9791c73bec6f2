//! The trust anchor against the real OpenBao: `/roots.pem` is the root (`pki/cert/ca`) that the
//! chain certbot got verifies to, and the fingerprint vacme printed at start and `vacme root
//! --fingerprint` are that root's. A mount whose `ca_chain` stops at the intermediate is served
//! through `vault.root_file`, and only when the chain verifies to it.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use reqwest::Method;
use serde_json::json;
use x509_parser::pem::Pem;

use crate::{
    VACME, Vacme,
    bao::{Bao, ZONE},
    config_args,
    dns::TestDns,
    lifecycle::{Lab, assert_ok, certbot, live, step},
    procs::{free_port, tools_bin},
    verify_chain,
};

fn der(pem: &str) -> Vec<u8> {
    let blocks: Vec<Pem> = Pem::iter_from_buffer(pem.as_bytes()).map(|p| p.unwrap()).collect();
    assert_eq!(blocks.len(), 1, "one certificate in:\n{pem}");
    blocks[0].contents.clone()
}

fn fingerprint(pem: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, &der(pem));
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// `vacme --config <config> root <args>`: (success, stdout, stderr).
fn vacme_root(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(VACME).arg("--config").arg(config).arg("root").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// GET /roots.pem over vacme's HTTPS: (status, body).
async fn roots(vacme: &Vacme) -> (u16, String) {
    let pem = std::fs::read(vacme.ca_bundle()).unwrap();
    let client =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()).build().unwrap();
    let res = client.get(format!("https://localhost:{}/roots.pem", vacme.port)).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// A PKI mount whose intermediate was imported without its root: its `ca_chain` is the
/// intermediate alone.
async fn edge_mount(bao: &Bao) {
    bao.api(Method::POST, "sys/mounts/pki_edge", Some(json!({"type": "pki"}))).await;
    let csr = bao
        .api(
            Method::POST,
            "pki_edge/intermediate/generate/internal",
            Some(json!({"common_name": "Lab Edge CA", "key_type": "ec", "key_bits": 256})),
        )
        .await;
    let signed = bao
        .api(
            Method::POST,
            "pki/root/sign-intermediate",
            Some(json!({"csr": csr["data"]["csr"], "format": "pem", "ttl": "8760h"})),
        )
        .await;
    bao.api(
        Method::POST,
        "pki_edge/intermediate/set-signed",
        Some(json!({"certificate": signed["data"]["certificate"]})),
    )
    .await;
}

/// A vacme on `bao`'s `pki_edge` mount, with `vault_keys` in `[vault]`.
async fn edge_vacme(root: &Path, name: &str, bao: &Bao, dns: &TestDns, vault_keys: &str) -> (Vacme, PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (port, http01) = (free_port(), free_port());
    let vault = format!(
        "[vault]\naddress = \"{}\"\nmount = \"pki_edge\"\ntimeout_secs = 5\n{vault_keys}\n\n[vault.auth]\ntoken_file = \"{}\"\n",
        bao.addr,
        bao.token_file.display()
    );
    let args = config_args(&dir, port, http01, dns, &vault);
    let config = PathBuf::from(&args[1]);
    (Vacme::start(args, port, &dir.join("data"), &dir).await, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_pem_is_the_openbao_root_the_issued_chain_verifies_to() {
    let Some(tools) = tools_bin("roots_pem_is_the_openbao_root_the_issued_chain_verifies_to") else { return };
    let t0 = Instant::now();
    let lab = Lab::start_logging(&tools, "", "info,vacme=debug").await;
    let (d, vacme) = (lab.dir.path(), &lab.vacme);
    step(t0, "OpenBao and vacme up");

    let (status, served) = roots(vacme).await;
    assert_eq!(status, 200, "{served}\n{}", vacme.process.output());
    let openbao_root = lab.bao.api(Method::GET, "pki/cert/ca", None).await;
    let openbao_root = openbao_root["data"]["certificate"].as_str().unwrap();
    assert_eq!(der(&served), der(openbao_root), "/roots.pem is OpenBao's pki/cert/ca");

    let s = |v: &str| v.to_owned();
    let args =
        [s("certonly"), s("--agree-tos"), s("--register-unsafely-without-email"), s("-d"), format!("roots.{ZONE}")];
    assert_ok(&certbot(&tools, d, vacme, lab.http01, &args).await, "certbot certonly", d);
    let (sans, issuer) = verify_chain(&live(d, &format!("roots.{ZONE}")).join("fullchain.pem"), &served);
    assert_eq!((sans, issuer.as_str()), (vec![format!("roots.{ZONE}")], "Lab Intermediate CA"));
    step(t0, "certbot's chain verifies to /roots.pem");

    let want = fingerprint(&served);
    let stdout = std::fs::read_to_string(&vacme.process.stdout).unwrap();
    assert!(stdout.contains(&format!("root SHA-256: {want}\n")), "{stdout}");
    assert!(stdout.contains(&format!("root SHA-256 (hex): {}\n", want.replace(':', "").to_lowercase())), "{stdout}");
    let (ok, out, err) = vacme_root(&lab.config, &["--fingerprint"]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("{want}\n"), "vacme root --fingerprint");
    let (ok, out, err) = vacme_root(&lab.config, &[]);
    assert!(ok, "{err}");
    assert_eq!(out, served, "vacme root");
    step(t0, "fingerprints agree");

    // A mount whose chain stops at the intermediate: without a root file there is no root to
    // name, with the right one it is served, with another root it is refused.
    edge_mount(&lab.bao).await;
    let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
    let root_file = d.join("root.pem");
    std::fs::write(&root_file, openbao_root).unwrap();
    let wrong_file = d.join("wrong-root.pem");
    std::fs::copy(vacme.ca_bundle(), &wrong_file).unwrap();

    let (right, right_config) =
        edge_vacme(d, "edge-right", &lab.bao, &dns, &format!("root_file = \"{}\"", root_file.display())).await;
    let (status, body) = roots(&right).await;
    assert_eq!((status, der(&body)), (200, der(openbao_root)), "{}", right.process.output());
    let (ok, out, err) = vacme_root(&right_config, &["--fingerprint"]);
    assert!(ok && out == format!("{want}\n"), "{out}{err}");

    let (wrong, wrong_config) =
        edge_vacme(d, "edge-wrong", &lab.bao, &dns, &format!("root_file = \"{}\"", wrong_file.display())).await;
    let (status, body) = roots(&wrong).await;
    assert_eq!(status, 503, "a root the chain does not verify to is not served: {body}");
    assert!(body.contains("serverInternal") && !body.contains("BEGIN CERTIFICATE"), "{body}");
    let (ok, _, err) = vacme_root(&wrong_config, &["--fingerprint"]);
    assert!(!ok && err.contains("holds no certificate that signed it"), "{err}");
    assert!(wrong.process.output().contains("no root certificate to serve"), "{}", wrong.process.output());

    let none_config = d.join("edge-none.toml");
    let text = std::fs::read_to_string(&wrong_config).unwrap();
    let without: String = text.lines().filter(|l| !l.starts_with("root_file")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&none_config, without).unwrap();
    let (ok, _, err) = vacme_root(&none_config, &[]);
    assert!(!ok && err.contains("stops at") && err.contains("vault.root_file"), "{err}");
    step(t0, "root_file checked against the chain");
}
