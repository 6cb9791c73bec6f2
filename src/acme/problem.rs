//! RFC 8555 §6.7 problem documents: the only error vacme puts on the wire.

use std::{fmt, sync::Arc};

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{StatusCode, header::CONTENT_TYPE};
use serde::Serialize;

use crate::acme::identifier::{Identifier, IdentifierError};
pub use crate::acme::problem_type::ProblemType;

/// One identifier's share of a compound problem (RFC 8555 §6.7.1).
#[derive(Clone, Debug, Serialize)]
pub struct Subproblem {
    #[serde(rename = "type", serialize_with = "ProblemType::serialize_urn")]
    pub kind: ProblemType,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
}

/// An RFC 7807 problem document with an ACME error type.
#[derive(Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type", serialize_with = "ProblemType::serialize_urn")]
    pub kind: ProblemType,
    /// Client-safe text only: never a store or Vault error message.
    pub detail: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subproblems: Vec<Subproblem>,
    /// RFC 8555 §6.2: `badSignatureAlgorithm` lists the algorithms the server accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<&'static str>>,
    /// The real cause, logged by the API layer and never sent.
    #[serde(skip)]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    /// Extra response headers (e.g. `Location` of an existing account on a 409 key change).
    #[serde(skip)]
    pub location: Option<String>,
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of `kind` with the status that type is sent with.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            status: kind.status().as_u16(),
            subproblems: Vec::new(),
            algorithms: None,
            source: None,
            location: None,
            retry_after: None,
        }
    }

    /// Replaces the HTTP status (e.g. 401 for `unauthorized` vs 403).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status.as_u16();
        self
    }

    /// Attaches per-identifier subproblems.
    pub fn with_subproblems(mut self, subproblems: Vec<Subproblem>) -> Self {
        self.subproblems = subproblems;
        self
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, detail)
    }

    /// RFC 8555 §6.5: the detail text is matched by acme.sh to decide to retry.
    pub fn bad_nonce() -> Self {
        Self::new(ProblemType::BadNonce, "JWS has an invalid anti-replay nonce")
    }

    pub fn bad_signature_algorithm(detail: impl Into<String>, allowed: &[&'static str]) -> Self {
        let mut p = Self::new(ProblemType::BadSignatureAlgorithm, detail);
        p.algorithms = Some(allowed.to_vec());
        p
    }

    pub fn bad_public_key(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::BadPublicKey, detail)
    }

    pub fn bad_csr(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::BadCsr, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }

    pub fn account_does_not_exist(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::AccountDoesNotExist, detail)
    }

    pub fn rejected_identifier(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::RejectedIdentifier, detail)
    }

    pub fn unsupported_identifier(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::UnsupportedIdentifier, detail)
    }

    pub fn order_not_ready(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::OrderNotReady, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    pub fn invalid_contact(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::InvalidContact, detail)
    }

    pub fn unsupported_contact(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::UnsupportedContact, detail)
    }

    /// A store or CA failure the client cannot act on: fixed text out, the cause to the log.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        let mut p = Self::new(ProblemType::ServerInternal, "internal error");
        p.source = Some(Arc::new(err));
        p
    }

    /// The logged cause of a `serverInternal` problem, if any.
    pub fn source_error(&self) -> Option<&(dyn std::error::Error + Send + Sync)> {
        self.source.as_deref()
    }
}

impl fmt::Debug for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problem")
            .field("type", &self.kind.code())
            .field("status", &self.status)
            .field("detail", &self.detail)
            .field("source", &self.source.as_ref().map(|e| e.to_string()))
            .finish()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.kind.code(), self.status, self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (status, [(CONTENT_TYPE, "application/problem+json")], Json(&self)).into_response();
        if let Some(loc) = self.location.as_deref().and_then(|l| http::HeaderValue::from_str(l).ok()) {
            res.headers_mut().insert(http::header::LOCATION, loc);
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        // Logged once by the API layer, inside the request span.
        res.extensions_mut().insert(self);
        res
    }
}

impl From<IdentifierError> for Problem {
    fn from(e: IdentifierError) -> Self {
        Problem::new(e.kind, e.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_rfc8555_problem() {
        let p = Problem::bad_nonce();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:ietf:params:acme:error:badNonce");
        assert_eq!(v["status"], 400);
        assert_eq!(v["detail"], "JWS has an invalid anti-replay nonce");
        assert!(v.get("subproblems").is_none());
    }

    #[test]
    fn internal_hides_its_cause() {
        let p = Problem::internal(std::io::Error::other("db password is hunter2"));
        let body = serde_json::to_string(&p).unwrap();
        assert!(!body.contains("hunter2"));
        assert_eq!(p.status, 500);
        assert!(p.source_error().unwrap().to_string().contains("hunter2"));
    }

    #[test]
    fn bad_csr_keeps_rfc_spelling() {
        assert_eq!(ProblemType::BadCsr.urn(), "urn:ietf:params:acme:error:badCSR");
    }
}
