//! RFC 8555 vocabulary: wire types, identifiers, problems and derived statuses. No I/O.

pub mod ari;
pub mod identifier;
pub mod ids;
pub mod problem;
mod problem_type;
pub mod renewal;
pub mod serial;
mod status;
pub mod types;
pub mod urls;

pub use identifier::{Identifier, RawIdentifier};
pub use problem::{Problem, ProblemType, Subproblem};
pub use serial::Serial;
pub use urls::Urls;
