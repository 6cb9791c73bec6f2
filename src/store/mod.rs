//! The only place with SQL. Every state change is one transaction; transitions are guarded
//! updates (`WHERE status = ...`) checked by `rows_affected`, so several workers (or replicas)
//! never move the same object twice.
//!
//! Two backends: SQLite (one process; one writer at a time) and PostgreSQL (several replicas
//! share it). Each method is written once and compiled for both by `on!`; where the SQL differs,
//! the two texts stand side by side. On a SQLite file, the hot reads and writes of the issuance
//! path skip sqlx and run on vacme's own threads (lite.rs), with the same SQL. On PostgreSQL, statements run under READ
//! COMMITTED at the same time as other replicas', so the few transactions that read before they
//! write take a row or advisory lock first (each says why).

/// Runs `$body` with `$db` bound to this store's pool: on SQLite the read pool (`read`) or the
/// writer connection (`write`, holding the writers' gate), on PostgreSQL its one pool. With
/// `|$db, $pg|`, `$pg` is `true` on PostgreSQL, for the statements whose SQL differs. The body is compiled once per backend, so
/// both run the same Rust without a dynamic database layer.
macro_rules! on {
    ($store:expr, read, |$db:ident| $body:expr) => {
        on!($store, read, |$db, _pg| $body)
    };
    ($store:expr, write, |$db:ident| $body:expr) => {
        on!($store, write, |$db, _pg| $body)
    };
    ($store:expr, read, |$db:ident, $pg:ident| $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite { read, .. } => {
                let $db = read;
                let $pg = false;
                $body
            }
            $crate::store::Db::Postgres(pool) => {
                let $db = pool;
                let $pg = true;
                $body
            }
        }
    };
    ($store:expr, write, |$db:ident, $pg:ident| $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite { write, gate, .. } => {
                // One SQLite writer at a time: this connection or the writer thread (lite.rs).
                let _gate = gate.lock().await;
                let $db = write;
                let $pg = false;
                $body
            }
            $crate::store::Db::Postgres(pool) => {
                let $db = pool;
                let $pg = true;
                $body
            }
        }
    };
}

mod audit;
mod copy;
mod lifecycle;
mod limits;
mod lite;
mod rows;

use std::{str::FromStr, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::{
    PgConnection, PgPool, SqliteConnection, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use audit::AuditRow;
pub use copy::CopyReport;
pub use lifecycle::{AccountSummary, CleanupReport, EabKeyRow, KeyChange, NewEabKey, NewRejected, RejectedRow};
pub use limits::{HOUR, PauseRow, WindowCount};
pub use rows::{AccountRow, AuthzRow, CertificateRow, ChallengeRow, ClaimedChallenge, OrderRow};

use crate::acme::{Identifier, Problem, types::ChallengeType};

/// What went wrong in the store. Clients only ever see `serverInternal`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Lite(#[from] rusqlite::Error),
    /// A SQLite transaction that vacme drives itself (lite.rs) could not begin or commit, or its
    /// writer thread is gone.
    #[error("database error: {0}")]
    Sqlite(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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

/// The protocol state, in SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    rng: SystemRandom,
}

/// The pools of one backend.
#[derive(Clone, Debug)]
enum Db {
    Sqlite {
        /// Reads, from several connections at once.
        read: SqlitePool,
        /// Every write, on one connection: SQLite has one writer at a time, and writers queued
        /// here wait in the pool instead of sleeping in SQLite's busy handler.
        write: SqlitePool,
        /// The hot reads, on the calling thread, and the hot writes, on the writer thread
        /// (lite.rs); `None` for an in-memory database, which other connections cannot open.
        lite: Option<Arc<lite::Readers>>,
        writer: Option<Arc<lite::Writer>>,
        /// Held by whichever writes: `write` or `writer`.
        gate: lite::Gate,
    },
    /// Reads and writes: PostgreSQL takes concurrent writers (from every replica).
    Postgres(PgPool),
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections of one replica to PostgreSQL: request handlers and the workers share them.
const POSTGRES_CONNECTIONS: u32 = 16;

/// `true` for the URLs `Store::connect` opens with PostgreSQL.
fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
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
        if is_postgres_url(url) {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new().max_connections(POSTGRES_CONNECTIONS).connect_with(opts).await?;
            // Replicas starting together: the migrator holds an advisory lock while it runs.
            POSTGRES_MIGRATOR.run(&pool).await?;
            return Ok(Self { db: Db::Postgres(pool), rng: SystemRandom::new() });
        }
        let sync = if durable { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // No ping before each use: a SQLite connection is a file handle in this process, not a
        // socket that can go stale, and the ping is a round trip to its thread per statement.
        let write =
            SqlitePoolOptions::new().max_connections(1).test_before_acquire(false).connect_with(opts.clone()).await?;
        SQLITE_MIGRATOR.run(&write).await?;
        let gate = lite::Gate::default();
        let lite = Some(Arc::new(lite::Readers::open(opts.get_filename().to_owned())?));
        let writer = Some(Arc::new(lite::Writer::start(opts.get_filename().to_owned(), durable, gate.clone())?));
        let read = SqlitePoolOptions::new().max_connections(8).test_before_acquire(false).connect_with(opts).await?;
        Ok(Self { db: Db::Sqlite { read, write, lite, writer, gate }, rng: SystemRandom::new() })
    }

    /// A private in-memory database, for tests.
    pub async fn memory() -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: every connection to :memory: is a different database.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        SQLITE_MIGRATOR.run(&pool).await?;
        let db = Db::Sqlite { write: pool.clone(), read: pool, lite: None, writer: None, gate: lite::Gate::default() };
        Ok(Self { db, rng: SystemRandom::new() })
    }

    /// The readers on the calling thread, when this is a SQLite file.
    fn lite(&self) -> Option<&lite::Readers> {
        match &self.db {
            Db::Sqlite { lite, .. } => lite.as_deref(),
            Db::Postgres(_) => None,
        }
    }

    /// The writer thread, when this is a SQLite file.
    fn writer(&self) -> Option<&lite::Writer> {
        match &self.db {
            Db::Sqlite { writer, .. } => writer.as_deref(),
            Db::Postgres(_) => None,
        }
    }

    /// `true` on PostgreSQL (a store replicas may share).
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
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

    // ---- nonces (RFC 8555 §6.5) ----

    /// Issues a nonce that `redeem_nonce` accepts once until `expires_at`.
    pub async fn new_nonce(&self, expires_at: i64) -> Result<String> {
        let nonce = self.random_id()?;
        on!(self, write, |db| {
            sqlx::query("INSERT INTO nonces (value, expires_at) VALUES ($1, $2)")
                .bind(&nonce)
                .bind(expires_at)
                .execute(db)
                .await?
                .rows_affected()
        });
        Ok(nonce)
    }

    /// `true` exactly once per issued, unexpired nonce, on any replica: one DELETE, so of two
    /// replicas redeeming the same nonce at once, one deletes the row and the other finds none.
    pub async fn redeem_nonce(&self, nonce: &str, now: i64) -> Result<bool> {
        let done = on!(self, write, |db| {
            sqlx::query("DELETE FROM nonces WHERE value = $1 AND expires_at > $2")
                .bind(nonce)
                .bind(now)
                .execute(db)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Drops expired nonces; returns how many.
    pub async fn purge_nonces(&self, now: i64) -> Result<u64> {
        let done = on!(self, write, |db| {
            sqlx::query("DELETE FROM nonces WHERE expires_at <= $1").bind(now).execute(db).await?.rows_affected()
        });
        Ok(done)
    }

    // ---- accounts (RFC 8555 §7.3) ----

    pub async fn account(&self, id: &str) -> Result<Option<AccountRow>> {
        if let Some(lite) = self.lite() {
            return lite
                .optional(ACCOUNT_BY_ID, &[&id], rows::RawAccount::from_lite)?
                .map(AccountRow::try_from)
                .transpose();
        }
        let row = on!(self, read, |db| {
            sqlx::query_as::<_, rows::RawAccount>(ACCOUNT_BY_ID).bind(id).fetch_optional(db).await?
        });
        row.map(AccountRow::try_from).transpose()
    }

    pub async fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<AccountRow>> {
        if let Some(lite) = self.lite() {
            return lite
                .optional(ACCOUNT_BY_THUMBPRINT, &[&thumbprint], rows::RawAccount::from_lite)?
                .map(AccountRow::try_from)
                .transpose();
        }
        let row = on!(self, read, |db| {
            sqlx::query_as::<_, rows::RawAccount>(ACCOUNT_BY_THUMBPRINT).bind(thumbprint).fetch_optional(db).await?
        });
        row.map(AccountRow::try_from).transpose()
    }

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
        let id = self.random_id()?;
        let contact_json = serde_json::to_string(contact).unwrap_or_else(|_| "[]".into());
        let inserted = on!(self, write, |db| {
            let mut tx = db.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO accounts (id, key_thumbprint, jwk, status, contact, tos_agreed, eab_kid, created_ip, created_at)
                 VALUES ($1, $2, $3, 'valid', $4, $5, $6, $7, $8) ON CONFLICT (key_thumbprint) DO NOTHING",
            )
            .bind(&id)
            .bind(thumbprint)
            .bind(jwk.to_string())
            .bind(contact_json)
            .bind(tos_agreed)
            .bind(eab_kid)
            .bind(ip)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1
                && let Some(kid) = eab_kid
            {
                let bound = sqlx::query(
                    "UPDATE eab_keys SET used_at = $2, account_id = $3
                     WHERE kid = $1 AND used_at IS NULL AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
                )
                .bind(kid)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                if bound.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(NewAccountOutcome::EabUnusable);
                }
            }
            tx.commit().await?;
            inserted.rows_affected()
        });
        let account = self
            .account_by_thumbprint(thumbprint)
            .await?
            .ok_or(StoreError::Corrupt { table: "accounts", what: "account vanished right after insert".into() })?;
        Ok(if inserted == 1 { NewAccountOutcome::Created(account) } else { NewAccountOutcome::Exists(account) })
    }

    pub async fn update_contact(&self, id: &str, contact: &[String]) -> Result<()> {
        let contact_json = serde_json::to_string(contact).unwrap_or_else(|_| "[]".into());
        on!(self, write, |db| {
            sqlx::query("UPDATE accounts SET contact = $1 WHERE id = $2 AND status = 'valid'")
                .bind(contact_json)
                .bind(id)
                .execute(db)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// RFC 8555 §7.3.6: deactivation is final; the account's live pending authorizations go with
    /// it, and so its pending orders become `invalid` (§7.1.6). A ready order stays ready (its
    /// authorizations are valid) but can never be finalized: the account can sign nothing. Expired
    /// objects stay expired.
    pub async fn deactivate_account(&self, id: &str, now: i64) -> Result<()> {
        let problem = serde_json::to_string(&Problem::unauthorized("the account was deactivated"))
            .map_err(|e| corrupt("orders", e))?;
        on!(self, write, |db| {
            let mut tx = db.begin().await?;
            sqlx::query("UPDATE accounts SET status = 'deactivated' WHERE id = $1 AND status = 'valid'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE orders SET status = 'invalid', error = $2, updated_at = $3
                 WHERE account_id = $1 AND status = 'pending' AND expires_at > $3",
            )
            .bind(id)
            .bind(&problem)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE authorizations SET status = 'deactivated'
                 WHERE account_id = $1 AND status = 'pending' AND expires_at > $2",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
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
        let order_id = self.random_id()?;
        let ids_json = serde_json::to_string(&new.identifiers).map_err(|e| corrupt("orders", e))?;
        if let Some(writer) = self.writer() {
            let authzs = new
                .authzs
                .iter()
                .map(|authz| {
                    let challs = authz
                        .challenges
                        .iter()
                        .map(|kind| Ok((self.random_id()?, kind.as_str(), self.token()?)))
                        .collect::<Result<Vec<_>>>()?;
                    let base = authz.identifier.base();
                    Ok((
                        self.random_id()?,
                        base.kind(),
                        base.value().to_owned(),
                        authz.identifier.is_wildcard(),
                        challs,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let (account_id, new) = (account_id.to_owned(), new.clone());
            return writer
                .run(move |c| {
                    let inserted = lite::execute(
                        c,
                        INSERT_ORDER,
                        &[
                            &order_id,
                            &account_id,
                            &expires_at,
                            &ids_json,
                            &new.not_before,
                            &new.not_after,
                            &new.profile,
                            &new.replaces,
                            &now,
                        ],
                    )?;
                    if inserted != 1 {
                        return Ok(None);
                    }
                    for (position, (authz_id, kind, value, wildcard, challs)) in authzs.iter().enumerate() {
                        let position = position as i64;
                        lite::execute(
                            c,
                            INSERT_AUTHZ,
                            &[authz_id, &order_id, &account_id, kind, value, wildcard, &expires_at, &position],
                        )?;
                        let mut args: Vec<&dyn rusqlite::ToSql> = vec![authz_id];
                        for (id, kind, token) in challs {
                            args.extend([id as &dyn rusqlite::ToSql, kind, token]);
                        }
                        if !challs.is_empty() {
                            lite::execute(c, &insert_challenges(challs.len()), &args)?;
                        }
                    }
                    let order = lite::query(c, SQLITE_ORDER_BY_ID, &[&order_id], rows::RawOrder::from_lite)?
                        .into_iter()
                        .next()
                        .ok_or(StoreError::Corrupt {
                            table: "orders",
                            what: "order vanished right after insert".into(),
                        })?;
                    OrderRow::from_raw(order).map(Some)
                })
                .await;
        }
        on!(self, write, |db, pg| {
            let mut tx = db.begin().await?;
            if pg && let Some(replaces) = &new.replaces {
                // Under READ COMMITTED, two renewals inserting at once would not see each other's
                // row in the NOT EXISTS below: the second waits here until the first commits, and
                // its insert then sees the first order.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('vacme.replaces:' || $1, 0))")
                    .bind(replaces)
                    .execute(&mut *tx)
                    .await?;
            }
            let inserted = sqlx::query(INSERT_ORDER)
                .bind(&order_id)
                .bind(account_id)
                .bind(expires_at)
                .bind(&ids_json)
                .bind(new.not_before)
                .bind(new.not_after)
                .bind(&new.profile)
                .bind(&new.replaces)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if inserted.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(None);
            }
            for (position, authz) in new.authzs.iter().enumerate() {
                let authz_id = self.random_id()?;
                let base = authz.identifier.base();
                sqlx::query(INSERT_AUTHZ)
                    .bind(&authz_id)
                    .bind(&order_id)
                    .bind(account_id)
                    .bind(base.kind())
                    .bind(base.value())
                    .bind(authz.identifier.is_wildcard())
                    .bind(expires_at)
                    .bind(position as i64)
                    .execute(&mut *tx)
                    .await?;
                let sql = insert_challenges(authz.challenges.len());
                let mut insert = sqlx::query(&sql).bind(&authz_id);
                for kind in &authz.challenges {
                    insert = insert.bind(self.random_id()?).bind(kind.as_str()).bind(self.token()?);
                }
                if !authz.challenges.is_empty() {
                    insert.execute(&mut *tx).await?;
                }
            }
            let order = tx
                .load_order(&order_id)
                .await?
                .ok_or(StoreError::Corrupt { table: "orders", what: "order vanished right after insert".into() })?;
            tx.commit().await?;
            Ok(Some(order))
        })
    }

    pub async fn order(&self, id: &str) -> Result<Option<OrderRow>> {
        if let Some(lite) = self.lite() {
            return lite
                .optional(SQLITE_ORDER_BY_ID, &[&id], rows::RawOrder::from_lite)?
                .map(OrderRow::from_raw)
                .transpose();
        }
        on!(self, read, |db| db.acquire().await?.load_order(id).await)
    }

    /// IDs of an account's orders, oldest first (in the order they were written): at most
    /// `limit` after the order `after` (a page cursor), or from the first.
    pub async fn order_ids_of_account(&self, account_id: &str, after: Option<&str>, limit: i64) -> Result<Vec<String>> {
        // The insertion order: SQLite's rowid, PostgreSQL's `seq` column.
        Ok(on!(self, read, |db, pg| {
            sqlx::query_scalar::<_, String>(if pg {
                "SELECT id FROM orders WHERE account_id = $1
                   AND ($2 IS NULL OR (created_at, seq) >
                                      (SELECT created_at, seq FROM orders WHERE id = $2 AND account_id = $1))
                 ORDER BY created_at, seq LIMIT $3"
            } else {
                "SELECT id FROM orders WHERE account_id = $1
                   AND ($2 IS NULL OR (created_at, rowid) >
                                      (SELECT created_at, rowid FROM orders WHERE id = $2 AND account_id = $1))
                 ORDER BY created_at, rowid LIMIT $3"
            })
            .bind(account_id)
            .bind(after)
            .bind(limit)
            .fetch_all(db)
            .await?
        }))
    }

    // ---- authorizations and challenges (RFC 8555 §7.5) ----

    pub async fn authorization(&self, id: &str) -> Result<Option<AuthzRow>> {
        if let Some(lite) = self.lite() {
            return lite.authz(AUTHZ_BY_ID, id)?.map(|(a, c)| AuthzRow::from_raw(a, c)).transpose();
        }
        on!(self, read, |db| db.acquire().await?.load_authz(id).await)
    }

    /// The challenge with its authorization.
    pub async fn challenge(&self, id: &str) -> Result<Option<(ChallengeRow, AuthzRow)>> {
        if let Some(lite) = self.lite() {
            let Some((authz, challs)) = lite.authz(AUTHZ_OF_CHALLENGE, id)? else {
                return Ok(None);
            };
            let authz = AuthzRow::from_raw(authz, challs)?;
            let chall = authz.challenges.iter().find(|c| c.id == id).cloned();
            return Ok(chall.map(|c| (c, authz)));
        }
        on!(self, read, |db| {
            let mut conn = db.acquire().await?;
            let authz_id = sqlx::query_scalar::<_, String>("SELECT authz_id FROM challenges WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(authz_id) = authz_id else {
                return Ok(None);
            };
            let Some(authz) = conn.load_authz(&authz_id).await? else {
                return Ok(None);
            };
            let chall = authz.challenges.iter().find(|c| c.id == id).cloned();
            Ok(chall.map(|c| (c, authz)))
        })
    }

    /// RFC 8555 §7.5.1: the client says "ready". Moves a pending challenge of a pending, unexpired
    /// authorization to `processing`, due now. `false` when nothing moved.
    pub async fn start_challenge(&self, id: &str, now: i64) -> Result<bool> {
        const START: &str =
            "UPDATE challenges SET status = 'processing', started_at = $2, next_attempt_at = $2, attempts = 0
             WHERE id = $1 AND status = 'pending'
               AND authz_id IN (SELECT id FROM authorizations WHERE status = 'pending' AND expires_at > $2)
               AND NOT EXISTS (SELECT 1 FROM challenges o WHERE o.authz_id = challenges.authz_id
                               AND o.id <> challenges.id AND o.status <> 'pending')";
        if let Some(writer) = self.writer() {
            let id = id.to_owned();
            return writer.run(move |c| Ok(lite::execute(c, START, &[&id, &now])? == 1)).await;
        }
        let done = on!(self, write, |db, pg| {
            if !pg {
                // One writer: the statement alone is atomic.
                sqlx::query(START).bind(id).bind(now).execute(db).await?.rows_affected()
            } else {
                let mut tx = db.begin().await?;
                // Two challenges of one authorization answered at once (two replicas) would each
                // see the other still pending: lock the authorization, so the second sees the first.
                sqlx::query("SELECT 1 FROM authorizations WHERE id = (SELECT authz_id FROM challenges WHERE id = $1) FOR UPDATE")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query(START).bind(id).bind(now).execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                done
            }
        });
        Ok(done == 1)
    }

    /// Leases up to `limit` due challenges to this worker until `lease_until`. One statement, so
    /// the claim is atomic without a read-then-write transaction (which SQLite cannot upgrade
    /// under contention). On PostgreSQL the rows another replica is claiming are skipped, not
    /// waited for; the outer guard holds either way.
    pub async fn claim_due_challenges(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<ClaimedChallenge>> {
        let ids = self.claim_due_ids("challenges", now, lease_until, limit).await?;
        const CLAIMED: &str =
            "SELECT c.id, c.type, c.token, c.started_at, c.attempts, a.identifier_type, a.identifier_value,
                                      a.wildcard, a.order_id, acc.id AS account_id, acc.key_thumbprint
                               FROM challenges c
                               JOIN authorizations a ON a.id = c.authz_id
                               JOIN accounts acc ON acc.id = a.account_id
                               WHERE c.id = $1";
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let raw = match self.lite() {
                Some(lite) => {
                    lite.optional(CLAIMED, &[&id], rows::RawClaim::from_lite)?.ok_or(sqlx::Error::RowNotFound)?
                }
                None => {
                    on!(self, read, |db| sqlx::query_as::<_, rows::RawClaim>(CLAIMED).bind(&id).fetch_one(db).await?)
                }
            };
            claimed.push(ClaimedChallenge::try_from(raw)?);
        }
        Ok(claimed)
    }

    /// The challenge passed: challenge and authorization `valid`; the order `ready` once all its
    /// authorizations are.
    pub async fn challenge_succeeded(&self, id: &str, now: i64) -> Result<()> {
        // Only while the authorization lives: a result that comes after its expiry changes nothing.
        const VALID: &str =
            "UPDATE challenges SET status = 'valid', validated_at = $2, error = NULL, claimed_until = NULL
             WHERE id = $1 AND status = 'processing'
               AND EXISTS (SELECT 1 FROM authorizations a WHERE a.id = challenges.authz_id AND a.expires_at > $2)";
        const TOO_LATE: &str =
            "UPDATE challenges SET status = 'invalid', claimed_until = NULL WHERE id = $1 AND status = 'processing'";
        const AUTHZ_VALID: &str = "UPDATE authorizations SET status = 'valid' WHERE id = $1 AND status = 'pending'";
        const ORDER_READY: &str = "UPDATE orders SET status = 'ready', updated_at = $2
             WHERE id = $1 AND status = 'pending'
               AND NOT EXISTS (SELECT 1 FROM authorizations WHERE order_id = $1 AND status <> 'valid')";
        if let Some(writer) = self.writer() {
            let id = id.to_owned();
            return writer
                .run(move |c| {
                    if lite::execute(c, VALID, &[&id, &now])? == 0 {
                        lite::execute(c, TOO_LATE, &[&id])?;
                        return Ok(());
                    }
                    let (authz_id, order_id): (String, String) =
                        lite::query(c, AUTHZ_AND_ORDER_OF, &[&id], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .into_iter()
                            .next()
                            .ok_or(StoreError::Corrupt {
                                table: "challenges",
                                what: format!("challenge {id} has no authorization"),
                            })?;
                    lite::execute(c, AUTHZ_VALID, &[&authz_id])?;
                    lite::execute(c, ORDER_READY, &[&order_id, &now])?;
                    Ok(())
                })
                .await;
        }
        on!(self, write, |db, pg| {
            let mut tx = db.begin().await?;
            let done = sqlx::query(VALID).bind(id).bind(now).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                sqlx::query(TOO_LATE).bind(id).execute(&mut *tx).await?;
            }
            if done.rows_affected() == 1 {
                let (authz_id, order_id) = tx.authz_and_order_of(id).await?;
                if pg {
                    // Two authorizations of the order passing at once (two replicas) would each
                    // see the other still pending, and the order would never become ready: the
                    // order's lock makes the second see the first.
                    sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE")
                        .bind(&order_id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(AUTHZ_VALID).bind(&authz_id).execute(&mut *tx).await?;
                sqlx::query(ORDER_READY).bind(&order_id).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The attempt failed but the window is open: keep the error for the client, try again at `next_at`.
    pub async fn challenge_retry(&self, id: &str, problem: &serde_json::Value, next_at: i64) -> Result<()> {
        on!(self, write, |db| {
            sqlx::query(
                "UPDATE challenges SET error = $2, attempts = attempts + 1, next_attempt_at = $3, claimed_until = NULL
                 WHERE id = $1 AND status = 'processing'",
            )
            .bind(id)
            .bind(problem.to_string())
            .bind(next_at)
            .execute(db)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The challenge failed for good: challenge, authorization and order become `invalid`
    /// (RFC 8555 §7.1.6); the order's error names the identifier.
    ///
    /// With `pause_after` above 0, the same transaction pauses the name for the account once that
    /// many of its validations failed within the hour (`Store::pause_if_failing`), so a client that
    /// sees the order invalid finds the pause already in force. `true` when this call paused it.
    pub async fn challenge_failed(
        &self,
        id: &str,
        problem: &serde_json::Value,
        order_problem: &serde_json::Value,
        pause_after: u32,
        now: i64,
    ) -> Result<bool> {
        on!(self, write, |db| {
            let mut tx = db.begin().await?;
            let mut paused = false;
            let done = sqlx::query(
                "UPDATE challenges SET status = 'invalid', error = $2, attempts = attempts + 1, claimed_until = NULL,
                                       failed_at = $3
                 WHERE id = $1 AND status = 'processing'",
            )
            .bind(id)
            .bind(problem.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                let (authz_id, order_id) = tx.authz_and_order_of(id).await?;
                // An expired authorization (and order) stays expired.
                sqlx::query(
                    "UPDATE authorizations SET status = 'invalid' WHERE id = $1 AND status = 'pending' AND expires_at > $2",
                )
                .bind(&authz_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE orders SET status = 'invalid', error = $2, updated_at = $3
                     WHERE id = $1 AND status IN ('pending', 'ready') AND expires_at > $3",
                )
                .bind(&order_id)
                .bind(order_problem.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if pause_after > 0 {
                    let (account_id, kind, value) = sqlx::query_as::<_, (String, String, String)>(
                        "SELECT account_id, identifier_type, identifier_value FROM authorizations WHERE id = $1",
                    )
                    .bind(&authz_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    paused = tx.pause_if_failing(&account_id, &kind, &value, pause_after, now).await?;
                }
            }
            tx.commit().await?;
            Ok(paused)
        })
    }

    // ---- issuance ----

    /// finalize: `ready` -> `processing` with the checked CSR, due now. `false` if the order was
    /// not ready. Of concurrent finalizes (any replica), exactly one moves the order.
    pub async fn begin_issuance(&self, order_id: &str, csr_der: &[u8], now: i64) -> Result<bool> {
        const BEGIN: &str =
            "UPDATE orders SET status = 'processing', csr = $2, attempts = 0, next_attempt_at = $3, updated_at = $3
             WHERE id = $1 AND status = 'ready' AND expires_at > $3";
        if let Some(writer) = self.writer() {
            let (order_id, csr_der) = (order_id.to_owned(), csr_der.to_vec());
            return writer.run(move |c| Ok(lite::execute(c, BEGIN, &[&order_id, &csr_der, &now])? == 1)).await;
        }
        let done = on!(self, write, |db| {
            sqlx::query(BEGIN).bind(order_id).bind(csr_der).bind(now).execute(db).await?.rows_affected()
        });
        Ok(done == 1)
    }

    /// Leases up to `limit` rows of `table` (`challenges` or `orders`) that are `processing` and
    /// due, in one statement; returns their IDs. On PostgreSQL the rows another replica is
    /// claiming are skipped, not waited for; the outer guard holds either way.
    async fn claim_due_ids(&self, table: &'static str, now: i64, lease_until: i64, limit: i64) -> Result<Vec<String>> {
        // The due rows are chosen once, in a materialized CTE: PostgreSQL may run an
        // `IN (SELECT ... LIMIT)` subquery again for each row it updates, and so lease every due
        // row, not `limit` of them.
        let sql = format!(
            "WITH due AS MATERIALIZED (
                 SELECT id FROM {table}
                 WHERE status = 'processing' AND next_attempt_at <= $1
                   AND (claimed_until IS NULL OR claimed_until < $1)
                 ORDER BY next_attempt_at LIMIT $3{skip_locked})
             UPDATE {table} SET claimed_until = $2
             WHERE id IN (SELECT id FROM due)
               AND status = 'processing' AND (claimed_until IS NULL OR claimed_until < $1)
             RETURNING id",
            skip_locked = if self.is_postgres() { " FOR UPDATE SKIP LOCKED" } else { "" },
        );
        if let Some(writer) = self.writer() {
            return writer.run(move |c| lite::query(c, &sql, &[&now, &lease_until, &limit], |r| r.get(0))).await;
        }
        Ok(on!(self, write, |db| {
            sqlx::query_scalar::<_, String>(&sql).bind(now).bind(lease_until).bind(limit).fetch_all(db).await?
        }))
    }

    /// Leases up to `limit` orders due for signing (one atomic statement, as for challenges).
    pub async fn claim_due_issuances(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<OrderRow>> {
        let ids = self.claim_due_ids("orders", now, lease_until, limit).await?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(order) = self.order(&id).await? {
                claimed.push(order);
            }
        }
        Ok(claimed)
    }

    /// Records the certificate and makes the order `valid`, in one transaction. The unique
    /// `certificates.order_id` keeps an order to one certificate, whoever else records one.
    pub async fn issuance_succeeded(&self, order: &OrderRow, cert: &NewCertificate, now: i64) -> Result<String> {
        const INSERT: &str =
            "INSERT INTO certificates (id, order_id, account_id, serial, issuer, identifiers, chain_pem,
                                       not_before, not_after, created_at, profile, ari_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
        const VALID: &str =
            "UPDATE orders SET status = 'valid', certificate_id = $2, claimed_until = NULL, updated_at = $3
             WHERE id = $1 AND status = 'processing'";
        let cert_id = self.random_id()?;
        let ids_json = serde_json::to_string(&order.identifiers).map_err(|e| corrupt("orders", e))?;
        let left =
            |order_id: &str| StoreError::Corrupt { table: "orders", what: format!("order {order_id} left processing") };
        if let Some(writer) = self.writer() {
            let (order, cert, cert_id) = (order.clone(), cert.clone(), cert_id.clone());
            return writer
                .run(move |c| {
                    lite::execute(
                        c,
                        INSERT,
                        &[
                            &cert_id,
                            &order.id,
                            &order.account_id,
                            &cert.serial,
                            &cert.issuer,
                            &ids_json,
                            &cert.chain_pem,
                            &cert.not_before,
                            &cert.not_after,
                            &now,
                            &order.profile,
                            &cert.ari_id,
                        ],
                    )?;
                    if lite::execute(c, VALID, &[&order.id, &cert_id, &now])? != 1 {
                        return Err(left(&order.id));
                    }
                    Ok(cert_id)
                })
                .await;
        }
        on!(self, write, |db| {
            let mut tx = db.begin().await?;
            sqlx::query(INSERT)
                .bind(&cert_id)
                .bind(&order.id)
                .bind(&order.account_id)
                .bind(&cert.serial)
                .bind(&cert.issuer)
                .bind(ids_json)
                .bind(&cert.chain_pem)
                .bind(cert.not_before)
                .bind(cert.not_after)
                .bind(now)
                .bind(&order.profile)
                .bind(&cert.ari_id)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query(VALID).bind(&order.id).bind(&cert_id).bind(now).execute(&mut *tx).await?;
            if done.rows_affected() != 1 {
                return Err(left(&order.id));
            }
            tx.commit().await?;
        });
        Ok(cert_id)
    }

    /// The CA could not be reached: try again at `next_at`.
    /// Records, before the first signing call, that the order is being sent to the CA (the
    /// earliest time is kept). Durable before the call: after a crash, the worker knows to look
    /// for a certificate that call may have produced.
    pub async fn mark_signing(&self, order_id: &str, now: i64) -> Result<()> {
        const MARK: &str =
            "UPDATE orders SET sign_started_at = COALESCE(sign_started_at, $2) WHERE id = $1 AND status = 'processing'";
        if let Some(writer) = self.writer() {
            let order_id = order_id.to_owned();
            return writer.run(move |c| lite::execute(c, MARK, &[&order_id, &now]).map(drop)).await;
        }
        on!(self, write, |db| sqlx::query(MARK).bind(order_id).bind(now).execute(db).await?.rows_affected());
        Ok(())
    }

    pub async fn issuance_retry(&self, order_id: &str, next_at: i64) -> Result<()> {
        on!(self, write, |db| {
            sqlx::query(
                "UPDATE orders SET attempts = attempts + 1, next_attempt_at = $2, claimed_until = NULL
                 WHERE id = $1 AND status = 'processing'",
            )
            .bind(order_id)
            .bind(next_at)
            .execute(db)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The CA refused: the order is `invalid` with `problem`.
    pub async fn issuance_failed(&self, order_id: &str, problem: &serde_json::Value, now: i64) -> Result<()> {
        on!(self, write, |db| {
            sqlx::query(
                "UPDATE orders SET status = 'invalid', error = $2, claimed_until = NULL, updated_at = $3
                 WHERE id = $1 AND status = 'processing'",
            )
            .bind(order_id)
            .bind(problem.to_string())
            .bind(now)
            .execute(db)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Earliest time the validation worker has something to do, if any.
    pub async fn next_challenge_due(&self) -> Result<Option<i64>> {
        self.next_due("challenges").await
    }

    /// Earliest time the issuance worker has something to do, if any.
    pub async fn next_issuance_due(&self) -> Result<Option<i64>> {
        self.next_due("orders").await
    }

    /// Earliest time a `processing` row of `table` (`challenges` or `orders`) is due and not
    /// leased.
    async fn next_due(&self, table: &'static str) -> Result<Option<i64>> {
        // The later of two values: SQLite's two-argument max(), PostgreSQL's GREATEST().
        let later = if self.is_postgres() { "GREATEST" } else { "MAX" };
        let sql = format!(
            "SELECT MIN({later}(next_attempt_at, COALESCE(claimed_until + 1, 0))) FROM {table} WHERE status = 'processing'"
        );
        if let Some(lite) = self.lite() {
            return Ok(lite.optional(&sql, &[], |r| r.get(0))?.flatten());
        }
        Ok(on!(self, read, |db| sqlx::query_scalar::<_, Option<i64>>(&sql).fetch_one(db).await?))
    }

    // ---- certificates ----

    pub async fn certificate(&self, id: &str) -> Result<Option<CertificateRow>> {
        if let Some(lite) = self.lite() {
            return lite
                .optional(CERTIFICATE_BY_ID, &[&id], rows::RawCertificate::from_lite)?
                .map(CertificateRow::try_from)
                .transpose();
        }
        let row = on!(self, read, |db| {
            sqlx::query_as::<_, rows::RawCertificate>(CERTIFICATE_BY_ID).bind(id).fetch_optional(db).await?
        });
        row.map(CertificateRow::try_from).transpose()
    }

    /// Row counts of every table that holds client-visible state.
    pub async fn counts(&self) -> Result<Counts> {
        let (accounts, orders, authorizations, challenges, certificates) = on!(self, read, |db| {
            sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(
                "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM orders),
                        (SELECT COUNT(*) FROM authorizations), (SELECT COUNT(*) FROM challenges),
                        (SELECT COUNT(*) FROM certificates)",
            )
            .fetch_one(db)
            .await?
        });
        Ok(Counts { accounts, orders, authorizations, challenges, certificates })
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        on!(self, read, |db| sqlx::query("SELECT 1").execute(db).await?.rows_affected());
        Ok(())
    }

    /// Closes the pools (on SQLite, flushing the WAL).
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

fn corrupt(table: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table, what: e.to_string() }
}

// Reads that both the sqlx pools and the readers on the calling thread (lite.rs) run.
const ACCOUNT_BY_ID: &str = "SELECT * FROM accounts WHERE id = $1";
const ACCOUNT_BY_THUMBPRINT: &str = "SELECT * FROM accounts WHERE key_thumbprint = $1";
const AUTHZ_BY_ID: &str = "SELECT * FROM authorizations WHERE id = $1";
const AUTHZ_OF_CHALLENGE: &str =
    "SELECT * FROM authorizations WHERE id = (SELECT authz_id FROM challenges WHERE id = $1)";
const CHALLENGES_OF_AUTHZ: &str = "SELECT * FROM challenges WHERE authz_id = $1 ORDER BY type";
const CERTIFICATE_BY_ID: &str = "SELECT * FROM certificates WHERE id = $1";
const INSERT_ORDER: &str = "INSERT INTO orders (id, account_id, status, expires_at, identifiers, not_before, not_after,
                                       profile, replaces, created_at, updated_at)
    SELECT $1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $9
    WHERE $8 IS NULL OR NOT EXISTS (
        SELECT 1 FROM orders WHERE replaces = $8
          AND (status IN ('processing', 'valid') OR (status IN ('pending', 'ready') AND expires_at > $9)))";
const INSERT_AUTHZ: &str = "INSERT INTO authorizations (id, order_id, account_id, identifier_type, identifier_value,
                                                    wildcard, status, expires_at, position)
    VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)";
const AUTHZ_AND_ORDER_OF: &str =
    "SELECT a.id, a.order_id FROM challenges c JOIN authorizations a ON a.id = c.authz_id WHERE c.id = $1";

/// One statement for an authorization's `n` challenges: `$1` is the authorization, then each
/// challenge's ID, type and token.
fn insert_challenges(n: usize) -> String {
    let rows = (0..n)
        .map(|i| format!("(${}, $1, ${}, ${}, 'pending')", 3 * i + 2, 3 * i + 3, 3 * i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO challenges (id, authz_id, type, token, status) VALUES {rows}")
}

/// An order with its authorization IDs as a JSON array text, in the order of its identifiers
/// (aggregates differ: `json_group_array` and `json_agg`).
const SQLITE_ORDER_BY_ID: &str = "SELECT o.*,
    (SELECT json_group_array(id) FROM (SELECT id FROM authorizations WHERE order_id = o.id ORDER BY position)) AS authz_ids
    FROM orders o WHERE o.id = $1";
const PG_ORDER_BY_ID: &str = "SELECT o.*,
    (SELECT COALESCE(json_agg(id ORDER BY position), '[]')::text FROM authorizations WHERE order_id = o.id) AS authz_ids
    FROM orders o WHERE o.id = $1";

/// Reads that several methods share, on a connection or inside a transaction.
trait Load {
    /// An order and its authorization IDs, in the order of its identifiers (one round trip).
    async fn load_order(&mut self, id: &str) -> Result<Option<OrderRow>>;
    /// An authorization with its challenges.
    async fn load_authz(&mut self, id: &str) -> Result<Option<AuthzRow>>;
    /// The authorization and the order of a challenge.
    async fn authz_and_order_of(&mut self, challenge_id: &str) -> Result<(String, String)>;
    /// Pauses the name (`kind`, `value`: an authorization's identifier) for the account once
    /// `limit` of its validations failed within the hour, counting only failures after the last
    /// lift. `true` when this call paused it.
    async fn pause_if_failing(
        &mut self,
        account_id: &str,
        kind: &str,
        value: &str,
        limit: u32,
        now: i64,
    ) -> Result<bool>;
}

/// `Load` for one backend's connection; `$order_by_id` is its SQL of an order by ID.
macro_rules! impl_load {
    ($conn:ty, $order_by_id:expr) => {
        impl Load for $conn {
            async fn load_order(&mut self, id: &str) -> Result<Option<OrderRow>> {
                let Some(raw) =
                    sqlx::query_as::<_, rows::RawOrder>($order_by_id).bind(id).fetch_optional(&mut *self).await?
                else {
                    return Ok(None);
                };
                OrderRow::from_raw(raw).map(Some)
            }

            async fn load_authz(&mut self, id: &str) -> Result<Option<AuthzRow>> {
                let Some(raw) =
                    sqlx::query_as::<_, rows::RawAuthz>(AUTHZ_BY_ID).bind(id).fetch_optional(&mut *self).await?
                else {
                    return Ok(None);
                };
                let challs =
                    sqlx::query_as::<_, rows::RawChallenge>(CHALLENGES_OF_AUTHZ).bind(id).fetch_all(&mut *self).await?;
                AuthzRow::from_raw(raw, challs).map(Some)
            }

            async fn pause_if_failing(
                &mut self,
                account_id: &str,
                kind: &str,
                value: &str,
                limit: u32,
                now: i64,
            ) -> Result<bool> {
                // Racing failures (any replica) may both count enough: the insert (or re-pause of
                // a lifted pause) is guarded, so one of them pauses and reports it.
                let lifted: Option<i64> = sqlx::query_scalar(
                    "SELECT lifted_at FROM validation_pauses
                     WHERE account_id = $1 AND identifier_type = $2 AND identifier_value = $3",
                )
                .bind(account_id)
                .bind(kind)
                .bind(value)
                .fetch_optional(&mut *self)
                .await?
                .flatten();
                // Failures up to the second of the lift were forgiven with it.
                let since = lifted.map_or(now - limits::HOUR, |l| (l + 1).max(now - limits::HOUR));
                let failures: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM challenges c JOIN authorizations a ON a.id = c.authz_id
                     WHERE a.account_id = $1 AND a.identifier_type = $2 AND a.identifier_value = $3 AND c.failed_at >= $4",
                )
                .bind(account_id)
                .bind(kind)
                .bind(value)
                .bind(since)
                .fetch_one(&mut *self)
                .await?;
                if failures < i64::from(limit) {
                    return Ok(false);
                }
                let paused = sqlx::query(
                    "INSERT INTO validation_pauses (account_id, identifier_type, identifier_value, paused_at, failures)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (account_id, identifier_type, identifier_value) DO UPDATE
                       SET paused_at = excluded.paused_at, failures = excluded.failures, lifted_at = NULL
                       WHERE validation_pauses.lifted_at IS NOT NULL",
                )
                .bind(account_id)
                .bind(kind)
                .bind(value)
                .bind(now)
                .bind(failures)
                .execute(&mut *self)
                .await?;
                Ok(paused.rows_affected() == 1)
            }

            async fn authz_and_order_of(&mut self, challenge_id: &str) -> Result<(String, String)> {
                Ok(sqlx::query_as::<_, (String, String)>(AUTHZ_AND_ORDER_OF)
                    .bind(challenge_id)
                    .fetch_one(&mut *self)
                    .await?)
            }
        }
    };
}

impl_load!(SqliteConnection, SQLITE_ORDER_BY_ID);
impl_load!(PgConnection, PG_ORDER_BY_ID);

/// Parses a status column.
fn status<T>(table: &'static str, s: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    parse(s).ok_or_else(|| StoreError::Corrupt { table, what: format!("unknown status {s:?}") })
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod testdb;
#[cfg(test)]
mod tests;
