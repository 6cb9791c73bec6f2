//! The axum extractors that turn a POST body into an authenticated request. A value of any of
//! these types exists only after the JWS shape, nonce, url and signature were checked
//! (RFC 8555 §6.2-6.5); the extractor's type names the authentication mode.

use std::time::Duration;

use axum::extract::{FromRequest, Request};
use http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use tracing::Span;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::{
    acme::{Problem, ProblemType, Urls, types::AccountStatus},
    jws::{Jws, KeySource, PublicJwk, nonce::Nonces, parse},
    store::{AccountRow, Store},
};

/// What authenticating a request needs from the application (the server state implements it).
pub trait Verifier: Send + Sync {
    /// Where accounts are looked up.
    fn store(&self) -> &Store;
    /// Where nonces are redeemed.
    fn nonces(&self) -> &Nonces;
    /// The URLs a signed `url` must equal.
    fn urls(&self) -> &Urls;
    /// The current time (Unix seconds).
    fn now(&self) -> i64;
    /// Largest JWS body accepted.
    fn max_body_bytes(&self) -> usize;
    /// Longest time from a request's head to its response; the body must arrive in half of it.
    fn request_timeout(&self) -> Duration;
}

/// Signed by an existing, valid account (`kid`), with a JSON payload.
#[derive(Debug)]
pub struct Signed<T> {
    pub account: AccountRow,
    pub payload: T,
}

/// Signed by a key given inline (`jwk`): newAccount (and revocation by certificate key).
#[derive(Debug)]
pub struct SignedJwk<T> {
    pub jwk: PublicJwk,
    pub payload: T,
    /// The request URL, which an inner JWS (EAB, key change) must repeat.
    pub url: String,
}

/// Who signed a request that takes either (revokeCert, RFC 8555 §7.6).
#[derive(Debug)]
pub enum Signer {
    /// A valid account, by `kid`.
    Account(AccountRow),
    /// A key given inline (`jwk`): the certificate's own key.
    Key(PublicJwk),
}

impl Signer {
    /// RFC 8555 §7.6: a certificate may be revoked by the account it was issued to
    /// (`owner_account_id`) or with its own key (`spki`); anyone else is `unauthorized`.
    pub fn may_revoke(&self, owner_account_id: &str, spki: &SubjectPublicKeyInfo<'_>) -> Result<(), Problem> {
        match self {
            Signer::Account(acct) if acct.id != owner_account_id => {
                Err(Problem::unauthorized("this certificate was issued to another account"))
            }
            Signer::Key(jwk) if !jwk.is_key_of(spki) => {
                Err(Problem::unauthorized("the request is signed neither by the account nor by the certificate's key"))
            }
            _ => Ok(()),
        }
    }

    /// Who is named as the actor in the audit trail.
    pub fn actor(&self) -> String {
        match self {
            Signer::Account(acct) => format!("account:{}", acct.id),
            Signer::Key(_) => "certificate-key".to_owned(),
        }
    }
}

/// Signed by an account (`kid`) or by an inline key (`jwk`), with a JSON payload.
#[derive(Debug)]
pub struct SignedAny<T> {
    pub signer: Signer,
    pub payload: T,
}

/// A POST-as-GET (RFC 8555 §6.3): signed by a valid account, empty payload.
#[derive(Debug)]
pub struct PostAsGet {
    pub account: AccountRow,
}

/// Signed by a valid account; `None` for POST-as-GET, else the JSON payload (challenge, account and
/// authorization URLs take both).
#[derive(Debug)]
pub struct SignedOrGet {
    pub account: AccountRow,
    pub payload: Option<serde_json::Value>,
}

/// Content type, body size, JWS shape, nonce and url: everything but the key.
async fn read(req: Request, state: &impl Verifier) -> Result<Jws, Problem> {
    let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/jose+json") {
        return Err(Problem::new(ProblemType::UnsupportedMediaType, "Content-Type must be application/jose+json"));
    }
    // The signed url covers the query too (the orders list's page cursor).
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    // A slow sender gets half the request's time for its body, so the answer can still be sent.
    let body_time = state.request_timeout() / 2;
    let max_body = state.max_body_bytes();
    let body = match tokio::time::timeout(body_time, axum::body::to_bytes(req.into_body(), max_body)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return Err(Problem::new(
                ProblemType::PayloadTooLarge,
                format!("request body larger than {max_body} bytes or unreadable"),
            ));
        }
        Err(_) => {
            return Err(Problem::malformed(format!("request body not received within {} s", body_time.as_secs()))
                .with_status(http::StatusCode::REQUEST_TIMEOUT));
        }
    };
    let jws = parse(&body)?;
    // RFC 8555 §6.5: every request carries a nonce, accepted once, on any replica.
    let nonce = jws.protected.nonce.as_deref().ok_or_else(Problem::bad_nonce)?;
    if !state.nonces().redeem(nonce, state.now()).await? {
        return Err(Problem::bad_nonce());
    }
    // RFC 8555 §6.4: the signed url must be this request's URL, so a signature can't be replayed elsewhere.
    if jws.protected.url != state.urls().absolute(&path) {
        return Err(Problem::unauthorized("JWS url header does not match the request URL"));
    }
    Ok(jws)
}

/// The valid account named by `kid`, whose key signed the request.
async fn by_kid(jws: &Jws, state: &impl Verifier) -> Result<AccountRow, Problem> {
    let kid = match &jws.protected.key {
        KeySource::Kid(kid) => kid,
        KeySource::Jwk(_) => {
            return Err(Problem::malformed("this request must be signed with kid, not jwk"));
        }
    };
    let id = state
        .urls()
        .account_id_of_kid(kid)
        .ok_or_else(|| Problem::account_does_not_exist("kid is not an account URL of this server"))?;
    let account =
        state.store().account(id).await?.ok_or_else(|| Problem::account_does_not_exist("no account with this kid"))?;
    let key = PublicJwk::from_json(&account.jwk).map_err(Problem::internal)?;
    jws.verify(&key)?;
    // Checked after the signature, so the answer tells nothing to someone without the key.
    if account.status != AccountStatus::Valid {
        return Err(Problem::unauthorized(format!("account is {}", account.status)));
    }
    Span::current().record("account_id", account.id.as_str());
    Ok(account)
}

impl<T: DeserializeOwned + Send, S: Verifier> FromRequest<S> for Signed<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let jws = read(req, state).await?;
        let account = by_kid(&jws, state).await?;
        if jws.is_post_as_get() {
            return Err(Problem::malformed("this request needs a JSON payload, not POST-as-GET"));
        }
        Ok(Self { account, payload: jws.payload_json()? })
    }
}

impl<T: DeserializeOwned + Send, S: Verifier> FromRequest<S> for SignedJwk<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let jws = read(req, state).await?;
        let jwk = match &jws.protected.key {
            KeySource::Jwk(jwk) => jwk.clone(),
            KeySource::Kid(_) => {
                return Err(Problem::malformed("this request must be signed with jwk, not kid"));
            }
        };
        jws.verify(&jwk)?;
        let url = jws.protected.url.clone();
        Ok(Self { jwk, payload: jws.payload_json()?, url })
    }
}

impl<S: Verifier> FromRequest<S> for PostAsGet {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let jws = read(req, state).await?;
        let account = by_kid(&jws, state).await?;
        if !jws.is_post_as_get() {
            return Err(Problem::malformed("POST-as-GET requests must have an empty payload"));
        }
        Ok(Self { account })
    }
}

impl<S: Verifier> FromRequest<S> for SignedOrGet {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let jws = read(req, state).await?;
        let account = by_kid(&jws, state).await?;
        let payload = if jws.is_post_as_get() { None } else { Some(jws.payload_json()?) };
        Ok(Self { account, payload })
    }
}

impl<T: DeserializeOwned + Send, S: Verifier> FromRequest<S> for SignedAny<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let jws = read(req, state).await?;
        let signer = match &jws.protected.key {
            KeySource::Jwk(jwk) => {
                jws.verify(jwk)?;
                Signer::Key(jwk.clone())
            }
            KeySource::Kid(_) => Signer::Account(by_kid(&jws, state).await?),
        };
        if jws.is_post_as_get() {
            return Err(Problem::malformed("this request needs a JSON payload, not POST-as-GET"));
        }
        Ok(Self { signer, payload: jws.payload_json()? })
    }
}
