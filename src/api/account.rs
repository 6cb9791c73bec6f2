//! newAccount, account update and deactivation, and the orders list (RFC 8555 §7.3).

use axum::{
    Extension,
    extract::{Path, Query, State},
};
use http::StatusCode;
use serde::Deserialize;
use tracing::Span;

use crate::{
    acme::ids::AccountId,
    acme::{
        Problem,
        types::{self, AccountRequest, AccountStatus, OrdersList},
    },
    api::AcmeResponse,
    jws::{
        PublicJwk, eab,
        extract::{PostAsGet, SignedJwk, SignedOrGet},
        keychange::SignedKeyChange,
    },
    policy::ratelimit::{self, ClientAddr},
    state::AppState,
    store::{AccountRow, AuditEvent, KeyChange, NewAccountOutcome},
};

/// Most contact URIs an account may list.
const MAX_CONTACTS: usize = 10;

fn wire(acct: &AccountRow, st: &AppState) -> types::Account {
    types::Account {
        status: acct.status,
        contact: acct.contact.clone(),
        orders: st.urls.orders(&acct.id),
        terms_of_service_agreed: acct.tos_agreed.then_some(true),
    }
}

/// POST /acme/new-account: 201 for a new key, 200 with the existing account for a known one.
pub async fn new_account(
    State(st): State<AppState>,
    addr: Option<Extension<ClientAddr>>,
    req: SignedJwk<AccountRequest>,
) -> Result<AcmeResponse, Problem> {
    let thumbprint = req.jwk.thumbprint();
    if let Some(acct) = st.store.account_by_thumbprint(&thumbprint).await? {
        return existing(&st, &acct);
    }
    if req.payload.only_return_existing {
        return Err(Problem::account_does_not_exist("no account exists for this key"));
    }
    let contact = check_contacts(req.payload.contact.as_deref().unwrap_or_default())?;
    let (now, addr) = (st.clock.unix(), addr.map(|Extension(ClientAddr(ip))| ip));
    ratelimit::check_new_account(&st.store, &st.limits.rate, addr, now).await?;
    let binding = req.payload.external_account_binding.as_ref();
    let lc = &st.lifecycle;
    let eab_kid = eab::account_binding(&st.store, &lc.eab, lc.eab_required, binding, &req.jwk, &req.url, now).await?;
    let tos = req.payload.terms_of_service_agreed.unwrap_or(false);
    let new = NewAccount { thumbprint, jwk: &req.jwk, contact, tos, eab_kid, addr };
    let (acct, status) = create(&st, new, now).await?;
    Ok(AcmeResponse::json(status, &wire(&acct, &st)).location(st.urls.account(&acct.id)))
}

/// newAccount with a key that already has an account: that account, unless it is deactivated.
fn existing(st: &AppState, acct: &AccountRow) -> Result<AcmeResponse, Problem> {
    Span::current().record("account_id", acct.id.as_str());
    if acct.status != AccountStatus::Valid {
        return Err(Problem::unauthorized(format!("the account of this key is {}", acct.status)));
    }
    Ok(AcmeResponse::json(StatusCode::OK, &wire(acct, st)).location(st.urls.account(&acct.id)))
}

/// A checked newAccount request.
struct NewAccount<'a> {
    thumbprint: String,
    jwk: &'a PublicJwk,
    contact: Vec<String>,
    tos: bool,
    eab_kid: Option<String>,
    addr: Option<std::net::IpAddr>,
}

/// Records the account (201), or finds the one a concurrent request made for the same key (200),
/// and audits a new one.
async fn create(st: &AppState, new: NewAccount<'_>, now: i64) -> Result<(AccountRow, StatusCode), Problem> {
    let created_ip = new.addr.map(|ip| ip.to_string());
    let (jwk, kid) = (new.jwk.to_json(), new.eab_kid.as_deref());
    let outcome =
        st.store.create_account(&new.thumbprint, &jwk, &new.contact, new.tos, kid, created_ip.as_deref(), now).await?;
    let (acct, status) = match outcome {
        NewAccountOutcome::Created(a) => (a, StatusCode::CREATED),
        NewAccountOutcome::Exists(a) => (a, StatusCode::OK),
        NewAccountOutcome::EabUnusable => {
            return Err(Problem::unauthorized("externalAccountBinding: this EAB key was used by another account"));
        }
    };
    Span::current().record("account_id", acct.id.as_str());
    if status == StatusCode::CREATED {
        AuditEvent::by_account("account_created", &acct.id)
            .client_ip(new.addr)
            .detail(new.eab_kid.map(|k| format!("eab kid {k}")).unwrap_or_default())
            .record(&st.store, now)
            .await;
    }
    Ok((acct, status))
}

/// POST /acme/key-change: the request was checked by `SignedKeyChange`; the store swaps the key
/// unless another account has it or the account's key changed meanwhile.
pub async fn key_change(State(st): State<AppState>, req: SignedKeyChange) -> Result<AcmeResponse, Problem> {
    let (account, new_key) = (req.account, req.new_key);
    let new_thumbprint = new_key.thumbprint();
    match st.store.change_key(&account.id, &account.thumbprint, &new_thumbprint, &new_key.to_json()).await? {
        KeyChange::Changed => {
            tracing::info!(account_id = %account.id, "account key changed");
            let acct = st.store.account(&account.id).await?.ok_or_else(|| Problem::not_found("no such account"))?;
            Ok(AcmeResponse::json(StatusCode::OK, &wire(&acct, &st)).location(st.urls.account(&acct.id)))
        }
        KeyChange::Conflict(other) => {
            let mut p =
                Problem::malformed("the new key already belongs to an account").with_status(StatusCode::CONFLICT);
            p.location = Some(st.urls.account(&other));
            Err(p)
        }
        KeyChange::Stale => Err(Problem::unauthorized("the account's key changed meanwhile; try again")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountUpdate {
    contact: Option<Vec<String>>,
    status: Option<String>,
}

/// POST /acme/acct/{id}: POST-as-GET, contact update, or `{"status":"deactivated"}`.
pub async fn account(
    State(st): State<AppState>,
    Path(id): Path<AccountId>,
    req: SignedOrGet,
) -> Result<AcmeResponse, Problem> {
    if req.account.id != id.as_str() {
        return Err(Problem::unauthorized("an account can only be read or changed with its own key"));
    }
    if let Some(payload) = req.payload {
        update(&st, &id, payload).await?;
    }
    let acct = st.store.account(&id).await?.ok_or_else(|| Problem::account_does_not_exist("no such account"))?;
    Ok(AcmeResponse::json(StatusCode::OK, &wire(&acct, &st)).location(st.urls.account(&id)))
}

/// An account update: `{"status":"deactivated"}` and/or a new `contact` list.
async fn update(st: &AppState, id: &AccountId, payload: serde_json::Value) -> Result<(), Problem> {
    let update: AccountUpdate =
        serde_json::from_value(payload).map_err(|e| Problem::malformed(format!("account update is not valid: {e}")))?;
    match update.status.as_deref() {
        None => {}
        Some("deactivated") => {
            st.store.deactivate_account(id, st.clock.unix()).await?;
            AuditEvent::by_account("account_deactivated", id).record(&st.store, st.clock.unix()).await;
        }
        Some(other) => {
            return Err(Problem::malformed(format!("account status cannot be set to {other:?}")));
        }
    }
    if let Some(contact) = update.contact {
        st.store.update_contact(id, &check_contacts(&contact)?).await?;
    }
    Ok(())
}

/// The orders list's page cursor: `?cursor=<id of the last order on the previous page>`.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    cursor: Option<String>,
}

/// POST-as-GET /acme/acct/{id}/orders (RFC 8555 §7.1.2.1), oldest first, `limits.orders_per_page`
/// at a time, with `Link: <next page>;rel="next"` while there are more.
pub async fn orders(
    State(st): State<AppState>,
    Path(id): Path<AccountId>,
    Query(page): Query<Page>,
    req: PostAsGet,
) -> Result<AcmeResponse, Problem> {
    if req.account.id != id.as_str() {
        return Err(Problem::unauthorized("an account's orders can only be listed with its own key"));
    }
    let per_page = i64::from(st.limits.rate.orders_per_page);
    let mut ids = st.store.order_ids_of_account(&id, page.cursor.as_deref(), per_page + 1).await?;
    let more = ids.len() as i64 > per_page;
    ids.truncate(per_page as usize);
    let list = OrdersList { orders: ids.iter().map(|o| st.urls.order(o)).collect() };
    let res = AcmeResponse::json(StatusCode::OK, &list);
    Ok(match ids.last() {
        Some(last) if more => res.link(&format!("{}?cursor={last}", st.urls.orders(&id)), "next"),
        _ => res,
    })
}

/// RFC 8555 §7.3: `mailto:` URIs only, one address each, no header fields.
fn check_contacts(contact: &[String]) -> Result<Vec<String>, Problem> {
    if contact.len() > MAX_CONTACTS {
        return Err(Problem::invalid_contact(format!("at most {MAX_CONTACTS} contacts")));
    }
    contact
        .iter()
        .map(|c| {
            let addr = c
                .strip_prefix("mailto:")
                .ok_or_else(|| Problem::unsupported_contact(format!("{c:?}: only mailto: contacts are supported")))?;
            let valid = match addr.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.is_empty()
                        && domain.contains('.')
                        && !addr.contains([',', '?', ' ', '<', '>'])
                        && !domain.contains('@')
                        && addr.len() <= 254
                }
                None => false,
            };
            if valid {
                Ok(c.clone())
            } else {
                Err(Problem::invalid_contact(format!("{c:?} is not a valid email address")))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts() {
        assert!(check_contacts(&["mailto:ops@lab.example".into()]).is_ok());
        assert_eq!(check_contacts(&["tel:+1".into()]).unwrap_err().kind.code(), "unsupportedContact");
        for bad in ["mailto:", "mailto:a@b", "mailto:a@b.c,d@e.f", "mailto:a@b.c?subject=x", "mailto:@b.c"] {
            assert_eq!(check_contacts(&[bad.into()]).unwrap_err().kind.code(), "invalidContact", "{bad}");
        }
    }
}
