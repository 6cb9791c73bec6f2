//! revokeCert (RFC 8555 §7.6): by the account that ordered the certificate, or by the
//! certificate's own key. The revocation is recorded here; the CA is told by the revocation job
//! (`crate::jobs::revocation`).

use std::time::Duration;

use axum::extract::State;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::StatusCode;
use tracing::Span;
use x509_parser::{certificate::X509Certificate, pem::Pem, prelude::FromDer, public_key::PublicKey};

use crate::{
    acme::{Problem, ProblemType, types::RevocationRequest},
    api::AcmeResponse,
    audit::AuditEvent,
    jobs::revocation::check_reason,
    jws::{
        PublicJwk,
        extract::{SignedAny, Signer},
    },
    state::AppState,
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
    match &req.signer {
        Signer::Account(acct) => {
            Span::current().record("account_id", acct.id.as_str());
            if acct.id != record.account_id {
                return Err(Problem::unauthorized("this certificate was issued to another account"));
            }
        }
        Signer::Key(jwk) => {
            if !key_matches(jwk, &cert) {
                return Err(Problem::unauthorized(
                    "the request is signed neither by the account nor by the certificate's key",
                ));
            }
        }
    }
    let actor = match &req.signer {
        Signer::Account(acct) => format!("account:{}", acct.id),
        Signer::Key(_) => "certificate-key".to_owned(),
    };
    revoke(&st, &record, reason, actor).await?;
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
    let serial = serial_hex(cert.raw_serial());
    for record in st.store.certificates_by_serial(&serial).await? {
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

/// Lower-case hex without leading zero bytes (how the store keeps serials).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `jwk` is the certificate's subject public key.
fn key_matches(jwk: &PublicJwk, cert: &X509Certificate<'_>) -> bool {
    let spki = cert.public_key();
    let strip = |b: &[u8]| b.iter().position(|x| *x != 0).map_or_else(Vec::new, |i| b[i..].to_vec());
    match (jwk, spki.parsed()) {
        (PublicJwk::Ec { x, y, .. }, Ok(PublicKey::EC(point))) => {
            let data = point.data();
            data.len() == 1 + x.len() + y.len()
                && data[0] == 4
                && data[1..=x.len()] == x[..]
                && data[1 + x.len()..] == y[..]
        }
        (PublicJwk::Rsa { n, e }, Ok(PublicKey::RSA(rsa))) => {
            strip(rsa.modulus) == strip(n) && strip(rsa.exponent) == strip(e)
        }
        (PublicJwk::Ed25519 { x }, _) => {
            spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519
                && spki.subject_public_key.data[..] == x[..]
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_lose_leading_zero_bytes() {
        assert_eq!(serial_hex(&[0x00, 0x87, 0x65]), "8765");
        assert_eq!(serial_hex(&[0x0a, 0x01]), "0a01");
        assert_eq!(serial_hex(&[0x00]), "00");
    }
}
