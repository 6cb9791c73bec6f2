//! The store suite: state transitions, guards and single use, on a real SQLite.

use serde_json::json;

use super::*;
use crate::acme::types::{AuthorizationStatus, ChallengeStatus, OrderStatus};

async fn store() -> Store {
    Store::memory().await.unwrap()
}

async fn account(s: &Store) -> AccountRow {
    s.create_account("tp-1", &json!({"kty": "OKP"}), &["mailto:a@lab.example".into()], true, 100).await.unwrap().0
}

async fn order(s: &Store, acct: &AccountRow, names: &[&str]) -> OrderRow {
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns((*n).into())).collect();
    let authzs: Vec<NewAuthz> =
        ids.iter().map(|i| NewAuthz { identifier: i.clone(), challenges: vec![ChallengeType::Http01] }).collect();
    s.create_order(&acct.id, &ids, &authzs, None, None, 100, 10_000).await.unwrap()
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
    let (b, created) = s.create_account("tp-1", &json!({}), &[], false, 200).await.unwrap();
    assert!(!created);
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
