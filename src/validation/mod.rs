//! Challenge validation (RFC 8555 §8): checks run by background workers, never inside a request.
//! A failed check is data: a Problem worded for the domain owner, stored on the challenge.

mod caa;
mod dns01;
mod http01;
mod outbound;
mod resolver;
mod target;
mod tls_alpn01;

use std::{fmt, net::SocketAddr, time::Duration};

pub use outbound::Outbound;
pub use resolver::Resolver;
pub use target::TargetPolicy;
pub(crate) use target::is_localhost_name;

use crate::acme::{Identifier, Problem, types::ChallengeType};

/// How validation connects.
#[derive(Clone, Debug)]
pub struct ValidationSettings {
    /// Port for http-01 (80 in production).
    pub http01_port: u16,
    /// Port for tls-alpn-01 (443 in production).
    pub tls_alpn01_port: u16,
    /// DNS servers; empty means the system resolver.
    pub nameservers: Vec<SocketAddr>,
    /// Connect and overall timeout of one attempt.
    pub timeout: Duration,
    /// http-01 redirects followed.
    pub max_redirects: usize,
    /// Most bytes of an http-01 response read.
    pub max_body: usize,
    /// Loopback/private ranges that may be contacted (see `TargetPolicy`); `.localhost` names
    /// also reach loopback.
    pub allowed_targets: Vec<ipnet::IpNet>,
    /// This CA's CAA issuer domains; empty turns CAA checking off.
    pub caa_identities: Vec<String>,
}

/// Checks one challenge response.
#[async_trait::async_trait]
pub trait Validator: fmt::Debug + Send + Sync {
    /// Ok when the response is right; otherwise a problem describing what was seen. Never panics.
    async fn validate(
        &self,
        kind: ChallengeType,
        identifier: &Identifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Problem>;

    /// RFC 8659 CAA check for an identifier whose challenge passed. The default allows.
    async fn caa(&self, _identifier: &Identifier, _account_uri: &str, _method: ChallengeType) -> Result<(), Problem> {
        Ok(())
    }
}

/// Why the validator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ValidationSetupError {
    #[error("DNS resolver: {0}")]
    Resolver(String),
    #[error("HTTP client: {0}")]
    Http(String),
}

/// The network validator: one shared resolver and one shared HTTP client.
#[derive(Debug)]
pub struct NetValidator {
    http01: http01::Http01,
    tls_alpn01: tls_alpn01::TlsAlpn01,
    resolver: std::sync::Arc<Resolver>,
    caa_identities: Vec<String>,
}

impl NetValidator {
    pub fn new(settings: ValidationSettings) -> Result<Self, ValidationSetupError> {
        // Half the attempt for DNS, so a dead nameserver is reported as a DNS problem before the
        // attempt's own timeout (which covers resolving, connecting and reading) fires.
        let resolver = std::sync::Arc::new(Resolver::new(&settings.nameservers, settings.timeout / 2)?);
        let targets = std::sync::Arc::new(TargetPolicy::new(settings.allowed_targets.clone()));
        let tls_alpn01 =
            tls_alpn01::TlsAlpn01::new(resolver.clone(), targets, settings.tls_alpn01_port, settings.timeout);
        let caa_identities = settings.caa_identities.clone();
        Ok(Self { http01: http01::Http01::new(&settings, resolver.clone())?, tls_alpn01, resolver, caa_identities })
    }
}

#[async_trait::async_trait]
impl Validator for NetValidator {
    async fn validate(
        &self,
        kind: ChallengeType,
        identifier: &Identifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Problem> {
        match kind {
            ChallengeType::Http01 => self.http01.validate(identifier, token, key_authorization).await,
            ChallengeType::Dns01 => dns01::validate(&self.resolver, identifier, key_authorization).await,
            ChallengeType::TlsAlpn01 => self.tls_alpn01.validate(identifier, key_authorization).await,
        }
    }

    async fn caa(&self, identifier: &Identifier, account_uri: &str, method: ChallengeType) -> Result<(), Problem> {
        caa::check(&self.resolver, &self.caa_identities, identifier, account_uri, method).await
    }
}
