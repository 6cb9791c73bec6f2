//! vacme: an ACME (RFC 8555) server in front of a Vault or OpenBao PKI mount.
//!
//! `docs/architecture.md` is the map. A request enters at `api::router`, is authenticated by
//! `jws`, admitted by `policy`, recorded by `store`; the `jobs` validate, sign and revoke outside
//! the request. The modules are private; what the binaries and tests use is re-exported here or
//! lives in the public `acme` (wire vocabulary), `config`, `cli`, `jws` and `store` modules.
#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
mod api;
mod app;
pub mod cli;
mod clock;
pub mod config;
mod conn;
mod issuer;
mod jobs;
pub mod jws;
mod metrics;
mod policy;
mod secret;
mod state;
pub mod store;
mod telemetry;
mod tls;
mod validation;

pub use app::{App, roles_note};
pub use clock::from_unix;
pub use issuer::{IssuanceRequest, KeyPolicy, Root, SignTarget, VaultAuth, VaultIssuer, VaultSettings};
pub use jobs::cleanup::Cleanup;
pub use jobs::renewal_state::RenewalStateRefresh;
pub use secret::Secret;
pub use state::AppState;
pub use telemetry::init as init_telemetry;
pub use validation::Resolver;
