//! `GET /roots.pem`: the root certificate devices install (docs/trust.md). No authentication:
//! a root is public, and a device fetches it before it trusts anything. Served from memory;
//! the CA is never asked per request.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};

use crate::{
    acme::{Problem, ProblemType},
    state::AppState,
};

/// How long clients and proxies may keep the answer. A root changes rarely, and a new one shows
/// as a new fingerprint at start.
const MAX_AGE: &str = "public, max-age=3600";

/// Seconds a client should wait before asking again while the root is not known.
const RETRY_AFTER_SECS: u64 = 10;

/// GET /roots.pem: the root as `application/pem-certificate-chain` (RFC 8555 §9.1), or 503 while
/// the CA has not given it (why is in the server's log).
pub async fn roots(State(st): State<AppState>) -> Response {
    let Ok(root) = st.trust.current() else {
        let mut p = Problem::new(ProblemType::ServerInternal, "the root certificate is not known yet; try again later")
            .with_status(StatusCode::SERVICE_UNAVAILABLE);
        p.retry_after = Some(RETRY_AFTER_SECS);
        return p.into_response();
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/pem-certificate-chain")),
        (header::CACHE_CONTROL, HeaderValue::from_static(MAX_AGE)),
    ];
    (headers, root.pem().to_owned()).into_response()
}
