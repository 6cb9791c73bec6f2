//! Certificate serial numbers (RFC 5280 §4.1.2.2) in the one form vacme stores, compares and
//! sends: lower-case hex, no separators, no leading zero bytes (DER puts one before a serial
//! whose first bit is set; Vault, OpenBao and the store leave it out).

use std::fmt;

/// A normalised serial number; see the module text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(String);

impl Serial {
    /// From the content octets of the DER INTEGER (x509-parser's `raw_serial`).
    pub fn from_bytes(raw: &[u8]) -> Self {
        let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
        let hex: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
        Self(if hex.is_empty() { "00".to_owned() } else { hex })
    }

    /// From text: hex digits in either case, optionally in pairs separated by `:` or `-` (Vault's
    /// `2c:51:0e`, OpenSSL's `2C510E`). `None` for anything else, or for no digits at all.
    pub fn parse(text: &str) -> Option<Self> {
        let digits: String = text.chars().filter(|c| !matches!(c, ':' | '-')).collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let digits = digits.to_ascii_lowercase();
        let even = if digits.len() % 2 == 1 { format!("0{digits}") } else { digits };
        let trimmed = even.as_bytes().chunks(2).skip_while(|pair| *pair == b"00").count();
        let keep = trimmed.max(1) * 2;
        Some(Self(even[even.len() - keep..].to_owned()))
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Colon-separated pairs, the form Vault's paths and `serial_number` fields take (plain hex
    /// is "not found" there).
    pub fn colon_hex(&self) -> String {
        self.0.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap_or("00")).collect::<Vec<_>>().join(":")
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Serial> for String {
    fn from(s: Serial) -> String {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_form_from_bytes_and_from_text() {
        assert_eq!(Serial::from_bytes(&[0x00, 0x87, 0x65]).as_str(), "8765");
        assert_eq!(Serial::from_bytes(&[0x0a, 0x01]).as_str(), "0a01");
        assert_eq!(Serial::from_bytes(&[0x00]).as_str(), "00");
        assert_eq!(Serial::from_bytes(&[]).as_str(), "00");
        assert_eq!(Serial::parse("0A:0b:1C").unwrap().as_str(), "0a0b1c");
        assert_eq!(Serial::parse("00:87:65").unwrap(), Serial::from_bytes(&[0x00, 0x87, 0x65]));
        assert_eq!(Serial::parse("a0b").unwrap().as_str(), "0a0b");
        assert_eq!(Serial::parse("2c-51-0E").unwrap().as_str(), "2c510e");
        assert_eq!(Serial::parse("00").unwrap().as_str(), "00");
        for bad in ["", ":", "xyz", "0a 0b", "order-1"] {
            assert_eq!(Serial::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Serial::parse("0a0B1c").unwrap().colon_hex(), "0a:0b:1c");
        assert_eq!(Serial::parse("a0b").unwrap().colon_hex(), "0a:0b");
        assert_eq!(Serial::parse("2c:51:0E").unwrap().colon_hex(), "2c:51:0e");
    }
}
