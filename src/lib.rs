//! vacme: an ACME (RFC 8555) server in front of a Vault or OpenBao PKI mount.
#![forbid(unsafe_code)]

pub mod acme;
pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod issuer;
pub mod jobs;
pub mod jws;
pub mod metrics;
pub mod policy;
pub mod secret;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validation;

pub use app::App;
