//! Account keys (RFC 7517, RFC 7638): any JSON must parse to a public key or a `Problem`, and a
//! parsed key must survive the trip through its stored form with the same thumbprint.
#![no_main]

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use vacme::jws::PublicJwk;

fuzz_target!(|data: &[u8]| {
    let Some(value) = jwk_value(data) else { return };
    let Ok(key) = PublicJwk::from_json(&value) else { return };
    let thumbprint = key.thumbprint();
    // base64url of a SHA-256 digest.
    assert_eq!(thumbprint.len(), 43, "{thumbprint}");
    assert!(thumbprint.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

    let stored = key.to_json();
    let again = PublicJwk::from_json(&stored).expect("to_json of a parsed JWK parses");
    assert_eq!(again, key);
    assert_eq!(again.thumbprint(), thumbprint);
    assert_eq!(again.to_json(), stored);
    assert_eq!(key.key_authorization("token"), format!("token.{thumbprint}"));
});

/// JSON text as a client sends it, or (for inputs not starting with `{`) a JWK built from raw
/// member bytes, so the fuzzer reaches the length and size checks without learning base64.
fn jwk_value(data: &[u8]) -> Option<Value> {
    if data.first() == Some(&b'{') {
        return serde_json::from_slice(data).ok();
    }
    let (&selector, rest) = data.split_first()?;
    let half = rest.len() / 2;
    let (a, b) = (URL_SAFE_NO_PAD.encode(&rest[..half]), URL_SAFE_NO_PAD.encode(&rest[half..]));
    Some(match selector % 4 {
        0 => json!({"kty": "EC", "crv": "P-256", "x": a, "y": b}),
        1 => json!({"kty": "EC", "crv": "P-384", "x": a, "y": b}),
        // The exponent is the short part: RSA moduli are long, exponents at most 4 bytes.
        2 => {
            let split = rest.len().saturating_sub(usize::from(selector >> 2) % 5);
            json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&rest[..split]), "e": URL_SAFE_NO_PAD.encode(&rest[split..])})
        }
        _ => json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(rest)}),
    })
}
