//! Certificate download (RFC 8555 §7.4.2).

use axum::extract::{Path, State};

use crate::{
    acme::{Problem, ids::CertificateId},
    api::AcmeResponse,
    jws::extract::PostAsGet,
    state::AppState,
};

/// POST-as-GET /acme/cert/{id}: the full chain, leaf first, as `application/pem-certificate-chain`.
pub async fn certificate(
    State(st): State<AppState>,
    Path(id): Path<CertificateId>,
    req: PostAsGet,
) -> Result<AcmeResponse, Problem> {
    match st.store.certificate(&id).await? {
        Some(cert) if cert.account_id == req.account.id => Ok(AcmeResponse::pem_chain(cert.chain_pem)),
        _ => Err(Problem::not_found("no such certificate")),
    }
}
