//! External account binding (RFC 8555 §7.3.4): keys derived from one server secret, and the
//! binding JWS check. The name scope a key gives its accounts is admission policy
//! (`policy::scope`).
//!
//! An EAB key is HMAC-SHA256(secret, "vacme-eab-v1:" || kid). The store keeps the kid and its
//! scope, never the key, so a copy of the database mints nothing.

use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    hmac,
    rand::{SecureRandom, SystemRandom},
};
use serde_json::Value;

use crate::{
    acme::{Problem, ProblemType},
    jws::{Flattened, PublicJwk},
    store::Store,
};

const SECRET_LEN: usize = 32;

/// The secret every EAB key is derived from. Never printed.
#[derive(Clone)]
pub struct EabSecret {
    key: hmac::Key,
}

impl std::fmt::Debug for EabSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EabSecret(***)")
    }
}

/// Why the secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EabSecretError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: must hold at least {SECRET_LEN} bytes")]
    TooShort(PathBuf),
    #[error("no randomness available")]
    Random,
}

impl EabSecret {
    /// Reads the secret, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, EabSecretError> {
        let io = |source| EabSecretError::Io { path: path.to_owned(), source };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut fresh = [0u8; SECRET_LEN];
                SystemRandom::new().fill(&mut fresh).map_err(|_| EabSecretError::Random)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                match crate::secret::write_private(path, &fresh) {
                    Ok(()) => fresh.to_vec(),
                    // Another process (a replica, the CLI) made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path).map_err(io)?,
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        };
        if bytes.len() < SECRET_LEN {
            return Err(EabSecretError::TooShort(path.to_owned()));
        }
        Ok(Self::from_bytes(&bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, bytes) }
    }

    /// The HMAC key of `kid` (32 bytes).
    pub fn key_of(&self, kid: &str) -> Vec<u8> {
        hmac::sign(&self.key, format!("vacme-eab-v1:{kid}").as_bytes()).as_ref().to_vec()
    }

    /// A fresh kid and its key, base64url as clients take them (`--eab-kid`, `--eab-hmac-key`).
    /// Neither starts with `-`: base64url makes one key in 64 do so, and a command line parser
    /// (certbot's argparse) then reads `--eab-hmac-key -x...` as a flag with no value. Such a
    /// draw is thrown away and another made.
    pub fn new_key(&self) -> Result<(String, String), EabSecretError> {
        let rng = SystemRandom::new();
        // Each draw is refused with probability about 1/64; 64 refusals in a row mean the
        // randomness is broken, not bad luck.
        for _ in 0..64 {
            let mut raw = [0u8; 12];
            rng.fill(&mut raw).map_err(|_| EabSecretError::Random)?;
            let kid = format!("kid-{}", URL_SAFE_NO_PAD.encode(raw));
            let key = URL_SAFE_NO_PAD.encode(self.key_of(&kid));
            if !kid.starts_with('-') && !key.starts_with('-') {
                return Ok((kid, key));
            }
        }
        Err(EabSecretError::Random)
    }

    /// Checks the `externalAccountBinding` of a newAccount request (RFC 8555 §7.3.4) and returns
    /// its kid. The key's state (unused, unexpired, unrevoked) is the caller's to check.
    pub fn verify_binding(&self, binding: &Value, account_jwk: &PublicJwk, url: &str) -> Result<String, Problem> {
        let bad = |m: &str| Problem::malformed(format!("externalAccountBinding: {m}"));
        let flat: Flattened = serde_json::from_value(binding.clone())
            .map_err(|_| bad("must be a flattened JWS (protected, payload, signature)"))?;
        let decode =
            |s: &str, what: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| bad(&format!("{what} is not base64url")));
        let header: Value = serde_json::from_slice(&decode(&flat.protected, "protected header")?)
            .map_err(|_| bad("protected header is not JSON"))?;
        let header = header.as_object().ok_or_else(|| bad("protected header is not a JSON object"))?;
        let alg = match header.get("alg").and_then(Value::as_str) {
            Some("HS256") => hmac::HMAC_SHA256,
            Some("HS384") => hmac::HMAC_SHA384,
            Some("HS512") => hmac::HMAC_SHA512,
            other => return Err(bad(&format!("alg {other:?} is not HS256, HS384 or HS512"))),
        };
        if header.contains_key("nonce") {
            return Err(bad("the inner JWS must not have a nonce"));
        }
        if header.get("url").and_then(Value::as_str) != Some(url) {
            return Err(bad("url must equal the newAccount URL"));
        }
        let kid = header.get("kid").and_then(Value::as_str).filter(|k| !k.is_empty() && k.len() <= 128);
        let kid = kid.ok_or_else(|| bad("kid is missing"))?;
        let payload: Value =
            serde_json::from_slice(&decode(&flat.payload, "payload")?).map_err(|_| bad("payload is not JSON"))?;
        if PublicJwk::from_json(&payload).ok().as_ref() != Some(account_jwk) {
            return Err(bad("payload must be the account key (the jwk of the outer JWS)"));
        }
        let signature = decode(&flat.signature, "signature")?;
        let key = hmac::Key::new(alg, &self.key_of(kid));
        let signing_input = format!("{}.{}", flat.protected, flat.payload);
        // Constant time: ring compares the MAC without an early exit.
        hmac::verify(&key, signing_input.as_bytes(), &signature)
            .map_err(|_| Problem::unauthorized("externalAccountBinding: the MAC does not verify for this kid"))?;
        Ok(kid.to_owned())
    }
}

/// What a newAccount request's `externalAccountBinding` yields: the kid of an EAB key whose MAC
/// verified and which is still usable, or `None` without a binding (`externalAccountRequired`
/// when this server requires one). RFC 8555 §7.3.4: the MAC first, then the key's state.
pub async fn account_binding(
    store: &Store,
    secret: &EabSecret,
    required: bool,
    binding: Option<&Value>,
    jwk: &PublicJwk,
    url: &str,
    now: i64,
) -> Result<Option<String>, Problem> {
    let Some(binding) = binding else {
        if required {
            return Err(Problem::new(
                ProblemType::ExternalAccountRequired,
                "this server requires an external account binding (ask the operator for an EAB kid and key)",
            ));
        }
        return Ok(None);
    };
    let kid = secret.verify_binding(binding, jwk, url)?;
    // The MAC verified, so the kid was made by this server's secret; its record says whether it is usable.
    let key = store.eab_key(&kid).await?.ok_or_else(|| Problem::unauthorized("externalAccountBinding: unknown kid"))?;
    match key.state(now) {
        "unused" => Ok(Some(kid)),
        "used" => Err(Problem::unauthorized("externalAccountBinding: this EAB key was already used")),
        "expired" => Err(Problem::unauthorized("externalAccountBinding: this EAB key has expired")),
        _ => Err(Problem::unauthorized("externalAccountBinding: this EAB key was revoked")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jwk() -> PublicJwk {
        PublicJwk::Ed25519 { x: vec![7; 32] }
    }

    fn binding(secret: &EabSecret, kid: &str, key_of_kid: &str, url: &str, payload: &Value, alg: &str) -> Value {
        let protected = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": kid, "url": url}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.key_of(key_of_kid));
        let sig = hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
        json!({"protected": protected, "payload": payload, "signature": URL_SAFE_NO_PAD.encode(sig.as_ref())})
    }

    #[test]
    fn binding_checks() {
        let secret = EabSecret::from_bytes(&[1; 32]);
        let url = "https://acme.lab/acme/new-account";
        let good = binding(&secret, "kid-1", "kid-1", url, &jwk().to_json(), "HS256");
        assert_eq!(secret.verify_binding(&good, &jwk(), url).unwrap(), "kid-1");

        let wrong_key = binding(&secret, "kid-1", "kid-2", url, &jwk().to_json(), "HS256");
        assert_eq!(secret.verify_binding(&wrong_key, &jwk(), url).unwrap_err().kind.code(), "unauthorized");
        let other_secret = EabSecret::from_bytes(&[2; 32]);
        assert_eq!(other_secret.verify_binding(&good, &jwk(), url).unwrap_err().kind.code(), "unauthorized");

        let wrong_url = binding(&secret, "kid-1", "kid-1", "https://acme.lab/other", &jwk().to_json(), "HS256");
        assert!(secret.verify_binding(&wrong_url, &jwk(), url).unwrap_err().detail.contains("url"));
        let other_jwk =
            binding(&secret, "kid-1", "kid-1", url, &PublicJwk::Ed25519 { x: vec![8; 32] }.to_json(), "HS256");
        assert!(secret.verify_binding(&other_jwk, &jwk(), url).unwrap_err().detail.contains("account key"));
        let none = binding(&secret, "kid-1", "kid-1", url, &jwk().to_json(), "none");
        assert!(secret.verify_binding(&none, &jwk(), url).unwrap_err().detail.contains("alg"));
        assert_eq!(secret.verify_binding(&json!("x"), &jwk(), url).unwrap_err().kind.code(), "malformed");
    }

    #[test]
    fn no_kid_or_key_starts_with_a_dash() {
        let secret = EabSecret::from_bytes(&[7u8; 32]);
        // About 1 in 64 raw draws has a key starting with '-': 4000 draws would show ~60.
        let mut first = std::collections::HashSet::new();
        for _ in 0..4000 {
            let (kid, key) = secret.new_key().unwrap();
            assert!(!kid.starts_with('-') && !key.starts_with('-'), "{kid} {key}");
            assert_eq!(URL_SAFE_NO_PAD.encode(secret.key_of(&kid)), key, "the key is still the kid's key");
            first.extend(key.chars().next());
        }
        // Still drawn from the rest of the alphabet (including '_'), not some fixed set.
        assert!(first.len() >= 60, "{} first characters seen", first.len());
    }

    #[test]
    fn keys_are_derived_per_kid() {
        let secret = EabSecret::from_bytes(&[1; 32]);
        let (kid, key) = secret.new_key().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&key).unwrap(), secret.key_of(&kid));
        let (kid2, key2) = secret.new_key().unwrap();
        assert!(kid != kid2 && key != key2);
        assert!(!format!("{secret:?}").contains("1, 1"));
    }

    #[test]
    fn secret_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eab.secret");
        let a = EabSecret::load_or_create(&path).unwrap();
        let b = EabSecret::load_or_create(&path).unwrap();
        assert_eq!(a.key_of("k"), b.key_of("k"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("short"), b"abc").unwrap();
        assert!(matches!(EabSecret::load_or_create(&dir.path().join("short")), Err(EabSecretError::TooShort(_))));
    }
}
