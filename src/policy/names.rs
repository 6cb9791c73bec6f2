//! Which identifiers may be ordered, and which challenges prove them.

use crate::{
    acme::{Identifier, Problem, ProblemType, Subproblem, types::ChallengeType},
    config::PolicyConfig,
};

/// The issuance policy of this server.
#[derive(Clone, Debug)]
pub struct Policy {
    allowed_domains: Vec<String>,
    max_identifiers: usize,
    allow_wildcards: bool,
    allowed_ips: Vec<ipnet::IpNet>,
    caa_identities: Vec<String>,
}

impl Policy {
    pub fn new(cfg: &PolicyConfig) -> Self {
        let allowed_domains = cfg
            .allowed_domains
            .iter()
            .map(|d| d.trim_end_matches('.').trim_start_matches("*.").to_ascii_lowercase())
            .collect();
        Self {
            allowed_domains,
            max_identifiers: cfg.max_identifiers,
            allow_wildcards: cfg.allow_wildcards,
            allowed_ips: cfg.allowed_ips.iter().filter_map(|s| crate::config::parse_net(s)).collect(),
            caa_identities: cfg.caa_identities.clone(),
        }
    }

    /// The issuer domains CAA records must name (advertised in the directory's `caaIdentities`).
    pub fn caa_identities(&self) -> &[String] {
        &self.caa_identities
    }

    /// Most identifiers in one order.
    pub fn max_identifiers(&self) -> usize {
        self.max_identifiers
    }

    /// `rejectedIdentifier` with one subproblem per refused identifier, or Ok.
    pub fn check(&self, identifiers: &[Identifier]) -> Result<(), Problem> {
        let refused: Vec<Subproblem> = identifiers
            .iter()
            .filter_map(|id| {
                self.refusal(id).map(|detail| Subproblem {
                    kind: ProblemType::RejectedIdentifier,
                    detail,
                    identifier: Some(id.clone()),
                })
            })
            .collect();
        match refused.as_slice() {
            [] => Ok(()),
            [one] => Err(Problem::rejected_identifier(one.detail.clone()).with_subproblems(refused)),
            _ => Err(Problem::rejected_identifier(format!(
                "{} of the order's identifiers are refused by policy",
                refused.len()
            ))
            .with_subproblems(refused)),
        }
    }

    fn refusal(&self, id: &Identifier) -> Option<String> {
        match id {
            Identifier::Dns(name) if id.is_wildcard() && !self.allow_wildcards => {
                Some(format!("{name}: wildcard names are not issued by this server"))
            }
            Identifier::Dns(name) => {
                // A wildcard is checked by its base name: `*.lab.example` needs `lab.example` allowed.
                let base = name.strip_prefix("*.").unwrap_or(name);
                let allowed = self.allowed_domains.iter().any(|d| base == d || base.ends_with(&format!(".{d}")));
                (!allowed).then(|| {
                    format!("{name} is not in a domain this server issues for ({})", self.allowed_domains.join(", "))
                })
            }
            // RFC 8738: IP identifiers only inside the configured ranges.
            Identifier::Ip(ip) => (!self.allowed_ips.iter().any(|n| n.contains(ip)))
                .then(|| format!("{ip} is not in an address range this server issues for")),
        }
    }

    /// The challenges offered for an identifier (RFC 8555 §8). A wildcard can only be proven
    /// in DNS (RFC 8555 §7.1.3): controlling one host says nothing about every name below it.
    pub fn challenges_for(&self, id: &Identifier) -> Vec<ChallengeType> {
        match id {
            _ if id.is_wildcard() => vec![ChallengeType::Dns01],
            // RFC 8738 §7: dns-01 cannot prove an IP address.
            Identifier::Ip(_) => vec![ChallengeType::Http01, ChallengeType::TlsAlpn01],
            Identifier::Dns(_) => vec![ChallengeType::Http01, ChallengeType::Dns01, ChallengeType::TlsAlpn01],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(&PolicyConfig {
            allowed_domains: vec!["Lab.Example.".into()],
            max_identifiers: 10,
            allow_wildcards: false,
            allowed_ips: vec![],
            caa_identities: vec![],
        })
    }

    #[test]
    fn suffix_match_is_on_label_boundaries() {
        let p = policy();
        assert!(p.check(&[Identifier::Dns("lab.example".into())]).is_ok());
        assert!(p.check(&[Identifier::Dns("nas.lab.example".into())]).is_ok());
        for bad in ["evillab.example", "lab.example.evil", "example"] {
            let e = p.check(&[Identifier::Dns(bad.into())]).unwrap_err();
            assert_eq!(e.kind, ProblemType::RejectedIdentifier, "{bad}");
        }
    }

    #[test]
    fn wildcards_only_when_allowed_and_only_by_dns01() {
        let wild = Identifier::Dns("*.lab.example".into());
        assert_eq!(policy().check(std::slice::from_ref(&wild)).unwrap_err().kind, ProblemType::RejectedIdentifier);
        let p = Policy::new(&PolicyConfig {
            allowed_domains: vec!["lab.example".into()],
            max_identifiers: 10,
            allow_wildcards: true,
            allowed_ips: vec![],
            caa_identities: vec![],
        });
        assert!(p.check(std::slice::from_ref(&wild)).is_ok());
        assert!(p.check(&[Identifier::Dns("*.other.example".into())]).is_err());
        assert_eq!(p.challenges_for(&wild), vec![ChallengeType::Dns01]);
        assert!(p.challenges_for(&Identifier::Dns("a.lab.example".into())).contains(&ChallengeType::Http01));
    }

    #[test]
    fn each_refused_identifier_gets_a_subproblem() {
        let e = policy()
            .check(&[
                Identifier::Dns("ok.lab.example".into()),
                Identifier::Dns("a.other".into()),
                Identifier::Ip("10.0.0.1".parse().unwrap()),
            ])
            .unwrap_err();
        assert_eq!(e.subproblems.len(), 2);
        assert_eq!(e.subproblems[0].identifier, Some(Identifier::Dns("a.other".into())));
    }
}
