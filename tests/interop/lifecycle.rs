//! The certificate lifecycle with certbot against vacme fronting the real OpenBao: an account
//! bound by a scoped EAB key from `vacme eab create`, a profile mapped to another Vault role,
//! revocation that reaches OpenBao, and `certbot renew` driven by renewal information.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;
use x509_parser::pem::Pem;

use crate::{
    VACME, Vacme,
    bao::{Bao, ZONE},
    dns::TestDns,
    install_provider,
    procs::{free_port, tools_bin},
    verify_chain,
};

/// `vacme <args> --json` against the running server's configuration; the parsed output.
fn admin(config: &Path, args: &[&str]) -> Value {
    let out = Command::new(VACME).arg("--config").arg(config).args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "vacme {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("vacme {args:?}: not JSON ({e})"))
}

/// One certbot run with a shared config dir (so later runs reuse the account); no panic on failure.
pub(crate) async fn certbot(tools: &Path, dir: &Path, vacme: &Vacme, http01: u16, args: &[String]) -> Output {
    let le = dir.join("certbot");
    let mut cmd = Command::new(tools.join("certbot"));
    cmd.args(args)
        .args(["--non-interactive", "--server", &vacme.directory()])
        .args(["--standalone", "--http-01-port", &http01.to_string(), "--http-01-address", "127.0.0.1"])
        .args(["--config-dir", &le.join("config").display().to_string()])
        .args(["--work-dir", &le.join("work").display().to_string()])
        .args(["--logs-dir", &le.join("logs").display().to_string()])
        .env("REQUESTS_CA_BUNDLE", vacme.ca_bundle());
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

/// Progress on stderr (shown by `--nocapture` and when the test fails).
pub(crate) fn step(started: std::time::Instant, what: &str) {
    eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
}

pub(crate) fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[track_caller]
pub(crate) fn assert_ok(out: &Output, what: &str, dir: &Path) {
    if !out.status.success() {
        let log = std::fs::read_to_string(dir.join("certbot/logs/letsencrypt.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        panic!("{what} failed\n{}\n--- certbot log (tail, newest first) ---\n{}", text(out), tail.join("\n"));
    }
}

pub(crate) fn live(dir: &Path, name: &str) -> PathBuf {
    dir.join("certbot/config/live").join(name)
}

/// Lifetime in seconds and the serial (lower-case hex, no leading zero bytes) of a PEM leaf.
pub(crate) fn leaf_facts(cert_pem: &Path) -> (i64, String) {
    let text = std::fs::read_to_string(cert_pem).unwrap();
    let pem = Pem::iter_from_buffer(text.as_bytes()).next().unwrap().unwrap();
    let cert = pem.parse_x509().unwrap();
    let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    let raw = cert.raw_serial();
    let start = raw.iter().position(|b| *b != 0).unwrap_or(0);
    (life, raw[start..].iter().map(|b| format!("{b:02x}")).collect())
}

fn certs_named(certs: &Value, name: &str) -> Vec<Value> {
    certs.as_array().unwrap().iter().filter(|c| c["identifiers"][0]["value"] == name).cloned().collect()
}

/// OpenBao, the test DNS zone and vacme with `[vault]` (token auth) after `extra` config.
pub(crate) struct Lab {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) bao: Bao,
    _dns: TestDns,
    pub(crate) vacme: Vacme,
    pub(crate) config: PathBuf,
    pub(crate) http01: u16,
}

impl Lab {
    async fn start(tools: &Path, extra: &str) -> Lab {
        Lab::start_logging(tools, extra, "info,vacme=debug").await
    }

    /// `start` with this `VACME_LOG` filter for vacme.
    pub(crate) async fn start_logging(tools: &Path, extra: &str, filter: &str) -> Lab {
        Lab::start_full(tools, extra, "", "", filter).await
    }

    /// `start` with `vault_keys` (TOML lines) inside `[vault]` and `tail` (sections) after
    /// `[vault.auth]`.
    pub(crate) async fn start_full(tools: &Path, extra: &str, vault_keys: &str, tail: &str, filter: &str) -> Lab {
        install_provider();
        let dir = tempfile::tempdir().unwrap();
        let bao = Bao::start(tools, dir.path()).await;
        let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
        let (port, http01) = (free_port(), free_port());
        let vault = format!(
            "{extra}[vault]\naddress = \"{}\"\n{vault_keys}\n[vault.auth]\ntoken_file = \"{}\"\n\n{tail}",
            bao.addr,
            bao.token_file.display()
        );
        let args = crate::config_args(dir.path(), port, http01, &dns, &vault);
        let config = PathBuf::from(&args[1]);
        let vacme = Vacme::start_logging(args, port, &dir.path().join("data"), dir.path(), filter).await;
        Lab { dir, bao, _dns: dns, vacme, config, http01 }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certbot_lifecycle_eab_profiles_revocation_and_renewal_info() {
    let Some(tools) = tools_bin("certbot_lifecycle_eab_profiles_revocation_and_renewal_info") else { return };
    let lab = Lab::start(
        &tools,
        "[eab]\nrequired = true\n\n\
         [renewal]\nretry_after_secs = 1\nca_check_secs = 1\n\n\
         [issuance]\ndefault_profile = \"default\"\n\n\
         [profiles.default]\ndescription = \"90-day server certificate\"\n\n\
         [profiles.short]\ndescription = \"24-hour certificate\"\nrole = \"lab-short\"\nmax_days = 1\n\n",
    )
    .await;
    let Lab { dir, bao, vacme, config, http01, .. } = &lab;
    let (config, http01) = (config.clone(), *http01);
    let d = dir.path();
    let s = |v: &str| v.to_owned();
    let t0 = std::time::Instant::now();
    step(t0, "OpenBao and vacme up");

    // No binding: certbot reads meta.externalAccountRequired and asks for one.
    let out =
        certbot(&tools, d, vacme, http01, &[s("register"), s("--agree-tos"), s("--register-unsafely-without-email")])
            .await;
    assert!(!out.status.success() && text(&out).contains("requires external account binding"), "{}", text(&out));

    step(t0, "register without EAB refused");
    // A scoped key from the admin CLI binds certbot's account.
    let key =
        admin(&config, &["eab", "create", "--scope", "nas.lab.test", "--scope", "*.dev.lab.test", "--comment", "nas"]);
    let (kid, hmac) = (key["kid"].as_str().unwrap().to_owned(), key["hmac_key"].as_str().unwrap().to_owned());
    // The `=` form `eab create` prints: a value starting with '-' would otherwise read as a flag.
    let register = [s("--agree-tos"), s("--register-unsafely-without-email"), format!("--eab-kid={kid}")];
    let mut first = vec![s("certonly"), s("-d"), s("nas.lab.test"), format!("--eab-hmac-key={hmac}")];
    first.extend(register.iter().cloned());
    assert_ok(&certbot(&tools, d, vacme, http01, &first).await, "certonly with EAB", d);
    let (sans, issuer) = verify_chain(&live(d, "nas.lab.test").join("fullchain.pem"), &bao.root_pem);
    assert_eq!((sans, issuer.as_str()), (vec![s("nas.lab.test")], "Lab Intermediate CA"));
    let keys = admin(&config, &["eab", "list"]);
    assert_eq!(keys[0]["state"], "used", "{keys}");

    step(t0, "certonly with EAB done");
    // The same key cannot bind a second account.
    let other = dir.path().join("other");
    let out = Command::new(tools.join("certbot"))
        .args(["register", "--non-interactive", "--agree-tos", "--register-unsafely-without-email"])
        .args([format!("--eab-kid={kid}"), format!("--eab-hmac-key={hmac}")])
        .args(["--server", &vacme.directory()])
        .args(["--config-dir", &other.join("c").display().to_string()])
        .args(["--work-dir", &other.join("w").display().to_string()])
        .args(["--logs-dir", &other.join("l").display().to_string()])
        .env("REQUESTS_CA_BUNDLE", vacme.ca_bundle())
        .output()
        .unwrap();
    assert!(!out.status.success() && text(&out).contains("already used"), "{}", text(&out));

    step(t0, "second account refused");
    // Outside the key's scope: refused, though the server's policy allows lab.test.
    let out = certbot(&tools, d, vacme, http01, &[s("certonly"), s("-d"), s("s3.lab.test")]).await;
    assert!(!out.status.success() && text(&out).contains("outside this account's scope"), "{}", text(&out));

    step(t0, "out-of-scope refused");
    // --preferred-profile short: signed by OpenBao's lab-short role, 24 hours at most.
    let short = [s("certonly"), s("-d"), s("pi.dev.lab.test"), s("--preferred-profile"), s("short")];
    assert_ok(&certbot(&tools, d, vacme, http01, &short).await, "certonly --preferred-profile short", d);
    let (life, short_serial) = leaf_facts(&live(d, "pi.dev.lab.test").join("cert.pem"));
    assert!(life <= 24 * 3600 + 60, "the short profile's certificate lives {life} s");
    let certs = admin(&config, &["certs", "list"]);
    assert_eq!(certs_named(&certs, "pi.dev.lab.test")[0]["profile"], "short");
    assert_eq!(certs_named(&certs, "nas.lab.test")[0]["profile"], "default");
    let (nas_life, nas_serial) = leaf_facts(&live(d, "nas.lab.test").join("cert.pem"));
    assert!(nas_life > 80 * 86_400, "the default profile keeps lab-internal's 90 days ({nas_life} s)");
    // Who holds it: certbot's User-Agent and address, recorded with its order.
    let shown = admin(&config, &["certs", "show", &nas_serial]);
    let ua = shown["client_user_agent"].as_str().unwrap_or_default();
    assert!(ua.starts_with("CertbotACMEClient/"), "certbot's User-Agent: {shown}");
    let ip: std::net::IpAddr = shown["client_ip"].as_str().unwrap().parse().unwrap();
    assert!(ip.is_loopback(), "{shown}");
    assert_eq!(shown["client"], format!("{ua} from {ip}").as_str());
    assert_eq!(shown["renewal_state"], "active");

    step(t0, "short profile issued");
    // certbot revoke (signed by the account): vacme records it and OpenBao revokes the serial.
    let revoke = [
        s("revoke"),
        s("--cert-name"),
        s("pi.dev.lab.test"),
        s("--reason"),
        s("superseded"),
        s("--delete-after-revoke"),
    ];
    assert_ok(&certbot(&tools, d, vacme, http01, &revoke).await, "certbot revoke", d);
    assert!(bao.revocation_time(&short_serial).await.is_some(), "OpenBao lists {short_serial} as revoked");
    let shown = admin(&config, &["certs", "show", &short_serial]);
    assert_eq!((shown["state"].as_str(), shown["revocation_reason"].as_i64()), (Some("revoked"), Some(4)));
    assert!(shown["ca_revoked_at"].is_i64(), "vacme knows OpenBao confirmed: {shown}");
    let pem_path = dir.path().join("pi.pem");
    std::fs::write(&pem_path, shown["chain_pem"].as_str().unwrap()).unwrap();
    let again = [s("revoke"), s("--cert-path"), pem_path.display().to_string(), s("--no-delete-after-revoke")];
    let out = certbot(&tools, d, vacme, http01, &again).await;
    assert!(!out.status.success() && text(&out).contains("already revoked"), "{}", text(&out));

    step(t0, "revoked twice");
    // certbot renew asks renewal info: nas is early in its window, so nothing is renewed...
    let out = certbot(&tools, d, vacme, http01, &[s("renew"), s("--no-random-sleep-on-renew")]).await;
    assert_ok(&out, "certbot renew (nothing due)", d);
    assert!(text(&out).contains("not yet due"), "{}", text(&out));
    assert_eq!(certs_named(&admin(&config, &["certs", "list"]), "nas.lab.test").len(), 1);

    step(t0, "renew: nothing due");
    // ...until OpenBao revokes it behind vacme's back: renewal info says "now", certbot renews.
    bao.revoke(&nas_serial).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // past the Retry-After certbot stored
    let out = certbot(&tools, d, vacme, http01, &[s("renew"), s("--no-random-sleep-on-renew")]).await;
    assert_ok(&out, "certbot renew (revoked in OpenBao)", d);
    let nas = certs_named(&admin(&config, &["certs", "list"]), "nas.lab.test");
    assert_eq!(nas.len(), 2, "renewed: {nas:#?}");
    let (_, new_serial) = leaf_facts(&live(d, "nas.lab.test").join("cert.pem"));
    assert_ne!(new_serial, nas_serial);
    let old = nas
        .iter()
        .find(|c| c["serial"].as_str().unwrap().trim_start_matches('0') == nas_serial.trim_start_matches('0'));
    assert_eq!(old.unwrap()["state"], "revoked", "vacme learnt of OpenBao's revocation: {nas:#?}");
    assert_eq!(old.unwrap()["renewal_state"], "revoked", "{nas:#?}");
    let renewed = nas
        .iter()
        .find(|c| c["serial"].as_str().unwrap().trim_start_matches('0') == new_serial.trim_start_matches('0'));
    assert_eq!(renewed.unwrap()["renewal_state"], "active", "{nas:#?}");
    let (sans, _) = verify_chain(&live(d, "nas.lab.test").join("fullchain.pem"), &bao.root_pem);
    assert_eq!(sans, vec![s("nas.lab.test")]);
    step(t0, "renewed after the revocation in OpenBao");

    // The operator revokes the new certificate with the admin CLI: OpenBao has it too.
    let done = admin(&config, &["certs", "revoke", &new_serial, "--reason", "5"]);
    assert_eq!((done["revoked"].as_bool(), done["ca_confirmed"].as_bool()), (Some(true), Some(true)), "{done}");
    assert!(bao.revocation_time(&new_serial).await.is_some(), "OpenBao lists {new_serial} as revoked");
    step(t0, "vacme certs revoke reached OpenBao");
}

/// lego (Debian's package, when installed) registers with an EAB key, gets a certificate from
/// OpenBao through vacme, and revokes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lego_with_eab_gets_and_revokes_a_certificate_from_openbao() {
    let name = "lego_with_eab_gets_and_revokes_a_certificate_from_openbao";
    let Some(tools) = tools_bin(name) else { return };
    let lego = std::env::var_os("VACME_LEGO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/lego"));
    if !lego.exists() {
        eprintln!(
            "\n*** SKIPPED: {name}: lego not installed (Debian package `lego`; .ci/run installs it as root) ***\n"
        );
        return;
    }
    let lab = Lab::start(&tools, "[eab]\nrequired = true\n\n").await;
    let Lab { dir, bao, vacme, config, http01, .. } = &lab;
    let (config, http01) = (config.clone(), *http01);
    let key = admin(&config, &["eab", "create", "--scope", "*.lab.test"]);
    let lego_dir = dir.path().join("lego");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(&lego);
        cmd.args(["--accept-tos", "--email", "ops@lab.example", "--server", &vacme.directory()])
            .arg("--eab")
            .arg(format!("--kid={}", key["kid"].as_str().unwrap()))
            .arg(format!("--hmac={}", key["hmac_key"].as_str().unwrap()))
            .args(["--domains", "nas.lab.test", "--http", "--http.port", &format!("127.0.0.1:{http01}")])
            .arg("--path")
            .arg(&lego_dir)
            .args(extra)
            .env("LEGO_CA_CERTIFICATES", vacme.ca_bundle());
        cmd
    };
    let mut cmd = run(&["run"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "lego run\n{}\n{}", text(&out), vacme.process.output());
    let crt = lego_dir.join("certificates/nas.lab.test.crt");
    let (sans, issuer) = verify_chain(&crt, &bao.root_pem);
    assert_eq!((sans, issuer.as_str()), (vec!["nas.lab.test".to_owned()], "Lab Intermediate CA"));
    let (_, serial) = leaf_facts(&crt);
    assert_eq!(admin(&config, &["eab", "list"])[0]["state"], "used");

    let mut cmd = run(&["revoke", "--reason", "4"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "lego revoke\n{}", text(&out));
    assert!(bao.revocation_time(&serial).await.is_some(), "OpenBao lists {serial} as revoked");
    let shown = admin(&config, &["certs", "show", &serial]);
    assert_eq!((shown["state"].as_str(), shown["revocation_reason"].as_i64()), (Some("revoked"), Some(4)));
}
