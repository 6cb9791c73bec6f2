//! The renewal state of certificates as the operator sees it: `vacme certs list --state`,
//! `vacme certs summary`, `vacme certs show` (who holds it) and the `/metrics` gauges, moved
//! through time with `--at` and the refresh's `at`.

use serde_json::{Value, json};
use vacme::{
    RenewalStateRefresh,
    acme::renewal::{RenewalState, WindowPercents},
    cli::{Admin, run},
    config::{Config, Overrides},
};

use crate::env::{Raw, TestEnv, TestKey};

fn config_of(env: &TestEnv) -> Config {
    let overrides = Overrides { data_dir: Some(env.dir.path().to_owned()), ..Default::default() };
    Config::load(None, Vec::new(), &overrides).unwrap()
}

async fn json(config: &Config, cmd: Admin) -> Value {
    serde_json::from_str(&run(config, cmd, true).await.unwrap()).unwrap()
}

/// The serials `certs list --state <state> --at <at>` prints.
async fn listed(config: &Config, state: RenewalState, at: i64) -> Vec<String> {
    let rows = json(config, Admin::CertsByState { account: None, state: Some(state), at: Some(at) }).await;
    rows.as_array().unwrap().iter().map(|r| r["serial"].as_str().unwrap().to_owned()).collect()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Runs the renewal-state refresh as of `at`, then scrapes `/metrics`.
async fn gauges_at(env: &TestEnv, config: &Config, at: i64) -> String {
    let refresh = RenewalStateRefresh {
        store: env.state.store.clone(),
        clock: env.state.clock.clone(),
        metrics: env.state.metrics.clone(),
        window: window(config),
        interval: std::time::Duration::from_secs(3600),
    };
    refresh.at(at).await.expect("the refresh counts");
    env.http().get(env.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

fn window(config: &Config) -> WindowPercents {
    WindowPercents { start: config.renewal.window_start_percent, end: config.renewal.window_end_percent }
}

/// The list, the summary and the gauges say the same for every state at `at`.
async fn agree(env: &TestEnv, config: &Config, at: i64) {
    let summary = json(config, Admin::CertsSummary { at: Some(at) }).await;
    let text = gauges_at(env, config, at).await;
    for state in RenewalState::ALL {
        let n = listed(config, state, at).await.len() as i64;
        assert_eq!(summary["states"][state.as_str()].as_i64(), Some(n), "summary, {state} at {at}: {summary}");
        let series = format!("vacme_certificates_by_renewal_state{{state=\"{state}\"}}");
        assert_eq!(metric(&text, &series), n as f64, "gauge, {state} at {at}");
    }
}

#[tokio::test]
async fn a_certificate_moves_through_its_window_and_is_renewed_then_revoked() {
    let env = TestEnv::start().await;
    let config = config_of(&env);
    let (account, _) = env.account().await;
    env.issue(&account, &["nas.localhost"]).await;
    let first = env.state.store.certificates(None).await.unwrap().remove(0);
    let (nb, na) = (first.not_before, first.not_after);
    let (start, end) = vacme::acme::ari::window(nb, na, window(&config).start, window(&config).end);

    // Time alone: active -> due -> overdue -> expired.
    for (at, state) in [
        (nb + 1, RenewalState::Active),
        (start, RenewalState::Due),
        (end - 1, RenewalState::Due),
        (end, RenewalState::Overdue),
        (na, RenewalState::Expired),
    ] {
        assert_eq!(listed(&config, state, at).await, vec![first.serial.clone()], "{state} at {at}");
        for other in RenewalState::ALL.into_iter().filter(|s| *s != state) {
            assert!(listed(&config, other, at).await.is_empty(), "{other} at {at}");
        }
        agree(&env, &config, at).await;
    }
    let text = gauges_at(&env, &config, nb + 1).await;
    assert_eq!(metric(&text, "vacme_certificate_next_expiry_timestamp_seconds"), na as f64);
    let summary = json(&config, Admin::CertsSummary { at: Some(end) }).await;
    assert_eq!(summary["next_expiries"][0]["serial"], first.serial.as_str());
    assert_eq!(summary["next_expiries"][0]["renewal_state"], "overdue");

    // A renewal by the same account: the old one is renewed, the new one active.
    env.issue(&account, &["nas.localhost"]).await;
    let second = env.state.store.certificates(None).await.unwrap().remove(0);
    assert_ne!(second.id, first.id);
    let now = second.not_before + 1;
    assert_eq!(listed(&config, RenewalState::Renewed, now).await, vec![first.serial.clone()]);
    assert_eq!(listed(&config, RenewalState::Active, now).await, vec![second.serial.clone()]);
    let shown = json(&config, Admin::CertsShow(first.id.clone())).await;
    assert_eq!(shown["renewed_by"], second.id.as_str());
    agree(&env, &config, now).await;
    // Even past its own window's end, a renewed certificate is not overdue.
    assert!(listed(&config, RenewalState::Overdue, end).await.is_empty());

    // A revocation: revoked, whatever its window says.
    let revoked = json(&config, Admin::CertsRevoke { id: second.id.clone(), reason: 4 }).await;
    assert_eq!(revoked["revoked"], true);
    assert_eq!(listed(&config, RenewalState::Revoked, now).await, vec![second.serial.clone()]);
    assert!(listed(&config, RenewalState::Active, now).await.is_empty());
    agree(&env, &config, now).await;
    let text = gauges_at(&env, &config, now).await;
    assert!(!text.contains("vacme_certificate_next_expiry_timestamp_seconds"), "nothing live is left:\n{text}");

    // The summary's table names the states and the client of each expiry.
    let table = run(&config, Admin::CertsSummary { at: Some(nb + 1) }, false).await.unwrap();
    assert!(table.contains("STATE") && table.contains("renewed") && table.contains("revoked"), "{table}");
}

#[tokio::test]
async fn the_client_that_ordered_a_certificate_is_shown_and_audited() {
    let env = TestEnv::start().await;
    let config = config_of(&env);
    let (account, _) = env.account().await;
    env.issue(&account, &["mac.localhost"]).await;
    let cert = env.state.store.certificates(None).await.unwrap().remove(0);

    let shown = json(&config, Admin::CertsShow(cert.serial.clone())).await;
    let ua = shown["client_user_agent"].as_str().expect("the User-Agent is kept");
    assert!(ua.starts_with("instant-acme/"), "{shown}");
    assert_eq!(shown["client_ip"], "127.0.0.1");
    assert_eq!(shown["client"], format!("{ua} from 127.0.0.1").as_str());
    let text = run(&config, Admin::CertsShow(cert.serial.clone()), false).await.unwrap();
    assert!(text.contains(&format!("client:              {ua} from 127.0.0.1")), "{text}");
    assert!(text.contains("renewal state:       active"), "{text}");

    let events = json(&config, Admin::Audit { account: None, limit: 50 }).await;
    let issued = events.as_array().unwrap().iter().find(|e| e["event"] == "issued").expect("an issued event");
    assert_eq!(issued["client_ip"], "127.0.0.1");
    assert!(issued["detail"].as_str().unwrap().contains(ua), "{issued}");
}

/// Behind a trusted proxy the order keeps the forwarded address; a hostile User-Agent is kept
/// as bounded printable text.
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_recorded() {
    let env = TestEnv::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".into()]).await;
    let pem = std::fs::read(&env.ca).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-forwarded-for", "10.0.0.23".parse().unwrap());
    // A tab and a byte outside ASCII: what a header may carry but a terminal should not get.
    let mut hostile = b"evil\tagent\xff/1.0 ".to_vec();
    hostile.extend(std::iter::repeat_n(b'x', 400));
    headers.insert("user-agent", http::HeaderValue::from_bytes(&hostile).unwrap());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .default_headers(headers)
        .build()
        .unwrap();
    let raw = Raw { client, env_base: env.url("") };
    let key = TestKey::new();
    let kid = raw.new_account(&key).await;
    let payload = json!({"identifiers": [{"type": "dns", "value": "proxied.localhost"}]});
    let o = raw.signed(&key, Some(&kid), &env.url("/acme/new-order"), Some(&payload)).await;
    assert_eq!(o.status, 201, "{}", o.body);
    let id = o.headers["location"].to_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let order = env.state.store.order(&id).await.unwrap().unwrap();
    assert_eq!(order.client_ip.as_deref(), Some("10.0.0.23"), "the forwarded address, not the proxy's");
    let ua = order.client_user_agent.unwrap();
    assert!(ua.starts_with("evil?agent?/1.0 xxx") && ua.len() == 256, "{ua}");
}

#[tokio::test]
async fn the_operator_is_told_once_when_a_certificate_is_overdue_and_when_it_is_about_to_expire() {
    let env = TestEnv::start().await;
    let config = config_of(&env);
    let (account, _) = env.account().await;
    env.issue(&account, &["late.localhost"]).await;
    env.issue(&account, &["renewed.localhost"]).await;
    env.issue(&account, &["renewed.localhost"]).await;
    let certs = env.state.store.certificates(None).await.unwrap();
    let late = certs.iter().find(|c| c.identifiers[0].value() == "late.localhost").unwrap().clone();
    let renewed = certs.iter().find(|c| c.renewed_by.is_some()).unwrap().clone();
    let successor = renewed.renewed_by.clone().unwrap();
    let (_, end) =
        vacme::acme::ari::window(late.not_before, late.not_after, window(&config).start, window(&config).end);
    let events = |kind: &'static str| {
        let store = env.state.store.clone();
        async move {
            let all = store.audit_events(None, 100).await.unwrap();
            all.into_iter().filter(|e| e.event.event == kind).collect::<Vec<_>>()
        }
    };

    gauges_at(&env, &config, end - 1).await;
    assert!(events("renewal_overdue").await.is_empty(), "not before the window's end");
    gauges_at(&env, &config, end).await;
    gauges_at(&env, &config, end + 3600).await;
    let overdue = events("renewal_overdue").await;
    let mut told: Vec<&str> = overdue.iter().filter_map(|e| e.event.certificate_id.as_deref()).collect();
    told.sort_unstable();
    let mut want = vec![late.id.as_str(), successor.as_str()];
    want.sort_unstable();
    assert_eq!(told, want, "each unrenewed certificate once, the renewed one never: {overdue:?}");
    assert!(overdue[0].event.detail.starts_with("past its renewal window"), "{:?}", overdue[0].event.detail);

    let soon = late.not_after - 6 * 86_400;
    assert!(events("expiring").await.is_empty());
    gauges_at(&env, &config, soon).await;
    gauges_at(&env, &config, soon + 60).await;
    let expiring = events("expiring").await;
    assert_eq!(expiring.len(), 2, "{expiring:?}");
    assert!(expiring.iter().all(|e| e.event.certificate_id.as_deref() != Some(renewed.id.as_str())));
    assert!(expiring[0].event.detail.contains("(in 6 days) and was not renewed"), "{:?}", expiring[0].event.detail);
}
