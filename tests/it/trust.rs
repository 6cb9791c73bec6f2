//! The trust anchor: `/roots.pem` is the local CA's `ca.pem`, served from memory with cacheable
//! headers; `vacme root` gives the same root and fingerprint; docs/trust.md's Debian/Ubuntu
//! command installs the root for the right fingerprint and nothing for a wrong one.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use vacme::{
    cli::{Admin, run},
    config::{Config, VaultConfig},
};
use x509_parser::pem::Pem;

use crate::env::TestEnv;

/// The DER of the one certificate in a PEM text.
fn der(pem: &str) -> Vec<u8> {
    let blocks: Vec<Pem> = Pem::iter_from_buffer(pem.as_bytes()).map(|p| p.unwrap()).collect();
    assert_eq!(blocks.len(), 1, "one certificate in:\n{pem}");
    blocks[0].contents.clone()
}

/// SHA-256 of the DER as `AB:CD:...`.
fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn config_of(env: &TestEnv) -> Config {
    let mut c = Config::default();
    c.server.data_dir = env.dir.path().to_owned();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_pem_is_the_local_ca_with_cacheable_headers_and_vacme_root_agrees() {
    let env = TestEnv::start().await;
    let ca = std::fs::read_to_string(&env.ca).unwrap();
    let res = env.http().get(env.url("/roots.pem")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "application/pem-certificate-chain");
    assert_eq!(h["cache-control"], "public, max-age=3600");
    assert!(h.get("replay-nonce").is_none(), "outside ACME: no nonce");
    let body = res.text().await.unwrap();
    assert_eq!(der(&body), der(&ca), "/roots.pem is the local CA's ca.pem");
    assert_eq!(body.replace("\r\n", "\n"), ca.replace("\r\n", "\n"));

    let head = env.http().head(env.url("/roots.pem")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let post = env.http().post(env.url("/roots.pem")).body("x").send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET");
    assert_eq!(post.headers()["content-type"], "application/problem+json");
    let odd = env.http().get(env.url("/roots.pem?format=der&x=%00")).send().await.unwrap();
    assert_eq!(odd.status(), 200, "a query changes nothing");

    let config = config_of(&env);
    let fp = run(&config, Admin::Root { fingerprint: true }, false).await.unwrap();
    assert_eq!(fp.trim(), fingerprint(&der(&body)), "vacme root --fingerprint");
    let pem = run(&config, Admin::Root { fingerprint: false }, false).await.unwrap();
    assert_eq!(pem, body, "vacme root");
    let json: serde_json::Value =
        serde_json::from_str(&run(&config, Admin::Root { fingerprint: false }, true).await.unwrap()).unwrap();
    assert_eq!(json["sha256"], fingerprint(&der(&body)));
    assert_eq!(json["sha256_hex"], fingerprint(&der(&body)).replace(':', "").to_lowercase());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_pem_is_503_with_retry_after_while_vault_cannot_be_asked() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    // Nothing listens on port 9 of loopback: Vault is down since start.
    let vault: VaultConfig = toml::from_str(&format!(
        "address = \"http://127.0.0.1:9\"\ntimeout_secs = 1\n[auth]\ntoken_file = \"{}\"\n",
        token.display()
    ))
    .unwrap();
    let env = TestEnv::start_with(|c| c.vault = Some(vault.clone())).await;
    let res = env.http().get(env.url("/roots.pem")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "10");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value = res.json().await.unwrap();
    assert_eq!(p["type"], "urn:ietf:params:acme:error:serverInternal");
    assert!(p["detail"].as_str().unwrap().contains("not known yet"), "{p}");
    assert!(!p.to_string().contains("127.0.0.1:9"), "Vault's address is not told: {p}");

    let mut config = config_of(&env);
    config.vault = Some(vault);
    let e = run(&config, Admin::Root { fingerprint: true }, false).await.unwrap_err();
    assert!(e.to_string().contains("ca_chain"), "{e}");
}

/// The block docs/trust.md marks as the Debian/Ubuntu recipe, with the operator's two values.
fn debian_recipe(vacme: &str, fp: &str) -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/trust.md")).unwrap();
    let mut lines = doc.lines().skip_while(|l| !l.starts_with("<!-- trust-recipe: debian"));
    assert!(lines.next().is_some(), "docs/trust.md marks the Debian recipe");
    assert_eq!(lines.next(), Some("```sh"));
    let block: Vec<&str> = lines.take_while(|l| *l != "```").collect();
    assert!(block.iter().any(|l| l.starts_with("VACME=")) && block.iter().any(|l| l.starts_with("FP=")));
    block
        .iter()
        .map(|l| match l {
            l if l.starts_with("VACME=") => format!("VACME={vacme}"),
            l if l.starts_with("FP=") => format!("FP='{fp}'"),
            l => (*l).to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `script` with bash; `sudo` and `update-ca-certificates` are stand-ins (the test is not
/// root): the first runs its arguments, the second writes a line to `<dest>/../updated`.
async fn run_recipe(script: String, dest: &Path) -> std::process::Output {
    let bin = dest.parent().unwrap().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = dest.parent().unwrap().join("updated");
    for (name, body) in [
        ("sudo", "#!/bin/sh\nexec \"$@\"\n".to_owned()),
        ("update-ca-certificates", format!("#!/bin/sh\necho run >> '{}'\n", marker.display())),
    ] {
        std::fs::write(bin.join(name), body).unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let dest = dest.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new("bash").arg("-c").arg(script).env("PATH", path).env("VACME_TRUST_DIR", dest).output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_debian_recipe_installs_the_right_root_and_refuses_a_wrong_fingerprint() {
    let env = TestEnv::start().await;
    let ca = std::fs::read_to_string(&env.ca).unwrap();
    let fp = fingerprint(&der(&ca));
    let base = env.url("");
    let work = tempfile::tempdir().unwrap();

    let mut wrong = fp.clone();
    wrong.replace_range(0..2, if fp.starts_with("00") { "01" } else { "00" });
    let cases = [
        ("a wrong fingerprint", base.clone(), wrong),
        ("an empty fingerprint", base.clone(), String::new()),
        ("vacme not there", "https://127.0.0.1:9".to_owned(), fp.clone()),
    ];
    for (i, (what, url, given)) in cases.into_iter().enumerate() {
        let dest = work.path().join(format!("refused{i}/dest"));
        std::fs::create_dir_all(&dest).unwrap();
        let out = run_recipe(debian_recipe(&url, &given), &dest).await;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{what}: must fail\n{text}");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0, "{what}: nothing installed\n{text}");
        assert!(!dest.parent().unwrap().join("updated").exists(), "{what}: the store was not rebuilt");
        if what == "a wrong fingerprint" {
            assert!(text.contains("fingerprint mismatch") && text.contains("NOT installed"), "{text}");
        }
    }

    // Both forms vacme prints are accepted.
    for (i, given) in [fp.clone(), fp.replace(':', "").to_lowercase()].into_iter().enumerate() {
        let dest = work.path().join(format!("accepted{i}/dest"));
        std::fs::create_dir_all(&dest).unwrap();
        let out = run_recipe(debian_recipe(&base, &given), &dest).await;
        assert!(
            out.status.success(),
            "{given}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let installed = std::fs::read_to_string(dest.join("vacme-root.crt")).unwrap();
        assert_eq!(der(&installed), der(&ca), "the installed file is exactly the root");
        assert_eq!(std::fs::read_to_string(dest.parent().unwrap().join("updated")).unwrap(), "run\n");
    }
}
