//! The `vacme` command: `serve`, and `check-config`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use vacme::{
    App,
    config::{Config, Overrides},
    telemetry,
};

/// An ACME server in front of a Vault or OpenBao PKI mount.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file; without one, vacme runs on its embedded default.
    #[arg(long, short, global = true, env = "VACME_CONFIG")]
    config: Option<PathBuf>,
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
        /// Data directory: SQLite file and local CA (server.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Port vacme connects to for http-01 (validation.http01_port).
        #[arg(long)]
        http01_port: Option<u16>,
    },
    /// Check the configuration and print the effective settings.
    CheckConfig,
}

/// EX_CONFIG from sysexits.h: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = match &cli.command {
        Command::Serve { listen, data_dir, http01_port } => {
            Overrides { listen: *listen, data_dir: data_dir.clone(), http01_port: *http01_port }
        }
        Command::CheckConfig => Overrides::default(),
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
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Command::Serve { .. } => serve(config),
    }
}

fn serve(config: Config) -> ExitCode {
    let json = std::env::var("VACME_LOG_FORMAT").is_ok_and(|f| f == "json");
    telemetry::init(json, std::env::var("VACME_LOG").or_else(|_| std::env::var("RUST_LOG")).ok());
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
