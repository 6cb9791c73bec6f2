//! A password inside a URL vacme is given (`[database] url`, copy-store's target) is never
//! printed: not by `check-config`, not in the error of a store it cannot reach.

use std::process::Command;

use vacme::store::Store;

const VACME: &str = env!("CARGO_BIN_EXE_vacme");
const PASSWORD: &str = "pw-Never-Printed-7781";

/// Nothing listens on port 1, so connecting fails after the URL was parsed.
fn unreachable_url() -> String {
    format!("postgres://vacme:{PASSWORD}@127.0.0.1:1/vacme?sslmode=disable")
}

/// Runs the vacme binary with `config` as its file; returns (success, stdout + stderr).
fn vacme(dir: &std::path::Path, config: &str, args: &[&str]) -> (bool, String) {
    let file = dir.join("vacme.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(VACME)
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .env_remove("VACME_LOG")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test]
async fn check_config_shows_the_database_url_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[database]\nurl = \"{}\"\n\n[vault]\naddress = \"https://ops:{PASSWORD}@vault.lab.test:8200\"\n",
        unreachable_url()
    );
    let (ok, text) = vacme(dir.path(), &config, &["check-config"]);
    assert!(ok, "{text}");
    assert!(!text.contains(PASSWORD), "check-config prints the password:\n{text}");
    assert!(text.contains("postgres://vacme:***@127.0.0.1:1/vacme?sslmode=disable"), "{text}");
    assert!(text.contains("https://ops:***@vault.lab.test:8200"), "{text}");
}

#[tokio::test]
async fn a_store_that_cannot_be_reached_is_reported_without_the_password() {
    // sqlx retries a refused connection until its pool timeout (30 s), so the three attempts
    // run at once: the admin commands and copy-store in their own processes, the store here.
    let dir = tempfile::tempdir().unwrap();
    let url = unreachable_url();
    let config = format!("[database]\nurl = \"{url}\"\n");
    let (d1, d2, c1, u2) = (dir.path().to_owned(), dir.path().join("copy"), config.clone(), url.clone());
    let listing = tokio::task::spawn_blocking(move || vacme(&d1, &c1, &["certs", "list"]));
    let copying = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&d2).unwrap();
        vacme(&d2, "", &["copy-store", &u2])
    });
    let e = match Store::connect(&url).await {
        Err(e) => e,
        Ok(_) => panic!("nothing listens on 127.0.0.1:1"),
    };
    let shown = format!("{e} / {e:?}");
    assert!(!shown.contains(PASSWORD), "the store's connect error shows the password: {shown}");
    for (what, run) in [("certs list", listing), ("copy-store", copying)] {
        let (ok, text) = run.await.unwrap();
        assert!(!ok, "{what}: {text}");
        assert!(text.contains("database error"), "{what}: {text}");
        assert!(!text.contains(PASSWORD), "{what}: {text}");
    }
}
