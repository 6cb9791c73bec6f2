//! Store rows to wire objects, with their statuses at read time (`acme::status`).

use crate::{
    acme::{self, Urls, types::ChallengeStatus},
    clock::from_unix,
    store::{AuthzRow, ChallengeRow, OrderRow},
};

/// RFC 8555 §7.1.3, with pending/ready orders past `expires` shown as `invalid`.
pub fn order(o: &OrderRow, urls: &Urls, now: i64) -> acme::types::Order {
    acme::types::Order {
        status: o.status.at(o.expires_at, now),
        expires: Some(from_unix(o.expires_at)),
        identifiers: o.identifiers.clone(),
        not_before: o.not_before.map(from_unix),
        not_after: o.not_after.map(from_unix),
        error: o.error.clone(),
        authorizations: o.authz_ids.iter().map(|id| urls.authz(id)).collect(),
        finalize: urls.finalize(&o.id),
        certificate: o.certificate_id.as_deref().map(|id| urls.certificate(id)),
        profile: o.profile.clone(),
        replaces: o.replaces.clone(),
    }
}

/// RFC 8555 §7.1.4, with a pending authorization past `expires` shown as `expired`.
pub fn authz(a: &AuthzRow, urls: &Urls, now: i64) -> acme::types::Authorization {
    acme::types::Authorization {
        identifier: a.identifier.clone(),
        status: a.status.at(a.expires_at, now),
        expires: Some(from_unix(a.expires_at)),
        challenges: a.challenges.iter().map(|c| challenge(c, urls)).collect(),
        wildcard: a.wildcard,
    }
}

/// RFC 8555 §8.
pub fn challenge(c: &ChallengeRow, urls: &Urls) -> acme::types::Challenge {
    acme::types::Challenge {
        kind: c.kind,
        url: urls.challenge(&c.id),
        status: c.status,
        token: c.token.clone(),
        validated: c.validated_at.map(from_unix),
        // While retrying, the last attempt's error helps the owner fix things before it turns final.
        error: if c.status == ChallengeStatus::Valid { None } else { c.error.clone() },
    }
}
