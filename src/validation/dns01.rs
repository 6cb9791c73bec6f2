//! dns-01 (RFC 8555 §8.4): a TXT record at `_acme-challenge.<name>` holding
//! base64url(SHA-256(key authorization)). CNAMEs are followed (acme-dns style delegation), and
//! several TXT values at the name are normal.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::Resolver;
use crate::acme::{Identifier, Problem};

/// The TXT value a client must publish for `key_authorization`.
pub fn txt_value(key_authorization: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes()))
}

pub async fn validate(resolver: &Resolver, id: &Identifier, key_authorization: &str) -> Result<(), Problem> {
    let Identifier::Dns(name) = id.base() else {
        return Err(Problem::unauthorized("dns-01 cannot prove an IP address"));
    };
    let record = format!("_acme-challenge.{name}");
    let found = resolver.lookup_txt(&record).await?;
    let expected = txt_value(key_authorization);
    if found.iter().any(|v| v.trim() == expected) {
        return Ok(());
    }
    Err(match found.as_slice() {
        [] => Problem::unauthorized(format!("No TXT record found at {record}")),
        values => {
            let shown: Vec<String> =
                values.iter().take(5).map(|v| format!("{:?}", v.chars().take(64).collect::<String>())).collect();
            Problem::unauthorized(format!("Incorrect TXT record {} found at {record}", shown.join(", ")))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8555_txt_value_shape() {
        // 43 characters of base64url: a SHA-256 digest.
        let v = txt_value("token.thumbprint");
        assert_eq!(v.len(), 43);
        assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
