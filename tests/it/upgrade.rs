//! A store written by the release before the store's rewrite (tests/fixtures/store-0006.db: made
//! by that release's `Store`, migrations 1 to 6 recorded by it) opens under this one: the new
//! migration is applied, every row reads back as it was written, and the store goes on working.

use serde_json::json;
use vacme::{
    acme::{
        Identifier,
        types::{AccountStatus, ChallengeType, OrderStatus},
    },
    store::{NewAuthz, NewCertificate, NewOrder, Store},
};

const ACCOUNT: &str = "WY9z65YRCW_ddU82U89FxA";
const ISSUED_ORDER: &str = "c5NX2bQQziTRO0YsDfYQRA";
const CERT: &str = "GM4XcN18aBkPGemKKqKp5A";
const REVOKED_CERT: &str = "XHgW5y1ZOjrFNXDt9qau3w";
const PENDING_ORDER: &str = "li_2iCoCYPbSa5ZKVQHa0w";
const READY_ORDER: &str = "DRhCfcVlIh33aNA9cJXd1g";
const FAILED_ORDER: &str = "0_LJdL2-xJBh552v6JGv6Q";
const REJECTED_ORDER: &str = "f_KlO0zV0vOjt_EbxF2BFg";

fn migrations(db: &std::path::Path) -> Vec<(i64, bool)> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare("SELECT version, success FROM _sqlx_migrations ORDER BY version").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_previous_release_opens_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vacme.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-0006.db"), &db).unwrap();
    assert_eq!(migrations(&db).len(), 6, "the fixture is the previous release's schema");

    let s = Store::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let applied = migrations(&db);
    let known = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap().count() as i64;
    assert_eq!(applied.last(), Some(&(known, true)), "every newer migration is recorded: {applied:?}");

    // What the previous release wrote reads back.
    let account = s.account(ACCOUNT).await.unwrap().unwrap();
    assert_eq!((account.status, account.eab_kid.as_deref()), (AccountStatus::Valid, Some("kid-old")));
    assert_eq!(account.contact, vec!["mailto:ops@old.lab.example".to_string()]);
    assert_eq!(s.account_by_thumbprint("tp-old").await.unwrap().unwrap().id, ACCOUNT);
    let order = s.order(ISSUED_ORDER).await.unwrap().unwrap();
    assert_eq!((order.status, order.certificate_id.as_deref()), (OrderStatus::Valid, Some(CERT)));
    assert_eq!(order.authz_ids.len(), 2);
    assert_eq!(order.sign_started_at, Some(1_221));
    let authz = s.authorization(&order.authz_ids[1]).await.unwrap().unwrap();
    assert_eq!(authz.identifier, Identifier::Dns("www.old.lab.example".into()));
    assert_eq!(authz.challenges.len(), 2);
    for (id, status) in [
        (PENDING_ORDER, OrderStatus::Pending),
        (READY_ORDER, OrderStatus::Ready),
        (FAILED_ORDER, OrderStatus::Invalid),
        (REJECTED_ORDER, OrderStatus::Invalid),
    ] {
        assert_eq!(s.order(id).await.unwrap().unwrap().status, status, "{id}");
    }
    let cert = s.certificate(CERT).await.unwrap().unwrap();
    assert_eq!((cert.serial.as_str(), cert.ari_id.as_deref()), ("0a1b2c", Some("AKI.0a1b2c")));
    assert_eq!(s.certificate_by_ari_id("AKI.00ff01").await.unwrap().unwrap().id, REVOKED_CERT);
    // Leading zeros do not matter, through the new index.
    assert_eq!(s.certificates_by_serial("ff01").await.unwrap()[0].id, REVOKED_CERT);
    assert_eq!(s.pending_ca_revocations(10).await.unwrap()[0].id, REVOKED_CERT);
    assert_eq!(s.pending_rejected_revocations(10).await.unwrap()[0].serial, "beef");
    assert_eq!(s.eab_key("kid-old").await.unwrap().unwrap().account_id.as_deref(), Some(ACCOUNT));
    assert_eq!(s.eab_keys().await.unwrap().len(), 2);
    assert_eq!(s.pauses(None, false).await.unwrap()[0].identifier_value, "fail.lab.example");
    assert_eq!(s.audit_events(Some(ACCOUNT), 10).await.unwrap()[0].event.event, "issued");
    // The counters start from the rows already there.
    assert_eq!(s.totals().await.unwrap(), (2, 2));
    let window = vacme::acme::renewal::WindowPercents { start: 33, end: 67 };
    let states = s.renewal_counts(window, 2_000).await.unwrap();
    assert_eq!(states.of(vacme::acme::renewal::RenewalState::Revoked), 1, "{states:?}");
    assert_eq!(states.counts.iter().map(|(_, n)| n).sum::<i64>(), 2, "every certificate has a state: {states:?}");

    // And it goes on: the ready order is issued, a new order is made, a new account counted.
    assert!(s.begin_issuance(READY_ORDER, b"csr", 2_000).await.unwrap());
    let claimed = s.claim_due_issuances(2_000, 2_030, 10).await.unwrap().items;
    assert_eq!(claimed.len(), 1);
    let cert = NewCertificate {
        serial: "0c0d".into(),
        issuer: "local".into(),
        chain_pem: "PEM".into(),
        not_before: 2_000,
        not_after: 9_000,
        ari_id: None,
    };
    s.issuance_succeeded(&claimed[0], &cert, 2_001).await.unwrap();
    assert_eq!(s.order(READY_ORDER).await.unwrap().unwrap().status, OrderStatus::Valid);
    let name = Identifier::Dns("new.old.lab.example".into());
    let new = NewOrder {
        identifiers: vec![name.clone()],
        authzs: vec![NewAuthz { identifier: name, challenges: vec![ChallengeType::Http01] }],
        ..Default::default()
    };
    assert!(s.create_order(ACCOUNT, &new, 2_100, 9_000).await.unwrap().is_some());
    s.create_account("tp-new", &json!({"kty": "OKP"}), &[], true, None, None, 2_200).await.unwrap();
    assert_eq!(s.totals().await.unwrap(), (3, 3));
    s.close().await;
    drop(s);

    // Reopened, nothing is migrated twice.
    let s = Store::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    assert_eq!(migrations(&db).len() as i64, known);
    assert_eq!(s.counts().await.unwrap().certificates, 3);
}
