//! The store suite: state transitions, guards and single use, on a real SQLite.

use serde_json::json;

use super::*;
use crate::acme::types::{AuthorizationStatus, ChallengeStatus, OrderStatus};

async fn store() -> Store {
    Store::memory().await.unwrap()
}

async fn account(s: &Store) -> AccountRow {
    account_with(s, "tp-1", None).await.unwrap()
}

async fn account_with(s: &Store, thumbprint: &str, eab: Option<&str>) -> Option<AccountRow> {
    match s
        .create_account(thumbprint, &json!({"kty": "OKP"}), &["mailto:a@lab.example".into()], true, eab, None, 100)
        .await
        .unwrap()
    {
        NewAccountOutcome::Created(a) | NewAccountOutcome::Exists(a) => Some(a),
        NewAccountOutcome::EabUnusable => None,
    }
}

fn new_order(names: &[&str], replaces: Option<&str>) -> NewOrder {
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns((*n).into())).collect();
    let authzs = identifiers
        .iter()
        .map(|i| NewAuthz { identifier: i.clone(), challenges: vec![ChallengeType::Http01] })
        .collect();
    NewOrder { identifiers, authzs, replaces: replaces.map(str::to_owned), ..Default::default() }
}

async fn order(s: &Store, acct: &AccountRow, names: &[&str]) -> OrderRow {
    s.create_order(&acct.id, &new_order(names, None), 100, 10_000).await.unwrap().unwrap()
}

/// An order issued at 151 with `ari_id`.
async fn issued(s: &Store, acct: &AccountRow, name: &str, serial: &str, ari_id: &str) -> (OrderRow, String) {
    let o = order(s, acct, &[name]).await;
    let c = first_challenge(s, &o, 0).await;
    assert!(s.start_challenge(&c.id, 110).await.unwrap());
    s.challenge_succeeded(&c.id, 111).await.unwrap();
    assert!(s.begin_issuance(&o.id, b"csr", 112).await.unwrap());
    let claimed = s.claim_due_issuances(112, 200, 10).await.unwrap();
    let cert = NewCertificate {
        serial: serial.into(),
        issuer: "local".into(),
        chain_pem: "PEM".into(),
        not_before: 100,
        not_after: 1000,
        ari_id: Some(ari_id.into()),
    };
    let id = s.issuance_succeeded(&claimed[0], &cert, 151).await.unwrap();
    (o, id)
}

async fn first_challenge(s: &Store, order: &OrderRow, i: usize) -> ChallengeRow {
    s.authorization(&order.authz_ids[i]).await.unwrap().unwrap().challenges[0].clone()
}

#[tokio::test]
async fn nonce_is_single_use_and_expires() {
    let s = store().await;
    let n = s.new_nonce(200).await.unwrap();
    assert!(!s.redeem_nonce("never-issued", 100).await.unwrap());
    assert!(s.redeem_nonce(&n, 100).await.unwrap());
    assert!(!s.redeem_nonce(&n, 100).await.unwrap(), "a nonce is accepted once");
    let old = s.new_nonce(150).await.unwrap();
    assert!(!s.redeem_nonce(&old, 150).await.unwrap(), "expired nonce");
    assert_eq!(s.purge_nonces(1_000).await.unwrap(), 1);
}

#[tokio::test]
async fn same_key_gets_same_account() {
    let s = store().await;
    let a = account(&s).await;
    let NewAccountOutcome::Exists(b) = s.create_account("tp-1", &json!({}), &[], false, None, None, 200).await.unwrap()
    else {
        panic!("same key, same account");
    };
    assert_eq!(a.id, b.id);
    assert_eq!(b.contact, vec!["mailto:a@lab.example".to_string()]);
    assert_eq!(s.counts().await.unwrap().accounts, 1);
}

#[tokio::test]
async fn order_becomes_ready_when_all_authorizations_are_valid() {
    let s = store().await;
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example", "b.lab.example"]).await;
    assert_eq!(o.status, OrderStatus::Pending);
    assert_eq!(o.authz_ids.len(), 2);

    let c0 = first_challenge(&s, &o, 0).await;
    assert!(s.start_challenge(&c0.id, 110).await.unwrap());
    assert!(!s.start_challenge(&c0.id, 110).await.unwrap(), "already processing");
    let claimed = s.claim_due_challenges(110, 140, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].identifier, Identifier::Dns("a.lab.example".into()));
    assert_eq!(claimed[0].account_thumbprint, "tp-1");
    assert!(s.claim_due_challenges(111, 140, 10).await.unwrap().is_empty(), "leased");
    s.challenge_succeeded(&c0.id, 112).await.unwrap();
    assert_eq!(s.order(&o.id).await.unwrap().unwrap().status, OrderStatus::Pending);

    let c1 = first_challenge(&s, &o, 1).await;
    assert!(s.start_challenge(&c1.id, 113).await.unwrap());
    s.claim_due_challenges(113, 140, 10).await.unwrap();
    s.challenge_succeeded(&c1.id, 114).await.unwrap();
    assert_eq!(s.order(&o.id).await.unwrap().unwrap().status, OrderStatus::Ready);
    let authz = s.authorization(&o.authz_ids[1]).await.unwrap().unwrap();
    assert_eq!(authz.status, AuthorizationStatus::Valid);
    assert_eq!(authz.challenges[0].status, ChallengeStatus::Valid);
    assert_eq!(authz.challenges[0].validated_at, Some(114));
}

#[tokio::test]
async fn failed_challenge_invalidates_authorization_and_order() {
    let s = store().await;
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    let c = first_challenge(&s, &o, 0).await;
    s.start_challenge(&c.id, 110).await.unwrap();
    s.claim_due_challenges(110, 140, 10).await.unwrap();
    let p = json!({"type": "urn:ietf:params:acme:error:connection", "detail": "refused"});
    s.challenge_retry(&c.id, &p, 120).await.unwrap();
    assert!(s.claim_due_challenges(115, 140, 10).await.unwrap().is_empty(), "not due yet");
    assert_eq!(s.claim_due_challenges(120, 150, 10).await.unwrap()[0].attempts, 1);
    s.challenge_failed(&c.id, &p, &json!({"detail": "order failed"}), 121).await.unwrap();
    let o = s.order(&o.id).await.unwrap().unwrap();
    assert_eq!(o.status, OrderStatus::Invalid);
    assert_eq!(o.error.unwrap()["detail"], "order failed");
    let authz = s.authorization(&o.authz_ids[0]).await.unwrap().unwrap();
    assert_eq!(authz.status, AuthorizationStatus::Invalid);
    assert_eq!(authz.challenges[0].error.as_ref().unwrap()["detail"], "refused");
    // A final state has no way out.
    s.challenge_succeeded(&c.id, 122).await.unwrap();
    assert_eq!(s.order(&o.id).await.unwrap().unwrap().status, OrderStatus::Invalid);
}

#[tokio::test]
async fn issuance_is_claimed_once_and_recorded_atomically() {
    let s = store().await;
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    assert!(!s.begin_issuance(&o.id, b"csr", 110).await.unwrap(), "pending is not ready");
    let c = first_challenge(&s, &o, 0).await;
    s.start_challenge(&c.id, 110).await.unwrap();
    s.claim_due_challenges(110, 140, 10).await.unwrap();
    s.challenge_succeeded(&c.id, 111).await.unwrap();
    assert!(s.begin_issuance(&o.id, b"csr", 112).await.unwrap());
    assert!(!s.begin_issuance(&o.id, b"csr", 112).await.unwrap(), "finalize twice");

    let claimed = s.claim_due_issuances(112, 200, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].csr.as_deref(), Some(&b"csr"[..]));
    assert!(s.claim_due_issuances(113, 200, 10).await.unwrap().is_empty(), "leased");
    s.issuance_retry(&o.id, 150).await.unwrap();
    let claimed = s.claim_due_issuances(150, 300, 10).await.unwrap();
    assert_eq!(claimed[0].attempts, 1);
    let cert = NewCertificate {
        serial: "0a1b".into(),
        issuer: "local".into(),
        chain_pem: "PEM".into(),
        not_before: 100,
        not_after: 1000,
        ari_id: None,
    };
    let cert_id = s.issuance_succeeded(&claimed[0], &cert, 151).await.unwrap();
    let o = s.order(&o.id).await.unwrap().unwrap();
    assert_eq!(o.status, OrderStatus::Valid);
    assert_eq!(o.certificate_id.as_deref(), Some(cert_id.as_str()));
    let row = s.certificate(&cert_id).await.unwrap().unwrap();
    assert_eq!(row.serial, "0a1b");
    assert_eq!(row.identifiers, vec![Identifier::Dns("a.lab.example".into())]);
    assert!(s.issuance_succeeded(&claimed[0], &cert, 152).await.is_err(), "never two certificates for one order");
    assert_eq!(s.counts().await.unwrap().certificates, 1);
}

#[tokio::test]
async fn deactivation_is_final_and_takes_pending_authorizations() {
    let s = store().await;
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    s.deactivate_account(&acct.id).await.unwrap();
    assert_eq!(s.account(&acct.id).await.unwrap().unwrap().status, crate::acme::types::AccountStatus::Deactivated);
    let authz = s.authorization(&o.authz_ids[0]).await.unwrap().unwrap();
    assert_eq!(authz.status, AuthorizationStatus::Deactivated);
    let c = &authz.challenges[0];
    assert!(!s.start_challenge(&c.id, 110).await.unwrap());
}

#[tokio::test]
async fn state_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v.db").display());
    let s = Store::connect(&url).await.unwrap();
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    s.close().await;
    let s = Store::connect(&url).await.unwrap();
    assert_eq!(s.order(&o.id).await.unwrap().unwrap().account_id, acct.id);
}

#[tokio::test]
async fn eab_key_binds_one_account_in_the_same_transaction() {
    let s = store().await;
    let key = NewEabKey { kid: "kid-1".into(), scope: vec!["*.lab.example".into()], ..Default::default() };
    s.create_eab_key(&key, 50).await.unwrap();
    let a = account_with(&s, "tp-a", Some("kid-1")).await.unwrap();
    assert_eq!(a.eab_kid.as_deref(), Some("kid-1"));
    let row = s.eab_key("kid-1").await.unwrap().unwrap();
    assert_eq!((row.state(100), row.account_id.as_deref()), ("used", Some(a.id.as_str())));
    assert_eq!(row.scope, vec!["*.lab.example".to_string()]);

    assert!(account_with(&s, "tp-b", Some("kid-1")).await.is_none(), "single use");
    assert_eq!(s.counts().await.unwrap().accounts, 1, "the refused account was not written");

    s.create_eab_key(&NewEabKey { kid: "kid-2".into(), expires_at: Some(90), ..Default::default() }, 50).await.unwrap();
    assert!(account_with(&s, "tp-c", Some("kid-2")).await.is_none(), "expired");
    s.create_eab_key(&NewEabKey { kid: "kid-3".into(), ..Default::default() }, 50).await.unwrap();
    assert!(s.revoke_eab_key("kid-3", 60).await.unwrap());
    assert!(!s.revoke_eab_key("kid-3", 61).await.unwrap());
    assert!(account_with(&s, "tp-d", Some("kid-3")).await.is_none(), "revoked");
    assert_eq!(s.eab_keys().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_certificate_is_replaced_by_one_live_order() {
    let s = store().await;
    let acct = account(&s).await;
    let (_, cert_id) = issued(&s, &acct, "a.lab.example", "0a1b", "AKI.SER").await;
    assert_eq!(s.certificate_by_ari_id("AKI.SER").await.unwrap().unwrap().id, cert_id);
    let first = s.create_order(&acct.id, &new_order(&["a.lab.example"], Some("AKI.SER")), 200, 300).await.unwrap();
    assert_eq!(first.unwrap().replaces.as_deref(), Some("AKI.SER"));
    assert!(
        s.create_order(&acct.id, &new_order(&["a.lab.example"], Some("AKI.SER")), 201, 400).await.unwrap().is_none()
    );
    // Once the first renewal expired unfinished, another may replace the certificate.
    assert!(
        s.create_order(&acct.id, &new_order(&["a.lab.example"], Some("AKI.SER")), 300, 400).await.unwrap().is_some()
    );
}

#[tokio::test]
async fn revocation_is_recorded_once_and_pending_until_the_ca_confirms() {
    let s = store().await;
    let acct = account(&s).await;
    let (_, cert_id) = issued(&s, &acct, "a.lab.example", "0a1b", "AKI.SER").await;
    assert_eq!(s.certificates_by_serial("a1b").await.unwrap().len(), 1, "leading zeros do not matter");
    assert!(s.revoke_certificate(&cert_id, 4, 300).await.unwrap());
    assert!(!s.revoke_certificate(&cert_id, 1, 301).await.unwrap(), "already revoked");
    let pending = s.pending_ca_revocations(10).await.unwrap();
    assert_eq!((pending.len(), pending[0].revocation_reason), (1, Some(4)));
    s.ca_revoked(&cert_id, 302).await.unwrap();
    assert!(s.pending_ca_revocations(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn key_change_refuses_a_key_of_another_account() {
    let s = store().await;
    let a = account_with(&s, "tp-a", None).await.unwrap();
    let b = account_with(&s, "tp-b", None).await.unwrap();
    assert_eq!(s.change_key(&a.id, "tp-a", "tp-b", &json!({})).await.unwrap(), KeyChange::Conflict(b.id.clone()));
    assert_eq!(s.change_key(&a.id, "tp-old", "tp-new", &json!({})).await.unwrap(), KeyChange::Stale);
    assert_eq!(s.change_key(&a.id, "tp-a", "tp-new", &json!({"k": 1})).await.unwrap(), KeyChange::Changed);
    assert_eq!(s.account_by_thumbprint("tp-new").await.unwrap().unwrap().id, a.id);
    assert!(s.account_by_thumbprint("tp-a").await.unwrap().is_none());
}

#[tokio::test]
async fn deactivating_an_authorization_invalidates_its_order() {
    let s = store().await;
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    assert!(s.deactivate_authz(&o.authz_ids[0], &json!({"type": "x"}), 120).await.unwrap());
    assert!(!s.deactivate_authz(&o.authz_ids[0], &json!({}), 121).await.unwrap(), "already deactivated");
    let o = s.order(&o.id).await.unwrap().unwrap();
    assert_eq!(o.status, OrderStatus::Invalid);
    let c = first_challenge(&s, &o, 0).await;
    assert!(!s.start_challenge(&c.id, 122).await.unwrap());
}

#[tokio::test]
async fn cleanup_keeps_certificates_and_deletes_stale_orders() {
    let s = store().await;
    let acct = account(&s).await;
    let (valid, cert_id) = issued(&s, &acct, "a.lab.example", "0a1b", "AKI.SER").await;
    let stale = order(&s, &acct, &["b.lab.example"]).await; // expires at 10_000
    s.new_nonce(50).await.unwrap();
    let gone = json!({"type": "expired"});

    let r = s.cleanup(10_000, 1_000, &gone).await.unwrap();
    assert_eq!((r.nonces, r.expired_orders, r.expired_authorizations, r.deleted_orders), (1, 1, 1, 0));
    let closed = s.order(&stale.id).await.unwrap().unwrap();
    assert_eq!(closed.status, OrderStatus::Invalid);
    assert_eq!(closed.error, Some(gone.clone()));

    let r = s.cleanup(11_001, 1_000, &gone).await.unwrap();
    assert_eq!(r.deleted_orders, 1);
    assert!(s.order(&stale.id).await.unwrap().is_none());
    assert!(s.authorization(&stale.authz_ids[0]).await.unwrap().is_none());
    assert_eq!(s.order(&valid.id).await.unwrap().unwrap().status, OrderStatus::Valid);
    assert!(s.certificate(&cert_id).await.unwrap().is_some());
    assert_eq!(s.counts().await.unwrap().challenges, 1, "the valid order's challenge stays");
}
