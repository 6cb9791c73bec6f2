//! Order identifiers (RFC 8555 §7.1.3, §9.7.7; RFC 8738): any string must normalise or be refused,
//! and what is accepted is already canonical, so checking it again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vacme::acme::{Identifier, RawIdentifier, identifier::normalize_dns};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);

    if let Ok(name) = normalize_dns(&text) {
        let again = normalize_dns(&name).unwrap_or_else(|p| panic!("{name:?} from {text:?} is refused again: {p}"));
        assert_eq!(again, name, "normalize_dns is not idempotent on {text:?}");
        assert!(name.len() <= 253 && name.is_ascii() && !name.ends_with('.'), "{name:?}");
        assert_eq!(name, name.to_ascii_lowercase());
    }

    // The wire type: the two RFC ones, or whatever else a client sends (the input up to a NUL).
    let raw = match selector % 3 {
        0 => RawIdentifier { kind: "dns".into(), value: text.into_owned() },
        1 => RawIdentifier { kind: "ip".into(), value: text.into_owned() },
        _ => {
            let (kind, value) = text.split_once('\0').unwrap_or((&text, ""));
            RawIdentifier { kind: kind.to_owned(), value: value.to_owned() }
        }
    };
    let Ok(id) = Identifier::parse(&raw) else { return };
    // What vacme sends back (order JSON, SANs) parses to the same identifier.
    let again = Identifier::parse(&RawIdentifier { kind: id.kind().into(), value: id.value() })
        .unwrap_or_else(|p| panic!("{id} does not parse again: {p}"));
    assert_eq!(again, id);
    let json = serde_json::to_string(&id).expect("an identifier serialises");
    assert_eq!(serde_json::from_str::<Identifier>(&json).expect("its JSON reads back"), id);
    // A wildcard's base name is itself a valid, non-wildcard name.
    if id.is_wildcard() {
        let base = id.base();
        assert!(!base.is_wildcard());
        assert_eq!(Identifier::parse(&RawIdentifier { kind: "dns".into(), value: base.value() }).ok(), Some(base));
    }
});
