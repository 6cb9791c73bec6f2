//! `vacme-bench`: an ACME load generator (instant-acme doing whole flows), and a Vault `sign`
//! load generator for comparison. Bounded in flows and in time; prints per-phase percentiles.
//!
//! ```text
//! vacme-bench flows --directory https://acme.lab.example:8443/directory --root ca.pem \
//!     --concurrency 32 --flows 500 --max-secs 120 --domain bench.lab.example --http01-port 80
//! vacme-bench sign --vault https://vault.lab.example:8200 --root vault-ca.pem \
//!     --token-file token --path pki_int/sign/lab-internal --concurrency 32 --count 2000
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
use bytes::Bytes;
use clap::{Parser, Subcommand};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use instant_acme::{Account, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::{net::UdpSocket, task::JoinSet};

#[derive(Parser)]
#[command(about = "ACME and Vault load generator (bounded in count and time)")]
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
    let report = rt.block_on(async {
        match cli.command {
            Command::Flows { directory, root, concurrency, flows, max_secs, domain, http01_port, dns_port, json } => {
                let r = run_flows(FlowSettings {
                    directory,
                    root,
                    concurrency,
                    flows,
                    max: Duration::from_secs(max_secs),
                    domain,
                    http01_port,
                    dns_port,
                })
                .await;
                (r, json)
            }
            Command::Sign { vault, root, token_file, path, domain, concurrency, count, max_secs, json } => {
                let r =
                    run_signs(vault, root, token_file, path, domain, concurrency, count, Duration::from_secs(max_secs))
                        .await;
                (r, json)
            }
        }
    });
    let (report, json_out) = report;
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
