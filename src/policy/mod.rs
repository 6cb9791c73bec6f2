//! Admission: which orders may be made and how they are signed. Identifiers and the names and
//! addresses allowed (`names`), an EAB key's scope (`scope`), the profile and role an order is
//! signed with (`profile`), and the rate limits (`ratelimit`). Handlers and jobs ask here; none
//! decides on its own.

pub mod admit;
mod names;
pub mod profile;
pub mod ratelimit;
pub mod reasons;
pub mod scope;

pub use admit::Admission;
pub use names::Policy;
pub use profile::Lifecycle;
