//! Which revocation reasons a subscriber may give (revokeCert and `vacme certs revoke`).

use crate::acme::{Problem, ProblemType};

/// RFC 5280 §5.3.1 reasons a subscriber may give: unspecified, keyCompromise,
/// affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn. The others
/// (cACompromise, certificateHold, removeFromCRL, aACompromise) are the CA's to state.
pub const SUBSCRIBER_REASONS: &[u8] = &[0, 1, 3, 4, 5, 9];

/// `badRevocationReason` unless the reason is one a subscriber may give (absent means 0).
pub fn check_reason(reason: Option<i64>) -> Result<u8, Problem> {
    let r = reason.unwrap_or(0);
    match u8::try_from(r) {
        Ok(r) if SUBSCRIBER_REASONS.contains(&r) => Ok(r),
        _ => Err(Problem::new(
            ProblemType::BadRevocationReason,
            format!("revocation reason {r} is not accepted; use one of {SUBSCRIBER_REASONS:?} (RFC 5280 §5.3.1)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(check_reason(None).unwrap(), 0);
        assert_eq!(check_reason(Some(1)).unwrap(), 1);
        for bad in [2, 6, 7, 8, 10, 11, -1, 300] {
            assert_eq!(check_reason(Some(bad)).unwrap_err().kind.code(), "badRevocationReason", "{bad}");
        }
    }
}
