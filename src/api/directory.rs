//! The directory and newNonce (RFC 8555 §7.1.1, §7.2).

use axum::{extract::State, response::IntoResponse};
use http::{Method, StatusCode, header};

use crate::{
    acme::types::{Directory, DirectoryMeta},
    api::AcmeResponse,
    issuer::role::KeyRule,
    jws::extract::PostAsGet,
    state::AppState,
};

/// GET /directory: advertises only what is implemented.
pub async fn directory(State(st): State<AppState>) -> AcmeResponse {
    let dir = Directory {
        new_nonce: st.urls.new_nonce(),
        new_account: st.urls.new_account(),
        new_order: st.urls.new_order(),
        revoke_cert: Some(st.urls.revoke_cert()),
        key_change: Some(st.urls.key_change()),
        renewal_info: Some(st.urls.renewal_info()),
        meta: DirectoryMeta {
            website: None,
            caa_identities: st.policy.caa_identities().to_vec(),
            external_account_required: st.lifecycle.eab_required,
            profiles: st
                .lifecycle
                .profiles
                .iter()
                .map(|(k, v)| (k.clone(), with_key_policy(&v.description, &st.lifecycle.key_rules(Some(k)))))
                .collect(),
        },
    };
    AcmeResponse::json(StatusCode::OK, &dir)
}

/// A profile's description with the keys its roles take, so a client (or its operator) can read
/// them before ordering: "Short-lived (keys: ECDSA P-256+, RSA 2048+)". Unchanged when no role
/// of the profile could be read (or with the local CA).
fn with_key_policy(description: &str, rules: &[KeyRule]) -> String {
    if rules.is_empty() {
        return description.to_owned();
    }
    let keys: Vec<String> = rules.iter().map(KeyRule::short).collect();
    match description.trim() {
        "" => format!("keys: {}", keys.join(", ")),
        d => format!("{d} (keys: {})", keys.join(", ")),
    }
}

/// HEAD (200) or GET (204) /acme/new-nonce; the nonce itself is added by the nonce layer.
pub async fn new_nonce(method: Method) -> impl IntoResponse {
    let status = if method == Method::HEAD { StatusCode::OK } else { StatusCode::NO_CONTENT };
    (status, [(header::CACHE_CONTROL, "no-store")])
}

/// POST-as-GET /acme/new-nonce: 200 with a fresh nonce (from the nonce layer). RFC 8555 §7.2
/// names HEAD and GET, but §6.3 has clients use POST-as-GET for every resource they read, and
/// some send it here (Boulder and Pebble answer it). It is checked like any other POST-as-GET:
/// an account's signature and a nonce used once.
pub async fn new_nonce_post(_req: PostAsGet) -> impl IntoResponse {
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::KeyKind;

    #[test]
    fn descriptions_carry_the_key_policy() {
        let ec = KeyRule { kind: KeyKind::Ec, min_bits: 256 };
        let rsa = KeyRule { kind: KeyKind::Rsa, min_bits: 2048 };
        assert_eq!(with_key_policy("Short-lived", &[ec, rsa]), "Short-lived (keys: ECDSA P-256+, RSA 2048+)");
        assert_eq!(with_key_policy("", &[ec]), "keys: ECDSA P-256+");
        assert_eq!(with_key_policy("Short-lived", &[]), "Short-lived");
    }
}
