//! Background work: everything vacme does outside a request.

pub mod cleanup;
pub mod issuance;
pub mod revocation;
pub mod validation;
