//! RFC 8555 vocabulary: wire types, identifiers, problems and derived statuses. No I/O.

pub mod ari;
pub mod identifier;
pub mod problem;
mod status;
pub mod types;
pub mod urls;

pub use identifier::{Identifier, RawIdentifier};
pub use problem::{Problem, ProblemType, Subproblem};
pub use urls::Urls;
