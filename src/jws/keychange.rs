//! The key-change request (RFC 8555 §7.3.5): an outer JWS signed by the account, whose payload
//! is an inner JWS signed by the new key. Both are checked here, in the order the RFC lists, so
//! the handler only records the new key.

use axum::extract::{FromRequest, Request};
use serde::Deserialize;

use crate::{
    acme::Problem,
    jws::{
        KeySource, PublicJwk,
        extract::{Signed, Verifier},
        parse,
    },
    store::AccountRow,
};

/// A key change whose outer and inner signatures, url, account and old key were checked.
#[derive(Debug)]
pub struct SignedKeyChange {
    /// The account, as it was when the request was checked.
    pub account: AccountRow,
    /// The key the account moves to; not its current one.
    pub new_key: PublicJwk,
}

/// The inner JWS's payload.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyChangePayload {
    account: String,
    old_key: serde_json::Value,
}

impl<S: Verifier> FromRequest<S> for SignedKeyChange {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let outer = Signed::<serde_json::Value>::from_request(req, state).await?;
        let new_key = inner_key(&outer.payload, &outer.account, state)?;
        Ok(Self { account: outer.account, new_key })
    }
}

/// The new key, once the inner JWS is signed by it, names this URL and this account, carries
/// no nonce, and names the account's current key as `oldKey`.
fn inner_key(inner: &serde_json::Value, account: &AccountRow, state: &impl Verifier) -> Result<PublicJwk, Problem> {
    let inner_bytes = serde_json::to_vec(inner).map_err(Problem::internal)?;
    let inner = parse(&inner_bytes).map_err(|p| Problem::malformed(format!("inner JWS: {}", p.detail)))?;
    let new_key = match &inner.protected.key {
        KeySource::Jwk(jwk) => jwk.clone(),
        KeySource::Kid(_) => return Err(Problem::malformed("inner JWS must carry the new key as jwk")),
    };
    inner.verify(&new_key).map_err(|p| Problem::malformed(format!("inner JWS: {}", p.detail)))?;
    if inner.protected.nonce.is_some() {
        return Err(Problem::malformed("inner JWS must not have a nonce"));
    }
    if inner.protected.url != state.urls().key_change() {
        return Err(Problem::malformed("inner JWS url must equal the outer url"));
    }
    let payload: KeyChangePayload = inner.payload_json()?;
    if payload.account != state.urls().account(&account.id) {
        return Err(Problem::unauthorized("inner payload account is not the signing account"));
    }
    let old_key = PublicJwk::from_json(&payload.old_key)
        .map_err(|p| Problem::malformed(format!("inner payload oldKey: {}", p.detail)))?;
    if old_key.thumbprint() != account.thumbprint {
        return Err(Problem::unauthorized("inner payload oldKey is not the account's current key"));
    }
    if new_key.thumbprint() == account.thumbprint {
        return Err(Problem::malformed("the new key is the account's current key"));
    }
    Ok(new_key)
}
