//! The `vacme` command: `serve`, `check-config`, `root`, and the admin commands (`eab`, `accounts`, `certs`).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use vacme::{
    App,
    acme::renewal::RenewalState,
    cli::{Admin, EabCreate},
    config::{Config, Overrides},
    init_telemetry,
};

/// An ACME server in front of a Vault or OpenBao PKI mount.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file; without one, vacme runs on its embedded default.
    #[arg(long, short, global = true, env = "VACME_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: SQLite file, local CA, EAB secret (server.data_dir).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve ACME over HTTPS.
    Serve {
        /// Listen address (server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Port vacme connects to for http-01 (validation.http01_port).
        #[arg(long)]
        http01_port: Option<u16>,
    },
    /// Check the configuration and print the effective settings.
    CheckConfig,
    /// External account binding keys.
    Eab {
        #[command(subcommand)]
        command: EabCommand,
        /// JSON output, for scripts.
        #[arg(long, global = true)]
        json: bool,
    },
    /// ACME accounts.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
        /// JSON output, for scripts.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Issued certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
        /// JSON output, for scripts.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The audit trail: issuances, refusals, revocations and account changes, newest first.
    Audit {
        /// Only this account's.
        #[arg(long)]
        account: Option<String>,
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// JSON output, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Copy the database (consistent, while the server runs), the local CA and the EAB secret
    /// into a new folder.
    Backup {
        dir: PathBuf,
        /// JSON output, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Copy every row of this (SQLite) store into an empty PostgreSQL store (docs/operations.md).
    CopyStore {
        /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`
        to: String,
        /// JSON output, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The root certificate devices install (what /roots.pem serves), without a running server.
    Root {
        /// Only its SHA-256 fingerprint (`AB:CD:...`, as `openssl x509 -fingerprint -sha256`).
        #[arg(long)]
        fingerprint: bool,
        /// JSON output (subject, both fingerprint forms, PEM), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Validation pauses (after too many failed validations of a name).
    Limits {
        #[command(subcommand)]
        command: LimitsCommand,
        /// JSON output, for scripts.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LimitsCommand {
    /// Names accounts may not order or validate until unpaused.
    List {
        /// Only this account's.
        #[arg(long)]
        account: Option<String>,
        /// Lifted pauses too.
        #[arg(long)]
        all: bool,
    },
    /// Let an account order and validate a name again (all its paused names without NAME).
    Unpause { account: String, name: Option<String> },
}

#[derive(Subcommand)]
enum EabCommand {
    /// Make a single-use key; prints the kid and the HMAC key once.
    Create {
        /// Names accounts made with this key may order: `host.lab.example`, `*.lab.example`
        /// (anything below), `10.0.0.0/24`. Repeat for more; none means whatever policy allows.
        #[arg(long)]
        scope: Vec<String>,
        /// Profile every order of the account uses (a key of [profiles]).
        #[arg(long)]
        profile: Option<String>,
        /// The key stops working if unused for this long: 30d, 12h, 90m.
        #[arg(long)]
        expires_in: Option<String>,
        /// A note for `eab list`, e.g. who the key is for.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List keys (never the HMAC keys themselves).
    List,
    /// Stop an unused key from binding accounts.
    Revoke { kid: String },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// List accounts with their order and certificate counts.
    List,
    /// One account and its certificates.
    Show { id: String },
    /// Deactivate an account (final): its key can no longer order or revoke.
    Deactivate { id: String },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// List certificates, newest first.
    List {
        /// Only this account's.
        #[arg(long)]
        account: Option<String>,
        /// Also the certificates the CA signed that did not match their order (revoked at once,
        /// never delivered), with the names the CA put in them.
        #[arg(long)]
        all: bool,
        /// Only certificates in this renewal state: active, due, overdue, renewed, expired or
        /// revoked (soonest expiry first for the first four).
        #[arg(long, value_parser = parse_renewal_state, conflicts_with = "all")]
        state: Option<RenewalState>,
        /// Renewal states as of this time (RFC 3339 or Unix seconds) instead of now.
        #[arg(long, value_parser = vacme::cli::parse_time, conflicts_with = "all")]
        at: Option<i64>,
    },
    /// Certificates per renewal state, and the next ten to expire.
    Summary {
        /// As of this time (RFC 3339 or Unix seconds) instead of now.
        #[arg(long, value_parser = vacme::cli::parse_time)]
        at: Option<i64>,
    },
    /// One certificate (by ID or serial) with its chain.
    Show { id: String },
    /// Revoke a certificate (by ID or serial) in vacme and in Vault.
    Revoke {
        id: String,
        /// RFC 5280 reason code: 0 unspecified, 1 keyCompromise, 3 affiliationChanged,
        /// 4 superseded, 5 cessationOfOperation, 9 privilegeWithdrawn.
        #[arg(long, default_value_t = 0)]
        reason: i64,
    },
}

/// EX_CONFIG from sysexits.h: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = match &cli.command {
        Command::Serve { listen, http01_port } => {
            Overrides { listen: *listen, data_dir: cli.data_dir.clone(), http01_port: *http01_port }
        }
        _ => Overrides { data_dir: cli.data_dir.clone(), ..Overrides::default() },
    };
    let config = match Config::load(cli.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vacme: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::CheckConfig => {
            print!("{}{}", config.to_toml(), vacme::roles_note(&config));
            ExitCode::SUCCESS
        }
        Command::Serve { .. } => serve(config),
        Command::Eab { command, json } => admin(&config, eab_admin(command), json),
        Command::Accounts { command, json } => admin(&config, accounts_admin(command), json),
        Command::Certs { command, json } => admin(&config, certs_admin(command), json),
        Command::Limits { command, json } => admin(&config, limits_admin(command), json),
        Command::Backup { dir, json } => admin(&config, Admin::Backup { dir }, json),
        Command::CopyStore { to, json } => admin(&config, Admin::CopyStore { to }, json),
        Command::Root { fingerprint, json } => admin(&config, Admin::Root { fingerprint }, json),
        Command::Audit { account, limit, json } => admin(&config, Admin::Audit { account, limit }, json),
    }
}

fn eab_admin(c: EabCommand) -> Admin {
    match c {
        EabCommand::Create { scope, profile, expires_in, comment } => {
            Admin::EabCreate(EabCreate { scope, profile, expires_in, comment })
        }
        EabCommand::List => Admin::EabList,
        EabCommand::Revoke { kid } => Admin::EabRevoke(kid),
    }
}

fn accounts_admin(c: AccountsCommand) -> Admin {
    match c {
        AccountsCommand::List => Admin::AccountsList,
        AccountsCommand::Show { id } => Admin::AccountsShow(id),
        AccountsCommand::Deactivate { id } => Admin::AccountsDeactivate(id),
    }
}

fn limits_admin(c: LimitsCommand) -> Admin {
    match c {
        LimitsCommand::List { account, all } => Admin::PausesList { account, all },
        LimitsCommand::Unpause { account, name } => Admin::Unpause { account, name },
    }
}

fn certs_admin(c: CertsCommand) -> Admin {
    match c {
        CertsCommand::List { account, all, state: None, at: None } => Admin::CertsList { account, all },
        CertsCommand::List { account, state, at, .. } => Admin::CertsByState { account, state, at },
        CertsCommand::Summary { at } => Admin::CertsSummary { at },
        CertsCommand::Show { id } => Admin::CertsShow(id),
        CertsCommand::Revoke { id, reason } => Admin::CertsRevoke { id, reason },
    }
}

fn parse_renewal_state(s: &str) -> Result<RenewalState, String> {
    s.parse()
}

/// Runs one admin command; errors go to stderr with exit status 1 (2 for "no such object").
fn admin(config: &Config, cmd: Admin, json: bool) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vacme: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vacme::cli::run(config, cmd, json)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e @ vacme::cli::CliError::NotFound(_)) => {
            eprintln!("vacme: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("vacme: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let json = std::env::var("VACME_LOG_FORMAT").is_ok_and(|f| f == "json");
    init_telemetry(json, std::env::var("VACME_LOG").or_else(|_| std::env::var("RUST_LOG")).ok());
    // Explicit: with more than one provider compiled in, rustls has no default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vacme: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let app = match App::build(config).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("vacme: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = app.local_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("vacme listening on {addr}");
        println!("directory: {}", app.directory_url());
        match app.root() {
            Ok(root) => {
                println!("root: {} ({})", app.roots_url(), root.subject());
                println!("root SHA-256: {}", root.fingerprint());
                println!("root SHA-256 (hex): {}", root.fingerprint_hex());
            }
            Err(why) => println!("root: not known yet ({why}); {} answers 503 until it is", app.roots_url()),
        }
        println!("CA bundle: {}", app.ca_bundle().display());
        match app.serve(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vacme: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
