//! ACME Renewal Information (RFC 9773): certificate identifiers and suggested windows.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use x509_parser::{extensions::ParsedExtension, pem::Pem, prelude::FromDer};

use crate::acme::Problem;

/// RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial DER content octets).
/// `None` when the leaf has no authority key identifier (then there is no certID).
pub fn cert_id_of_der(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let aki = cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    })?;
    Some(format!("{}.{}", URL_SAFE_NO_PAD.encode(aki), URL_SAFE_NO_PAD.encode(cert.raw_serial())))
}

/// The certID of the first certificate in a PEM chain.
pub fn cert_id_of_pem(chain_pem: &str) -> Option<String> {
    let pem = Pem::iter_from_buffer(chain_pem.as_bytes()).next()?.ok()?;
    cert_id_of_der(&pem.contents)
}

/// Checks the shape of a certID from a client (path segment or `replaces`): two non-empty
/// unpadded base64url parts. Returns it unchanged, since that is how it was stored.
pub fn parse_cert_id(s: &str) -> Result<&str, Problem> {
    let bad = || Problem::malformed("certID must be base64url(AKI keyIdentifier) \".\" base64url(serial)");
    let (aki, serial) = s.split_once('.').ok_or_else(bad)?;
    let aki = URL_SAFE_NO_PAD.decode(aki).map_err(|_| bad())?;
    let serial = URL_SAFE_NO_PAD.decode(serial).map_err(|_| bad())?;
    if aki.is_empty() || serial.is_empty() || aki.len() > 64 || serial.len() > 21 {
        return Err(bad());
    }
    Ok(s)
}

/// The suggested window: from `start_percent` to `end_percent` of the validity period.
pub fn window(not_before: i64, not_after: i64, start_percent: u8, end_percent: u8) -> (i64, i64) {
    let life = (not_after - not_before).max(0);
    let at = |p: u8| not_before + life * i64::from(p) / 100;
    (at(start_percent), at(end_percent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_id_shape() {
        // RFC 9773 §4.1's example: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
        // serial 00:87:65:43:21.
        let aki = [
            0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01,
            0xC8, 0xD4,
        ];
        let id = format!("{}.{}", URL_SAFE_NO_PAD.encode(aki), URL_SAFE_NO_PAD.encode([0x00, 0x87, 0x65, 0x43, 0x21]));
        assert_eq!(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
        assert_eq!(parse_cert_id(&id).unwrap(), id);
        for bad in
            ["", "abc", ".AIdlQyE", "aYhba4dGQEHhs3uEe6CuLN4ByNQ.", "a+b.c", "aYhba4dGQEHhs3uEe6CuLN4ByNQ=.AIdlQyE"]
        {
            assert!(parse_cert_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn window_is_a_share_of_the_lifetime() {
        assert_eq!(window(0, 90, 33, 67), (29, 60));
        assert_eq!(window(100, 100, 33, 67), (100, 100));
    }
}
