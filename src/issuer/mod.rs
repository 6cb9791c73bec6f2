//! The CA seam: `Issuer` signs checked requests. `vault` calls `<mount>/sign/<role>`;
//! `local` is an on-disk CA for the zero-config default and for tests.

mod csr;
mod der;
mod local;
pub mod role;
mod trust;
mod vault;

use std::fmt;

use time::OffsetDateTime;

use crate::acme::{Identifier, Problem, ProblemType};

pub use csr::{CsrKey, IssuanceRequest, KeyKind, KeyPolicy, SignTarget};
pub use local::{LocalCa, LocalIssuer};
pub(crate) use trust::root_of;
pub use trust::{Root, TrustAnchor, TrustError};
pub use vault::{VaultAuth, VaultIssuer, VaultSettings};

/// Boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A signed certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Lower-case hex, no colons.
    pub serial: String,
    /// The leaf certificate (one PEM block).
    pub leaf_pem: String,
    /// Issuing CA first, up to but excluding a self-signed root (RFC 8446 §4.4.2 lets the
    /// trust anchor be left out). The one exception is a root that signs leaves directly (the
    /// local CA): it is sent, because certbot refuses a chain of a single certificate.
    pub chain_pem: Vec<String>,
    /// Exactly as in the certificate (whole seconds).
    pub not_before: OffsetDateTime,
    /// Exactly as in the certificate (whole seconds).
    pub not_after: OffsetDateTime,
}

impl Issued {
    /// What clients download (`application/pem-certificate-chain`): leaf, then chain.
    pub fn full_chain_pem(&self) -> String {
        let mut out = String::new();
        for pem in std::iter::once(&self.leaf_pem).chain(&self.chain_pem) {
            out.push_str(pem.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The addresses of a CA with several (the nodes of a Vault cluster), which one serves, and how
/// many times vacme moved from one to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    /// Index into `addresses`.
    pub in_use: usize,
    pub failovers: u64,
    /// How long the current token lives, when Vault said (`None`: not known, or no expiry).
    pub token_ttl_left: Option<std::time::Duration>,
}

/// Why a CA call failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CA looked at the request and said no: the order becomes `invalid` with this text.
    #[error("CA refused the request: {0}")]
    Refused(String),
    /// The CA could not be asked (down, sealed, timeout, 5xx, auth): the worker retries later.
    #[error("CA unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The CA signed, but not what was asked (other names or another key): a certificate nobody
    /// validated now exists. Never a retry: the worker revokes `serial` at once and records it.
    #[error("the CA issued certificate {serial} for [{}]: {why}", names.iter().map(Identifier::value).collect::<Vec<_>>().join(", "))]
    Mismatch {
        /// Lower-case hex, as the CA reported it.
        serial: String,
        /// The names the CA put in the certificate.
        names: Vec<Identifier>,
        /// The certificate itself (revocation by certificate when the CA kept no record).
        leaf_pem: String,
        /// The mount it was signed through (`None`: the default).
        mount: Option<String>,
        /// What differs from the order, for the log and the audit trail.
        why: String,
    },
}

/// RFC 8555 §7.4: a CA refusal is the client's `badCSR` (with the CA's reason, which names
/// the role rule that failed); an unreachable CA is `serverInternal`, its cause only logged.
impl From<IssueError> for Problem {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Refused(why) => Problem::bad_csr(format!("the CA refused to sign: {why}")),
            e @ IssueError::Unavailable(_) => Problem::internal(e),
            // serverInternal, not badCSR: the CSR passed every check and another one would be
            // signed the same way; the fault is the CA's role, which only the operator can fix.
            // The detail names neither the serial nor the CA's names (they are the operator's).
            IssueError::Mismatch { .. } => Problem::new(
                ProblemType::ServerInternal,
                "the CA issued a certificate that does not match this order; it was revoked and \
                 the server's operator was alerted",
            ),
        }
    }
}

impl IssueError {
    pub(crate) fn unavailable(msg: impl Into<String>) -> Self {
        IssueError::Unavailable(msg.into().into())
    }

    /// `Unavailable` for a signing call that no CA node can have run: none took the connection,
    /// or each that answered was sealed, redirected to another or refused the token, or the
    /// call was never sent (the CA did not pass its health check).
    pub(crate) fn unsent(e: IssueError) -> Self {
        match e {
            IssueError::Unavailable(why) => IssueError::Unavailable(Box::new(Unsent(why.to_string()))),
            other => other,
        }
    }

    /// Whether the CA surely signed nothing for this failed signing call, so a retry may sign
    /// without looking for a certificate the call produced.
    pub fn signed_nothing(&self) -> bool {
        matches!(self, IssueError::Unavailable(why) if why.is::<Unsent>())
    }
}

/// The cause inside `IssueError::Unavailable` for a signing call no CA node can have run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unsent(String);

/// A certificate authority vacme can hand checked requests to.
#[async_trait::async_trait]
pub trait Issuer: fmt::Debug + Send + Sync {
    /// Signs exactly `req`, which `IssuanceRequest::new` already checked. `Refused` means this
    /// request will never be signed (the order becomes `invalid`); `Unavailable` means try later.
    async fn sign(&self, req: &IssuanceRequest) -> Result<Issued, IssueError>;
    /// Revokes the certificate with `serial` (lower-case hex) and PEM `leaf_pem`, issued through
    /// `mount` (`None`: the default). Idempotent: an already revoked certificate is `Ok`.
    async fn revoke(&self, serial: &str, leaf_pem: &str, mount: Option<&str>) -> Result<(), IssueError>;
    /// When the CA revoked `serial` (Unix seconds), if it did; `Ok(None)` when it cannot tell.
    async fn revoked_at(&self, _serial: &str, _mount: Option<&str>) -> Result<Option<i64>, IssueError> {
        Ok(None)
    }
    /// A certificate the CA already signed for exactly `req` (same public key and names) no
    /// earlier than `since`: how an order whose signing call had no known outcome (vacme killed
    /// mid-call, a timeout) is finished without a second signature. `Ok(None)` when there is none
    /// or the CA keeps no record (the local CA signs in-process).
    async fn already_signed(
        &self,
        _req: &IssuanceRequest,
        _since: OffsetDateTime,
    ) -> Result<Option<Issued>, IssueError> {
        Ok(None)
    }
    /// The CA certificates (PEM) clients should trust, issuing CA first (the root included when
    /// the CA knows it).
    async fn chain(&self) -> Result<Vec<String>, IssueError>;
    /// A cheap probe: `Unavailable` when signing would not work now.
    async fn health(&self) -> Result<(), IssueError>;
    /// Where the CA is reached, when it has several addresses to choose from (Vault).
    fn endpoint(&self) -> Option<Endpoint> {
        None
    }
    /// `vault` or `local`.
    fn name(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_chain_is_leaf_then_chain_one_block_per_line_group() {
        let issued = Issued {
            serial: "0a".into(),
            leaf_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----".into(),
            chain_pem: vec!["-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n\n".into()],
            not_before: OffsetDateTime::UNIX_EPOCH,
            not_after: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(
            issued.full_chain_pem(),
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n"
        );
    }

    #[test]
    fn errors_become_problems() {
        let p = Problem::from(IssueError::Refused("common name x not allowed by this role".into()));
        assert_eq!((p.kind.code(), p.status), ("badCSR", 400));
        assert!(p.detail.contains("not allowed by this role"));
        let p = Problem::from(IssueError::unavailable("connect: 10.0.0.9:8200 refused"));
        assert_eq!((p.kind.code(), p.status), ("serverInternal", 500));
        assert!(!p.detail.contains("10.0.0.9"), "the cause is logged, not sent");
        let p = Problem::from(IssueError::Mismatch {
            serial: "0a".into(),
            names: vec![Identifier::Dns("victim.lab.test".into())],
            leaf_pem: String::new(),
            mount: None,
            why: "other names".into(),
        });
        assert_eq!((p.kind.code(), p.status), ("serverInternal", 500));
        assert!(!p.detail.contains("victim") && p.detail.contains("revoked"), "{}", p.detail);
    }
}
