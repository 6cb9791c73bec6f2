//! Vault in HA as the homelab runs it: a three-node OpenBao cluster on Raft storage
//! (`cluster.rs`), vacme given the three addresses, and bursts of whole ACME flows from the load
//! generator (`vacme-bench flows`) while the cluster loses its active node to SIGKILL, takes the
//! node back, and loses another to a graceful stop. Every order ends valid and is signed exactly
//! once (the certificates in pki_int are counted against the orders), and no client sees an
//! error. Then the same with one address whose only node disappears and comes back.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    VACME, Vacme,
    bao::ZONE,
    cluster::Cluster,
    config_args,
    dns::TestDns,
    install_provider,
    procs::{Subprocess, free_port, tools_bin, wait_until},
    takeover::counter,
};

/// The load generator cargo built for this test run.
const BENCH: &str = env!("CARGO_BIN_EXE_vacme-bench");

/// Flows in the burst that loses the active node, and in the one that loses another node, all
/// of each burst's flows in flight at once.
const FIRST: usize = 100;
const SECOND: usize = 100;
/// Flows in the burst whose only node disappears.
const SINGLE: usize = 40;
/// How long the single node stays away.
const OUTAGE: Duration = Duration::from_secs(6);
/// Flows in flight at once in that burst.
const SINGLE_CONCURRENCY: usize = 16;

/// vacme in front of the cluster at `addresses`, with its http-01 port and config file. New
/// accounts per address are not limited: each burst makes one per flow in flight, from loopback.
async fn vacme_for(dir: &Path, dns: &TestDns, addresses: &[String], token_file: &Path) -> (Vacme, u16, PathBuf) {
    let (port, http01) = (free_port(), free_port());
    let list = addresses.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let extra = format!(
        "[limits]\naccounts_per_ip_per_hour = 0\n\n\
         [vault]\naddress = [{list}]\nmount = \"pki_int\"\nrole = \"lab-internal\"\ntimeout_secs = 10\n\n\
         [vault.auth]\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let args = config_args(dir, port, http01, dns, &extra);
    let config = PathBuf::from(&args[1]);
    let vacme = Vacme::start(args, port, &dir.join("data"), dir).await;
    (vacme, http01, config)
}

/// What each test runs: a cluster of OpenBao nodes (how long it took to form), the test zone's
/// DNS server, and vacme in front of every node, with a client for its `/metrics` and `/readyz`.
struct Lab {
    vacme: Vacme,
    http01: u16,
    config: PathBuf,
    http: reqwest::Client,
    cluster: Cluster,
    formed: Duration,
    dns: TestDns,
    dir: tempfile::TempDir,
}

impl Lab {
    /// None (with a loud message) when the tools are not installed.
    async fn start(test: &str, nodes: usize) -> Option<Lab> {
        let tools = tools_bin(test)?;
        install_provider();
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let cluster = Cluster::start(&tools, dir.path(), nodes).await;
        let formed = started.elapsed();
        let dns = TestDns::with_zone(ZONE, Ipv4Addr::LOCALHOST).await;
        let (vacme, http01, config) =
            vacme_for(dir.path(), &dns, &cluster.addresses(), &cluster.setup.token_file).await;
        let http = metrics_client(&vacme);
        Some(Lab { vacme, http01, config, http, cluster, formed, dns, dir })
    }
}

/// A burst of whole ACME flows (newOrder, http-01, finalize, download) from the load generator,
/// bounded in count and time, running while the test breaks the cluster.
struct Burst {
    process: Subprocess,
    flows: usize,
}

impl Burst {
    fn start(vacme: &Vacme, http01: u16, (flows, concurrency): (usize, usize), label: &str, dir: &Path) -> Burst {
        let mut cmd = Command::new(BENCH);
        cmd.args(["flows", "--directory", &vacme.directory(), "--root"])
            .arg(vacme.ca_bundle())
            .args(["--concurrency", &concurrency.to_string(), "--flows", &flows.to_string(), "--max-secs", "120"])
            .args(["--domain", &format!("{label}.{ZONE}"), "--http01-port", &http01.to_string(), "--json"]);
        Burst { process: Subprocess::spawn(&format!("bench-{label}"), &mut cmd, dir), flows }
    }

    /// Waits until pki_int holds `count` certificates, while this burst is still running.
    async fn until_signed(&mut self, cluster: &Cluster, count: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let signed = cluster.issued_now().await.unwrap_or(0);
            if signed >= count {
                return signed;
            }
            assert!(
                self.process.exited().is_none(),
                "the burst ended with {signed} certificates signed, before {count}\n{}",
                self.process.output()
            );
            assert!(Instant::now() < deadline, "{count} certificates not signed in time ({signed})");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The load generator's report, once it has finished (it stops starting flows after 120 s
    /// and gives each at most 30 s); asserts that every flow got its certificate.
    async fn report(mut self) -> Value {
        let done = wait_until(Duration::from_secs(200), || {
            let exited = self.process.exited().is_some();
            async move { exited }
        })
        .await;
        assert!(done, "the load generator did not finish\n{}", self.process.output());
        let out = std::fs::read_to_string(&self.process.stdout).unwrap();
        let report: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}\n{}", self.process.output()));
        assert_eq!(report["errors"], serde_json::json!({}), "no client saw an error: {report}");
        assert_eq!(report["ok"], self.flows, "every order ended valid with its certificate: {report}");
        report
    }
}

/// `secs`, and the p99 of finalize and download, for the figures printed.
fn figures(report: &Value) -> String {
    let p99 = |phase: &str| report["phases"][phase]["p99_ms"].as_f64().unwrap_or(0.0);
    format!(
        "{} flows ok in {:.1} s (p99 finalize {:.0} ms, download {:.0} ms)",
        report["ok"],
        report["secs"].as_f64().unwrap_or(0.0),
        p99("finalize"),
        p99("download")
    )
}

fn metrics_client(vacme: &Vacme) -> reqwest::Client {
    let pem = std::fs::read(vacme.ca_bundle()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The Vault address vacme uses now, from `/metrics`.
async fn address_in_use(http: &reqwest::Client, port: u16) -> String {
    let text = http.get(format!("https://localhost:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("vacme_vault_address_in_use{") && l.ends_with(" 1"))
        .unwrap_or_else(|| panic!("no address in use in /metrics:\n{text}"));
    line.split('"').nth(1).unwrap().to_owned()
}

/// Why vacme moved between nodes, counted per reason, from its log.
fn failover_reasons(vacme: &Vacme) -> String {
    let log = std::fs::read_to_string(&vacme.process.stderr).unwrap_or_default();
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for line in log.lines().filter(|l| l.contains("moving to the next address")) {
        let reason = line.split("reason=").nth(1).map_or("?", |r| r.split(" failovers=").next().unwrap_or(r));
        *reasons.entry(reason.trim_matches('"').to_owned()).or_default() += 1;
    }
    reasons.iter().map(|(r, n)| format!("{n} x {r}")).collect::<Vec<_>>().join("; ")
}

/// A serial without separators or leading zeros, lower case.
fn plain(serial: &str) -> String {
    serial
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase()
        .trim_start_matches('0')
        .to_owned()
}

/// The serials of vacme's certificates (`vacme certs list`) and of pki_int's are the same set,
/// with as many certificates in pki_int as orders: none signed twice, none missing.
async fn one_certificate_per_order(cluster: &Cluster, config: &Path, orders: usize) {
    let in_vault: Vec<String> = cluster.issued_serials().await;
    let out = Command::new(VACME).arg("--config").arg(config).args(["certs", "list", "--json"]).output().unwrap();
    assert!(out.status.success(), "vacme certs list: {}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let in_vacme: BTreeSet<String> =
        listed.as_array().unwrap().iter().map(|c| plain(c["serial"].as_str().unwrap())).collect();
    assert_eq!(in_vault.len(), orders, "one certificate in pki_int per order");
    assert_eq!(listed.as_array().unwrap().len(), orders, "one certificate in vacme per order");
    assert_eq!(in_vault.iter().map(|s| plain(s)).collect::<BTreeSet<_>>(), in_vacme, "the same certificates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_its_leader_mid_burst_and_every_order_is_signed_once() {
    const TEST: &str = "a_three_node_cluster_loses_its_leader_mid_burst_and_every_order_is_signed_once";
    let Some(lab) = Lab::start(TEST, 3).await else { return };
    // `dir` first: dropped last, after the processes that write into it.
    let Lab { dir, dns: _dns, mut cluster, formed, http, config, http01, vacme } = lab;
    let failovers = async || counter(&http, vacme.port, "vacme_vault_failovers_total", "").await;

    // The active node is killed once a third of the first burst is signed.
    let mut burst = Burst::start(&vacme, http01, (FIRST, FIRST), "ha1", dir.path());
    let leader = cluster.leader().await;
    let at_kill = burst.until_signed(&cluster, FIRST / 3).await;
    cluster.kill(leader);
    let killed = Instant::now();
    let (elected, election) = cluster.new_leader(leader, killed).await;
    let first = burst.report().await;
    let failovers_first = failovers().await;
    eprintln!(
        "burst 1 (cluster formed in {:.1} s): {}; {} killed (SIGKILL) with {at_kill} signed, {} active {:.1} s \
         later; vacme failovers: {failovers_first}",
        formed.as_secs_f64(),
        figures(&first),
        cluster.nodes[leader].id,
        cluster.nodes[elected].id,
        election.as_secs_f64()
    );
    // However often vacme went round the list while the nodes elected, another node took over
    // once (twice if a standby served before the new active node did).
    assert!((1..=3).contains(&failovers_first), "one failover for one lost node: {failovers_first}");
    assert_ne!(address_in_use(&http, vacme.port).await, cluster.nodes[leader].addr, "vacme left the killed node");
    one_certificate_per_order(&cluster, &config, FIRST).await;

    // The killed node comes back from its own data and rejoins.
    let rejoining = Instant::now();
    cluster.restart(leader).await;
    let rejoined = rejoining.elapsed();

    // The active node now (not the one killed) is stopped gracefully mid-burst: it steps down,
    // and the two left, one of them the node that rejoined, elect another.
    let mut burst = Burst::start(&vacme, http01, (SECOND, SECOND), "ha2", dir.path());
    let stopped = cluster.leader().await;
    assert_ne!(stopped, leader, "the killed node is back as a standby");
    let at_stop = burst.until_signed(&cluster, FIRST + SECOND / 3).await;
    let in_use = address_in_use(&http, vacme.port).await;
    let stopping = Instant::now();
    cluster.stop(stopped);
    let (elected_again, election_again) = cluster.new_leader(stopped, stopping).await;
    let second = burst.report().await;
    let failovers_second = failovers().await - failovers_first;
    eprintln!(
        "burst 2 ({} rejoined in {:.1} s): {}; {} (active, {}) stopped (SIGTERM) with {} of the burst signed, \
         {} active {:.1} s after the signal; vacme failovers: {failovers_second}",
        cluster.nodes[leader].id,
        rejoined.as_secs_f64(),
        figures(&second),
        cluster.nodes[stopped].id,
        if in_use == cluster.nodes[stopped].addr { "the node vacme used" } else { "vacme used a standby" },
        at_stop - FIRST,
        cluster.nodes[elected_again].id,
        election_again.as_secs_f64(),
    );
    if in_use == cluster.nodes[stopped].addr {
        assert!(failovers_second >= 1, "another node took over from the stopped one");
    }
    one_certificate_per_order(&cluster, &config, FIRST + SECOND).await;
    eprintln!("vacme's moves round the list, by reason: {}", failover_reasons(&vacme));
    eprintln!("{} certificates in pki_int for {} orders: duplicates 0", FIRST + SECOND, FIRST + SECOND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_address_whose_node_disappears_keeps_orders_processing_until_it_returns() {
    const TEST: &str = "a_single_address_whose_node_disappears_keeps_orders_processing_until_it_returns";
    let Some(lab) = Lab::start(TEST, 1).await else { return };
    let Lab { dir, dns: _dns, mut cluster, http, config, http01, vacme, .. } = lab;
    let readyz = async || {
        http.get(format!("https://localhost:{}/readyz", vacme.port)).send().await.map(|r| r.status().as_u16()).ok()
    };

    let mut burst = Burst::start(&vacme, http01, (SINGLE, SINGLE_CONCURRENCY), "gone", dir.path());
    let at_kill = burst.until_signed(&cluster, SINGLE / 4).await;
    cluster.kill(0);
    let gone = Instant::now();
    // What the operator sees meanwhile: not ready, and finalized orders waiting for the CA.
    let unready = wait_until(Duration::from_secs(20), || async { readyz().await == Some(503) }).await;
    assert!(unready, "/readyz reports the CA gone");
    let waiting = wait_until(Duration::from_secs(20), || async {
        counter(&http, vacme.port, "vacme_orders_processing", "").await >= 1
    })
    .await;
    assert!(waiting, "orders wait in processing while the CA is gone");
    // Long enough for orders to be retried while it is gone (after 1 s, 2 s, 4 s).
    let left = OUTAGE.saturating_sub(gone.elapsed());
    tokio::time::sleep(left).await;
    let processing = counter(&http, vacme.port, "vacme_orders_processing", "").await;
    assert!(processing >= 1, "orders still wait in processing");
    cluster.restart(0).await;
    let outage = gone.elapsed();
    let report = burst.report().await;
    eprintln!(
        "single address: {}; the node was gone for {:.1} s from {at_kill} signed, with {processing} orders \
         processing; vacme failovers: {}",
        figures(&report),
        outage.as_secs_f64(),
        counter(&http, vacme.port, "vacme_vault_failovers_total", "").await
    );
    one_certificate_per_order(&cluster, &config, SINGLE).await;
    assert_eq!(readyz().await, Some(200), "ready again");
}
