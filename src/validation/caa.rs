//! CAA (RFC 8659, with RFC 8657's `accounturi` and `validationmethods`): may this CA issue for
//! the name, to this account, proven this way? Checked after a challenge passes, before the
//! authorization turns valid. Off unless `policy.caa_identities` names this CA.

use super::Resolver;
use crate::acme::{Identifier, Problem, ProblemType, types::ChallengeType};

/// Property tags an issuer must understand (RFC 8659 §4; RFC 9495 issuemail/issuevmc are known
/// but do not concern TLS certificates).
const KNOWN_TAGS: &[&str] = &["issue", "issuewild", "iodef", "issuemail", "issuevmc", "contactemail", "contactphone"];

/// One `issue`/`issuewild` value: issuer domain and parameters (RFC 8659 §4.2).
fn parse_issue_value(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = value.split(';');
    let domain = parts.next().unwrap_or("").trim().trim_end_matches('.').to_ascii_lowercase();
    let params = parts
        .filter_map(|p| p.trim().split_once('=').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    (domain, params)
}

/// Ok when no relevant CAA record exists or one authorizes `identities` for this account and
/// method; a `caa` problem naming the record otherwise.
pub async fn check(
    resolver: &Resolver,
    identities: &[String],
    id: &Identifier,
    account_uri: &str,
    method: ChallengeType,
) -> Result<(), Problem> {
    let Identifier::Dns(full) = id else { return Ok(()) }; // CAA has no meaning for addresses
    if identities.is_empty() {
        return Ok(());
    }
    let wildcard = id.is_wildcard();
    let name = full.strip_prefix("*.").unwrap_or(full);
    // RFC 8659 §3: the relevant RRset is the first non-empty one climbing towards the root.
    let labels: Vec<&str> = name.split('.').collect();
    let mut found = None;
    for i in 0..labels.len() {
        let candidate = labels[i..].join(".");
        let records = resolver.lookup_caa(&candidate).await?;
        if !records.is_empty() {
            found = Some((candidate, records));
            break;
        }
    }
    let Some((owner, records)) = found else { return Ok(()) };
    let refuse =
        |why: String| Problem::new(ProblemType::Caa, format!("CAA record for {owner} prevents issuance: {why}"));
    if let Some((_, tag, _)) =
        records.iter().find(|(critical, tag, _)| *critical && !KNOWN_TAGS.contains(&tag.as_str()))
    {
        return Err(refuse(format!("critical property {tag:?} is not understood")));
    }
    let want = if wildcard && records.iter().any(|(_, t, _)| t == "issuewild") { "issuewild" } else { "issue" };
    let props: Vec<&String> = records.iter().filter(|(_, t, _)| t == want).map(|(_, _, v)| v).collect();
    if props.is_empty() {
        return Ok(()); // no issue property: any CA may issue
    }
    for value in &props {
        let (domain, params) = parse_issue_value(value);
        if !identities.iter().any(|i| i.eq_ignore_ascii_case(&domain)) {
            continue;
        }
        let account_ok = params.iter().filter(|(k, _)| k == "accounturi").all(|(_, v)| v == account_uri);
        let method_ok = params
            .iter()
            .filter(|(k, _)| k == "validationmethods")
            .all(|(_, v)| v.split(',').any(|m| m.trim() == method.as_str()));
        if account_ok && method_ok {
            return Ok(());
        }
    }
    let shown: Vec<String> = props.iter().take(5).map(|v| format!("{want} {v:?}")).collect();
    Err(refuse(format!(
        "{} does not authorize {} for this account and {method}",
        shown.join(", "),
        identities.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_values() {
        assert_eq!(parse_issue_value("vacme.test"), ("vacme.test".into(), vec![]));
        assert_eq!(parse_issue_value(";"), ("".into(), vec![]));
        let (d, p) = parse_issue_value(" Vacme.Test ; accounturi=https://a/acct/1 ; validationmethods=dns-01,http-01");
        assert_eq!(d, "vacme.test");
        assert_eq!(p[0], ("accounturi".into(), "https://a/acct/1".into()));
        assert_eq!(p[1], ("validationmethods".into(), "dns-01,http-01".into()));
    }
}
