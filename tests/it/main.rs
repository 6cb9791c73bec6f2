//! Integration tests: the production router and workers, a real SQLite store, the local CA,
//! and instant-acme (or hand-made JWS) as the client. Names under `.localhost` resolve to
//! loopback, where each test runs its own http-01 responder.

// A test binary: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adversarial;
mod bad_input;
mod browser;
mod challenges;
mod cli;
mod dashboard;
#[path = "../support/dns.rs"]
mod dns;
mod edges;
mod election;
mod env;
mod flow;
mod hostile_csr;
mod layers;
mod lifecycle;
mod limits;
mod notify;
mod observe;
#[path = "../support/pgdb.rs"]
mod pgdb;
mod postgres;
mod recheck;
mod redaction;
mod renewal_state;
mod targets;
mod tls;
mod trust;
mod upgrade;
