//! vacme's own strict reader of PKCS#10 certification requests (RFC 2986) in DER (X.690 §10).
//!
//! Why a second parser: the names a CSR carries are read twice, once here and once by the CA
//! (Vault/OpenBao parse the same bytes with Go's crypto/x509, and a role with `use_csr_sans`
//! takes its SANs from them). Two lenient parsers disagree on hostile input: x509-parser read
//! only the first `extensionRequest` attribute and left out a SAN it could not parse, while Go
//! merges every `extensionRequest` and skips GeneralName forms it does not know, so OpenBao
//! signed names vacme never saw. This reader therefore accepts only a CSR it understood
//! completely: every TLV consumed exactly, definite minimal lengths, no trailing bytes anywhere,
//! one `extensionRequest`, only extensions whose content it parses, and a SAN of only dNSName and
//! iPAddress entries. Whatever it cannot read is refused with a sentence saying what it was.

use std::net::IpAddr;

/// Why a CSR was refused: a sentence for the client's `badCSR` detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) String);

type Result<T> = std::result::Result<T, Refusal>;

fn refuse<T>(why: impl Into<String>) -> Result<T> {
    Err(Refusal(why.into()))
}

// Universal tags (X.680 §8.4) and the context tags this reader meets.
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const NUMERIC_STRING: u8 = 0x12;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const VISIBLE_STRING: u8 = 0x1a;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// RFC 2986 §4.1: `attributes [0] IMPLICIT Attributes`, a constructed SET.
const ATTRIBUTES: u8 = 0xa0;
/// RFC 5280 §4.2.1.6: `dNSName [2] IA5String` and `iPAddress [7] OCTET STRING`, implicit.
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;

// Object identifiers, in dotted form as `Reader::oid` renders them.
const OID_EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";
const OID_CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";
const OID_COMMON_NAME: &str = "2.5.4.3";
const OID_SAN: &str = "2.5.29.17";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_KEY_USAGE: &str = "2.5.29.15";
const OID_EXT_KEY_USAGE: &str = "2.5.29.37";
const OID_TLS_FEATURE: &str = "1.3.6.1.5.5.7.1.24";
const OID_SUBJECT_KEY_ID: &str = "2.5.29.14";

/// Longest length this reader takes (4 length octets); a CSR is a few kilobytes at most.
const MAX_LEN_OCTETS: usize = 4;

/// One TLV read from the input: its tag, its content, and all of its bytes.
#[derive(Clone, Copy, Debug)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    raw: &'a [u8],
}

/// A cursor over DER bytes that reads one TLV at a time and must end exactly at the end.
struct Reader<'a> {
    rest: &'a [u8],
    /// What is being read, for refusals ("the SAN extension").
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8], what: &'static str) -> Self {
        Self { rest: input, what }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// X.690 §8.1 with the DER rules of §10.1: low tag numbers only, definite lengths in the
    /// fewest octets (short form below 128, no leading zero octet in the long form).
    fn any(&mut self) -> Result<Tlv<'a>> {
        let what = self.what;
        let input = self.rest;
        let (&tag, after_tag) =
            input.split_first().ok_or_else(|| Refusal(format!("CSR is not strict DER: {what} ends early")))?;
        if tag & 0x1f == 0x1f {
            return refuse(format!("CSR is not strict DER: {what} has a high-number tag, which no CSR field uses"));
        }
        let (&first, after_len) =
            after_tag.split_first().ok_or_else(|| Refusal(format!("CSR is not strict DER: {what} ends early")))?;
        let (len, after_len) = if first < 0x80 {
            (usize::from(first), after_len)
        } else if first == 0x80 {
            return refuse(format!("CSR is not strict DER: {what} uses an indefinite length, which DER forbids"));
        } else {
            let n = usize::from(first & 0x7f);
            if n > MAX_LEN_OCTETS || n > after_len.len() {
                return refuse(format!("CSR is not strict DER: {what} has a length that does not fit the input"));
            }
            let (octets, rest) = after_len.split_at(n);
            if octets[0] == 0 {
                return refuse(format!(
                    "CSR is not strict DER: {what} has a length with a leading zero octet, which DER forbids"
                ));
            }
            let len = octets.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 {
                return refuse(format!(
                    "CSR is not strict DER: {what} has a long-form length for a short value, which DER forbids"
                ));
            }
            (len, rest)
        };
        if len > after_len.len() {
            return refuse(format!("CSR is not strict DER: {what} has a length longer than its input"));
        }
        let (content, rest) = after_len.split_at(len);
        let raw = &input[..input.len() - rest.len()];
        self.rest = rest;
        Ok(Tlv { tag, content, raw })
    }

    /// The next TLV, which must have `tag`.
    fn expect(&mut self, tag: u8, name: &str) -> Result<Tlv<'a>> {
        let what = self.what;
        match self.peek_tag() {
            Some(t) if t == tag => self.any(),
            Some(t) => refuse(format!("CSR is not strict DER: {what}: expected {name}, found tag 0x{t:02x}")),
            None => refuse(format!("CSR is not strict DER: {what}: expected {name}, found the end")),
        }
    }

    /// A reader over the content of the next constructed TLV with `tag`.
    fn nested(&mut self, tag: u8, name: &str, what: &'static str) -> Result<Reader<'a>> {
        Ok(Reader::new(self.expect(tag, name)?.content, what))
    }

    /// Refuses anything left: every TLV must be consumed exactly.
    fn finish(&self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            refuse(format!("CSR is not strict DER: {} has trailing bytes", self.what))
        }
    }

    /// X.690 §8.19: an OBJECT IDENTIFIER, each subidentifier in the fewest base-128 octets;
    /// returned in dotted form.
    fn oid(&mut self) -> Result<String> {
        let what = self.what;
        let content = self.expect(OID, "an OBJECT IDENTIFIER")?.content;
        let bad = || Refusal(format!("CSR is not strict DER: {what} has a malformed OBJECT IDENTIFIER"));
        if content.is_empty() || content.last().is_some_and(|b| b & 0x80 != 0) {
            return Err(bad());
        }
        let mut arcs: Vec<u64> = Vec::new();
        let mut value: u64 = 0;
        let mut start = true;
        for &b in content {
            if start && b == 0x80 {
                return Err(bad()); // a leading 0x80 octet is not minimal
            }
            if value > (u64::MAX >> 7) {
                return Err(bad());
            }
            value = (value << 7) | u64::from(b & 0x7f);
            start = b & 0x80 == 0;
            if start {
                if arcs.is_empty() {
                    // The first subidentifier packs two arcs (X.690 §8.19.4).
                    let first = (value / 40).min(2);
                    arcs.push(first);
                    arcs.push(value - first * 40);
                } else {
                    arcs.push(value);
                }
                value = 0;
            }
        }
        Ok(arcs.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
    }

    /// X.690 §8.3, §10: an INTEGER in the fewest octets; its content bytes.
    fn integer(&mut self) -> Result<&'a [u8]> {
        let what = self.what;
        let content = self.expect(INTEGER, "an INTEGER")?.content;
        match content {
            [] => refuse(format!("CSR is not strict DER: {what} has an empty INTEGER")),
            [0x00, next, ..] if next & 0x80 == 0 => {
                refuse(format!("CSR is not strict DER: {what} has a non-minimal INTEGER"))
            }
            [0xff, next, ..] if next & 0x80 != 0 => {
                refuse(format!("CSR is not strict DER: {what} has a non-minimal INTEGER"))
            }
            _ => Ok(content),
        }
    }

    /// X.690 §11.1: a DER BOOLEAN is one octet, 0x00 or 0xFF.
    fn boolean(&mut self) -> Result<bool> {
        let what = self.what;
        match self.expect(BOOLEAN, "a BOOLEAN")?.content {
            [0x00] => Ok(false),
            [0xff] => Ok(true),
            _ => {
                refuse(format!("CSR is not strict DER: {what} has a BOOLEAN that is not DER (one octet, 0x00 or 0xFF)"))
            }
        }
    }

    /// X.690 §8.6, §11.2: a BIT STRING whose unused bits are at most 7 and zero.
    fn bit_string(&mut self) -> Result<&'a [u8]> {
        let what = self.what;
        let content = self.expect(BIT_STRING, "a BIT STRING")?.content;
        let bad = || refuse(format!("CSR is not strict DER: {what} has a malformed BIT STRING"));
        match content {
            [] => bad(),
            [unused, bits @ ..] => {
                let mask = 1u16.checked_shl(u32::from(*unused)).map(|m| m - 1).unwrap_or(u16::MAX);
                if *unused > 7 || (bits.is_empty() && *unused != 0) {
                    return bad();
                }
                if bits.last().is_some_and(|last| u16::from(*last) & mask != 0) {
                    return bad();
                }
                Ok(bits)
            }
        }
    }
}

/// What vacme takes from a CSR: only what this module read and understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pkcs10<'a> {
    /// The DER of `certificationRequestInfo`: the bytes the signature covers.
    pub(crate) info_raw: &'a [u8],
    /// The DER of `subjectPKInfo`.
    pub(crate) spki_raw: &'a [u8],
    /// The subject's one commonName, if it has one.
    pub(crate) common_name: Option<String>,
    /// The subjectAltName entries, in order: never empty.
    pub(crate) san: Vec<SanEntry>,
}

/// One entry of the subjectAltName extension: the only two forms vacme accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SanEntry {
    /// A dNSName, as written (ASCII, not empty, no trailing dot).
    Dns(String),
    /// An iPAddress of 4 or 16 octets.
    Ip(IpAddr),
}

/// Reads a PKCS#10 CSR strictly (see the module documentation); nothing in it goes unread.
pub(crate) fn parse_csr(der: &[u8]) -> Result<Pkcs10<'_>> {
    // RFC 2986 §4.2: CertificationRequest ::= SEQUENCE { certificationRequestInfo,
    // signatureAlgorithm AlgorithmIdentifier, signature BIT STRING }.
    let mut outer = Reader::new(der, "the CSR");
    let mut csr = outer.nested(SEQUENCE, "a SEQUENCE", "the CSR")?;
    outer.finish()?;
    let info = csr.expect(SEQUENCE, "certificationRequestInfo")?;
    algorithm_identifier(&mut csr, "the CSR's signature algorithm")?;
    csr.bit_string()?;
    csr.finish()?;

    // RFC 2986 §4.1: CertificationRequestInfo ::= SEQUENCE { version INTEGER { v1(0) },
    // subject Name, subjectPKInfo, attributes [0] Attributes }.
    let mut body = Reader::new(info.content, "the CSR's certificationRequestInfo");
    if body.integer()? != [0] {
        return refuse("CSR version is not 0 (v1), the only version RFC 2986 defines");
    }
    let subject = body.expect(SEQUENCE, "the subject Name")?;
    let common_name = subject_common_name(subject.content)?;
    let spki = body.expect(SEQUENCE, "subjectPKInfo")?;
    let mut key = Reader::new(spki.content, "the CSR's subjectPKInfo");
    algorithm_identifier(&mut key, "the CSR's key algorithm")?;
    key.bit_string()?;
    key.finish()?;
    let attributes = body.nested(ATTRIBUTES, "the attributes [0]", "the CSR's attributes")?;
    body.finish()?;
    let extensions = extension_request(attributes)?;
    let san = read_extensions(extensions)?;
    Ok(Pkcs10 { info_raw: info.raw, spki_raw: spki.raw, common_name, san })
}

/// RFC 5280 §4.1.1.2: AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }.
fn algorithm_identifier(r: &mut Reader<'_>, what: &'static str) -> Result<()> {
    let mut alg = r.nested(SEQUENCE, "an AlgorithmIdentifier", what)?;
    alg.oid()?;
    if !alg.is_empty() {
        alg.any()?;
    }
    alg.finish()
}

/// RFC 5280 §4.1.2.4: Name ::= SEQUENCE OF RelativeDistinguishedName, each a SET OF
/// AttributeTypeAndValue. At most one commonName, a UTF8String, PrintableString or IA5String;
/// every other attribute must hold a string.
fn subject_common_name(content: &[u8]) -> Result<Option<String>> {
    let mut rdns = Reader::new(content, "the CSR subject");
    let mut cn: Option<String> = None;
    while !rdns.is_empty() {
        let mut set = rdns.nested(SET, "a RelativeDistinguishedName SET", "the CSR subject")?;
        if set.is_empty() {
            return refuse("CSR subject has an empty RelativeDistinguishedName");
        }
        while !set.is_empty() {
            let mut atv = set.nested(SEQUENCE, "an AttributeTypeAndValue", "the CSR subject")?;
            let kind = atv.oid()?;
            let value = atv.any()?;
            atv.finish()?;
            if kind == OID_COMMON_NAME {
                if cn.is_some() {
                    return refuse("CSR subject has 2 commonName attributes; at most one is accepted");
                }
                cn = Some(cn_text(value)?);
            } else if !is_string(value.tag) {
                return refuse(format!(
                    "CSR subject attribute {kind} is not a string (tag 0x{:02x}), which vacme does not accept",
                    value.tag
                ));
            }
        }
    }
    Ok(cn)
}

/// The directory string types X.520 and RFC 5280 allow in a Name.
fn is_string(tag: u8) -> bool {
    matches!(
        tag,
        UTF8_STRING
            | NUMERIC_STRING
            | PRINTABLE_STRING
            | TELETEX_STRING
            | IA5_STRING
            | VISIBLE_STRING
            | UNIVERSAL_STRING
            | BMP_STRING
    )
}

/// A commonName's text: only the three string types whose text every parser reads the same.
fn cn_text(value: Tlv<'_>) -> Result<String> {
    let text = match value.tag {
        UTF8_STRING => std::str::from_utf8(value.content).ok(),
        // X.680 §41.4: PrintableString's repertoire.
        PRINTABLE_STRING => std::str::from_utf8(value.content)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))),
        IA5_STRING => std::str::from_utf8(value.content).ok().filter(|s| s.is_ascii()),
        _ => return refuse("CSR commonName must be a UTF8String, PrintableString or IA5String"),
    };
    text.map(str::to_owned).ok_or_else(|| Refusal("CSR commonName is not valid text for its string type".into()))
}

/// RFC 2986 §4.1 and RFC 2985 §5.4.2: exactly one extensionRequest attribute whose value SET
/// holds exactly one Extensions; challengePassword is the one other attribute allowed (read,
/// then ignored). Returns the Extensions' content.
fn extension_request<'a>(mut attributes: Reader<'a>) -> Result<&'a [u8]> {
    let mut found: Vec<&'a [u8]> = Vec::new();
    while !attributes.is_empty() {
        let mut attr = attributes.nested(SEQUENCE, "an Attribute", "the CSR's attributes")?;
        let kind = attr.oid()?;
        let mut values = attr.nested(SET, "the attribute's value SET", "the CSR's attributes")?;
        attr.finish()?;
        let mut count = 0usize;
        let mut first = None;
        while !values.is_empty() {
            let v = values.any()?;
            first = first.or(Some(v));
            count += 1;
        }
        match kind.as_str() {
            OID_EXTENSION_REQUEST => {
                if count != 1 {
                    return refuse(format!(
                        "CSR extensionRequest attribute has {count} values; exactly one is accepted"
                    ));
                }
                let Some(exts) = first.filter(|v| v.tag == SEQUENCE) else {
                    return refuse("CSR extensionRequest value is not an Extensions SEQUENCE");
                };
                found.push(exts.content);
            }
            OID_CHALLENGE_PASSWORD => {
                // RFC 2985 §5.4.1: one DirectoryString value; vacme has no use for it.
                if count != 1 || !first.is_some_and(|v| is_string(v.tag)) {
                    return refuse("CSR challengePassword attribute is not a single string value");
                }
            }
            other => return refuse(format!("CSR has attribute {other}, which vacme does not accept")),
        }
    }
    match found.as_slice() {
        [one] => Ok(one),
        [] => refuse("CSR has no extensionRequest attribute; exactly one (with a subjectAltName) is accepted"),
        many => refuse(format!("CSR has {} extensionRequest attributes; exactly one is accepted", many.len())),
    }
}

/// RFC 5280 §4.1: Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
/// extnValue OCTET STRING }. Each extension is one vacme knows, appears once, and has its
/// content read to the end. Returns the SAN, which must be there.
fn read_extensions(content: &[u8]) -> Result<Vec<SanEntry>> {
    let mut exts = Reader::new(content, "the CSR's extensions");
    let mut seen: Vec<String> = Vec::new();
    let mut san = None;
    while !exts.is_empty() {
        let mut ext = exts.nested(SEQUENCE, "an Extension", "the CSR's extensions")?;
        let id = ext.oid()?;
        // An explicit FALSE is not DER (the default is left out), but it is read the same way by
        // every parser, so it changes nothing and some encoders write it.
        if ext.peek_tag() == Some(BOOLEAN) {
            ext.boolean()?;
        }
        let value = ext.expect(OCTET_STRING, "the extension's OCTET STRING")?.content;
        ext.finish()?;
        if seen.contains(&id) {
            return refuse(format!("CSR requests extension {id} twice; each extension is accepted once"));
        }
        match id.as_str() {
            OID_SAN => san = Some(read_san(value)?),
            OID_BASIC_CONSTRAINTS => read_basic_constraints(value)?,
            OID_KEY_USAGE => {
                let mut r = Reader::new(value, "the keyUsage extension");
                r.bit_string()?;
                r.finish()?;
            }
            OID_EXT_KEY_USAGE => {
                let mut outer = Reader::new(value, "the extKeyUsage extension");
                let mut r = outer.nested(SEQUENCE, "a SEQUENCE OF KeyPurposeId", "the extKeyUsage extension")?;
                outer.finish()?;
                if r.is_empty() {
                    return refuse("CSR extKeyUsage extension is empty");
                }
                while !r.is_empty() {
                    r.oid()?;
                }
            }
            OID_TLS_FEATURE => {
                // RFC 7633 §6: Features ::= SEQUENCE OF INTEGER (status_request is 5).
                let mut outer = Reader::new(value, "the TLS Feature extension");
                let mut r = outer.nested(SEQUENCE, "a SEQUENCE OF INTEGER", "the TLS Feature extension")?;
                outer.finish()?;
                while !r.is_empty() {
                    r.integer()?;
                }
            }
            OID_SUBJECT_KEY_ID => {
                let mut r = Reader::new(value, "the subjectKeyIdentifier extension");
                r.expect(OCTET_STRING, "an OCTET STRING")?;
                r.finish()?;
            }
            other => return refuse(format!("CSR requests extension {other}, which vacme does not accept")),
        }
        seen.push(id);
    }
    san.ok_or_else(|| Refusal("CSR has no subjectAltName extension; the names must be in one".into()))
}

/// RFC 5280 §4.2.1.9: BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE,
/// pathLenConstraint INTEGER OPTIONAL }. A leaf may ask for neither a CA nor a path length.
fn read_basic_constraints(value: &[u8]) -> Result<()> {
    let mut outer = Reader::new(value, "the basicConstraints extension");
    let mut r = outer.nested(SEQUENCE, "a SEQUENCE", "the basicConstraints extension")?;
    outer.finish()?;
    if r.peek_tag() == Some(BOOLEAN) && r.boolean()? {
        return refuse("CSR asks for a CA certificate (basicConstraints cA true); vacme issues only leaves");
    }
    if !r.is_empty() {
        return refuse("CSR basicConstraints has a pathLenConstraint, which only a CA certificate may carry");
    }
    Ok(())
}

/// RFC 5280 §4.2.1.6: GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName, here only
/// dNSName (ASCII, not empty, no trailing dot) and iPAddress (4 or 16 octets), none repeated.
fn read_san(value: &[u8]) -> Result<Vec<SanEntry>> {
    let mut outer = Reader::new(value, "the subjectAltName extension");
    let mut names = outer.nested(SEQUENCE, "a SEQUENCE of GeneralName", "the subjectAltName extension")?;
    outer.finish()?;
    let mut out: Vec<SanEntry> = Vec::new();
    while !names.is_empty() {
        let gn = names.any()?;
        let entry = match gn.tag {
            DNS_NAME => {
                let name = std::str::from_utf8(gn.content)
                    .ok()
                    .filter(|s| s.is_ascii())
                    .ok_or_else(|| Refusal("CSR SAN dNSName is not ASCII (IA5String)".into()))?;
                if name.is_empty() {
                    return refuse("CSR SAN has an empty dNSName");
                }
                if name.ends_with('.') {
                    return refuse(format!("CSR SAN dNSName {name:?} ends in a dot; write names without it"));
                }
                SanEntry::Dns(name.to_owned())
            }
            IP_ADDRESS => match gn.content.len() {
                4 => SanEntry::Ip(IpAddr::from(<[u8; 4]>::try_from(gn.content).unwrap_or_default())),
                16 => SanEntry::Ip(IpAddr::from(<[u8; 16]>::try_from(gn.content).unwrap_or_default())),
                n => return refuse(format!("CSR SAN iPAddress has {n} octets; 4 or 16 are accepted")),
            },
            tag => {
                return refuse(format!(
                    "CSR SAN entry of type {} is not accepted (only dNSName and iPAddress)",
                    general_name_kind(tag)
                ));
            }
        };
        let dup = out.iter().any(|e| match (e, &entry) {
            (SanEntry::Dns(a), SanEntry::Dns(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        });
        if dup {
            let shown = match &entry {
                SanEntry::Dns(n) => n.clone(),
                SanEntry::Ip(ip) => ip.to_string(),
            };
            return refuse(format!("CSR SAN names {shown} twice; each name is accepted once"));
        }
        out.push(entry);
    }
    if out.is_empty() {
        return refuse("CSR subjectAltName extension is empty");
    }
    Ok(out)
}

/// RFC 5280 §4.2.1.6's name for a GeneralName tag, for refusals.
fn general_name_kind(tag: u8) -> String {
    let name = match tag {
        0xa0 => "otherName",
        0x81 => "rfc822Name",
        0x82 | 0xa2 => "dNSName (constructed)",
        0xa3 => "x400Address",
        0xa4 => "directoryName",
        0xa5 => "ediPartyName",
        0x86 => "uniformResourceIdentifier",
        0x87 | 0xa7 => "iPAddress (constructed)",
        0x88 => "registeredID",
        _ => return format!("tag 0x{tag:02x}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_one(bytes: &[u8]) -> Result<Vec<u8>> {
        let mut r = Reader::new(bytes, "the input");
        let t = r.any()?;
        r.finish()?;
        Ok(t.content.to_vec())
    }

    #[test]
    fn lengths_are_definite_minimal_and_exact() {
        // (case, bytes, Ok(content) or Err(fragment of the refusal))
        let long = [&[0x04, 0x81, 0x80][..], &[0u8; 128]].concat();
        let table: [(&str, &[u8], std::result::Result<usize, &str>); 9] = [
            ("short form", &[0x04, 0x01, 0xaa], Ok(1)),
            ("long form for 128", &long, Ok(128)),
            ("long form for a short value", &[0x04, 0x81, 0x01, 0xaa], Err("long-form length")),
            ("leading zero length octet", &[0x04, 0x82, 0x00, 0x01, 0xaa], Err("leading zero")),
            ("indefinite", &[0x30, 0x80, 0x00, 0x00], Err("indefinite")),
            ("length past the end", &[0x04, 0x05, 0xaa], Err("longer than its input")),
            ("trailing byte", &[0x04, 0x01, 0xaa, 0x00], Err("trailing bytes")),
            ("high tag number", &[0x1f, 0x81, 0x01, 0x00], Err("high-number tag")),
            ("nothing", &[], Err("ends early")),
        ];
        for (case, bytes, want) in table {
            match (read_one(bytes), want) {
                (Ok(c), Ok(n)) => assert_eq!(c.len(), n, "{case}"),
                (Err(Refusal(why)), Err(frag)) => assert!(why.contains(frag), "{case}: {why}"),
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn primitives_are_der() {
        let oid = |b: &[u8]| Reader::new(b, "t").oid();
        assert_eq!(oid(&[0x06, 0x03, 0x55, 0x1d, 0x11]).unwrap(), "2.5.29.17");
        assert_eq!(
            oid(&[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e]).unwrap(),
            OID_EXTENSION_REQUEST
        );
        assert!(oid(&[0x06, 0x03, 0x55, 0x80, 0x11]).is_err(), "non-minimal subidentifier");
        assert!(oid(&[0x06, 0x02, 0x55, 0x9d]).is_err(), "unfinished subidentifier");
        assert!(oid(&[0x06, 0x00]).is_err(), "empty");

        let int = |b: &[u8]| Reader::new(b, "t").integer().map(<[u8]>::to_vec);
        assert_eq!(int(&[0x02, 0x01, 0x00]).unwrap(), [0]);
        assert_eq!(int(&[0x02, 0x02, 0x00, 0x80]).unwrap(), [0, 0x80]);
        assert!(int(&[0x02, 0x02, 0x00, 0x05]).is_err());
        assert!(int(&[0x02, 0x02, 0xff, 0x80]).is_err());
        assert!(int(&[0x02, 0x00]).is_err());

        let boolean = |b: &[u8]| Reader::new(b, "t").boolean();
        assert_eq!(boolean(&[0x01, 0x01, 0xff]), Ok(true));
        assert_eq!(boolean(&[0x01, 0x01, 0x00]), Ok(false));
        assert!(boolean(&[0x01, 0x01, 0x01]).is_err(), "BER true");
        assert!(boolean(&[0x01, 0x02, 0x00, 0x00]).is_err());

        let bits = |b: &[u8]| Reader::new(b, "t").bit_string().map(<[u8]>::to_vec);
        assert_eq!(bits(&[0x03, 0x02, 0x05, 0xa0]).unwrap(), [0xa0]);
        assert!(bits(&[0x03, 0x02, 0x05, 0xa1]).is_err(), "a padding bit set");
        assert!(bits(&[0x03, 0x02, 0x08, 0x00]).is_err(), "eight unused bits");
        assert!(bits(&[0x03, 0x01, 0x01]).is_err(), "unused bits of nothing");
        assert!(bits(&[0x03, 0x00]).is_err());
    }
}
