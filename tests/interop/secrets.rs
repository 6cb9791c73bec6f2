//! Secret hygiene (issue 6): the Vault token, the AppRole secret_id, EAB HMAC keys and the EAB
//! server secret never reach vacme's logs (at `trace`), its error messages, the problem documents
//! clients see, the admin CLI's output or `Debug`; and the files holding secrets are 0600.
//!
//! One run drives every path that handles a secret, the failing ones included: a wrong EAB MAC, a
//! profile whose Vault role was deleted, a token revoked in OpenBao mid-run, and an AppRole whose
//! tokens and secret_id were revoked. Then everything vacme wrote (and everything certbot logged,
//! which holds every answer vacme gave it) is searched for each secret in every encoding
//! (raw, hex, base64, base64url, a `Debug` byte list).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};
use serde_json::json;

use crate::{
    VACME, Vacme,
    bao::ZONE,
    dns::TestDns,
    lifecycle::{Lab, assert_ok, certbot, leaf_facts, live, step, text},
    procs::{free_port, tools_bin},
};

/// vacme's most verbose logging: every crate at every level.
const LOG: &str = "trace";

/// One secret in one encoding.
struct Needle {
    what: String,
    bytes: Vec<u8>,
}

/// `secret` in every form a careless `{}` / `{:?}` / encoder could print it.
fn forms(what: &str, secret: &[u8]) -> Vec<Needle> {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec![
        ("raw", secret.to_vec()),
        ("hex", hex.clone().into_bytes()),
        ("HEX", hex.to_ascii_uppercase().into_bytes()),
        ("base64", STANDARD.encode(secret).into_bytes()),
        ("base64 (no padding)", STANDARD_NO_PAD.encode(secret).into_bytes()),
        ("base64url", URL_SAFE_NO_PAD.encode(secret).into_bytes()),
        ("base64url (padded)", URL_SAFE.encode(secret).into_bytes()),
        ("Debug byte list", format!("{secret:?}").into_bytes()),
    ];
    forms.dedup_by(|a, b| a.1 == b.1);
    forms.into_iter().map(|(form, bytes)| Needle { what: format!("{what} ({form})"), bytes }).collect()
}

/// Every place where one of `needles` occurs in `sources`: `source:line: <the line>`.
fn leaks(sources: &[(String, Vec<u8>)], needles: &[Needle]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, hay) in sources {
        for n in needles {
            let mut from = 0;
            while let Some(i) = find(&hay[from..], &n.bytes).map(|i| i + from) {
                let start = hay[..i].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                let end = hay[i..].iter().position(|b| *b == b'\n').map_or(hay.len(), |p| i + p);
                let line_no = hay[..i].iter().filter(|b| **b == b'\n').count() + 1;
                let line: String = String::from_utf8_lossy(&hay[start..end]).chars().take(600).collect();
                found.push(format!("{} in {name}:{line_no}: {line}", n.what));
                from = end.max(i + 1);
            }
        }
    }
    found
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `vacme --config <config> <args>` as an admin would run it (with the token in its environment
/// too, as a shell with `VAULT_TOKEN` exported would have); its output, whatever its status.
fn vacme_cli(config: &Path, args: &[&str], token: &str) -> Output {
    Command::new(VACME)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("VACME_LOG", LOG)
        .env("VACME_VAULT_TOKEN", token)
        .env("VAULT_TOKEN", token)
        .output()
        .unwrap()
}

/// A certbot `--config` file with the EAB credentials: on certbot's command line they would
/// land in its own log ("Arguments: [...]"), which is certbot's echo, not vacme's leak.
fn eab_ini(dir: &Path, name: &str, kid: &str, hmac: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("eab-kid = {kid}\neab-hmac-key = {hmac}\n")).unwrap();
    path.display().to_string()
}

/// A tools folder whose `certbot` is killed after `secs`: for orders vacme keeps `processing`
/// while the CA is unusable, which certbot would otherwise poll for 90 s.
fn impatient_certbot(tools: &Path, dir: &Path, secs: u32) -> PathBuf {
    let wrap = dir.join(format!("certbot-{secs}s"));
    std::fs::create_dir_all(&wrap).unwrap();
    let script = format!("#!/bin/sh\nexec timeout -s TERM {secs} '{}' \"$@\"\n", tools.join("certbot").display());
    std::fs::write(wrap.join("certbot"), script).unwrap();
    std::fs::set_permissions(wrap.join("certbot"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    wrap
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// The secret files of one data dir are 0600 and its folders closed to group and others.
fn check_modes(data: &Path, bad: &mut Vec<String>) {
    for file in ["eab.secret", "ca/ca.key"] {
        let m = mode(&data.join(file));
        if m != 0o600 {
            bad.push(format!("{}: mode {m:o}, want 600", data.join(file).display()));
        }
    }
    for dir in [data.to_owned(), data.join("ca")] {
        let m = mode(&dir);
        if m & 0o077 != 0 {
            bad.push(format!("{}: folder mode {m:o} lets group/others in", dir.display()));
        }
    }
    // Not documented either way; the 0700 data folder is what guards them. Shown for the report.
    for db in ["vacme.db", "vacme.db-wal", "vacme.db-shm"] {
        if data.join(db).exists() {
            eprintln!("  {}: mode {:o}", data.join(db).display(), mode(&data.join(db)));
        }
    }
}

/// Every file under `dir` (certbot's logs, rotated ones included).
fn files_under(dir: &Path, into: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, into);
        } else {
            into.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_errors_or_problems_and_secret_files_are_private() {
    let Some(tools) = tools_bin("secrets_never_reach_logs_errors_or_problems_and_secret_files_are_private") else {
        return;
    };
    let t0 = Instant::now();
    let lab = Lab::start_logging(
        &tools,
        "[eab]\nrequired = true\n\n\
         [issuance]\nfinalize_wait_secs = 1\n\n\
         [profiles.short]\ndescription = \"24-hour certificate\"\nrole = \"lab-short\"\nmax_days = 1\n\n",
        LOG,
    )
    .await;
    let Lab { dir, bao, vacme, config, http01, .. } = &lab;
    let (d, http01) = (dir.path(), *http01);
    let s = |v: &str| v.to_owned();
    let token = std::fs::read_to_string(&bao.token_file).unwrap().trim().to_owned();
    let secret_id = std::fs::read_to_string(&bao.secret_id_file).unwrap().trim().to_owned();
    assert!(token.len() >= 20 && secret_id.len() >= 20, "OpenBao handed out a token and a secret_id");
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut keep = |name: &str, out: &Output| {
        outputs.push((format!("{name} (stdout)"), out.stdout.clone()));
        outputs.push((format!("{name} (stderr)"), out.stderr.clone()));
    };
    step(t0, "OpenBao and vacme (token file, EAB required, VACME_LOG=trace) up");

    // The effective configuration, with the token in the environment as well.
    let out = vacme_cli(config, &["check-config"], &token);
    assert!(out.status.success() && text(&out).contains("[vault.auth]"), "{}", text(&out));
    keep("vacme check-config", &out);

    // An EAB key: `eab create` prints it once (its purpose), so its output is not searched, but
    // it shows that the search finds a key where there is one.
    let out =
        vacme_cli(config, &["eab", "create", "--scope", "*.lab.test", "--comment", "secrets test", "--json"], &token);
    assert!(out.status.success(), "{}", text(&out));
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (kid, hmac) = (key["kid"].as_str().unwrap().to_owned(), key["hmac_key"].as_str().unwrap().to_owned());
    let hmac_raw = URL_SAFE_NO_PAD.decode(&hmac).unwrap();
    let control = leaks(&[(s("eab create"), out.stdout.clone())], &forms("EAB HMAC key", &hmac_raw));
    assert_eq!(control.len(), 1, "the search finds the key `eab create` printed: {control:?}");

    // A wrong MAC: refused, and the answer must not help (nor hold the right key).
    let wrong = eab_ini(d, "wrong-eab.ini", &kid, &URL_SAFE_NO_PAD.encode([7u8; 32]));
    let register = [s("register"), s("--agree-tos"), s("--register-unsafely-without-email")];
    let mut args = register.to_vec();
    args.extend([s("--config"), wrong]);
    let out = certbot(&tools, d, vacme, http01, &args).await;
    assert!(!out.status.success() && text(&out).contains("does not verify"), "{}", text(&out));
    keep("certbot register (wrong EAB MAC)", &out);
    step(t0, "wrong EAB MAC refused");

    // The right key binds the account; three certificates from OpenBao's lab-internal.
    let right = eab_ini(d, "eab.ini", &kid, &hmac);
    for (i, name) in ["nas.lab.test", "s3.lab.test", "web.lab.test"].into_iter().enumerate() {
        let mut args = vec![s("certonly"), s("-d"), s(name), s("--agree-tos"), s("--register-unsafely-without-email")];
        if i == 0 {
            args.extend([s("--config"), right.clone()]);
        }
        let out = certbot(&tools, d, vacme, http01, &args).await;
        assert_ok(&out, &format!("certonly {name}"), d);
        keep(&format!("certbot certonly {name}"), &out);
    }
    let serial = |name: &str| leaf_facts(&live(d, name).join("cert.pem")).1;
    step(t0, "three certificates issued");

    // Revocation that reaches OpenBao.
    let nas = serial("nas.lab.test");
    let out = certbot(&tools, d, vacme, http01, &[s("revoke"), s("--cert-name"), s("nas.lab.test")]).await;
    assert_ok(&out, "certbot revoke nas", d);
    keep("certbot revoke nas", &out);
    assert!(bao.revocation_time(&nas).await.is_some(), "OpenBao revoked {nas}");
    step(t0, "revoked");

    // A profile whose role is gone from OpenBao: Vault answers 400, the order fails.
    bao.api(reqwest::Method::DELETE, "pki_int/roles/lab-short", None).await;
    let args = [s("certonly"), s("-d"), s("gone.lab.test"), s("--preferred-profile"), s("short")];
    let out = certbot(&tools, d, vacme, http01, &args).await;
    assert!(!out.status.success(), "a deleted role cannot sign\n{}", text(&out));
    keep("certbot certonly (deleted role)", &out);
    step(t0, "deleted role refused");

    // The token revoked in OpenBao behind vacme's back: revocations and issuance now fail there.
    bao.api(reqwest::Method::POST, "auth/token/revoke", Some(json!({"token": token}))).await;
    let out = certbot(&tools, d, vacme, http01, &[s("revoke"), s("--cert-name"), s("s3.lab.test")]).await;
    assert_ok(&out, "certbot revoke s3 (vacme records it; Vault is told later)", d);
    keep("certbot revoke s3 (revoked token)", &out);
    let web = serial("web.lab.test");
    let out = vacme_cli(config, &["certs", "revoke", &web, "--json"], &token);
    assert!(out.status.success() && text(&out).contains("\"ca_confirmed\": false"), "{}", text(&out));
    keep("vacme certs revoke (revoked token)", &out);
    let slow = impatient_certbot(&tools, d, 10);
    let out = certbot(&slow, d, vacme, http01, &[s("certonly"), s("-d"), s("late.lab.test")]).await;
    assert!(!out.status.success(), "no certificate without a token\n{}", text(&out));
    keep("certbot certonly (revoked token, killed)", &out);
    for args in [&["eab", "list"][..], &["certs", "list"], &["certs", "show", web.as_str()]] {
        let out = vacme_cli(config, args, &token);
        assert!(out.status.success(), "vacme {args:?}: {}", text(&out));
        keep(&format!("vacme {}", args.join(" ")), &out);
    }
    step(t0, "revoked token: revoke, CLI revoke and issuance failed");

    // A second vacme on the same OpenBao with AppRole (role_id file + secret_id file).
    let app_dir = d.join("approle");
    std::fs::create_dir_all(&app_dir).unwrap();
    let app_dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
    let (app_port, app_http01) = (free_port(), free_port());
    let vault = format!(
        "[issuance]\nfinalize_wait_secs = 1\n\n[vault]\naddress = \"{}\"\ntimeout_secs = 5\n\n\
         [vault.auth]\nmethod = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"\n",
        bao.addr,
        bao.role_id_file.display(),
        bao.secret_id_file.display()
    );
    let args = crate::config_args(&app_dir, app_port, app_http01, &app_dns, &vault);
    let app_config = PathBuf::from(&args[1]);
    let app = Vacme::start_logging(args, app_port, &app_dir.join("data"), &app_dir, LOG).await;
    let out = vacme_cli(&app_config, &["check-config"], &token);
    assert!(out.status.success() && text(&out).contains("approle"), "{}", text(&out));
    keep("vacme check-config (approle)", &out);
    let out = certbot(
        &tools,
        &app_dir,
        &app,
        app_http01,
        &[s("certonly"), s("-d"), s("app.lab.test"), s("--agree-tos"), s("--register-unsafely-without-email")],
    )
    .await;
    assert_ok(&out, "certonly app.lab.test (AppRole)", &app_dir);
    keep("certbot certonly (approle)", &out);
    step(t0, "AppRole vacme issued");

    // Its tokens revoked and its secret_id destroyed: the re-login fails, in the server and the CLI.
    bao.api(reqwest::Method::POST, "sys/leases/revoke-prefix/auth/approle", None).await;
    bao.api(reqwest::Method::POST, "auth/approle/role/vacme/secret-id/destroy", Some(json!({"secret_id": secret_id})))
        .await;
    let app_serial = leaf_facts(&live(&app_dir, "app.lab.test").join("cert.pem")).1;
    let out = vacme_cli(&app_config, &["certs", "revoke", &app_serial], &token);
    assert!(out.status.success() && text(&out).contains("did not answer"), "{}", text(&out));
    keep("vacme certs revoke (approle, secret_id destroyed)", &out);
    let slow = impatient_certbot(&tools, &app_dir, 8);
    let out = certbot(&slow, &app_dir, &app, app_http01, &[s("certonly"), s("-d"), s("app2.lab.test")]).await;
    assert!(!out.status.success(), "no certificate without a login\n{}", text(&out));
    keep("certbot certonly (approle, secret_id destroyed, killed)", &out);
    step(t0, "AppRole re-login failures");

    // Everything vacme (both servers) wrote, once they have stopped.
    let mut app = app;
    app.process.stop(Duration::from_secs(15));
    let Lab { mut vacme, dir, bao, .. } = lab;
    vacme.process.stop(Duration::from_secs(15));
    let d = dir.path();
    let mut sources = outputs;
    for p in [&vacme.process, &app.process] {
        for f in [&p.stdout, &p.stderr] {
            sources.push((f.display().to_string(), std::fs::read(f).unwrap()));
        }
    }
    let vacme_log = String::from_utf8_lossy(&std::fs::read(&vacme.process.stderr).unwrap()).into_owned();
    let app_log = String::from_utf8_lossy(&std::fs::read(&app.process.stderr).unwrap()).into_owned();
    let mut certbot_logs = Vec::new();
    files_under(&d.join("certbot/logs"), &mut certbot_logs);
    files_under(&app_dir.join("certbot/logs"), &mut certbot_logs);
    let certbot_text: String = certbot_logs.iter().map(|(_, b)| String::from_utf8_lossy(b)).collect();
    sources.extend(certbot_logs);

    // The search must have looked where the secrets would have gone.
    for (what, ok) in [
        ("vacme logged at trace", vacme_log.contains("TRACE") && app_log.contains("TRACE")),
        ("the MAC failure was logged", vacme_log.contains("does not verify")),
        ("Vault's 403 was logged", vacme_log.contains("permission denied")),
        ("the failed AppRole login was logged", app_log.contains("AppRole login")),
        ("certbot logged the wrong-MAC problem", certbot_text.contains("urn:ietf:params:acme:error:unauthorized")),
        ("certbot logged problem bodies", certbot_text.contains("application/problem+json")),
    ] {
        assert!(ok, "{what}: the secret search would prove nothing\n--- vacme ---\n{vacme_log}");
    }

    let mut needles = forms("Vault token", token.as_bytes());
    needles.extend(forms("AppRole secret_id", secret_id.as_bytes()));
    needles.extend(forms("EAB HMAC key", &hmac_raw));
    for data in [d.join("data"), app_dir.join("data")] {
        let secret = std::fs::read(data.join("eab.secret")).unwrap();
        assert!(secret.len() >= 32, "eab.secret holds the server secret");
        needles.extend(forms(&format!("{}", data.join("eab.secret").display()), &secret));
    }
    let found = leaks(&sources, &needles);
    let total: usize = sources.iter().map(|(_, b)| b.len()).sum();
    eprintln!("searched {} sources ({total} bytes) for {} secret forms", sources.len(), needles.len());

    let mut bad_modes = Vec::new();
    for data in [d.join("data"), app_dir.join("data")] {
        check_modes(&data, &mut bad_modes);
    }
    drop(bao);
    if !found.is_empty() || !bad_modes.is_empty() {
        eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! SECRET HYGIENE FAILURE: {} leak(s), {} bad file mode(s)", found.len(), bad_modes.len());
        for f in found.iter().chain(&bad_modes) {
            eprintln!("!!! {f}");
        }
        eprintln!("!!! the logs are kept in {}", dir.keep().display());
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
        panic!("secret hygiene: {}", found.iter().chain(&bad_modes).next().unwrap());
    }
    step(t0, "no secret in any output; secret files are 0600");
}

/// `Debug` (and `check-config`) of a parsed configuration, the Vault settings and issuer built
/// from it, and the EAB secret never show a token, a secret_id or key bytes; a secret put where
/// a config key is expected is refused without being echoed.
#[tokio::test]
async fn config_and_issuer_debug_never_show_secrets() {
    use vacme::{
        Secret, VaultAuth, VaultIssuer, VaultSettings,
        config::{Config, Overrides},
        jws::eab::EabSecret,
    };
    const TOKEN: &str = "hvs.CAESIUnitTestTokenNeverPrinted0123";
    const SECRET_ID: &str = "6f1c2a9e-secret-id-never-printed";

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret-id"), SECRET_ID).unwrap();
    let file = dir.path().join("vacme.toml");
    std::fs::write(
        &file,
        format!(
            "[vault]\naddress = \"http://127.0.0.1:8200\"\n[vault.auth]\nmethod = \"approle\"\n\
             role_id = \"role-id-is-not-a-secret\"\nsecret_id_file = \"{}\"\ntoken_file = \"{}\"\n",
            dir.path().join("secret-id").display(),
            dir.path().join("token").display()
        ),
    )
    .unwrap();
    let env = |extra: &[(&str, &str)]| {
        let mut v = vec![("VACME_VAULT_TOKEN".to_owned(), TOKEN.to_owned()), ("VAULT_TOKEN".into(), TOKEN.into())];
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    };
    let config = Config::load(Some(&file), env(&[]), &Overrides::default()).unwrap();
    for (what, shown) in [("Debug", format!("{config:?}")), ("check-config", config.to_toml())] {
        for secret in [TOKEN, SECRET_ID] {
            assert!(!shown.contains(secret), "Config {what} shows a secret:\n{shown}");
        }
    }

    for key in ["VACME_VAULT__AUTH__TOKEN", "VACME_VAULT__AUTH__SECRET_ID", "VACME_VAULT__TOKEN"] {
        let err = Config::load(Some(&file), env(&[(key, TOKEN)]), &Overrides::default())
            .expect_err(&format!("{key} is not a config key"));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(TOKEN), "the error for {key} echoes its value: {shown}");
    }

    let settings = VaultSettings {
        addresses: vec!["http://127.0.0.1:8200".into()],
        mount: "pki_int".into(),
        role: "lab-internal".into(),
        ca_bundle: None,
        namespace: None,
        timeout: Duration::from_secs(5),
        auth: VaultAuth::Token(Secret::new(TOKEN)),
        client_cert: None,
    };
    let shown = format!("{settings:?} {:?} {}", settings.auth, Secret::new(TOKEN));
    assert!(!shown.contains(TOKEN) && !shown.contains("CAESI"), "VaultSettings Debug shows the token: {shown}");
    crate::install_provider();
    let issuer = VaultIssuer::new(settings).await.unwrap();
    assert!(!format!("{issuer:?}").contains(TOKEN), "VaultIssuer Debug shows the token");

    let raw = [0xA5u8; 32];
    let eab = EabSecret::from_bytes(&raw);
    let shown = format!("{eab:?}");
    for n in forms("EAB secret", &raw) {
        assert!(find(shown.as_bytes(), &n.bytes).is_none(), "EabSecret Debug shows {}: {shown}", n.what);
    }
}
