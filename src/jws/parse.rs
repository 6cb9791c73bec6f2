//! The shape of an ACME JWS (RFC 8555 §6.2): flattened JSON serialization only, with a
//! protected header that names exactly one key and an allowed algorithm.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    acme::Problem,
    jws::{ALGORITHMS, PublicJwk},
};

/// The signature algorithms vacme verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Es384,
    Rs256,
    Ps256,
    EdDsa,
}

impl Alg {
    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "RS256" => Alg::Rs256,
            "PS256" => Alg::Ps256,
            "EdDSA" => Alg::EdDsa,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

/// Which key signed: an inline JWK (newAccount) or an account URL.
#[derive(Clone, Debug)]
pub enum KeySource {
    Jwk(PublicJwk),
    Kid(String),
}

/// The checked protected header.
#[derive(Clone, Debug)]
pub struct Protected {
    pub alg: Alg,
    pub nonce: Option<String>,
    pub url: String,
    pub key: KeySource,
}

/// A structurally checked JWS whose signature is not yet verified.
#[derive(Debug)]
pub struct Jws {
    pub protected: Protected,
    /// Decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    pub payload_b64: String,
    pub(super) signing_input: Vec<u8>,
    pub(super) signature: Vec<u8>,
}

/// Exactly the three members of the flattened serialization: an unprotected `header` or a
/// `signatures` array (general serialization) is refused, not merged (RFC 8555 §6.2).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Flattened {
    pub protected: String,
    pub payload: String,
    pub signature: String,
}

#[derive(Deserialize)]
struct RawProtected {
    alg: Option<Value>,
    nonce: Option<Value>,
    url: Option<Value>,
    jwk: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
    b64: Option<Value>,
}

/// Strict base64url: URL-safe alphabet, no padding, no whitespace.
fn b64(s: &str, what: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| Problem::malformed(format!("JWS {what} is not base64url without padding")))
}

/// Bytes of the request body -> structurally checked JWS. Does not check nonce, url or signature.
pub fn parse(body: &[u8]) -> Result<Jws, Problem> {
    let text = std::str::from_utf8(body).map_err(|_| Problem::malformed("request body is not UTF-8"))?;
    let flat: Flattened = serde_json::from_str(text).map_err(|_| {
        Problem::malformed("request body is not a flattened JWS JSON object (protected, payload, signature)")
    })?;
    let header_bytes = b64(&flat.protected, "protected header")?;
    let payload = b64(&flat.payload, "payload")?;
    let signature = b64(&flat.signature, "signature")?;
    let raw: RawProtected = serde_json::from_slice(&header_bytes)
        .map_err(|_| Problem::malformed("JWS protected header is not a JSON object"))?;

    let alg_name = raw.alg.as_ref().and_then(Value::as_str).unwrap_or("");
    let alg = Alg::from_name(alg_name).ok_or_else(|| {
        Problem::bad_signature_algorithm(format!("JWS algorithm {alg_name:?} is not accepted"), ALGORITHMS)
    })?;
    // ACME defines no critical extensions, and b64=false would change what is signed (RFC 7797).
    if raw.crit.is_some() || raw.b64.is_some() {
        return Err(Problem::malformed("JWS crit and b64 headers are not supported"));
    }
    let url = match raw.url {
        Some(Value::String(u)) => u,
        _ => return Err(Problem::malformed("JWS protected header has no url")),
    };
    let nonce = match raw.nonce {
        None => None,
        Some(Value::String(n)) => Some(n),
        Some(_) => return Err(Problem::bad_nonce()),
    };
    let key = match (raw.jwk, raw.kid) {
        (Some(jwk), None) => KeySource::Jwk(PublicJwk::from_json(&jwk)?),
        (None, Some(Value::String(kid))) => KeySource::Kid(kid),
        (None, Some(_)) => return Err(Problem::malformed("JWS kid is not a string")),
        (Some(_), Some(_)) => {
            return Err(Problem::malformed("JWS has both jwk and kid; exactly one is allowed"));
        }
        (None, None) => return Err(Problem::malformed("JWS has neither jwk nor kid")),
    };
    let mut signing_input = Vec::with_capacity(flat.protected.len() + flat.payload.len() + 1);
    signing_input.extend_from_slice(flat.protected.as_bytes());
    signing_input.push(b'.');
    signing_input.extend_from_slice(flat.payload.as_bytes());
    Ok(Jws {
        protected: Protected { alg, nonce, url, key },
        payload,
        payload_b64: flat.payload,
        signing_input,
        signature,
    })
}

impl Jws {
    /// RFC 8555 §6.3: the payload is exactly the empty string.
    pub fn is_post_as_get(&self) -> bool {
        self.payload_b64.is_empty()
    }

    /// The payload as JSON `T`; `malformed` when it is not (the payload is never echoed).
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            // serde's message names the field and the expected type, not the value.
            let why = e.to_string();
            let why = why.split(" at line").next().unwrap_or("invalid");
            Problem::malformed(format!("JWS payload is not valid for this request: {why}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use ring::{
        rand::SystemRandom,
        signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
        },
    };
    use serde_json::json;

    use super::*;

    enum Key {
        Ec(EcdsaKeyPair, &'static str, usize),
        Ed(Ed25519KeyPair),
    }

    impl Key {
        fn p256() -> Self {
            let rng = SystemRandom::new();
            let pk = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            Key::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk.as_ref(), &rng).unwrap(), "P-256", 32)
        }
        fn p384() -> Self {
            let rng = SystemRandom::new();
            let pk = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
            Key::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pk.as_ref(), &rng).unwrap(), "P-384", 48)
        }
        fn ed() -> Self {
            let pk = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            Key::Ed(Ed25519KeyPair::from_pkcs8(pk.as_ref()).unwrap())
        }
        fn jwk(&self) -> Value {
            match self {
                Key::Ec(k, crv, n) => {
                    let p = k.public_key().as_ref();
                    json!({"kty": "EC", "crv": crv, "x": URL_SAFE_NO_PAD.encode(&p[1..1 + n]), "y": URL_SAFE_NO_PAD.encode(&p[1 + n..])})
                }
                Key::Ed(k) => {
                    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(k.public_key().as_ref())})
                }
            }
        }
        fn sign(&self, msg: &[u8]) -> Vec<u8> {
            match self {
                Key::Ec(k, ..) => k.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec(),
                Key::Ed(k) => k.sign(msg).as_ref().to_vec(),
            }
        }
    }

    fn jws(key: &Key, header: Value, payload: &str) -> Vec<u8> {
        let p = URL_SAFE_NO_PAD.encode(header.to_string());
        let b = if payload.is_empty() { String::new() } else { URL_SAFE_NO_PAD.encode(payload) };
        let sig = key.sign(format!("{p}.{b}").as_bytes());
        json!({"protected": p, "payload": b, "signature": URL_SAFE_NO_PAD.encode(sig)}).to_string().into_bytes()
    }

    fn header(key: &Key, alg: &str) -> Value {
        json!({"alg": alg, "nonce": "n", "url": "https://acme/x", "jwk": key.jwk()})
    }

    #[test]
    fn good_signatures_verify() {
        for (key, alg) in [(Key::p256(), "ES256"), (Key::p384(), "ES384"), (Key::ed(), "EdDSA")] {
            let body = jws(&key, header(&key, alg), "{\"a\":1}");
            let parsed = parse(&body).unwrap();
            let KeySource::Jwk(jwk) = &parsed.protected.key else { panic!() };
            parsed.verify(jwk).unwrap();
            assert_eq!(parsed.protected.url, "https://acme/x");
            assert!(!parsed.is_post_as_get());
        }
        let key = Key::p256();
        let body = jws(&key, json!({"alg": "ES256", "nonce": "n", "url": "u", "kid": "k"}), "");
        assert!(parse(&body).unwrap().is_post_as_get());
    }

    #[test]
    fn bad_inputs() {
        let key = Key::p256();
        let good = jws(&key, header(&key, "ES256"), "{}");
        let v: Value = serde_json::from_slice(&good).unwrap();
        let with = |k: &str, val: Value| {
            let mut v = v.clone();
            v[k] = val;
            v.to_string().into_bytes()
        };
        let hdr = |h: Value| {
            let mut v = v.clone();
            v["protected"] = json!(URL_SAFE_NO_PAD.encode(h.to_string()));
            v.to_string().into_bytes()
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not json", b"hello".to_vec(), "malformed"),
            ("not utf-8", vec![0xff, 0xfe], "malformed"),
            ("array", b"[]".to_vec(), "malformed"),
            ("compact", b"\"a.b.c\"".to_vec(), "malformed"),
            ("unprotected header", with("header", json!({"kid": "x"})), "malformed"),
            ("signatures array", with("signatures", json!([])), "malformed"),
            ("padding", with("payload", json!("e30=")), "malformed"),
            ("std alphabet", with("signature", json!("ab+/")), "malformed"),
            ("alg none", hdr(json!({"alg": "none", "url": "u", "kid": "k"})), "badSignatureAlgorithm"),
            ("alg HS256", hdr(json!({"alg": "HS256", "url": "u", "kid": "k"})), "badSignatureAlgorithm"),
            ("alg RS384", hdr(json!({"alg": "RS384", "url": "u", "kid": "k"})), "badSignatureAlgorithm"),
            ("no alg", hdr(json!({"url": "u", "kid": "k"})), "badSignatureAlgorithm"),
            ("jwk and kid", hdr(json!({"alg": "ES256", "url": "u", "kid": "k", "jwk": key.jwk()})), "malformed"),
            ("neither", hdr(json!({"alg": "ES256", "url": "u"})), "malformed"),
            ("no url", hdr(json!({"alg": "ES256", "kid": "k"})), "malformed"),
            ("crit", hdr(json!({"alg": "ES256", "url": "u", "kid": "k", "crit": ["x"]})), "malformed"),
            ("b64", hdr(json!({"alg": "ES256", "url": "u", "kid": "k", "b64": false})), "malformed"),
        ];
        for (name, body, kind) in cases {
            let p = parse(&body).expect_err(name);
            assert_eq!(p.kind.code(), kind, "{name}: {}", p.detail);
        }
        let p = parse(&hdr(json!({"alg": "none", "url": "u", "kid": "k"}))).unwrap_err();
        assert_eq!(p.algorithms.as_deref(), Some(ALGORITHMS));
    }

    #[test]
    fn wrong_key_tampering_and_alg_mismatch() {
        let key = Key::p256();
        let other = Key::p256();
        let body = jws(&key, header(&key, "ES256"), "{}");
        let parsed = parse(&body).unwrap();
        let other_jwk = PublicJwk::from_json(&other.jwk()).unwrap();
        assert_eq!(parsed.verify(&other_jwk).unwrap_err().kind.code(), "malformed");

        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["payload"] = json!(URL_SAFE_NO_PAD.encode("{\"evil\":1}"));
        let tampered = parse(v.to_string().as_bytes()).unwrap();
        let KeySource::Jwk(jwk) = &tampered.protected.key else { panic!() };
        assert!(tampered.verify(jwk).is_err());

        // ES384 claimed for a P-256 key, EdDSA for an EC key.
        for alg in ["ES384", "EdDSA", "RS256"] {
            let body = jws(&key, header(&key, alg), "{}");
            let parsed = parse(&body).unwrap();
            let KeySource::Jwk(jwk) = &parsed.protected.key else { panic!() };
            assert_eq!(parsed.verify(jwk).unwrap_err().kind.code(), "badSignatureAlgorithm", "{alg}");
        }
    }

    #[test]
    fn rs256_and_ps256() {
        use ring::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair};
        let pair = RsaKeyPair::from_pkcs8(include_bytes!("testdata/rsa2048.pk8.der")).unwrap();
        let parts = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
        let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&parts.n), "e": URL_SAFE_NO_PAD.encode(&parts.e)});
        for (alg, padding) in
            [("RS256", &RSA_PKCS1_SHA256 as &'static dyn ring::signature::RsaEncoding), ("PS256", &RSA_PSS_SHA256)]
        {
            let p = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "url": "u", "jwk": jwk}).to_string());
            let b = URL_SAFE_NO_PAD.encode("{}");
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(padding, &SystemRandom::new(), format!("{p}.{b}").as_bytes(), &mut sig).unwrap();
            let body = json!({"protected": p, "payload": b, "signature": URL_SAFE_NO_PAD.encode(&sig)}).to_string();
            let parsed = parse(body.as_bytes()).unwrap();
            let KeySource::Jwk(key) = &parsed.protected.key else { panic!() };
            parsed.verify(key).unwrap_or_else(|p| panic!("{alg}: {p}"));
            // The same signature claimed as the other RSA algorithm fails.
            let other = if alg == "RS256" { "PS256" } else { "RS256" };
            let p2 = URL_SAFE_NO_PAD.encode(json!({"alg": other, "url": "u", "jwk": jwk}).to_string());
            let body = json!({"protected": p2, "payload": b, "signature": URL_SAFE_NO_PAD.encode(&sig)}).to_string();
            let parsed = parse(body.as_bytes()).unwrap();
            assert!(parsed.verify(key).is_err());
        }
    }

    #[test]
    fn private_jwk_is_refused() {
        let key = Key::p256();
        let mut jwk = key.jwk();
        jwk["d"] = json!("AAAA");
        let body = jws(&key, json!({"alg": "ES256", "url": "u", "jwk": jwk}), "{}");
        assert_eq!(parse(&body).unwrap_err().kind.code(), "malformed");
    }
}
