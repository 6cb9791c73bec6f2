//! The name scope an EAB key gives the accounts made with it (`vacme eab create --scope`).

use crate::acme::Identifier;

/// Whether a scope (EAB key patterns) admits `id`. An empty scope admits everything policy does.
///
/// Patterns: `nas.lab.example` (that name), `*.lab.example` (any name below lab.example, and
/// wildcards below it), `10.0.0.0/24` or `10.0.0.5` (IP identifiers).
pub fn scope_allows(scope: &[String], id: &Identifier) -> bool {
    scope.is_empty() || scope.iter().any(|pattern| pattern_allows(pattern, id))
}

fn pattern_allows(pattern: &str, id: &Identifier) -> bool {
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    match id {
        Identifier::Ip(ip) => crate::config::parse_net(&pattern).is_some_and(|net| net.contains(ip)),
        Identifier::Dns(name) => match pattern.strip_prefix("*.") {
            Some(suffix) => {
                let name = name.strip_prefix("*.").unwrap_or(name);
                name.len() > suffix.len() && name.ends_with(&format!(".{suffix}"))
                    || (name == suffix && id.is_wildcard())
            }
            None => *name == pattern,
        },
    }
}

/// Checks scope patterns given to `vacme eab create`.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let p = pattern.trim().trim_end_matches('.');
    if crate::config::parse_net(p).is_some() {
        return Ok(());
    }
    let name = p.strip_prefix("*.").unwrap_or(p);
    crate::acme::identifier::normalize_dns(name)
        .map(|_| ())
        .map_err(|_| format!("{pattern:?} is not a name, a *.suffix pattern, or an IP/CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let dns = |n: &str| Identifier::Dns(n.into());
        let scope = vec!["*.lab.example".to_owned(), "nas.home.arpa".to_owned(), "10.0.0.0/24".to_owned()];
        assert!(scope_allows(&scope, &dns("a.lab.example")));
        assert!(scope_allows(&scope, &dns("a.b.lab.example")));
        assert!(scope_allows(&scope, &dns("*.lab.example")));
        assert!(!scope_allows(&scope, &dns("lab.example")));
        assert!(!scope_allows(&scope, &dns("evillab.example")));
        assert!(scope_allows(&scope, &dns("nas.home.arpa")));
        assert!(!scope_allows(&scope, &dns("x.nas.home.arpa")));
        assert!(scope_allows(&scope, &Identifier::Ip("10.0.0.9".parse().unwrap())));
        assert!(!scope_allows(&scope, &Identifier::Ip("10.0.1.9".parse().unwrap())));
        assert!(scope_allows(&[], &dns("anything.example")));
        assert!(check_pattern("*.lab.example").is_ok() && check_pattern("10.0.0.0/8").is_ok());
        assert!(check_pattern("*.-bad").is_err() && check_pattern("a b").is_err());
    }
}
