#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Properties of the two parsers every request goes through first: DNS identifier normalisation
//! (RFC 8555 §7.1.4, RFC 1035 §2.3.1, RFC 5891) and anti-replay nonces (RFC 8555 §6.5).

use std::net::IpAddr;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use proptest::prelude::*;
use vacme::{
    acme::{Identifier, RawIdentifier, identifier::normalize_dns},
    jws::nonce::MemoryNonces,
};

/// `cases` per property; failures are reported, not persisted (an integration test has no
/// `lib.rs` beside it for proptest's regression files).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---- identifiers ----

/// `normalize_dns` with the refusal's text, to compare and print.
fn norm(name: &str) -> Result<String, String> {
    normalize_dns(name).map_err(|p| p.detail)
}

/// What a certificate may name, written independently of the validator: lower-case ASCII, at
/// most 253 characters, labels of 1 to 63 of [a-z0-9-] that neither start nor end with '-',
/// a wildcard only as the whole leftmost label, at least two labels (or `localhost` alone),
/// and not an IP address in disguise (the last label is not all digits).
fn is_ldh_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 || !name.is_ascii() {
        return false;
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    let wildcard = rest.len() != name.len();
    let labels: Vec<&str> = rest.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let enough = labels.len() >= 2 || (!wildcard && labels == ["localhost"]);
    let tld_ok = labels.last().is_some_and(|t| !t.bytes().all(|b| b.is_ascii_digit()));
    enough && tld_ok && labels.iter().all(label_ok)
}

/// Labels that are mostly valid, with upper case, digits, hyphens, the odd bad character and
/// lengths around 63, so that both accepted and refused names come up often.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?",
        1 => "[a-z]{60,66}",
        1 => "xn--[a-z0-9-]{0,12}",
        1 => "[a-z0-9_ *üß.-]{0,6}",
        1 => Just("localhost".to_owned()),
    ]
}

/// Names built from `label()`, sometimes with a wildcard, a trailing dot or odd punctuation.
fn name() -> impl Strategy<Value = String> {
    (prop::collection::vec(label(), 1..6), any::<bool>(), any::<bool>(), 0..4u8).prop_map(
        |(labels, wildcard, dot, extra)| {
            let mut n = labels.join(".");
            if wildcard {
                n = format!("*.{n}");
            }
            if dot {
                n.push('.');
            }
            match extra {
                1 => n.push('.'),
                2 => n.insert(0, '.'),
                _ => {}
            }
            n
        },
    )
}

/// Names the validator accepts: valid labels under `localhost` or a two-label domain.
fn valid_name() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..5),
        any::<bool>(),
        prop_oneof![Just("localhost"), Just("lab.example"), Just("xn--bcher-kva.example")],
    )
        .prop_map(|(labels, wildcard, suffix)| {
            let n = format!("{}.{suffix}", labels.join("."));
            if wildcard { format!("*.{n}") } else { n }
        })
        .prop_filter("'--' in positions 3-4 is for xn-- labels only", |n| {
            !has_reserved_hyphens(n.trim_start_matches("*."))
        })
}

/// Flips the case of the ASCII letters selected by `mask`.
fn recase(name: &str, mask: &[bool]) -> String {
    name.chars().zip(mask.iter().cycle()).map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c }).collect()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn normalize_dns_never_panics_on_arbitrary_text(s in any::<String>()) {
        let _ = normalize_dns(&s);
        for kind in ["dns", "ip", "email", ""] {
            let _ = Identifier::parse(&RawIdentifier { kind: kind.into(), value: s.clone() });
        }
    }

    #[test]
    fn accepted_names_are_ldh_hostnames_and_normalisation_is_idempotent(s in name()) {
        match normalize_dns(&s) {
            Ok(n) => {
                prop_assert!(is_ldh_hostname(&n), "{s:?} was accepted as {n:?}");
                prop_assert_eq!(norm(&n), Ok(n.clone()), "not idempotent on {:?}", s);
                // The same name, however it was spelled.
                prop_assert_eq!(n.as_str(), s.strip_suffix('.').unwrap_or(&s).to_ascii_lowercase());
            }
            Err(p) => prop_assert_eq!(p.kind.code(), "rejectedIdentifier", "{:?}: {}", s, p.detail),
        }
    }

    #[test]
    fn refused_text_is_never_an_ldh_hostname_spelling(s in prop_oneof![name(), "[a-zA-Z0-9.*-]{1,40}"]) {
        // The validator refuses only what the rules refuse: a name that is LDH once lower-cased
        // and stripped of one trailing dot is accepted (unless it is an xn-- label, which also
        // needs valid Punycode).
        let canonical = s.strip_suffix('.').unwrap_or(&s).to_ascii_lowercase();
        if is_ldh_hostname(&canonical) && !canonical.contains("xn--") && !has_reserved_hyphens(&canonical) {
            prop_assert_eq!(norm(&s), Ok(canonical));
        }
    }

    #[test]
    fn spellings_of_an_accepted_name_normalise_to_it(n in valid_name(), mask in prop::collection::vec(any::<bool>(), 1..16), dot in any::<bool>()) {
        let canonical = normalize_dns(&n).unwrap();
        prop_assert_eq!(&canonical, &n, "a valid lower-case name is its own canonical form");
        let mut spelled = recase(&n, &mask);
        if dot {
            spelled.push('.');
        }
        prop_assert_eq!(norm(&spelled), Ok(canonical.clone()), "{:?}", spelled);
        prop_assert_eq!(norm(&n.to_ascii_uppercase()), Ok(canonical.clone()));
        // Ordered, case is spelling; a trailing dot is refused, never rewritten.
        let parsed = Identifier::parse(&RawIdentifier { kind: "dns".into(), value: spelled });
        if dot {
            prop_assert_eq!(parsed.unwrap_err().kind.code(), "rejectedIdentifier");
        } else {
            prop_assert_eq!(parsed.unwrap(), Identifier::Dns(canonical));
        }
        // Two trailing dots are an empty label, never the same name.
        let two_dots = format!("{n}..");
        prop_assert!(normalize_dns(&two_dots).is_err());
    }

    #[test]
    fn ip_addresses_are_ip_identifiers_never_dns_names(ip in any::<IpAddr>()) {
        let text = ip.to_string();
        prop_assert_eq!(Identifier::parse(&RawIdentifier { kind: "ip".into(), value: text.clone() }).unwrap(), Identifier::Ip(ip));
        let p = Identifier::parse(&RawIdentifier { kind: "dns".into(), value: text }).unwrap_err();
        prop_assert_eq!(p.kind.code(), "rejectedIdentifier");
    }
}

/// RFC 5891 §4.2.3.1: "--" in positions 3 and 4 is reserved for A-labels (`xn--`).
fn has_reserved_hyphens(name: &str) -> bool {
    name.split('.').any(|l| l.is_ascii() && l.len() >= 4 && &l[2..4] == "--" && !l.starts_with("xn--"))
}

// ---- nonces ----

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn every_issued_nonce_redeems_exactly_once_in_any_order(order in (1..40usize).prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle())) {
        let nonces = MemoryNonces::new().unwrap();
        let issued: Vec<String> = (0..order.len()).map(|_| nonces.issue()).collect();
        let distinct: std::collections::BTreeSet<&String> = issued.iter().collect();
        prop_assert_eq!(distinct.len(), issued.len(), "no nonce is issued twice");
        for &i in &order {
            prop_assert!(nonces.redeem(&issued[i]), "nonce {} refused on first use", i);
            prop_assert!(!nonces.redeem(&issued[i]), "nonce {} accepted twice", i);
        }
        for n in &issued {
            prop_assert!(!nonces.redeem(n), "still refused after all were used");
        }
    }

    #[test]
    fn nonces_are_base64url_without_padding(count in 1..20usize) {
        let nonces = MemoryNonces::new().unwrap();
        for _ in 0..count {
            let n = nonces.issue();
            prop_assert!(!n.is_empty());
            prop_assert!(n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{}", n);
            let raw = URL_SAFE_NO_PAD.decode(&n).unwrap();
            prop_assert_eq!(URL_SAFE_NO_PAD.encode(raw), n);
        }
    }

    #[test]
    fn arbitrary_strings_never_redeem(junk in prop_oneof![any::<String>(), "[A-Za-z0-9_-]{32}", "[A-Za-z0-9_-]{0,64}"]) {
        let nonces = MemoryNonces::new().unwrap();
        let real = nonces.issue();
        prop_assume!(junk != real);
        prop_assert!(!nonces.redeem(&junk));
        prop_assert!(nonces.redeem(&real), "a refused guess does not use up the real nonce");
    }

    #[test]
    fn mutated_nonces_never_redeem(pos in any::<prop::sample::Index>(), bit in 0..8u8, kind in 0..4u8, extra in "[A-Za-z0-9_-]{1,4}") {
        let nonces = MemoryNonces::new().unwrap();
        // Issue a few, so that neighbouring counters are live too.
        let issued: Vec<String> = (0..3).map(|_| nonces.issue()).collect();
        let real = &issued[1];
        let mutated = match kind {
            // One bit of the decoded nonce (counter or MAC).
            0 => {
                let mut raw = URL_SAFE_NO_PAD.decode(real).unwrap();
                let i = pos.index(raw.len());
                raw[i] ^= 1 << bit;
                URL_SAFE_NO_PAD.encode(raw)
            }
            // One character replaced by another of the alphabet.
            1 => {
                let mut chars: Vec<char> = real.chars().collect();
                let i = pos.index(chars.len());
                chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
                chars.into_iter().collect()
            }
            // Truncated, or with more text after it.
            2 => real[..pos.index(real.len())].to_owned(),
            _ => format!("{real}{extra}"),
        };
        prop_assert_ne!(&mutated, real);
        prop_assert!(!nonces.redeem(&mutated), "{} accepted as a mutation of {}", mutated, real);
        for n in &issued {
            prop_assert!(nonces.redeem(n), "the real nonces are still good once");
        }
    }
}
