//! The error types of RFC 8555 §6.7 (and the few vacme adds), with their URN and HTTP status.

use http::StatusCode;
use serde::Serializer;

/// The error types of RFC 8555 §6.7 (and extensions) that vacme returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemType {
    AccountDoesNotExist,
    AlreadyReplaced,
    AlreadyRevoked,
    BadCsr,
    BadNonce,
    BadPublicKey,
    BadRevocationReason,
    BadSignatureAlgorithm,
    Caa,
    Connection,
    Dns,
    ExternalAccountRequired,
    IncorrectResponse,
    InvalidContact,
    InvalidProfile,
    Malformed,
    OrderNotReady,
    RateLimited,
    RejectedIdentifier,
    ServerInternal,
    Tls,
    Unauthorized,
    UnsupportedContact,
    UnsupportedIdentifier,
    UserActionRequired,
    /// Not a §6.7 type: a resource that does not exist (or belongs to someone else).
    NotFound,
    /// Not a §6.7 type: an HTTP method this resource does not take.
    MethodNotAllowed,
    /// Not a §6.7 type: the body is larger than the server accepts.
    PayloadTooLarge,
    /// Not a §6.7 type: the request did not use `application/jose+json` (400, as DESIGN.md's table says).
    UnsupportedMediaType,
}

impl ProblemType {
    /// The last part of the URN, e.g. `badCSR`.
    pub fn code(self) -> &'static str {
        match self {
            Self::AccountDoesNotExist => "accountDoesNotExist",
            Self::AlreadyReplaced => "alreadyReplaced",
            Self::AlreadyRevoked => "alreadyRevoked",
            Self::BadCsr => "badCSR",
            Self::BadNonce => "badNonce",
            Self::BadPublicKey => "badPublicKey",
            Self::BadRevocationReason => "badRevocationReason",
            Self::BadSignatureAlgorithm => "badSignatureAlgorithm",
            Self::Caa => "caa",
            Self::Connection => "connection",
            Self::Dns => "dns",
            Self::ExternalAccountRequired => "externalAccountRequired",
            Self::IncorrectResponse => "incorrectResponse",
            Self::InvalidContact => "invalidContact",
            Self::InvalidProfile => "invalidProfile",
            Self::Malformed => "malformed",
            Self::OrderNotReady => "orderNotReady",
            Self::RateLimited => "rateLimited",
            Self::RejectedIdentifier => "rejectedIdentifier",
            Self::ServerInternal => "serverInternal",
            Self::Tls => "tls",
            Self::Unauthorized => "unauthorized",
            Self::UnsupportedContact => "unsupportedContact",
            Self::UnsupportedIdentifier => "unsupportedIdentifier",
            Self::UserActionRequired => "userActionRequired",
            // RFC 8555 has no "not found"; `malformed` is what pebble and boulder send with a 404.
            Self::NotFound | Self::MethodNotAllowed | Self::PayloadTooLarge | Self::UnsupportedMediaType => "malformed",
        }
    }

    /// The full URN, e.g. `urn:ietf:params:acme:error:badCSR`.
    pub fn urn(self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.code())
    }

    /// The HTTP status this type is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::ServerInternal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::OrderNotReady => StatusCode::FORBIDDEN,
            Self::AlreadyReplaced => StatusCode::CONFLICT,
            Self::UserActionRequired | Self::ExternalAccountRequired => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub(super) fn serialize_urn<S: Serializer>(kind: &ProblemType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&kind.urn())
    }
}
