//! Liveness, readiness and metrics, outside ACME.

use axum::{Json, extract::State, response::IntoResponse};
use http::StatusCode;
use serde_json::json;

use crate::{
    metrics::{Gauges, VaultGauges},
    state::AppState,
};

/// GET /healthz: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// GET /readyz: the store and the CA answer. 503 with the failing part otherwise. With Vault,
/// `issuer.roles` lists the roles that need the operator's attention (the answer stays 200).
pub async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let store = st.store.ping().await.map_err(|e| e.to_string());
    let issuer = st.issuer.health().await.map_err(|e| e.to_string());
    let ready = store.is_ok() && issuer.is_ok();
    if let Err(e) = &issuer {
        tracing::warn!(issuer = st.issuer.name(), error = %e, "CA not ready");
    }
    if let Err(e) = &store {
        tracing::warn!(error = %e, "store not ready");
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness(&st, ready, store.is_ok(), issuer.is_ok())))
}

/// The body of `/readyz`. Roles that cannot be read or that take names from the CSR are
/// reported, not failed: vacme keeps signing safely (the strict CSR reader and the post-sign
/// check still hold).
fn readiness(st: &AppState, ready: bool, store: bool, issuer: bool) -> serde_json::Value {
    let state = |ok: bool| if ok { "ok" } else { "unavailable" };
    let mut body = json!({
        "ready": ready,
        "store": state(store),
        "issuer": { "kind": st.issuer.name(), "state": state(issuer) },
    });
    if let Some(e) = st.issuer.endpoint() {
        body["issuer"]["address"] = json!(e.addresses.get(e.in_use));
        body["issuer"]["addresses"] = json!(e.addresses.len());
        body["issuer"]["failovers"] = json!(e.failovers);
    }
    let roles = st.lifecycle.roles.report();
    if !roles.is_empty() {
        body["issuer"]["roles"] = json!(roles);
    }
    body
}

/// GET /metrics: Prometheus text exposition (docs/operations.md lists the series).
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let mut g = Gauges { nonces: st.nonces.outstanding().await.ok(), ..Gauges::default() };
    g.vault =
        st.issuer.endpoint().map(|e| VaultGauges { addresses: e.addresses, in_use: e.in_use, failovers: e.failovers });
    if let Ok((challenges, orders)) = st.store.queue_depths().await {
        (g.challenges_processing, g.orders_processing) = (challenges, orders);
    }
    // Counters the store keeps, not a count of rows per scrape.
    if let Ok((accounts, certificates)) = st.store.totals().await {
        (g.accounts, g.certificates) = (accounts, certificates);
    }
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], st.metrics.render(&g))
}
