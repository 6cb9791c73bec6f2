//! A post-sign mismatch with the real OpenBao: vacme reaches OpenBao through a proxy that adds
//! `exclude_cn_from_sans=true` to sign calls for the role `lab-mismatch`, so OpenBao itself signs
//! a certificate without one of the order's names. vacme never delivers it,
//! revokes it in OpenBao at once, and records it in the audit trail and `certs list --all`.

use std::{path::Path, process::Command};

use serde_json::Value;

use crate::{
    VACME,
    lifecycle::{Lab, certbot, text},
    procs::tools_bin,
};

fn admin(config: &Path, args: &[&str]) -> Value {
    let out = Command::new(VACME).arg("--config").arg(config).args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "vacme {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Forwards everything to OpenBao at `bao`; a sign call for `lab-mismatch` gets
/// `exclude_cn_from_sans: true` added. Returns its address.
async fn proxy(bao: String) -> String {
    use axum::{body::Bytes, extract::Request, http::StatusCode, response::IntoResponse};
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (http, bao) = (http.clone(), bao.clone());
        async move {
            let (parts, body) = req.into_parts();
            let mut body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            if path.starts_with("/v1/pki_int/sign/lab-mismatch") {
                let mut v: Value = serde_json::from_slice(&body).unwrap();
                v["exclude_cn_from_sans"] = Value::Bool(true);
                body = Bytes::from(v.to_string());
            }
            let mut out = http.request(parts.method.clone(), format!("{bao}{path}")).body(body);
            for (k, v) in &parts.headers {
                if k != "host" && k != "content-length" {
                    out = out.header(k, v);
                }
            }
            let res = out.send().await.unwrap();
            let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
            (status, res.bytes().await.unwrap()).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_openbao_signed_wrongly_is_revoked_and_recorded() {
    let Some(tools) = tools_bin("a_certificate_openbao_signed_wrongly_is_revoked_and_recorded") else { return };
    let lab = Lab::start_logging(
        &tools,
        "[issuance]\nfinalize_wait_secs = 2\n\n[profiles.mismatch]\nrole = \"lab-mismatch\"\n\n",
        "info,vacme=debug",
    )
    .await;
    let proxy = proxy(lab.bao.addr.clone()).await;
    let cfg = std::fs::read_to_string(&lab.config).unwrap().replace(&lab.bao.addr, &proxy);
    std::fs::write(&lab.config, cfg).unwrap();
    let mut lab = lab;
    lab.vacme = lab.vacme.restart().await;
    let (d, config) = (lab.dir.path(), lab.config.clone());
    let s = |v: &str| v.to_owned();
    let args = [
        s("certonly"),
        s("--agree-tos"),
        s("--register-unsafely-without-email"),
        s("-d"),
        s("odd.lab.test"),
        s("--preferred-profile"),
        s("mismatch"),
    ];
    let out = certbot(&tools, d, &lab.vacme, lab.http01, &args).await;
    assert!(!out.status.success(), "certbot got a certificate OpenBao signed wrongly\n{}", text(&out));
    assert!(text(&out).contains("does not match this order"), "{}", text(&out));

    // OpenBao did sign one certificate, and it is revoked there.
    let signed = lab.bao.issued_serials().await;
    assert_eq!(signed.len(), 1, "{signed:?}");
    let serial = signed[0].replace(':', "");
    assert!(lab.bao.revocation_time(&serial).await.is_some(), "OpenBao lists {serial} as revoked");

    // The audit trail has the serial and what OpenBao put in it (no SAN at all).
    let audit = admin(&config, &["audit"]);
    let event = audit.as_array().unwrap().iter().find(|e| e["event"] == "post_sign_mismatch").cloned();
    let event = event.unwrap_or_else(|| panic!("no post_sign_mismatch event: {audit:#}"));
    assert_eq!(event["serial"].as_str().unwrap().trim_start_matches('0'), serial.trim_start_matches('0'));
    assert_eq!(event["identifiers"], serde_json::json!([]), "OpenBao left the common name out of the SANs");

    // `certs list` does not show it as a certificate; `--all` shows it rejected and revoked.
    assert_eq!(admin(&config, &["certs", "list"]), serde_json::json!([]));
    let all = admin(&config, &["certs", "list", "--all"]);
    let row = &all.as_array().unwrap()[0];
    assert_eq!(row["serial"].as_str().unwrap().trim_start_matches('0'), serial.trim_start_matches('0'));
    assert_eq!(row["state"], "rejected (revoked)", "{all:#}");
    let table = Command::new(VACME).arg("--config").arg(&config).args(["certs", "list", "--all"]).output().unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("rejected (revoked)"));
    let log = std::fs::read_to_string(&lab.vacme.process.stderr).unwrap();
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("does not match the order")), "{log}");
}
