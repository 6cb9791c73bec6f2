//! Signature checks (RFC 7515, RFC 8555 §6.2): the algorithm must fit the key, and the
//! signature must verify over the signing input. Only `ring` sees the bytes.

use ring::signature::{self, UnparsedPublicKey};

use crate::{
    acme::Problem,
    jws::{ALGORITHMS, Alg, Jws, PublicJwk, jwk::Curve},
};

impl Jws {
    /// Checks that `alg` fits `key` and that the signature verifies.
    pub fn verify(&self, key: &PublicJwk) -> Result<(), Problem> {
        key.verify(self.protected.alg, &self.signing_input, &self.signature)
    }
}

impl PublicJwk {
    /// Verifies `sig` over `msg` with `alg`; the algorithm must fit the key.
    pub(crate) fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> Result<(), Problem> {
        let mismatch = || Problem::bad_signature_algorithm(format!("{} does not fit this key", alg.name()), ALGORITHMS);
        let ok = match (alg, self) {
            (Alg::Es256, PublicJwk::Ec { crv: Curve::P256, x, y }) => {
                ec_verify(&signature::ECDSA_P256_SHA256_FIXED, x, y, msg, sig)
            }
            (Alg::Es384, PublicJwk::Ec { crv: Curve::P384, x, y }) => {
                ec_verify(&signature::ECDSA_P384_SHA384_FIXED, x, y, msg, sig)
            }
            (Alg::Rs256, PublicJwk::Rsa { n, e }) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            (Alg::Ps256, PublicJwk::Rsa { n, e }) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PSS_2048_8192_SHA256, msg, sig)
                .is_ok(),
            (Alg::EdDsa, PublicJwk::Ed25519 { x }) => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(msg, sig).is_ok()
            }
            _ => return Err(mismatch()),
        };
        if ok { Ok(()) } else { Err(Problem::malformed("JWS verification error")) }
    }
}

fn ec_verify(alg: &'static signature::EcdsaVerificationAlgorithm, x: &[u8], y: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    UnparsedPublicKey::new(alg, point).verify(msg, sig).is_ok()
}
