//! The admin commands (`vacme eab|accounts|certs|limits|audit ...`): they open the same store as the server,
//! print a table for people or JSON (`--json`) for scripts, and never print a secret except the
//! one EAB key `eab create` exists to hand out.

use std::{fmt::Write as _, sync::Arc};

use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{
    acme::{
        Identifier,
        renewal::{RenewalState, WindowPercents},
    },
    app,
    config::Config,
    issuer::LocalCa,
    jobs::revocation::tell_ca,
    policy::reasons::check_reason,
    policy::scope::check_pattern,
    store::{AuditEvent, CertificateRow, NewEabKey, OrderClient, RejectedRow, Store},
};

/// How many expiries `certs summary` lists.
const NEXT_EXPIRIES: i64 = 10;

/// What an admin command can fail with; `main` prints it and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    App(#[from] app::AppError),
}

/// `vacme eab create`.
#[derive(Clone, Debug, Default)]
pub struct EabCreate {
    pub scope: Vec<String>,
    pub profile: Option<String>,
    /// e.g. `30d`, `12h`, `90m`, `3600s`.
    pub expires_in: Option<String>,
    pub comment: String,
}

/// One admin command.
#[derive(Clone, Debug)]
pub enum Admin {
    EabCreate(EabCreate),
    EabList,
    EabRevoke(String),
    AccountsList,
    AccountsShow(String),
    AccountsDeactivate(String),
    /// `all`: also the certificates the CA signed wrongly (rejected and revoked).
    CertsList {
        account: Option<String>,
        all: bool,
    },
    /// `certs list --state`: certificates in one renewal state (or all, with their states) as of
    /// `at` (default now).
    CertsByState {
        account: Option<String>,
        state: Option<RenewalState>,
        at: Option<i64>,
    },
    /// `certs summary`: certificates per renewal state and the next ten expiries, as of `at`.
    CertsSummary {
        at: Option<i64>,
    },
    CertsShow(String),
    CertsRevoke {
        id: String,
        reason: i64,
    },
    PausesList {
        account: Option<String>,
        all: bool,
    },
    Audit {
        account: Option<String>,
        limit: i64,
    },
    Backup {
        dir: std::path::PathBuf,
    },
    /// `vacme root`: the root certificate (PEM), or with `fingerprint` its SHA-256 fingerprint.
    Root {
        fingerprint: bool,
    },
    CopyStore {
        to: String,
    },
    Unpause {
        account: String,
        name: Option<String>,
    },
}

/// Runs `cmd` against the store of `config`; returns what to print.
pub async fn run(config: &Config, cmd: Admin, json_out: bool) -> Result<String, CliError> {
    if let Admin::Root { fingerprint } = cmd {
        return root(config, fingerprint, json_out).await;
    }
    let dir = &config.server.data_dir;
    let io = |e: std::io::Error| CliError::Usage(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    app::restrict_dir(dir).map_err(io)?;
    let store = Store::connect(&config.database_url()).await?;
    let out = dispatch(config, &store, cmd, json_out).await;
    store.close().await;
    out
}

/// `vacme root [--fingerprint]`: what `/roots.pem` serves, worked out as the server does (the
/// store is not opened).
async fn root(config: &Config, fingerprint: bool, json_out: bool) -> Result<String, CliError> {
    let root = app::configured_root(config).await?;
    Ok(if json_out {
        let v = json!({
            "subject": root.subject(),
            "sha256": root.fingerprint(),
            "sha256_hex": root.fingerprint_hex(),
            "pem": root.pem(),
        });
        format!("{v:#}\n")
    } else if fingerprint {
        format!("{}\n", root.fingerprint())
    } else {
        root.pem().to_owned()
    })
}

/// `vacme backup DIR`: the database (a consistent copy, while the server runs), the local CA and
/// the EAB secret, into a new folder (0700; secret files 0600).
async fn backup(config: &Config, store: &Store, dir: &std::path::Path, json_out: bool) -> Result<String, CliError> {
    let io = |what: &std::path::Path| {
        let shown = what.display().to_string();
        move |e: std::io::Error| CliError::Usage(format!("{shown}: {e}"))
    };
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(CliError::Usage(format!("{} exists and is not empty", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    app::restrict_dir(dir).map_err(io(dir))?;
    let mut copied = Vec::new();
    if config.database_url().starts_with("sqlite:") {
        let db = dir.join("vacme.db");
        store.backup_to(&db).await?;
        copied.push(db);
    }
    let data = &config.server.data_dir;
    let files = [
        (data.join("ca/ca.pem"), dir.join("ca/ca.pem")),
        (data.join("ca/ca.key"), dir.join("ca/ca.key")),
        (config.eab_secret_file(), dir.join("eab.secret")),
    ];
    for (from, to) in files {
        if !from.exists() {
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            app::restrict_dir(parent).map_err(io(parent))?;
        }
        std::fs::copy(&from, &to).map_err(io(&from))?;
        restrict_file(&to).map_err(io(&to))?;
        copied.push(to);
    }
    let shown: Vec<String> = copied.iter().map(|p| p.display().to_string()).collect();
    Ok(if json_out {
        pretty(&json!({"dir": dir.display().to_string(), "files": shown}))
    } else {
        format!("backed up to {}:\n  {}\n", dir.display(), shown.join("\n  "))
    })
}

#[cfg(unix)]
fn restrict_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_file(_: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

async fn dispatch(config: &Config, store: &Store, cmd: Admin, json_out: bool) -> Result<String, CliError> {
    match cmd {
        Admin::EabCreate(req) => eab_create(config, store, req, json_out).await,
        Admin::EabList => {
            let keys = store.eab_keys().await?;
            let now = now();
            if json_out {
                let rows: Vec<Value> = keys
                    .iter()
                    .map(|k| {
                        let mut v = serde_json::to_value(k).unwrap_or_default();
                        v["state"] = json!(k.state(now));
                        v
                    })
                    .collect();
                return Ok(pretty(&rows));
            }
            let rows = keys
                .iter()
                .map(|k| {
                    vec![
                        k.kid.clone(),
                        k.state(now).to_owned(),
                        or_any(&k.scope.join(",")),
                        k.profile.clone().unwrap_or_else(|| "-".into()),
                        k.expires_at.map_or_else(|| "never".into(), time_str),
                        k.account_id.clone().unwrap_or_else(|| "-".into()),
                        k.comment.clone(),
                    ]
                })
                .collect();
            Ok(table(&["KID", "STATE", "SCOPE", "PROFILE", "EXPIRES", "ACCOUNT", "COMMENT"], rows))
        }
        Admin::EabRevoke(kid) => {
            if store.eab_key(&kid).await?.is_none() {
                return Err(CliError::NotFound(format!("no EAB key {kid}")));
            }
            let done = store.revoke_eab_key(&kid, now()).await?;
            Ok(if json_out {
                pretty(&json!({"kid": kid, "revoked": done}))
            } else if done {
                format!(
                    "revoked EAB key {kid}; accounts already bound with it keep working (see `vacme accounts deactivate`)\n"
                )
            } else {
                format!("EAB key {kid} was already revoked\n")
            })
        }
        Admin::AccountsList => {
            let accounts = store.account_summaries().await?;
            if json_out {
                let rows: Vec<Value> = accounts
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.account.id, "status": s.account.status, "contact": s.account.contact,
                            "created_at": s.account.created_at, "eab_kid": s.account.eab_kid,
                            "orders": s.orders, "certificates": s.certificates,
                        })
                    })
                    .collect();
                return Ok(pretty(&rows));
            }
            let rows = accounts
                .iter()
                .map(|s| {
                    vec![
                        s.account.id.clone(),
                        s.account.status.to_string(),
                        or_dash(&s.account.contact.join(",")),
                        s.account.eab_kid.clone().unwrap_or_else(|| "-".into()),
                        s.orders.to_string(),
                        s.certificates.to_string(),
                        time_str(s.account.created_at),
                    ]
                })
                .collect();
            Ok(table(&["ID", "STATUS", "CONTACT", "EAB KID", "ORDERS", "CERTS", "CREATED"], rows))
        }
        Admin::AccountsShow(id) => {
            let acct = store.account(&id).await?.ok_or_else(|| CliError::NotFound(format!("no account {id}")))?;
            let certs = store.certificates(Some(&id)).await?;
            let orders = store.order_ids_of_account(&id, None, i64::MAX).await?;
            let v = json!({
                "id": acct.id, "status": acct.status, "contact": acct.contact, "key_thumbprint": acct.thumbprint,
                "jwk": acct.jwk, "terms_of_service_agreed": acct.tos_agreed, "created_at": acct.created_at,
                "eab_kid": acct.eab_kid, "orders": orders.len(),
                "certificates": certs.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            });
            if json_out {
                return Ok(pretty(&v));
            }
            let mut out = String::new();
            let _ = writeln!(out, "id:             {}", acct.id);
            let _ = writeln!(out, "status:         {}", acct.status);
            let _ = writeln!(out, "contact:        {}", or_dash(&acct.contact.join(", ")));
            let _ = writeln!(out, "key thumbprint: {}", acct.thumbprint);
            let _ = writeln!(out, "created:        {}", time_str(acct.created_at));
            let _ = writeln!(out, "eab kid:        {}", acct.eab_kid.as_deref().unwrap_or("-"));
            let _ = writeln!(out, "orders:         {}", orders.len());
            let _ = writeln!(out, "certificates:   {}", certs.len());
            if !certs.is_empty() {
                out.push('\n');
                out.push_str(&cert_table(&certs, app::renewal_window(config), now()));
            }
            Ok(out)
        }
        Admin::PausesList { account, all } => {
            let pauses = store.pauses(account.as_deref(), all).await?;
            if json_out {
                return Ok(pretty(&pauses));
            }
            let rows = pauses
                .iter()
                .map(|p| {
                    vec![
                        p.account_id.clone(),
                        format!("{}:{}", p.identifier_type, p.identifier_value),
                        p.failures.to_string(),
                        time_str(p.paused_at),
                        p.lifted_at.map_or_else(|| "paused".into(), |t| format!("lifted {}", time_str(t))),
                    ]
                })
                .collect();
            Ok(table(&["ACCOUNT", "IDENTIFIER", "FAILURES", "PAUSED", "STATE"], rows))
        }
        Admin::Unpause { account, name } => {
            if store.account(&account).await?.is_none() {
                return Err(CliError::NotFound(format!("no account {account}")));
            }
            let lifted = store.unpause(&account, name.as_deref(), now()).await?;
            if lifted > 0 {
                AuditEvent::new("unpaused", "admin")
                    .account(&account)
                    .detail(format!("{lifted} pause(s) of {}", name.as_deref().unwrap_or("every name")))
                    .record(store, now())
                    .await;
            }
            Ok(if json_out {
                pretty(&json!({"account": account, "name": name, "lifted": lifted}))
            } else if lifted == 0 {
                format!("account {account} had no paused {}; nothing changed\n", name.as_deref().unwrap_or("names"))
            } else {
                format!("lifted {lifted} pause(s) of account {account}: it may order and validate again\n")
            })
        }
        Admin::AccountsDeactivate(id) => match store.admin_deactivate_account(&id, now()).await? {
            None => Err(CliError::NotFound(format!("no account {id}"))),
            Some(done) => {
                if done {
                    AuditEvent::new("account_deactivated", "admin").account(&id).record(store, now()).await;
                }
                Ok(if json_out {
                    pretty(&json!({"id": id, "deactivated": done}))
                } else if done {
                    format!(
                        "deactivated account {id}: its key can no longer order, and its pending authorizations are gone\n"
                    )
                } else {
                    format!("account {id} was not valid; nothing changed\n")
                })
            }
        },
        Admin::Backup { dir } => backup(config, store, &dir, json_out).await,
        Admin::Root { fingerprint } => root(config, fingerprint, json_out).await,
        Admin::CopyStore { to } => {
            let target = Store::connect(&to).await?;
            let copied = store.copy_to(&target).await;
            target.close().await;
            let copied = copied?;
            if json_out {
                return Ok(pretty(&copied.iter().map(|(t, n)| json!({"table": t, "rows": n})).collect::<Vec<_>>()));
            }
            let rows = copied.iter().map(|(t, n)| vec![(*t).to_owned(), n.to_string()]).collect();
            Ok(format!(
                "{}copied into the PostgreSQL store; point database.url at it and start vacme there\n",
                table(&["TABLE", "ROWS"], rows)
            ))
        }
        Admin::Audit { account, limit } => {
            let rows = store.audit_events(account.as_deref(), limit).await?;
            if json_out {
                return Ok(pretty(&rows));
            }
            let rows = rows
                .iter()
                .map(|r| {
                    vec![
                        time_str(r.at),
                        r.event.event.clone(),
                        r.event.actor.clone(),
                        or_dash(&r.event.identifiers.iter().map(Identifier::value).collect::<Vec<_>>().join(",")),
                        r.event.serial.clone().unwrap_or_else(|| "-".into()),
                        or_dash(&r.event.detail),
                    ]
                })
                .collect();
            Ok(table(&["TIME", "EVENT", "ACTOR", "NAMES", "SERIAL", "DETAIL"], rows))
        }
        Admin::CertsList { account, all } => {
            let certs = store.certificates(account.as_deref()).await?;
            let rejected = if all { store.rejected_certificates(account.as_deref()).await? } else { Vec::new() };
            if json_out {
                let mut rows = Vec::with_capacity(certs.len());
                for c in &certs {
                    rows.push(cert_json_full(config, store, c, now()).await?);
                }
                rows.extend(rejected.iter().map(rejected_json));
                return Ok(pretty(&rows));
            }
            let mut out = cert_table(&certs, app::renewal_window(config), now());
            if all {
                let rows = rejected
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.clone(),
                            r.serial.clone(),
                            rejected_state(r).to_owned(),
                            names(&r.identifiers),
                            time_str(r.created_at),
                            r.order_id.clone(),
                            r.account_id.clone(),
                        ]
                    })
                    .collect();
                out.push_str("\ncertificates the CA signed that did not match their order (never delivered):\n");
                out.push_str(&table(&["ID", "SERIAL", "STATE", "CA'S NAMES", "REJECTED AT", "ORDER", "ACCOUNT"], rows));
            }
            Ok(out)
        }
        Admin::CertsByState { account, state, at } => {
            certs_by_state(config, store, account.as_deref(), state, at.unwrap_or_else(now), json_out).await
        }
        Admin::CertsSummary { at } => certs_summary(config, store, at.unwrap_or_else(now), json_out).await,
        Admin::CertsShow(key) => {
            let cert = find_cert(store, &key).await?;
            let mut v = cert_json_full(config, store, &cert, now()).await?;
            if json_out {
                v["chain_pem"] = json!(cert.chain_pem);
                return Ok(pretty(&v));
            }
            let mut out = String::new();
            for (k, label) in [
                ("id", "id"),
                ("serial", "serial"),
                ("state", "state"),
                ("renewal_state", "renewal state"),
                ("renewed_by", "renewed by"),
                ("client", "client"),
                ("account_id", "account"),
                ("order_id", "order"),
                ("issuer", "issuer"),
                ("profile", "profile"),
                ("ari_id", "renewal-info certID"),
                ("replaces", "replaces"),
            ] {
                let value = match &v[k] {
                    Value::String(s) => s.clone(),
                    Value::Null => "-".into(),
                    other => other.to_string(),
                };
                let _ = writeln!(out, "{:<20} {value}", format!("{label}:"));
            }
            let _ = writeln!(out, "{:<20} {}", "names:", names(&cert.identifiers));
            let _ = writeln!(out, "{:<20} {}", "not before:", time_str(cert.not_before));
            let _ = writeln!(out, "{:<20} {}", "not after:", time_str(cert.not_after));
            if let Some(at) = cert.revoked_at {
                let _ = writeln!(
                    out,
                    "{:<20} {} (reason {}), CA {}",
                    "revoked:",
                    time_str(at),
                    cert.revocation_reason.unwrap_or(0),
                    cert.ca_revoked_at.map_or_else(|| "not told yet".into(), |t| format!("confirmed {}", time_str(t)))
                );
            }
            out.push('\n');
            out.push_str(&cert.chain_pem);
            Ok(out)
        }
        Admin::CertsRevoke { id, reason } => {
            let reason = check_reason(Some(reason)).map_err(|p| CliError::Usage(p.detail))?;
            let cert = find_cert(store, &id).await?;
            if !store.revoke_certificate(&cert.id, reason, now()).await? {
                return Err(CliError::Usage(format!("certificate {} is already revoked", cert.id)));
            }
            AuditEvent::new("revoked", "admin")
                .account(&cert.account_id)
                .order(&cert.order_id)
                .certificate(&cert.id, &cert.serial)
                .identifiers(&cert.identifiers)
                .detail(format!("reason {reason}"))
                .record(store, now())
                .await;
            let local_ca = Arc::new(
                LocalCa::load_or_create(&config.server.data_dir.join("ca"))
                    .map_err(|e| app::AppError::LocalCa(e.to_string()))?,
            );
            let issuer = app::build_issuer(config, &local_ca).await?;
            let lifecycle = app::lifecycle(config)?;
            let told = tell_ca(issuer.as_ref(), store, &lifecycle, &cert, now()).await;
            Ok(if json_out {
                pretty(&json!({"id": cert.id, "serial": cert.serial, "revoked": true, "ca_confirmed": told}))
            } else if told {
                format!("revoked certificate {} (serial {}); {} confirmed\n", cert.id, cert.serial, issuer.name())
            } else {
                format!(
                    "revoked certificate {} (serial {}) in vacme; {} did not answer, the server retries until it does\n",
                    cert.id,
                    cert.serial,
                    issuer.name()
                )
            })
        }
    }
}

async fn eab_create(config: &Config, store: &Store, req: EabCreate, json_out: bool) -> Result<String, CliError> {
    for p in &req.scope {
        check_pattern(p).map_err(CliError::Usage)?;
    }
    if let Some(p) = &req.profile
        && !config.profiles.contains_key(p)
    {
        return Err(CliError::Usage(format!("profile {p:?} is not configured ([profiles.{p}])")));
    }
    let now = now();
    let expires_at = match &req.expires_in {
        Some(s) => Some(
            now + parse_duration(s)
                .ok_or_else(|| CliError::Usage(format!("bad duration {s:?}: use e.g. 30d, 12h, 90m")))?,
        ),
        None => None,
    };
    let lifecycle = app::lifecycle(config)?;
    let (kid, key) = lifecycle.eab.new_key().map_err(|e| CliError::Usage(e.to_string()))?;
    let scope: Vec<String> = req.scope.iter().map(|s| s.trim().trim_end_matches('.').to_ascii_lowercase()).collect();
    let row = NewEabKey { kid: kid.clone(), scope, profile: req.profile, comment: req.comment, expires_at };
    store.create_eab_key(&row, now).await?;
    if json_out {
        return Ok(pretty(&json!({
            "kid": kid, "hmac_key": key, "scope": row.scope, "profile": row.profile, "expires_at": expires_at,
        })));
    }
    let mut out = String::new();
    let _ = writeln!(out, "kid:      {kid}");
    let _ = writeln!(out, "hmac key: {key}");
    let _ = writeln!(out, "scope:    {}", or_any(&row.scope.join(", ")));
    let _ = writeln!(out, "profile:  {}", row.profile.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "expires:  {}", expires_at.map_or_else(|| "never (single use)".into(), time_str));
    let _ = writeln!(out, "\nThe key is shown once; vacme does not store it. Use it once, e.g.:");
    let _ = writeln!(out, "  certbot register --server <directory> --eab-kid {kid} --eab-hmac-key {key}");
    // The `=` form: a value can never be read as a flag, whatever it starts with. lego names
    // the same flags differently (`--kid`, `--hmac`) and refuses certbot's names.
    let _ = writeln!(out, "\nClient flags, ready to paste:");
    let _ = writeln!(out, "  certbot: --eab-kid={kid} --eab-hmac-key={key}");
    let _ = writeln!(out, "  lego:    --eab --kid={kid} --hmac={key}");
    Ok(out)
}

/// A certificate by ID or by serial (hex, colons allowed).
async fn find_cert(store: &Store, key: &str) -> Result<CertificateRow, CliError> {
    if let Some(c) = store.certificate(key).await? {
        return Ok(c);
    }
    if let Some(serial) = crate::acme::Serial::parse(key) {
        let mut found = store.certificates_by_serial(serial.as_str()).await?;
        if found.len() == 1 {
            return Ok(found.remove(0));
        }
        if found.len() > 1 {
            return Err(CliError::Usage(format!("{} certificates have serial {serial}; name one by ID", found.len())));
        }
    }
    Err(CliError::NotFound(format!("no certificate with ID or serial {key}")))
}

fn cert_state(c: &CertificateRow, now: i64) -> &'static str {
    if c.revoked_at.is_some() {
        "revoked"
    } else if c.not_after <= now {
        "expired"
    } else {
        "valid"
    }
}

/// `rejected (revoked)` once the CA confirmed the revocation, `rejected (revocation pending)` before.
fn rejected_state(r: &RejectedRow) -> &'static str {
    if r.revoked_at.is_some() { "rejected (revoked)" } else { "rejected (revocation pending)" }
}

fn rejected_json(r: &RejectedRow) -> Value {
    json!({
        "id": r.id, "serial": r.serial, "state": rejected_state(r), "account_id": r.account_id,
        "order_id": r.order_id, "identifiers": r.identifiers, "mount": r.mount, "reason": r.reason,
        "created_at": r.created_at, "ca_revoked_at": r.revoked_at, "rejected": true,
    })
}

fn cert_json(c: &CertificateRow, now: i64) -> Value {
    json!({
        "id": c.id, "serial": c.serial, "state": cert_state(c, now), "account_id": c.account_id,
        "order_id": c.order_id, "issuer": c.issuer, "profile": c.profile, "ari_id": c.ari_id,
        "identifiers": c.identifiers, "not_before": c.not_before, "not_after": c.not_after,
        "revoked_at": c.revoked_at, "revocation_reason": c.revocation_reason, "ca_revoked_at": c.ca_revoked_at,
        "created_at": c.created_at,
    })
}

/// `cert_json` plus its renewal state at `now` and what its order says: the certID it replaced
/// (RFC 9773 `replaces`) and the client that asked for it.
async fn cert_json_full(config: &Config, store: &Store, c: &CertificateRow, now: i64) -> Result<Value, CliError> {
    let mut v = cert_json(c, now);
    let order = store.order(&c.order_id).await?;
    let (ua, ip) = order.as_ref().map_or((None, None), |o| (o.client_user_agent.clone(), o.client_ip.clone()));
    v["renewal_state"] = json!(c.renewal_state(app::renewal_window(config), now).as_str());
    v["renewed_by"] = json!(c.renewed_by);
    v["replaces"] = json!(order.and_then(|o| o.replaces));
    v["client"] = json!(OrderClient::describe(ua.as_deref(), ip.as_deref()));
    v["client_user_agent"] = json!(ua);
    v["client_ip"] = json!(ip);
    Ok(v)
}

fn cert_table(certs: &[CertificateRow], window: WindowPercents, now: i64) -> String {
    let rows = certs
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.serial.clone(),
                cert_state(c, now).to_owned(),
                c.renewal_state(window, now).to_string(),
                names(&c.identifiers),
                time_str(c.not_after),
                c.profile.clone().unwrap_or_else(|| "-".into()),
                c.account_id.clone(),
            ]
        })
        .collect();
    table(&["ID", "SERIAL", "STATE", "RENEWAL", "NAMES", "NOT AFTER", "PROFILE", "ACCOUNT"], rows)
}

/// `certs list --state`: the certificates in `state` at `now` (all, with `None`). The states
/// time moves (active, due, overdue, expired) come from the certificates neither renewed nor
/// revoked, soonest expiry first; renewed and revoked from the full listing, newest first.
async fn certs_by_state(
    config: &Config,
    store: &Store,
    account: Option<&str>,
    state: Option<RenewalState>,
    now: i64,
    json_out: bool,
) -> Result<String, CliError> {
    let window = app::renewal_window(config);
    let certs = match state {
        Some(s) if s.is_live() => store.live_certificates().await?,
        _ => store.certificates(account).await?,
    };
    let certs: Vec<CertificateRow> = certs
        .into_iter()
        .filter(|c| account.is_none_or(|a| c.account_id == a))
        .filter(|c| state.is_none_or(|s| c.renewal_state(window, now) == s))
        .collect();
    if json_out {
        let mut rows = Vec::with_capacity(certs.len());
        for c in &certs {
            rows.push(cert_json_full(config, store, c, now).await?);
        }
        return Ok(pretty(&rows));
    }
    let mut rows = Vec::with_capacity(certs.len());
    for c in &certs {
        rows.push(vec![
            c.id.clone(),
            c.serial.clone(),
            c.renewal_state(window, now).to_string(),
            names(&c.identifiers),
            time_str(c.not_after),
            c.account_id.clone(),
            client_of(store, c).await?,
        ]);
    }
    Ok(table(&["ID", "SERIAL", "RENEWAL", "NAMES", "NOT AFTER", "ACCOUNT", "CLIENT"], rows))
}

/// `certs summary`: certificates per renewal state at `now`, and the next ten expiries.
async fn certs_summary(config: &Config, store: &Store, now: i64, json_out: bool) -> Result<String, CliError> {
    let window = app::renewal_window(config);
    let counts = store.renewal_counts(window, now).await?;
    let next = store.next_expiries(now, NEXT_EXPIRIES).await?;
    if json_out {
        let states: serde_json::Map<String, Value> =
            counts.counts.iter().map(|(s, n)| (s.as_str().to_owned(), json!(n))).collect();
        let mut expiries = Vec::with_capacity(next.len());
        for c in &next {
            expiries.push(cert_json_full(config, store, c, now).await?);
        }
        return Ok(pretty(&json!({
            "at": now, "window_start_percent": window.start, "window_end_percent": window.end,
            "states": states, "next_expiry": counts.next_expiry, "next_expiries": expiries,
        })));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "renewal state at {} (renewal window {}%-{}% of each certificate's lifetime):\n",
        time_str(now),
        window.start,
        window.end
    );
    let rows = counts.counts.iter().map(|(s, n)| vec![s.to_string(), n.to_string()]).collect();
    out.push_str(&table(&["STATE", "CERTIFICATES"], rows));
    let _ = writeln!(out, "\nnext {NEXT_EXPIRIES} to expire (neither renewed nor revoked):");
    let mut rows = Vec::with_capacity(next.len());
    for c in &next {
        rows.push(vec![
            time_str(c.not_after),
            c.renewal_state(window, now).to_string(),
            names(&c.identifiers),
            c.serial.clone(),
            client_of(store, c).await?,
        ]);
    }
    out.push_str(&table(&["NOT AFTER", "RENEWAL", "NAMES", "SERIAL", "CLIENT"], rows));
    Ok(out)
}

/// "certbot/5.8.0 from 10.0.0.23": the client that ordered `c`.
async fn client_of(store: &Store, c: &CertificateRow) -> Result<String, CliError> {
    let order = store.order(&c.order_id).await?;
    Ok(OrderClient::describe(
        order.as_ref().and_then(|o| o.client_user_agent.as_deref()),
        order.as_ref().and_then(|o| o.client_ip.as_deref()),
    ))
}

/// `--at`: RFC 3339 (`2026-12-09T00:00:00Z`) or Unix seconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|_| format!("bad time {s:?}: use RFC 3339 (2026-12-09T00:00:00Z) or Unix seconds"))
}

fn names(ids: &[Identifier]) -> String {
    ids.iter().map(Identifier::value).collect::<Vec<_>>().join(",")
}

fn time_str(t: i64) -> String {
    crate::clock::rfc3339(t)
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.to_owned() }
}

fn or_any(s: &str) -> String {
    if s.is_empty() { "any (policy)".into() } else { s.to_owned() }
}

fn pretty<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Left-aligned columns, two spaces apart.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(l, "{cell:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in &rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

/// `30d`, `12h`, `90m`, `3600s` or plain seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: i64 = num.parse().ok().filter(|n| *n > 0)?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Some(30 * 86_400));
        assert_eq!(parse_duration("12h"), Some(43_200));
        assert_eq!(parse_duration("90"), Some(90));
        for bad in ["", "d", "-1d", "3w", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONG HEADER"], vec![vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONG HEADER\nxyz  1\n");
        assert!(table(&["A"], vec![]).ends_with("(none)\n"));
    }
}
