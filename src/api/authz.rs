//! Authorizations and challenges (RFC 8555 §7.5).

use axum::extract::{Path, State};
use http::StatusCode;

use crate::{
    acme::ids::{AuthzId, ChallengeId},
    acme::{
        Problem,
        types::{AuthorizationStatus, AuthorizationUpdate, ChallengeStatus},
    },
    api::{AcmeResponse, render},
    jws::extract::SignedOrGet,
    policy::ratelimit,
    state::AppState,
    store::AuthzRow,
};

async fn own_authz(st: &AppState, account_id: &str, id: &AuthzId) -> Result<AuthzRow, Problem> {
    match st.store.authorization(id).await? {
        Some(a) if a.account_id == account_id => Ok(a),
        _ => Err(Problem::not_found("no such authorization")),
    }
}

/// POST-as-GET /acme/authz/{id}.
pub async fn authz(
    State(st): State<AppState>,
    Path(id): Path<AuthzId>,
    req: SignedOrGet,
) -> Result<AcmeResponse, Problem> {
    let mut authz = own_authz(&st, &req.account.id, &id).await?;
    if let Some(payload) = req.payload {
        deactivate(&st, &authz, payload).await?;
        authz = own_authz(&st, &req.account.id, &id).await?;
    }
    let res = AcmeResponse::json(StatusCode::OK, &render::authz(&authz, &st.urls, st.clock.unix()));
    let busy = authz.status == AuthorizationStatus::Pending
        && authz.challenges.iter().any(|c| c.status == ChallengeStatus::Processing);
    Ok(if busy { res.retry_after(st.limits.retry_after_secs) } else { res })
}

/// RFC 8555 §7.5.2: the only update is `{"status": "deactivated"}`.
async fn deactivate(st: &AppState, authz: &AuthzRow, payload: serde_json::Value) -> Result<(), Problem> {
    let update: AuthorizationUpdate = serde_json::from_value(payload)
        .map_err(|e| Problem::malformed(format!("authorization update is not valid: {e}")))?;
    if update.status.as_deref() != Some("deactivated") {
        return Err(Problem::malformed("an authorization can only be updated to {\"status\": \"deactivated\"}"));
    }
    let problem = Problem::unauthorized(format!("the authorization for {} was deactivated", authz.identifier.value()));
    let problem = serde_json::to_value(&problem).map_err(Problem::internal)?;
    if !st.store.deactivate_authz(&authz.id, &problem, st.clock.unix()).await? {
        return Err(Problem::malformed(format!("an authorization that is {} cannot be deactivated", authz.status)));
    }
    Ok(())
}

/// POST /acme/chall/{id}: any JSON object means "ready, validate now" (old clients send leftover
/// fields); an empty payload reads the challenge.
pub async fn challenge(
    State(st): State<AppState>,
    Path(id): Path<ChallengeId>,
    req: SignedOrGet,
) -> Result<AcmeResponse, Problem> {
    let Some((_, authz)) = st.store.challenge(&id).await?.filter(|(_, a)| a.account_id == req.account.id) else {
        return Err(Problem::not_found("no such challenge"));
    };
    if let Some(payload) = &req.payload {
        if !payload.is_object() {
            return Err(Problem::malformed("a challenge response must be a JSON object"));
        }
        ratelimit::check_paused(&st.store, &req.account.id, std::slice::from_ref(&authz.identifier)).await?;
        if st.store.start_challenge(&id, st.clock.unix()).await? {
            st.wake.validation.notify_one();
        }
    }
    let (chall, _) = st.store.challenge(&id).await?.ok_or_else(|| Problem::not_found("no such challenge"))?;
    let res =
        AcmeResponse::json(StatusCode::OK, &render::challenge(&chall, &st.urls)).link(&st.urls.authz(&authz.id), "up");
    Ok(if chall.status == ChallengeStatus::Processing { res.retry_after(st.limits.retry_after_secs) } else { res })
}
