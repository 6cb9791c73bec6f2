//! Public JWKs: parsed once, public members only, with RFC 7638 thumbprints.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use x509_parser::{public_key::PublicKey, x509::SubjectPublicKeyInfo};

use crate::acme::Problem;

/// Smallest and largest RSA modulus accepted (DESIGN.md: RSA < 2048 is `badPublicKey`).
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// A public key from a JWK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicJwk {
    /// EC P-256 or P-384: `x`, `y` are the fixed-size big-endian coordinates.
    Ec { crv: Curve, x: Vec<u8>, y: Vec<u8> },
    /// RSA: modulus without leading zeros, and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Ed25519 (OKP).
    Ed25519 { x: Vec<u8> },
}

/// The EC curves vacme accepts for account keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    fn size(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// Members that only a private JWK has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn b64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, Problem> {
    let s = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::bad_public_key(format!("JWK member {name:?} is missing or not a string")))?;
    URL_SAFE_NO_PAD.decode(s).map_err(|_| Problem::bad_public_key(format!("JWK member {name:?} is not base64url")))
}

impl PublicJwk {
    /// Parses a public JWK. Private members are `malformed` (a client must never send them);
    /// unsupported or weak keys are `badPublicKey`.
    pub fn from_json(v: &Value) -> Result<Self, Problem> {
        let obj = v.as_object().ok_or_else(|| Problem::malformed("jwk is not a JSON object"))?;
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(Problem::malformed(format!("jwk contains private key material ({m:?})")));
        }
        let kty = obj.get("kty").and_then(Value::as_str).unwrap_or("");
        let key = match kty {
            "EC" => {
                let crv = match obj.get("crv").and_then(Value::as_str) {
                    Some("P-256") => Curve::P256,
                    Some("P-384") => Curve::P384,
                    other => {
                        return Err(Problem::bad_public_key(format!("EC curve {other:?} is not supported")));
                    }
                };
                let (x, y) = (b64_member(obj, "x")?, b64_member(obj, "y")?);
                if x.len() != crv.size() || y.len() != crv.size() {
                    return Err(Problem::bad_public_key("EC coordinates have the wrong length for the curve"));
                }
                PublicJwk::Ec { crv, x, y }
            }
            "RSA" => {
                let mut n = b64_member(obj, "n")?;
                let e = b64_member(obj, "e")?;
                let lead = n.iter().take_while(|b| **b == 0).count();
                n.drain(..lead);
                // An empty (or all-zero) modulus is 0 bits; otherwise the first byte is non-zero.
                let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
                if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                    return Err(Problem::bad_public_key(format!(
                        "RSA keys must be {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, this one is {bits}"
                    )));
                }
                if e.is_empty() || e.len() > 4 {
                    return Err(Problem::bad_public_key("RSA exponent is not supported"));
                }
                PublicJwk::Rsa { n, e }
            }
            "OKP" => {
                if obj.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                    return Err(Problem::bad_public_key("only the Ed25519 OKP curve is supported"));
                }
                let x = b64_member(obj, "x")?;
                if x.len() != 32 {
                    return Err(Problem::bad_public_key("Ed25519 public key must be 32 bytes"));
                }
                PublicJwk::Ed25519 { x }
            }
            other => {
                return Err(Problem::bad_public_key(format!("key type {other:?} is not supported")));
            }
        };
        Ok(key)
    }

    /// The canonical public JWK (RFC 7638 §3.2 required members only), for storage.
    pub fn to_json(&self) -> Value {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        match self {
            PublicJwk::Ec { crv, x, y } => {
                json!({"crv": crv.name(), "kty": "EC", "x": b(x), "y": b(y)})
            }
            PublicJwk::Rsa { n, e } => json!({"e": b(e), "kty": "RSA", "n": b(n)}),
            PublicJwk::Ed25519 { x } => json!({"crv": "Ed25519", "kty": "OKP", "x": b(x)}),
        }
    }

    /// RFC 7638 thumbprint: base64url(SHA-256(required members, sorted, no whitespace)).
    pub fn thumbprint(&self) -> String {
        // serde_json's Map is ordered by key (no preserve_order feature), which is what §3.3 asks.
        let canonical = self.to_json().to_string();
        URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
    }

    /// RFC 8555 §8.1: `token || '.' || thumbprint`.
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.thumbprint())
    }

    /// Whether this is the key of `spki` (a certificate's subject public key).
    pub fn is_key_of(&self, spki: &SubjectPublicKeyInfo<'_>) -> bool {
        let strip = |b: &[u8]| b.iter().position(|x| *x != 0).map_or_else(Vec::new, |i| b[i..].to_vec());
        match (self, spki.parsed()) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_vector() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let key = PublicJwk::from_json(&jwk).unwrap();
        assert_eq!(key.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn refuses_private_weak_and_unknown_keys() {
        let p = PublicJwk::from_json(&json!({"kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "AA"})).unwrap_err();
        assert_eq!(p.kind.code(), "malformed");
        let n1024 = URL_SAFE_NO_PAD.encode([0xc1u8; 128]);
        let p = PublicJwk::from_json(&json!({"kty": "RSA", "n": n1024, "e": "AQAB"})).unwrap_err();
        assert_eq!(p.kind.code(), "badPublicKey");
        for bad in [
            json!({"kty": "oct", "k": "AA"}),
            json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
            json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
            json!({"kty": "OKP", "crv": "X25519", "x": "AA"}),
            json!({"kty": "RSA", "n": "!!", "e": "AQAB"}),
        ] {
            assert!(PublicJwk::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_or_zero_rsa_modulus_is_bad_public_key() {
        // Found by fuzz/fuzz_targets/jwk.rs: a modulus with no non-zero byte made the bit count underflow.
        for n in ["", "AA", "AAAA"] {
            let p = PublicJwk::from_json(&json!({"kty": "RSA", "n": n, "e": "AQAB"})).unwrap_err();
            assert_eq!(p.kind.code(), "badPublicKey", "n = {n:?}");
            assert!(p.detail.contains("this one is 0"), "{}", p.detail);
        }
    }
}
