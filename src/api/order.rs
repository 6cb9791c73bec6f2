//! newOrder, order and finalize (RFC 8555 §7.4). The CA is never called from here: finalize
//! records the checked CSR and the issuance worker signs it.

use std::collections::BTreeSet;

use axum::{
    Extension,
    extract::{Path, State},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::StatusCode;
use tracing::Span;

use crate::{
    acme::{
        Identifier, Problem, ProblemType, Subproblem, ari,
        types::{FinalizeRequest, NewOrderRequest, OrderStatus},
    },
    api::{AcmeResponse, render},
    audit::AuditEvent,
    issuer::IssuanceRequest,
    jws::extract::{PostAsGet, Signed},
    policy::ratelimit::{self, ClientAddr},
    policy::scope::scope_allows,
    state::AppState,
    store::{AccountRow, EabKeyRow, NewAuthz, NewOrder, OrderRow},
};

/// POST /acme/new-order. A refusal of names (policy, scope, rate limits) is audited.
pub async fn new_order(
    State(st): State<AppState>,
    addr: Option<Extension<ClientAddr>>,
    req: Signed<NewOrderRequest>,
) -> Result<AcmeResponse, Problem> {
    Span::current().record("account_id", req.account.id.as_str());
    let account_id = req.account.id.clone();
    let asked: Vec<Identifier> = req
        .payload
        .identifiers
        .iter()
        .take(st.policy.max_identifiers())
        .filter_map(|raw| Identifier::parse(raw).ok())
        .collect();
    let result = create_order(&st, req).await;
    if let Err(p) = &result
        && matches!(
            p.kind,
            ProblemType::RejectedIdentifier | ProblemType::UnsupportedIdentifier | ProblemType::RateLimited
        )
    {
        AuditEvent::by_account("order_refused", &account_id)
            .identifiers(&asked)
            .client_ip(addr.map(|Extension(ClientAddr(ip))| ip))
            .detail(format!("{}: {}", p.kind.code(), p.detail))
            .record(&st.store, st.clock.unix())
            .await;
    }
    result
}

async fn create_order(st: &AppState, req: Signed<NewOrderRequest>) -> Result<AcmeResponse, Problem> {
    let identifiers = parse_identifiers(&req.payload, st.policy.max_identifiers())?;
    st.policy.check(&identifiers)?;
    let binding = eab_key_of(st, &req.account).await?;
    if let Some(key) = &binding {
        check_scope(key, &identifiers)?;
    }
    let profile = choose_profile(st, req.payload.profile.as_deref(), binding.as_ref())?;
    ratelimit::check_new_order(&st.store, &st.limits.rate, &req.account.id, &identifiers, st.clock.unix()).await?;
    if let Some(replaces) = &req.payload.replaces {
        check_replaces(st, &req.account, replaces, &identifiers).await?;
    }
    let authzs: Vec<NewAuthz> = identifiers
        .iter()
        .map(|id| NewAuthz { identifier: id.clone(), challenges: st.policy.challenges_for(id) })
        .collect();
    let now = st.clock.unix();
    let new = NewOrder {
        identifiers,
        authzs,
        // Never rejected (cert-manager always sends them): kept, and clamped by the CA at issuance.
        not_before: req.payload.not_before.map(|t| t.unix_timestamp()),
        not_after: req.payload.not_after.map(|t| t.unix_timestamp()),
        profile,
        replaces: req.payload.replaces.clone(),
    };
    let order =
        st.store.create_order(&req.account.id, &new, now, now + st.limits.order_ttl_secs).await?.ok_or_else(|| {
            Problem::new(ProblemType::AlreadyReplaced, "another order already replaces this certificate")
        })?;
    Span::current().record("order_id", order.id.as_str());
    Ok(AcmeResponse::json(StatusCode::CREATED, &render::order(&order, &st.urls, now))
        .location(st.urls.order(&order.id)))
}

/// The EAB key an account was bound with, if any.
async fn eab_key_of(st: &AppState, account: &AccountRow) -> Result<Option<EabKeyRow>, Problem> {
    match &account.eab_kid {
        Some(kid) => Ok(st.store.eab_key(kid).await?),
        None => Ok(None),
    }
}

/// An account made with a scoped EAB key orders only names in that scope.
fn check_scope(key: &EabKeyRow, identifiers: &[Identifier]) -> Result<(), Problem> {
    let refused: Vec<Subproblem> = identifiers
        .iter()
        .filter(|id| !scope_allows(&key.scope, id))
        .map(|id| Subproblem {
            kind: ProblemType::RejectedIdentifier,
            detail: format!("{} is outside this account's scope ({})", id.value(), key.scope.join(", ")),
            identifier: Some(id.clone()),
        })
        .collect();
    match refused.len() {
        0 => Ok(()),
        1 => Err(Problem::rejected_identifier(refused[0].detail.clone()).with_subproblems(refused)),
        n => Err(Problem::rejected_identifier(format!("{n} identifiers are outside this account's scope"))
            .with_subproblems(refused)),
    }
}

/// The order's profile: the one its EAB key fixes, else the one asked for, else the default.
fn choose_profile(st: &AppState, asked: Option<&str>, binding: Option<&EabKeyRow>) -> Result<Option<String>, Problem> {
    let profiles = &st.lifecycle.profiles;
    let invalid = |m: String| Problem::new(ProblemType::InvalidProfile, m);
    if let Some(fixed) = binding.and_then(|k| k.profile.as_deref()) {
        return match asked {
            Some(a) if a != fixed => Err(invalid(format!("this account may only use profile {fixed:?}"))),
            _ => Ok(Some(fixed.to_owned())),
        };
    }
    match asked {
        Some(a) if profiles.contains_key(a) => Ok(Some(a.to_owned())),
        Some(a) if profiles.is_empty() => {
            Err(invalid(format!("profile {a:?} is not offered: this server has no profiles")))
        }
        Some(a) => {
            let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
            Err(invalid(format!("profile {a:?} is not offered; profiles are {}", known.join(", "))))
        }
        None => Ok(st.lifecycle.default_profile.clone()),
    }
}

/// RFC 9773 §5: `replaces` must name a certificate of this account sharing a name with the order.
async fn check_replaces(
    st: &AppState,
    account: &AccountRow,
    replaces: &str,
    ids: &[Identifier],
) -> Result<(), Problem> {
    let id = ari::parse_cert_id(replaces)?;
    let old = st
        .store
        .certificate_by_ari_id(id)
        .await?
        .ok_or_else(|| Problem::malformed("replaces names a certificate this server did not issue"))?;
    if old.account_id != account.id {
        return Err(Problem::unauthorized("replaces names a certificate of another account"));
    }
    if !old.identifiers.iter().any(|i| ids.contains(i)) {
        return Err(Problem::malformed("the order shares no identifier with the certificate it replaces"));
    }
    Ok(())
}

/// Parses, normalises, de-duplicates and sorts; every bad identifier becomes a subproblem.
fn parse_identifiers(req: &NewOrderRequest, max: usize) -> Result<Vec<Identifier>, Problem> {
    if req.identifiers.is_empty() {
        return Err(Problem::malformed("an order needs at least one identifier"));
    }
    if req.identifiers.len() > max {
        return Err(Problem::rejected_identifier(format!("an order may have at most {max} identifiers")));
    }
    let mut ok = BTreeSet::new();
    let mut bad = Vec::new();
    for raw in &req.identifiers {
        match Identifier::parse(raw) {
            Ok(id) => {
                ok.insert(id);
            }
            Err(p) => bad.push(Subproblem { kind: p.kind, detail: p.detail, identifier: None }),
        }
    }
    match bad.len() {
        0 => Ok(ok.into_iter().collect()),
        1 => {
            let first = bad.remove(0);
            Err(Problem::new(first.kind, first.detail))
        }
        n => Err(Problem::rejected_identifier(format!("{n} identifiers are not valid")).with_subproblems(bad)),
    }
}

/// The caller's order, or 404: another account's order is indistinguishable from none.
pub(crate) async fn own_order(st: &AppState, account_id: &str, id: &str) -> Result<OrderRow, Problem> {
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
    Path(id): Path<String>,
    req: PostAsGet,
) -> Result<AcmeResponse, Problem> {
    Span::current().record("order_id", id.as_str());
    let order = own_order(&st, &req.account.id, &id).await?;
    Ok(respond(&st, &order))
}

/// POST /acme/order/{id}/finalize.
pub async fn finalize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Signed<FinalizeRequest>,
) -> Result<AcmeResponse, Problem> {
    Span::current().record("order_id", id.as_str());
    let order = own_order(&st, &req.account.id, &id).await?;
    let now = st.clock.unix();
    if render::order(&order, &st.urls, now).status != OrderStatus::Ready {
        return Err(Problem::order_not_ready(format!("order is {}, not ready", order.status)));
    }
    let der = URL_SAFE_NO_PAD
        .decode(req.payload.csr.trim_end_matches('='))
        .map_err(|_| Problem::malformed("csr is not base64url"))?;
    let nb = order.not_before.map(crate::clock::from_unix);
    let na = order.not_after.map(crate::clock::from_unix);
    // badCSR here, before anything is written: the CA only ever sees checked requests, and only
    // with a key the role it is routed to takes (a Vault refusal after this point would make
    // the order invalid; RFC 8555 §7.4 lets a ready order be finalized again with another CSR).
    let checked = IssuanceRequest::new(&order.identifiers, &der, &st.limits.key_policy, nb, na)
        .and_then(|req| st.lifecycle.check_key(order.profile.as_deref(), req.key).map_err(Problem::bad_csr));
    if let Err(p) = checked {
        AuditEvent::by_account("finalize_refused", &req.account.id)
            .order(&id)
            .identifiers(&order.identifiers)
            .detail(format!("{}: {}", p.kind.code(), p.detail))
            .record(&st.store, now)
            .await;
        return Err(p);
    }
    let mut issued = st.wake.issued.subscribe();
    if !st.store.begin_issuance(&id, &der, now).await? {
        return Err(Problem::order_not_ready("order is no longer ready"));
    }
    st.wake.issuance.notify_one();
    let order = wait_for_issuance(&st, &id, &mut issued).await?;
    Ok(respond(&st, &order))
}

/// Waits (briefly) for the worker, so a healthy CA answers `valid` without a poll round trip.
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
