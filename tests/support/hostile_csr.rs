//! Hand-built PKCS#10 CSRs (RFC 2986), each signed by a fresh P-256 key so that its signature
//! verifies and a refusal is about its content: the shapes that made a CA sign names vacme
//! never saw, and CSRs shaped as real clients send them. Pure functions over a small DER writer;
//! shared by the unit tests (src/issuer/csr.rs), tests/it and tests/interop through `#[path]`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair},
};

/// DER length octets, in the fewest octets (X.690 §10.1).
fn length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

/// One TLV.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(length(content.len()));
    out.extend_from_slice(content);
    out
}

/// A constructed TLV of the concatenated `items`.
pub fn cons(tag: u8, items: &[Vec<u8>]) -> Vec<u8> {
    tlv(tag, &items.concat())
}

pub fn seq(items: &[Vec<u8>]) -> Vec<u8> {
    cons(0x30, items)
}

pub fn set(items: &[Vec<u8>]) -> Vec<u8> {
    cons(0x31, items)
}

pub fn octets(content: &[u8]) -> Vec<u8> {
    tlv(0x04, content)
}

pub fn utf8(s: &str) -> Vec<u8> {
    tlv(0x0c, s.as_bytes())
}

pub fn printable(s: &str) -> Vec<u8> {
    tlv(0x13, s.as_bytes())
}

/// A dotted OBJECT IDENTIFIER (X.690 §8.19).
pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').map(|a| a.parse().unwrap()).collect();
    let mut content = Vec::new();
    for arc in std::iter::once(arcs[0] * 40 + arcs[1]).chain(arcs[2..].iter().copied()) {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            groups.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        content.extend(groups.into_iter().rev());
    }
    tlv(0x06, &content)
}

pub const OID_EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";
pub const OID_CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";
pub const OID_UNSTRUCTURED_NAME: &str = "1.2.840.113549.1.9.2";
pub const OID_CN: &str = "2.5.4.3";
pub const OID_O: &str = "2.5.4.10";
pub const OID_SAN: &str = "2.5.29.17";
pub const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
pub const OID_KEY_USAGE: &str = "2.5.29.15";
pub const OID_EXT_KEY_USAGE: &str = "2.5.29.37";
pub const OID_TLS_FEATURE: &str = "1.3.6.1.5.5.7.1.24";
pub const OID_SUBJECT_KEY_ID: &str = "2.5.29.14";
pub const OID_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
pub const OID_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

/// A Name with one RDN per (type, value) pair.
pub fn name(atvs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    seq(&atvs.iter().map(|(t, v)| set(&[seq(&[oid(t), v.clone()])])).collect::<Vec<_>>())
}

/// A Name of only commonNames (UTF8String), one RDN each.
pub fn cn_name(cns: &[&str]) -> Vec<u8> {
    name(&cns.iter().map(|c| (OID_CN, utf8(c))).collect::<Vec<_>>())
}

/// An Attribute with these values.
pub fn attribute(kind: &str, values: &[Vec<u8>]) -> Vec<u8> {
    seq(&[oid(kind), set(values)])
}

/// The extensionRequest attribute holding one Extensions of `exts`.
pub fn ext_request(exts: &[Vec<u8>]) -> Vec<u8> {
    attribute(OID_EXTENSION_REQUEST, &[seq(exts)])
}

/// An Extension whose extnValue is `value`; the critical flag only when true (DER default).
pub fn ext(kind: &str, critical: bool, value: Vec<u8>) -> Vec<u8> {
    let mut parts = vec![oid(kind)];
    if critical {
        parts.push(tlv(0x01, &[0xff]));
    }
    parts.push(octets(&value));
    seq(&parts)
}

/// dNSName `[2]`.
pub fn dns(n: &str) -> Vec<u8> {
    tlv(0x82, n.as_bytes())
}

/// iPAddress `[7]`.
pub fn ip(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => tlv(0x87, &a.octets()),
        IpAddr::V6(a) => tlv(0x87, &a.octets()),
    }
}

/// A GeneralName for a name: iPAddress for an IP literal, else dNSName.
pub fn general_name(n: &str) -> Vec<u8> {
    n.parse::<IpAddr>().map(ip).unwrap_or_else(|_| dns(n))
}

/// The subjectAltName extension of these GeneralNames.
pub fn san(entries: &[Vec<u8>]) -> Vec<u8> {
    ext(OID_SAN, false, seq(entries))
}

/// The subjectAltName extension naming `names`.
pub fn san_of(names: &[&str]) -> Vec<u8> {
    san(&names.iter().map(|n| general_name(n)).collect::<Vec<_>>())
}

/// basicConstraints: cA written only when true, as DER and Go write it.
pub fn basic_constraints(ca: bool) -> Vec<u8> {
    let body = if ca { seq(&[tlv(0x01, &[0xff])]) } else { seq(&[]) };
    ext(OID_BASIC_CONSTRAINTS, true, body)
}

/// keyUsage digitalSignature + keyEncipherment (bits 0 and 2; 5 unused bits).
pub fn key_usage() -> Vec<u8> {
    ext(OID_KEY_USAGE, true, tlv(0x03, &[0x05, 0xa0]))
}

/// extKeyUsage of these purposes.
pub fn ext_key_usage(purposes: &[&str]) -> Vec<u8> {
    ext(OID_EXT_KEY_USAGE, false, seq(&purposes.iter().map(|p| oid(p)).collect::<Vec<_>>()))
}

/// RFC 7633 TLS Feature status_request (OCSP must-staple), as certbot --must-staple sends it.
pub fn must_staple() -> Vec<u8> {
    ext(OID_TLS_FEATURE, false, seq(&[tlv(0x02, &[0x05])]))
}

/// A fresh P-256 key that signs CertificationRequestInfos.
pub struct CsrKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl CsrKey {
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Self { pair, rng }
    }

    /// RFC 5480 SubjectPublicKeyInfo: id-ecPublicKey, secp256r1, the uncompressed point.
    pub fn spki(&self) -> Vec<u8> {
        let mut point = vec![0x00];
        point.extend_from_slice(self.pair.public_key().as_ref());
        seq(&[seq(&[oid("1.2.840.10045.2.1"), oid("1.2.840.10045.3.1.7")]), tlv(0x03, &point)])
    }

    /// The CertificationRequest of exactly these CertificationRequestInfo bytes, signed with
    /// ecdsa-with-SHA256 (RFC 5758 §3.2: no parameters).
    pub fn sign(&self, info: &[u8]) -> Vec<u8> {
        let sig = self.pair.sign(&self.rng, info).unwrap();
        let mut bits = vec![0x00];
        bits.extend_from_slice(sig.as_ref());
        seq(&[info.to_vec(), seq(&[oid("1.2.840.10045.4.3.2")]), tlv(0x03, &bits)])
    }

    /// A CertificationRequestInfo (v1) for this key with `subject` and `attributes`.
    pub fn info(&self, subject: Vec<u8>, attributes: &[Vec<u8>]) -> Vec<u8> {
        seq(&[tlv(0x02, &[0x00]), subject, self.spki(), cons(0xa0, attributes)])
    }
}

/// A CSR by a fresh key with this subject and these attributes.
pub fn csr(subject: Vec<u8>, attributes: &[Vec<u8>]) -> Vec<u8> {
    let key = CsrKey::new();
    key.sign(&key.info(subject, attributes))
}

/// A CSR whose one extensionRequest holds exactly `extnValue` bytes as the SAN's content.
fn csr_with_raw_san(subject: Vec<u8>, san_value: Vec<u8>) -> Vec<u8> {
    csr(subject, &[ext_request(&[ext(OID_SAN, false, san_value)])])
}

/// CSRs for `names` as real clients send them; vacme must accept every one.
pub fn good_csrs(names: &[&str]) -> Vec<(&'static str, Vec<u8>)> {
    let first = names[0];
    let both = [OID_SERVER_AUTH, OID_CLIENT_AUTH];
    vec![
        // certbot: an empty subject, the names in the SAN.
        ("certbot", csr(seq(&[]), &[ext_request(&[san_of(names)])])),
        ("certbot --must-staple", csr(seq(&[]), &[ext_request(&[san_of(names), must_staple()])])),
        // cert-manager (Go's x509.CreateCertificateRequest): CN and O, SAN, then keyUsage,
        // extKeyUsage and basicConstraints cA=false (an empty SEQUENCE, critical).
        (
            "cert-manager",
            csr(
                name(&[(OID_O, utf8("lab")), (OID_CN, utf8(first))]),
                &[ext_request(&[
                    san_of(names),
                    key_usage(),
                    ext_key_usage(&[OID_SERVER_AUTH]),
                    basic_constraints(false),
                ])],
            ),
        ),
        // acme.sh (openssl req): CN, keyUsage, extKeyUsage, SAN and a subjectKeyIdentifier.
        (
            "acme.sh",
            csr(
                name(&[(OID_CN, printable(first))]),
                &[ext_request(&[
                    key_usage(),
                    ext_key_usage(&both),
                    san_of(names),
                    ext(OID_SUBJECT_KEY_ID, false, octets(&[0x5a; 20])),
                ])],
            ),
        ),
        // The CN in upper case: names compare ASCII case-insensitively.
        ("CN in upper case", csr(cn_name(&[&first.to_ascii_uppercase()]), &[ext_request(&[san_of(names)])])),
        // An old-style challengePassword attribute, which vacme reads and ignores.
        (
            "challengePassword",
            csr(seq(&[]), &[attribute(OID_CHALLENGE_PASSWORD, &[printable("secret")]), ext_request(&[san_of(names)])]),
        ),
        // basicConstraints with cA FALSE written out: not DER's default form, read the same by all.
        (
            "explicit cA false",
            csr(
                seq(&[]),
                &[ext_request(&[san_of(names), ext(OID_BASIC_CONSTRAINTS, false, seq(&[tlv(0x01, &[0x00])]))])],
            ),
        ),
    ]
}

/// CSRs that an account which proved `names_proved` might send to get `victim` (or anything
/// vacme does not fully understand) signed; vacme must refuse every one with badCSR.
pub fn hostile_csrs(names_proved: &[&str], victim: &str) -> Vec<(&'static str, Vec<u8>)> {
    let first = names_proved[0];
    let with_victim: Vec<&str> = names_proved.iter().copied().chain([victim]).collect();
    let proved: Vec<Vec<u8>> = names_proved.iter().map(|n| general_name(n)).collect();
    let victims: Vec<Vec<u8>> = with_victim.iter().map(|n| general_name(n)).collect();
    let led_by = |junk: Vec<u8>| seq(&[vec![junk], victims.clone()].concat());
    let cn = || cn_name(&[first]);
    let empty = || seq(&[]);
    vec![
        // Go merges every extensionRequest; a reader of only the first sees no SAN at all.
        (
            "two extensionRequest attributes, the first empty",
            csr(cn(), &[ext_request(&[]), ext_request(&[san_of(&with_victim)])]),
        ),
        (
            "two extensionRequest attributes, the first only basicConstraints",
            csr(cn(), &[ext_request(&[basic_constraints(false)]), ext_request(&[san_of(&with_victim)])]),
        ),
        // Go skips GeneralName forms it does not know; x509-parser gave up on the whole SAN.
        ("SAN led by [4] holding a NULL", csr_with_raw_san(cn(), led_by(vec![0xa4, 0x02, 0x05, 0x00]))),
        ("SAN led by [9] with one zero byte", csr_with_raw_san(cn(), led_by(vec![0x89, 0x01, 0x00]))),
        ("SAN led by a universal NULL", csr_with_raw_san(cn(), led_by(vec![0x05, 0x00]))),
        ("the victim in the SAN", csr(empty(), &[ext_request(&[san_of(&with_victim)])])),
        ("a second SAN extension", csr(empty(), &[ext_request(&[san_of(names_proved), san_of(&with_victim)])])),
        ("a duplicated extension", csr(empty(), &[ext_request(&[san_of(names_proved), key_usage(), key_usage()])])),
        (
            "SAN with an otherName",
            csr(
                empty(),
                &[ext_request(&[san(&[
                    proved.clone(),
                    // otherName { UPN 1.3.6.1.4.1.311.20.2.3, [0] UTF8String victim }
                    vec![cons(0xa0, &[oid("1.3.6.1.4.1.311.20.2.3"), cons(0xa0, &[utf8(victim)])])],
                ]
                .concat())])],
            ),
        ),
        (
            "SAN with a URI",
            csr(
                empty(),
                &[ext_request(&[san(
                    &[proved.clone(), vec![tlv(0x86, format!("https://{victim}/").as_bytes())]].concat()
                )])],
            ),
        ),
        (
            "SAN with an email address",
            csr(
                empty(),
                &[ext_request(&[
                    san(&[proved.clone(), vec![tlv(0x81, format!("root@{victim}").as_bytes())]].concat()),
                ])],
            ),
        ),
        ("CN not in the SAN", csr(cn_name(&[victim]), &[ext_request(&[san_of(names_proved)])])),
        ("two CNs", csr(cn_name(&[first, first]), &[ext_request(&[san_of(names_proved)])])),
        ("basicConstraints cA true", csr(empty(), &[ext_request(&[san_of(names_proved), basic_constraints(true)])])),
        (
            "basicConstraints with a pathLen",
            csr(
                empty(),
                &[ext_request(&[san_of(names_proved), ext(OID_BASIC_CONSTRAINTS, true, seq(&[tlv(0x02, &[0x00])]))])],
            ),
        ),
        ("empty SAN", csr(cn(), &[ext_request(&[san(&[])])])),
        ("SAN missing", csr(cn(), &[ext_request(&[key_usage()])])),
        ("no extensionRequest", csr(cn(), &[])),
        ("duplicated names", csr(empty(), &[ext_request(&[san(&[dns(first), dns(&first.to_ascii_uppercase())])])])),
        (
            "an unknown attribute",
            csr(empty(), &[attribute(OID_UNSTRUCTURED_NAME, &[utf8(victim)]), ext_request(&[san_of(names_proved)])]),
        ),
        (
            "extensionRequest with two values",
            csr(
                empty(),
                &[attribute(OID_EXTENSION_REQUEST, &[seq(&[san_of(names_proved)]), seq(&[san_of(&with_victim)])])],
            ),
        ),
        (
            "an unknown extension",
            csr(empty(), &[ext_request(&[san_of(names_proved), ext("1.2.3.4", false, seq(&[]))])]),
        ),
        ("trailing bytes inside the SAN", csr_with_raw_san(empty(), [seq(&proved), general_name(victim)].concat())),
        (
            "non-minimal length",
            csr_with_raw_san(empty(), [vec![0x30, 0x81], vec![proved.concat().len() as u8], proved.concat()].concat()),
        ),
        (
            "indefinite length",
            csr_with_raw_san(empty(), [vec![0x30, 0x80], victims.concat(), vec![0x00, 0x00]].concat()),
        ),
        ("a dNSName with a trailing dot", csr(empty(), &[ext_request(&[san(&[dns(&format!("{first}."))])])])),
        (
            "a BER boolean",
            csr(empty(), &[ext_request(&[seq(&[oid(OID_SAN), tlv(0x01, &[0x01]), octets(&seq(&victims))])])]),
        ),
        (
            "a dNSName that is an IP address",
            csr(empty(), &[ext_request(&[san(&[proved.clone(), vec![dns("10.0.0.1")]].concat())])]),
        ),
        (
            "a 5-octet iPAddress",
            csr(empty(), &[ext_request(&[san(&[proved.clone(), vec![tlv(0x87, &[10, 0, 0, 1, 0])]].concat())])]),
        ),
        (
            "a subject attribute that is not a string",
            csr(name(&[(OID_O, seq(&[utf8(victim)]))]), &[ext_request(&[san_of(names_proved)])]),
        ),
    ]
}
