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
    let mut revoked_at = cert.revoked_at;
    if revoked_at.is_none() && cert.not_after > now {
        // At most one CA call per certificate per `renewal.ca_check_secs`, however many requests;
        // the CA-check job makes it, and this waits for it at most `CA_CHECK_TIMEOUT`.
        let mount = st.lifecycle.target(cert.profile.as_deref()).mount;
        let known = st.ca_checks.revoked_at(&cert.serial, mount, now).await;
        if let Some(at) = known {
            tracing::info!(certificate_id = %cert.id, serial = %cert.serial, "the CA revoked this certificate");
            st.store.revoked_by_ca(&cert.id, at).await?;
            revoked_at = Some(at);
        }
    }
    let renewal = &st.lifecycle.renewal;
    let (start, end) = match revoked_at {
        // In the past: RFC 9773 §4.2 clients renew at once.
        Some(at) => (at.min(now) - 1, now),
        None => ari::window(cert.not_before, cert.not_after, renewal.window_start_percent, renewal.window_end_percent),
    };
    let info = RenewalInfo {
        suggested_window: SuggestedWindow { start: from_unix(start), end: from_unix(end.max(start + 1)) },
        explanation_url: None,
    };
    Ok(AcmeResponse::json(StatusCode::OK, &info).retry_after(renewal.retry_after_secs))
}
