//! Parse, don't validate: an `IssuanceRequest` is a PKCS#10 CSR already checked against the order.

use std::{collections::BTreeSet, net::IpAddr};

use time::OffsetDateTime;
use x509_parser::{
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
    },
    prelude::FromDer,
};

use crate::acme::{Identifier, Problem, identifier::normalize_dns};

/// Which CSR keys are accepted at finalize.
#[derive(Clone, Debug)]
pub struct KeyPolicy {
    pub ec_p256: bool,
    pub ec_p384: bool,
    pub rsa_min_bits: usize,
    pub rsa_max_bits: usize,
    pub ed25519: bool,
}

impl Default for KeyPolicy {
    /// EC P-256/P-384 and RSA 2048-8192. Ed25519 is off: Vault roles with `key_type=ec` or `rsa`
    /// refuse it, and few clients use it.
    fn default() -> Self {
        Self { ec_p256: true, ec_p384: true, rsa_min_bits: 2048, rsa_max_bits: 8192, ed25519: false }
    }
}

/// Longest subject CN (RFC 5280 ub-common-name).
const MAX_CN: usize = 64;

/// A CSR whose signature, key and names were checked against the order.
#[derive(Clone, Debug)]
pub struct IssuanceRequest {
    pub csr_der: Vec<u8>,
    pub csr_pem: String,
    /// Sorted, de-duplicated; exactly the CSR's names and the order's identifiers.
    pub identifiers: Vec<Identifier>,
    /// The CSR's CN if it had one, else the first DNS identifier that fits (certbot sends no CN).
    pub common_name: String,
    /// The subject public key info (DER), for a CA that signs from it.
    pub spki_der: Vec<u8>,
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
}

impl IssuanceRequest {
    /// `badCSR` unless the DER is one PKCS#10 request with a valid self-signature, an accepted
    /// key, and names (SAN dNSName/iPAddress plus the CN) equal to `order_identifiers`.
    pub fn new(
        order_identifiers: &[Identifier],
        csr_der: &[u8],
        policy: &KeyPolicy,
        not_before: Option<OffsetDateTime>,
        not_after: Option<OffsetDateTime>,
    ) -> Result<Self, Problem> {
        let (rest, csr) = X509CertificationRequest::from_der(csr_der)
            .map_err(|_| Problem::bad_csr("CSR is not a DER PKCS#10 certification request"))?;
        if !rest.is_empty() {
            return Err(Problem::bad_csr("CSR has trailing data"));
        }
        // Key first: the verifier cannot check signatures of keys below policy (RSA < 2048) anyway.
        check_key(&csr, policy)?;
        csr.verify_signature().map_err(|_| Problem::bad_csr("CSR signature does not verify"))?;

        let mut names = BTreeSet::new();
        if let Some(exts) = csr.requested_extensions() {
            for ext in exts {
                if let ParsedExtension::SubjectAlternativeName(san) = ext {
                    for gn in &san.general_names {
                        names.insert(san_identifier(gn)?);
                    }
                }
            }
        }
        let mut cn = None;
        for attr in csr.certification_request_info.subject.iter_common_name() {
            let value = attr.as_str().map_err(|_| Problem::bad_csr("CSR common name is not a string"))?;
            let id = name_identifier(value)?;
            cn = Some(id.value());
            names.insert(id);
        }
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
            not_before,
            not_after,
        })
    }
}

fn check_key(csr: &X509CertificationRequest<'_>, policy: &KeyPolicy) -> Result<(), Problem> {
    let spki = &csr.certification_request_info.subject_pki;
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 && policy.ec_p256 => Ok(()),
            Some(c) if c == OID_NIST_EC_P384 && policy.ec_p384 => Ok(()),
            _ => Err(Problem::bad_csr("CSR key: only EC P-256 and P-384 curves are accepted")),
        }
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
        if (policy.rsa_min_bits..=policy.rsa_max_bits).contains(&bits) {
            Ok(())
        } else {
            Err(Problem::bad_csr(format!(
                "CSR key: RSA keys must be {} to {} bits, this one is {bits}",
                policy.rsa_min_bits, policy.rsa_max_bits
            )))
        }
    } else if *alg == OID_SIG_ED25519 && policy.ed25519 {
        Ok(())
    } else {
        Err(Problem::bad_csr("CSR key type is not accepted (use EC P-256/P-384 or RSA >= 2048)"))
    }
}

fn san_identifier(gn: &GeneralName<'_>) -> Result<Identifier, Problem> {
    match gn {
        GeneralName::DNSName(name) => name_identifier(name),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => Ok(Identifier::Ip(IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default()))),
            16 => Ok(Identifier::Ip(IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default()))),
            _ => Err(Problem::bad_csr("CSR has a malformed IP address SAN")),
        },
        _ => Err(Problem::bad_csr("CSR has a SAN other than a DNS name or IP address")),
    }
}

/// A DNS name or IP literal from a CSR, normalised like an order identifier.
fn name_identifier(value: &str) -> Result<Identifier, Problem> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(Identifier::Ip(ip));
    }
    normalize_dns(value)
        .map(Identifier::Dns)
        .map_err(|_| Problem::bad_csr(format!("CSR name {value:?} is not a valid DNS name")))
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

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P384_SHA384, SanType};

    use super::*;

    fn dns(names: &[&str]) -> Vec<Identifier> {
        names.iter().map(|n| Identifier::Dns((*n).into())).collect()
    }

    fn csr(sans: &[&str], cn: Option<&str>, key: &KeyPair) -> Vec<u8> {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.serialize_request(key).unwrap().der().to_vec()
    }

    fn check(order: &[Identifier], der: &[u8]) -> Result<IssuanceRequest, Problem> {
        IssuanceRequest::new(order, der, &KeyPolicy::default(), None, None)
    }

    #[test]
    fn certbot_style_csr_without_cn() {
        let key = KeyPair::generate().unwrap();
        let req = check(&dns(&["b.lab.test", "a.lab.test"]), &csr(&["A.lab.test", "b.lab.test"], None, &key)).unwrap();
        assert_eq!(req.identifiers, dns(&["a.lab.test", "b.lab.test"]));
        assert_eq!(req.common_name, "a.lab.test");
        assert!(req.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    }

    #[test]
    fn cn_counts_as_a_name() {
        let key = KeyPair::generate().unwrap();
        let req = check(&dns(&["a.lab.test", "b.lab.test"]), &csr(&["b.lab.test"], Some("a.lab.test"), &key)).unwrap();
        assert_eq!(req.common_name, "a.lab.test");
        let p = check(&dns(&["a.lab.test"]), &csr(&["a.lab.test"], Some("evil.lab.test"), &key)).unwrap_err();
        assert_eq!(p.kind.code(), "badCSR");
    }

    #[test]
    fn names_must_match_exactly() {
        let key = KeyPair::generate().unwrap();
        for (order, sans) in [
            (vec!["a.lab.test"], vec!["a.lab.test", "b.lab.test"]),
            (vec!["a.lab.test", "b.lab.test"], vec!["a.lab.test"]),
            (vec!["a.lab.test"], vec!["c.lab.test"]),
        ] {
            let p = check(&dns(&order), &csr(&sans, None, &key)).unwrap_err();
            assert_eq!(p.kind.code(), "badCSR", "{order:?} vs {sans:?}");
        }
    }

    #[test]
    fn ip_sans_and_other_san_types() {
        let key = KeyPair::generate().unwrap();
        let req = check(&[Identifier::Ip("10.0.0.5".parse().unwrap())], &csr(&["10.0.0.5"], None, &key)).unwrap();
        assert_eq!(req.common_name, "");
        let mut p = CertificateParams::new(vec!["a.lab.test".to_string()]).unwrap();
        p.subject_alt_names.push(SanType::Rfc822Name("a@lab.test".try_into().unwrap()));
        let der = p.serialize_request(&key).unwrap().der().to_vec();
        assert_eq!(check(&dns(&["a.lab.test"]), &der).unwrap_err().kind.code(), "badCSR");
    }

    #[test]
    fn garbage_tampered_and_weak() {
        let key = KeyPair::generate().unwrap();
        assert_eq!(check(&dns(&["a.lab.test"]), b"nope").unwrap_err().kind.code(), "badCSR");
        let mut der = csr(&["a.lab.test"], None, &key);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert_eq!(check(&dns(&["a.lab.test"]), &der).unwrap_err().kind.code(), "badCSR");
        // ring cannot sign with a 1024-bit key, so this CSR was made once with openssl.
        let p = check(&dns(&["a.lab.test"]), include_bytes!("testdata/rsa1024-a.lab.test.csr.der")).unwrap_err();
        assert!(p.detail.contains("1024"), "{}", p.detail);
        let rsa2048 = KeyPair::from_pem(include_str!("testdata/rsa2048.pem")).unwrap();
        check(&dns(&["a.lab.test"]), &csr(&["a.lab.test"], None, &rsa2048)).unwrap();
        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        check(&dns(&["a.lab.test"]), &csr(&["a.lab.test"], None, &p384)).unwrap();
    }
}
