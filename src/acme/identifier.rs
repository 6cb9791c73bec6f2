//! ACME identifiers (RFC 8555 §9.7.7, RFC 8738): parsed and normalised once, at the edge.

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::acme::problem::Problem;

/// A checked identifier: a DNS name in canonical form, or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Identifier {
    /// Lower case ASCII (A-labels), no trailing dot, every label valid; may start with `*.`.
    Dns(String),
    Ip(IpAddr),
}

/// The wire shape before checking, so an unknown type is `unsupportedIdentifier`, not `malformed`.
#[derive(Clone, Debug, Deserialize)]
pub struct RawIdentifier {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

impl Identifier {
    /// Checks and normalises one wire identifier.
    pub fn parse(raw: &RawIdentifier) -> Result<Self, Problem> {
        match raw.kind.as_str() {
            "dns" => normalize_dns(&raw.value).map(Identifier::Dns),
            "ip" => raw
                .value
                .parse::<IpAddr>()
                .map(Identifier::Ip)
                .map_err(|_| Problem::malformed(format!("{:?} is not an IP address", raw.value))),
            other => Err(Problem::unsupported_identifier(format!("identifier type {other:?} is not supported"))),
        }
    }

    /// The value as it appears in a certificate SAN and in the wire JSON.
    pub fn value(&self) -> String {
        match self {
            Identifier::Dns(name) => name.clone(),
            Identifier::Ip(ip) => ip.to_string(),
        }
    }

    /// `true` for `*.example` names.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Identifier::Dns(n) if n.starts_with("*."))
    }

    /// The name whose control is proven: a wildcard's base domain (RFC 8555 §7.1.3).
    pub fn base(&self) -> Identifier {
        match self {
            Identifier::Dns(n) => Identifier::Dns(n.strip_prefix("*.").unwrap_or(n).to_owned()),
            ip => ip.clone(),
        }
    }

    /// The wire type name, `dns` or `ip`.
    pub fn kind(&self) -> &'static str {
        match self {
            Identifier::Dns(_) => "dns",
            Identifier::Ip(_) => "ip",
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.value())
    }
}

/// Lower-cases, drops one trailing dot and checks every label (RFC 1035 §2.3.1, RFC 5891 A-labels).
pub fn normalize_dns(value: &str) -> Result<String, Problem> {
    let reject = |why: &str| Problem::rejected_identifier(format!("{value:?} is not a valid DNS name: {why}"));
    let name = value.strip_suffix('.').unwrap_or(value).to_ascii_lowercase();
    if name.is_empty() {
        return Err(reject("empty"));
    }
    if name.len() > 253 {
        return Err(reject("longer than 253 characters"));
    }
    if !name.is_ascii() {
        return Err(reject("non-ASCII; send the punycode (xn--) form"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(reject("an IP address must use an \"ip\" identifier"));
    }
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name.as_str()),
    };
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.len() < 2 && !(labels.len() == 1 && !wildcard && labels[0] == "localhost") {
        // A single label is not a name a CA can meaningfully certify.
        return Err(reject("needs at least two labels"));
    }
    for label in &labels {
        check_label(label).map_err(reject)?;
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(reject("the last label is all digits"));
    }
    Ok(name)
}

fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("empty label");
    }
    if label.len() > 63 {
        return Err("a label is longer than 63 characters");
    }
    if label.contains('*') {
        return Err("a wildcard may only be the whole first label");
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("a label has a character other than a-z, 0-9 and '-'");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label starts or ends with '-'");
    }
    // RFC 5891 §4.2.3.1: "--" in positions 3-4 is reserved for A-labels ("xn--").
    if label.len() >= 4 && &label[2..4] == "--" && !label.starts_with("xn--") {
        return Err("a label has '--' in positions 3 and 4 but is not an xn-- label");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(v: &str) -> Result<Identifier, Problem> {
        Identifier::parse(&RawIdentifier { kind: "dns".into(), value: v.into() })
    }

    #[test]
    fn normalises_case_and_trailing_dot() {
        assert_eq!(dns("NAS.Lab.Example.").unwrap(), Identifier::Dns("nas.lab.example".into()));
        assert_eq!(dns("*.lab.example").unwrap(), Identifier::Dns("*.lab.example".into()));
        assert_eq!(dns("xn--bcher-kva.example").unwrap(), Identifier::Dns("xn--bcher-kva.example".into()));
    }

    #[test]
    fn rejects_bad_names() {
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}example", "abcdefghi.".repeat(26));
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "a_b.example",
            "bücher.example",
            "*.*.example",
            "a.*.example",
            "*a.example",
            "1.2.3.4",
            "example",
            "a.123",
            "ab--c.example",
            "a b.example",
            long_label.as_str(),
            long_name.as_str(),
            "*.",
            "example..",
        ] {
            let p = dns(bad).expect_err(bad);
            assert_eq!(p.kind.code(), "rejectedIdentifier", "{bad}");
        }
    }

    #[test]
    fn ip_and_unknown_types() {
        let ip = Identifier::parse(&RawIdentifier { kind: "ip".into(), value: "10.0.0.1".into() }).unwrap();
        assert_eq!(ip.value(), "10.0.0.1");
        let p = Identifier::parse(&RawIdentifier { kind: "email".into(), value: "a@b.c".into() }).unwrap_err();
        assert_eq!(p.kind.code(), "unsupportedIdentifier");
    }

    #[test]
    fn wire_shape() {
        let v = serde_json::to_value(Identifier::Dns("a.example".into())).unwrap();
        assert_eq!(v, serde_json::json!({"type": "dns", "value": "a.example"}));
    }

    #[test]
    fn normalisation_is_idempotent() {
        for n in ["A.B.example.", "*.X.example", "xn--bcher-kva.EXAMPLE"] {
            let once = normalize_dns(n).unwrap();
            assert_eq!(normalize_dns(&once).unwrap(), once);
        }
    }
}
