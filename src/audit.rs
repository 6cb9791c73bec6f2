//! The audit trail: who got or was refused which names, and who revoked what. Each event is
//! logged (target `vacme::audit`) and kept in the store (`vacme audit` lists it). Writing it
//! never fails the request it describes: a store error is logged instead.

use serde::Serialize;

use crate::{acme::Identifier, store::Store};

/// One audited event, as it is recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// `issued`, `order_refused`, `finalize_refused`, `ca_refused`, `post_sign_mismatch`, `issuance_refused`, `validation_failed`,
    /// `paused`, `unpaused`, `revoked`, `account_created`, `account_deactivated`.
    pub event: String,
    /// `account:<id>`, `certificate-key`, `admin` or `vacme`.
    pub actor: String,
    pub account_id: Option<String>,
    pub order_id: Option<String>,
    pub certificate_id: Option<String>,
    /// The CA's serial (lower-case hex).
    pub serial: Option<String>,
    pub identifiers: Vec<Identifier>,
    pub client_ip: Option<String>,
    /// Why (a refusal's problem detail, a revocation reason); never a secret.
    pub detail: String,
}

impl AuditEvent {
    pub fn new(event: &str, actor: impl Into<String>) -> Self {
        Self { event: event.to_owned(), actor: actor.into(), ..Self::default() }
    }

    /// The actor for requests signed by an account.
    pub fn by_account(event: &str, account_id: &str) -> Self {
        Self { account_id: Some(account_id.to_owned()), ..Self::new(event, format!("account:{account_id}")) }
    }

    pub fn account(mut self, id: &str) -> Self {
        self.account_id = Some(id.to_owned());
        self
    }

    pub fn order(mut self, id: &str) -> Self {
        self.order_id = Some(id.to_owned());
        self
    }

    pub fn certificate(mut self, id: &str, serial: &str) -> Self {
        self.certificate_id = Some(id.to_owned());
        self.serial = Some(serial.to_owned());
        self
    }

    pub fn identifiers(mut self, ids: &[Identifier]) -> Self {
        self.identifiers = ids.to_vec();
        self
    }

    pub fn client_ip(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.client_ip = ip.map(|ip| ip.to_string());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Logs the event and keeps it in the store.
    pub async fn record(self, store: &Store, now: i64) {
        let names: Vec<String> = self.identifiers.iter().map(Identifier::value).collect();
        tracing::info!(target: "vacme::audit", event = %self.event, actor = %self.actor,
            account_id = self.account_id.as_deref().unwrap_or("-"), order_id = self.order_id.as_deref().unwrap_or("-"),
            serial = self.serial.as_deref().unwrap_or("-"), identifiers = ?names,
            client_ip = self.client_ip.as_deref().unwrap_or("-"), detail = %self.detail, "audit");
        if let Err(e) = store.insert_audit(&self, now).await {
            tracing::error!(error = %e, event = %self.event, "cannot record an audit event");
        }
    }
}
