//! Statuses derived at read time (RFC 8555 §7.1.6): an object past its `expires` is shown as
//! expired without anyone having to write that down first. The clean-up job records it later.

use crate::acme::types::{AuthorizationStatus, OrderStatus};

impl OrderStatus {
    /// The status at `now` of an order stored as `self` that expires at `expires_at`: a pending
    /// or ready order past it is `invalid` (§7.1.3).
    pub fn at(self, expires_at: i64, now: i64) -> Self {
        match self {
            OrderStatus::Pending | OrderStatus::Ready if now >= expires_at => OrderStatus::Invalid,
            s => s,
        }
    }
}

impl AuthorizationStatus {
    /// The status at `now` of an authorization stored as `self` that expires at `expires_at`: a
    /// pending one past it is `expired` (§7.1.4).
    pub fn at(self, expires_at: i64, now: i64) -> Self {
        match self {
            AuthorizationStatus::Pending if now >= expires_at => AuthorizationStatus::Expired,
            s => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_objects_expire_at_their_time() {
        assert_eq!(OrderStatus::Pending.at(100, 99), OrderStatus::Pending);
        assert_eq!(OrderStatus::Ready.at(100, 100), OrderStatus::Invalid);
        assert_eq!(OrderStatus::Processing.at(100, 200), OrderStatus::Processing);
        assert_eq!(OrderStatus::Valid.at(100, 200), OrderStatus::Valid);
        assert_eq!(AuthorizationStatus::Pending.at(100, 100), AuthorizationStatus::Expired);
        assert_eq!(AuthorizationStatus::Valid.at(100, 200), AuthorizationStatus::Valid);
    }
}
