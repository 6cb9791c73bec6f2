//! The dashboard's pages. Each handler reads what it shows (one page of rows at most) and fills
//! a template checked at compile time (templates/admin/); the templates escape every value.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    response::{Html, IntoResponse, Response},
};
use http::{StatusCode, header};
use serde::Deserialize;

use super::Admin;
use crate::{
    acme::{
        Identifier,
        renewal::{RenewalState, WindowPercents},
    },
    store::{AuditFilter, AuditRow, CertFilter, CertListRow, OrderClient, StoreError},
};

/// Rows on one page of a listing.
const PAGE: i64 = 50;
/// Days the expiry chart covers.
const CHART_DAYS: i64 = 90;
/// The events the failures page lists: what a client was refused or could not get.
const FAILURE_EVENTS: [&str; 8] = [
    "validation_failed",
    "order_refused",
    "finalize_refused",
    "issuance_refused",
    "ca_refused",
    "ca_unavailable",
    "post_sign_mismatch",
    "paused",
];

/// A store that does not answer: the page says so (503), nothing else.
fn unavailable(e: StoreError) -> Response {
    tracing::warn!(error = %e, "dashboard: the store did not answer");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(format!(
            "<!doctype html><title>vacme</title><p>The store did not answer: {}</p>",
            html_escape(&e.to_string())
        )),
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dashboard: a page did not render");
            (StatusCode::SERVICE_UNAVAILABLE, "the page did not render\n").into_response()
        }
    }
}

fn time(t: i64) -> String {
    crate::clock::rfc3339(t)
}

fn names(ids: &[Identifier]) -> String {
    ids.iter().map(Identifier::value).collect::<Vec<_>>().join(", ")
}

/// "in 12 days", "3 hours ago".
fn relative(t: i64, now: i64) -> String {
    let d = t - now;
    let (n, unit) = match d.unsigned_abs() {
        s if s < 3600 => (s / 60, "minutes"),
        s if s < 2 * 86400 => (s / 3600, "hours"),
        s => (s / 86400, "days"),
    };
    if d >= 0 { format!("in {n} {unit}") } else { format!("{n} {unit} ago") }
}

/// One row of a certificate table.
struct CertView {
    id: String,
    names: String,
    client: String,
    address: String,
    issued: String,
    expires: String,
    expires_in: String,
    state: &'static str,
    profile: String,
    role: String,
    serial: String,
    account: String,
}

impl CertView {
    fn of(c: &CertListRow, admin: &Admin, now: i64) -> Self {
        let state = crate::acme::renewal::RenewalFacts {
            not_before: c.not_before,
            not_after: c.not_after,
            revoked: c.revoked_at.is_some(),
            renewed: c.renewed_by.is_some(),
        };
        let role = admin
            .st
            .lifecycle
            .target(c.profile.as_deref())
            .role
            .or_else(|| admin.default_role.clone())
            .unwrap_or_else(|| "local CA".into());
        CertView {
            id: c.id.clone(),
            names: names(&c.identifiers),
            client: c.user_agent.clone().unwrap_or_else(|| "-".into()),
            address: c.client_ip.clone().unwrap_or_else(|| "-".into()),
            issued: time(c.not_before),
            expires: time(c.not_after),
            expires_in: relative(c.not_after, now),
            state: RenewalState::of(&state, admin.window, now).as_str(),
            profile: c.profile.clone().unwrap_or_else(|| "-".into()),
            role,
            serial: c.serial.clone(),
            account: c.account_id.clone(),
        }
    }
}

/// One audit event as a row.
struct EventView {
    at: String,
    event: String,
    actor: String,
    names: String,
    account: String,
    certificate: String,
    address: String,
    detail: String,
}

impl From<&AuditRow> for EventView {
    fn from(r: &AuditRow) -> Self {
        let e = &r.event;
        EventView {
            at: time(r.at),
            event: e.event.clone(),
            actor: e.actor.clone(),
            names: names(&e.identifiers),
            account: e.account_id.clone().unwrap_or_default(),
            certificate: e.certificate_id.clone().unwrap_or_default(),
            address: e.client_ip.clone().unwrap_or_default(),
            detail: e.detail.clone(),
        }
    }
}

// ---- overview ----

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct Overview {
    now: String,
    counts: Vec<(&'static str, i64)>,
    chart: String,
    overdue: Vec<CertView>,
    due: Vec<CertView>,
    issuer: String,
    issuer_state: String,
    address: Option<String>,
    failovers: Option<u64>,
    token_ttl: Option<String>,
    role_warnings: Vec<String>,
    directory: String,
    root: String,
    root_subject: String,
}

pub(super) async fn overview(State(admin): State<Arc<Admin>>) -> Response {
    let st = &admin.st;
    let now = st.clock.unix();
    let counts = match st.store.renewal_counts(admin.window, now).await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let lifetimes = match st.store.live_lifetimes().await {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let list = |state| {
        let f = CertFilter { state: Some(state), ..CertFilter::default() };
        let admin = admin.clone();
        async move { admin.st.store.cert_page(&f, admin.window, now, 0, 10).await }
    };
    let (overdue, due) = match (list(RenewalState::Overdue).await, list(RenewalState::Due).await) {
        (Ok(o), Ok(d)) => (o, d),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let health = tokio::time::timeout(Duration::from_secs(3), st.issuer.health()).await;
    let issuer_state = match health {
        Ok(Ok(())) => "reachable".to_owned(),
        Ok(Err(e)) => format!("unavailable: {e}"),
        Err(_) => "unavailable: no answer within 3 s".to_owned(),
    };
    let endpoint = st.issuer.endpoint();
    let (root, root_subject) = match st.trust.current() {
        Ok(r) => (r.fingerprint(), r.subject().to_owned()),
        Err(why) => (format!("not known yet: {why}"), String::new()),
    };
    let page = Overview {
        now: time(now),
        counts: counts.counts.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
        chart: expiry_chart(&lifetimes, admin.window, now),
        overdue: overdue.iter().map(|c| CertView::of(c, &admin, now)).collect(),
        due: due.iter().map(|c| CertView::of(c, &admin, now)).collect(),
        issuer: st.issuer.name().to_owned(),
        issuer_state,
        address: endpoint.as_ref().and_then(|e| e.addresses.get(e.in_use).cloned()),
        failovers: endpoint.as_ref().map(|e| e.failovers),
        token_ttl: endpoint
            .and_then(|e| e.token_ttl_left)
            .map(|d| relative(d.as_secs() as i64, 0).replacen("in ", "", 1)),
        role_warnings: st.lifecycle.roles.report(),
        directory: st.urls.directory(),
        root,
        root_subject,
    };
    render(&page)
}

/// An inline SVG: one bar per day of the next 90, as high as the certificates that expire that
/// day, stacked by their state now (active, due, overdue). Built from numbers only.
fn expiry_chart(lifetimes: &[(i64, i64)], window: WindowPercents, now: i64) -> String {
    const W: i64 = 8;
    const H: i64 = 120;
    let states = [RenewalState::Active, RenewalState::Due, RenewalState::Overdue];
    let mut days = vec![[0i64; 3]; CHART_DAYS as usize];
    for &(not_before, not_after) in lifetimes {
        let day = (not_after - now).div_euclid(86_400);
        if not_after <= now || day >= CHART_DAYS {
            continue;
        }
        let facts = crate::acme::renewal::RenewalFacts { not_before, not_after, revoked: false, renewed: false };
        let state = RenewalState::of(&facts, window, now);
        if let Some(i) = states.iter().position(|s| *s == state) {
            days[day as usize][i] += 1;
        }
    }
    let most = days.iter().map(|d| d.iter().sum::<i64>()).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"certificates expiring per day, next {CHART_DAYS} days\">",
        W * CHART_DAYS,
        H + 14
    );
    for (d, counts) in days.iter().enumerate() {
        let mut y = H;
        for (i, n) in counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let h = (n * H / most).max(2);
            y -= h;
            let _ = write!(
                svg,
                "<rect class=\"{}\" x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{h}\"><title>day {}: {n} {}</title></rect>",
                states[i].as_str(),
                d as i64 * W,
                W - 1,
                d + 1,
                states[i].as_str()
            );
        }
    }
    for mark in [0, 30, 60] {
        let _ = write!(svg, "<text x=\"{}\" y=\"{}\">{}d</text>", mark * W, H + 12, mark + 1);
    }
    let _ = write!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">90d</text>", 90 * W, H + 12);
    svg.push_str("</svg>");
    svg
}

// ---- certificates ----

#[derive(Deserialize, Default)]
pub(super) struct CertQuery {
    state: Option<String>,
    name: Option<String>,
    account: Option<String>,
    profile: Option<String>,
    page: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/certificates.html")]
struct Certificates {
    rows: Vec<CertView>,
    total: i64,
    page: i64,
    pages: i64,
    state: String,
    name: String,
    account: String,
    profile: String,
    states: Vec<&'static str>,
    prev: Option<String>,
    next: Option<String>,
}

fn query_string(state: &str, name: &str, account: &str, profile: &str, page: i64) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!("?state={}&name={}&account={}&profile={}&page={page}", enc(state), enc(name), enc(account), enc(profile))
}

pub(super) async fn certificates(State(admin): State<Arc<Admin>>, Query(q): Query<CertQuery>) -> Response {
    let now = admin.st.clock.unix();
    let state_text = q.state.unwrap_or_default();
    let state = RenewalState::ALL.into_iter().find(|s| s.as_str() == state_text);
    let filter = CertFilter { state, name: q.name.clone(), account: q.account.clone(), profile: q.profile.clone() };
    let page = q.page.and_then(|p| p.parse::<i64>().ok()).unwrap_or(1).clamp(1, 1_000_000);
    let (rows, total) = match (
        admin.st.store.cert_page(&filter, admin.window, now, (page - 1) * PAGE, PAGE).await,
        admin.st.store.cert_count(&filter, admin.window, now).await,
    ) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let pages = ((total + PAGE - 1) / PAGE).max(1);
    let state_shown = state.map(|s| s.as_str().to_owned()).unwrap_or_default();
    let (name, account, profile) =
        (q.name.unwrap_or_default(), q.account.unwrap_or_default(), q.profile.unwrap_or_default());
    let link = |p: i64| query_string(&state_shown, &name, &account, &profile, p);
    let page_view = Certificates {
        rows: rows.iter().map(|c| CertView::of(c, &admin, now)).collect(),
        total,
        page,
        pages,
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
        state: state_shown.clone(),
        name: name.clone(),
        account: account.clone(),
        profile: profile.clone(),
        states: RenewalState::ALL.iter().map(|s| s.as_str()).collect(),
    };
    render(&page_view)
}

// ---- one certificate ----

struct ChallengeView {
    identifier: String,
    kind: String,
    status: String,
    validated: String,
    attempts: i64,
    error: String,
}

#[derive(Template)]
#[template(path = "admin/certificate.html")]
struct Certificate {
    cert: CertView,
    revoked: String,
    chain: Vec<(String, String, String, String)>,
    pem: String,
    order_id: String,
    order_status: String,
    order_created: String,
    replaces: String,
    challenges: Vec<ChallengeView>,
    events: Vec<EventView>,
    history: Vec<CertView>,
}

/// Subject, issuer, notAfter and SHA-256 of each certificate of a PEM chain.
fn chain_facts(pem: &str) -> Vec<(String, String, String, String)> {
    use x509_parser::{pem::Pem, prelude::FromDer};
    Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|p| {
            let (_, c) = x509_parser::certificate::X509Certificate::from_der(&p.contents).ok()?;
            let digest = ring::digest::digest(&ring::digest::SHA256, &p.contents);
            let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
            Some((
                c.subject().to_string(),
                c.issuer().to_string(),
                time(c.validity().not_after.timestamp()),
                hex.join(":"),
            ))
        })
        .collect()
}

pub(super) async fn certificate(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let st = &admin.st;
    let now = st.clock.unix();
    let cert = match st.store.certificate(&id).await {
        Ok(Some(c)) => c,
        Ok(None) => return not_found().await,
        Err(e) => return unavailable(e),
    };
    let order = match st.store.order(&cert.order_id).await {
        Ok(o) => o,
        Err(e) => return unavailable(e),
    };
    let mut challenges = Vec::new();
    for authz_id in order.as_ref().map(|o| o.authz_ids.clone()).unwrap_or_default() {
        let authz = match st.store.authorization(&authz_id).await {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(e) => return unavailable(e),
        };
        for ch in &authz.challenges {
            challenges.push(ChallengeView {
                identifier: authz.identifier.value(),
                kind: ch.kind.as_str().to_owned(),
                status: format!("{:?}", ch.status).to_ascii_lowercase(),
                validated: ch.validated_at.map(time).unwrap_or_default(),
                attempts: ch.attempts,
                error: ch.error.as_ref().and_then(|e| e["detail"].as_str().map(str::to_owned)).unwrap_or_default(),
            });
        }
    }
    let events =
        AuditFilter { order_or_certificate: Some((cert.order_id.clone(), cert.id.clone())), ..AuditFilter::default() };
    let (events, history) = match (
        st.store.audit_page(&events, PAGE).await,
        st.store.cert_history(&cert.account_id, &cert.identifiers, 20).await,
    ) {
        (Ok(e), Ok(h)) => (e, h),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let client = OrderClient {
        user_agent: order.as_ref().and_then(|o| o.client_user_agent.clone()),
        ip: order.as_ref().and_then(|o| o.client_ip.clone()),
    };
    let row = CertListRow {
        id: cert.id.clone(),
        order_id: cert.order_id.clone(),
        account_id: cert.account_id.clone(),
        serial: cert.serial.clone(),
        identifiers: cert.identifiers.clone(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        revoked_at: cert.revoked_at,
        renewed_by: cert.renewed_by.clone(),
        profile: cert.profile.clone(),
        created_at: cert.created_at,
        user_agent: client.user_agent,
        client_ip: client.ip,
    };
    let page = Certificate {
        cert: CertView::of(&row, &admin, now),
        revoked: cert.revoked_at.map(time).unwrap_or_default(),
        chain: chain_facts(&cert.chain_pem),
        pem: cert.chain_pem.clone(),
        order_id: cert.order_id.clone(),
        order_status: order.as_ref().map(|o| o.status.as_str().to_owned()).unwrap_or_else(|| "deleted".into()),
        order_created: order.as_ref().map(|o| time(o.created_at)).unwrap_or_default(),
        replaces: order.as_ref().and_then(|o| o.replaces.clone()).unwrap_or_default(),
        challenges,
        events: events.iter().map(EventView::from).collect(),
        history: history.iter().map(|c| CertView::of(c, &admin, now)).collect(),
    };
    render(&page)
}

// ---- failures and the audit trail ----

#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    event: Option<String>,
    account: Option<String>,
    name: Option<String>,
    before: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct Audit {
    title: &'static str,
    path: &'static str,
    intro: &'static str,
    rows: Vec<EventView>,
    event: String,
    account: String,
    name: String,
    events: Vec<&'static str>,
    older: Option<String>,
}

async fn trail(admin: &Admin, q: AuditQuery, failures: bool) -> Response {
    let event = q.event.unwrap_or_default();
    let events: Vec<String> = if !event.is_empty() {
        vec![event.clone()]
    } else if failures {
        FAILURE_EVENTS.iter().map(|e| (*e).to_owned()).collect()
    } else {
        Vec::new()
    };
    let filter = AuditFilter {
        events,
        account: q.account.clone(),
        name: q.name.clone(),
        order_or_certificate: None,
        before_id: q.before.and_then(|b| b.parse().ok()),
    };
    let rows = match admin.st.store.audit_page(&filter, PAGE).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let (account, name) = (q.account.unwrap_or_default(), q.name.unwrap_or_default());
    let older = (rows.len() as i64 == PAGE).then(|| rows.last().map(|r| r.id)).flatten().map(|id| {
        let q = query_string("", &name, &account, "", 1);
        format!("{q}&event={}&before={id}", event.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', ""))
    });
    let page = Audit {
        title: if failures { "Failures" } else { "Audit trail" },
        path: if failures { "/failures" } else { "/audit" },
        intro: if failures {
            "Validations that failed and requests that were refused, newest first, with the problem detail the client was told."
        } else {
            "Everything vacme and its clients did, newest first."
        },
        rows: rows.iter().map(EventView::from).collect(),
        event,
        account,
        name,
        events: if failures { FAILURE_EVENTS.to_vec() } else { ALL_EVENTS.to_vec() },
        older,
    };
    render(&page)
}

const ALL_EVENTS: [&str; 13] = [
    "issued",
    "revoked",
    "account_created",
    "account_deactivated",
    "validation_failed",
    "order_refused",
    "finalize_refused",
    "issuance_refused",
    "ca_refused",
    "ca_unavailable",
    "post_sign_mismatch",
    "paused",
    "unpaused",
];

pub(super) async fn failures(State(admin): State<Arc<Admin>>, Query(q): Query<AuditQuery>) -> Response {
    trail(&admin, q, true).await
}

pub(super) async fn audit(State(admin): State<Arc<Admin>>, Query(q): Query<AuditQuery>) -> Response {
    trail(&admin, q, false).await
}

// ---- accounts ----

struct AccountView {
    id: String,
    status: String,
    contacts: String,
    eab: String,
    scope: String,
    orders: i64,
    certificates: i64,
    created: String,
}

#[derive(Template)]
#[template(path = "admin/accounts.html")]
struct Accounts {
    rows: Vec<AccountView>,
}

pub(super) async fn accounts(State(admin): State<Arc<Admin>>) -> Response {
    let st = &admin.st;
    let (summaries, keys) = match (st.store.account_summaries().await, st.store.eab_keys().await) {
        (Ok(s), Ok(k)) => (s, k),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let rows = summaries
        .iter()
        .map(|s| {
            let a = &s.account;
            let key = a.eab_kid.as_deref().and_then(|kid| keys.iter().find(|k| k.kid == kid));
            AccountView {
                id: a.id.clone(),
                status: a.status.as_str().to_owned(),
                contacts: if a.contact.is_empty() { "-".into() } else { a.contact.join(", ") },
                eab: a.eab_kid.clone().unwrap_or_else(|| "-".into()),
                scope: key
                    .map(|k| if k.scope.is_empty() { "any allowed name".into() } else { k.scope.join(", ") })
                    .unwrap_or_default(),
                orders: s.orders,
                certificates: s.certificates,
                created: time(a.created_at),
            }
        })
        .collect();
    render(&Accounts { rows })
}

// ---- the rest ----

#[derive(Template)]
#[template(path = "admin/not_found.html")]
struct NotFound;

pub(super) async fn not_found() -> Response {
    let mut res = render(&NotFound);
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

pub(super) async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../templates/admin/admin.css"))
        .into_response()
}

/// The page icon, also at /favicon.ico, where browsers look without being told.
pub(super) async fn icon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], include_str!("../../templates/admin/icon.svg")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(100 + 12 * 86400, 100), "in 12 days");
        assert_eq!(relative(100, 100 + 3 * 3600), "3 hours ago");
        assert_eq!(relative(160, 100), "in 1 minutes");
    }

    #[test]
    fn the_chart_has_a_bar_per_day_with_certificates() {
        let w = WindowPercents { start: 50, end: 80 };
        let day = 86_400;
        // Expiring on day 1 (overdue: 89 of 90 days gone), day 10 (due: 20 of 30 gone) and day 60 (active); one past 90 days.
        let lifetimes = [(-89 * day, day + 5), (-20 * day, 10 * day + 5), (-10 * day, 60 * day + 5), (0, 200 * day)];
        let svg = expiry_chart(&lifetimes, w, 0);
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(svg.contains("class=\"overdue\" x=\"8\""), "{svg}");
        assert!(svg.contains("class=\"due\" x=\"80\""), "{svg}");
        assert!(svg.contains("class=\"active\" x=\"480\""), "{svg}");
    }
}
