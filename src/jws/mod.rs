//! Request authentication (RFC 8555 §6.2, RFC 7515/7517/7638): bytes in, a checked JWS or a Problem out.
//! Verification uses `ring` directly; no JOSE library sees the request first.

pub mod eab;
pub mod extract;
mod jwk;
pub mod keychange;
pub mod nonce;
mod parse;
mod verify;

pub use jwk::PublicJwk;
pub(crate) use parse::Flattened;
pub use parse::{Alg, Jws, KeySource, Protected, parse};

/// What vacme accepts, in the order advertised in `badSignatureAlgorithm` problems.
pub const ALGORITHMS: &[&str] = &["ES256", "ES384", "RS256", "PS256", "EdDSA"];
