//! What the admin dashboard reads: certificates by renewal state, name, account and profile, one
//! page at a time, with the client that ordered each; the audit trail by event and account. The
//! SQL is the same on both backends (numbered parameters, integer arithmetic, `LIKE ... ESCAPE`);
//! each backend binds the parameters its own way.

use crate::acme::{
    Identifier,
    renewal::{RenewalState, WindowPercents},
};

/// Which certificates a dashboard page lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertFilter {
    pub state: Option<RenewalState>,
    /// A part of one of its names (`nas` finds `nas.lab.example`).
    pub name: Option<String>,
    pub account: Option<String>,
    pub profile: Option<String>,
}

/// A certificate as the dashboard lists it: no PEM, with the client that ordered it.
#[derive(Clone, Debug)]
pub struct CertListRow {
    pub id: String,
    pub order_id: String,
    pub account_id: String,
    pub serial: String,
    pub identifiers: Vec<Identifier>,
    pub not_before: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
    pub renewed_by: Option<String>,
    pub profile: Option<String>,
    pub created_at: i64,
    pub user_agent: Option<String>,
    pub client_ip: Option<String>,
}

/// Which audit events a page lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only these events (`validation_failed`, ...); all when empty.
    pub events: Vec<String>,
    pub account: Option<String>,
    /// A part of one of the event's names.
    pub name: Option<String>,
    /// Events of this order, or of this certificate (either id).
    pub order_or_certificate: Option<(String, String)>,
    /// Events older than this id (the page cursor).
    pub before_id: Option<i64>,
}

/// A parameter of a built query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Param {
    Int(i64),
    Text(String),
}

/// SQL with `$1`, `$2`, ... and their values.
#[derive(Debug, Default)]
pub(super) struct Built {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Built {
    fn param(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }
}

const CERT_COLUMNS: &str = "c.id, c.order_id, c.account_id, c.serial, c.identifiers, c.not_before, c.not_after, \
     c.revoked_at, c.renewed_by, c.profile, c.created_at, o.client_user_agent, o.client_ip";

/// `%text%` for `LIKE ... ESCAPE '\'`, with the text's own `%`, `_` and `\` taken literally.
fn contains(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

/// The `WHERE` of a certificate listing at `now`: each renewal state as a condition on the
/// columns, the same arithmetic as `RenewalState::of` (window points truncated toward zero).
fn cert_where(b: &mut Built, f: &CertFilter, window: WindowPercents, now: i64) -> String {
    let mut conds: Vec<String> = Vec::new();
    if let Some(state) = f.state {
        let now = b.param(Param::Int(now));
        let live = "c.revoked_at IS NULL AND c.renewed_by IS NULL";
        let at = |p: u8| format!("c.not_before + (c.not_after - c.not_before) * {p} / 100");
        conds.push(match state {
            RenewalState::Revoked => "c.revoked_at IS NOT NULL".into(),
            RenewalState::Renewed => "c.revoked_at IS NULL AND c.renewed_by IS NOT NULL".into(),
            RenewalState::Expired => format!("{live} AND c.not_after <= {now}"),
            RenewalState::Overdue => format!("{live} AND c.not_after > {now} AND {} <= {now}", at(window.end)),
            RenewalState::Due => {
                format!(
                    "{live} AND c.not_after > {now} AND {} > {now} AND {} <= {now}",
                    at(window.end),
                    at(window.start)
                )
            }
            RenewalState::Active => format!("{live} AND c.not_after > {now} AND {} > {now}", at(window.start)),
        });
    }
    if let Some(name) = f.name.as_deref().filter(|n| !n.is_empty()) {
        let p = b.param(Param::Text(contains(&name.to_ascii_lowercase())));
        conds.push(format!("c.identifiers LIKE {p} ESCAPE '\\'"));
    }
    if let Some(account) = f.account.as_deref().filter(|a| !a.is_empty()) {
        let p = b.param(Param::Text(account.to_owned()));
        conds.push(format!("c.account_id = {p}"));
    }
    if let Some(profile) = f.profile.as_deref().filter(|p| !p.is_empty()) {
        let p = b.param(Param::Text(profile.to_owned()));
        conds.push(format!("c.profile = {p}"));
    }
    if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) }
}

/// One page of certificates, soonest expiry first.
pub(super) fn cert_page(f: &CertFilter, window: WindowPercents, now: i64, offset: i64, limit: i64) -> Built {
    let mut b = Built::default();
    let filter = cert_where(&mut b, f, window, now);
    let (limit, offset) = (b.param(Param::Int(limit)), b.param(Param::Int(offset)));
    b.sql = format!(
        "/* full listing */ SELECT {CERT_COLUMNS} FROM certificates c LEFT JOIN orders o ON o.id = c.order_id \
         {filter} ORDER BY c.not_after, c.id LIMIT {limit} OFFSET {offset}"
    );
    b
}

/// How many certificates the filter matches.
pub(super) fn cert_count(f: &CertFilter, window: WindowPercents, now: i64) -> Built {
    let mut b = Built::default();
    let filter = cert_where(&mut b, f, window, now);
    b.sql = format!("/* full listing */ SELECT COUNT(*) FROM certificates c {filter}");
    b
}

/// Certificates of `account_id` for exactly these names (stored JSON), newest first: the
/// renewal history of one device.
pub(super) fn cert_history(account_id: &str, identifiers_json: &str, limit: i64) -> Built {
    let mut b = Built::default();
    let (a, i, l) = (
        b.param(Param::Text(account_id.to_owned())),
        b.param(Param::Text(identifiers_json.to_owned())),
        b.param(Param::Int(limit)),
    );
    b.sql = format!(
        "SELECT {CERT_COLUMNS} FROM certificates c LEFT JOIN orders o ON o.id = c.order_id \
         WHERE c.account_id = {a} AND c.identifiers = {i} ORDER BY c.created_at DESC, c.id LIMIT {l}"
    );
    b
}

/// One page of the audit trail, newest first.
pub(super) fn audit_page(f: &AuditFilter, limit: i64) -> Built {
    let mut b = Built::default();
    let mut conds: Vec<String> = Vec::new();
    if !f.events.is_empty() {
        let ps: Vec<String> = f.events.iter().map(|e| b.param(Param::Text(e.clone()))).collect();
        conds.push(format!("event IN ({})", ps.join(", ")));
    }
    if let Some(account) = f.account.as_deref().filter(|a| !a.is_empty()) {
        let p = b.param(Param::Text(account.to_owned()));
        conds.push(format!("account_id = {p}"));
    }
    if let Some(name) = f.name.as_deref().filter(|n| !n.is_empty()) {
        let p = b.param(Param::Text(contains(&name.to_ascii_lowercase())));
        conds.push(format!("identifiers LIKE {p} ESCAPE '\\'"));
    }
    if let Some((order, cert)) = &f.order_or_certificate {
        let (o, c) = (b.param(Param::Text(order.clone())), b.param(Param::Text(cert.clone())));
        conds.push(format!("(order_id = {o} OR certificate_id = {c})"));
    }
    if let Some(before) = f.before_id {
        let p = b.param(Param::Int(before));
        conds.push(format!("id < {p}"));
    }
    let filter = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
    let limit = b.param(Param::Int(limit));
    b.sql = format!("/* full listing */ SELECT * FROM audit_events {filter} ORDER BY id DESC LIMIT {limit}");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_take_the_text_literally() {
        assert_eq!(contains("nas"), "%nas%");
        assert_eq!(contains("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }

    #[test]
    fn filters_become_numbered_parameters() {
        let f = CertFilter {
            state: Some(RenewalState::Due),
            name: Some("NAS".into()),
            account: Some("acc".into()),
            profile: None,
        };
        let b = cert_page(&f, WindowPercents { start: 50, end: 80 }, 1000, 50, 25);
        assert!(b.sql.contains("* 80 / 100 > $1 AND c.not_before + (c.not_after - c.not_before) * 50 / 100 <= $1"));
        assert!(b.sql.contains("c.identifiers LIKE $2 ESCAPE"), "{}", b.sql);
        assert!(b.sql.ends_with("LIMIT $4 OFFSET $5"), "{}", b.sql);
        assert_eq!(
            b.params,
            [Param::Int(1000), Param::Text("%nas%".into()), Param::Text("acc".into()), Param::Int(25), Param::Int(50)]
        );
    }
}
