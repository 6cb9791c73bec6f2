//! The store suite: state transitions, guards and single use, on a real SQLite and a real
//! PostgreSQL. Each test is an `async fn(Store)`, run by `on_both_backends!` on an in-memory
//! SQLite (every statement on the writer thread's one connection), on a SQLite file (readers
//! beside the writer thread) and on a fresh PostgreSQL database (see `testdb`). On SQLite, every
//! statement's plan is checked the first time it runs (sqlite/plan.rs).

use futures_util::future::join_all;
use serde_json::json;

use super::{testdb::TestDb, *};
use crate::acme::types::{AuthorizationStatus, ChallengeStatus, OrderStatus};

/// For each named `async fn(Store)`: a module of that name with three tests, `sqlite`,
/// `sqlite_file` and `postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                super::$name(Store::memory().await.unwrap()).await;
            }

            /// A database file: readers on blocking threads and the writer thread (sqlite/conn.rs).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_file() {
                let dir = tempfile::tempdir().unwrap();
                let s = Store::connect(&format!("sqlite://{}", dir.path().join("vacme.db").display())).await.unwrap();
                super::$name(s.clone()).await;
                s.close().await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(db) = TestDb::create(module_path!()).await else { return };
                let s = Store::connect(&db.url).await.unwrap();
                super::$name(s.clone()).await;
                s.close().await;
                db.drop().await;
            }
        }
    )*};
}

on_both_backends!(
    nonce_is_single_use_and_expires,
    same_key_gets_same_account,
    order_becomes_ready_when_all_authorizations_are_valid,
    failed_challenge_invalidates_authorization_and_order,
    issuance_is_claimed_once_and_recorded_atomically,
    deactivation_is_final_and_takes_pending_authorizations,
    eab_key_binds_one_account_in_the_same_transaction,
    a_certificate_is_replaced_by_one_live_order,
    revocation_is_recorded_once_and_pending_until_the_ca_confirms,
    key_change_refuses_a_key_of_another_account,
    deactivating_an_authorization_invalidates_its_order,
    cleanup_keeps_certificates_and_deletes_stale_orders,
    orders_are_listed_in_the_order_they_were_written,
    racing_redeems_and_claims_take_each_row_once,
    racing_validations_and_finalizes_move_an_order_once,
    racing_challenges_of_one_authorization_start_one,
    racing_renewals_and_eab_bindings_succeed_once,
    what_limits_admin_and_audit_read_is_there,
    audit_events_past_their_retention_are_purged,
    totals_count_what_was_ever_recorded,
    webhook_cursors_follow_the_audit_trail_one_replica_at_a_time,
    overdue_and_expiring_certificates_are_reported_once,
    renewal_state_follows_successors_and_revocations,
    an_order_keeps_the_client_that_asked,
    renewed_leases_hold_and_a_lapsed_one_is_taken_over,
    the_dashboard_listing_agrees_with_each_certificates_state,
);

/// A worker renews the leases of what it runs; when it stops (it died), another worker claims
/// the work once the lease runs out, and the claim says it took it over. A finished item's lease
/// is not renewed back to life.
async fn renewed_leases_hold_and_a_lapsed_one_is_taken_over(s: Store) {
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    let c = first_challenge(&s, &o, 0).await;
    assert!(s.start_challenge(&c.id, 100).await.unwrap());
    let first = s.claim_due_challenges(100, 108, 10).await.unwrap();
    assert_eq!((first.items.len(), first.taken_over), (1, 0), "nobody held it before");
    s.renew_challenge_leases(vec![c.id.clone()], 115).await.unwrap();
    assert!(s.claim_due_challenges(110, 118, 10).await.unwrap().items.is_empty(), "renewed: still held at 110");
    let second = s.claim_due_challenges(116, 124, 10).await.unwrap();
    assert_eq!((second.items.len(), second.taken_over), (1, 1), "the lease ran out at 115: taken over");
    s.challenge_succeeded(&c.id, 117).await.unwrap();
    s.renew_challenge_leases(vec![c.id.clone()], 130).await.unwrap();
    assert!(s.claim_due_challenges(200, 208, 10).await.unwrap().items.is_empty(), "done: nothing to claim");

    assert!(s.begin_issuance(&o.id, b"csr", 120).await.unwrap());
    let claimed = s.claim_due_issuances(120, 128, 10).await.unwrap();
    assert_eq!((claimed.items.len(), claimed.taken_over), (1, 0));
    s.renew_issuance_leases(vec![o.id.clone()], 140).await.unwrap();
    assert!(s.claim_due_issuances(135, 143, 10).await.unwrap().items.is_empty(), "renewed: still held at 135");
    // A retry ends the lease; renewing it afterwards does not bring it back.
    s.issuance_retry(&o.id, 150).await.unwrap();
    s.renew_issuance_leases(vec![o.id.clone()], 300).await.unwrap();
    let retried = s.claim_due_issuances(150, 158, 10).await.unwrap();
    assert_eq!((retried.items.len(), retried.taken_over), (1, 0), "a retry is not a take-over");
    let lapsed = s.claim_due_issuances(159, 167, 10).await.unwrap();
    assert_eq!((lapsed.items.len(), lapsed.taken_over), (1, 1), "its worker stopped renewing at 158");
}

/// Concurrent callers in the racing tests: on PostgreSQL each runs on its own connection.
const RACERS: usize = 8;

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
    let claimed = s.claim_due_issuances(112, 200, 10).await.unwrap().items;
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

async fn nonce_is_single_use_and_expires(s: Store) {
    let n = s.new_nonce(200).await.unwrap();
    assert!(!s.redeem_nonce("never-issued", 100).await.unwrap());
    assert!(s.redeem_nonce(&n, 100).await.unwrap());
    assert!(!s.redeem_nonce(&n, 100).await.unwrap(), "a nonce is accepted once");
    let old = s.new_nonce(150).await.unwrap();
    assert!(!s.redeem_nonce(&old, 150).await.unwrap(), "expired nonce");
    assert_eq!(s.purge_nonces(1_000).await.unwrap(), 1);
}

async fn same_key_gets_same_account(s: Store) {
    let a = account(&s).await;
    let NewAccountOutcome::Exists(b) = s.create_account("tp-1", &json!({}), &[], false, None, None, 200).await.unwrap()
    else {
        panic!("same key, same account");
    };
    assert_eq!(a.id, b.id);
    assert_eq!(b.contact, vec!["mailto:a@lab.example".to_string()]);
    assert_eq!(s.counts().await.unwrap().accounts, 1);
}

async fn order_becomes_ready_when_all_authorizations_are_valid(s: Store) {
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example", "b.lab.example"]).await;
    assert_eq!(o.status, OrderStatus::Pending);
    assert_eq!(o.authz_ids.len(), 2);

    let c0 = first_challenge(&s, &o, 0).await;
    assert!(s.start_challenge(&c0.id, 110).await.unwrap());
    assert!(!s.start_challenge(&c0.id, 110).await.unwrap(), "already processing");
    let claimed = s.claim_due_challenges(110, 140, 10).await.unwrap().items;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].identifier, Identifier::Dns("a.lab.example".into()));
    assert_eq!(claimed[0].account_thumbprint, "tp-1");
    assert!(s.claim_due_challenges(111, 140, 10).await.unwrap().items.is_empty(), "leased");
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

async fn failed_challenge_invalidates_authorization_and_order(s: Store) {
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    let c = first_challenge(&s, &o, 0).await;
    s.start_challenge(&c.id, 110).await.unwrap();
    s.claim_due_challenges(110, 140, 10).await.unwrap();
    let p = json!({"type": "urn:ietf:params:acme:error:connection", "detail": "refused"});
    s.challenge_retry(&c.id, &p, 120).await.unwrap();
    assert!(s.claim_due_challenges(115, 140, 10).await.unwrap().items.is_empty(), "not due yet");
    assert_eq!(s.claim_due_challenges(120, 150, 10).await.unwrap().items[0].attempts, 1);
    s.challenge_failed(&c.id, &p, &json!({"detail": "order failed"}), 0, 121).await.unwrap();
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

async fn issuance_is_claimed_once_and_recorded_atomically(s: Store) {
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    assert!(!s.begin_issuance(&o.id, b"csr", 110).await.unwrap(), "pending is not ready");
    let c = first_challenge(&s, &o, 0).await;
    s.start_challenge(&c.id, 110).await.unwrap();
    s.claim_due_challenges(110, 140, 10).await.unwrap();
    s.challenge_succeeded(&c.id, 111).await.unwrap();
    assert!(s.begin_issuance(&o.id, b"csr", 112).await.unwrap());
    assert!(!s.begin_issuance(&o.id, b"csr", 112).await.unwrap(), "finalize twice");

    let claimed = s.claim_due_issuances(112, 200, 10).await.unwrap().items;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].csr.as_deref(), Some(&b"csr"[..]));
    assert!(s.claim_due_issuances(113, 200, 10).await.unwrap().items.is_empty(), "leased");
    s.issuance_retry(&o.id, 150).await.unwrap();
    let claimed = s.claim_due_issuances(150, 300, 10).await.unwrap().items;
    assert_eq!(claimed[0].attempts, 1);
    // A signing call that may have run leaves its intent for the retry; one no node can have run
    // (issuance_unsent) leaves none.
    s.mark_signing(&o.id, 150).await.unwrap();
    s.issuance_retry(&o.id, 160).await.unwrap();
    let claimed = s.claim_due_issuances(160, 400, 10).await.unwrap().items;
    assert_eq!((claimed[0].attempts, claimed[0].sign_started_at), (2, Some(150)));
    s.issuance_unsent(&o.id, 170).await.unwrap();
    assert!(s.claim_due_issuances(169, 500, 10).await.unwrap().items.is_empty(), "due at 170");
    let claimed = s.claim_due_issuances(170, 500, 10).await.unwrap().items;
    assert_eq!((claimed[0].attempts, claimed[0].sign_started_at), (3, None));
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

async fn deactivation_is_final_and_takes_pending_authorizations(s: Store) {
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    s.deactivate_account(&acct.id, 100).await.unwrap();
    assert_eq!(s.account(&acct.id).await.unwrap().unwrap().status, crate::acme::types::AccountStatus::Deactivated);
    let authz = s.authorization(&o.authz_ids[0]).await.unwrap().unwrap();
    assert_eq!(authz.status, AuthorizationStatus::Deactivated);
    let c = &authz.challenges[0];
    assert!(!s.start_challenge(&c.id, 110).await.unwrap());
    let o = s.order(&o.id).await.unwrap().unwrap();
    assert_eq!(o.status, OrderStatus::Invalid, "an order of a deactivated account cannot complete");
}

async fn state_survives_reopening(url: &str) {
    let s = Store::connect(url).await.unwrap();
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    s.close().await;
    let s = Store::connect(url).await.unwrap();
    assert_eq!(s.order(&o.id).await.unwrap().unwrap().account_id, acct.id);
    s.close().await;
}

#[tokio::test]
async fn state_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    state_survives_reopening(&format!("sqlite://{}", dir.path().join("v.db").display())).await;
}

#[tokio::test]
async fn state_survives_reconnecting_to_postgres() {
    let Some(db) = TestDb::create("state_survives_reconnecting_to_postgres").await else { return };
    state_survives_reopening(&db.url).await;
    db.drop().await;
}

async fn eab_key_binds_one_account_in_the_same_transaction(s: Store) {
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

async fn a_certificate_is_replaced_by_one_live_order(s: Store) {
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

async fn revocation_is_recorded_once_and_pending_until_the_ca_confirms(s: Store) {
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

async fn key_change_refuses_a_key_of_another_account(s: Store) {
    let a = account_with(&s, "tp-a", None).await.unwrap();
    let b = account_with(&s, "tp-b", None).await.unwrap();
    assert_eq!(s.change_key(&a.id, "tp-a", "tp-b", &json!({})).await.unwrap(), KeyChange::Conflict(b.id.clone()));
    assert_eq!(s.change_key(&a.id, "tp-old", "tp-new", &json!({})).await.unwrap(), KeyChange::Stale);
    assert_eq!(s.change_key(&a.id, "tp-a", "tp-new", &json!({"k": 1})).await.unwrap(), KeyChange::Changed);
    assert_eq!(s.account_by_thumbprint("tp-new").await.unwrap().unwrap().id, a.id);
    assert!(s.account_by_thumbprint("tp-a").await.unwrap().is_none());
}

async fn deactivating_an_authorization_invalidates_its_order(s: Store) {
    let acct = account(&s).await;
    let o = order(&s, &acct, &["a.lab.example"]).await;
    assert!(s.deactivate_authz(&o.authz_ids[0], &json!({"type": "x"}), 120).await.unwrap());
    assert!(!s.deactivate_authz(&o.authz_ids[0], &json!({}), 121).await.unwrap(), "already deactivated");
    let o = s.order(&o.id).await.unwrap().unwrap();
    assert_eq!(o.status, OrderStatus::Invalid);
    let c = first_challenge(&s, &o, 0).await;
    assert!(!s.start_challenge(&c.id, 122).await.unwrap());
}

async fn cleanup_keeps_certificates_and_deletes_stale_orders(s: Store) {
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

async fn orders_are_listed_in_the_order_they_were_written(s: Store) {
    let acct = account(&s).await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        // Same second: only the insertion order tells them apart.
        ids.push(order(&s, &acct, &[&format!("{name}.lab.example")]).await.id);
    }
    assert_eq!(s.order_ids_of_account(&acct.id, None, 10).await.unwrap(), ids);
    assert_eq!(s.order_ids_of_account(&acct.id, None, 2).await.unwrap(), ids[..2]);
    assert_eq!(s.order_ids_of_account(&acct.id, Some(&ids[1]), 2).await.unwrap(), ids[2..4]);
    assert_eq!(s.order_ids_of_account(&acct.id, Some(&ids[4]), 2).await.unwrap(), Vec::<String>::new());
}

/// Racing workers (or replicas): a nonce is redeemed once, and each due challenge is claimed by
/// one worker while every due challenge is claimed.
async fn racing_redeems_and_claims_take_each_row_once(s: Store) {
    let acct = account(&s).await;
    let nonce = s.new_nonce(1_000).await.unwrap();
    let redeemed = join_all((0..RACERS).map(|_| s.redeem_nonce(&nonce, 100))).await;
    assert_eq!(redeemed.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1, "a nonce is redeemed once");

    for i in 0..12 {
        let o = order(&s, &acct, &[&format!("c{i}.lab.example")]).await;
        let c = first_challenge(&s, &o, 0).await;
        assert!(s.start_challenge(&c.id, 110).await.unwrap());
    }
    // A worker asks for as many as it has room for; a row it gets beyond that would sit leased.
    let alone = s.claim_due_challenges(110, 200, 2).await.unwrap().items;
    assert_eq!(alone.len(), 2, "a claim takes at most its limit");
    s.challenge_retry(&alone[0].id, &json!({}), 110).await.unwrap();
    s.challenge_retry(&alone[1].id, &json!({}), 110).await.unwrap();
    let claims: Vec<_> = join_all((0..RACERS).map(|_| s.claim_due_challenges(110, 200, 4)))
        .await
        .into_iter()
        .map(|c| c.unwrap().items)
        .collect();
    assert!(claims.iter().all(|c| c.len() <= 4), "a claim takes at most its limit");
    let mut claimed: Vec<String> = claims.into_iter().flatten().map(|c| c.id).collect();
    claimed.sort();
    let mut unique = claimed.clone();
    unique.dedup();
    assert_eq!(claimed, unique, "no challenge claimed twice");
    assert_eq!(claimed.len(), 12, "racing workers still claim everything that is due");
}

/// Two authorizations of one order passing at once make it ready; of racing finalizes one wins,
/// and one issuance worker claims the order.
async fn racing_validations_and_finalizes_move_an_order_once(s: Store) {
    let acct = account(&s).await;
    for round in 0..4 {
        let o = order(&s, &acct, &[&format!("r{round}a.lab.example"), &format!("r{round}b.lab.example")]).await;
        let (c0, c1) = (first_challenge(&s, &o, 0).await, first_challenge(&s, &o, 1).await);
        assert!(s.start_challenge(&c0.id, 120).await.unwrap());
        assert!(s.start_challenge(&c1.id, 120).await.unwrap());
        let (a, b) = tokio::join!(s.challenge_succeeded(&c0.id, 121), s.challenge_succeeded(&c1.id, 121));
        a.unwrap();
        b.unwrap();
        assert_eq!(s.order(&o.id).await.unwrap().unwrap().status, OrderStatus::Ready, "round {round}");

        let finalized = join_all((0..RACERS).map(|_| s.begin_issuance(&o.id, b"csr", 122))).await;
        assert_eq!(finalized.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1, "one finalize wins");
        let issuers = join_all((0..RACERS).map(|_| s.claim_due_issuances(122, 200, 10))).await;
        assert_eq!(issuers.into_iter().map(|c| c.unwrap().items.len()).sum::<usize>(), 1, "one issuer claims it");
    }
}

/// Two challenges of one authorization answered at once: one of them is validated.
async fn racing_challenges_of_one_authorization_start_one(s: Store) {
    let acct = account(&s).await;
    for round in 0..4 {
        let name = format!("two{round}.lab.example");
        let new = NewOrder {
            authzs: vec![NewAuthz {
                identifier: Identifier::Dns(name.clone()),
                challenges: vec![ChallengeType::Http01, ChallengeType::Dns01],
            }],
            ..new_order(&[&name], None)
        };
        let o = s.create_order(&acct.id, &new, 100, 10_000).await.unwrap().unwrap();
        let authz = s.authorization(&o.authz_ids[0]).await.unwrap().unwrap();
        let (a, b) = tokio::join!(
            s.start_challenge(&authz.challenges[0].id, 130),
            s.start_challenge(&authz.challenges[1].id, 130)
        );
        assert_eq!(u8::from(a.unwrap()) + u8::from(b.unwrap()), 1, "round {round}: one challenge per authorization");
    }
}

/// Racing renewals of one certificate: one order replaces it. Racing new accounts with one EAB
/// key: one is bound.
async fn racing_renewals_and_eab_bindings_succeed_once(s: Store) {
    let acct = account(&s).await;
    issued(&s, &acct, "renew.lab.example", "0c0d", "AKI.RACE").await;
    let renewal = new_order(&["renew.lab.example"], Some("AKI.RACE"));
    let orders = join_all((0..RACERS).map(|_| s.create_order(&acct.id, &renewal, 200, 10_000))).await;
    assert_eq!(orders.into_iter().filter(|o| o.as_ref().unwrap().is_some()).count(), 1, "one renewal order");

    s.create_eab_key(&NewEabKey { kid: "kid-race".into(), ..Default::default() }, 50).await.unwrap();
    let thumbprints: Vec<String> = (0..RACERS).map(|i| format!("tp-race-{i}")).collect();
    let made = join_all(thumbprints.iter().map(|tp| account_with(&s, tp, Some("kid-race")))).await;
    assert_eq!(made.iter().filter(|a| a.is_some()).count(), 1, "an EAB key binds one account");
}

/// The queries behind the rate limits, the admin CLI, the audit trail and the workers' clocks,
/// each run once on data whose answer is known.
async fn what_limits_admin_and_audit_read_is_there(s: Store) {
    let acct = account(&s).await;
    s.update_contact(&acct.id, &["mailto:b@lab.example".into()]).await.unwrap();
    assert_eq!(s.account(&acct.id).await.unwrap().unwrap().contact, vec!["mailto:b@lab.example".to_string()]);
    let other = match s.create_account("tp-2", &json!({}), &[], true, None, Some("192.0.2.7"), 150).await.unwrap() {
        NewAccountOutcome::Created(a) => a,
        outcome => panic!("{outcome:?}"),
    };
    assert_eq!(s.accounts_created_from("192.0.2.7", 100).await.unwrap(), WindowCount { count: 1, oldest: Some(150) });
    assert_eq!(s.accounts_created_from("192.0.2.7", 151).await.unwrap(), WindowCount { count: 0, oldest: None });

    let (_, cert_id) = issued(&s, &acct, "a.lab.example", "0a1b", "AKI.SER").await;
    let o = order(&s, &acct, &["b.lab.example"]).await;
    assert_eq!(s.orders_created_by(&acct.id, 0).await.unwrap().count, 2);
    assert_eq!(s.pending_authorizations(&acct.id, 100).await.unwrap(), WindowCount { count: 1, oldest: Some(10_000) });
    assert_eq!(s.queue_depths().await.unwrap(), (0, 0));
    assert_eq!((s.next_challenge_due().await.unwrap(), s.next_issuance_due().await.unwrap()), (None, None));
    let c = first_challenge(&s, &o, 0).await;
    s.start_challenge(&c.id, 300).await.unwrap();
    s.claim_due_challenges(300, 330, 10).await.unwrap();
    assert_eq!(s.queue_depths().await.unwrap(), (1, 0));
    assert_eq!(s.next_challenge_due().await.unwrap(), Some(331), "after the lease");

    let summaries = s.account_summaries().await.unwrap();
    let mine = summaries.iter().find(|a| a.account.id == acct.id).unwrap();
    assert_eq!((summaries.len(), mine.orders, mine.certificates), (2, 2, 1));
    assert_eq!(s.certificates(None).await.unwrap().len(), 1);
    assert_eq!(s.certificates(Some(&acct.id)).await.unwrap()[0].id, cert_id);
    assert!(s.certificates(Some(&other.id)).await.unwrap().is_empty());
    assert!(s.certificates_without_ari_id().await.unwrap().is_empty());
    s.set_ari_id(&cert_id, "AKI.NEW").await.unwrap();
    assert_eq!(s.certificate_by_ari_id("AKI.NEW").await.unwrap().unwrap().id, cert_id);
    s.revoked_by_ca(&cert_id, 400).await.unwrap();
    let cert = s.certificate(&cert_id).await.unwrap().unwrap();
    assert_eq!((cert.revoked_at, cert.revocation_reason, cert.ca_revoked_at), (Some(400), Some(0), Some(400)));
    assert!(s.pending_ca_revocations(10).await.unwrap().is_empty());

    // One failed validation of c.lab.example pauses it (limit 1); an admin lifts it.
    let name = Identifier::Dns("c.lab.example".into());
    let failing = order(&s, &acct, &["c.lab.example"]).await;
    let fc = first_challenge(&s, &failing, 0).await;
    s.start_challenge(&fc.id, 500).await.unwrap();
    s.claim_due_challenges(500, 530, 10).await.unwrap();
    s.challenge_failed(&fc.id, &json!({}), &json!({}), 0, 501).await.unwrap();
    assert!(s.pause_if_failing(&acct.id, &name, 1, 502).await.unwrap());
    assert!(!s.pause_if_failing(&acct.id, &name, 1, 503).await.unwrap(), "already paused");
    assert_eq!(s.paused_identifiers(&acct.id, std::slice::from_ref(&name)).await.unwrap(), vec![name.clone()]);
    assert_eq!(s.pauses(None, false).await.unwrap().len(), 1);
    assert_eq!(s.pauses(Some(&other.id), true).await.unwrap().len(), 0);
    assert_eq!(s.unpause(&acct.id, Some("c.lab.example"), 504).await.unwrap(), 1);
    assert!(s.pauses(Some(&acct.id), false).await.unwrap().is_empty());
    assert_eq!(s.pauses(Some(&acct.id), true).await.unwrap()[0].lifted_at, Some(504));
    assert!(s.paused_identifiers(&acct.id, std::slice::from_ref(&name)).await.unwrap().is_empty());

    // The failure that reaches the limit pauses the name in its own transaction: once the order
    // reads invalid, the pause is there.
    let again = order(&s, &acct, &["c.lab.example"]).await;
    let ac = first_challenge(&s, &again, 0).await;
    s.start_challenge(&ac.id, 505).await.unwrap();
    s.claim_due_challenges(505, 530, 10).await.unwrap();
    assert!(s.challenge_failed(&ac.id, &json!({}), &json!({}), 1, 506).await.unwrap(), "paused with the failure");
    assert_eq!(s.order(&again.id).await.unwrap().unwrap().status, OrderStatus::Invalid);
    assert_eq!(s.paused_identifiers(&acct.id, std::slice::from_ref(&name)).await.unwrap(), vec![name.clone()]);

    let event = |account: &AccountRow| crate::store::AuditEvent {
        event: "issued".into(),
        actor: format!("account:{}", account.id),
        account_id: Some(account.id.clone()),
        order_id: None,
        certificate_id: None,
        serial: Some("0a1b".into()),
        identifiers: vec![Identifier::Dns("a.lab.example".into())],
        client_ip: None,
        detail: String::new(),
    };
    s.insert_audit(&event(&acct), 600).await.unwrap();
    s.insert_audit(&event(&other), 601).await.unwrap();
    let all = s.audit_events(None, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.at).collect::<Vec<_>>(), vec![601, 600], "newest first");
    assert!(all[0].id > all[1].id);
    assert_eq!(s.audit_events(Some(&acct.id), 10).await.unwrap()[0].event, event(&acct));

    s.new_nonce(1_000).await.unwrap();
    assert_eq!(s.nonce_count().await.unwrap(), 1);
    s.ping().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backup = s.backup_to(&dir.path().join("copy.db")).await;
    if s.is_postgres() {
        assert!(backup.unwrap_err().to_string().contains("pg_dump"));
    } else {
        backup.unwrap();
    }
}

async fn audit_events_past_their_retention_are_purged(s: Store) {
    let event = crate::store::AuditEvent {
        event: "issued".into(),
        actor: "vacme".into(),
        account_id: None,
        order_id: None,
        certificate_id: None,
        serial: None,
        identifiers: vec![],
        client_ip: None,
        detail: String::new(),
    };
    for at in [100, 200, 300] {
        s.insert_audit(&event, at).await.unwrap();
    }
    assert_eq!(s.purge_audit(201).await.unwrap(), 2, "the two older than the cut-off");
    assert_eq!(s.audit_events(None, 10).await.unwrap().iter().map(|e| e.at).collect::<Vec<_>>(), vec![300]);
}

/// The counters /metrics reads follow every account and certificate recorded, and agree with a
/// count of the rows.
async fn totals_count_what_was_ever_recorded(s: Store) {
    assert_eq!(s.totals().await.unwrap(), (0, 0));
    let acct = account(&s).await;
    account(&s).await;
    issued(&s, &acct, "a.lab.example", "01", "AKI.01").await;
    issued(&s, &acct, "b.lab.example", "02", "AKI.02").await;
    assert!(account_with(&s, "tp-eab", Some("no-such-kid")).await.is_none(), "refused: not counted");
    let counts = s.counts().await.unwrap();
    assert_eq!(s.totals().await.unwrap(), (counts.accounts, counts.certificates));
    assert_eq!(s.totals().await.unwrap(), (1, 2));
}

async fn webhook_cursors_follow_the_audit_trail_one_replica_at_a_time(s: Store) {
    assert_eq!(s.last_audit_id().await.unwrap(), 0);
    for (at, event) in [(100, "issued"), (101, "revoked"), (105, "issued")] {
        crate::store::AuditEvent::new(event, "vacme").record(&s, at).await;
    }
    let last = s.last_audit_id().await.unwrap();
    let all = s.audit_after(0, 200, 10).await.unwrap();
    assert_eq!(all.iter().map(|r| r.event.event.as_str()).collect::<Vec<_>>(), ["issued", "revoked", "issued"]);
    assert_eq!(all.last().unwrap().id, last);
    // Only what is settled by `until`, oldest first, after the cursor.
    let settled = s.audit_after(all[0].id, 104, 10).await.unwrap();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].event.event, "revoked");

    // A new webhook starts where the trail is; a second claim while leased gets nothing.
    assert_eq!(s.claim_webhook("ops", last, 1000, 1030).await.unwrap(), Some(last));
    assert_eq!(s.claim_webhook("ops", 0, 1010, 1040).await.unwrap(), None, "held by the first");
    s.advance_webhook("ops", last, 2, 0).await.unwrap();
    assert_eq!(s.claim_webhook("ops", 0, 1011, 1041).await.unwrap(), Some(last), "released, and not reset");
    assert_eq!(s.webhook_cursors().await.unwrap(), [("ops".to_owned(), last, 2)]);
    // A lease that ran out (a replica died) can be taken.
    assert_eq!(s.claim_webhook("ops", 0, 1042, 1070).await.unwrap(), Some(last));
}

/// An order for `names` (replacing `replaces`) issued at 151, valid 100..1000.
async fn issued_names(s: &Store, acct: &AccountRow, names: &[&str], serial: &str, replaces: Option<&str>) -> String {
    let o = s.create_order(&acct.id, &new_order(names, replaces), 100, 10_000).await.unwrap().unwrap();
    for i in 0..names.len() {
        let c = first_challenge(s, &o, i).await;
        assert!(s.start_challenge(&c.id, 110).await.unwrap());
        s.challenge_succeeded(&c.id, 111).await.unwrap();
    }
    assert!(s.begin_issuance(&o.id, b"csr", 112).await.unwrap());
    let claimed = s.claim_due_issuances(112, 200, 10).await.unwrap().items;
    let cert = NewCertificate {
        serial: serial.into(),
        issuer: "local".into(),
        chain_pem: "PEM".into(),
        not_before: 100,
        not_after: 1000,
        ari_id: Some(format!("AKI.{serial}")),
    };
    s.issuance_succeeded(&claimed[0], &cert, 151).await.unwrap()
}

/// A later certificate of the same account and names, or one whose order replaced it, renews a
/// certificate; revocation wins over renewal; the live ones move with time through the window;
/// the counts agree with the rows.
async fn renewal_state_follows_successors_and_revocations(s: Store) {
    use crate::acme::renewal::{RenewalState as St, WindowPercents};
    const WINDOW: WindowPercents = WindowPercents { start: 33, end: 67 }; // [397, 703) of 100..1000
    let acct = account(&s).await;
    let other = account_with(&s, "tp-2", None).await.unwrap();
    let first = issued_names(&s, &acct, &["a.lab.example", "b.lab.example"], "01", None).await;
    let second = issued_names(&s, &acct, &["a.lab.example", "b.lab.example"], "02", None).await;
    let only_a = issued_names(&s, &acct, &["a.lab.example"], "03", None).await;
    let theirs = issued_names(&s, &other, &["a.lab.example", "b.lab.example"], "04", None).await;
    let replaced = issued_names(&s, &acct, &["c.lab.example"], "05", None).await;
    let replacing = issued_names(&s, &acct, &["d.lab.example"], "06", Some("AKI.05")).await;
    let cert = |id: String| {
        let s = s.clone();
        async move { s.certificate(&id).await.unwrap().unwrap() }
    };
    assert_eq!(cert(first.clone()).await.renewed_by.as_deref(), Some(second.as_str()), "same account, same names");
    assert_eq!(cert(replaced.clone()).await.renewed_by.as_deref(), Some(replacing.as_str()), "replaces");
    for live in [&second, &only_a, &theirs, &replacing] {
        assert_eq!(cert(live.clone()).await.renewed_by, None, "other names or another account renew nothing");
    }

    let counts = |now: i64| {
        let s = s.clone();
        async move { s.renewal_counts(WINDOW, now).await.unwrap() }
    };
    for (now, state) in [(150, St::Active), (397, St::Due), (702, St::Due), (703, St::Overdue), (1000, St::Expired)] {
        let c = counts(now).await;
        assert_eq!((c.of(state), c.of(St::Renewed), c.of(St::Revoked)), (4, 2, 0), "at {now}: {c:?}");
        assert_eq!(c.next_expiry, if now < 1000 { Some(1000) } else { None });
        assert_eq!(cert(second.clone()).await.renewal_state(WINDOW, now), state);
    }
    // A renewed certificate revoked later counts as revoked; so does a live one.
    assert!(s.revoke_certificate(&first, 4, 300).await.unwrap());
    assert!(s.revoke_certificate(&only_a, 1, 300).await.unwrap());
    let c = counts(150).await;
    assert_eq!((c.of(St::Active), c.of(St::Renewed), c.of(St::Revoked)), (3, 1, 2), "{c:?}");
    assert_eq!(cert(first).await.renewal_state(WINDOW, 150), St::Revoked);
    // What is counted is what a listing shows.
    let all = s.certificates(None).await.unwrap();
    for state in St::ALL {
        let listed = all.iter().filter(|x| x.renewal_state(WINDOW, 150) == state).count() as i64;
        assert_eq!(listed, c.of(state), "{state}");
    }
    let live: Vec<String> = s.live_certificates().await.unwrap().into_iter().map(|x| x.id).collect();
    assert_eq!(live.len(), 3);
    assert!(!live.contains(&only_a) && live.contains(&second));
    assert_eq!(s.next_expiries(150, 2).await.unwrap().len(), 2);
    assert!(s.next_expiries(1000, 10).await.unwrap().is_empty(), "expired ones are not next");
}

/// The dashboard's listing filters renewal states in SQL: at every moment it lists what each
/// certificate's own state says, pages without gaps, and filters by name, account and the
/// audit trail by event.
async fn the_dashboard_listing_agrees_with_each_certificates_state(s: Store) {
    use crate::acme::renewal::{RenewalState as St, WindowPercents};
    const WINDOW: WindowPercents = WindowPercents { start: 33, end: 67 };
    let acct = account(&s).await;
    let other = account_with(&s, "tp-2", None).await.unwrap();
    let first = issued_names(&s, &acct, &["a.lab.example"], "01", None).await;
    let second = issued_names(&s, &acct, &["a.lab.example"], "02", None).await;
    let nas = issued_names(&s, &acct, &["nas.lab.example", "n_as.lab.example"], "03", None).await;
    let theirs = issued_names(&s, &other, &["pi.lab.example"], "04", None).await;
    assert!(s.revoke_certificate(&theirs, 1, 300).await.unwrap());
    let all = s.certificates(None).await.unwrap();
    for now in [150, 397, 702, 703, 1000] {
        for state in St::ALL {
            let f = CertFilter { state: Some(state), ..CertFilter::default() };
            let mut listed: Vec<String> =
                s.cert_page(&f, WINDOW, now, 0, 100).await.unwrap().into_iter().map(|c| c.id).collect();
            let mut want: Vec<String> =
                all.iter().filter(|c| c.renewal_state(WINDOW, now) == state).map(|c| c.id.clone()).collect();
            listed.sort();
            want.sort();
            assert_eq!(listed, want, "{state} at {now}");
            assert_eq!(s.cert_count(&f, WINDOW, now).await.unwrap(), want.len() as i64, "{state} at {now}");
        }
    }
    let every = CertFilter::default();
    let (p0, p1) =
        (s.cert_page(&every, WINDOW, 150, 0, 2).await.unwrap(), s.cert_page(&every, WINDOW, 150, 2, 2).await.unwrap());
    let mut pages: Vec<String> = p0.into_iter().chain(p1).map(|c| c.id).collect();
    pages.sort();
    pages.dedup();
    assert_eq!(pages.len(), 4, "two pages of two, none twice");
    let by_name = |name: &str| CertFilter { name: Some(name.into()), ..CertFilter::default() };
    let named = s.cert_page(&by_name("NAS"), WINDOW, 150, 0, 10).await.unwrap();
    assert_eq!(named.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [nas.as_str()]);
    assert!(s.cert_page(&by_name("x_as"), WINDOW, 150, 0, 10).await.unwrap().is_empty(), "_ is no wildcard");
    let mine = CertFilter { account: Some(acct.id.clone()), ..CertFilter::default() };
    assert_eq!(s.cert_count(&mine, WINDOW, 150).await.unwrap(), 3);
    let history = s.cert_history(&acct.id, &[Identifier::Dns("a.lab.example".into())], 10).await.unwrap();
    assert_eq!(history.iter().map(|c| c.id.clone()).collect::<Vec<_>>().len(), 2);
    assert!(history.iter().any(|c| c.id == first) && history.iter().any(|c| c.id == second));

    AuditEvent::new("validation_failed", "vacme")
        .identifiers(&[Identifier::Dns("nas.lab.example".into())])
        .record(&s, 10)
        .await;
    AuditEvent::new("issued", "vacme").record(&s, 11).await;
    let failures = AuditFilter { events: vec!["validation_failed".into()], ..AuditFilter::default() };
    let rows = s.audit_page(&failures, 10).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.event.event.as_str()).collect::<Vec<_>>(), ["validation_failed"]);
    let newest = s.audit_page(&AuditFilter::default(), 1).await.unwrap();
    let before = AuditFilter { before_id: Some(newest[0].id), ..AuditFilter::default() };
    assert!(s.audit_page(&before, 100).await.unwrap().iter().all(|r| r.id < newest[0].id));
    let named = AuditFilter { name: Some("nas".into()), ..AuditFilter::default() };
    assert_eq!(s.audit_page(&named, 10).await.unwrap().len(), 1);
}

/// The order records its client's User-Agent and address, and reads them back.
async fn an_order_keeps_the_client_that_asked(s: Store) {
    let acct = account(&s).await;
    let client = OrderClient::new(Some(b"certbot/5.8.0"), Some("10.0.0.23".parse().unwrap()));
    let new = NewOrder { client: client.clone(), ..new_order(&["ua.lab.example"], None) };
    let o = s.create_order(&acct.id, &new, 100, 10_000).await.unwrap().unwrap();
    let o = s.order(&o.id).await.unwrap().unwrap();
    assert_eq!((o.client_user_agent, o.client_ip), (client.user_agent, client.ip));
    let plain = order(&s, &acct, &["plain.lab.example"]).await;
    assert_eq!((plain.client_user_agent, plain.client_ip), (None, None));
}

async fn overdue_and_expiring_certificates_are_reported_once(s: Store) {
    // Valid 100..1000: its window ends at 67% of its lifetime (703).
    let acct = account(&s).await;
    let id = issued_names(&s, &acct, &["late.lab.test"], "0a", None).await;
    assert!(s.newly_overdue(67, 702, 10).await.unwrap().is_empty(), "not before 703");
    let due: Vec<String> = s.newly_overdue(67, 703, 10).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(due, std::slice::from_ref(&id));
    assert!(s.mark_notified(&id, true, 703).await.unwrap());
    assert!(!s.mark_notified(&id, true, 704).await.unwrap(), "told once, by one replica");
    assert!(s.newly_overdue(67, 800, 10).await.unwrap().is_empty());
    assert!(s.newly_overdue(67, 1000, 10).await.unwrap().is_empty(), "expired is not overdue");
    assert!(s.newly_expiring(999, 800, 10).await.unwrap().is_empty(), "expires at 1000, not by 999");
    let soon: Vec<String> = s.newly_expiring(1000, 800, 10).await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(soon, std::slice::from_ref(&id));
    assert!(s.mark_notified(&id, false, 800).await.unwrap());
    assert!(s.newly_expiring(1000, 801, 10).await.unwrap().is_empty());
}
