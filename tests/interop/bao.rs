//! A real OpenBao dev server, configured like the homelab: root `pki/`, intermediate `pki_int/`
//! signed by it, role `lab-internal` (EC P-256, `use_csr_sans` left at OpenBao's default), a
//! 24-hour role `lab-short` for the `short` profile, and `lab-internal-rsa` (RSA 2048+, names only
//! from vacme, `ou = RSA_ROLE_OU` so a leaf shows which role signed it), and a `vacme` policy that
//! may only sign with and read those roles, revoke, and read certificates' revocation state,
//! handed out as a token and as an AppRole.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::{Value, json};

use crate::procs::{Subprocess, free_port, wait_until};

pub const ZONE: &str = "lab.test";

pub struct Bao {
    pub addr: String,
    pub root_pem: String,
    pub token_file: PathBuf,
    pub role_id_file: PathBuf,
    pub secret_id_file: PathBuf,
    http: reqwest::Client,
    pub process: Subprocess,
}

/// The dev server's root token, for the test's own calls (and `bao` commands).
pub const ROOT_TOKEN: &str = "vacme-test-root";

/// The `ou` of role `lab-internal-rsa`: OpenBao records no role per certificate, so this is how a
/// leaf shows it was signed through that role.
#[allow(dead_code)]
pub const RSA_ROLE_OU: &str = "signed by lab-internal-rsa";

const POLICY: &str = r#"
path "pki_int/sign/lab-internal" { capabilities = ["update"] }
path "pki_int/sign/lab-short"    { capabilities = ["update"] }
path "pki_int/sign/lab-internal-rsa" { capabilities = ["update"] }
path "pki_int/sign/lab-mismatch" { capabilities = ["update"] }
path "pki_int/roles/lab-internal"     { capabilities = ["read"] }
path "pki_int/roles/lab-short"        { capabilities = ["read"] }
path "pki_int/roles/lab-internal-rsa" { capabilities = ["read"] }
path "pki_int/roles/lab-mismatch"     { capabilities = ["read"] }
path "pki_int/revoke"            { capabilities = ["update"] }
path "pki_int/cert/*"            { capabilities = ["read"] }
path "pki_int/certs"             { capabilities = ["list"] }
path "auth/token/lookup-self"     { capabilities = ["read"] }
path "auth/token/renew-self"      { capabilities = ["update"] }
"#;

impl Bao {
    pub async fn start(tools: &Path, dir: &Path) -> Bao {
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(tools.join("bao"));
        cmd.args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={ROOT_TOKEN}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .env("HOME", dir)
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN");
        let process = Subprocess::spawn("bao", &mut cmd, dir);
        let http = reqwest::Client::new();
        let health = format!("{addr}/v1/sys/health");
        let up = wait_until(Duration::from_secs(60), || {
            let (http, health) = (http.clone(), health.clone());
            async move { http.get(&health).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        assert!(up, "bao did not start\n{}", process.output());
        let Setup { root_pem, token_file, role_id_file, secret_id_file } = set_up(&http, &addr, ROOT_TOKEN, dir).await;
        Bao { addr, root_pem, token_file, role_id_file, secret_id_file, http, process }
    }

    /// A call with the root token; panics with Vault's answer on failure.
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        call(&self.http, &self.addr, ROOT_TOKEN, method, path, body).await
    }

    /// When OpenBao revoked the certificate with this serial (any form), if it did.
    #[allow(dead_code)]
    pub async fn revocation_time(&self, serial: &str) -> Option<i64> {
        let v = self.api(reqwest::Method::GET, &format!("pki_int/cert/{}", colon(serial)), None).await;
        v["data"]["revocation_time"].as_i64().filter(|t| *t > 0)
    }

    /// Revokes directly in OpenBao, behind vacme's back (as an operator with `bao write` would).
    #[allow(dead_code)]
    pub async fn revoke(&self, serial: &str) {
        self.api(reqwest::Method::POST, "pki_int/revoke", Some(json!({"serial_number": colon(serial)}))).await;
    }

    /// Serials (colon form) of certificates OpenBao has issued from pki_int.
    #[allow(dead_code)]
    pub async fn issued_serials(&self) -> Vec<String> {
        issued_serials(&self.http, &self.addr, ROOT_TOKEN).await
    }
}

/// Serials (colon form) of certificates the OpenBao at `addr` has issued from pki_int.
pub async fn issued_serials(http: &reqwest::Client, addr: &str, token: &str) -> Vec<String> {
    try_issued_serials(http, addr, token).await.unwrap_or_else(|e| panic!("LIST pki_int/certs: {e}"))
}

/// `issued_serials`, or why the node did not answer (for polling a node that may be down).
pub async fn try_issued_serials(http: &reqwest::Client, addr: &str, token: &str) -> Result<Vec<String>, String> {
    let res = http
        .request(reqwest::Method::from_bytes(b"LIST").unwrap(), format!("{addr}/v1/pki_int/certs"))
        .header("X-Vault-Token", token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    // An empty list is a 404.
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    if !res.status().is_success() {
        return Err(res.status().to_string());
    }
    let v: Value = res.json().await.map_err(|e| e.to_string())?;
    Ok(v["data"]["keys"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default())
}

/// The PKI of the homelab on a fresh OpenBao at `addr` (a dev server or a cluster's active node),
/// and the files vacme authenticates with, written into `dir`.
pub struct Setup {
    pub root_pem: String,
    pub token_file: PathBuf,
    pub role_id_file: PathBuf,
    pub secret_id_file: PathBuf,
}

pub async fn set_up(http: &reqwest::Client, addr: &str, root_token: &str, dir: &Path) -> Setup {
    let post =
        async |path: &str, body: Value| call(http, addr, root_token, reqwest::Method::POST, path, Some(body)).await;
    let (token_file, role_id_file, secret_id_file) =
        (dir.join("vault-token"), dir.join("role-id"), dir.join("secret-id"));
    post("sys/mounts/pki", json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})).await;
    let root = post(
        "pki/root/generate/internal",
        json!({"common_name": "Lab Root CA", "key_type": "ec", "key_bits": 256, "ttl": "87600h"}),
    )
    .await;
    let root_pem = root["data"]["certificate"].as_str().unwrap().to_owned();
    post("sys/mounts/pki_int", json!({"type": "pki", "config": {"max_lease_ttl": "43800h"}})).await;
    let csr = post(
        "pki_int/intermediate/generate/internal",
        json!({"common_name": "Lab Intermediate CA", "key_type": "ec", "key_bits": 256}),
    )
    .await;
    let signed =
        post("pki/root/sign-intermediate", json!({"csr": csr["data"]["csr"], "format": "pem_bundle", "ttl": "43800h"}))
            .await;
    post("pki_int/intermediate/set-signed", json!({"certificate": signed["data"]["certificate"]})).await;
    post(
        "pki_int/roles/lab-internal",
        json!({
            "allowed_domains": ZONE, "allow_subdomains": true, "allow_ip_sans": true,
            "key_type": "ec", "key_bits": 256, "ttl": "2160h", "max_ttl": "8760h",
        }),
    )
    .await;
    post(
        "pki_int/roles/lab-short",
        json!({
            "allowed_domains": ZONE, "allow_subdomains": true,
            "key_type": "ec", "key_bits": 256, "ttl": "1h", "max_ttl": "24h",
        }),
    )
    .await;
    post(
        "pki_int/roles/lab-internal-rsa",
        json!({
            "allowed_domains": ZONE, "allow_subdomains": true, "allow_ip_sans": true,
            "key_type": "rsa", "key_bits": 2048, "ttl": "2160h", "max_ttl": "8760h",
            "use_csr_sans": false, "use_csr_common_name": false, "ou": RSA_ROLE_OU,
        }),
    )
    .await;
    // The role of tests/interop/mismatch.rs, whose sign requests reach OpenBao through a
    // proxy that adds `exclude_cn_from_sans` (a sign parameter, not a role setting): OpenBao
    // then leaves the common name out of the SANs, so the leaf lacks one of the order's names.
    post(
        "pki_int/roles/lab-mismatch",
        json!({
            "allowed_domains": ZONE, "allow_subdomains": true, "key_type": "ec", "key_bits": 256,
            "ttl": "1h", "max_ttl": "24h", "use_csr_sans": false,
        }),
    )
    .await;
    call(http, addr, root_token, reqwest::Method::PUT, "sys/policies/acl/vacme", Some(json!({"policy": POLICY}))).await;
    let token = post("auth/token/create", json!({"policies": ["vacme"], "ttl": "2h", "no_default_policy": true})).await;
    write_private(&token_file, token["auth"]["client_token"].as_str().unwrap());
    post("sys/auth/approle", json!({"type": "approle"})).await;
    post("auth/approle/role/vacme", json!({"token_policies": ["vacme"], "token_ttl": "1h"})).await;
    let role_id = call(http, addr, root_token, reqwest::Method::GET, "auth/approle/role/vacme/role-id", None).await;
    write_private(&role_id_file, role_id["data"]["role_id"].as_str().unwrap());
    let secret_id = post("auth/approle/role/vacme/secret-id", json!({})).await;
    write_private(&secret_id_file, secret_id["data"]["secret_id"].as_str().unwrap());
    Setup { root_pem, token_file, role_id_file, secret_id_file }
}

/// A call with `token`; panics with Vault's answer on failure.
pub async fn call(
    http: &reqwest::Client,
    addr: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method.clone(), format!("{addr}/v1/{path}")).header("X-Vault-Token", token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn write_private(path: &Path, value: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).unwrap();
    std::io::Write::write_all(&mut f, value.as_bytes()).unwrap();
}

/// `0a1b2c` -> `0a:1b:2c`.
fn colon(serial: &str) -> String {
    let hex: String = serial.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_lowercase();
    let hex = if hex.len() % 2 == 1 { format!("0{hex}") } else { hex };
    hex.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(":")
}
