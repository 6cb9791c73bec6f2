//! Background work: everything vacme does outside a request, each job written against the one
//! runner in `runner.rs` (claim with a lease, bounded slots, wake-up, poll, drain, metrics).
//!
//! - `validation`: answered challenges, claimed from the store and checked (RFC 8555 §8).
//! - `issuance`: finalized orders, claimed from the store and signed by the CA.
//! - `revocation`: recorded revocations pushed to the CA (queued by revokeCert, and the retries
//!   for a certificate the CA signed wrongly).
//! - `renewal`: the renewal-info question "did the CA revoke this serial?", asked of the CA.
//! - `cleanup`: the periodic run that closes, deletes and pushes what is still pending.
//! - `ca_health`: the CA's health every 30 s, for `/metrics`.
//! - `notify`: the audit trail's events, delivered to the configured webhooks.
//! - `renewal_state`: the periodic count of certificates per renewal state, for `/metrics`.
//!
//! Handlers record intent in the store and wake a job (or queue it and wait briefly); no handler
//! calls the CA.

pub mod ca_health;
pub mod cleanup;
pub mod issuance;
pub mod notify;
pub mod renewal;
pub mod renewal_state;
pub mod revocation;
mod runner;
pub mod validation;
mod wake;

pub use runner::{Job, MemoryQueue, Outcome, Periodic, RENEWED_LEASE_SECS, Runner, Slots, backoff};
pub use wake::Wake;
