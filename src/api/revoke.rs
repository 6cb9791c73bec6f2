//! revokeCert (RFC 8555 §7.6): by the account that ordered the certificate, or by the
//! certificate's own key. The revocation is recorded here; the CA is told by the revocation job
//! (`crate::jobs::revocation`).

use std::time::Duration;

use axum::extract::State;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::StatusCode;
use x509_parser::{certificate::X509Certificate, pem::Pem, prelude::FromDer};

use crate::{
    acme::{Problem, ProblemType, Serial, types::RevocationRequest},
    api::AcmeResponse,
    jws::extract::SignedAny,
    policy::reasons::check_reason,
    state::AppState,
    store::{AuditEvent, CertificateRow},
};

/// POST /acme/revoke-cert.
pub async fn revoke_cert(
    State(st): State<AppState>,
    req: SignedAny<RevocationRequest>,
) -> Result<AcmeResponse, Problem> {
    let reason = check_reason(req.payload.reason)?;
    let der = URL_SAFE_NO_PAD
        .decode(req.payload.certificate.trim_end_matches('='))
        .map_err(|_| Problem::malformed("certificate is not base64url"))?;
    let (rest, cert) = X509Certificate::from_der(&der)
        .map_err(|_| Problem::malformed("certificate is not a DER X.509 certificate"))?;
    if !rest.is_empty() {
        return Err(Problem::malformed("certificate has trailing data"));
    }
    let record = find_issued(&st, &cert, &der).await?;
    req.signer.may_revoke(&record.account_id, cert.public_key())?;
    revoke(&st, &record, reason, req.signer.actor()).await?;
    Ok(AcmeResponse::empty(StatusCode::OK))
}

/// Records the revocation (`alreadyRevoked` the second time) and has the revocation job tell the
/// CA, waiting at most `CA_PUSH_WAIT` so that a healthy CA has taken it by the answer; one that
/// is down or slow leaves it pending for the job and the clean-up run.
async fn revoke(st: &AppState, record: &CertificateRow, reason: u8, actor: String) -> Result<(), Problem> {
    /// How long revokeCert waits for the CA to take the revocation.
    const CA_PUSH_WAIT: Duration = Duration::from_secs(5);
    let now = st.clock.unix();
    if !st.store.revoke_certificate(&record.id, reason, now).await? {
        return Err(Problem::new(ProblemType::AlreadyRevoked, "this certificate is already revoked"));
    }
    AuditEvent::new("revoked", actor)
        .account(&record.account_id)
        .order(&record.order_id)
        .certificate(&record.id, &record.serial)
        .identifiers(&record.identifiers)
        .detail(format!("reason {reason}"))
        .record(&st.store, now)
        .await;
    tracing::info!(certificate_id = %record.id, serial = %record.serial, reason, "certificate revoked");
    st.revocations.push(record.clone(), now, CA_PUSH_WAIT).await;
    Ok(())
}

/// The store's record of exactly this certificate (same serial and same bytes).
async fn find_issued(st: &AppState, cert: &X509Certificate<'_>, der: &[u8]) -> Result<CertificateRow, Problem> {
    let serial = Serial::from_bytes(cert.raw_serial());
    for record in st.store.certificates_by_serial(serial.as_str()).await? {
        let same = Pem::iter_from_buffer(record.chain_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .is_some_and(|p| p.contents == der);
        if same {
            return Ok(record);
        }
    }
    Err(Problem::not_found("this server did not issue that certificate"))
}
