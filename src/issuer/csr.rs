//! Parse, don't validate: an `IssuanceRequest` is a PKCS#10 CSR already checked against the order.

use std::{collections::BTreeSet, net::IpAddr};

use time::OffsetDateTime;
use x509_parser::{
    certification_request::X509CertificationRequest,
    oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
    },
    prelude::FromDer,
};

use super::der::{self, SanEntry};
use crate::acme::{Identifier, Problem, identifier::normalize_dns};

/// Which CSR keys are accepted at finalize (anything else is `badCSR` before the CA sees it).
///
/// This is vacme's floor, not the CA's: a Vault role's `key_type`/`key_bits` may refuse more
/// (a `key_type=ec` role answers an RSA CSR with "role requires keys of type ec"), and that
/// refusal reaches the client as `badCSR` with Vault's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// EC P-256 (secp256r1). Default: on.
    pub ec_p256: bool,
    /// EC P-384 (secp384r1). Default: on.
    pub ec_p384: bool,
    /// Smallest RSA modulus accepted, in bits. Default: 2048 (CA/B Forum BR §6.1.5).
    pub rsa_min_bits: u32,
    /// Largest RSA modulus accepted, in bits. Default: 8192 (bounds the cost of verifying the CSR).
    pub rsa_max_bits: u32,
    /// Ed25519. Default: off, because Vault roles with `key_type=ec` or `rsa` refuse it and
    /// few TLS clients accept Ed25519 server certificates.
    pub ed25519: bool,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self { ec_p256: true, ec_p384: true, rsa_min_bits: 2048, rsa_max_bits: 8192, ed25519: false }
    }
}

/// The family of a CSR's public key: what a Vault role's `key_type` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// ECDSA (`key_type=ec`).
    Ec,
    /// RSA (`key_type=rsa`).
    Rsa,
    /// Ed25519 (`key_type=ed25519`).
    Ed25519,
}

impl KeyKind {
    /// Vault's word for it (`ec`, `rsa`, `ed25519`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Ec => "ec",
            KeyKind::Rsa => "rsa",
            KeyKind::Ed25519 => "ed25519",
        }
    }
}

/// A CSR's public key as a Vault role judges it: its family and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrKey {
    /// ECDSA on P-256 (`bits` 256) or P-384 (384).
    Ec { bits: u32 },
    /// RSA with a modulus of `bits`.
    Rsa { bits: u32 },
    /// Ed25519.
    Ed25519,
}

impl CsrKey {
    /// The key's family.
    pub fn kind(self) -> KeyKind {
        match self {
            CsrKey::Ec { .. } => KeyKind::Ec,
            CsrKey::Rsa { .. } => KeyKind::Rsa,
            CsrKey::Ed25519 => KeyKind::Ed25519,
        }
    }

    /// The size Vault compares with a role's `key_bits` (curve size for EC, 0 for Ed25519).
    pub fn bits(self) -> u32 {
        match self {
            CsrKey::Ec { bits } | CsrKey::Rsa { bits } => bits,
            CsrKey::Ed25519 => 0,
        }
    }
}

impl std::fmt::Display for CsrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CsrKey::Ec { bits: 256 } => f.write_str("ECDSA P-256"),
            CsrKey::Ec { bits: 384 } => f.write_str("ECDSA P-384"),
            CsrKey::Ec { bits } => write!(f, "ECDSA {bits}-bit"),
            CsrKey::Rsa { bits } => write!(f, "RSA {bits}-bit"),
            CsrKey::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// How far a CA may set notBefore before the signing time.
const BACKDATE_ALLOWANCE: time::Duration = time::Duration::minutes(1);

/// Longest subject CN (RFC 5280 ub-common-name).
const MAX_CN: usize = 64;

/// Where an order is signed and for how long at most: from its profile. The default is the
/// issuer's own role, mount and limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignTarget {
    /// Profile name, for the record.
    pub profile: Option<String>,
    /// Vault role instead of `vault.role`.
    pub role: Option<String>,
    /// Vault PKI mount instead of `vault.mount`.
    pub mount: Option<String>,
    /// Longest lifetime; a later (or missing) `notAfter` becomes now + this.
    pub max_lifetime: Option<time::Duration>,
}

/// A CSR whose signature, key and names were checked against the order.
#[derive(Clone, Debug)]
pub struct IssuanceRequest {
    /// The CSR as the client sent it (DER).
    pub csr_der: Vec<u8>,
    /// The same CSR as PEM, for Vault's `csr` parameter.
    pub csr_pem: String,
    /// Sorted; exactly the CSR's SAN entries and the order's identifiers.
    pub identifiers: Vec<Identifier>,
    /// The CSR's CN if it had one, else the first DNS identifier that fits (certbot sends no CN).
    pub common_name: String,
    /// The subject public key info (DER), for a CA that signs from it.
    pub spki_der: Vec<u8>,
    /// The CSR key's family and size, for choosing the role that signs it.
    pub key: CsrKey,
    /// The order's requested `notBefore`; issuers clamp it, never refuse it.
    pub not_before: Option<OffsetDateTime>,
    /// The order's requested `notAfter`; issuers cap it at their maximum, never refuse it.
    pub not_after: Option<OffsetDateTime>,
    /// Role, mount and lifetime cap of the order's profile.
    pub target: SignTarget,
}

impl IssuanceRequest {
    /// `badCSR` unless the DER is one PKCS#10 request that vacme's strict reader (der.rs) read
    /// completely, with a valid self-signature, an accepted key, SAN dNSName/iPAddress entries
    /// equal to `order_identifiers`, and a CN (if any) that copies one of those entries.
    pub fn new(
        order_identifiers: &[Identifier],
        csr_der: &[u8],
        policy: &KeyPolicy,
        not_before: Option<OffsetDateTime>,
        not_after: Option<OffsetDateTime>,
    ) -> Result<Self, Problem> {
        // The names come only from vacme's own strict reader (der.rs): a CSR it did not read
        // completely is refused, so the CA can never find a name in it that vacme did not see.
        let strict = der::parse_csr(csr_der).map_err(|der::Refusal(why)| Problem::bad_csr(why))?;
        // x509-parser checks the key and the signature. It must see the same request and key
        // bytes as the strict reader, or the signature would vouch for something else.
        let (rest, csr) = X509CertificationRequest::from_der(csr_der)
            .map_err(|_| Problem::bad_csr("CSR is not a DER PKCS#10 certification request"))?;
        if !rest.is_empty()
            || csr.certification_request_info.raw != strict.info_raw
            || csr.certification_request_info.subject_pki.raw != strict.spki_raw
        {
            return Err(Problem::bad_csr("CSR is not a DER PKCS#10 certification request"));
        }
        // Key first: the verifier cannot check signatures of keys below policy (RSA < 2048) anyway.
        let key = check_key(&csr, policy)?;
        csr.verify_signature().map_err(|_| Problem::bad_csr("CSR signature does not verify"))?;

        let mut names = BTreeSet::new();
        for entry in &strict.san {
            names.insert(san_identifier(entry)?);
        }
        // RFC 5280 §4.2.1.6 puts names in the SAN; a CN is only tolerated as a copy of one of
        // them, because a role with `use_csr_common_name` would certify the CN as written.
        let cn = match &strict.common_name {
            None => None,
            Some(cn) => Some(cn_in_san(cn, &strict.san)?),
        };
        let wanted: BTreeSet<Identifier> = order_identifiers.iter().cloned().collect();
        if names != wanted {
            let extra: Vec<String> = names.difference(&wanted).map(Identifier::value).collect();
            let missing: Vec<String> = wanted.difference(&names).map(Identifier::value).collect();
            let mut why = Vec::new();
            if !extra.is_empty() {
                why.push(format!("names not in the order: {}", extra.join(", ")));
            }
            if !missing.is_empty() {
                why.push(format!("order names missing from the CSR: {}", missing.join(", ")));
            }
            return Err(Problem::bad_csr(format!("CSR names do not match the order ({})", why.join("; "))));
        }
        let common_name = cn.filter(|c| c.len() <= MAX_CN).unwrap_or_else(|| {
            wanted
                .iter()
                .filter_map(|i| match i {
                    Identifier::Dns(n) if n.len() <= MAX_CN => Some(n.clone()),
                    _ => None,
                })
                .next()
                .unwrap_or_default()
        });
        Ok(Self {
            csr_der: csr_der.to_vec(),
            csr_pem: pem_encode("CERTIFICATE REQUEST", csr_der),
            identifiers: wanted.into_iter().collect(),
            common_name,
            spki_der: csr.certification_request_info.subject_pki.raw.to_vec(),
            key,
            not_before,
            not_after,
            target: SignTarget::default(),
        })
    }

    /// Applies a profile: its role and mount, and its lifetime cap (clamping, never refusing).
    /// The cap counts from a notBefore the CA may backdate (the local CA by a minute, Vault by
    /// 30 seconds), so notAfter - notBefore never exceeds the profile's maximum. Both CAs start
    /// a certificate now whatever notBefore the order asked for, so the cap counts from now: a
    /// far-future notBefore must not stretch it.
    pub fn with_target(mut self, target: SignTarget, now: OffsetDateTime) -> Self {
        if let Some(max) = target.max_lifetime {
            // A cap past year 9999 (a huge `max_days`) caps nothing, and must not panic the worker.
            if let Some(cap) = (now - BACKDATE_ALLOWANCE).checked_add(max) {
                self.not_after = Some(match self.not_after {
                    Some(t) if t < cap => t,
                    _ => cap,
                });
            }
        }
        self.target = target;
        self
    }
}

fn check_key(csr: &X509CertificationRequest<'_>, policy: &KeyPolicy) -> Result<CsrKey, Problem> {
    let spki = &csr.certification_request_info.subject_pki;
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 && policy.ec_p256 => Ok(CsrKey::Ec { bits: 256 }),
            Some(c) if c == OID_NIST_EC_P384 && policy.ec_p384 => Ok(CsrKey::Ec { bits: 384 }),
            _ => Err(Problem::bad_csr("CSR key: only EC P-256 and P-384 curves are accepted")),
        }
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = spki.parsed().map(|k| u32::try_from(k.key_size()).unwrap_or(u32::MAX)).unwrap_or(0);
        if (policy.rsa_min_bits..=policy.rsa_max_bits).contains(&bits) {
            Ok(CsrKey::Rsa { bits })
        } else {
            Err(Problem::bad_csr(format!(
                "CSR key: RSA keys must be {} to {} bits, this one is {bits}",
                policy.rsa_min_bits, policy.rsa_max_bits
            )))
        }
    } else if *alg == OID_SIG_ED25519 && policy.ed25519 {
        Ok(CsrKey::Ed25519)
    } else {
        Err(Problem::bad_csr("CSR key type is not accepted (use EC P-256/P-384 or RSA >= 2048)"))
    }
}

/// The order identifier a SAN entry names, normalised as order identifiers are.
fn san_identifier(entry: &SanEntry) -> Result<Identifier, Problem> {
    match entry {
        // Vault would put an IP literal written as a dNSName in the certificate's DNS names,
        // where no client matches it against an IP address.
        SanEntry::Dns(name) if name.parse::<IpAddr>().is_ok() => {
            Err(Problem::bad_csr(format!("CSR SAN dNSName {name:?} is an IP address; put it in an iPAddress entry")))
        }
        SanEntry::Dns(name) => normalize_dns(name)
            .map(Identifier::Dns)
            .map_err(|_| Problem::bad_csr(format!("CSR SAN dNSName {name:?} is not a valid DNS name"))),
        SanEntry::Ip(ip) => Ok(Identifier::Ip(*ip)),
    }
}

/// The SAN entry a CN copies (ASCII case-insensitively), as the certificate's CN.
fn cn_in_san(cn: &str, san: &[SanEntry]) -> Result<String, Problem> {
    let copied = san.iter().find_map(|e| match e {
        SanEntry::Dns(n) if n.eq_ignore_ascii_case(cn) => Some(n.to_ascii_lowercase()),
        SanEntry::Ip(ip) if ip.to_string().eq_ignore_ascii_case(cn) => Some(ip.to_string()),
        _ => None,
    });
    copied.ok_or_else(|| Problem::bad_csr(format!("CSR commonName {cn:?} is not one of the CSR's SAN entries")))
}

/// PEM armour with 64-column lines.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The hostile and client-shaped CSRs the integration and interop tests also use.
#[cfg(test)]
#[path = "../../tests/support/hostile_csr.rs"]
mod hostile_csr;

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P384_SHA384, SanType};

    use super::*;

    fn ids(names: &[&str]) -> Vec<Identifier> {
        names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Identifier::Ip(ip),
                Err(_) => Identifier::Dns((*n).into()),
            })
            .collect()
    }

    /// Space-separated names.
    fn words(names: &str) -> Vec<&str> {
        names.split_whitespace().collect()
    }

    /// A CSR for `sans` (DNS names or IP literals) plus `extra` SANs, with an optional CN.
    fn csr_with(sans: &[&str], extra: Vec<SanType>, cn: Option<&str>, key: &KeyPair) -> Vec<u8> {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.subject_alt_names.extend(extra);
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.serialize_request(key).unwrap().der().to_vec()
    }

    fn csr(sans: &[&str], cn: Option<&str>, key: &KeyPair) -> Vec<u8> {
        csr_with(sans, Vec::new(), cn, key)
    }

    fn check(order: &[Identifier], der: &[u8]) -> Result<IssuanceRequest, Problem> {
        IssuanceRequest::new(order, der, &KeyPolicy::default(), None, None)
    }

    #[test]
    fn names_table() {
        let key = KeyPair::generate().unwrap();
        let long_first = format!("{}.lab.test b.lab.test", "a".repeat(60));
        // (case, order, CSR SANs, CSR CN, Ok(expected common_name) or Err(()) for badCSR)
        type Row<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Result<&'a str, ()>);
        let table: [Row; 18] = [
            ("no CN, like certbot", "b.lab.test a.lab.test", "a.lab.test b.lab.test", None, Ok("a.lab.test")),
            ("CN also a SAN", "a.lab.test b.lab.test", "a.lab.test b.lab.test", Some("b.lab.test"), Ok("b.lab.test")),
            // A CN is only accepted as a copy of a SAN entry (a role with use_csr_common_name
            // would certify it as written); names are in the SAN once, without a trailing dot.
            ("CN only in the subject", "a.lab.test b.lab.test", "b.lab.test", Some("a.lab.test"), Err(())),
            ("case only", "a.lab.test", "A.Lab.TEST", Some("a.LAB.test"), Ok("a.lab.test")),
            ("case and trailing dot", "a.lab.test", "A.Lab.TEST.", Some("a.LAB.test"), Err(())),
            ("duplicate SANs", "a.lab.test", "a.lab.test a.lab.test", None, Err(())),
            ("wildcard", "*.lab.test", "*.lab.test", None, Ok("*.lab.test")),
            ("IP only: no CN", "10.0.0.5", "10.0.0.5", None, Ok("")),
            ("IPv6 and DNS", "a.lab.test fd00::5", "fd00::5 a.lab.test", None, Ok("a.lab.test")),
            ("first name too long for a CN", &long_first, &long_first, None, Ok("b.lab.test")),
            ("extra SAN", "a.lab.test", "a.lab.test b.lab.test", None, Err(())),
            ("extra CN", "a.lab.test", "a.lab.test", Some("evil.lab.test"), Err(())),
            ("missing name", "a.lab.test b.lab.test", "a.lab.test", None, Err(())),
            ("other name", "a.lab.test", "c.lab.test", None, Err(())),
            ("IP instead of DNS", "10.0.0.5", "a.lab.test", None, Err(())),
            ("empty CN", "a.lab.test", "a.lab.test", Some(""), Err(())),
            ("no names at all", "a.lab.test", "", None, Err(())),
            ("CN not a DNS name", "a.lab.test", "a.lab.test", Some("My Server"), Err(())),
        ];
        for (case, order, sans, cn, want) in table {
            let order = ids(&words(order));
            match (check(&order, &csr(&words(sans), cn, &key)), want) {
                (Ok(req), Ok(want_cn)) => {
                    let mut sorted = order.clone();
                    sorted.sort();
                    assert_eq!(req.identifiers, sorted, "{case}");
                    assert_eq!(req.common_name, want_cn, "{case}");
                    assert!(req.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"), "{case}");
                }
                (Err(p), Err(())) => assert_eq!(p.kind.code(), "badCSR", "{case}: {}", p.detail),
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// Each hostile shape is refused with a detail that says what was refused, although its
    /// signature verifies (so the refusal is about its content).
    #[test]
    fn hostile_csrs_are_refused_saying_why() {
        use super::hostile_csr::hostile_csrs;
        let order = ids(&["a.lab.test"]);
        let expect: &[(&str, &str)] = &[
            (
                "two extensionRequest attributes, the first empty",
                "CSR has 2 extensionRequest attributes; exactly one is accepted",
            ),
            (
                "two extensionRequest attributes, the first only basicConstraints",
                "CSR has 2 extensionRequest attributes",
            ),
            (
                "SAN led by [4] holding a NULL",
                "CSR SAN entry of type directoryName is not accepted (only dNSName and iPAddress)",
            ),
            ("SAN led by [9] with one zero byte", "CSR SAN entry of type tag 0x89 is not accepted"),
            ("SAN led by a universal NULL", "CSR SAN entry of type tag 0x05 is not accepted"),
            ("the victim in the SAN", "names not in the order: victim.lab.test"),
            ("a second SAN extension", "CSR requests extension 2.5.29.17 twice"),
            ("a duplicated extension", "CSR requests extension 2.5.29.15 twice"),
            ("SAN with an otherName", "CSR SAN entry of type otherName is not accepted (only dNSName and iPAddress)"),
            ("SAN with a URI", "CSR SAN entry of type uniformResourceIdentifier is not accepted"),
            ("SAN with an email address", "CSR SAN entry of type rfc822Name is not accepted"),
            ("CN not in the SAN", "CSR commonName \"victim.lab.test\" is not one of the CSR's SAN entries"),
            ("two CNs", "CSR subject has 2 commonName attributes; at most one is accepted"),
            ("basicConstraints cA true", "basicConstraints cA true"),
            ("basicConstraints with a pathLen", "pathLenConstraint"),
            ("empty SAN", "CSR subjectAltName extension is empty"),
            ("SAN missing", "CSR has no subjectAltName extension"),
            ("no extensionRequest", "CSR has no extensionRequest attribute"),
            ("duplicated names", "CSR SAN names A.LAB.TEST twice"),
            ("an unknown attribute", "CSR has attribute 1.2.840.113549.1.9.2, which vacme does not accept"),
            (
                "extensionRequest with two values",
                "CSR extensionRequest attribute has 2 values; exactly one is accepted",
            ),
            ("an unknown extension", "CSR requests extension 1.2.3.4, which vacme does not accept"),
            ("trailing bytes inside the SAN", "the subjectAltName extension has trailing bytes"),
            ("non-minimal length", "long-form length for a short value"),
            ("indefinite length", "indefinite length"),
            ("a dNSName with a trailing dot", "ends in a dot"),
            ("a BER boolean", "BOOLEAN that is not DER"),
            ("a dNSName that is an IP address", "is an IP address; put it in an iPAddress entry"),
            ("a 5-octet iPAddress", "CSR SAN iPAddress has 5 octets"),
            ("a subject attribute that is not a string", "CSR subject attribute 2.5.4.10 is not a string"),
        ];
        let cases = hostile_csrs(&["a.lab.test"], "victim.lab.test");
        let names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
        let expected: Vec<&str> = expect.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, expected, "every hostile case has its expected detail");
        for ((case, der), (_, detail)) in cases.iter().zip(expect) {
            // The signature is good: x509-parser verifies it wherever it can read the CSR.
            if let Ok((_, parsed)) = X509CertificationRequest::from_der(der) {
                assert!(parsed.verify_signature().is_ok(), "{case}: signed by its own key");
            }
            let p = check(&order, der).unwrap_err();
            assert_eq!((p.kind.code(), p.status), ("badCSR", 400), "{case}");
            assert!(p.detail.contains(detail), "{case}: {:?} does not say {detail:?}", p.detail);
        }
    }

    /// CSRs shaped as certbot, cert-manager and acme.sh send them are accepted.
    #[test]
    fn client_shaped_csrs_are_accepted() {
        use super::hostile_csr::good_csrs;
        let order = ids(&["b.lab.test", "a.lab.test", "10.0.0.5"]);
        let mut sorted = order.clone();
        sorted.sort();
        for (case, der) in good_csrs(&["a.lab.test", "b.lab.test", "10.0.0.5"]) {
            let req = check(&order, &der).unwrap_or_else(|p| panic!("{case}: {}", p.detail));
            assert_eq!(req.identifiers, sorted, "{case}");
            assert_eq!(req.common_name, "a.lab.test", "{case}");
            assert_eq!(req.key, CsrKey::Ec { bits: 256 }, "{case}");
        }
    }

    /// A CN naming an IP address must be the text of one of the iPAddress entries.
    #[test]
    fn ip_common_name_copies_an_ip_entry() {
        use super::hostile_csr::{cn_name, csr, ext_request, san_of};
        let order = ids(&["10.0.0.5", "fd00::5"]);
        let ok = csr(cn_name(&["FD00::5"]), &[ext_request(&[san_of(&["10.0.0.5", "fd00::5"])])]);
        assert_eq!(check(&order, &ok).unwrap().common_name, "fd00::5");
        let other = csr(cn_name(&["10.0.0.6"]), &[ext_request(&[san_of(&["10.0.0.5", "fd00::5"])])]);
        assert!(check(&order, &other).unwrap_err().detail.contains("commonName \"10.0.0.6\""));
    }

    #[test]
    fn only_dns_and_ip_sans() {
        let key = KeyPair::generate().unwrap();
        let order = ids(&["a.lab.test"]);
        for extra in [
            SanType::Rfc822Name("a@lab.test".try_into().unwrap()),
            SanType::URI("https://a.lab.test/".try_into().unwrap()),
        ] {
            let p = check(&order, &csr_with(&["a.lab.test"], vec![extra.clone()], None, &key)).unwrap_err();
            assert_eq!(p.kind.code(), "badCSR", "{extra:?}");
        }
    }

    #[test]
    fn mismatch_names_the_difference() {
        let key = KeyPair::generate().unwrap();
        let p =
            check(&ids(&["a.lab.test", "b.lab.test"]), &csr(&["a.lab.test", "c.lab.test"], None, &key)).unwrap_err();
        assert!(p.detail.contains("c.lab.test") && p.detail.contains("b.lab.test"), "{}", p.detail);
    }

    #[test]
    fn malformed_and_forged() {
        let key = KeyPair::generate().unwrap();
        let order = ids(&["a.lab.test"]);
        let good = csr(&["a.lab.test"], None, &key);
        check(&order, &good).unwrap();
        // The signature BIT STRING ends the DER: flip one bit of it.
        let mut tampered = good.clone();
        *tampered.last_mut().unwrap() ^= 0x01;
        // Or keep the signature and change a name under it.
        let pos = good.windows(10).position(|w| w == b"a.lab.test").unwrap();
        let mut renamed = good.clone();
        renamed[pos] = b'b';
        let mut trailing = good.clone();
        trailing.push(0);
        for (case, der) in [
            ("garbage", b"nope".to_vec()),
            ("empty", Vec::new()),
            ("PEM instead of DER", pem_encode("CERTIFICATE REQUEST", &good).into_bytes()),
            ("tampered signature", tampered),
            ("name changed under the signature", renamed),
            ("trailing data", trailing),
        ] {
            let p = check(&order, &der).unwrap_err();
            assert_eq!(p.kind.code(), "badCSR", "{case}");
        }
    }

    #[test]
    fn key_policy() {
        let order = ids(&["a.lab.test"]);
        // ring can neither load nor sign with a 1024-bit RSA key, so this CSR was made once with
        // `openssl req -newkey rsa:1024 -subj / -addext subjectAltName=DNS:a.lab.test -outform der`.
        let p = check(&order, include_bytes!("testdata/rsa1024-a.lab.test.csr.der")).unwrap_err();
        assert_eq!(p.kind.code(), "badCSR");
        assert!(p.detail.contains("1024"), "{}", p.detail);

        // PKCS#8 from `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`.
        let rsa = csr(&["a.lab.test"], None, &KeyPair::from_pem(include_str!("testdata/rsa2048.pem")).unwrap());
        assert_eq!(check(&order, &rsa).unwrap().key, CsrKey::Rsa { bits: 2048 });
        let strict = KeyPolicy { rsa_min_bits: 3072, ..KeyPolicy::default() };
        assert!(IssuanceRequest::new(&order, &rsa, &strict, None, None).unwrap_err().detail.contains("2048"));

        let p384 = csr(&["a.lab.test"], None, &KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap());
        assert_eq!(check(&order, &p384).unwrap().key, CsrKey::Ec { bits: 384 });
        let no384 = KeyPolicy { ec_p384: false, ..KeyPolicy::default() };
        assert_eq!(IssuanceRequest::new(&order, &p384, &no384, None, None).unwrap_err().kind.code(), "badCSR");

        let ed = csr(&["a.lab.test"], None, &KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap());
        assert_eq!(check(&order, &ed).unwrap_err().kind.code(), "badCSR", "Ed25519 is off by default");
        let with_ed = KeyPolicy { ed25519: true, ..KeyPolicy::default() };
        IssuanceRequest::new(&order, &ed, &with_ed, None, None).unwrap();
    }

    #[test]
    fn profile_cap_counts_from_now_and_never_overflows() {
        // Found by fuzz/fuzz_targets/csr.rs: `start + max` panicked ("resulting value is out of
        // range") for a notBefore near year 9999 or a profile max_days of billions.
        let key = KeyPair::generate().unwrap();
        let der = csr(&["a.lab.test"], None, &key);
        let now = OffsetDateTime::from_unix_timestamp(1_795_824_000).unwrap();
        let last = OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT);
        let cap = |days: i64| SignTarget { max_lifetime: Some(time::Duration::days(days)), ..SignTarget::default() };
        let req = |nb, na| IssuanceRequest::new(&ids(&["a.lab.test"]), &der, &KeyPolicy::default(), nb, na).unwrap();

        let far = req(Some(last), Some(last)).with_target(cap(90), now);
        assert_eq!(
            far.not_after,
            Some(now - BACKDATE_ALLOWANCE + time::Duration::days(90)),
            "notBefore does not stretch the cap"
        );
        let huge = req(None, Some(now + time::Duration::days(7))).with_target(cap(i64::from(u32::MAX)), now);
        assert_eq!(huge.not_after, Some(now + time::Duration::days(7)), "a cap past year 9999 caps nothing");
        assert_eq!(req(None, None).with_target(cap(i64::from(u32::MAX)), now).not_after, None);
        let short = req(None, None).with_target(cap(1), now);
        assert_eq!(short.not_after, Some(now - BACKDATE_ALLOWANCE + time::Duration::days(1)));
    }

    #[test]
    fn keeps_the_csr_and_requested_validity() {
        let key = KeyPair::generate().unwrap();
        let der = csr(&["a.lab.test"], None, &key);
        let nb = OffsetDateTime::now_utc();
        let na = nb + time::Duration::days(7);
        let req = IssuanceRequest::new(&ids(&["a.lab.test"]), &der, &KeyPolicy::default(), Some(nb), Some(na)).unwrap();
        assert_eq!(req.csr_der, der);
        assert_eq!((req.not_before, req.not_after), (Some(nb), Some(na)));
        let (_, pem) = x509_parser::pem::parse_x509_pem(req.csr_pem.as_bytes()).unwrap();
        assert_eq!(pem.contents, der);
        assert_eq!(req.spki_der, rcgen::PublicKeyData::subject_public_key_info(&key));
    }
}
