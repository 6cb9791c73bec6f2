//! Building the application from a `Config`, and serving it over HTTPS until a shutdown signal.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::Router;
use rustls::ServerConfig;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::{
    acme::Urls,
    api,
    clock::{Clock, SystemClock},
    config::{Config, TlsSource, VaultAuthMethod},
    conn::{ConnLimits, Gate},
    issuer::{
        IssueError, Issuer, KeyPolicy, LocalCa, LocalIssuer, Root, TrustAnchor, VaultAuth, VaultIssuer, VaultSettings,
        role::{RoleBook, VaultRoutes},
    },
    jobs::{
        Runner, Slots, Wake,
        cleanup::Cleanup,
        issuance::IssuanceWorker,
        notify::{Webhook, Webhooks},
        renewal::{CaChecks, RenewalCheck},
        revocation::{RevocationPush, Revocations},
        validation::{ValidationWorker, ValidationWorkerSettings},
    },
    jws::{
        eab::EabSecret,
        nonce::{MemoryNonces, Nonces},
    },
    metrics::Metrics,
    policy::{Admission, Lifecycle, Policy},
    secret::Secret,
    state::{AppState, Limits, Shared},
    store::Store,
    tls::ServingCert,
    validation::{NetValidator, Outbound, ValidationSettings, Validator},
};

/// Revocation pushes to the CA at once: revocations come one per request, and a CA that is down
/// leaves them to the clean-up run.
const REVOCATION_SLOTS: usize = 8;

/// Renewal-info CA checks at once. Each is one short read bounded by `CA_CHECK_TIMEOUT`, asked at
/// most once per certificate and period; the bound is generous so that a burst of different
/// certificates is not kept waiting past the handler's wait.
const CA_CHECK_SLOTS: usize = 64;

/// Why vacme could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("local CA: {0}")]
    LocalCa(String),
    #[error("Vault: {0}")]
    Vault(String),
    #[error("validation: {0}")]
    Validation(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("EAB secret: {0}")]
    Eab(String),
    #[error("{0}")]
    Webhook(String),
    #[error("root certificate: {0}")]
    Trust(#[from] crate::issuer::TrustError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A built vacme: store open, CA ready, listener bound, workers not yet running.
pub struct App {
    state: AppState,
    router: Router,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    /// The serving certificate, its source, and when to look at the source next.
    serving: Arc<ServingCert>,
    tls_source: crate::tls::Source,
    tls_next: Duration,
    validator: Arc<dyn Validator>,
    /// The webhook delivery job (it runs with no webhooks configured too: then it does nothing).
    webhooks: Arc<Webhooks>,
    config: Config,
    ca_bundle: PathBuf,
    /// The dashboard's listener and routes, when it is on and its address could be bound.
    admin: Option<(TcpListener, Router)>,
}

impl App {
    /// Opens the store, prepares the CA and the serving certificate, and binds the listener.
    pub async fn build(config: Config) -> Result<App, AppError> {
        let data_dir = &config.server.data_dir;
        std::fs::create_dir_all(data_dir)?;
        restrict_dir(data_dir)?;
        let durable = config.database.synchronous == crate::config::Synchronous::Full;
        let store = Store::connect_with(&config.database_url(), durable).await?;
        let local_ca =
            Arc::new(LocalCa::load_or_create(&data_dir.join("ca")).map_err(|e| AppError::LocalCa(e.to_string()))?);
        let lifecycle = Arc::new(lifecycle(&config)?);
        let issuer = build_issuer_reading_roles(&config, &local_ca, &lifecycle).await?;
        // One SQLite process: nonces in memory. A shared database: nonces in it (DESIGN.md, multi-replica).
        let nonces = Arc::new(if store.is_postgres() {
            Nonces::Database { store: store.clone(), ttl_secs: Limits::default().nonce_ttl_secs }
        } else {
            Nonces::Memory(MemoryNonces::new()?)
        });
        let backfilled = crate::jobs::cleanup::backfill_ari_ids(&store).await?;
        if backfilled > 0 {
            tracing::info!(certificates = backfilled, "gave older certificates their renewal-info certID");
        }
        match issuer.health().await {
            Ok(()) => tracing::info!(issuer = issuer.name(), "CA reachable"),
            Err(e) => {
                tracing::warn!(issuer = issuer.name(), error = %e, "CA not reachable yet; orders wait in processing")
            }
        }
        let trust = Arc::new(TrustAnchor::new(config.vault.as_ref().and_then(|v| v.root_file.as_deref()))?);
        read_root(&trust, &issuer).await;
        let validator: Arc<dyn Validator> = Arc::new(
            NetValidator::new(ValidationSettings {
                http01_port: config.validation.http01_port,
                tls_alpn01_port: config.validation.tls_alpn01_port,
                nameservers: config.nameservers(),
                timeout: config.validation_timeout(),
                max_redirects: config.validation.max_redirects,
                max_body: 8 * 1024,
                allowed_targets: config.allowed_targets(),
                caa_identities: config.policy.caa_identities.clone(),
            })
            .map_err(|e| AppError::Validation(e.to_string()))?,
        );
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| AppError::Listen { addr: config.server.listen, source })?;
        let urls = Urls::new(config.base_url(listener.local_addr()?));
        let tls_source = tls_source(&config, &local_ca, &issuer, &urls);
        let (first, tls_next) = tls_source.first(Duration::from_secs(10)).await.map_err(AppError::Tls)?;
        let serving = Arc::new(ServingCert::new(first));
        let mut server_config = ServerConfig::builder().with_no_client_auth().with_cert_resolver(serving.clone());
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = Arc::new(server_config);
        let policy = Arc::new(Policy::new(&config.policy));
        let admission = Arc::new(Admission {
            store: store.clone(),
            policy: policy.clone(),
            lifecycle: lifecycle.clone(),
            limits: config.limits.clone(),
            key_policy: KeyPolicy::default(),
        });
        let state = AppState::new(Shared {
            store,
            issuer,
            urls: Arc::new(urls),
            policy,
            admission,
            clock: Arc::new(SystemClock) as Arc<dyn Clock>,
            limits: Arc::new(Limits {
                max_body_bytes: config.server.max_body_bytes,
                finalize_wait: Duration::from_secs(config.issuance.finalize_wait_secs),
                rate: config.limits.clone(),
                request_timeout: Duration::from_secs(config.server.request_timeout_secs),
                max_url_bytes: config.server.max_url_bytes,
                ..Limits::default()
            }),
            wake: Arc::new(Wake::default()),
            lifecycle,
            nonces,
            metrics: Arc::new(Metrics::default()),
            renewal_info_limit: Arc::new(crate::policy::ratelimit::AddrBuckets::new(
                crate::policy::ratelimit::RENEWAL_INFO_PER_IP_PER_MINUTE,
            )),
            ca_checks: Arc::new(CaChecks::new(config.renewal.ca_check_secs)),
            revocations: Arc::new(Revocations::default()),
            trust,
        });
        let roots = webhook_roots(&config).map_err(AppError::Webhook)?;
        let outbound = Outbound::new(
            &config.nameservers(),
            config.allowed_targets(),
            Duration::from_secs(config.notify.timeout_secs),
            roots.as_deref(),
        )
        .map_err(|e| AppError::Webhook(format!("webhooks: {e}")))?;
        let hooks = Webhook::from_config(&config.notify).map_err(|e| AppError::Webhook(e.to_string()))?;
        let webhooks = Arc::new(Webhooks::new(
            state.store.clone(),
            state.clock.clone(),
            state.metrics.clone(),
            Arc::new(outbound),
            hooks,
            &config.notify,
            renewal_window(&config),
        ));
        let admin = admin_listener(&config, &state).await?;
        Ok(App {
            admin,
            router: api::router(state.clone()),
            webhooks,
            state,
            listener,
            tls,
            serving,
            tls_source,
            tls_next,
            validator,
            ca_bundle: local_ca.ca_path(),
            config,
        })
    }

    /// The dashboard's bound address, when it is served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The directory URL clients are pointed at.
    pub fn directory_url(&self) -> String {
        self.state.urls.directory()
    }

    /// The URL of the root devices install (`GET /roots.pem`).
    pub fn roots_url(&self) -> String {
        self.state.urls.absolute("/roots.pem")
    }

    /// The root `/roots.pem` serves, or why it is not known yet.
    pub fn root(&self) -> Result<Arc<Root>, String> {
        self.state.trust.current()
    }

    /// The PEM file clients must trust for vacme's own HTTPS (with `tls.source = "issuer"`,
    /// the issuer's root instead, once it signed).
    pub fn ca_bundle(&self) -> &PathBuf {
        &self.ca_bundle
    }

    /// The serving certificate, for tests that watch it change.
    pub fn serving(&self) -> Arc<ServingCert> {
        self.serving.clone()
    }

    fn conn_limits(&self) -> ConnLimits {
        let server = &self.config.server;
        ConnLimits {
            max_connections: server.max_connections,
            max_per_ip: server.max_connections_per_ip,
            header_timeout: Duration::from_secs(server.header_timeout_secs),
            max_header_bytes: server.max_header_bytes,
            max_lifetime: Duration::from_secs(server.max_connection_secs),
            trusted_proxies: Arc::new(
                server.trusted_proxies.iter().filter_map(|s| crate::config::parse_net(s)).collect(),
            ),
        }
    }

    /// Shared state, for tests that inspect the store.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting, drains requests and parks the
    /// workers within the grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), AppError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let st = &self.state;
        let mut workers = JoinSet::new();
        let runner = Runner { clock: st.clock.clone(), metrics: st.metrics.clone() };
        workers.spawn(runner.clone().queue(
            ValidationWorker {
                store: st.store.clone(),
                validator: self.validator.clone(),
                clock: st.clock.clone(),
                wake: st.wake.clone(),
                urls: st.urls.clone(),
                metrics: st.metrics.clone(),
                settings: ValidationWorkerSettings {
                    retry_window_secs: self.config.validation.retry_window_secs as i64,
                    pause_after_failures: self.config.limits.failed_validations_per_name_per_hour,
                },
            },
            Slots { slots: self.config.validation.workers, lease_secs: crate::jobs::RENEWED_LEASE_SECS },
            stopped(stop_rx.clone()),
        ));
        st.metrics.expect_post_sign_mismatches(st.issuer.name());
        workers.spawn(runner.clone().queue(
            IssuanceWorker {
                store: st.store.clone(),
                issuer: st.issuer.clone(),
                clock: st.clock.clone(),
                wake: st.wake.clone(),
                metrics: st.metrics.clone(),
                admission: st.admission.clone(),
                revocations: st.revocations.clone(),
            },
            Slots { slots: self.config.issuance.workers, lease_secs: crate::jobs::RENEWED_LEASE_SECS },
            stopped(stop_rx.clone()),
        ));
        // The in-memory queues hold no lease in the store: a claimed item leaves the queue.
        workers.spawn(runner.clone().queue(
            RevocationPush {
                store: st.store.clone(),
                issuer: st.issuer.clone(),
                lifecycle: st.lifecycle.clone(),
                clock: st.clock.clone(),
                revocations: st.revocations.clone(),
            },
            Slots { slots: REVOCATION_SLOTS, lease_secs: 0 },
            stopped(stop_rx.clone()),
        ));
        workers.spawn(runner.clone().queue(
            RenewalCheck { issuer: st.issuer.clone(), checks: st.ca_checks.clone() },
            Slots { slots: CA_CHECK_SLOTS, lease_secs: 0 },
            stopped(stop_rx.clone()),
        ));
        workers.spawn(runner.clone().periodic(
            crate::jobs::renewal_state::RenewalStateRefresh {
                store: st.store.clone(),
                clock: st.clock.clone(),
                metrics: st.metrics.clone(),
                window: renewal_window(&self.config),
                interval: crate::jobs::renewal_state::INTERVAL,
            },
            stopped(stop_rx.clone()),
        ));
        workers.spawn(runner.clone().periodic(
            Cleanup {
                store: st.store.clone(),
                issuer: st.issuer.clone(),
                lifecycle: st.lifecycle.clone(),
                clock: st.clock.clone(),
                interval: Duration::from_secs(self.config.cleanup.interval_secs),
                retention_secs: i64::from(self.config.cleanup.retention_days) * 86_400,
                audit_retention_secs: i64::from(self.config.cleanup.audit_retention_days) * 86_400,
            },
            stopped(stop_rx.clone()),
        ));
        workers.spawn(runner.clone().periodic(
            crate::jobs::ca_health::CaHealth { issuer: st.issuer.clone(), metrics: st.metrics.clone() },
            stopped(stop_rx.clone()),
        ));
        let lease_secs = self.webhooks.lease_secs;
        workers.spawn(runner.clone().queue(
            self.webhooks.clone(),
            Slots { slots: self.webhooks.hooks.len().max(1), lease_secs },
            stopped(stop_rx.clone()),
        ));
        let root_every = self.config.vault.as_ref().map_or(3600, |v| v.roles_refresh_secs);
        workers.spawn(st.trust.clone().keep_fresh(
            st.issuer.clone(),
            Duration::from_secs(root_every),
            stopped(stop_rx.clone()),
        ));
        workers.spawn(self.tls_source.clone().keep_fresh(
            self.serving.clone(),
            self.tls_next,
            stopped(stop_rx.clone()),
        ));
        let acceptor = TlsAcceptor::from(self.tls.clone());
        let limits = self.conn_limits();
        let gate = Gate::new(limits.clone());
        let (close_tx, close_rx) = tokio::sync::watch::channel(false);
        if let Some((listener, router)) = self.admin {
            // The dashboard's peer is the TCP peer: no forwarded address is believed there.
            let admin_limits = ConnLimits { max_connections: 64, trusted_proxies: Arc::default(), ..limits.clone() };
            workers.spawn(serve_admin(listener, acceptor.clone(), router, admin_limits, close_rx.clone()));
        }
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                () = &mut shutdown => break,
                s = gate.slot() => match s { Some(s) => s, None => break },
            };
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(ticket) = gate.admit(slot, peer.ip()) else {
                tracing::debug!(%peer, "connection refused: too many from this address (server.max_connections_per_ip)");
                continue;
            };
            tokio::spawn(crate::conn::serve(
                tcp,
                peer,
                acceptor.clone(),
                self.router.clone(),
                limits.clone(),
                close_rx.clone(),
                ticket,
            ));
        }
        tracing::info!("shutting down: no new connections");
        drop(self.listener);
        let grace = Duration::from_secs(self.config.server.shutdown_grace_secs);
        let _ = close_tx.send(true);
        if !gate.drained(grace).await {
            tracing::warn!("grace period over; closing remaining connections");
        }
        let _ = stop_tx.send(true);
        if tokio::time::timeout(grace, async { while workers.join_next().await.is_some() {} }).await.is_err() {
            tracing::warn!("workers did not park within the grace period; their leases will expire");
        }
        self.state.store.close().await;
        Ok(())
    }
}

/// Binds the dashboard's listener. An address that cannot be bound costs the dashboard, not
/// ACME (logged); an unreadable token file is a configuration error.
async fn admin_listener(config: &Config, state: &AppState) -> Result<Option<(TcpListener, Router)>, AppError> {
    let a = &config.admin;
    if !a.enabled {
        return Ok(None);
    }
    let token = match &a.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| AppError::Tls(format!("admin.token_file {}: {e}", path.display())))?;
            let text = text.trim();
            if text.len() < 16 {
                return Err(AppError::Tls(format!(
                    "admin.token_file {}: the token is shorter than 16 characters",
                    path.display()
                )));
            }
            Some(crate::secret::Secret::new(text))
        }
        None => None,
    };
    let listener = match TcpListener::bind(a.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(addr = %a.listen, error = %e, "cannot listen for the dashboard; serving ACME without it");
            return Ok(None);
        }
    };
    tracing::info!(addr = %listener.local_addr()?, token = token.is_some(), "dashboard listening (HTTPS, read-only)");
    let admin = crate::admin::Admin::new(
        state.clone(),
        renewal_window(config),
        token.as_ref().map(|t| t.expose()),
        config.vault.as_ref().map(|v| v.role.clone()),
    );
    Ok(Some((listener, crate::admin::router(admin))))
}

/// Accepts dashboard connections until `stop` turns true; each is served like an ACME one.
async fn serve_admin(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    limits: ConnLimits,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let gate = Gate::new(limits.clone());
    loop {
        let slot = tokio::select! {
            () = stopped(stop.clone()) => return,
            s = gate.slot() => match s { Some(s) => s, None => return },
        };
        let (tcp, peer) = tokio::select! {
            () = stopped(stop.clone()) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(ticket) = gate.admit(slot, peer.ip()) else { continue };
        tokio::spawn(crate::conn::serve(
            tcp,
            peer,
            acceptor.clone(),
            router.clone(),
            limits.clone(),
            stop.clone(),
            ticket,
        ));
    }
}

/// The CA orders are signed by: Vault when configured, else the local CA.
pub async fn build_issuer(config: &Config, local_ca: &Arc<LocalCa>) -> Result<Arc<dyn Issuer>, AppError> {
    Ok(match &config.vault {
        Some(v) => {
            let vault =
                Arc::new(VaultIssuer::new(vault_settings(v)?).await.map_err(|e| AppError::Vault(e.to_string()))?);
            // Renews (or replaces) the token before it expires, for as long as the issuer lives.
            vault.keep_alive();
            vault
        }
        None => Arc::new(LocalIssuer::new(
            local_ca.clone(),
            Duration::from_secs(u64::from(config.issuance.local_default_days) * 86_400),
            Duration::from_secs(u64::from(config.issuance.local_max_days) * 86_400),
        )),
    })
}

/// `build_issuer`, and with Vault: reads the roles orders are signed with (bounded by
/// `vault.timeout_secs`, so a silent Vault does not hold the start), then again every
/// `vault.roles_refresh_secs` in the background, into `lifecycle.roles`.
async fn build_issuer_reading_roles(
    config: &Config,
    local_ca: &Arc<LocalCa>,
    lifecycle: &Lifecycle,
) -> Result<Arc<dyn Issuer>, AppError> {
    let Some(v) = &config.vault else { return build_issuer(config, local_ca).await };
    let vault = Arc::new(VaultIssuer::new(vault_settings(v)?).await.map_err(|e| AppError::Vault(e.to_string()))?);
    vault.keep_alive();
    let roles = lifecycle.all_roles();
    let first = vault.read_roles(&lifecycle.roles, &roles);
    if tokio::time::timeout(Duration::from_secs(v.timeout_secs), first).await.is_err() {
        tracing::warn!("Vault did not answer the role reads in time; reading them again in the background");
    }
    vault.watch_roles(lifecycle.roles.clone(), roles, Duration::from_secs(v.roles_refresh_secs));
    Ok(vault)
}

/// The first read of the root at start, bounded so that a silent Vault does not hold the start;
/// the background refresh asks again.
async fn read_root(trust: &TrustAnchor, issuer: &Arc<dyn Issuer>) {
    match tokio::time::timeout(Duration::from_secs(10), trust.refresh(&**issuer)).await {
        Ok(Ok(root)) => tracing::info!(sha256 = %root.fingerprint(), subject = %root.subject(), "root certificate"),
        Ok(Err(e @ crate::issuer::TrustError::NoRoot(_))) => {
            tracing::error!(error = %e, "no root certificate to serve; /roots.pem answers 503")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "root certificate not known yet; /roots.pem answers 503 until it is"),
        Err(_) => tracing::warn!("the CA did not give its chain within 10 s; /roots.pem answers 503 until it does"),
    }
}

/// The root `/roots.pem` would serve, from the configuration alone (`vacme root`, no server
/// running): the local CA's `ca.pem` (read, never created), or Vault's `<mount>/ca_chain` with
/// `vault.root_file`.
pub async fn configured_root(config: &Config) -> Result<Root, AppError> {
    let Some(v) = &config.vault else {
        let path = config.server.data_dir.join("ca").join("ca.pem");
        let pem = std::fs::read_to_string(&path).map_err(|e| {
            AppError::LocalCa(format!(
                "{}: {e} (`vacme serve` creates the local CA at its first start)",
                path.display()
            ))
        })?;
        return Ok(crate::issuer::root_of(&[pem], &[])?);
    };
    // `<mount>/ca_chain` needs no token: none is read and no login is made, so this works with
    // any auth method and without the token's file.
    let mut unauthenticated = v.clone();
    unauthenticated.auth = crate::config::VaultAuthConfig {
        token_file: Some(PathBuf::new()),
        ..crate::config::VaultAuthConfig::default()
    };
    let vault = VaultIssuer::new(vault_settings(&unauthenticated)?).await?;
    let trust = TrustAnchor::new(v.root_file.as_deref())?;
    Ok(Arc::unwrap_or_clone(trust.refresh(&vault).await?))
}

/// `check-config`'s note on the Vault roles (TOML comments; empty without Vault). check-config
/// does not call Vault, so it names the roles and what `vacme serve` checks in them.
pub fn roles_note(config: &Config) -> String {
    let Some(v) = &config.vault else { return String::new() };
    let mut roles = std::collections::BTreeSet::new();
    roles.insert(crate::issuer::role::RoleRef::new(&v.mount, &v.role));
    roles.extend(v.roles_by_key.roles().map(|r| crate::issuer::role::RoleRef::new(&v.mount, r)));
    for p in config.profiles.values() {
        let mount = p.mount.as_deref().unwrap_or(&v.mount);
        let named = p.role.iter().map(String::as_str).chain(p.roles_by_key.roles());
        roles.extend(named.map(|r| crate::issuer::role::RoleRef::new(mount, r)));
        if p.role.is_none() {
            // The families the profile does not route go to vacme's own routing, under its mount.
            let fallback = std::iter::once(v.role.as_str()).chain(v.roles_by_key.roles());
            roles.extend(fallback.map(|r| crate::issuer::role::RoleRef::new(mount, r)));
        }
    }
    let mut out =
        String::from("\n# Vault roles vacme signs with (check-config does not call Vault; `vacme serve` reads\n");
    out.push_str("# each at start and every vault.roles_refresh_secs, and /readyz reports a role it cannot read\n");
    out.push_str("# or one that takes names from the CSR). Each needs, in vacme's policy and on the role:\n");
    for r in &roles {
        out.push_str(&format!("#   {}\n#     {}\n", r.policy_line(), r.fix_command()));
    }
    out
}

/// The renewal window of `[renewal]`, for the renewal state of certificates.
/// The PEM roots `https://` webhooks are checked against: `notify.ca_bundle`, or the system's
/// bundle where there is one (`None`: no webhook can use https).
fn webhook_roots(config: &Config) -> Result<Option<Vec<u8>>, String> {
    if let Some(path) = &config.notify.ca_bundle {
        return std::fs::read(path).map(Some).map_err(|e| format!("notify.ca_bundle {}: {e}", path.display()));
    }
    const SYSTEM: [&str; 2] = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"];
    Ok(SYSTEM.iter().find_map(|p| std::fs::read(p).ok()))
}

pub fn renewal_window(config: &Config) -> crate::acme::renewal::WindowPercents {
    crate::acme::renewal::WindowPercents {
        start: config.renewal.window_start_percent,
        end: config.renewal.window_end_percent,
    }
}

/// EAB secret, profiles and renewal settings.
pub fn lifecycle(config: &Config) -> Result<Lifecycle, AppError> {
    let path = config.eab_secret_file();
    let eab = EabSecret::load_or_create(&path).map_err(|e| AppError::Eab(e.to_string()))?;
    Ok(Lifecycle {
        eab,
        eab_required: config.eab.required,
        profiles: config.profiles.clone(),
        default_profile: config.issuance.default_profile.clone(),
        renewal: config.renewal.clone(),
        vault: config.vault.as_ref().map(|v| VaultRoutes {
            mount: v.mount.clone(),
            role: v.role.clone(),
            by_key: v.roles_by_key.clone(),
        }),
        roles: Arc::new(RoleBook::default()),
    })
}

fn vault_settings(v: &crate::config::VaultConfig) -> Result<VaultSettings, AppError> {
    let auth = match v.auth.method {
        VaultAuthMethod::Token => match &v.auth.token_file {
            Some(path) => VaultAuth::TokenFile(path.clone()),
            None => {
                let token =
                    std::env::var("VACME_VAULT_TOKEN").or_else(|_| std::env::var("VAULT_TOKEN")).map_err(|_| {
                        AppError::Vault("no token: set vault.auth.token_file, VACME_VAULT_TOKEN or VAULT_TOKEN".into())
                    })?;
                VaultAuth::Token(Secret::new(token.trim().to_owned()))
            }
        },
        VaultAuthMethod::Approle => {
            let role_id = match (&v.auth.role_id, &v.auth.role_id_file) {
                (Some(id), _) => id.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| AppError::Vault(format!("cannot read {}: {e}", path.display())))?
                    .trim()
                    .to_owned(),
                (None, None) => {
                    return Err(AppError::Vault("approle needs role_id or role_id_file".into()));
                }
            };
            let secret_id_file =
                v.auth.secret_id_file.clone().ok_or_else(|| AppError::Vault("approle needs secret_id_file".into()))?;
            VaultAuth::AppRole { mount: v.auth.approle_mount.clone(), role_id, secret_id_file }
        }
        VaultAuthMethod::Kubernetes => VaultAuth::Kubernetes {
            mount: v.auth.kubernetes_mount.clone(),
            role: v
                .auth
                .kubernetes_role
                .clone()
                .ok_or_else(|| AppError::Vault("kubernetes needs kubernetes_role".into()))?,
            jwt_file: v.auth.jwt_file.clone(),
        },
    };
    let client_cert = match (&v.client_cert_file, &v.client_key_file) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return Err(AppError::Vault("vault.client_cert_file and vault.client_key_file go together".into())),
    };
    Ok(VaultSettings {
        addresses: v.address.0.clone(),
        mount: v.mount.clone(),
        role: v.role.clone(),
        ca_bundle: v.ca_bundle.clone(),
        namespace: v.namespace.clone(),
        timeout: Duration::from_secs(v.timeout_secs),
        auth,
        client_cert,
    })
}

/// Where the serving certificate comes from: files, the local CA, or the issuer, for
/// `tls.names` plus the base URL's host.
fn tls_source(config: &Config, ca: &Arc<LocalCa>, issuer: &Arc<dyn Issuer>, urls: &Urls) -> crate::tls::Source {
    use crate::tls::Source;
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        return Source::Files {
            cert: cert.clone(),
            key: key.clone(),
            every: Duration::from_secs(config.tls.reload_secs),
        };
    }
    let mut names = if config.tls.names.is_empty() {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()]
    } else {
        config.tls.names.clone()
    };
    if let Some(host) = host_of(urls.base())
        && !names.contains(&host)
    {
        names.push(host);
    }
    match config.tls.source {
        TlsSource::Local => Source::Local { ca: ca.clone(), names },
        TlsSource::Issuer => Source::Issuer {
            issuer: issuer.clone(),
            names,
            lifetime: config.tls.lifetime_secs.map(Duration::from_secs),
            fallback: ca.clone(),
        },
    }
}

fn host_of(base: &str) -> Option<String> {
    let rest = base.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(unix)]
pub(crate) fn restrict_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict_dir(_: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

impl From<IssueError> for AppError {
    fn from(e: IssueError) -> Self {
        AppError::Vault(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_base_url() {
        assert_eq!(host_of("https://localhost:8443").as_deref(), Some("localhost"));
        assert_eq!(host_of("https://[::1]:8443/").as_deref(), Some("::1"));
        assert_eq!(host_of("https://acme.lab.example").as_deref(), Some("acme.lab.example"));
    }
}
