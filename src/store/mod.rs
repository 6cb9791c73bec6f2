//! The only place with SQL: the protocol state, in SQLite (one process) or PostgreSQL (several
//! replicas share it). Every state change is one transaction; transitions are guarded updates
//! (`WHERE status = ...`) checked by the rows they changed, so several workers (or replicas)
//! never move the same object twice.
//!
//! `Store` is the one interface the handlers and workers see. Behind it each backend has its own
//! implementation, split by aggregate in the same files (accounts, orders, issuance,
//! certificates, nonces, limits, audit, upkeep):
//!
//! - `sqlite/`: every statement through rusqlite, on vacme's own threads (one writer thread with
//!   group commit, readers on blocking threads), never on a tokio worker.
//! - `postgres/`: sqlx. Statements run under READ COMMITTED at the same time as other replicas',
//!   so the few transactions that read before they write take a row or advisory lock first
//!   (each says why).
//!
//! Here: the inputs and outcomes of the store's operations, and the dispatch to a backend. IDs,
//! tokens and JSON texts are made here, once for both.

mod admin;
mod copy;
mod postgres;
mod rows;
mod sqlite;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};

pub use admin::{AuditFilter, CertFilter, CertListRow};
pub use copy::CopyReport;
pub use rows::{
    AccountRow, AccountSummary, AuditEvent, AuditRow, AuthzRow, CertificateRow, ChallengeRow, Claimed,
    ClaimedChallenge, EabKeyRow, OrderClient, OrderRow, PauseRow, RejectedRow, WindowCount,
};

use crate::acme::{
    Identifier, Problem,
    renewal::{RenewalFacts, RenewalState, WindowPercents},
    types::ChallengeType,
};

/// The window every hourly limit counts over.
pub const HOUR: i64 = 3600;

/// What went wrong in the store. Clients only ever see `serverInternal`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Lite(#[from] rusqlite::Error),
    /// A SQLite transaction could not begin or commit, or its threads are gone.
    #[error("database error: {0}")]
    Sqlite(String),
    #[error("migration failed: {0}")]
    Migrate(String),
    #[error("corrupt row in {table}: {what}")]
    Corrupt { table: &'static str, what: String },
    #[error("no randomness available")]
    Random,
    #[error("{0}")]
    Unsupported(&'static str),
    /// An admin operation that cannot be done on these stores (copy-store into a non-empty one).
    #[error("{0}")]
    Refused(String),
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        Problem::internal(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A new order's authorizations: one per identifier, each with its challenges.
#[derive(Clone, Debug)]
pub struct NewAuthz {
    pub identifier: Identifier,
    pub challenges: Vec<ChallengeType>,
}

/// What newOrder records besides the account.
#[derive(Clone, Debug, Default)]
pub struct NewOrder {
    pub identifiers: Vec<Identifier>,
    pub authzs: Vec<NewAuthz>,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub profile: Option<String>,
    /// RFC 9773 certID (`certificates.ari_id`) of the certificate this order renews.
    pub replaces: Option<String>,
    /// Who asked: the client's `User-Agent` (already bounded to printable text) and address.
    pub client: OrderClient,
}

/// Certificates per renewal state, and the next expiry of a certificate neither renewed nor
/// revoked (one that has not expired yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenewalCounts {
    pub counts: Vec<(RenewalState, i64)>,
    pub next_expiry: Option<i64>,
}

impl RenewalCounts {
    /// The count of one state.
    pub fn of(&self, state: RenewalState) -> i64 {
        self.counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n)
    }
}

/// A certificate to record when an order is issued.
#[derive(Clone, Debug)]
pub struct NewCertificate {
    pub serial: String,
    pub issuer: String,
    pub chain_pem: String,
    pub not_before: i64,
    pub not_after: i64,
    /// RFC 9773 certID, when the leaf has an authority key identifier.
    pub ari_id: Option<String>,
}

/// Why an account could not be created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewAccountOutcome {
    Created(AccountRow),
    /// The key already has this account.
    Exists(AccountRow),
    /// The EAB key was used, revoked or expired by the time the account was written.
    EabUnusable,
}

/// Row counts, for tests and health output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub accounts: i64,
    pub orders: i64,
    pub authorizations: i64,
    pub challenges: i64,
    pub certificates: i64,
}

/// What `Store::issuance_rejected` records about the certificate.
#[derive(Clone, Debug, Default)]
pub struct NewRejected {
    pub serial: String,
    pub identifiers: Vec<Identifier>,
    pub leaf_pem: String,
    pub mount: Option<String>,
    pub reason: String,
}

/// A new EAB key's record.
#[derive(Clone, Debug, Default)]
pub struct NewEabKey {
    pub kid: String,
    pub scope: Vec<String>,
    pub profile: Option<String>,
    pub comment: String,
    pub expires_at: Option<i64>,
}

/// The outcome of a key rollover (RFC 8555 §7.3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    Changed,
    /// The new key already belongs to this account.
    Conflict(String),
    /// The account's key or status changed under us.
    Stale,
}

/// What one clean-up run removed or closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub nonces: u64,
    pub expired_orders: u64,
    pub expired_authorizations: u64,
    pub deleted_orders: u64,
}

/// A new account, as `create_account` writes it.
#[derive(Clone, Debug)]
struct NewAccountRow<'a> {
    id: String,
    thumbprint: &'a str,
    jwk: String,
    contact: String,
    tos_agreed: bool,
    eab_kid: Option<&'a str>,
    ip: Option<&'a str>,
    now: i64,
}

/// A new order with every ID and token chosen, as the backends write it.
#[derive(Clone, Debug)]
struct OrderInsert {
    id: String,
    account_id: String,
    identifiers: String,
    not_before: Option<i64>,
    not_after: Option<i64>,
    profile: Option<String>,
    replaces: Option<String>,
    user_agent: Option<String>,
    client_ip: Option<String>,
    now: i64,
    expires_at: i64,
    authzs: Vec<AuthzInsert>,
}

#[derive(Clone, Debug)]
struct AuthzInsert {
    id: String,
    kind: &'static str,
    value: String,
    wildcard: bool,
    /// Each challenge's ID, type and token.
    challenges: Vec<(String, &'static str, String)>,
}

/// One statement for an authorization's `n` challenges: `$1` is the authorization, then each
/// challenge's ID, type and token (both backends).
fn insert_challenges(n: usize) -> String {
    let rows = (0..n)
        .map(|i| format!("(${}, $1, ${}, ${}, 'pending')", 3 * i + 2, 3 * i + 3, 3 * i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO challenges (id, authz_id, type, token, status) VALUES {rows}")
}

/// The protocol state, in SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    db: Backend,
    rng: SystemRandom,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// `true` for the URLs `Store::connect` opens with PostgreSQL.
fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Store methods that only pass their arguments to the backend.
/// Every table that grows as vacme is used (not `nonces`: the clean-up purges them as they
/// expire; not `webhook_cursors` or `totals`: one row per webhook or counter). The plan checks of
/// both backends (`sqlite/plan.rs`, `postgres/plan.rs`) refuse a statement that scans one.
#[cfg(test)]
const GROWING: &[&str] = &[
    "accounts",
    "orders",
    "authorizations",
    "challenges",
    "certificates",
    "eab_keys",
    "validation_pauses",
    "audit_events",
    "rejected_certificates",
];

macro_rules! forward {
    ($($(#[$meta:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Store {
            $(
                $(#[$meta])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
                    match &self.db {
                        Backend::Sqlite(db) => db.$name($($arg),*).await,
                        Backend::Postgres(db) => db.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

impl Store {
    /// Opens the database at `url` (`sqlite://FILE`, created if missing, or `postgres://...`) and
    /// runs migrations. SQLite has every commit on disk before it returns (survives a power cut).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, true).await
    }

    /// As `connect`; `durable = false` lets SQLite skip the fsync of each commit (WAL
    /// `synchronous=NORMAL`): a crash of vacme loses nothing, a power cut may lose the last
    /// commits. PostgreSQL's durability is the server's own (`synchronous_commit`).
    pub async fn connect_with(url: &str, durable: bool) -> Result<Self> {
        let db = if is_postgres_url(url) {
            Backend::Postgres(postgres::Postgres::connect(url).await?)
        } else {
            Backend::Sqlite(sqlite::Sqlite::open(url, durable).await?)
        };
        Ok(Self { db, rng: SystemRandom::new() })
    }

    /// A private in-memory database, for tests.
    pub async fn memory() -> Result<Self> {
        Ok(Self { db: Backend::Sqlite(sqlite::Sqlite::memory().await?), rng: SystemRandom::new() })
    }

    /// `true` on PostgreSQL (a store replicas may share).
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Backend::Postgres(_))
    }

    /// 128 random bits, base64url: object IDs, nonces and challenge tokens.
    pub fn random_id(&self) -> Result<String> {
        let mut buf = [0u8; 16];
        self.rng.fill(&mut buf).map_err(|_| StoreError::Random)?;
        Ok(URL_SAFE_NO_PAD.encode(buf))
    }

    /// A challenge token: 256 random bits (RFC 8555 §8.3 asks for at least 128).
    fn token(&self) -> Result<String> {
        let mut buf = [0u8; 32];
        self.rng.fill(&mut buf).map_err(|_| StoreError::Random)?;
        Ok(URL_SAFE_NO_PAD.encode(buf))
    }

    /// Closes the store (on SQLite, flushing the WAL once the last clone is gone).
    pub async fn close(&self) {
        match &self.db {
            Backend::Sqlite(db) => db.close().await,
            Backend::Postgres(db) => db.close().await,
        }
    }

    // ---- nonces (RFC 8555 §6.5) ----

    /// Issues a nonce that `redeem_nonce` accepts once until `expires_at`.
    pub async fn new_nonce(&self, expires_at: i64) -> Result<String> {
        let nonce = self.random_id()?;
        match &self.db {
            Backend::Sqlite(db) => db.new_nonce(nonce.clone(), expires_at).await?,
            Backend::Postgres(db) => db.new_nonce(&nonce, expires_at).await?,
        }
        Ok(nonce)
    }

    // ---- accounts (RFC 8555 §7.3) ----

    /// Creates an account for a key, or returns the one that already has it. With `eab_kid`, the
    /// key is bound in the same transaction, and only if it is still unused, unrevoked and unexpired.
    /// Racing creations (any replica): the key's unique index makes the second insert wait for the
    /// first and then do nothing; the EAB update is guarded, so a key binds one account.
    // Each argument is a column the newAccount handler has at hand; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_account(
        &self,
        thumbprint: &str,
        jwk: &serde_json::Value,
        contact: &[String],
        tos_agreed: bool,
        eab_kid: Option<&str>,
        ip: Option<&str>,
        now: i64,
    ) -> Result<NewAccountOutcome> {
        let new = NewAccountRow {
            id: self.random_id()?,
            thumbprint,
            jwk: jwk.to_string(),
            contact: serde_json::to_string(contact).unwrap_or_else(|_| "[]".into()),
            tos_agreed,
            eab_kid,
            ip,
            now,
        };
        let inserted = match &self.db {
            Backend::Sqlite(db) => db.create_account(&new).await?,
            Backend::Postgres(db) => db.create_account(&new).await?,
        };
        let Some(inserted) = inserted else {
            return Ok(NewAccountOutcome::EabUnusable);
        };
        let account = self
            .account_by_thumbprint(thumbprint)
            .await?
            .ok_or(StoreError::Corrupt { table: "accounts", what: "account vanished right after insert".into() })?;
        Ok(if inserted { NewAccountOutcome::Created(account) } else { NewAccountOutcome::Exists(account) })
    }

    pub async fn update_contact(&self, id: &str, contact: &[String]) -> Result<()> {
        let contact = serde_json::to_string(contact).unwrap_or_else(|_| "[]".into());
        match &self.db {
            Backend::Sqlite(db) => db.update_contact(id, contact).await,
            Backend::Postgres(db) => db.update_contact(id, &contact).await,
        }
    }

    /// RFC 8555 §7.3.6: deactivation is final; the account's live pending authorizations go with
    /// it, and so its pending orders become `invalid` (§7.1.6). A ready order stays ready (its
    /// authorizations are valid) but can never be finalized: the account can sign nothing. Expired
    /// objects stay expired.
    pub async fn deactivate_account(&self, id: &str, now: i64) -> Result<()> {
        let problem = serde_json::to_string(&Problem::unauthorized("the account was deactivated"))
            .map_err(|e| corrupt("orders", e))?;
        match &self.db {
            Backend::Sqlite(db) => db.deactivate_account(id, problem, now).await,
            Backend::Postgres(db) => db.deactivate_account(id, &problem, now).await,
        }
    }

    /// Admin deactivation: like the account's own (RFC 8555 §7.3.6). `None` if there is no such
    /// account, `Some(false)` if it was not valid.
    pub async fn admin_deactivate_account(&self, id: &str, now: i64) -> Result<Option<bool>> {
        match self.account(id).await? {
            Some(a) if a.status == crate::acme::types::AccountStatus::Valid => {
                self.deactivate_account(id, now).await?;
                Ok(Some(true))
            }
            Some(_) => Ok(Some(false)),
            None => Ok(None),
        }
    }

    /// Replaces the account's key, if it still has `old_thumbprint` and is valid.
    pub async fn change_key(
        &self,
        account_id: &str,
        old_thumbprint: &str,
        new_thumbprint: &str,
        new_jwk: &serde_json::Value,
    ) -> Result<KeyChange> {
        if let Some(other) = self.account_by_thumbprint(new_thumbprint).await? {
            return Ok(KeyChange::Conflict(other.id));
        }
        let jwk = new_jwk.to_string();
        let done = match &self.db {
            Backend::Sqlite(db) => db.change_key(account_id, old_thumbprint, new_thumbprint, jwk).await?,
            Backend::Postgres(db) => db.change_key(account_id, old_thumbprint, new_thumbprint, &jwk).await?,
        };
        match done {
            Some(true) => Ok(KeyChange::Changed),
            Some(false) => Ok(KeyChange::Stale),
            // Another account took the key between the check and the update.
            None => match self.account_by_thumbprint(new_thumbprint).await? {
                Some(other) => Ok(KeyChange::Conflict(other.id)),
                None => Ok(KeyChange::Stale),
            },
        }
    }

    // ---- external account binding (RFC 8555 §7.3.4) ----

    pub async fn create_eab_key(&self, key: &NewEabKey, now: i64) -> Result<()> {
        let scope = serde_json::to_string(&key.scope).map_err(|e| corrupt("eab_keys", e))?;
        match &self.db {
            Backend::Sqlite(db) => db.create_eab_key(key.clone(), scope, now).await,
            Backend::Postgres(db) => db.create_eab_key(key, &scope, now).await,
        }
    }

    // ---- orders (RFC 8555 §7.4) ----

    /// Creates an order with its authorizations and challenges, in one transaction. `Ok(None)`
    /// when `new.replaces` names a certificate that another live order already replaces
    /// (checked in the insert itself, so two racing renewals cannot both pass).
    pub async fn create_order(
        &self,
        account_id: &str,
        new: &NewOrder,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<OrderRow>> {
        let authzs = new
            .authzs
            .iter()
            .map(|authz| {
                let base = authz.identifier.base();
                Ok(AuthzInsert {
                    id: self.random_id()?,
                    kind: base.kind(),
                    value: base.value().to_owned(),
                    wildcard: authz.identifier.is_wildcard(),
                    challenges: authz
                        .challenges
                        .iter()
                        .map(|kind| Ok((self.random_id()?, kind.as_str(), self.token()?)))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let order = OrderInsert {
            id: self.random_id()?,
            account_id: account_id.to_owned(),
            identifiers: serde_json::to_string(&new.identifiers).map_err(|e| corrupt("orders", e))?,
            not_before: new.not_before,
            not_after: new.not_after,
            profile: new.profile.clone(),
            replaces: new.replaces.clone(),
            user_agent: new.client.user_agent.clone(),
            client_ip: new.client.ip.clone(),
            now,
            expires_at,
            authzs,
        };
        match &self.db {
            Backend::Sqlite(db) => db.create_order(order).await,
            Backend::Postgres(db) => db.create_order(&order).await,
        }
    }

    // ---- issuance ----

    /// Records the certificate and makes the order `valid`, in one transaction. The unique
    /// `certificates.order_id` keeps an order to one certificate, whoever else records one.
    pub async fn issuance_succeeded(&self, order: &OrderRow, cert: &NewCertificate, now: i64) -> Result<String> {
        let cert_id = self.random_id()?;
        let ids = serde_json::to_string(&order.identifiers).map_err(|e| corrupt("orders", e))?;
        match &self.db {
            Backend::Sqlite(db) => {
                db.issuance_succeeded(order.clone(), cert.clone(), cert_id.clone(), ids, now).await?
            }
            Backend::Postgres(db) => db.issuance_succeeded(order, cert, &cert_id, &ids, now).await?,
        }
        Ok(cert_id)
    }

    /// The CA signed something other than the order (a post-sign mismatch): records the
    /// certificate (revocation pending) and makes the order `invalid` with `problem`, in one
    /// transaction, so the serial is known before anyone tries to revoke it. Returns its ID.
    pub async fn issuance_rejected(
        &self,
        order: &OrderRow,
        cert: &NewRejected,
        problem: &serde_json::Value,
        now: i64,
    ) -> Result<String> {
        let id = self.random_id()?;
        let names = serde_json::to_string(&cert.identifiers).map_err(|e| corrupt("rejected_certificates", e))?;
        match &self.db {
            Backend::Sqlite(db) => {
                db.issuance_rejected(id.clone(), order.clone(), cert.clone(), names, problem.to_string(), now).await?
            }
            Backend::Postgres(db) => db.issuance_rejected(&id, order, cert, &names, &problem.to_string(), now).await?,
        }
        Ok(id)
    }

    // ---- renewal state ----

    /// Certificates per renewal state at `now`. Only the certificates whose state moves with
    /// time (neither renewed nor revoked: one per device and name set, not per renewal) are
    /// read, two columns each, through a partial index; renewed and revoked ones are counters
    /// kept by triggers as certificates become so.
    pub async fn renewal_counts(&self, window: WindowPercents, now: i64) -> Result<RenewalCounts> {
        let (live, (renewed, revoked)) = match &self.db {
            Backend::Sqlite(db) => (db.live_lifetimes().await?, db.final_totals().await?),
            Backend::Postgres(db) => (db.live_lifetimes().await?, db.final_totals().await?),
        };
        let mut counts: Vec<(RenewalState, i64)> = RenewalState::ALL.iter().map(|s| (*s, 0)).collect();
        let mut next_expiry: Option<i64> = None;
        for (not_before, not_after) in live {
            let facts = RenewalFacts { not_before, not_after, revoked: false, renewed: false };
            let state = RenewalState::of(&facts, window, now);
            if let Some((_, n)) = counts.iter_mut().find(|(s, _)| *s == state) {
                *n += 1;
            }
            if not_after > now {
                next_expiry = Some(next_expiry.map_or(not_after, |t| t.min(not_after)));
            }
        }
        for (state, n) in [(RenewalState::Renewed, renewed), (RenewalState::Revoked, revoked)] {
            if let Some((_, c)) = counts.iter_mut().find(|(s, _)| *s == state) {
                *c = n;
            }
        }
        Ok(RenewalCounts { counts, next_expiry })
    }

    // ---- the admin dashboard ----

    /// One page of the certificates `filter` matches at `now`, soonest expiry first.
    pub async fn cert_page(
        &self,
        filter: &CertFilter,
        window: WindowPercents,
        now: i64,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<CertListRow>> {
        let built = admin::cert_page(filter, window, now, offset, limit);
        match &self.db {
            Backend::Sqlite(db) => db.cert_list(built).await,
            Backend::Postgres(db) => db.cert_list(built).await,
        }
    }

    /// How many certificates `filter` matches at `now`.
    pub async fn cert_count(&self, filter: &CertFilter, window: WindowPercents, now: i64) -> Result<i64> {
        let built = admin::cert_count(filter, window, now);
        match &self.db {
            Backend::Sqlite(db) => db.count_of(built).await,
            Backend::Postgres(db) => db.count_of(built).await,
        }
    }

    /// The account's certificates for exactly `identifiers`, newest first: one device's renewals.
    pub async fn cert_history(
        &self,
        account_id: &str,
        identifiers: &[Identifier],
        limit: i64,
    ) -> Result<Vec<CertListRow>> {
        let ids = serde_json::to_string(identifiers).map_err(|e| corrupt("certificates", e))?;
        let built = admin::cert_history(account_id, &ids, limit);
        match &self.db {
            Backend::Sqlite(db) => db.cert_list(built).await,
            Backend::Postgres(db) => db.cert_list(built).await,
        }
    }

    /// (notBefore, notAfter) of every certificate neither renewed nor revoked: two columns each,
    /// through a partial index (the dashboard's expiry chart).
    pub async fn live_lifetimes(&self) -> Result<Vec<(i64, i64)>> {
        match &self.db {
            Backend::Sqlite(db) => db.live_lifetimes().await,
            Backend::Postgres(db) => db.live_lifetimes().await,
        }
    }

    /// Up to `limit` audit events `filter` matches, newest first.
    pub async fn audit_page(&self, filter: &AuditFilter, limit: i64) -> Result<Vec<AuditRow>> {
        let built = admin::audit_page(filter, limit);
        match &self.db {
            Backend::Sqlite(db) => db.audit_list(built).await,
            Backend::Postgres(db) => db.audit_list(built).await,
        }
    }

    // ---- limits ----

    /// Which of `identifiers` (compared by their base: a wildcard's domain) the account may not
    /// order or validate.
    pub async fn paused_identifiers(&self, account_id: &str, identifiers: &[Identifier]) -> Result<Vec<Identifier>> {
        let paused = match &self.db {
            Backend::Sqlite(db) => db.paused_names(account_id).await?,
            Backend::Postgres(db) => db.paused_names(account_id).await?,
        };
        if paused.is_empty() {
            return Ok(Vec::new());
        }
        Ok(identifiers
            .iter()
            .filter(|id| {
                let base = id.base();
                paused.iter().any(|(kind, value)| kind == base.kind() && *value == base.value())
            })
            .cloned()
            .collect())
    }

    /// After a failed validation: pauses the name for the account once `limit` validations of it
    /// failed within the hour (counting only failures after the last lift). `true` when this call
    /// paused it.
    pub async fn pause_if_failing(
        &self,
        account_id: &str,
        identifier: &Identifier,
        limit: u32,
        now: i64,
    ) -> Result<bool> {
        if limit == 0 {
            return Ok(false);
        }
        let base = identifier.base();
        match &self.db {
            Backend::Sqlite(db) => db.pause_if_failing(account_id, base.kind(), &base.value(), limit, now).await,
            Backend::Postgres(db) => db.pause_if_failing(account_id, base.kind(), &base.value(), limit, now).await,
        }
    }

    // ---- audit ----

    pub async fn insert_audit(&self, e: &AuditEvent, now: i64) -> Result<()> {
        let ids = serde_json::to_string(&e.identifiers).map_err(|err| corrupt("audit_events", err))?;
        match &self.db {
            Backend::Sqlite(db) => db.insert_audit(e.clone(), ids, now).await,
            Backend::Postgres(db) => db.insert_audit(e, &ids, now).await,
        }
    }

    /// A consistent copy of the whole database in a new file (SQLite `VACUUM INTO`), taken while
    /// the server runs. PostgreSQL is backed up with its own tools.
    pub async fn backup_to(&self, path: &std::path::Path) -> Result<()> {
        match &self.db {
            Backend::Sqlite(db) => db.backup_to(path.to_owned()).await,
            Backend::Postgres(_) => {
                Err(StoreError::Unsupported("the store is on PostgreSQL: back it up with pg_dump, not vacme backup"))
            }
        }
    }

    // ---- upkeep ----

    /// Closes what expired and deletes what is no longer anyone's business: expired nonces,
    /// and orders that never got a certificate and expired more than `retention_secs` ago (with
    /// their authorizations and challenges). Certificates, valid orders and accounts stay.
    pub async fn cleanup(
        &self,
        now: i64,
        retention_secs: i64,
        order_problem: &serde_json::Value,
    ) -> Result<CleanupReport> {
        let problem = order_problem.to_string();
        match &self.db {
            Backend::Sqlite(db) => db.cleanup(now, retention_secs, problem).await,
            Backend::Postgres(db) => db.cleanup(now, retention_secs, &problem).await,
        }
    }
}

forward! {
    /// `true` exactly once per issued, unexpired nonce, on any replica: one DELETE, so of two
    /// replicas redeeming the same nonce at once, one deletes the row and the other finds none.
    fn redeem_nonce(&self, nonce: &str, now: i64) -> bool;
    /// Drops expired nonces; returns how many.
    fn purge_nonces(&self, now: i64) -> u64;
    /// Nonce rows in the store (shared-store nonces).
    fn nonce_count(&self) -> u64;

    fn account(&self, id: &str) -> Option<AccountRow>;
    fn account_by_thumbprint(&self, thumbprint: &str) -> Option<AccountRow>;

    fn eab_key(&self, kid: &str) -> Option<EabKeyRow>;
    /// Every EAB key, newest first.
    fn eab_keys(&self) -> Vec<EabKeyRow>;
    /// Stops an EAB key from binding new accounts. `false` if there is no such key or it was
    /// already revoked. Accounts bound with it are not touched (`accounts deactivate` is for them).
    fn revoke_eab_key(&self, kid: &str, now: i64) -> bool;

    fn order(&self, id: &str) -> Option<OrderRow>;
    /// IDs of an account's orders, oldest first (in the order they were written): at most
    /// `limit` after the order `after` (a page cursor), or from the first.
    fn order_ids_of_account(&self, account_id: &str, after: Option<&str>, limit: i64) -> Vec<String>;

    fn authorization(&self, id: &str) -> Option<AuthzRow>;
    /// The challenge with its authorization.
    fn challenge(&self, id: &str) -> Option<(ChallengeRow, AuthzRow)>;
    /// RFC 8555 §7.5.1: the client says "ready". Moves a pending challenge of a pending, unexpired
    /// authorization to `processing`, due now. `false` when nothing moved.
    fn start_challenge(&self, id: &str, now: i64) -> bool;
    /// Leases up to `limit` due challenges to this worker until `lease_until`, in one statement.
    /// On PostgreSQL the rows another replica is claiming are skipped, not waited for; the outer
    /// guard holds either way.
    fn claim_due_challenges(&self, now: i64, lease_until: i64, limit: i64) -> Claimed<ClaimedChallenge>;
    /// Extends this worker's leases on the challenges `ids` (still `processing` and leased) to
    /// `lease_until`, while their validation runs: a worker that dies stops renewing, and
    /// another takes its challenges once the lease runs out.
    fn renew_challenge_leases(&self, ids: Vec<String>, lease_until: i64) -> ();
    /// The challenge passed: challenge and authorization `valid`; the order `ready` once all its
    /// authorizations are.
    fn challenge_succeeded(&self, id: &str, now: i64) -> ();
    /// The attempt failed but the window is open: keep the error for the client, try again at `next_at`.
    fn challenge_retry(&self, id: &str, problem: &serde_json::Value, next_at: i64) -> ();
    /// The challenge failed for good: challenge, authorization and order become `invalid`
    /// (RFC 8555 §7.1.6); the order's error names the identifier.
    ///
    /// With `pause_after` above 0, the same transaction pauses the name for the account once that
    /// many of its validations failed within the hour (`Store::pause_if_failing`), so a client that
    /// sees the order invalid finds the pause already in force. `true` when this call paused it.
    fn challenge_failed(
        &self,
        id: &str,
        problem: &serde_json::Value,
        order_problem: &serde_json::Value,
        pause_after: u32,
        now: i64
    ) -> bool;
    /// The client gives up an authorization: `pending` or `valid` -> `deactivated`, and an order
    /// still waiting on it becomes `invalid` (RFC 8555 §7.1.6). `false` when nothing moved.
    fn deactivate_authz(&self, id: &str, order_problem: &serde_json::Value, now: i64) -> bool;
    /// Earliest time the validation worker has something to do, if any.
    fn next_challenge_due(&self) -> Option<i64>;

    /// finalize: `ready` -> `processing` with the checked CSR, due now. `false` if the order was
    /// not ready. Of concurrent finalizes (any replica), exactly one moves the order.
    fn begin_issuance(&self, order_id: &str, csr_der: &[u8], now: i64) -> bool;
    /// Leases up to `limit` orders due for signing (one atomic statement, as for challenges).
    fn claim_due_issuances(&self, now: i64, lease_until: i64, limit: i64) -> Claimed<OrderRow>;
    /// As `renew_challenge_leases`, for orders being signed.
    fn renew_issuance_leases(&self, ids: Vec<String>, lease_until: i64) -> ();
    /// Records, before the first signing call, that the order is being sent to the CA (the
    /// earliest time is kept). Durable before the call: after a crash, the worker knows to look
    /// for a certificate that call may have produced.
    fn mark_signing(&self, order_id: &str, now: i64) -> ();
    /// The CA could not be reached: try again at `next_at`.
    fn issuance_retry(&self, order_id: &str, next_at: i64) -> ();
    /// As `issuance_retry`, for a signing call no CA node can have run (refused connections,
    /// sealed or redirecting nodes): the intent `mark_signing` recorded for it is dropped, so
    /// the retry signs without looking for a certificate first.
    fn issuance_unsent(&self, order_id: &str, next_at: i64) -> ();
    /// The CA refused: the order is `invalid` with `problem`.
    fn issuance_failed(&self, order_id: &str, problem: &serde_json::Value, now: i64) -> ();
    /// Earliest time the issuance worker has something to do, if any.
    fn next_issuance_due(&self) -> Option<i64>;

    fn certificate(&self, id: &str) -> Option<CertificateRow>;
    /// Certificates with this serial (lower-case hex; leading zeros do not matter), oldest first.
    fn certificates_by_serial(&self, serial: &str) -> Vec<CertificateRow>;
    /// Records a revocation. `false` if the certificate was already revoked (or does not exist).
    fn revoke_certificate(&self, id: &str, reason: u8, now: i64) -> bool;
    /// The CA has the revocation too.
    fn ca_revoked(&self, id: &str, now: i64) -> ();
    /// A revocation the CA made on its own (seen through renewal info): recorded as
    /// `unspecified`, already known to the CA.
    fn revoked_by_ca(&self, id: &str, revoked_at: i64) -> ();
    /// Revocations the CA has not confirmed yet (it was down when they were made).
    fn pending_ca_revocations(&self, limit: i64) -> Vec<CertificateRow>;
    /// The CA confirmed the revocation of a rejected certificate.
    fn rejected_revoked(&self, id: &str, now: i64) -> ();
    /// Rejected certificates the CA has not confirmed revoked yet, oldest first.
    fn pending_rejected_revocations(&self, limit: i64) -> Vec<RejectedRow>;
    /// Rejected certificates, newest first; only `account_id`'s when given.
    fn rejected_certificates(&self, account_id: Option<&str>) -> Vec<RejectedRow>;
    /// The certificate with this RFC 9773 certID.
    fn certificate_by_ari_id(&self, ari_id: &str) -> Option<CertificateRow>;
    /// Certificates recorded before renewal information existed, to give them a certID.
    fn certificates_without_ari_id(&self) -> Vec<(String, String)>;
    fn set_ari_id(&self, id: &str, ari_id: &str) -> ();
    /// Certificates, newest first; only `account_id`'s when given.
    fn certificates(&self, account_id: Option<&str>) -> Vec<CertificateRow>;
    /// Certificates neither renewed nor revoked (active, due, overdue or expired), soonest
    /// expiry first.
    fn live_certificates(&self) -> Vec<CertificateRow>;
    /// The `limit` certificates neither renewed nor revoked that expire next after `now`.
    fn next_expiries(&self, now: i64, limit: i64) -> Vec<CertificateRow>;
    /// Unexpired certificates neither renewed nor revoked that are past `end_percent` of their
    /// lifetime at `now` and whose operator was not told yet.
    fn newly_overdue(&self, end_percent: i64, now: i64, limit: i64) -> Vec<CertificateRow>;
    /// Unexpired certificates neither renewed nor revoked that expire by `before` and whose
    /// operator was not told yet.
    fn newly_expiring(&self, before: i64, now: i64, limit: i64) -> Vec<CertificateRow>;
    /// Records that the operator was told (`overdue`: else `expiring`); `false` when another
    /// replica already did.
    fn mark_notified(&self, id: &str, overdue: bool, now: i64) -> bool;

    /// Work waiting for the workers: answered challenges, and finalized orders.
    fn queue_depths(&self) -> (i64, i64);
    /// Accounts created from `ip` since `since`.
    fn accounts_created_from(&self, ip: &str, since: i64) -> WindowCount;
    /// Orders the account created since `since`.
    fn orders_created_by(&self, account_id: &str, since: i64) -> WindowCount;
    /// The account's pending, unexpired authorizations, and when the first of them expires.
    fn pending_authorizations(&self, account_id: &str, now: i64) -> WindowCount;
    /// Pauses, newest first: those still in force, or all with `include_lifted`.
    fn pauses(&self, account_id: Option<&str>, include_lifted: bool) -> Vec<PauseRow>;
    /// Lifts the account's pauses (of one name, or all). Returns how many were in force.
    fn unpause(&self, account_id: &str, name: Option<&str>, now: i64) -> u64;

    /// The newest `limit` events (of one account, or all), newest first.
    fn audit_events(&self, account_id: Option<&str>, limit: i64) -> Vec<AuditRow>;
    /// Drops audit events older than `before`; returns how many.
    fn purge_audit(&self, before: i64) -> u64;
    /// The id of the newest audit event (0 when there is none).
    fn last_audit_id(&self) -> i64;
    /// Up to `limit` audit events after `after_id` recorded at or before `until`, oldest first.
    fn audit_after(&self, after_id: i64, until: i64, limit: i64) -> Vec<AuditRow>;
    /// Leases a webhook's place in the audit trail until `lease_until`, unless another replica
    /// holds it at `now` (`None`). A webhook seen for the first time starts at `start_id`.
    /// Returns the id of the last event it was given.
    fn claim_webhook(&self, name: &str, start_id: i64, now: i64, lease_until: i64) -> Option<i64>;
    /// The webhook was given every event up to `last_id` (`dropped` of them past its backlog
    /// limit); it stays leased until `lease_until` (0 releases it).
    fn advance_webhook(&self, name: &str, last_id: i64, dropped: i64, lease_until: i64) -> ();
    /// The certificates `certificate_id` renewed (their `renewed_by`).
    fn renewed_by(&self, certificate_id: &str) -> Vec<String>;
    /// Each webhook's place: (name, last id given, events dropped).
    fn webhook_cursors(&self) -> Vec<(String, i64, i64)>;

    /// Every account with its counts, oldest first.
    fn account_summaries(&self) -> Vec<AccountSummary>;
    /// Row counts of every table that holds client-visible state (counted: for tests and the
    /// admin CLI, not for a scrape).
    fn counts(&self) -> Counts;
    /// Accounts and certificates ever recorded, kept as counters (neither is ever deleted):
    /// what `/metrics` shows, without counting rows.
    fn totals(&self) -> (i64, i64);
    /// A cheap round trip, for readiness.
    fn ping(&self) -> ();
}

fn corrupt(table: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table, what: e.to_string() }
}

/// Parses a status column.
fn status<T>(table: &'static str, s: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(s).ok_or_else(|| StoreError::Corrupt { table, what: format!("unknown status {s:?}") })
}

impl AuditEvent {
    /// Logs the event and keeps it in the store.
    pub async fn record(self, store: &Store, now: i64) {
        let names: Vec<String> = self.identifiers.iter().map(Identifier::value).collect();
        tracing::info!(target: "vacme::audit", event = %self.event, actor = %self.actor,
            account_id = self.account_id.as_deref().unwrap_or("-"), order_id = self.order_id.as_deref().unwrap_or("-"),
            serial = self.serial.as_deref().unwrap_or("-"), identifiers = ?names,
            client_ip = self.client_ip.as_deref().unwrap_or("-"), detail = %self.detail, "audit");
        if let Err(e) = store.insert_audit(&self, now).await {
            tracing::error!(error = %e, event = %self.event, "cannot record an audit event");
        }
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod testdb;
#[cfg(test)]
mod tests;
