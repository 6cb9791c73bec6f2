//! Property: the order state machine of RFC 8555 §7.1.6 holds under any sequence of the store's
//! operations (client requests, validation and issuance outcomes, account deactivation, time
//! passing and clean-up). After every step: nothing leaves a final state, an order agrees with
//! its authorizations, and an order has a certificate exactly when it is valid.
//!
//! Statuses are checked as a client reads them: an unfinished order or authorization past its
//! `expires` is shown as `invalid` / `expired` (as `api::render` does) even before clean-up writes
//! that down, so "expired is final" covers the time in between too.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::acme::types::{AccountStatus, AuthorizationStatus, OrderStatus};

/// Lifetime of an order and its authorizations.
const TTL: i64 = 1_000;
const START: i64 = 1_000_000;
const MAX_ORDERS: usize = 6;

/// One step. Indices pick among the live orders (modulo their number), an order's
/// authorizations and an authorization's challenges.
#[derive(Clone, Debug)]
enum Op {
    /// newOrder by account `account % 2` for 1 to 3 names.
    NewOrder {
        account: u8,
        names: u8,
    },
    /// The client answers a challenge.
    Respond {
        order: u8,
        authz: u8,
        chall: u8,
    },
    /// The validation worker leases what is due.
    Claim,
    /// Validation outcomes: passed, failed but retried later, failed for good.
    Pass {
        order: u8,
        authz: u8,
        chall: u8,
    },
    Retry {
        order: u8,
        authz: u8,
        chall: u8,
    },
    Fail {
        order: u8,
        authz: u8,
        chall: u8,
    },
    /// The client gives up an authorization (RFC 8555 §7.5.2).
    DeactivateAuthz {
        order: u8,
        authz: u8,
    },
    /// finalize with a CSR that passed its checks.
    Finalize {
        order: u8,
    },
    /// Issuance outcomes: signed, CA unreachable, CA refused.
    Issued {
        order: u8,
    },
    CaDown {
        order: u8,
    },
    CaRefused {
        order: u8,
    },
    /// The account deactivates itself (RFC 8555 §7.3.6).
    DeactivateAccount {
        account: u8,
    },
    /// Time passes.
    Tick {
        secs: u16,
    },
    /// Clean-up runs; with `delete`, expired unfinished orders are deleted at once.
    Cleanup {
        delete: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let chall = || (0..8u8, 0..3u8, 0..2u8);
    prop_oneof![
        1 => (0..2u8, 1..4u8).prop_map(|(account, names)| Op::NewOrder { account, names }),
        4 => chall().prop_map(|(order, authz, chall)| Op::Respond { order, authz, chall }),
        1 => Just(Op::Claim),
        4 => chall().prop_map(|(order, authz, chall)| Op::Pass { order, authz, chall }),
        1 => chall().prop_map(|(order, authz, chall)| Op::Retry { order, authz, chall }),
        1 => chall().prop_map(|(order, authz, chall)| Op::Fail { order, authz, chall }),
        1 => (0..8u8, 0..3u8).prop_map(|(order, authz)| Op::DeactivateAuthz { order, authz }),
        3 => (0..8u8).prop_map(|order| Op::Finalize { order }),
        3 => (0..8u8).prop_map(|order| Op::Issued { order }),
        1 => (0..8u8).prop_map(|order| Op::CaDown { order }),
        1 => (0..8u8).prop_map(|order| Op::CaRefused { order }),
        1 => (0..2u8).prop_map(|account| Op::DeactivateAccount { account }),
        2 => (0..700u16).prop_map(|secs| Op::Tick { secs }),
        1 => any::<bool>().prop_map(|delete| Op::Cleanup { delete }),
    ]
}

/// The order problems each cause records, so an invalid order can be traced to its cause.
fn problem(cause: &str) -> Value {
    json!({"type": "urn:ietf:params:acme:error:unauthorized", "detail": cause})
}

/// RFC 8555 §7.1.6, as a client can observe it (`from == to` is always allowed).
fn allowed(kind: &str, from: &str, to: &str) -> bool {
    from == to
        || match (kind, from) {
            ("order", "pending") => matches!(to, "ready" | "invalid"),
            ("order", "ready") => matches!(to, "processing" | "invalid"),
            ("order", "processing") => matches!(to, "valid" | "invalid"),
            ("authz", "pending") => matches!(to, "valid" | "invalid" | "deactivated" | "expired"),
            ("authz", "valid") => matches!(to, "deactivated" | "expired" | "revoked"),
            ("chall", "pending") => matches!(to, "processing" | "invalid"),
            ("chall", "processing") => matches!(to, "valid" | "invalid"),
            ("account", "valid") => matches!(to, "deactivated" | "revoked"),
            _ => false,
        }
}

/// The store plus what the test remembers of it.
struct World {
    store: Store,
    now: i64,
    accounts: Vec<String>,
    /// Live orders, oldest first; clean-up may delete some.
    orders: Vec<String>,
    /// Orders that entered `processing` (only they may be invalid because the CA refused).
    finalized: HashSet<String>,
    /// Last status seen per object ("order:<id>" etc.).
    seen: HashMap<String, &'static str>,
    serial: u32,
}

impl World {
    async fn new(store: Store) -> Self {
        let mut accounts = Vec::new();
        for tp in ["tp-a", "tp-b"] {
            match store.create_account(tp, &json!({"kty": "OKP"}), &[], true, None, None, START).await.unwrap() {
                NewAccountOutcome::Created(a) => accounts.push(a.id),
                other => panic!("{other:?}"),
            }
        }
        let mut w = Self {
            store,
            now: START,
            accounts,
            orders: Vec::new(),
            finalized: HashSet::new(),
            seen: HashMap::new(),
            serial: 0,
        };
        w.new_order(0, 2).await;
        w.new_order(1, 1).await;
        w
    }

    async fn new_order(&mut self, account: usize, names: u8) {
        let n = self.orders.len();
        let identifiers: Vec<Identifier> =
            (0..names).map(|i| Identifier::Dns(format!("n{i}.o{n}.lab.example"))).collect();
        let authzs = identifiers
            .iter()
            .map(|i| NewAuthz { identifier: i.clone(), challenges: vec![ChallengeType::Http01, ChallengeType::Dns01] })
            .collect();
        let new = NewOrder { identifiers, authzs, ..Default::default() };
        let order = self.store.create_order(&self.accounts[account], &new, self.now, self.now + TTL).await.unwrap();
        self.orders.push(order.unwrap().id);
    }

    fn pick_order(&self, i: u8) -> Option<String> {
        (!self.orders.is_empty()).then(|| self.orders[usize::from(i) % self.orders.len()].clone())
    }

    async fn order(&self, id: &str) -> Option<OrderRow> {
        self.store.order(id).await.unwrap()
    }

    async fn authz_of(&self, order: u8, authz: u8) -> Option<AuthzRow> {
        let o = self.order(&self.pick_order(order)?).await?;
        let id = &o.authz_ids[usize::from(authz) % o.authz_ids.len()];
        self.store.authorization(id).await.unwrap()
    }

    async fn chall_of(&self, order: u8, authz: u8, chall: u8) -> Option<String> {
        let a = self.authz_of(order, authz).await?;
        Some(a.challenges[usize::from(chall) % a.challenges.len()].id.clone())
    }

    async fn account_valid(&self, account_id: &str) -> bool {
        self.store.account(account_id).await.unwrap().unwrap().status == AccountStatus::Valid
    }

    /// Runs one step the way vacme would: client requests only for a valid account (the JWS
    /// extractor refuses the others before any handler runs), worker outcomes whenever.
    async fn apply(&mut self, op: &Op) -> std::result::Result<(), String> {
        let now = self.now;
        match *op {
            Op::NewOrder { account, names } => {
                let account = usize::from(account) % 2;
                if self.orders.len() < MAX_ORDERS && self.account_valid(&self.accounts[account].clone()).await {
                    self.new_order(account, names).await;
                }
            }
            Op::Respond { order, authz, chall } => {
                if let Some(a) = self.authz_of(order, authz).await
                    && self.account_valid(&a.account_id).await
                {
                    let id = &a.challenges[usize::from(chall) % a.challenges.len()].id;
                    self.store.start_challenge(id, now).await.map_err(|e| e.to_string())?;
                }
            }
            Op::Claim => {
                self.store.claim_due_challenges(now, now + 30, 10).await.map_err(|e| e.to_string())?;
            }
            Op::Pass { order, authz, chall } => {
                if let Some(id) = self.chall_of(order, authz, chall).await {
                    self.store.challenge_succeeded(&id, now).await.map_err(|e| e.to_string())?;
                }
            }
            Op::Retry { order, authz, chall } => {
                if let Some(id) = self.chall_of(order, authz, chall).await {
                    self.store
                        .challenge_retry(&id, &json!({"detail": "try again"}), now + 5)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Op::Fail { order, authz, chall } => {
                if let Some(id) = self.chall_of(order, authz, chall).await {
                    let p = json!({"detail": "wrong answer"});
                    self.store
                        .challenge_failed(&id, &p, &problem("challenge failed"), 0, now)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Op::DeactivateAuthz { order, authz } => {
                if let Some(a) = self.authz_of(order, authz).await
                    && self.account_valid(&a.account_id).await
                {
                    self.store
                        .deactivate_authz(&a.id, &problem("authorization deactivated"), now)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Op::Finalize { order } => {
                if let Some(id) = self.pick_order(order)
                    && let Some(o) = self.order(&id).await
                    && self.account_valid(&o.account_id).await
                    && self.store.begin_issuance(&id, b"csr", now).await.map_err(|e| e.to_string())?
                {
                    self.finalized.insert(id);
                }
            }
            Op::Issued { order } => {
                if let Some(id) = self.pick_order(order)
                    && let Some(o) = self.order(&id).await
                {
                    self.serial += 1;
                    let cert = NewCertificate {
                        serial: format!("{:04x}", self.serial),
                        issuer: "local".into(),
                        chain_pem: "PEM".into(),
                        not_before: now,
                        not_after: now + 86_400,
                        ari_id: None,
                    };
                    let result = self.store.issuance_succeeded(&o, &cert, now).await;
                    // The guard: only a processing order gets a certificate.
                    if (o.status == OrderStatus::Processing) != result.is_ok() {
                        return Err(format!("issuance_succeeded on a {} order returned {result:?}", o.status));
                    }
                }
            }
            Op::CaDown { order } => {
                if let Some(id) = self.pick_order(order) {
                    self.store.issuance_retry(&id, now + 5).await.map_err(|e| e.to_string())?;
                }
            }
            Op::CaRefused { order } => {
                if let Some(id) = self.pick_order(order) {
                    self.store.issuance_failed(&id, &problem("CA refused"), now).await.map_err(|e| e.to_string())?;
                }
            }
            Op::DeactivateAccount { account } => {
                self.store
                    .deactivate_account(&self.accounts[usize::from(account) % 2], now)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Op::Tick { secs } => self.now += i64::from(secs),
            Op::Cleanup { delete } => {
                let retention = if delete { 0 } else { 10 * TTL };
                self.store.cleanup(now, retention, &problem("order expired")).await.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Records `status` for `key` and checks the step from the last one.
    fn observe(&mut self, kind: &str, id: &str, status: &'static str) -> std::result::Result<(), String> {
        let key = format!("{kind}:{id}");
        if let Some(&from) = self.seen.get(&key)
            && !allowed(kind, from, status)
        {
            return Err(format!("{key} went from {from} to {status}"));
        }
        self.seen.insert(key, status);
        Ok(())
    }

    /// Every invariant, on the whole store.
    async fn check(&mut self) -> std::result::Result<(), String> {
        let now = self.now;
        let mut certs: HashMap<String, Vec<CertificateRow>> = HashMap::new();
        for c in self.store.certificates(None).await.unwrap() {
            certs.entry(c.order_id.clone()).or_default().push(c);
        }
        for acct in self.accounts.clone() {
            let status = self.store.account(&acct).await.unwrap().unwrap().status;
            self.observe("account", &acct, status.as_str())?;
        }
        for id in self.orders.clone() {
            let Some(o) = self.order(&id).await else {
                // Only clean-up deletes, and only orders that ended unfinished and expired.
                let last = self.seen.get(&format!("order:{id}")).copied();
                if last != Some("invalid") {
                    return Err(format!("order {id} was deleted while {last:?}"));
                }
                if certs.contains_key(&id) {
                    return Err(format!("order {id} was deleted but its certificate is still there"));
                }
                self.orders.retain(|o| o != &id);
                continue;
            };
            let expired = now >= o.expires_at;
            let order_status = match o.status {
                OrderStatus::Pending | OrderStatus::Ready if expired => OrderStatus::Invalid,
                s => s,
            };
            self.observe("order", &id, order_status.as_str())?;

            let mut authz_statuses = Vec::new();
            for aid in &o.authz_ids {
                let a = self.store.authorization(aid).await.unwrap().ok_or(format!("authz {aid} of {id} is gone"))?;
                let status = match a.status {
                    AuthorizationStatus::Pending if now >= a.expires_at => AuthorizationStatus::Expired,
                    s => s,
                };
                self.observe("authz", aid, status.as_str())?;
                for c in &a.challenges {
                    self.observe("chall", &c.id, c.status.as_str())?;
                }
                let owner = self.store.account(&a.account_id).await.unwrap().unwrap();
                if owner.status != AccountStatus::Valid && status == AuthorizationStatus::Pending {
                    return Err(format!("authz {aid} is pending although its account is {}", owner.status));
                }
                authz_statuses.push(status);
            }

            use AuthorizationStatus as A;
            let all_valid = authz_statuses.iter().all(|s| *s == A::Valid);
            let any_final_bad = authz_statuses.iter().any(|s| matches!(s, A::Invalid | A::Deactivated | A::Expired));
            let consistent = match order_status {
                OrderStatus::Pending => !all_valid && !any_final_bad,
                OrderStatus::Ready => all_valid,
                // Authorizations were all valid at finalize; the owner may deactivate them afterwards.
                OrderStatus::Processing | OrderStatus::Valid => {
                    authz_statuses.iter().all(|s| matches!(s, A::Valid | A::Deactivated | A::Revoked))
                }
                // An order made invalid says why (RFC 8555 §7.1.3 `error`); one that merely ran out
                // of time may not have been written down yet.
                OrderStatus::Invalid => {
                    (any_final_bad || expired || self.finalized.contains(&id))
                        && (o.status != OrderStatus::Invalid || o.error.is_some())
                }
            };
            if !consistent {
                return Err(format!(
                    "order {id} is {order_status} (stored {}, error {:?}) with authorizations {authz_statuses:?}",
                    o.status, o.error
                ));
            }

            let mine = certs.get(&id).map_or(0, Vec::len);
            let cert_ok = match o.status {
                OrderStatus::Valid => {
                    mine == 1 && o.certificate_id.as_deref() == certs.get(&id).map(|c| c[0].id.as_str())
                }
                _ => mine == 0 && o.certificate_id.is_none(),
            };
            if !cert_ok {
                return Err(format!("order {id} is {} with {mine} certificates ({:?})", o.status, o.certificate_id));
            }
        }
        let known: HashSet<&String> = self.orders.iter().collect();
        if let Some(stray) = certs.keys().find(|k| !known.contains(k)) {
            return Err(format!("certificate of an unknown order {stray}"));
        }
        Ok(())
    }
}

async fn run(store: Store, ops: &[Op]) -> std::result::Result<(), String> {
    let mut w = World::new(store).await;
    w.check().await.map_err(|e| format!("before any step: {e}"))?;
    for (i, op) in ops.iter().enumerate() {
        w.apply(op).await.map_err(|e| format!("step {i} {op:?}: {e}"))?;
        w.check().await.map_err(|e| format!("after step {i} {op:?} (t = +{}): {e}", w.now - START))?;
    }
    Ok(())
}

proptest! {
    // Failures are reported with their shrunk sequence, not written to proptest-regressions/.
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn order_state_machine_holds_under_any_sequence(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        if let Err(e) = rt.block_on(async { run(Store::memory().await.unwrap(), &ops).await }) {
            return Err(TestCaseError::fail(e));
        }
    }

    /// The same on a SQLite file, where reads run on reader connections beside the writer thread.
    #[test]
    fn order_state_machine_holds_on_a_sqlite_file(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("vacme.db").display());
        if let Err(e) = rt.block_on(async { run(Store::connect(&url).await.unwrap(), &ops).await }) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// The same property on PostgreSQL, a fresh database per case (fewer cases: each costs a
/// `CREATE DATABASE`).
#[test]
fn order_state_machine_holds_on_postgres() {
    use proptest::test_runner::TestRunner;

    use super::testdb::{self, TestDb};
    if std::env::var(testdb::ENV).is_err() {
        testdb::skipped("order_state_machine_holds_on_postgres");
        return;
    }
    let config = ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() };
    let outcome = TestRunner::new(config).run(&prop::collection::vec(op(), 1..40), |ops| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let db = TestDb::create("order_state_machine_holds_on_postgres").await.unwrap();
            let store = Store::connect(&db.url).await.unwrap();
            let result = run(store.clone(), &ops).await;
            store.close().await;
            db.drop().await;
            result.map_err(TestCaseError::fail)
        })
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
