//! revokeCert (RFC 8555 §7.6): by the account that ordered the certificate, or by the
//! certificate's own key. The recording and the CA call are in `crate::revocation`.

use axum::extract::State;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::StatusCode;
use x509_parser::{certificate::X509Certificate, pem::Pem, prelude::FromDer};

use crate::{
    acme::{Problem, ProblemType, Serial, types::RevocationRequest},
    api::AcmeResponse,
    jws::extract::SignedAny,
    revocation::{check_reason, tell_ca},
    state::AppState,
    store::AuditEvent,
    store::CertificateRow,
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

/// Records the revocation (`alreadyRevoked` the second time) and tells the CA.
async fn revoke(st: &AppState, record: &CertificateRow, reason: u8, actor: String) -> Result<(), Problem> {
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
    tell_ca(st.issuer.as_ref(), &st.store, &st.lifecycle, record, now).await;
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
