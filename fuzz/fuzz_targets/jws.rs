//! A request body as the JWS layer sees it (RFC 8555 §6.2): any bytes must come back as a
//! checked `Jws` or a `Problem`, and a parsed JWS must verify or be refused without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vacme::jws::{self, KeySource, PublicJwk};

fuzz_target!(|body: &[u8]| {
    let Ok(parsed) = jws::parse(body) else { return };
    // RFC 8555 §6.3: POST-as-GET is exactly the empty payload.
    assert_eq!(parsed.is_post_as_get(), parsed.payload.is_empty());
    match &parsed.protected.key {
        KeySource::Jwk(key) => {
            let _ = parsed.verify(key);
            // The stored form of the key must describe the same key.
            let again = PublicJwk::from_json(&key.to_json()).expect("to_json of a parsed JWK parses");
            assert_eq!(&again, key);
        }
        // A kid request is verified against the account's stored key; any fixed key stands in.
        KeySource::Kid(_) => {
            let _ = parsed.verify(&fixed_key());
        }
    }
    let _ = parsed.payload_json::<Value>();
});

/// An EC P-256 public key (the point is the generator of the curve, a valid public key).
fn fixed_key() -> PublicJwk {
    PublicJwk::from_json(&serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
        "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
    }))
    .expect("a valid P-256 JWK")
}
