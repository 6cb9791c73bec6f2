//! The IDs of ACME objects as they appear in their URLs (`/acme/order/<id>`). Each kind is its
//! own type, so an order's ID cannot be passed where an authorization's is meant. Any text is
//! accepted (an unknown ID is a 404 from the store, not a parse error), and none is ever echoed
//! in a problem.

use std::{fmt, ops::Deref};

use serde::Deserialize;

macro_rules! object_id {
    ($($(#[$doc:meta])* $name:ident),+ $(,)?) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )+};
}

object_id! {
    /// An account (`/acme/acct/<id>`).
    AccountId,
    /// An order (`/acme/order/<id>`).
    OrderId,
    /// An authorization (`/acme/authz/<id>`).
    AuthzId,
    /// A challenge (`/acme/chall/<id>`).
    ChallengeId,
    /// A certificate (`/acme/cert/<id>`).
    CertificateId,
}
