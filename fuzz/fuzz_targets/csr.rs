//! Finalize (RFC 8555 §7.4): a client's CSR checked against its order's identifiers by vacme's
//! strict PKCS#10 reader (src/issuer/der.rs), then the order's requested validity clamped by a
//! profile. Any DER must give an `IssuanceRequest` or `badCSR`, and an accepted request must hold
//! exactly the order's names. The seeds include the hostile CSRs of tests/support/hostile_csr.rs.
//!
//! Input layout (fixed header, then the CSR, so mutating the DER keeps the order and dates):
//! byte 0 picks order identifiers from `NAMES` (one bit each), byte 1 holds flags, bytes 2..10
//! and 10..18 are the order's notBefore/notAfter in Unix seconds (big-endian, as the store keeps
//! them), bytes 18..22 a profile's `max_days`; the rest is the DER.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use time::Duration;
use vacme::{
    IssuanceRequest, KeyPolicy, SignTarget,
    acme::Identifier,
    from_unix,
};

/// The names `seedgen` puts in its CSRs, so seeds start on the accepting path.
const NAMES: [&str; 6] = ["a.lab.test", "b.lab.test", "*.lab.test", "10.0.0.5", "fd00::5", "nas.home.arpa"];
const HEADER: usize = 22;
/// 2026-11-28T00:00:00Z: the worker's "now" is fixed so a crash reproduces.
const NOW: i64 = 1_795_824_000;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let (head, der) = data.split_at(HEADER);
    let order: Vec<Identifier> = NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| head[0] & (1 << i) != 0)
        .map(|(_, n)| match n.parse::<IpAddr>() {
            Ok(ip) => Identifier::Ip(ip),
            Err(_) => Identifier::Dns((*n).to_owned()),
        })
        .collect();
    let flags = head[1];
    let secs = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or_default());
    let not_before = (flags & 1 != 0).then(|| from_unix(secs(&head[2..10])));
    let not_after = (flags & 2 != 0).then(|| from_unix(secs(&head[10..18])));
    let policy = if flags & 4 != 0 {
        KeyPolicy { ec_p384: false, rsa_min_bits: 3072, ed25519: true, ..KeyPolicy::default() }
    } else {
        KeyPolicy::default()
    };

    let Ok(req) = IssuanceRequest::new(&order, der, &policy, not_before, not_after) else { return };
    let mut wanted = order.clone();
    wanted.sort();
    wanted.dedup();
    assert_eq!(req.identifiers, wanted, "an accepted CSR names exactly the order's identifiers");
    assert!(req.common_name.len() <= 64, "CN longer than RFC 5280 allows: {:?}", req.common_name);
    assert!(req.common_name.is_empty() || wanted.iter().any(|id| id.value() == req.common_name));
    assert_eq!(req.csr_der, der);

    let max_days = u32::from_be_bytes(head[18..22].try_into().unwrap_or_default());
    let max = (flags & 8 != 0).then(|| Duration::days(i64::from(max_days)));
    let now = from_unix(NOW);
    let target = SignTarget { max_lifetime: max, ..SignTarget::default() };
    let req = req.with_target(target, now);
    if let (Some(max), Some(na)) = (max, req.not_after) {
        // Both CAs start the certificate now (backdated by at most a minute), whatever notBefore
        // the order asked for, so no notAfter may lie more than the cap past that.
        assert!(na - (now - Duration::minutes(1)) <= max, "notAfter {na} is past the profile's cap");
    }
});
