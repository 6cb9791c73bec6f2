//! ACME Renewal Information (RFC 9773): `GET /acme/renewal-info/<certID>`, unauthenticated.

use axum::{
    Extension,
    extract::{Path, State},
};
use http::StatusCode;

use crate::{
    acme::{
        Problem, ari,
        types::{RenewalInfo, SuggestedWindow},
    },
    api::AcmeResponse,
    clock::from_unix,
    policy::ratelimit::ClientAddr,
    state::AppState,
    store::CertificateRow,
};

/// GET /acme/renewal-info/{certID}: the configured share of the lifetime, or a window that has
/// already started when the certificate was revoked (in vacme, or in Vault behind its back).
pub async fn renewal_info(
    State(st): State<AppState>,
    addr: Option<Extension<ClientAddr>>,
    Path(id): Path<String>,
) -> Result<AcmeResponse, Problem> {
    if let Some(Extension(ClientAddr(ip))) = addr {
        st.renewal_info_limit.check(ip, st.clock.unix())?;
    }
    let id = ari::parse_cert_id(&id)?;
    let cert = st
        .store
        .certificate_by_ari_id(id)
        .await?
        .ok_or_else(|| Problem::not_found("no certificate with this certID was issued here"))?;
    let now = st.clock.unix();
    let revoked_at = revoked_at(&st, &cert, now).await?;
    let renewal = &st.lifecycle.renewal;
    let (start, end) = match revoked_at {
        // In the past: RFC 9773 §4.2 clients renew at once.
        Some(at) => (at.min(now) - 1, now),
        None => ari::window(cert.not_before, cert.not_after, renewal.window_start_percent, renewal.window_end_percent),
    };
    let window = SuggestedWindow { start: from_unix(start), end: from_unix(end.max(start + 1)) };
    let info = RenewalInfo { suggested_window: window, explanation_url: None };
    Ok(AcmeResponse::json(StatusCode::OK, &info).retry_after(renewal.retry_after_secs))
}

/// When the certificate was revoked: as vacme recorded it, or as the CA says (the CA-check job
/// asks at most once per certificate per `renewal.ca_check_secs`, however many requests come,
/// and this waits for it at most `CA_CHECK_TIMEOUT`). A revocation the CA made behind vacme's
/// back is recorded.
async fn revoked_at(st: &AppState, cert: &CertificateRow, now: i64) -> Result<Option<i64>, Problem> {
    if cert.revoked_at.is_some() || cert.not_after <= now {
        return Ok(cert.revoked_at);
    }
    let mount = st.lifecycle.target(cert.profile.as_deref()).mount;
    let Some(at) = st.ca_checks.revoked_at(&cert.serial, mount, now).await else { return Ok(None) };
    tracing::info!(certificate_id = %cert.id, serial = %cert.serial, "the CA revoked this certificate");
    st.store.revoked_by_ca(&cert.id, at).await?;
    Ok(Some(at))
}
