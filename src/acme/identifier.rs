//! ACME identifiers (RFC 8555 §9.7.7, RFC 8738): parsed and normalised once, at the edge.

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::acme::problem_type::ProblemType;

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

/// Why an identifier was refused: `rejectedIdentifier`, `malformed` (an IP that is not one) or
/// `unsupportedIdentifier`, and the detail for the client. Becomes a `Problem` with `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifierError {
    pub kind: ProblemType,
    pub detail: String,
}

impl IdentifierError {
    fn new(kind: ProblemType, detail: String) -> Self {
        Self { kind, detail }
    }
}

impl fmt::Display for IdentifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

impl std::error::Error for IdentifierError {}

impl Identifier {
    /// Checks and normalises one wire identifier (as a client orders it). Case is spelling and
    /// is folded; a trailing dot is refused rather than dropped, so the order never names
    /// something other than what the client sent (as Boulder and Pebble do).
    pub fn parse(raw: &RawIdentifier) -> Result<Self, IdentifierError> {
        match raw.kind.as_str() {
            // RFC 5280 §4.2.1.6: a dNSName has no trailing dot, so "a.example." can never be the
            // name in the certificate; say so instead of issuing for a rewritten name.
            "dns" if raw.value.ends_with('.') => Err(IdentifierError::new(
                ProblemType::RejectedIdentifier,
                format!("{:?} ends with a dot: order the name without it", raw.value),
            )),
            "dns" => normalize_dns(&raw.value).map(Identifier::Dns),
            "ip" => raw.value.parse::<IpAddr>().map(Identifier::Ip).map_err(|_| {
                IdentifierError::new(ProblemType::Malformed, format!("{:?} is not an IP address", raw.value))
            }),
            other => Err(IdentifierError::new(
                ProblemType::UnsupportedIdentifier,
                format!("identifier type {other:?} is not supported"),
            )),
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
pub fn normalize_dns(value: &str) -> Result<String, IdentifierError> {
    let reject = |why: &str| {
        IdentifierError::new(ProblemType::RejectedIdentifier, format!("{value:?} is not a valid DNS name: {why}"))
    };
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
    match label.strip_prefix("xn--") {
        Some(encoded) => check_a_label(encoded),
        None => Ok(()),
    }
}

/// RFC 5891 §5.4: an `xn--` label must be the A-label of a U-label, or a certificate would name
/// something no resolver or browser maps back to a host. It must be valid Punycode (RFC 3492)
/// that decodes to at least one non-ASCII character and encodes back to exactly itself. The full
/// IDNA2008 tables are not applied here; characters they never allow in a host name (controls,
/// spaces, upper case, invisible and dot-like characters) are refused.
fn check_a_label(encoded: &str) -> Result<(), &'static str> {
    let decoded = punycode::decode(encoded).ok_or("an xn-- label is not valid Punycode")?;
    if decoded.iter().all(char::is_ascii) {
        return Err("an xn-- label must encode at least one non-ASCII character");
    }
    if decoded.iter().any(|c| c.is_control() || c.is_whitespace() || c.is_uppercase() || DISALLOWED.contains(c)) {
        return Err("an xn-- label encodes a character not allowed in a host name");
    }
    if punycode::encode(&decoded).as_deref() != Some(encoded) {
        return Err("an xn-- label is not in canonical Punycode form");
    }
    Ok(())
}

/// Never in a U-label: zero-width and BOM characters, and the dots that IDNA maps to '.'.
const DISALLOWED: &[char] =
    &['\u{200b}', '\u{200c}', '\u{200d}', '\u{2060}', '\u{feff}', '\u{3002}', '\u{ff0e}', '\u{ff61}'];

/// RFC 3492 Punycode with the IDNA parameters (§5), over lower-case labels of at most 63 bytes.
mod punycode {
    const BASE: u32 = 36;
    const TMIN: u32 = 1;
    const TMAX: u32 = 26;
    const SKEW: u32 = 38;
    const DAMP: u32 = 700;
    const INITIAL_BIAS: u32 = 72;
    const INITIAL_N: u32 = 128;

    /// §6.1.
    fn adapt(delta: u32, points: u32, first: bool) -> u32 {
        let mut delta = if first { delta / DAMP } else { delta / 2 };
        delta += delta / points;
        let mut k = 0;
        while delta > ((BASE - TMIN) * TMAX) / 2 {
            delta /= BASE - TMIN;
            k += BASE;
        }
        k + ((BASE - TMIN + 1) * delta) / (delta + SKEW)
    }

    fn threshold(k: u32, bias: u32) -> u32 {
        if k <= bias {
            TMIN
        } else if k >= bias + TMAX {
            TMAX
        } else {
            k - bias
        }
    }

    /// Lower-case only: the label was lower-cased before it got here.
    fn digit(b: u8) -> Option<u32> {
        match b {
            b'a'..=b'z' => Some(u32::from(b - b'a')),
            b'0'..=b'9' => Some(u32::from(b - b'0') + 26),
            _ => None,
        }
    }

    fn digit_char(d: u32) -> Option<char> {
        match d {
            0..=25 => char::from_u32(u32::from(b'a') + d),
            26..=35 => char::from_u32(u32::from(b'0') + d - 26),
            _ => None,
        }
    }

    /// §6.2; `None` on any failure the section names (bad digit, overflow, a basic code point
    /// where only non-basic ones may be, input that ends inside a number).
    pub(super) fn decode(input: &str) -> Option<Vec<char>> {
        // The basic code points are those before the last delimiter, if anything precedes it.
        let (basic, extended) = match input.rfind('-') {
            Some(p) if p > 0 => (&input[..p], &input[p + 1..]),
            _ => ("", input),
        };
        if !basic.is_ascii() {
            return None;
        }
        let mut out: Vec<char> = basic.chars().collect();
        let (mut n, mut i, mut bias) = (INITIAL_N, 0u32, INITIAL_BIAS);
        let mut digits = extended.bytes();
        let mut next = digits.next();
        while let Some(mut b) = next {
            let (old_i, mut w, mut k) = (i, 1u32, BASE);
            loop {
                let d = digit(b)?;
                i = i.checked_add(d.checked_mul(w)?)?;
                let t = threshold(k, bias);
                if d < t {
                    break;
                }
                w = w.checked_mul(BASE - t)?;
                k += BASE;
                b = digits.next()?;
            }
            let len = u32::try_from(out.len()).ok()? + 1;
            bias = adapt(i - old_i, len, old_i == 0);
            n = n.checked_add(i / len)?;
            i %= len;
            let c = char::from_u32(n).filter(|c| !c.is_ascii())?;
            out.insert(usize::try_from(i).ok()?, c);
            i += 1;
            next = digits.next();
        }
        Some(out)
    }

    /// §6.3.
    pub(super) fn encode(input: &[char]) -> Option<String> {
        let mut out: String = input.iter().filter(|c| c.is_ascii()).collect();
        let b = u32::try_from(out.len()).ok()?;
        let total = u32::try_from(input.len()).ok()?;
        if b > 0 {
            out.push('-');
        }
        let (mut n, mut delta, mut bias, mut h) = (INITIAL_N, 0u32, INITIAL_BIAS, b);
        while h < total {
            let m = input.iter().map(|&c| u32::from(c)).filter(|&c| c >= n).min()?;
            delta = delta.checked_add((m - n).checked_mul(h + 1)?)?;
            n = m;
            for c in input.iter().map(|&c| u32::from(c)) {
                if c < n {
                    delta = delta.checked_add(1)?;
                }
                if c == n {
                    let (mut q, mut k) = (delta, BASE);
                    loop {
                        let t = threshold(k, bias);
                        if q < t {
                            break;
                        }
                        out.push(digit_char(t + (q - t) % (BASE - t))?);
                        q = (q - t) / (BASE - t);
                        k += BASE;
                    }
                    out.push(digit_char(q)?);
                    bias = adapt(delta, h + 1, h == b);
                    delta = 0;
                    h += 1;
                }
            }
            delta = delta.checked_add(1)?;
            n += 1;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(v: &str) -> Result<Identifier, IdentifierError> {
        Identifier::parse(&RawIdentifier { kind: "dns".into(), value: v.into() })
    }

    #[test]
    fn normalises_case_and_refuses_a_trailing_dot() {
        assert_eq!(dns("NAS.Lab.Example").unwrap(), Identifier::Dns("nas.lab.example".into()));
        for dotted in ["NAS.Lab.Example.", "a.lab.test.", "*.lab.test.", "localhost.", "a.lab.test.."] {
            let p = dns(dotted).unwrap_err();
            assert_eq!(p.kind.code(), "rejectedIdentifier", "{dotted}");
            assert!(p.detail.contains("ends with a dot"), "{dotted}: {}", p.detail);
        }
        // The CSR reader and the config still take one trailing dot as spelling.
        assert_eq!(normalize_dns("NAS.Lab.Example.").unwrap(), "nas.lab.example");
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
            // Not Punycode at all, or not the A-label of any host name.
            "xn--a.example",          // U+0080, a control character
            "xn--5a.example",         // U+009F, a control character
            "xn--9999999999.example", // a number that never ends (and overflows)
            "xn--a-b.example",        // ends inside a number
            "xn---abc.example",       // a delimiter with nothing before it is a digit, and not a valid one
            "xn--wca.example",        // upper-case U+00DC
            "xn--1ug.example",        // U+200D zero width joiner alone
        ] {
            let p = dns(bad).expect_err(bad);
            assert_eq!(p.kind.code(), "rejectedIdentifier", "{bad}");
        }
    }

    #[test]
    fn punycode_round_trips_rfc3492_samples() {
        for (unicode, encoded) in [
            ("bücher", "bcher-kva"),
            ("café", "caf-dma"),
            ("\u{1f4a9}", "ls8h"),
            // RFC 3492 §7.1 (B), Chinese (simplified).
            ("\u{4ed6}\u{4eec}\u{4e3a}\u{4ec0}\u{4e48}\u{4e0d}\u{8bf4}\u{4e2d}\u{6587}", "ihqwcrb4cv8a8dqg056pqjye"),
            // RFC 3492 §7.1 (A), Arabic (Egyptian).
            (
                "\u{0644}\u{064a}\u{0647}\u{0645}\u{0627}\u{0628}\u{062a}\u{0643}\u{0644}\u{0645}\u{0648}\u{0634}\u{0639}\u{0631}\u{0628}\u{064a}\u{061f}",
                "egbpdaj6bu4bxfgehfvwxn",
            ),
        ] {
            let chars: Vec<char> = unicode.chars().collect();
            assert_eq!(punycode::encode(&chars).as_deref(), Some(encoded), "{unicode}");
            assert_eq!(punycode::decode(encoded), Some(chars), "{encoded}");
            let name = format!("xn--{encoded}.example");
            assert_eq!(normalize_dns(&name.to_ascii_uppercase()).unwrap(), name);
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
