//! The admin dashboard over HTTPS on its own listener: each page's content for a store with
//! certificates in every renewal state, the security headers, read-only (no form posts), the
//! ACME listener not serving it, and the access rule (loopback free, a bearer token from
//! anywhere else, compared whole).

use std::{net::IpAddr, time::Duration};

use tower::ServiceExt;
use vacme::{
    acme::{Identifier, renewal::WindowPercents, types::ChallengeType},
    admin::{Admin, ClientAddr, router},
    store::{AuditEvent, NewAuthz, NewCertificate, NewOrder, Store},
};

use crate::env::TestEnv;

const DAY: i64 = 86_400;

/// A certificate for `name` valid from `now + from` to `now + to` days, recorded for `account`
/// along a flow's path through the store. Its PEM is a placeholder: only the listing reads it.
async fn recorded(store: &Store, account: &str, name: &str, now: i64, from: i64, to: i64) -> String {
    let id = Identifier::Dns(name.to_owned());
    let new = NewOrder {
        identifiers: vec![id.clone()],
        authzs: vec![NewAuthz { identifier: id, challenges: vec![ChallengeType::Http01] }],
        ..Default::default()
    };
    let at = now + from * DAY;
    let order = store.create_order(account, &new, at, at + 3600).await.unwrap().unwrap();
    let authz = store.authorization(&order.authz_ids[0]).await.unwrap().unwrap();
    assert!(store.start_challenge(&authz.challenges[0].id, at).await.unwrap());
    store.challenge_succeeded(&authz.challenges[0].id, at).await.unwrap();
    assert!(store.begin_issuance(&order.id, b"csr", at).await.unwrap());
    let order = store.order(&order.id).await.unwrap().unwrap();
    let cert = NewCertificate {
        serial: format!("{:x}", name.len() as i64 * 7919 + from.abs()),
        issuer: "local".into(),
        chain_pem: "not a PEM".into(),
        not_before: at,
        not_after: now + to * DAY,
        ari_id: None,
    };
    store.issuance_succeeded(&order, &cert, at).await.unwrap()
}

/// A store with certificates in every renewal state: one issued by a real flow for
/// `nas.localhost` (its certificate id is returned, with its account), then due, overdue, expired,
/// renewed (pi.localhost, twice) and revoked ones, and a failed validation of `s3.localhost`.
pub(crate) async fn seeded(env: &TestEnv) -> (String, String) {
    let store = env.state.store.clone();
    let (account, _) = env.account().await;
    let (order_url, _chain) = env.issue(&account, &["nas.localhost"]).await;
    let order_id = order_url.rsplit('/').next().unwrap().to_owned();
    let order = store.order(&order_id).await.unwrap().unwrap();
    let (acct, real) = (order.account_id.clone(), order.certificate_id.clone().unwrap());
    let now = env.state.clock.unix();
    // Window 33-67 % of each lifetime: 90 days from `from` to `to`.
    recorded(&store, &acct, "due.localhost", now, -40, 50).await;
    recorded(&store, &acct, "overdue.localhost", now, -70, 20).await;
    recorded(&store, &acct, "expired.localhost", now, -100, -10).await;
    recorded(&store, &acct, "pi.localhost", now, -60, 30).await;
    recorded(&store, &acct, "pi.localhost", now, -1, 89).await; // renews the one above
    let revoked = recorded(&store, &acct, "old.localhost", now, -5, 85).await;
    assert!(store.revoke_certificate(&revoked, 1, now).await.unwrap());
    AuditEvent::by_account("validation_failed", &acct)
        .identifiers(&[Identifier::Dns("s3.localhost".into())])
        .client_ip_text(Some("10.0.0.23"))
        .detail("http-01: connection refused by 10.0.0.23:80")
        .record(&store, now)
        .await;
    (acct, real)
}

async fn page(env: &TestEnv, path: &str) -> (u16, http::HeaderMap, String) {
    let admin = env.admin.expect("the dashboard listens");
    let res = env.http().get(format!("https://localhost:{}{path}", admin.port())).send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.text().await.unwrap())
}

#[tokio::test]
async fn every_page_shows_the_certificates_of_each_state_and_who_holds_them() {
    let env = TestEnv::start().await;
    let (acct, real) = seeded(&env).await;

    let (status, headers, html) = page(&env, "/").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<title>Overview · vacme</title>"), "{html}");
    for (state, n) in [("active", 2), ("due", 1), ("overdue", 1), ("expired", 1), ("renewed", 1), ("revoked", 1)] {
        assert!(
            html.contains(&format!("href=\"/certificates?state={state}\"><span class=\"n\">{n}</span> {state}</a>")),
            "{state}: {html}"
        );
    }
    assert!(html.contains("<svg class=\"chart\""));
    // The overdue one expires 20 days after `now`: day 20, or 19 once a second passed.
    assert!(
        html.contains("<rect class=\"overdue\" x=\"160\"") || html.contains("<rect class=\"overdue\" x=\"152\""),
        "{html}"
    );
    assert!(html.contains("<rect class=\"due\""), "{html}");
    assert!(html.contains("overdue.localhost"));
    assert!(html.contains(&env.directory), "the directory URL");
    assert!(html.contains("local: reachable"), "{html}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script at all: {csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(!html.contains("<script"), "no script");

    let (_, _, html) = page(&env, "/certificates?state=overdue").await;
    assert!(html.contains("overdue.localhost") && !html.contains("nas.localhost"), "{html}");
    assert!(html.contains("1 certificates; page 1 of 1"), "{html}");
    let (_, _, html) = page(&env, "/certificates?name=nas").await;
    assert!(html.contains("nas.localhost") && html.contains("instant-acme") && html.contains("127.0.0.1"), "{html}");
    let (_, _, html) = page(&env, "/certificates?state=revoked").await;
    assert!(html.contains("old.localhost") && !html.contains("due.localhost"), "{html}");

    let (status, _, html) = page(&env, &format!("/certificates/{real}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("<title>nas.localhost · vacme</title>"), "{html}");
    assert!(html.contains("http-01</td><td>valid"), "its validation: {html}");
    assert!(html.contains("vacme local CA") || html.contains("CN="), "its chain: {html}");
    assert!(html.contains("<span class=\"event issued\">issued</span>"), "its audit events: {html}");
    assert!(html.contains("-----BEGIN CERTIFICATE-----"));

    let (_, _, html) = page(&env, "/failures").await;
    assert!(html.contains("s3.localhost") && html.contains("connection refused by 10.0.0.23:80"), "{html}");
    assert!(!html.contains("<span class=\"event issued\">"), "failures only: {html}");
    let (_, _, html) = page(&env, "/audit?event=issued").await;
    assert!(html.contains("nas.localhost") && !html.contains("s3.localhost"), "{html}");
    let (_, _, html) = page(&env, "/accounts").await;
    assert!(html.contains(&acct) && html.contains("<td>7</td>"), "seven certificates: {html}");

    let (status, headers, _) = page(&env, "/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-frame-options"], "DENY", "refusals carry the headers too");
    let admin = env.admin.unwrap();
    let posted = env.http().post(format!("https://localhost:{}/accounts", admin.port())).send().await.unwrap();
    assert_eq!(posted.status(), 405, "read-only: no form posts at all");
    let acme = env.http().get(env.url("/certificates")).send().await.unwrap();
    assert_eq!(acme.status(), 404, "the ACME listener serves no dashboard page");
}

/// The access rule, on the dashboard's routes with the peer address the listener records.
#[tokio::test]
async fn loopback_is_free_and_other_addresses_need_the_token() {
    let env = TestEnv::start().await;
    let window = WindowPercents { start: 33, end: 67 };
    let ask = |admin: Admin, from: &str, auth: Option<&str>| {
        let from: IpAddr = from.parse().unwrap();
        let mut req = http::Request::get("/").body(axum::body::Body::empty()).unwrap();
        req.extensions_mut().insert(ClientAddr(from));
        if let Some(a) = auth {
            req.headers_mut().insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        async move {
            let res = tokio::time::timeout(Duration::from_secs(10), router(admin).oneshot(req)).await.unwrap().unwrap();
            res.status().as_u16()
        }
    };
    let open = Admin::new(env.state.clone(), window, None, None);
    assert_eq!(ask(open.clone(), "127.0.0.1", None).await, 200);
    assert_eq!(ask(open.clone(), "::1", None).await, 200);
    assert_eq!(ask(open.clone(), "10.0.0.5", Some("Bearer anything")).await, 403, "no token file: loopback only");
    let guarded = Admin::new(env.state.clone(), window, Some("correct-horse-battery-staple"), None);
    assert_eq!(ask(guarded.clone(), "127.0.0.1", None).await, 200);
    assert_eq!(ask(guarded.clone(), "10.0.0.5", None).await, 401);
    assert_eq!(ask(guarded.clone(), "10.0.0.5", Some("Bearer wrong")).await, 401);
    assert_eq!(ask(guarded.clone(), "10.0.0.5", Some("Bearer correct-horse-battery-stapl")).await, 401, "a prefix");
    assert_eq!(ask(guarded.clone(), "10.0.0.5", Some("Basic correct-horse-battery-staple")).await, 401);
    assert_eq!(ask(guarded.clone(), "::ffff:10.0.0.5", Some("Bearer correct-horse-battery-staple")).await, 200);
    assert_eq!(ask(guarded, "192.0.2.7", Some("Bearer correct-horse-battery-staple")).await, 200);
}
