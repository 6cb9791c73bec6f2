//! Admitting a new order (RFC 8555 §7.4): its identifiers parsed and allowed, the EAB scope, the
//! profile, the rate limits and `replaces`, checked in that order. What passes is the order the
//! store records; what does not is the one Problem the client gets, with a subproblem per name.
//! The issuance job asks `recheck` again just before signing.

use std::{collections::BTreeSet, sync::Arc};

use crate::{
    acme::{
        Identifier, Problem, ProblemType, Subproblem, ari,
        types::{AccountStatus, NewOrderRequest},
    },
    clock::from_unix,
    config::LimitsConfig,
    issuer::{IssuanceRequest, KeyPolicy},
    policy::{Lifecycle, Policy, ratelimit, scope::scope_allows},
    store::{AccountRow, EabKeyRow, NewAuthz, NewOrder, OrderClient, OrderRow, Store},
};

/// What admitting an order consults. newOrder, finalize and the issuance job share one.
#[derive(Clone, Debug)]
pub struct Admission {
    pub store: Store,
    pub policy: Arc<Policy>,
    pub lifecycle: Arc<Lifecycle>,
    /// The rate limits.
    pub limits: LimitsConfig,
    /// CSR keys accepted at finalize.
    pub key_policy: KeyPolicy,
}

impl Admission {
    /// The order `account` may make for `req`, or why not.
    pub async fn new_order(&self, account: &AccountRow, req: &NewOrderRequest, now: i64) -> Result<NewOrder, Problem> {
        let identifiers = parse_identifiers(req, self.policy.max_identifiers())?;
        self.policy.check(&identifiers)?;
        let binding = self.eab_key_of(account).await?;
        if let Some(key) = &binding {
            check_scope(key, &identifiers)?;
        }
        let profile = self.choose_profile(req.profile.as_deref(), binding.as_ref())?;
        ratelimit::check_new_order(&self.store, &self.limits, &account.id, &identifiers, now).await?;
        if let Some(replaces) = &req.replaces {
            self.check_replaces(account, replaces, &identifiers).await?;
        }
        let authzs: Vec<NewAuthz> = identifiers
            .iter()
            .map(|id| NewAuthz { identifier: id.clone(), challenges: self.policy.challenges_for(id) })
            .collect();
        Ok(NewOrder {
            identifiers,
            authzs,
            // Never rejected (cert-manager always sends them): kept, and clamped by the CA at issuance.
            not_before: req.not_before.map(|t| t.unix_timestamp()),
            not_after: req.not_after.map(|t| t.unix_timestamp()),
            profile,
            replaces: req.replaces.clone(),
            // The handler records who asked (it has the request's headers and address).
            client: OrderClient::default(),
        })
    }

    /// finalize's check of `csr` for `order`: the checked request (names equal to the order's,
    /// a key the key policy accepts), and a key the role it is routed to takes (`badCSR`
    /// otherwise). Called before anything is written, so the CA only ever sees checked requests.
    pub fn finalize(&self, order: &OrderRow, csr: &[u8], now: i64) -> Result<IssuanceRequest, Problem> {
        let req = self.signing_request(order, csr, now)?;
        self.lifecycle.check_key(order.profile.as_deref(), req.key).map_err(Problem::bad_csr)?;
        Ok(req)
    }

    /// The request the issuance job signs for `order` with its stored `csr`: the same check as at
    /// finalize (so a changed policy cannot be bypassed by an order queued before the change),
    /// with the role and lifetime its profile and key are routed to (`Lifecycle::route`).
    pub fn signing_request(&self, order: &OrderRow, csr: &[u8], now: i64) -> Result<IssuanceRequest, Problem> {
        let req = IssuanceRequest::new(
            &order.identifiers,
            csr,
            &self.key_policy,
            order.not_before.map(from_unix),
            order.not_after.map(from_unix),
        )?;
        let target = self.lifecycle.route(order.profile.as_deref(), req.key);
        Ok(req.with_target(target, from_unix(now)))
    }

    /// What changed since the order was finalized that forbids signing it now: the account is
    /// no longer valid (`unauthorized`), a name left `policy.allowed_domains`, or left the scope
    /// of the account's EAB key (`rejectedIdentifier`). An EAB key that no longer exists is
    /// `unauthorized`; a revoked one keeps its scope: accounts already bound with it keep working,
    /// as `vacme eab revoke` says (docs/cli.md); deactivating the account stops them.
    pub async fn recheck(&self, order: &OrderRow) -> crate::store::Result<Option<Problem>> {
        let Some(account) = self.store.account(&order.account_id).await? else {
            return Ok(Some(Problem::unauthorized("the account of this order no longer exists")));
        };
        if account.status != AccountStatus::Valid {
            return Ok(Some(Problem::unauthorized("the account of this order is no longer valid")));
        }
        if let Err(p) = self.policy.check(&order.identifiers) {
            return Ok(Some(p));
        }
        let Some(kid) = &account.eab_kid else { return Ok(None) };
        let Some(key) = self.store.eab_key(kid).await? else {
            return Ok(Some(Problem::unauthorized(
                "the external account binding key of this account no longer exists",
            )));
        };
        Ok(order.identifiers.iter().find(|id| !scope_allows(&key.scope, id)).map(|id| {
            Problem::rejected_identifier(format!(
                "{} is outside this account's scope ({})",
                id.value(),
                key.scope.join(", ")
            ))
        }))
    }

    /// The identifiers of `req` that parse, as far as the policy reads them (for the audit
    /// trail of a refusal).
    pub fn asked(&self, req: &NewOrderRequest) -> Vec<Identifier> {
        req.identifiers
            .iter()
            .take(self.policy.max_identifiers())
            .filter_map(|raw| Identifier::parse(raw).ok())
            .collect()
    }

    /// The EAB key an account was bound with, if any.
    async fn eab_key_of(&self, account: &AccountRow) -> Result<Option<EabKeyRow>, Problem> {
        match &account.eab_kid {
            Some(kid) => Ok(self.store.eab_key(kid).await?),
            None => Ok(None),
        }
    }

    /// The order's profile: the one its EAB key fixes, else the one asked for, else the default.
    fn choose_profile(&self, asked: Option<&str>, binding: Option<&EabKeyRow>) -> Result<Option<String>, Problem> {
        let profiles = &self.lifecycle.profiles;
        let invalid = |m: String| Problem::new(ProblemType::InvalidProfile, m);
        if let Some(fixed) = binding.and_then(|k| k.profile.as_deref()) {
            return match asked {
                Some(a) if a != fixed => Err(invalid(format!("this account may only use profile {fixed:?}"))),
                _ => Ok(Some(fixed.to_owned())),
            };
        }
        match asked {
            Some(a) if profiles.contains_key(a) => Ok(Some(a.to_owned())),
            Some(a) if profiles.is_empty() => {
                Err(invalid(format!("profile {a:?} is not offered: this server has no profiles")))
            }
            Some(a) => {
                let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
                Err(invalid(format!("profile {a:?} is not offered; profiles are {}", known.join(", "))))
            }
            None => Ok(self.lifecycle.default_profile.clone()),
        }
    }

    /// RFC 9773 §5: `replaces` must name a certificate of this account sharing a name with the order.
    async fn check_replaces(&self, account: &AccountRow, replaces: &str, ids: &[Identifier]) -> Result<(), Problem> {
        let id = ari::parse_cert_id(replaces)?;
        let old = self
            .store
            .certificate_by_ari_id(id)
            .await?
            .ok_or_else(|| Problem::malformed("replaces names a certificate this server did not issue"))?;
        if old.account_id != account.id {
            return Err(Problem::unauthorized("replaces names a certificate of another account"));
        }
        if !old.identifiers.iter().any(|i| ids.contains(i)) {
            return Err(Problem::malformed("the order shares no identifier with the certificate it replaces"));
        }
        Ok(())
    }
}

/// An account made with a scoped EAB key orders only names in that scope.
fn check_scope(key: &EabKeyRow, identifiers: &[Identifier]) -> Result<(), Problem> {
    let refused: Vec<Subproblem> = identifiers
        .iter()
        .filter(|id| !scope_allows(&key.scope, id))
        .map(|id| Subproblem {
            kind: ProblemType::RejectedIdentifier,
            detail: format!("{} is outside this account's scope ({})", id.value(), key.scope.join(", ")),
            identifier: Some(id.clone()),
        })
        .collect();
    match refused.len() {
        0 => Ok(()),
        1 => Err(Problem::rejected_identifier(refused[0].detail.clone()).with_subproblems(refused)),
        n => Err(Problem::rejected_identifier(format!("{n} identifiers are outside this account's scope"))
            .with_subproblems(refused)),
    }
}

/// Parses, normalises, de-duplicates and sorts; every bad identifier becomes a subproblem.
fn parse_identifiers(req: &NewOrderRequest, max: usize) -> Result<Vec<Identifier>, Problem> {
    if req.identifiers.is_empty() {
        return Err(Problem::malformed("an order needs at least one identifier"));
    }
    if req.identifiers.len() > max {
        return Err(Problem::rejected_identifier(format!("an order may have at most {max} identifiers")));
    }
    let mut ok = BTreeSet::new();
    let mut bad = Vec::new();
    for raw in &req.identifiers {
        match Identifier::parse(raw) {
            Ok(id) => {
                ok.insert(id);
            }
            Err(p) => bad.push(Subproblem { kind: p.kind, detail: p.detail, identifier: None }),
        }
    }
    match bad.len() {
        0 => Ok(ok.into_iter().collect()),
        1 => {
            let first = bad.remove(0);
            Err(Problem::new(first.kind, first.detail))
        }
        n => Err(Problem::rejected_identifier(format!("{n} identifiers are not valid")).with_subproblems(bad)),
    }
}
