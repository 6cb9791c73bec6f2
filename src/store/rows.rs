//! Rows as stored, and the checked domain rows built from them.

use std::net::IpAddr;

use sqlx::FromRow;

use super::{Result, StoreError, corrupt, status};
use crate::acme::{
    Identifier,
    renewal::{RenewalFacts, RenewalState, WindowPercents},
    types::{AccountStatus, AuthorizationStatus, ChallengeStatus, ChallengeType, OrderStatus},
};

/// A row as stored: `FromRow` for PostgreSQL (sqlx), and `from_lite` for SQLite (rusqlite). A field's column is its name, or the string after `as`.
macro_rules! raw_row {
    ($(#[$meta:meta])* $name:ident { $($(#[$attr:meta])* $field:ident $(as $col:literal)?: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(FromRow)]
        pub(super) struct $name {
            $($(#[$attr])* $(#[sqlx(rename = $col)])? $field: $ty,)*
        }

        impl $name {
            #[allow(dead_code)] // not every kind of row is read on the calling thread
            pub(super) fn from_lite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(Self { $($field: row.get(raw_row!(@column $field $($col)?))?,)* })
            }
        }
    };
    (@column $field:ident $col:literal) => { $col };
    (@column $field:ident) => { stringify!($field) };
}

raw_row! {
    RawAccount {
        id: String,
        key_thumbprint: String,
        jwk: String,
        status: String,
        contact: String,
        tos_agreed: bool,
        created_at: i64,
        eab_kid: Option<String>,
    }
}

/// An ACME account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRow {
    pub id: String,
    pub thumbprint: String,
    pub jwk: serde_json::Value,
    pub status: AccountStatus,
    pub contact: Vec<String>,
    pub tos_agreed: bool,
    pub created_at: i64,
    /// The EAB key the account was created with; its scope limits the account's orders.
    pub eab_kid: Option<String>,
}

impl TryFrom<RawAccount> for AccountRow {
    type Error = StoreError;
    fn try_from(r: RawAccount) -> Result<Self> {
        Ok(Self {
            jwk: serde_json::from_str(&r.jwk).map_err(|e| corrupt("accounts", e))?,
            status: status("accounts", &r.status, AccountStatus::from_db)?,
            contact: serde_json::from_str(&r.contact).map_err(|e| corrupt("accounts", e))?,
            id: r.id,
            thumbprint: r.key_thumbprint,
            tos_agreed: r.tos_agreed,
            created_at: r.created_at,
            eab_kid: r.eab_kid,
        })
    }
}

raw_row! {
    RawOrder {
        id: String,
        account_id: String,
        status: String,
        expires_at: i64,
        identifiers: String,
        not_before: Option<i64>,
        not_after: Option<i64>,
        error: Option<String>,
        csr: Option<Vec<u8>>,
        certificate_id: Option<String>,
        attempts: i64,
        next_attempt_at: Option<i64>,
        #[allow(dead_code)]
        claimed_until: Option<i64>,
        created_at: i64,
        #[allow(dead_code)]
        updated_at: i64,
        profile: Option<String>,
        replaces: Option<String>,
        sign_started_at: Option<i64>,
        client_user_agent: Option<String>,
        client_ip: Option<String>,
        /// JSON array of the order's authorization IDs, by position.
        authz_ids: String,
    }
}

/// An order with the IDs of its authorizations, in identifier order.
#[derive(Clone, Debug)]
pub struct OrderRow {
    pub id: String,
    pub account_id: String,
    pub status: OrderStatus,
    pub expires_at: i64,
    pub identifiers: Vec<Identifier>,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub error: Option<serde_json::Value>,
    pub csr: Option<Vec<u8>>,
    pub certificate_id: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub authz_ids: Vec<String>,
    pub profile: Option<String>,
    /// RFC 9773 certID of the certificate this order renews.
    pub replaces: Option<String>,
    /// When vacme first sent the order to the CA (`Store::mark_signing`).
    pub sign_started_at: Option<i64>,
    /// The `User-Agent` of the client that created the order (printable, bounded).
    pub client_user_agent: Option<String>,
    /// The address of the client that created the order (behind a trusted proxy, the forwarded one).
    pub client_ip: Option<String>,
}

impl OrderRow {
    pub(super) fn from_raw(r: RawOrder) -> Result<Self> {
        Ok(Self {
            authz_ids: serde_json::from_str(&r.authz_ids).map_err(|e| corrupt("orders", e))?,
            status: status("orders", &r.status, OrderStatus::from_db)?,
            identifiers: serde_json::from_str(&r.identifiers).map_err(|e| corrupt("orders", e))?,
            error: r.error.as_deref().map(serde_json::from_str).transpose().map_err(|e| corrupt("orders", e))?,
            id: r.id,
            account_id: r.account_id,
            expires_at: r.expires_at,
            not_before: r.not_before,
            not_after: r.not_after,
            csr: r.csr,
            certificate_id: r.certificate_id,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
            profile: r.profile,
            replaces: r.replaces,
            sign_started_at: r.sign_started_at,
            client_user_agent: r.client_user_agent,
            client_ip: r.client_ip,
        })
    }
}

/// The client that created an order, as recorded with it ("certbot/5.8.0 from 10.0.0.23").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderClient {
    /// The `User-Agent`, as `OrderClient::new` bounded it.
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl OrderClient {
    /// Longest `User-Agent` kept, in characters (certbot's, with its plugin list, is about 120).
    pub const MAX_USER_AGENT: usize = 256;

    /// What is kept of a request's `User-Agent` and address. The header is the client's own
    /// text and ends up in terminals and logs: only printable ASCII is kept (anything else
    /// becomes `?`), at most `MAX_USER_AGENT` characters; an empty one is none.
    pub fn new(user_agent: Option<&[u8]>, ip: Option<IpAddr>) -> Self {
        let user_agent = user_agent
            .map(|raw| {
                raw.iter()
                    .take(Self::MAX_USER_AGENT)
                    .map(|b| if (0x20..0x7f).contains(b) { char::from(*b) } else { '?' })
                    .collect::<String>()
                    .trim()
                    .to_owned()
            })
            .filter(|s| !s.is_empty());
        Self { user_agent, ip: ip.map(|ip| ip.to_string()) }
    }

    /// "certbot/5.8.0 from 10.0.0.23", or `-` for what is not known.
    pub fn describe(user_agent: Option<&str>, ip: Option<&str>) -> String {
        format!("{} from {}", user_agent.unwrap_or("-"), ip.unwrap_or("-"))
    }
}

raw_row! {
    RawAuthz {
        id: String,
        order_id: String,
        account_id: String,
        identifier_type: String,
        identifier_value: String,
        wildcard: bool,
        status: String,
        expires_at: i64,
        #[allow(dead_code)]
        position: i64,
    }
}

impl RawAuthz {
    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

/// An authorization with its challenges.
#[derive(Clone, Debug)]
pub struct AuthzRow {
    pub id: String,
    pub order_id: String,
    pub account_id: String,
    /// The identifier whose control is proven (a wildcard's base domain).
    pub identifier: Identifier,
    pub wildcard: bool,
    pub status: AuthorizationStatus,
    pub expires_at: i64,
    pub challenges: Vec<ChallengeRow>,
}

impl AuthzRow {
    pub(super) fn from_raw(r: RawAuthz, challs: Vec<RawChallenge>) -> Result<Self> {
        Ok(Self {
            identifier: identifier(&r.identifier_type, &r.identifier_value)?,
            status: status("authorizations", &r.status, AuthorizationStatus::from_db)?,
            challenges: challs.into_iter().map(ChallengeRow::try_from).collect::<Result<_>>()?,
            id: r.id,
            order_id: r.order_id,
            account_id: r.account_id,
            wildcard: r.wildcard,
            expires_at: r.expires_at,
        })
    }
}

raw_row! {
    RawChallenge {
        id: String,
        #[allow(dead_code)]
        authz_id: String,
        kind as "type": String,
        token: String,
        status: String,
        validated_at: Option<i64>,
        error: Option<String>,
        attempts: i64,
        #[allow(dead_code)]
        started_at: Option<i64>,
        #[allow(dead_code)]
        next_attempt_at: Option<i64>,
        #[allow(dead_code)]
        claimed_until: Option<i64>,
    }
}

/// One challenge of an authorization.
#[derive(Clone, Debug)]
pub struct ChallengeRow {
    pub id: String,
    pub kind: ChallengeType,
    pub token: String,
    pub status: ChallengeStatus,
    pub validated_at: Option<i64>,
    pub error: Option<serde_json::Value>,
    pub attempts: i64,
}

impl TryFrom<RawChallenge> for ChallengeRow {
    type Error = StoreError;
    fn try_from(r: RawChallenge) -> Result<Self> {
        Ok(Self {
            kind: status("challenges", &r.kind, ChallengeType::from_db)?,
            status: status("challenges", &r.status, ChallengeStatus::from_db)?,
            error: r.error.as_deref().map(serde_json::from_str).transpose().map_err(|e| corrupt("challenges", e))?,
            id: r.id,
            token: r.token,
            validated_at: r.validated_at,
            attempts: r.attempts,
        })
    }
}

raw_row! {
    RawClaim {
        id: String,
        kind as "type": String,
        token: String,
        started_at: Option<i64>,
        attempts: i64,
        identifier_type: String,
        identifier_value: String,
        wildcard: bool,
        order_id: String,
        account_id: String,
        key_thumbprint: String,
    }
}

/// What one claim leased: the items, and how many of them another holder's lease had run out on
/// (a replica, or an earlier run of this one, that died or stalled with the item in hand).
#[derive(Clone, Debug)]
pub struct Claimed<T> {
    pub items: Vec<T>,
    pub taken_over: usize,
}

impl<T> From<Vec<T>> for Claimed<T> {
    /// Items nobody held before (an in-process queue).
    fn from(items: Vec<T>) -> Self {
        Self { items, taken_over: 0 }
    }
}

/// A challenge leased to a validation worker, with what it needs to check it.
#[derive(Clone, Debug)]
pub struct ClaimedChallenge {
    pub id: String,
    pub kind: ChallengeType,
    pub token: String,
    pub started_at: i64,
    pub attempts: i64,
    /// The identifier whose control is proven (a wildcard's base domain).
    pub identifier: Identifier,
    /// The order's identifier was `*.<identifier>`.
    pub wildcard: bool,
    pub order_id: String,
    pub account_id: String,
    pub account_thumbprint: String,
}

impl TryFrom<RawClaim> for ClaimedChallenge {
    type Error = StoreError;
    fn try_from(r: RawClaim) -> Result<Self> {
        Ok(Self {
            kind: status("challenges", &r.kind, ChallengeType::from_db)?,
            identifier: identifier(&r.identifier_type, &r.identifier_value)?,
            started_at: r.started_at.unwrap_or(0),
            id: r.id,
            token: r.token,
            attempts: r.attempts,
            wildcard: r.wildcard,
            order_id: r.order_id,
            account_id: r.account_id,
            account_thumbprint: r.key_thumbprint,
        })
    }
}

raw_row! {
    RawCertificate {
        id: String,
        order_id: String,
        account_id: String,
        serial: String,
        issuer: String,
        identifiers: String,
        chain_pem: String,
        not_before: i64,
        not_after: i64,
        revoked_at: Option<i64>,
        revocation_reason: Option<i64>,
        created_at: i64,
        profile: Option<String>,
        ari_id: Option<String>,
        ca_revoked_at: Option<i64>,
        renewed_by: Option<String>,
    }
}

raw_row! {
    RawCertList {
        id: String,
        order_id: String,
        account_id: String,
        serial: String,
        identifiers: String,
        not_before: i64,
        not_after: i64,
        revoked_at: Option<i64>,
        renewed_by: Option<String>,
        profile: Option<String>,
        created_at: i64,
        client_user_agent: Option<String>,
        client_ip: Option<String>,
    }
}

impl TryFrom<RawCertList> for super::admin::CertListRow {
    type Error = StoreError;
    fn try_from(r: RawCertList) -> Result<Self> {
        Ok(Self {
            identifiers: serde_json::from_str(&r.identifiers).map_err(|e| corrupt("certificates", e))?,
            id: r.id,
            order_id: r.order_id,
            account_id: r.account_id,
            serial: r.serial,
            not_before: r.not_before,
            not_after: r.not_after,
            revoked_at: r.revoked_at,
            renewed_by: r.renewed_by,
            profile: r.profile,
            created_at: r.created_at,
            user_agent: r.client_user_agent,
            client_ip: r.client_ip,
        })
    }
}

/// An issued certificate.
#[derive(Clone, Debug)]
pub struct CertificateRow {
    pub id: String,
    pub order_id: String,
    pub account_id: String,
    pub serial: String,
    pub issuer: String,
    pub identifiers: Vec<Identifier>,
    pub chain_pem: String,
    pub not_before: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<i64>,
    pub created_at: i64,
    pub profile: Option<String>,
    /// RFC 9773 certID.
    pub ari_id: Option<String>,
    /// When the CA confirmed the revocation; `None` while it is still to be told.
    pub ca_revoked_at: Option<i64>,
    /// The certificate that renewed this one (same account and names, or `replaces`).
    pub renewed_by: Option<String>,
}

impl CertificateRow {
    /// Its renewal state at `now`, with the configured window.
    pub fn renewal_state(&self, window: WindowPercents, now: i64) -> RenewalState {
        RenewalState::of(&self.renewal_facts(), window, now)
    }

    pub fn renewal_facts(&self) -> RenewalFacts {
        RenewalFacts {
            not_before: self.not_before,
            not_after: self.not_after,
            revoked: self.revoked_at.is_some(),
            renewed: self.renewed_by.is_some(),
        }
    }
}

impl TryFrom<RawCertificate> for CertificateRow {
    type Error = StoreError;
    fn try_from(r: RawCertificate) -> Result<Self> {
        Ok(Self {
            identifiers: serde_json::from_str(&r.identifiers).map_err(|e| corrupt("certificates", e))?,
            id: r.id,
            order_id: r.order_id,
            account_id: r.account_id,
            serial: r.serial,
            issuer: r.issuer,
            chain_pem: r.chain_pem,
            not_before: r.not_before,
            not_after: r.not_after,
            revoked_at: r.revoked_at,
            revocation_reason: r.revocation_reason,
            created_at: r.created_at,
            profile: r.profile,
            ari_id: r.ari_id,
            ca_revoked_at: r.ca_revoked_at,
            renewed_by: r.renewed_by,
        })
    }
}

raw_row! {
    RawRejected {
        id: String,
        serial: String,
        order_id: String,
        account_id: String,
        identifiers: String,
        leaf_pem: String,
        mount: Option<String>,
        reason: String,
        created_at: i64,
        revoked_at: Option<i64>,
    }
}

/// A certificate the CA signed that did not match its order: never delivered, revoked in the CA.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RejectedRow {
    pub id: String,
    /// Lower-case hex.
    pub serial: String,
    pub order_id: String,
    pub account_id: String,
    /// The names the CA put in the certificate.
    pub identifiers: Vec<Identifier>,
    pub leaf_pem: String,
    /// The mount it was signed through (`None`: the default).
    pub mount: Option<String>,
    /// What differs from the order.
    pub reason: String,
    pub created_at: i64,
    /// When the CA confirmed the revocation; `None` while it is still to be told.
    pub revoked_at: Option<i64>,
}

impl TryFrom<RawRejected> for RejectedRow {
    type Error = StoreError;
    fn try_from(r: RawRejected) -> Result<Self> {
        Ok(Self {
            identifiers: serde_json::from_str(&r.identifiers).map_err(|e| corrupt("rejected_certificates", e))?,
            id: r.id,
            serial: r.serial,
            order_id: r.order_id,
            account_id: r.account_id,
            leaf_pem: r.leaf_pem,
            mount: r.mount,
            reason: r.reason,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

raw_row! {
    RawEabKey {
        kid: String,
        scope: String,
        profile: Option<String>,
        comment: String,
        expires_at: Option<i64>,
        created_at: i64,
        used_at: Option<i64>,
        account_id: Option<String>,
        revoked_at: Option<i64>,
    }
}

impl TryFrom<RawEabKey> for EabKeyRow {
    type Error = StoreError;
    fn try_from(r: RawEabKey) -> Result<Self> {
        Ok(Self {
            scope: serde_json::from_str(&r.scope).map_err(|e| corrupt("eab_keys", e))?,
            kid: r.kid,
            profile: r.profile,
            comment: r.comment,
            expires_at: r.expires_at,
            created_at: r.created_at,
            used_at: r.used_at,
            account_id: r.account_id,
            revoked_at: r.revoked_at,
        })
    }
}

/// An EAB key as the admin sees it. The HMAC key itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EabKeyRow {
    pub kid: String,
    pub scope: Vec<String>,
    pub profile: Option<String>,
    pub comment: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub used_at: Option<i64>,
    pub account_id: Option<String>,
    pub revoked_at: Option<i64>,
}

impl EabKeyRow {
    /// `unused`, `used`, `revoked` or `expired` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.used_at.is_some() {
            "used"
        } else if self.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "unused"
        }
    }
}

/// An account with its order and certificate counts, for `vacme accounts list`.
#[derive(Clone, Debug)]
pub struct AccountSummary {
    pub account: AccountRow,
    pub orders: i64,
    pub certificates: i64,
}

raw_row! {
    RawAudit {
        id: i64,
        at: i64,
        event: String,
        actor: String,
        account_id: Option<String>,
        order_id: Option<String>,
        certificate_id: Option<String>,
        serial: Option<String>,
        identifiers: String,
        client_ip: Option<String>,
        detail: String,
    }
}

/// One event of the audit trail: who got or was refused which names, and who revoked what.
/// Each is logged (target `vacme::audit`) and kept in the store (`vacme audit` lists it).
/// Writing it never fails the request it describes: a store error is logged instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    /// `issued`, `order_refused`, `finalize_refused`, `ca_refused`, `ca_unavailable`,
    /// `post_sign_mismatch`, `issuance_refused`, `validation_failed`, `paused`, `unpaused`,
    /// `revoked`, `account_created`, `account_deactivated`.
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

    /// The client address as recorded (an order's `client_ip`).
    pub fn client_ip_text(mut self, ip: Option<&str>) -> Self {
        self.client_ip = ip.map(str::to_owned);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// An audit event as stored, with its sequence number and time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl TryFrom<RawAudit> for AuditRow {
    type Error = StoreError;
    fn try_from(r: RawAudit) -> Result<Self> {
        Ok(Self {
            id: r.id,
            at: r.at,
            event: AuditEvent {
                identifiers: serde_json::from_str(&r.identifiers).map_err(|e| corrupt("audit_events", e))?,
                event: r.event,
                actor: r.actor,
                account_id: r.account_id,
                order_id: r.order_id,
                certificate_id: r.certificate_id,
                serial: r.serial,
                client_ip: r.client_ip,
                detail: r.detail,
            },
        })
    }
}

/// Events inside a window: how many, and when the oldest happened (it leaves the window first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCount {
    pub count: i64,
    pub oldest: Option<i64>,
}

/// A name an account may not order or validate (`vacme limits list`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PauseRow {
    pub account_id: String,
    pub identifier_type: String,
    pub identifier_value: String,
    pub paused_at: i64,
    /// Failed validations in the hour that led to the pause.
    pub failures: i64,
    /// When an administrator lifted it; `None` while paused.
    pub lifted_at: Option<i64>,
}

fn identifier(kind: &str, value: &str) -> Result<Identifier> {
    match kind {
        "dns" => Ok(Identifier::Dns(value.to_owned())),
        "ip" => value.parse::<IpAddr>().map(Identifier::Ip).map_err(|e| corrupt("authorizations", e)),
        other => Err(corrupt("authorizations", format!("unknown identifier type {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_agent_is_kept_printable_and_bounded() {
        let ip: IpAddr = "10.0.0.23".parse().unwrap();
        let c = OrderClient::new(Some(b"CertbotACMEClient/5.8.0 (certbot; Debian)"), Some(ip));
        assert_eq!(c.user_agent.as_deref(), Some("CertbotACMEClient/5.8.0 (certbot; Debian)"));
        assert_eq!(c.ip.as_deref(), Some("10.0.0.23"));
        let c = OrderClient::new(Some("a\x1b[31mb\tc\u{e9}".as_bytes()), None);
        assert_eq!(c.user_agent.as_deref(), Some("a?[31mb?c??"), "escapes, tabs and non-ASCII bytes are replaced");
        let long = vec![b'x'; 1000];
        assert_eq!(OrderClient::new(Some(&long), None).user_agent.unwrap().len(), OrderClient::MAX_USER_AGENT);
        assert_eq!(OrderClient::new(Some(b"   "), None).user_agent, None);
        assert_eq!(OrderClient::describe(Some("lego/4"), None), "lego/4 from -");
    }
}
