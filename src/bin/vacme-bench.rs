//! `vacme-bench`: an ACME load generator (instant-acme doing whole flows), a Vault `sign` load
//! generator for comparison, and a store filler, so that a server can be measured on a store
//! that already holds what months of issuance leave behind. Bounded in count (and the load
//! generators in time); prints per-phase percentiles.
//!
//! ```text
//! vacme-bench flows --directory https://acme.lab.example:8443/directory --root ca.pem \
//!     --concurrency 32 --flows 500 --max-secs 120 --domain bench.lab.example --http01-port 80
//! vacme-bench sign --vault https://vault.lab.example:8200 --root vault-ca.pem \
//!     --token-file token --path pki_int/sign/lab-internal --concurrency 32 --count 2000
//! vacme-bench prefill --database sqlite:///var/lib/vacme-bench/vacme.db --certificates 100000
//! ```

// A measurement tool: a failed setup step ends the run with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::Path as UrlPath, routing::get};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use instant_acme::{Account, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::{net::UdpSocket, task::JoinSet};
use vacme::{
    acme::{Identifier as AcmeIdentifier, Problem, types::ChallengeType as ChallType},
    store::{AuditEvent, NewAccountOutcome, NewAuthz, NewCertificate, NewOrder as StoreOrder, Store},
};

#[derive(Parser)]
#[command(about = "ACME and Vault load generator, and store filler (bounded in count and time)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Whole ACME flows: newOrder, http-01 answered in-process, finalize with a fresh P-256
    /// key, download.
    Flows {
        /// The server's directory URL.
        #[arg(long)]
        directory: String,
        /// PEM file with the CA that signed the server's HTTPS certificate.
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Flows to run (at most).
        #[arg(long, default_value_t = 200)]
        flows: usize,
        /// Stop starting flows after this many seconds.
        #[arg(long, default_value_t = 120)]
        max_secs: u64,
        /// Names are `<run>-<n>.<domain>`; the server must resolve them to this machine.
        #[arg(long, default_value = "bench.localhost")]
        domain: String,
        /// Port the http-01 responder listens on (the port the server validates against).
        #[arg(long, default_value_t = 5002)]
        http01_port: u16,
        /// Also answer DNS on 127.0.0.1:<port> (A 127.0.0.1 for every name), for servers that
        /// resolve through a configured nameserver.
        #[arg(long)]
        dns_port: Option<u16>,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Vault `sign` calls with fresh P-256 CSRs.
    Sign {
        /// Vault or OpenBao address.
        #[arg(long)]
        vault: String,
        /// PEM file with the CA of Vault's HTTPS certificate (omit for http).
        #[arg(long)]
        root: Option<PathBuf>,
        #[arg(long)]
        token_file: PathBuf,
        /// e.g. pki_int/sign/lab-internal
        #[arg(long)]
        path: String,
        #[arg(long, default_value = "bench.localhost")]
        domain: String,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 120)]
        max_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// Fills a store with issued certificates through vacme's store API, each along the path a
    /// real flow takes (order, three challenges, validation, finalize, issuance, audit), dated
    /// over the past 90 days; and leaves some abandoned orders, expired without a certificate.
    Prefill {
        /// Store URL, e.g. sqlite:///tmp/vacme.db (created if missing; added to if not).
        #[arg(long)]
        database: String,
        /// Certificates to write.
        #[arg(long)]
        certificates: usize,
        /// Accounts the certificates are spread over.
        #[arg(long, default_value_t = 100)]
        accounts: usize,
        /// Orders left pending until they expired, as clients that gave up leave them.
        #[arg(long, default_value_t = 300)]
        abandoned: usize,
        /// Certificates in flight at once (the store's writer commits them in groups).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

/// Longest one flow may take before it counts as an error.
const FLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// The phases of one flow, in order.
const PHASES: [&str; 4] = ["new_order", "validation", "finalize", "download"];

#[derive(Default)]
struct Results {
    ok: usize,
    errors: BTreeMap<String, usize>,
    phases: HashMap<&'static str, Vec<Duration>>,
}

impl Results {
    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (report, json_out) = match cli.command {
        Command::Flows { directory, root, concurrency, flows, max_secs, domain, http01_port, dns_port, json } => {
            let s = FlowSettings {
                directory,
                root,
                concurrency,
                flows,
                max: Duration::from_secs(max_secs),
                domain,
                http01_port,
                dns_port,
            };
            (rt.block_on(run_flows(s)), json)
        }
        Command::Sign { vault, root, token_file, path, domain, concurrency, count, max_secs, json } => {
            let max = Duration::from_secs(max_secs);
            (rt.block_on(run_signs(vault, root, token_file, path, domain, concurrency, count, max)), json)
        }
        Command::Prefill { database, certificates, accounts, abandoned, concurrency } => {
            return rt.block_on(prefill(PrefillSettings { database, certificates, accounts, abandoned, concurrency }));
        }
    };
    if json_out {
        println!("{report}");
    } else {
        print_table(&report);
    }
}

struct FlowSettings {
    directory: String,
    root: PathBuf,
    concurrency: usize,
    flows: usize,
    max: Duration,
    domain: String,
    http01_port: u16,
    dns_port: Option<u16>,
}

async fn run_flows(s: FlowSettings) -> Value {
    let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    responder(s.http01_port, answers.clone()).await;
    if let Some(port) = s.dns_port {
        dns_responder(port).await;
    }
    // One account per worker, made before the clock starts (a fleet's devices already have theirs).
    let mut accounts = Vec::with_capacity(s.concurrency);
    for _ in 0..s.concurrency {
        let create = Account::builder_with_http(Box::new(http_client(&s.root))).create(
            &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
            s.directory.clone(),
            None,
        );
        let (account, _) = match tokio::time::timeout(FLOW_TIMEOUT, create).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => panic!("cannot create an account at {}: {e}", s.directory),
            Err(_) => panic!("{} did not answer newAccount within {FLOW_TIMEOUT:?}", s.directory),
        };
        accounts.push(account);
    }
    let run = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis());
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Results::default()));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for account in accounts {
        let (next, results, answers) = (next.clone(), results.clone(), answers.clone());
        let (run, domain, flows, max) = (run.clone(), s.domain.clone(), s.flows, s.max);
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= flows || started.elapsed() >= max {
                    return;
                }
                let name = format!("{run}-{n}.{domain}");
                // A server that stops answering costs this flow, not the whole run.
                let outcome = tokio::time::timeout(FLOW_TIMEOUT, flow(&account, &name, &answers))
                    .await
                    .unwrap_or_else(|_| Err("flow timeout".into()));
                match outcome {
                    Ok(times) => {
                        let mut r = results.lock().unwrap();
                        r.ok += 1;
                        for (phase, t) in PHASES.iter().zip(times) {
                            r.phases.entry(phase).or_default().push(t);
                        }
                    }
                    Err(kind) => results.lock().unwrap().error(kind),
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    let r = results.lock().unwrap();
    summary("flows", r.ok, secs, s.concurrency, &r.errors, &r.phases)
}

/// An HTTPS client trusting `root`, with TCP_NODELAY: without it, a POST's headers and body go
/// out as two segments and Nagle's algorithm holds the second for the peer's delayed ACK
/// (about 40 ms on Linux loopback), which would measure the client, not the server.
fn http_client(root: &std::path::Path) -> HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    HyperClient::builder(TokioExecutor::new()).build(https)
}

/// Polls quickly and evenly for every server: 2 ms, then x1.3, honouring Retry-After.
fn polling() -> RetryPolicy {
    RetryPolicy::new().initial_delay(Duration::from_millis(2)).backoff(1.3).timeout(Duration::from_secs(90))
}

/// One whole flow; the time of each phase, or the kind of error.
async fn flow(
    account: &Account,
    name: &str,
    answers: &Mutex<HashMap<String, String>>,
) -> Result<[Duration; 4], String> {
    let t0 = Instant::now();
    let ids = [Identifier::Dns(name.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(kind)?;
    let mut tokens = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(kind)?;
            let mut chall = authz.challenge(ChallengeType::Http01).ok_or("no http-01 offered")?;
            answers.lock().unwrap().insert(chall.token.clone(), chall.key_authorization().as_str().to_owned());
            tokens.push(chall.token.clone());
            chall.set_ready().await.map_err(kind)?;
        }
    }
    let t1 = Instant::now();
    let status = order.poll_ready(&polling()).await.map_err(kind)?;
    for t in &tokens {
        answers.lock().unwrap().remove(t);
    }
    if status != OrderStatus::Ready {
        return Err(format!("order {status:?}"));
    }
    let t2 = Instant::now();
    order.finalize().await.map_err(kind)?;
    let t3 = Instant::now();
    order.poll_certificate(&polling()).await.map_err(kind)?;
    let t4 = Instant::now();
    Ok([t1 - t0, t2 - t1, t3 - t2, t4 - t3])
}

/// A problem type (its last URN part), or what else went wrong.
fn kind(e: instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            p.r#type.as_deref().unwrap_or("problem").rsplit(':').next().unwrap_or("problem").to_owned()
        }
        instant_acme::Error::Timeout(_) => "timeout".into(),
        other => format!("client: {}", other.to_string().chars().take(80).collect::<String>()),
    }
}

/// The http-01 responder: token -> key authorization.
async fn responder(port: u16, answers: Arc<Mutex<HashMap<String, String>>>) {
    let app = Router::new().route(
        "/.well-known/acme-challenge/{token}",
        get(move |UrlPath(token): UrlPath<String>| {
            let answers = answers.clone();
            async move {
                match answers.lock().unwrap().get(&token) {
                    Some(v) => (http::StatusCode::OK, v.clone()),
                    None => (http::StatusCode::NOT_FOUND, String::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port} for http-01: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

/// Answers every A query with 127.0.0.1 and everything else with an empty NOERROR.
async fn dns_responder(port: u16) {
    let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}/udp for DNS: {e}"));
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
            if let Some(answer) = dns_answer(&buf[..n]) {
                let _ = sock.send_to(&answer, peer).await;
            }
        }
    });
}

fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    while *q.get(i)? != 0 {
        i += 1 + usize::from(q[i]);
    }
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let question_end = i + 5;
    let mut out = q[..question_end.min(q.len())].to_vec();
    out[2] = 0x84 | (q[2] & 0x01); // response, authoritative, RD copied
    out[3] = 0x00;
    let is_a = qtype == 1;
    out[6..8].copy_from_slice(&(u16::from(is_a)).to_be_bytes());
    out[8..12].copy_from_slice(&[0, 0, 0, 0]);
    if is_a {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}

#[allow(clippy::too_many_arguments)]
async fn run_signs(
    vault: String,
    root: Option<PathBuf>,
    token_file: PathBuf,
    path: String,
    domain: String,
    concurrency: usize,
    count: usize,
    max: Duration,
) -> Value {
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    let mut client = reqwest::Client::builder();
    if let Some(root) = root {
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(root).unwrap()).unwrap());
    }
    let client = client.build().unwrap();
    let url = format!("{}/v1/{path}", vault.trim_end_matches('/'));
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Results::default()));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, token, domain) = (client.clone(), url.clone(), token.clone(), domain.clone());
        let (next, results) = (next.clone(), results.clone());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count || started.elapsed() >= max {
                    return;
                }
                let name = format!("sign-{n}.{domain}");
                let key = rcgen::KeyPair::generate().unwrap();
                let mut params = rcgen::CertificateParams::new(vec![name.clone()]).unwrap();
                // rcgen's default subject CN is not a name any role allows.
                params.distinguished_name = rcgen::DistinguishedName::new();
                params.distinguished_name.push(rcgen::DnType::CommonName, name.clone());
                let csr = params.serialize_request(&key).unwrap();
                let t = Instant::now();
                let res = client
                    .post(&url)
                    .header("X-Vault-Token", &token)
                    .json(&json!({"csr": csr.pem().unwrap(), "common_name": name}))
                    .send()
                    .await;
                let elapsed = t.elapsed();
                let mut r = results.lock().unwrap();
                match res {
                    Ok(resp) if resp.status().is_success() => {
                        r.ok += 1;
                        r.phases.entry("sign").or_default().push(elapsed);
                    }
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        drop(r);
                        let body = resp.text().await.unwrap_or_default();
                        let why: String = body.chars().take(100).collect();
                        results.lock().unwrap().error(format!("HTTP {status}: {why}"));
                    }
                    Err(e) => r.error(format!("transport: {}", e.to_string().chars().take(60).collect::<String>())),
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    let r = results.lock().unwrap();
    summary("signs", r.ok, secs, concurrency, &r.errors, &r.phases)
}

struct PrefillSettings {
    database: String,
    certificates: usize,
    accounts: usize,
    abandoned: usize,
    concurrency: usize,
}

const DAY: i64 = 86_400;
/// How far back the prefilled certificates go: one 90-day lifetime.
const PREFILL_SPAN: i64 = 90 * DAY;
/// The order lifetime vacme gives (`Limits::order_ttl_secs`).
const ORDER_TTL: i64 = 7 * DAY;
/// The local CA's default certificate lifetime (`[issuance] local_default_days`).
const CERT_LIFETIME: i64 = 90 * DAY;
/// The clean-up's default retention of expired orders (`[cleanup] retention_days`).
const RETENTION: i64 = 30 * DAY;
/// The workers' leases on SQLite with the local CA (app.rs: validation and issuance).
const VALIDATION_LEASE: i64 = 40;
const ISSUANCE_LEASE: i64 = 30;

/// What every prefilled certificate shares: the issuing CA's certificate and key identifier.
struct Material {
    rng: SystemRandom,
    ca_pem: String,
    aki: [u8; 20],
}

impl Material {
    fn new() -> Self {
        let rng = SystemRandom::new();
        // Two certificates, about 1.5 KB of base64 together: a leaf of 640 DER bytes and the CA's
        // of 480. The local CA's P-256 chain is about 1.2 KB; a CA that adds AIA and CRL URLs
        // and longer names issues larger ones.
        let ca_pem = pem_block(&random_bytes(&rng, 480));
        let mut aki = [0u8; 20];
        aki.copy_from_slice(&random_bytes(&rng, 20));
        Self { rng, ca_pem, aki }
    }

    /// A leaf with a fresh 16-byte serial (positive, no leading zero byte, as the local CA
    /// makes them), and its RFC 9773 certID.
    fn leaf(&self, not_before: i64) -> NewCertificate {
        let mut serial = random_bytes(&self.rng, 16);
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        let ari_id = format!("{}.{}", URL_SAFE_NO_PAD.encode(self.aki), URL_SAFE_NO_PAD.encode(&serial));
        NewCertificate {
            serial: hex,
            issuer: "local".into(),
            chain_pem: format!("{}{}", pem_block(&random_bytes(&self.rng, 640)), self.ca_pem),
            not_before,
            not_after: not_before + CERT_LIFETIME,
            ari_id: Some(ari_id),
        }
    }
}

fn random_bytes(rng: &SystemRandom, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rng.fill(&mut buf).expect("system randomness");
    buf
}

/// A CERTIFICATE block: base64 in 64-character lines, as a CA's PEM has them.
fn pem_block(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// An account key as a client sends it (a P-256 JWK) and its RFC 7638 thumbprint.
fn account_key(rng: &SystemRandom) -> (String, Value) {
    let (x, y) = (URL_SAFE_NO_PAD.encode(random_bytes(rng, 32)), URL_SAFE_NO_PAD.encode(random_bytes(rng, 32)));
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let thumbprint = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()));
    (thumbprint, json!({"crv": "P-256", "kty": "EC", "x": x, "y": y}))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The order a client asks for one name: what the newOrder handler records (one authorization
/// with the challenges `Policy::challenges_for` offers a DNS name).
fn one_name_order(name: String) -> StoreOrder {
    let id = AcmeIdentifier::Dns(name);
    let challenges = vec![ChallType::Http01, ChallType::Dns01, ChallType::TlsAlpn01];
    StoreOrder {
        identifiers: vec![id.clone()],
        authzs: vec![NewAuthz { identifier: id, challenges }],
        ..Default::default()
    }
}

async fn prefill(s: PrefillSettings) {
    let store = Store::connect_with(&s.database, false)
        .await
        .unwrap_or_else(|e| panic!("cannot open the store {}: {e}", s.database));
    let before = store.counts().await.unwrap();
    if before.certificates > 0 {
        println!("prefill: the store already holds {} certificates; adding to them", before.certificates);
    }
    let material = Arc::new(Material::new());
    let now = unix_now();
    let started = Instant::now();

    // The accounts exist before their first order, each created as newAccount does it.
    let mut accounts = Vec::with_capacity(s.accounts.max(1));
    for a in 0..s.accounts.max(1) {
        let created = now - PREFILL_SPAN - DAY + a as i64 * 60;
        let (thumbprint, jwk) = account_key(&material.rng);
        let ip = std::net::IpAddr::from([10, 0, (a / 250) as u8, (a % 250 + 1) as u8]);
        let account = match store
            .create_account(&thumbprint, &jwk, &[], true, None, Some(&ip.to_string()), created)
            .await
            .unwrap()
        {
            NewAccountOutcome::Created(acct) => acct,
            _ => panic!("a fresh random key already had an account"),
        };
        let event = AuditEvent::by_account("account_created", &account.id).client_ip(Some(ip));
        store.insert_audit(&event, created).await.unwrap();
        accounts.push(account.id);
    }
    let accounts = Arc::new(accounts);

    // The certificates, oldest first: certificate n is dated `now - PREFILL_SPAN * (N - n) / N`.
    let total = s.certificates;
    let (next, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = JoinSet::new();
    for _ in 0..s.concurrency.max(1) {
        let (store, material, accounts, next, done) =
            (store.clone(), material.clone(), accounts.clone(), next.clone(), done.clone());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let at = now - (PREFILL_SPAN as f64 * (total - n) as f64 / total as f64) as i64;
                let account = &accounts[n % accounts.len()];
                issue_one(&store, &material, account, n, at).await.unwrap_or_else(|e| panic!("certificate {n}: {e}"));
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(())) => {}
                Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
                None => break,
            },
            _ = ticker.tick() => {
                let d = done.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprintln!("prefill: {d}/{total} certificates in {secs:.0} s ({:.0}/s)", d as f64 / secs);
            }
        }
    }
    let issued_secs = started.elapsed().as_secs_f64();

    // Abandoned orders: created 8.5 to 36.5 days ago, their authorization fetched, never
    // answered. The clean-up run below (as vacme's hourly one) makes them invalid; those that
    // expired more than `RETENTION` ago it would already have deleted.
    for a in 0..s.abandoned {
        let at = now - ORDER_TTL - RETENTION + DAY / 2 + (28 * DAY * a as i64) / s.abandoned as i64;
        let account = &accounts[a % accounts.len()];
        let order = store
            .create_order(account, &one_name_order(format!("{a}.abandoned.prefill.bench.test")), at, at + ORDER_TTL)
            .await
            .unwrap()
            .expect("an order that replaces nothing is always created");
        store.authorization(&order.authz_ids[0]).await.unwrap();
    }
    let expired = serde_json::to_value(Problem::malformed("the order expired before it was finalized")).unwrap();
    store.cleanup(now, RETENTION, &expired).await.unwrap();
    let counts = store.counts().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    store.close().await;
    drop(store);

    println!(
        "prefill: {total} certificates in {issued_secs:.1} s ({:.0} certificates/s at concurrency {}), \
         {} accounts, {} abandoned orders; {secs:.1} s in all",
        total as f64 / issued_secs.max(1e-9),
        s.concurrency,
        accounts.len(),
        s.abandoned
    );
    println!(
        "prefill: the store holds {} accounts, {} orders, {} authorizations, {} challenges, {} certificates",
        counts.accounts, counts.orders, counts.authorizations, counts.challenges, counts.certificates
    );
    match sqlite_file(&s.database) {
        Some(path) => {
            let bytes = settled_size(&path).await;
            println!(
                "prefill: {} is {:.1} MiB: {:.0} bytes per certificate",
                path.display(),
                bytes as f64 / (1024.0 * 1024.0),
                bytes as f64 / counts.certificates.max(1) as f64
            );
        }
        None => println!("prefill: not a SQLite file; no size to report"),
    }
}

/// One certificate along the path a real flow takes through the store: newOrder, the client
/// reading its authorization and answering http-01, the validation worker's claim and success,
/// finalize, the issuance worker's claim, signing intent and result, and the audit event.
async fn issue_one(store: &Store, m: &Material, account: &str, n: usize, at: i64) -> Result<(), String> {
    let err = |e: vacme::store::StoreError| e.to_string();
    let order = store
        .create_order(account, &one_name_order(format!("{n}.prefill.bench.test")), at, at + ORDER_TTL)
        .await
        .map_err(err)?
        .ok_or("order not created")?;
    let authz = store.authorization(&order.authz_ids[0]).await.map_err(err)?.ok_or("authorization missing")?;
    let chall = authz.challenges.iter().find(|c| c.kind == ChallType::Http01).ok_or("no http-01 challenge")?;
    if !store.start_challenge(&chall.id, at + 1).await.map_err(err)? {
        return Err("challenge did not start".into());
    }
    // The worker claims whatever is due (maybe another task's challenge); the result is
    // recorded for this one either way, as only `processing` is required.
    store.claim_due_challenges(at + 1, at + 1 + VALIDATION_LEASE, 1).await.map_err(err)?;
    store.challenge_succeeded(&chall.id, at + 2).await.map_err(err)?;
    let csr = random_bytes(&m.rng, 250);
    if !store.begin_issuance(&order.id, &csr, at + 3).await.map_err(err)? {
        return Err("order was not ready at finalize".into());
    }
    let claimed = store.claim_due_issuances(at + 3, at + 3 + ISSUANCE_LEASE, 1).await.map_err(err)?;
    let order = match claimed.items.into_iter().find(|o| o.id == order.id) {
        Some(o) => o,
        None => store.order(&order.id).await.map_err(err)?.ok_or("order missing")?,
    };
    store.mark_signing(&order.id, at + 3).await.map_err(err)?;
    let cert = m.leaf(at + 3);
    let cert_id = store.issuance_succeeded(&order, &cert, at + 4).await.map_err(err)?;
    let event = AuditEvent::by_account("issued", account)
        .order(&order.id)
        .certificate(&cert_id, &cert.serial)
        .identifiers(&order.identifiers)
        .detail("issuer local");
    store.insert_audit(&event, at + 4).await.map_err(err)
}

/// The file of a `sqlite://` URL.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// The database's size once the last connection has folded the WAL back into it (the writer
/// thread closes its connection just after the store is dropped): waits up to 5 s, then counts
/// whatever WAL is left as part of it.
async fn settled_size(path: &std::path::Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    for _ in 0..50 {
        if !wal.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    size(path) + size(&wal)
}

fn summary(
    what: &str,
    ok: usize,
    secs: f64,
    concurrency: usize,
    errors: &BTreeMap<String, usize>,
    phases: &HashMap<&'static str, Vec<Duration>>,
) -> Value {
    let mut ph = serde_json::Map::new();
    let mut names: Vec<&&str> = phases.keys().collect();
    names.sort_by_key(|n| PHASES.iter().position(|p| *p == **n).unwrap_or(usize::MAX));
    for name in names {
        let mut v = phases[*name].clone();
        v.sort();
        let pct = |p: f64| -> f64 {
            let i = ((v.len() as f64 - 1.0) * p).round() as usize;
            v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        ph.insert((*name).to_owned(), json!({"p50_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}));
    }
    json!({
        "what": what, "ok": ok, "secs": secs, "per_sec": ok as f64 / secs.max(1e-9),
        "concurrency": concurrency, "errors": errors, "phases": ph,
    })
}

fn print_table(r: &Value) {
    println!(
        "{} {} ok in {:.2} s at concurrency {}: {:.1}/s",
        r["ok"],
        r["what"],
        r["secs"].as_f64().unwrap_or(0.0),
        r["concurrency"],
        r["per_sec"].as_f64().unwrap_or(0.0)
    );
    if let Some(errors) = r["errors"].as_object().filter(|e| !e.is_empty()) {
        for (k, v) in errors {
            println!("  error {k}: {v}");
        }
    }
    println!("  {:<12} {:>9} {:>9} {:>9}", "phase", "p50 ms", "p95 ms", "p99 ms");
    if let Some(phases) = r["phases"].as_object() {
        for (name, p) in phases {
            let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
            println!("  {name:<12} {:>9.2} {:>9.2} {:>9.2}", f("p50_ms"), f("p95_ms"), f("p99_ms"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_answers_a_with_loopback() {
        // Query id 0x1234, RD, one question: a.bench.test A IN.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["a", "bench", "test"] {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let a = dns_answer(&q).unwrap();
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1, "one answer");
        assert_eq!(&a[a.len() - 4..], &[127, 0, 0, 1]);
        let mut aaaa = q.clone();
        let n = aaaa.len();
        aaaa[n - 3] = 28;
        let r = dns_answer(&aaaa).unwrap();
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0, "no AAAA");
        assert!(dns_answer(&q[..5]).is_none());
    }
}
