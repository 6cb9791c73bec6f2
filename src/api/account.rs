//! newAccount, account update and deactivation, and the orders list (RFC 8555 §7.3).

use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use tracing::Span;

use crate::{
    acme::{
        Problem,
        types::{self, AccountRequest, AccountStatus, OrdersList},
    },
    api::AcmeResponse,
    jws::extract::{PostAsGet, SignedJwk, SignedOrGet},
    state::AppState,
    store::AccountRow,
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
pub async fn new_account(State(st): State<AppState>, req: SignedJwk<AccountRequest>) -> Result<AcmeResponse, Problem> {
    let thumbprint = req.jwk.thumbprint();
    if let Some(acct) = st.store.account_by_thumbprint(&thumbprint).await? {
        Span::current().record("account_id", acct.id.as_str());
        if acct.status != AccountStatus::Valid {
            return Err(Problem::unauthorized(format!("the account of this key is {}", acct.status)));
        }
        return Ok(AcmeResponse::json(StatusCode::OK, &wire(&acct, &st)).location(st.urls.account(&acct.id)));
    }
    if req.payload.only_return_existing {
        return Err(Problem::account_does_not_exist("no account exists for this key"));
    }
    let contact = check_contacts(req.payload.contact.as_deref().unwrap_or_default())?;
    let tos = req.payload.terms_of_service_agreed.unwrap_or(false);
    let (acct, created) =
        st.store.create_account(&thumbprint, &req.jwk.to_json(), &contact, tos, st.clock.unix()).await?;
    Span::current().record("account_id", acct.id.as_str());
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(AcmeResponse::json(status, &wire(&acct, &st)).location(st.urls.account(&acct.id)))
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
    Path(id): Path<String>,
    req: SignedOrGet,
) -> Result<AcmeResponse, Problem> {
    Span::current().record("account_id", req.account.id.as_str());
    if req.account.id != id {
        return Err(Problem::unauthorized("an account can only be read or changed with its own key"));
    }
    if let Some(payload) = req.payload {
        let update: AccountUpdate = serde_json::from_value(payload)
            .map_err(|e| Problem::malformed(format!("account update is not valid: {e}")))?;
        match update.status.as_deref() {
            None => {}
            Some("deactivated") => st.store.deactivate_account(&id).await?,
            Some(other) => {
                return Err(Problem::malformed(format!("account status cannot be set to {other:?}")));
            }
        }
        if let Some(contact) = update.contact {
            st.store.update_contact(&id, &check_contacts(&contact)?).await?;
        }
    }
    let acct = st.store.account(&id).await?.ok_or_else(|| Problem::account_does_not_exist("no such account"))?;
    Ok(AcmeResponse::json(StatusCode::OK, &wire(&acct, &st)).location(st.urls.account(&id)))
}

/// POST-as-GET /acme/acct/{id}/orders (RFC 8555 §7.1.2.1).
pub async fn orders(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: PostAsGet,
) -> Result<AcmeResponse, Problem> {
    if req.account.id != id {
        return Err(Problem::unauthorized("an account's orders can only be listed with its own key"));
    }
    let ids = st.store.order_ids_of_account(&id).await?;
    let list = OrdersList { orders: ids.iter().map(|o| st.urls.order(o)).collect() };
    Ok(AcmeResponse::json(StatusCode::OK, &list))
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
