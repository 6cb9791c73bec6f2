//! vacme: an ACME (RFC 8555) server in front of a Vault or OpenBao PKI mount.
#![forbid(unsafe_code)]

pub mod acme;
pub mod config;
pub mod store;
