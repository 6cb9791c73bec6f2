//! Routes and the layers that apply to every ACME response: a fresh `Replay-Nonce`,
//! `Link: <directory>;rel="index"`, `Cache-Control: no-store`, problem logging, and a
//! panic catcher that answers `serverInternal` instead of dropping the connection.

mod account;
mod authz;
mod certificate;
mod directory;
mod health;
mod order;
mod render;
mod renewal;
mod response;
mod revoke;
mod trust;

use std::sync::atomic::{AtomicU64, Ordering};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::{HeaderValue, header};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};
use tracing::{Level, field::Empty};

pub use response::AcmeResponse;

use crate::{
    acme::{Problem, ProblemType, urls::ACME},
    state::AppState,
};

/// The whole HTTP surface of vacme.
pub fn router(state: AppState) -> Router {
    let acme = Router::new()
        .route("/directory", get(directory::directory).fallback(method_not_allowed))
        .route(
            &format!("{ACME}/new-nonce"),
            get(directory::new_nonce)
                .head(directory::new_nonce)
                .post(directory::new_nonce_post)
                .fallback(method_not_allowed),
        )
        .route(&format!("{ACME}/new-account"), post(account::new_account).fallback(method_not_allowed))
        .route(&format!("{ACME}/new-order"), post(order::new_order).fallback(method_not_allowed))
        .route(&format!("{ACME}/acct/{{id}}"), post(account::account).fallback(method_not_allowed))
        .route(&format!("{ACME}/acct/{{id}}/orders"), post(account::orders).fallback(method_not_allowed))
        .route(&format!("{ACME}/order/{{id}}"), post(order::order).fallback(method_not_allowed))
        .route(&format!("{ACME}/order/{{id}}/finalize"), post(order::finalize).fallback(method_not_allowed))
        .route(&format!("{ACME}/authz/{{id}}"), post(authz::authz).fallback(method_not_allowed))
        .route(&format!("{ACME}/chall/{{id}}"), post(authz::challenge).fallback(method_not_allowed))
        .route(&format!("{ACME}/cert/{{id}}"), post(certificate::certificate).fallback(method_not_allowed))
        .route(&format!("{ACME}/revoke-cert"), post(revoke::revoke_cert).fallback(method_not_allowed))
        .route(&format!("{ACME}/key-change"), post(account::key_change).fallback(method_not_allowed))
        .route(&format!("{ACME}/renewal-info/{{id}}"), get(renewal::renewal_info).fallback(method_not_allowed_get))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), acme_headers));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/roots.pem", get(trust::roots).fallback(method_not_allowed_get))
        .merge(acme)
        .layer(middleware::from_fn_with_state(state.clone(), bounded))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(CatchPanicLayer::custom(|_| {
            Problem::internal(std::io::Error::other("a request handler panicked")).into_response()
        }))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::not_found("no such resource")
}

async fn method_not_allowed() -> Response {
    let mut res = Problem::new(ProblemType::MethodNotAllowed, "method not allowed on this resource").into_response();
    res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    res
}

async fn method_not_allowed_get() -> Response {
    let mut res = Problem::new(ProblemType::MethodNotAllowed, "method not allowed on this resource").into_response();
    res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
    res
}

fn request_span(req: &Request) -> tracing::Span {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let path = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
    tracing::span!(
        Level::INFO,
        "request",
        method = %req.method(),
        matched_path = path,
        request_id = NEXT_ID.fetch_add(1, Ordering::Relaxed),
        account_id = Empty,
        order_id = Empty,
    )
}

/// RFC 8555 §6.5 (a fresh nonce on every response, including errors, so `badNonce` can be retried),
/// §7.1 (`Link` to the directory) and no caching of protocol state.
async fn acme_headers(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    match st.nonces.issue(st.clock.unix()).await {
        Ok(nonce) => {
            if let Ok(v) = HeaderValue::from_str(&nonce) {
                res.headers_mut().insert("replay-nonce", v);
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot issue a nonce"),
    }
    let index = format!("<{}>;rel=\"index\"", st.urls.directory());
    if let Ok(v) = HeaderValue::from_str(&index) {
        res.headers_mut().append(header::LINK, v);
    }
    res.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    res
}

/// Request limits that apply before any handler: the length of the request target, and the
/// time from the request's head to its response.
async fn bounded(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > st.limits.max_url_bytes {
        return Problem::malformed(format!("request target longer than {} bytes", st.limits.max_url_bytes))
            .with_status(http::StatusCode::URI_TOO_LONG)
            .into_response();
    }
    let limit = st.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            let mut p = Problem::new(
                ProblemType::ServerInternal,
                format!("the request was not answered within {} s; try again", limit.as_secs()),
            )
            .with_status(http::StatusCode::SERVICE_UNAVAILABLE);
            p.retry_after = Some(1);
            p.into_response()
        }
    }
}

/// Counts each answer by route and status, and logs and counts each problem once, inside the
/// request span: 4xx at debug, `serverInternal` at error with its cause.
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    // The route, never the URL: object IDs would make one series per order.
    let resource = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let res = next.run(req).await;
    st.metrics.request(&resource, res.status().as_u16());
    if let Some(p) = res.extensions().get::<Problem>() {
        st.metrics.problem(p.kind.code());
        if p.kind == ProblemType::ServerInternal {
            let cause = p.source_error().map(|e| e.to_string()).unwrap_or_default();
            tracing::error!(problem_type = p.kind.code(), cause = %cause, "request failed");
        } else {
            tracing::debug!(problem_type = p.kind.code(), status = p.status, detail = %p.detail, "problem");
        }
    }
    res
}
