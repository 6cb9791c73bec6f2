//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) opens every page of a
//! running vacme over HTTPS, and the test checks what a person would see (the title, the
//! certificate's names) and that the browser reported nothing at error level (no CSP violation,
//! no failed load, no console error). Each page's screenshot lands in target/dashboard-screenshots/.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::{dashboard::seeded, env::TestEnv};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

struct Seen {
    title: String,
    dom: String,
    problems: Vec<String>,
}

/// Opens `url` in a fresh headless Chromium, saving its screenshot as `shot`.
async fn open(chromium: &PathBuf, url: &str, shot: &PathBuf, width: u32) -> Seen {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/page.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(chromium).arg(url).arg(shot).arg(width.to_string());
    let run = tokio::task::spawn_blocking(move || cmd.output());
    let out = tokio::time::timeout(Duration::from_secs(90), run).await.expect("the browser finishes").unwrap().unwrap();
    assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Seen {
        title: v["title"].as_str().unwrap_or_default().to_owned(),
        dom: v["dom"].as_str().unwrap_or_default().to_owned(),
        problems: v["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect(),
    }
}

#[tokio::test]
async fn chromium_renders_every_page_without_an_error() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "\n*** SKIPPED: chromium_renders_every_page_without_an_error: chromium not installed (Debian package `chromium`; .ci/run installs it as root) ***\n"
        );
        return;
    };
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // The harness sees what it is there to see: a console error and a refused load.
    let seen = open(
        &chromium,
        "data:text/html,<title>t</title><script>console.error('marker-7')</script>",
        &shots.join("self-check.png"),
        400,
    )
    .await;
    assert_eq!(seen.title, "t");
    assert!(seen.problems.iter().any(|p| p.contains("marker-7")), "{:?}", seen.problems);

    let env = TestEnv::start().await;
    let (acct, cert) = seeded(&env).await;

    let base = format!("https://localhost:{}", env.admin.expect("the dashboard listens").port());
    let pages = [
        ("overview", "/".to_owned(), "Overview · vacme", "overdue.localhost", 1280),
        ("certificates", "/certificates".to_owned(), "Certificates · vacme", "pi.localhost", 1280),
        ("certificate", format!("/certificates/{cert}"), "nas.localhost · vacme", "-----BEGIN CERTIFICATE-----", 1280),
        ("failures", "/failures".to_owned(), "Failures · vacme", "connection refused by 10.0.0.23:80", 1280),
        ("accounts", "/accounts".to_owned(), "Accounts · vacme", &acct, 1280),
        ("audit", "/audit".to_owned(), "Audit trail · vacme", "validation_failed", 1280),
        ("overview-phone", "/".to_owned(), "Overview · vacme", "overdue.localhost", 390),
    ];
    for (name, path, title, text, width) in pages {
        let shot = shots.join(format!("{name}.png"));
        let seen = open(&chromium, &format!("{base}{path}"), &shot, width).await;
        assert_eq!(seen.title, title, "{path}");
        assert!(seen.dom.contains(text), "{path} shows {text}: {}", seen.dom);
        assert!(seen.problems.is_empty(), "{path}: the browser reported {:?}", seen.problems);
        let png = std::fs::metadata(&shot).unwrap().len();
        assert!(png > 10_000, "{path}: a {png}-byte screenshot is not a rendered page");
        eprintln!("{name}: {} ({png} bytes)", shot.display());
    }
}
