//! Webhooks: the audit trail, delivered to the operator. Each webhook has a cursor in the store
//! (`webhook_cursors`): this job reads the audit events after it, sends the ones the webhook
//! takes, one at a time in the order they happened, and moves the cursor past each one only
//! once its receiver answered 2xx. So every event arrives at least once (`X-Vacme-Delivery`
//! lets a receiver drop a repeat), in order, across restarts and replicas. A receiver that is
//! down holds back only its own cursor: issuance never waits for it. One more than
//! `notify.max_backlog` events behind, the oldest are skipped and counted.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
use reqwest::Url;
use ring::hmac;
use serde_json::json;
use tokio::sync::Notify;

use crate::{
    acme::{
        Identifier,
        renewal::{RenewalState, WindowPercents},
    },
    clock::{Clock, rfc3339},
    config::{NotifyConfig, WebhookFormat},
    jobs::{Job, Outcome, backoff},
    metrics::Metrics,
    store::{AuditRow, Store, StoreError},
    validation::Outbound,
};

/// Events younger than this are left for the next run: on PostgreSQL an event's id is taken
/// before its transaction commits, so a later id can be seen first. Waiting until every
/// transaction that took an earlier id has ended keeps the cursor from passing one.
const SETTLE_SECS: i64 = 2;

/// Events read per run of one webhook.
const BATCH: i64 = 50;

/// Longest wait between attempts to reach a receiver that is down.
const MAX_BACKOFF_SECS: i64 = 30;

/// One configured webhook.
#[derive(Debug)]
pub struct Webhook {
    pub name: String,
    url: Url,
    events: Vec<String>,
    format: WebhookFormat,
    /// The key of `X-Vacme-Signature`.
    secret: Option<hmac::Key>,
}

/// Why a webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("notify.webhooks {name}: url: {why}")]
    Url { name: String, why: String },
    #[error("notify.webhooks {name}: secret_file {path}: {why}")]
    Secret { name: String, path: String, why: String },
}

impl Webhook {
    /// The webhooks of `[notify]`, with their secrets read.
    pub fn from_config(cfg: &NotifyConfig) -> Result<Vec<Self>, WebhookError> {
        cfg.webhooks
            .iter()
            .zip(cfg.names())
            .map(|(w, name)| {
                let url =
                    Url::parse(&w.url).map_err(|e| WebhookError::Url { name: name.clone(), why: e.to_string() })?;
                let secret = match &w.secret_file {
                    Some(path) => Some(read_secret(path).map_err(|why| WebhookError::Secret {
                        name: name.clone(),
                        path: path.display().to_string(),
                        why,
                    })?),
                    None => None,
                };
                Ok(Self { name, url, events: w.events.clone(), format: w.format, secret })
            })
            .collect()
    }
}

impl Webhook {
    fn takes(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind)
    }

    /// Whether an audit event of this name can be an event this webhook takes (before the store
    /// is asked whether an `issued` one is a renewal).
    fn may_take(&self, audit_event: &str) -> bool {
        match audit_event {
            "issued" => self.takes("issued") || self.takes("renewed"),
            "post_sign_mismatch" => self.takes("incident"),
            other => self.takes(other),
        }
    }
}

fn read_secret(path: &Path) -> Result<hmac::Key, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let key = text.trim();
    if key.is_empty() {
        return Err("is empty".into());
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()))
}

/// Where one webhook stands in this process.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// The last event id it was given, as far as this process knows (`None`: not read yet).
    given: Option<i64>,
    /// Failed deliveries in a row, and when to try again.
    failures: i64,
    next_at: i64,
}

/// The webhook delivery job.
#[derive(Debug)]
pub struct Webhooks {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub outbound: Arc<Outbound>,
    pub hooks: Vec<Webhook>,
    pub max_backlog: i64,
    /// The renewal window, for the state a body names.
    pub window: WindowPercents,
    /// Seconds a run may hold a webhook's cursor; longer than one delivery can take.
    pub lease_secs: i64,
    progress: Mutex<HashMap<usize, Progress>>,
    wake: Notify,
}

/// One claimed webhook and the id of the last event it was given.
#[derive(Debug)]
pub struct Claimed {
    hook: usize,
    given: i64,
}

impl Webhooks {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        outbound: Arc<Outbound>,
        hooks: Vec<Webhook>,
        cfg: &NotifyConfig,
        window: WindowPercents,
    ) -> Self {
        for hook in &hooks {
            metrics.expect_webhook(&hook.name);
        }
        Self {
            store,
            clock,
            metrics,
            outbound,
            hooks,
            max_backlog: i64::from(cfg.max_backlog),
            window,
            lease_secs: i64::try_from(cfg.timeout_secs).unwrap_or(60).saturating_mul(2) + 10,
            progress: Mutex::default(),
            wake: Notify::new(),
        }
    }

    fn progress(&self, hook: usize) -> Progress {
        self.progress.lock().unwrap_or_else(|p| p.into_inner()).get(&hook).copied().unwrap_or_default()
    }

    fn set_progress(&self, hook: usize, p: Progress) {
        self.progress.lock().unwrap_or_else(|p| p.into_inner()).insert(hook, p);
    }

    /// Sends what `hook` has not been given yet, from `given` on; returns how the run ended.
    async fn deliver_from(&self, i: usize, mut given: i64) -> Result<Outcome, StoreError> {
        let hook = &self.hooks[i];
        let now = self.clock.unix();
        let latest = self.store.last_audit_id().await?;
        if latest - given > self.max_backlog {
            let dropped = latest - self.max_backlog - given;
            given = latest - self.max_backlog;
            tracing::warn!(webhook = %hook.name, dropped, "webhook fell too far behind; its oldest events are dropped");
            self.metrics.webhook_dropped(&hook.name, dropped as u64);
            self.store.advance_webhook(&hook.name, given, dropped, now + self.lease_secs).await?;
        }
        let events = self.store.audit_after(given, now - SETTLE_SECS, BATCH).await?;
        let full = events.len() as i64 == BATCH;
        for row in events {
            if !hook.may_take(&row.event.event) {
                given = row.id;
                continue;
            }
            let about = self.about(&row).await?;
            if let Some(kind) = kind_of(&row, &about).filter(|k| hook.takes(k)) {
                if let Err(why) = self.send(hook, kind, &row, &about).await {
                    let mut p = self.progress(i);
                    p.failures += 1;
                    p.next_at = self.clock.unix() + backoff(p.failures - 1, MAX_BACKOFF_SECS);
                    p.given = Some(given);
                    self.set_progress(i, p);
                    self.metrics.webhook_delivery(&hook.name, "failed");
                    tracing::warn!(webhook = %hook.name, event = kind, delivery = row.id, error = %why,
                        retry_in_secs = p.next_at - self.clock.unix(), "webhook delivery failed; it is retried");
                    self.store.advance_webhook(&hook.name, given, 0, 0).await?;
                    return Ok(Outcome::Retry);
                }
                self.metrics.webhook_delivery(&hook.name, "delivered");
                given = row.id;
                self.store.advance_webhook(&hook.name, given, 0, self.clock.unix() + self.lease_secs).await?;
            }
            given = row.id;
        }
        self.store.advance_webhook(&hook.name, given, 0, 0).await?;
        let next_at = if full { now } else { 0 };
        self.set_progress(i, Progress { given: Some(given), failures: 0, next_at });
        if full {
            self.wake.notify_one();
        }
        Ok(Outcome::Done)
    }

    /// What the store knows around an event: the certificates it renewed, the certificate's
    /// renewal state now, and the client of its order.
    async fn about(&self, row: &AuditRow) -> Result<About, StoreError> {
        let e = &row.event;
        let mut about = About { client_ip: e.client_ip.clone(), ..About::default() };
        if let Some(id) = &e.certificate_id {
            if e.event == "issued" {
                about.renews = self.store.renewed_by(id).await?;
            }
            if let Some(cert) = self.store.certificate(id).await? {
                about.state = Some(cert.renewal_state(self.window, self.clock.unix()));
            }
        }
        if let Some(order) = match &e.order_id {
            Some(id) => self.store.order(id).await?,
            None => None,
        } {
            about.user_agent = order.client_user_agent;
            about.client_ip = about.client_ip.or(order.client_ip);
        }
        Ok(about)
    }

    async fn send(&self, hook: &Webhook, kind: &str, row: &AuditRow, about: &About) -> Result<(), String> {
        let (body, content_type) = match hook.format {
            WebhookFormat::Json => (json_body(kind, row, about).into_bytes(), "application/json"),
            WebhookFormat::Text => (text_body(kind, row, about).into_bytes(), "text/plain; charset=utf-8"),
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert("x-vacme-event", HeaderValue::from_str(kind).map_err(|e| e.to_string())?);
        headers.insert("x-vacme-delivery", HeaderValue::from(row.id));
        if let Some(key) = &hook.secret {
            let tag = hmac::sign(key, &body);
            let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            headers.insert(
                "x-vacme-signature",
                HeaderValue::from_str(&format!("sha256={hex}")).map_err(|e| e.to_string())?,
            );
        }
        self.outbound.post(&hook.url, headers, body).await
    }
}

/// What the store knows around an audit event (`Webhooks::about`).
#[derive(Debug, Default)]
struct About {
    /// The certificates an issued certificate renewed.
    renews: Vec<String>,
    /// The certificate's renewal state when the event is sent.
    state: Option<RenewalState>,
    user_agent: Option<String>,
    client_ip: Option<String>,
}

/// The webhook event an audit event is, if any: `issued` is `renewed` when the certificate
/// renewed another (same account and names, or the order's `replaces`).
fn kind_of(row: &AuditRow, about: &About) -> Option<&'static str> {
    Some(match row.event.event.as_str() {
        "issued" if !about.renews.is_empty() => "renewed",
        "issued" => "issued",
        "validation_failed" => "validation_failed",
        "revoked" => "revoked",
        "ca_refused" => "ca_refused",
        "ca_unavailable" => "ca_unavailable",
        "post_sign_mismatch" => "incident",
        "renewal_overdue" => "renewal_overdue",
        "expiring" => "expiring",
        _ => return None,
    })
}

/// The JSON body: the event, the certificate (with its renewal state and what it renewed), its
/// names, the account, order and client, and the detail (for a failure, the problem the client
/// got).
fn json_body(kind: &str, row: &AuditRow, about: &About) -> String {
    let e = &row.event;
    let certificate = e.certificate_id.as_ref().map(|id| {
        json!({"id": id, "serial": e.serial, "state": about.state.map(RenewalState::as_str), "renews": about.renews})
    });
    json!({
        "event": kind,
        "delivery": row.id,
        "at": rfc3339(row.at),
        "names": e.identifiers.iter().map(Identifier::value).collect::<Vec<_>>(),
        "certificate": certificate,
        "account": e.account_id,
        "order": e.order_id,
        "client": {"address": about.client_ip, "user_agent": about.user_agent},
        "detail": e.detail,
    })
    .to_string()
}

/// The text body: one line, e.g. `vacme issued: nas.lab.test (serial 0a1b, account X, from
/// 10.0.0.23, certbot/5.8.0)`.
fn text_body(kind: &str, row: &AuditRow, client: &About) -> String {
    let e = &row.event;
    let names: Vec<String> = e.identifiers.iter().map(Identifier::value).collect();
    let mut about = Vec::new();
    if let Some(serial) = &e.serial {
        about.push(format!("serial {serial}"));
    }
    if let Some(account) = &e.account_id {
        about.push(format!("account {account}"));
    }
    if let Some(ip) = &client.client_ip {
        about.push(format!("from {ip}"));
    }
    // The `issued` detail names the client already.
    if let Some(ua) = client.user_agent.as_ref().filter(|ua| !e.detail.contains(ua.as_str())) {
        about.push(ua.chars().take(80).collect());
    }
    let mut line = format!("vacme {kind}: {}", if names.is_empty() { "-".to_owned() } else { names.join(", ") });
    if !about.is_empty() {
        line.push_str(&format!(" ({})", about.join(", ")));
    }
    if !e.detail.is_empty() {
        line.push_str(&format!(": {}", e.detail));
    }
    line.replace(['\n', '\r'], " ")
}

impl Job for Arc<Webhooks> {
    type Item = Claimed;

    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn wake(&self) -> &Notify {
        &self.wake
    }

    async fn claim(&self, now: i64, lease_until: i64, n: usize) -> Result<crate::store::Claimed<Claimed>, StoreError> {
        if self.hooks.is_empty() {
            return Ok(Vec::new().into());
        }
        let latest = self.store.last_audit_id().await?;
        let mut claimed = Vec::new();
        for (i, hook) in self.hooks.iter().enumerate() {
            let p = self.progress(i);
            // Nothing new since the last run, or waiting out a failure: no write.
            if claimed.len() >= n || p.next_at > now || p.given.is_some_and(|g| g >= latest) {
                continue;
            }
            if let Some(given) = self.store.claim_webhook(&hook.name, latest, now, lease_until).await? {
                claimed.push(Claimed { hook: i, given });
            }
        }
        Ok(claimed.into())
    }

    async fn next_due(&self) -> Option<i64> {
        let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.values().map(|p| p.next_at).filter(|t| *t > 0).min()
    }

    async fn run(&self, item: Claimed) -> Outcome {
        match self.deliver_from(item.hook, item.given).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(webhook = %self.hooks[item.hook].name, error = %e, "cannot read or record webhook deliveries");
                Outcome::Error
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditEvent;

    fn row() -> AuditRow {
        AuditRow {
            id: 7,
            at: 1_767_225_600,
            event: AuditEvent::by_account("validation_failed", "acct1")
                .order("ord1")
                .identifiers(&[Identifier::Dns("nas.lab.test".into())])
                .client_ip(Some("10.0.0.23".parse().unwrap()))
                .detail("http-01: connection refused\nat 10.0.0.23"),
        }
    }

    #[test]
    fn bodies_name_the_event_the_names_and_the_detail() {
        let about = About { client_ip: Some("10.0.0.23".into()), ..About::default() };
        let text = text_body("validation_failed", &row(), &about);
        assert_eq!(
            text,
            "vacme validation_failed: nas.lab.test (account acct1, from 10.0.0.23): http-01: connection refused at 10.0.0.23"
        );
        let json: serde_json::Value = serde_json::from_str(&json_body("validation_failed", &row(), &about)).unwrap();
        assert_eq!(json["event"], "validation_failed");
        assert_eq!(json["delivery"], 7);
        assert_eq!(json["at"], "2026-01-01T00:00:00Z");
        assert_eq!(json["names"], json!(["nas.lab.test"]));
        assert_eq!(json["client"]["address"], "10.0.0.23");
        assert_eq!(json["certificate"], serde_json::Value::Null);
    }
}
