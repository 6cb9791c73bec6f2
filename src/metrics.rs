//! Prometheus metrics, served at `GET /metrics` in the text exposition format (version 0.0.4).
//! Counters and histograms live here and are bumped by the API layer and the workers; gauges
//! (queue depths, nonces, row counts) are read from the store when scraped.

use std::{collections::BTreeMap, fmt::Write as _, sync::Mutex, time::Duration};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Label values, in the order of the family's label names.
type Labels = Vec<String>;

#[derive(Debug, Default)]
struct Counter {
    values: Mutex<BTreeMap<Labels, u64>>,
}

impl Counter {
    fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }

    fn add(&self, labels: &[&str], n: u64) {
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let value = v.entry(labels.iter().map(|s| (*s).to_owned()).collect()).or_insert(0);
        *value = value.saturating_add(n);
    }

    /// Makes the series exist at 0, so an alert on its increase sees the first event.
    fn touch(&self, labels: &[&str]) {
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        v.entry(labels.iter().map(|s| (*s).to_owned()).collect()).or_insert(0);
    }

    fn get(&self, labels: &[&str]) -> u64 {
        let key: Labels = labels.iter().map(|s| (*s).to_owned()).collect();
        self.values.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default, Clone)]
struct HistogramValue {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Histogram {
    values: Mutex<BTreeMap<Labels, HistogramValue>>,
}

impl Histogram {
    fn observe(&self, labels: &[&str], d: Duration) {
        let secs = d.as_secs_f64();
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let h = v.entry(labels.iter().map(|s| (*s).to_owned()).collect()).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }
}

/// The metrics of one vacme process.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Counter,
    problems: Counter,
    validations: Counter,
    validation_seconds: Histogram,
    issuances: Counter,
    ca_seconds: Histogram,
    ca_errors: Counter,
    post_sign_mismatches: Counter,
    job_runs: Counter,
    job_seconds: Histogram,
    takeovers: Counter,
    webhook_deliveries: Counter,
    webhook_dropped: Counter,
    renewal: Mutex<Option<RenewalGauges>>,
    validation_failures: Counter,
    /// The CA's last health answer (`jobs::ca_health`) and the last certificate signed.
    ca: Mutex<CaGauges>,
}

/// Most names `vacme_validation_failures_total` has a series of; later names are `other`.
const MAX_FAILED_NAMES: usize = 200;

/// What `/metrics` says of the CA.
#[derive(Debug, Default, Clone)]
struct CaGauges {
    /// issuer -> reachable, as of the last health check.
    reachable: BTreeMap<String, bool>,
    /// When a certificate was last signed (Unix seconds), since start.
    last_issued: Option<i64>,
}

/// The last renewal-state refresh (`jobs::renewal_state`): certificates per state, and the next
/// expiry of a certificate neither renewed nor revoked.
#[derive(Debug, Default, Clone)]
struct RenewalGauges {
    states: Vec<(&'static str, i64)>,
    next_expiry: Option<i64>,
}

/// Values read from the store (and the CA client) when scraped.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub nonces: Option<u64>,
    pub challenges_processing: i64,
    pub orders_processing: i64,
    pub accounts: i64,
    pub certificates: i64,
    /// Vault's addresses, when vacme signs through Vault.
    pub vault: Option<VaultGauges>,
}

/// Which of Vault's addresses serves, and how many times vacme moved to the next.
#[derive(Debug, Default, Clone)]
pub struct VaultGauges {
    pub addresses: Vec<String>,
    pub in_use: usize,
    pub failovers: u64,
}

impl Metrics {
    /// One answered request: `resource` is the route (`/acme/order/{id}`), not the URL.
    pub fn request(&self, resource: &str, status: u16) {
        self.requests.inc(&[resource, &status.to_string()]);
    }

    /// One problem document sent, by its ACME type (`malformed`, `rateLimited`, ...).
    pub fn problem(&self, kind: &str) {
        self.problems.inc(&[kind]);
    }

    /// One validation attempt: `outcome` is `valid`, `invalid` or `retry`.
    pub fn validation(&self, kind: &str, outcome: &str, took: Duration) {
        self.validations.inc(&[kind, outcome]);
        self.validation_seconds.observe(&[kind], took);
    }

    /// One signing call to the CA: `outcome` is `issued`, `refused` or `unavailable`.
    pub fn issuance(&self, issuer: &str, outcome: &str, took: Duration) {
        self.issuances.inc(&[outcome]);
        self.ca_seconds.observe(&[issuer, "sign"], took);
        if outcome != "issued" {
            self.ca_errors.inc(&[issuer, "sign", outcome]);
        }
    }

    /// One other CA call (revoke, status), with its outcome.
    pub fn ca_call(&self, issuer: &str, op: &str, ok: bool, took: Duration) {
        self.ca_seconds.observe(&[issuer, op], took);
        if !ok {
            self.ca_errors.inc(&[issuer, op, "unavailable"]);
        }
    }

    /// Shows `vacme_post_sign_mismatches_total{issuer}` at 0 before the first mismatch.
    pub fn expect_post_sign_mismatches(&self, issuer: &str) {
        self.post_sign_mismatches.touch(&[issuer]);
    }

    /// The CA signed a certificate that did not match its order (an incident: it was revoked).
    pub fn post_sign_mismatch(&self, issuer: &str) {
        self.post_sign_mismatches.inc(&[issuer]);
    }

    /// Shows `vacme_job_runs_total{job,outcome}` at 0 for each outcome before the job's first run.
    pub fn expect_job_runs(&self, job: &str, outcomes: &[&str]) {
        for outcome in outcomes {
            self.job_runs.touch(&[job, outcome]);
        }
    }

    /// Shows `vacme_job_takeovers_total{job}` at 0 before the first take-over.
    pub fn expect_takeovers(&self, job: &str) {
        self.takeovers.touch(&[job]);
    }

    /// `n` items of `job` claimed after another holder's lease ran out.
    pub fn takeovers(&self, job: &str, n: u64) {
        self.takeovers.add(&[job], n);
    }

    /// One run of a background job (one item of a queue job, or one periodic run).
    pub fn job_run(&self, job: &str, outcome: &str, took: Duration) {
        self.job_runs.inc(&[job, outcome]);
        self.job_seconds.observe(&[job], took);
    }

    /// Shows the webhook's series at 0 before its first delivery.
    pub fn expect_webhook(&self, webhook: &str) {
        for outcome in ["delivered", "failed"] {
            self.webhook_deliveries.touch(&[webhook, outcome]);
        }
        self.webhook_dropped.touch(&[webhook]);
    }

    /// One delivery attempt of one event to a webhook (`delivered` or `failed`).
    pub fn webhook_delivery(&self, webhook: &str, outcome: &str) {
        self.webhook_deliveries.inc(&[webhook, outcome]);
    }

    /// Events a webhook fell too far behind to get (`notify.max_backlog`).
    pub fn webhook_dropped(&self, webhook: &str, n: u64) {
        self.webhook_dropped.add(&[webhook], n);
    }

    /// Publishes a renewal-state refresh: the count of each state, and the next expiry (Unix
    /// seconds) of a certificate neither renewed nor revoked, if any.
    pub fn set_renewal_states(&self, states: &[(&'static str, i64)], next_expiry: Option<i64>) {
        *self.renewal.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(RenewalGauges { states: states.to_vec(), next_expiry });
    }

    /// A challenge of `name` failed for good (its series bounded: past `MAX_FAILED_NAMES`
    /// names, new ones count as `other`).
    pub fn validation_failed(&self, name: &str) {
        let known = {
            let v = self.validation_failures.values.lock().unwrap_or_else(|p| p.into_inner());
            v.contains_key(&vec![name.to_owned()]) || v.len() < MAX_FAILED_NAMES
        };
        self.validation_failures.inc(&[if known { name } else { "other" }]);
    }

    /// The CA answered (or not) its health check.
    pub fn set_ca_reachable(&self, issuer: &str, reachable: bool) {
        self.ca.lock().unwrap_or_else(|p| p.into_inner()).reachable.insert(issuer.to_owned(), reachable);
    }

    /// A certificate was signed at `now`.
    pub fn issued_at(&self, now: i64) {
        self.ca.lock().unwrap_or_else(|p| p.into_inner()).last_issued = Some(now);
    }

    /// For tests: a counter's value.
    pub fn requests_of(&self, resource: &str, status: u16) -> u64 {
        self.requests.get(&[resource, &status.to_string()])
    }

    /// The exposition text.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        counter(
            &mut out,
            "vacme_http_requests_total",
            "HTTP requests answered, by route and status.",
            &["resource", "status"],
            &self.requests,
        );
        counter(&mut out, "vacme_problems_total", "ACME problem documents sent, by type.", &["type"], &self.problems);
        counter(
            &mut out,
            "vacme_validations_total",
            "Validation attempts, by challenge type and outcome (valid, invalid, retry).",
            &["type", "outcome"],
            &self.validations,
        );
        histogram(
            &mut out,
            "vacme_validation_duration_seconds",
            "Time of one validation attempt.",
            &["type"],
            &self.validation_seconds,
        );
        counter(
            &mut out,
            "vacme_issuances_total",
            "Signing attempts, by outcome (issued, refused, unavailable).",
            &["outcome"],
            &self.issuances,
        );
        histogram(
            &mut out,
            "vacme_ca_request_duration_seconds",
            "Time of one call to the CA (Vault or the local CA).",
            &["issuer", "op"],
            &self.ca_seconds,
        );
        counter(
            &mut out,
            "vacme_ca_errors_total",
            "CA calls that failed, by kind.",
            &["issuer", "op", "kind"],
            &self.ca_errors,
        );
        counter(
            &mut out,
            "vacme_post_sign_mismatches_total",
            "Certificates the CA signed that did not match their order (revoked, never delivered).",
            &["issuer"],
            &self.post_sign_mismatches,
        );
        counter(
            &mut out,
            "vacme_job_runs_total",
            "Runs of background jobs, by job and outcome (done, retry, error).",
            &["job", "outcome"],
            &self.job_runs,
        );
        histogram(&mut out, "vacme_job_duration_seconds", "Time of one job run.", &["job"], &self.job_seconds);
        counter(
            &mut out,
            "vacme_job_takeovers_total",
            "Items this process claimed after another holder's lease ran out (a replica died or stalled).",
            &["job"],
            &self.takeovers,
        );
        counter(
            &mut out,
            "vacme_webhook_deliveries_total",
            "Events sent to webhooks, by webhook and outcome (delivered, failed: retried).",
            &["webhook", "outcome"],
            &self.webhook_deliveries,
        );
        counter(
            &mut out,
            "vacme_webhook_dropped_total",
            "Events a webhook did not get: it fell more than notify.max_backlog events behind.",
            &["webhook"],
            &self.webhook_dropped,
        );
        gauge(
            &mut out,
            "vacme_challenges_processing",
            "Challenges answered and waiting for validation.",
            g.challenges_processing as f64,
        );
        gauge(&mut out, "vacme_orders_processing", "Finalized orders waiting for the CA.", g.orders_processing as f64);
        gauge(&mut out, "vacme_accounts", "Accounts in the store.", g.accounts as f64);
        gauge(&mut out, "vacme_certificates", "Certificates in the store.", g.certificates as f64);
        if let Some(n) = g.nonces {
            gauge(&mut out, "vacme_nonces", "Nonces issued that could still be redeemed.", n as f64);
        }
        self.render_renewal(&mut out);
        counter(
            &mut out,
            "vacme_validation_failures_total",
            "Challenges that failed for good, by name (at most 200 names; later ones are \"other\").",
            &["name"],
            &self.validation_failures,
        );
        self.render_ca(&mut out);
        if let Some(v) = &g.vault {
            render_vault(&mut out, v);
        }
        out
    }
}

/// `vacme_vault_address_in_use{address}` (1 for the node vacme talks to) and the failovers.
fn render_vault(out: &mut String, v: &VaultGauges) {
    let name = "vacme_vault_address_in_use";
    let _ =
        writeln!(out, "# HELP {name} 1 for the Vault address vacme uses now, 0 for the others.\n# TYPE {name} gauge");
    for (i, address) in v.addresses.iter().enumerate() {
        let _ = writeln!(out, "{name}{{address=\"{}\"}} {}", escape(address), u8::from(i == v.in_use));
    }
    let name = "vacme_vault_failovers_total";
    let _ = writeln!(
        out,
        "# HELP {name} Times another Vault node took over from the one that served vacme.\n# TYPE {name} counter\n{name} {}",
        v.failovers
    );
}

impl Metrics {
    /// The CA's reachability (once checked) and the time of the last signing (once there was one).
    fn render_ca(&self, out: &mut String) {
        let ca = self.ca.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !ca.reachable.is_empty() {
            let name = "vacme_ca_reachable";
            let _ = writeln!(
                out,
                "# HELP {name} 1 when the CA answered its last health check (every 30 s), else 0.\n# TYPE {name} gauge"
            );
            for (issuer, up) in &ca.reachable {
                let _ = writeln!(out, "{name}{{issuer=\"{}\"}} {}", escape(issuer), u8::from(*up));
            }
        }
        if let Some(t) = ca.last_issued {
            gauge(
                out,
                "vacme_last_issuance_timestamp_seconds",
                "When this process last got a certificate signed (Unix seconds).",
                t as f64,
            );
        }
    }

    /// The renewal-state gauges, once the first refresh ran.
    fn render_renewal(&self, out: &mut String) {
        let Some(r) = self.renewal.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return };
        let name = "vacme_certificates_by_renewal_state";
        let _ = writeln!(
            out,
            "# HELP {name} Certificates per renewal state (active, due, overdue, renewed, expired, revoked), \
             as of the last refresh.\n# TYPE {name} gauge"
        );
        for (state, n) in &r.states {
            let _ = writeln!(out, "{name}{{state=\"{}\"}} {n}", escape(state));
        }
        if let Some(t) = r.next_expiry {
            gauge(
                out,
                "vacme_certificate_next_expiry_timestamp_seconds",
                "The earliest notAfter among unexpired certificates neither renewed nor revoked.",
                t as f64,
            );
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn label_set(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\"", escape(v))).collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{v}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn counter(out: &mut String, name: &str, help: &str, names: &[&str], c: &Counter) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, v) in c.values.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(out, "{name}{} {v}", label_set(names, labels, None));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, names: &[&str], h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, v) in h.values.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        for (le, n) in BUCKETS.iter().zip(v.buckets) {
            let _ = writeln!(out, "{name}_bucket{} {n}", label_set(names, labels, Some(("le", &le.to_string()))));
        }
        let _ = writeln!(out, "{name}_bucket{} {}", label_set(names, labels, Some(("le", "+Inf"))), v.count);
        let _ = writeln!(out, "{name}_sum{} {}", label_set(names, labels, None), v.sum);
        let _ = writeln!(out, "{name}_count{} {}", label_set(names, labels, None), v.count);
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_names_are_bounded_and_the_ca_gauges_appear_once_known() {
        let m = Metrics::default();
        let text = m.render(&Gauges::default());
        assert!(!text.contains("vacme_ca_reachable") && !text.contains("vacme_last_issuance"), "{text}");
        for i in 0..MAX_FAILED_NAMES + 50 {
            m.validation_failed(&format!("n{i}.lab.test"));
        }
        m.validation_failed("n0.lab.test");
        m.set_ca_reachable("vault", false);
        m.issued_at(1_800_000_000);
        let text = m.render(&Gauges::default());
        let series = text.lines().filter(|l| l.starts_with("vacme_validation_failures_total{")).count();
        assert_eq!(series, MAX_FAILED_NAMES + 1, "200 names and other");
        assert!(text.contains("vacme_validation_failures_total{name=\"n0.lab.test\"} 2\n"), "{text}");
        assert!(text.contains("vacme_validation_failures_total{name=\"other\"} 50\n"), "{text}");
        assert!(text.contains("vacme_ca_reachable{issuer=\"vault\"} 0\n"), "{text}");
        assert!(text.contains("vacme_last_issuance_timestamp_seconds 1800000000\n"), "{text}");
    }

    #[test]
    fn exposition_format() {
        let m = Metrics::default();
        m.request("/acme/new-order", 201);
        m.request("/acme/new-order", 201);
        m.problem("rateLimited");
        m.validation("http-01", "valid", Duration::from_millis(3));
        m.issuance("vault", "unavailable", Duration::from_millis(200));
        m.post_sign_mismatch("vault");
        m.expect_job_runs("issuance", &["done", "retry"]);
        m.job_run("issuance", "done", Duration::from_millis(4));
        let text = m.render(&Gauges { orders_processing: 2, nonces: Some(5), ..Default::default() });
        assert!(text.contains("vacme_http_requests_total{resource=\"/acme/new-order\",status=\"201\"} 2\n"), "{text}");
        assert!(text.contains("vacme_problems_total{type=\"rateLimited\"} 1\n"));
        assert!(text.contains("vacme_validation_duration_seconds_bucket{type=\"http-01\",le=\"0.0025\"} 0\n"));
        assert!(text.contains("vacme_validation_duration_seconds_bucket{type=\"http-01\",le=\"0.005\"} 1\n"));
        assert!(text.contains("vacme_validation_duration_seconds_bucket{type=\"http-01\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("vacme_ca_errors_total{issuer=\"vault\",op=\"sign\",kind=\"unavailable\"} 1\n"));
        assert!(text.contains("vacme_orders_processing 2\n"));
        assert!(text.contains("vacme_post_sign_mismatches_total{issuer=\"vault\"} 1\n"), "{text}");
        assert!(text.contains("vacme_nonces 5\n"));
        assert!(text.contains("vacme_job_runs_total{job=\"issuance\",outcome=\"done\"} 1\n"), "{text}");
        assert!(text.contains("vacme_job_runs_total{job=\"issuance\",outcome=\"retry\"} 0\n"), "{text}");
        assert!(text.contains("vacme_job_duration_seconds_count{job=\"issuance\"} 1\n"), "{text}");
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(!text.contains("renewal_state"), "no renewal gauges before the first refresh");
        m.set_renewal_states(&[("active", 3), ("overdue", 1)], Some(1_800_000_000));
        let text = m.render(&Gauges::default());
        assert!(text.contains("vacme_certificates_by_renewal_state{state=\"overdue\"} 1\n"), "{text}");
        assert!(text.contains("vacme_certificate_next_expiry_timestamp_seconds 1800000000\n"), "{text}");
    }
}
