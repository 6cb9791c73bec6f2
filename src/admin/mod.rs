//! The admin dashboard: server-rendered, read-only pages on a listener of their own
//! (`[admin] listen`, HTTPS with the serving certificate). The ACME listener never routes here.
//!
//! Who may look: requests from loopback as they are; from any other address only with
//! `Authorization: Bearer <token>` (`[admin] token_file`), compared in constant time; without a
//! token file, only loopback. Every answer carries a strict CSP (no script at all, styles and
//! images only from this origin or inline SVG), no framing, no caching, no referrer.
//!
//! Read-only on purpose: a page that can deactivate an account or revoke a certificate is a
//! target for cross-site requests from any page the operator's browser opens, and loopback is
//! free. Changes go through the CLI (`vacme accounts deactivate`, `vacme certs revoke`), which needs
//! the configuration and the store, and leaves its own audit event.

mod pages;

use std::{net::IpAddr, sync::Arc};

use axum::{
    Router,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderValue, StatusCode, header};

/// The peer address the listener records on each request (what the access rule reads).
pub use crate::policy::ratelimit::ClientAddr;
use crate::{acme::renewal::WindowPercents, state::AppState};

/// What the pages read: the server's shared state and the few settings they show.
#[derive(Clone, Debug)]
pub struct Admin {
    pub st: AppState,
    pub window: WindowPercents,
    /// SHA-256 of the bearer token; `None`: loopback only.
    pub token_sha256: Option<[u8; 32]>,
    /// `vault.role`, shown for certificates whose profile names none.
    pub default_role: Option<String>,
}

impl Admin {
    /// `token`: the bearer token other addresses must send (`None`: loopback only).
    pub fn new(st: AppState, window: WindowPercents, token: Option<&str>, default_role: Option<String>) -> Self {
        Self { st, window, token_sha256: token.map(|t| sha256(t.as_bytes())), default_role }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// The dashboard's routes, behind the access check and the security headers.
pub fn router(admin: Admin) -> Router {
    let admin = Arc::new(admin);
    Router::new()
        .route("/", get(pages::overview))
        .route("/certificates", get(pages::certificates))
        .route("/certificates/{id}", get(pages::certificate))
        .route("/failures", get(pages::failures))
        .route("/accounts", get(pages::accounts))
        .route("/audit", get(pages::audit))
        .route("/admin.css", get(pages::stylesheet))
        .route("/favicon.svg", get(pages::icon))
        .route("/favicon.ico", get(pages::icon))
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(admin.clone(), access))
        .layer(middleware::map_response(security_headers))
        .with_state(admin)
}

/// Loopback is served; any other address needs the bearer token.
async fn access(State(admin): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    let from = req.extensions().get::<ClientAddr>().map(|c| c.0);
    if from.is_some_and(|ip| is_loopback(&ip)) {
        return next.run(req).await;
    }
    let Some(want) = admin.token_sha256 else {
        return (StatusCode::FORBIDDEN, "the dashboard answers loopback only (set [admin] token_file)\n")
            .into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| sha256(t.trim().as_bytes()));
    match given {
        Some(g) if bool::from(subtle::ConstantTimeEq::ct_eq(&g[..], &want[..])) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vacme admin\""))],
            "a bearer token is needed from this address\n",
        )
            .into_response(),
    }
}

/// `127.0.0.0/8`, `::1`, and IPv4 loopback written as IPv6 (`::ffff:127.0.0.1`).
fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// The same strict headers on every answer, the refusals included.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_in_every_spelling() {
        for ip in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "::ffff:10.0.0.1", "fe80::1", "0.0.0.0"] {
            assert!(!is_loopback(&ip.parse().unwrap()), "{ip}");
        }
    }
}
