//! newOrder, order and finalize (RFC 8555 §7.4). The CA is never called from here: finalize
//! records the checked CSR and the issuance worker signs it.

use axum::{
    Extension,
    extract::{Path, State},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, StatusCode, header::USER_AGENT};
use tracing::Span;

use crate::{
    acme::ids::OrderId,
    acme::{
        Identifier, Problem, ProblemType,
        types::{FinalizeRequest, NewOrderRequest, OrderStatus},
    },
    api::{AcmeResponse, render},
    jws::extract::{PostAsGet, Signed},
    policy::ratelimit::ClientAddr,
    state::AppState,
    store::{AuditEvent, OrderClient, OrderRow},
};

/// POST /acme/new-order: admitted by `policy::Admission`; a refusal of names (policy, scope,
/// rate limits) is audited. The order records who asked (`User-Agent` and address).
pub async fn new_order(
    State(st): State<AppState>,
    addr: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    req: Signed<NewOrderRequest>,
) -> Result<AcmeResponse, Problem> {
    let admission = &st.admission;
    let mut new = match admission.new_order(&req.account, &req.payload, st.clock.unix()).await {
        Ok(new) => new,
        Err(p) => return Err(refused(&st, &req, admission.asked(&req.payload), addr, p).await),
    };
    let ua = headers.get(USER_AGENT).map(HeaderValue::as_bytes);
    new.client = OrderClient::new(ua, addr.map(|Extension(ClientAddr(ip))| ip));
    let now = st.clock.unix();
    let order =
        st.store.create_order(&req.account.id, &new, now, now + st.limits.order_ttl_secs).await?.ok_or_else(|| {
            Problem::new(ProblemType::AlreadyReplaced, "another order already replaces this certificate")
        })?;
    Span::current().record("order_id", order.id.as_str());
    Ok(AcmeResponse::json(StatusCode::CREATED, &render::order(&order, &st.urls, now))
        .location(st.urls.order(&order.id)))
}

/// Audits a refusal of names (policy, scope, rate limits) and hands the problem back.
async fn refused(
    st: &AppState,
    req: &Signed<NewOrderRequest>,
    asked: Vec<Identifier>,
    addr: Option<Extension<ClientAddr>>,
    p: Problem,
) -> Problem {
    let names = [ProblemType::RejectedIdentifier, ProblemType::UnsupportedIdentifier, ProblemType::RateLimited];
    if names.contains(&p.kind) {
        AuditEvent::by_account("order_refused", &req.account.id)
            .identifiers(&asked)
            .client_ip(addr.map(|Extension(ClientAddr(ip))| ip))
            .detail(format!("{}: {}", p.kind.code(), p.detail))
            .record(&st.store, st.clock.unix())
            .await;
    }
    p
}

/// The caller's order, or 404: another account's order is indistinguishable from none.
pub(crate) async fn own_order(st: &AppState, account_id: &str, id: &OrderId) -> Result<OrderRow, Problem> {
    match st.store.order(id).await? {
        Some(o) if o.account_id == account_id => Ok(o),
        _ => Err(Problem::not_found("no such order")),
    }
}

fn respond(st: &AppState, order: &OrderRow) -> AcmeResponse {
    let res = AcmeResponse::json(StatusCode::OK, &render::order(order, &st.urls, st.clock.unix()))
        .location(st.urls.order(&order.id));
    if order.status == OrderStatus::Processing { res.retry_after(st.limits.retry_after_secs) } else { res }
}

/// POST-as-GET /acme/order/{id}.
pub async fn order(
    State(st): State<AppState>,
    Path(id): Path<OrderId>,
    req: PostAsGet,
) -> Result<AcmeResponse, Problem> {
    Span::current().record("order_id", id.as_str());
    let order = own_order(&st, &req.account.id, &id).await?;
    Ok(respond(&st, &order))
}

/// POST /acme/order/{id}/finalize.
pub async fn finalize(
    State(st): State<AppState>,
    Path(id): Path<OrderId>,
    req: Signed<FinalizeRequest>,
) -> Result<AcmeResponse, Problem> {
    Span::current().record("order_id", id.as_str());
    let order = own_order(&st, &req.account.id, &id).await?;
    let now = st.clock.unix();
    if order.status.at(order.expires_at, now) != OrderStatus::Ready {
        return Err(Problem::order_not_ready(format!("order is {}, not ready", order.status)));
    }
    let der = URL_SAFE_NO_PAD
        .decode(req.payload.csr.trim_end_matches('='))
        .map_err(|_| Problem::malformed("csr is not base64url"))?;
    // badCSR here, before anything is written (a Vault refusal after this point would make the
    // order invalid; RFC 8555 §7.4 lets a ready order be finalized again with another CSR).
    if let Err(p) = st.admission.finalize(&order, &der, now) {
        return Err(finalize_refused(&st, &order, p, now).await);
    }
    let order = issue(&st, &id, &der, now).await?;
    Ok(respond(&st, &order))
}

/// Records the checked CSR, wakes the issuance job and waits (briefly) for it, so a healthy CA
/// answers `valid` without a poll round trip.
async fn issue(st: &AppState, id: &OrderId, der: &[u8], now: i64) -> Result<OrderRow, Problem> {
    let mut issued = st.wake.issued.subscribe();
    if !st.store.begin_issuance(id, der, now).await? {
        return Err(Problem::order_not_ready("order is no longer ready"));
    }
    st.wake.issuance.notify_one();
    wait_for_issuance(st, id, &mut issued).await
}

/// Audits a CSR refused at finalize and hands the problem back.
async fn finalize_refused(st: &AppState, order: &OrderRow, p: Problem, now: i64) -> Problem {
    AuditEvent::by_account("finalize_refused", &order.account_id)
        .order(&order.id)
        .identifiers(&order.identifiers)
        .detail(format!("{}: {}", p.kind.code(), p.detail))
        .record(&st.store, now)
        .await;
    p
}

/// Waits until the issuance job finished the order, or `finalize_wait` passed.
async fn wait_for_issuance(
    st: &AppState,
    id: &str,
    issued: &mut tokio::sync::watch::Receiver<u64>,
) -> Result<OrderRow, Problem> {
    let deadline = tokio::time::Instant::now() + st.limits.finalize_wait;
    loop {
        let order = st.store.order(id).await?.ok_or_else(|| Problem::not_found("no such order"))?;
        if order.status != OrderStatus::Processing {
            return Ok(order);
        }
        match tokio::time::timeout_at(deadline, issued.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(order),
        }
    }
}
