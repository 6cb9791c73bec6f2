//! The CA seam: `Issuer` signs checked requests. `vault` calls `<mount>/sign/<role>`;
//! `local` is an on-disk CA for the zero-config default and for tests.

mod csr;
mod local;
mod vault;
pub mod worker;

use std::fmt;

use time::OffsetDateTime;

pub use csr::{IssuanceRequest, KeyPolicy};
pub use local::{LocalCa, LocalCaError, LocalIssuer};
pub use vault::{VaultAuth, VaultIssuer, VaultSettings};

/// Boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A signed certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Lower-case hex, no colons.
    pub serial: String,
    pub leaf_pem: String,
    /// Issuing CA first, up to but excluding a self-signed root.
    pub chain_pem: Vec<String>,
    pub not_before: OffsetDateTime,
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

/// Why a CA call failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CA looked at the request and said no: the order becomes `invalid` with this text.
    #[error("CA refused the request: {0}")]
    Refused(String),
    /// The CA could not be asked (down, sealed, timeout, 5xx, auth): the worker retries later.
    #[error("CA unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

impl IssueError {
    pub(crate) fn unavailable(msg: impl Into<String>) -> Self {
        IssueError::Unavailable(msg.into().into())
    }
}

/// A certificate authority vacme can hand checked requests to.
#[async_trait::async_trait]
pub trait Issuer: fmt::Debug + Send + Sync {
    /// Signs exactly `req`, which `IssuanceRequest::new` already checked.
    async fn sign(&self, req: &IssuanceRequest) -> Result<Issued, IssueError>;
    /// Revokes by serial (lower-case hex). Idempotent.
    async fn revoke(&self, serial: &str) -> Result<(), IssueError>;
    /// The CA certificates (PEM) clients should trust, issuing CA first.
    async fn chain(&self) -> Result<Vec<String>, IssueError>;
    /// A cheap probe: `Unavailable` when signing would not work now.
    async fn health(&self) -> Result<(), IssueError>;
    /// `vault` or `local`.
    fn name(&self) -> &'static str;
}

/// Lower-case hex without separators: the store's form of a serial.
pub fn normalize_serial(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase()
}
