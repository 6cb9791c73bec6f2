//! Wire JSON of the RFC 8555 §7.1 resources, exactly as the RFC shows them.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::acme::{Identifier, RawIdentifier};

/// RFC 8555 §7.1.1.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Directory {
    pub new_nonce: String,
    pub new_account: String,
    pub new_order: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_change: Option<String>,
    /// RFC 9773 §3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewal_info: Option<String>,
    pub meta: DirectoryMeta,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caa_identities: Vec<String>,
    pub external_account_required: bool,
    /// draft-ietf-acme-profiles: name -> description.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub profiles: std::collections::BTreeMap<String, String>,
}

macro_rules! status_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }
        impl $name {
            /// The lower-case wire and database spelling.
            pub fn as_str(self) -> &'static str { match self { $(Self::$variant => $s),+ } }
            /// Parses the database spelling.
            pub fn from_db(s: &str) -> Option<Self> { match s { $($s => Some(Self::$variant),)+ _ => None } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

status_enum!(
    /// RFC 8555 §7.1.6 account states.
    AccountStatus { Valid = "valid", Deactivated = "deactivated", Revoked = "revoked" }
);
status_enum!(
    /// RFC 8555 §7.1.6 order states.
    OrderStatus { Pending = "pending", Ready = "ready", Processing = "processing", Valid = "valid", Invalid = "invalid" }
);
status_enum!(
    /// RFC 8555 §7.1.6 authorization states.
    AuthorizationStatus {
        Pending = "pending", Valid = "valid", Invalid = "invalid",
        Deactivated = "deactivated", Expired = "expired", Revoked = "revoked",
    }
);
status_enum!(
    /// RFC 8555 §7.1.6 challenge states.
    ChallengeStatus { Pending = "pending", Processing = "processing", Valid = "valid", Invalid = "invalid" }
);

/// Challenge types vacme can validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChallengeType {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "dns-01")]
    Dns01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "http-01" => Some(Self::Http01),
            "dns-01" => Some(Self::Dns01),
            "tls-alpn-01" => Some(Self::TlsAlpn01),
            _ => None,
        }
    }
}

impl fmt::Display for ChallengeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 8555 §7.1.2.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub status: AccountStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contact: Vec<String>,
    pub orders: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terms_of_service_agreed: Option<bool>,
}

/// RFC 8555 §7.1.3.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub status: OrderStatus,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub expires: Option<OffsetDateTime>,
    pub identifiers: Vec<Identifier>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub not_after: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    pub authorizations: Vec<String>,
    pub finalize: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// draft-ietf-acme-profiles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// RFC 9773 §5: the certID this order renews, as the client sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// RFC 8555 §7.1.4.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    pub identifier: Identifier,
    pub status: AuthorizationStatus,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub expires: Option<OffsetDateTime>,
    pub challenges: Vec<Challenge>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wildcard: bool,
}

/// RFC 8555 §8.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Challenge {
    #[serde(rename = "type")]
    pub kind: ChallengeType,
    pub url: String,
    pub status: ChallengeStatus,
    pub token: String,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub validated: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

/// RFC 8555 §7.1.2.1 orders list.
#[derive(Clone, Debug, Serialize)]
pub struct OrdersList {
    pub orders: Vec<String>,
}

/// newAccount and account-update payload (RFC 8555 §7.3).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRequest {
    pub contact: Option<Vec<String>>,
    pub terms_of_service_agreed: Option<bool>,
    #[serde(default)]
    pub only_return_existing: bool,
    pub external_account_binding: Option<serde_json::Value>,
    pub status: Option<String>,
}

/// newOrder payload (RFC 8555 §7.4).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrderRequest {
    pub identifiers: Vec<RawIdentifier>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    /// draft-ietf-acme-profiles.
    pub profile: Option<String>,
    /// RFC 9773 §5: certID of the certificate this order renews.
    pub replaces: Option<String>,
}

/// revokeCert payload (RFC 8555 §7.6).
#[derive(Clone, Debug, Deserialize)]
pub struct RevocationRequest {
    /// base64url DER of the certificate.
    pub certificate: String,
    pub reason: Option<i64>,
}

/// RFC 9773 §4.2 renewal information.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewalInfo {
    pub suggested_window: SuggestedWindow,
    #[serde(rename = "explanationURL", skip_serializing_if = "Option::is_none")]
    pub explanation_url: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SuggestedWindow {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

/// finalize payload (RFC 8555 §7.4).
#[derive(Clone, Debug, Deserialize)]
pub struct FinalizeRequest {
    /// base64url DER of the PKCS#10 CSR.
    pub csr: String,
}

/// Authorization update payload (RFC 8555 §7.5.2).
#[derive(Clone, Debug, Deserialize)]
pub struct AuthorizationUpdate {
    pub status: Option<String>,
}
