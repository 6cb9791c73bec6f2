//! One shared DNS resolver for validation: the configured (internal) nameservers, no caching
//! between attempts, so a record added after a failed attempt is seen by the next.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    TokioResolver,
    config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig},
    net::{DnsError, NetError, runtime::TokioRuntimeProvider},
    proto::{
        op::ResponseCode,
        rr::{RData, RecordType},
    },
};

use super::ValidationSetupError;
use crate::acme::{Problem, ProblemType};

/// The validation resolver: cheap to clone, all clones share one hickory resolver.
#[derive(Clone, Debug)]
pub struct Resolver {
    inner: TokioResolver,
    /// Cap on one whole lookup (all tries), so a dead nameserver costs at most one attempt's timeout.
    timeout: Duration,
}

impl Resolver {
    /// Uses exactly `nameservers` (UDP, then TCP when an answer is truncated), or the system
    /// configuration when empty. `timeout` bounds one lookup including its retry.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, ValidationSetupError> {
        let setup = |e: &dyn std::fmt::Display| ValidationSetupError::Resolver(e.to_string());
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| setup(&e))?
        } else {
            let servers = nameservers
                .iter()
                .map(|ns| {
                    let mut cfg = NameServerConfig::udp_and_tcp(ns.ip());
                    for conn in &mut cfg.connections {
                        conn.port = ns.port();
                    }
                    cfg
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        // Two tries (one retry, for a lost UDP packet), each with half the budget.
        opts.timeout = (timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        opts.attempts = 1;
        // No cache: a record the owner fixes after a failed attempt must count at the next one
        // (DESIGN.md; STYLE.md §3.11), and a record removed must stop counting.
        opts.cache_size = 0;
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // The validated names are the DNS's to answer, not this host's /etc/hosts.
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = builder.build().map_err(|e| setup(&e))?;
        Ok(Self { inner, timeout })
    }

    /// TXT values at `name` (CNAMEs followed), each value's strings joined. An empty list when
    /// the name has none or does not exist; a `dns` problem when the lookup itself failed.
    pub async fn lookup_txt(&self, name: &str) -> Result<Vec<String>, Problem> {
        match self.lookup(name, RecordType::TXT).await {
            Ok(answers) => Ok(answers
                .iter()
                .filter_map(|data| match data {
                    RData::TXT(txt) => {
                        Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part)).collect::<String>())
                    }
                    _ => None,
                })
                .collect()),
            Err(Failure::NoRecords | Failure::NxDomain) => Ok(Vec::new()),
            Err(failure) => Err(failure.problem(RecordType::TXT, name)),
        }
    }

    /// CAA records at exactly `name` (RFC 8659): (critical, tag, value). Empty when there are none.
    pub async fn lookup_caa(&self, name: &str) -> Result<Vec<(bool, String, String)>, Problem> {
        match self.lookup(name, RecordType::CAA).await {
            Ok(answers) => Ok(answers
                .iter()
                .filter_map(|data| match data {
                    RData::CAA(caa) => Some((
                        caa.issuer_critical,
                        caa.tag.to_ascii_lowercase(),
                        String::from_utf8_lossy(&caa.value).into_owned(),
                    )),
                    _ => None,
                })
                .collect()),
            Err(Failure::NoRecords | Failure::NxDomain) => Ok(Vec::new()),
            Err(failure) => Err(failure.problem(RecordType::CAA, name)),
        }
    }

    /// A and AAAA records of `name` (CNAMEs followed), IPv4 first, or a `dns` problem that says
    /// what went wrong. Never empty when Ok.
    pub async fn lookup_ips(&self, name: &str) -> Result<Vec<IpAddr>, Problem> {
        // RFC 6761 §6.3: localhost names are loopback, without asking DNS.
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
            return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        // Both families at once; any address found is the answer.
        let (a, aaaa) = tokio::join!(self.lookup(name, RecordType::A), self.lookup(name, RecordType::AAAA));
        let mut ips = Vec::new();
        for found in [&a, &aaaa].into_iter().flatten() {
            ips.extend(found.iter().filter_map(|data| match data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            }));
        }
        if !ips.is_empty() {
            return Ok(ips);
        }
        // Neither family gave an address: report a real failure (A first) over "no records".
        let failed = |r: &Result<Vec<RData>, Failure>| match r {
            Err(f) if *f != Failure::NoRecords => Some(*f),
            _ => None,
        };
        Err(match (failed(&a), failed(&aaaa)) {
            (Some(f), _) => f.problem(RecordType::A, name),
            (None, Some(f)) => f.problem(RecordType::AAAA, name),
            (None, None) => {
                Problem::new(ProblemType::Dns, format!("DNS problem: no A or AAAA records found for {name}"))
            }
        })
    }

    /// One query through the shared resolver, bounded by the lookup timeout.
    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Vec<RData>, Failure> {
        // Fully qualified: the system resolver's search list must not turn `nas` into `nas.corp.`.
        let fqdn = format!("{name}.");
        let result = match tokio::time::timeout(self.timeout, self.inner.lookup(fqdn.as_str(), kind)).await {
            Ok(result) => result,
            Err(_) => return Err(Failure::Timeout),
        };
        match result {
            Ok(found) => Ok(found.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) => {
                tracing::debug!(name, record_type = %kind, error = %e, "validation DNS lookup failed");
                Err(Failure::from(&e))
            }
        }
    }
}

/// Why a query found nothing, in the words boulder uses for domain owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The name exists but has no record of the type (NOERROR, empty answer).
    NoRecords,
    /// RFC 1035 §4.1.1 RCODE 3: the name does not exist.
    NxDomain,
    /// Another error RCODE (SERVFAIL, REFUSED, ...).
    Rcode(ResponseCode),
    Timeout,
    /// No answer could be had at all (network unreachable, connection refused, bad response).
    Network,
}

impl From<&NetError> for Failure {
    fn from(e: &NetError) -> Self {
        match e {
            _ if e.is_nx_domain() => Self::NxDomain,
            _ if e.is_no_records_found() => Self::NoRecords,
            NetError::Dns(DnsError::ResponseCode(code)) => Self::Rcode(*code),
            NetError::Timeout => Self::Timeout,
            NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Self::Timeout,
            _ => Self::Network,
        }
    }
}

impl Failure {
    fn problem(self, kind: RecordType, name: &str) -> Problem {
        let detail = match self {
            Self::NoRecords => format!("DNS problem: no {kind} records found for {name}"),
            Self::NxDomain => {
                format!(
                    "DNS problem: NXDOMAIN looking up {kind} for {name} - check that a DNS record exists for this name"
                )
            }
            Self::Rcode(code) => format!(
                "DNS problem: {} looking up {kind} for {name} - the name's nameservers may be malfunctioning",
                rcode_name(code)
            ),
            Self::Timeout => format!("DNS problem: query timed out looking up {kind} for {name}"),
            Self::Network => format!("DNS problem: networking error looking up {kind} for {name}"),
        };
        Problem::new(ProblemType::Dns, detail)
    }
}

/// The mnemonic of RFC 1035 §4.1.1 / RFC 6895 §2.3, as `dig` prints it.
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        other => format!("RCODE {}", u16::from(other)),
    }
}

/// A small authoritative DNS responder on loopback UDP for tests: A/AAAA records per name,
/// SERVFAIL or silence on demand, NXDOMAIN for everything else.
#[cfg(test)]
pub(crate) mod test_dns {
    use std::{
        collections::HashMap,
        net::{IpAddr, SocketAddr},
        sync::{
            Arc, Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use hickory_proto::{
        op::{Message, MessageType, ResponseCode},
        rr::{
            Name, RData, Record, RecordType,
            rdata::{A, AAAA},
        },
    };
    use tokio::net::UdpSocket;

    #[derive(Clone)]
    enum Entry {
        Addresses(Vec<IpAddr>),
        ServFail,
        Silent,
    }

    /// The responder; stops when dropped.
    pub(crate) struct TestDns {
        addr: SocketAddr,
        zone: Arc<Mutex<HashMap<String, Entry>>>,
        queries: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl TestDns {
        pub(crate) async fn start() -> Self {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            let zone = Arc::new(Mutex::new(HashMap::new()));
            let queries = Arc::new(AtomicUsize::new(0));
            let (shared, count) = (zone.clone(), queries.clone());
            let task = tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                loop {
                    let Ok((n, peer)) = socket.recv_from(&mut buf).await else { continue };
                    count.fetch_add(1, Ordering::SeqCst);
                    let answer = respond(&buf[..n], &shared.lock().unwrap());
                    if let Some(answer) = answer {
                        let _ = socket.send_to(&answer, peer).await;
                    }
                }
            });
            Self { addr, zone, queries, task }
        }

        pub(crate) fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// `name` answers A and AAAA with `ips` (replacing what it had).
        pub(crate) fn set(&self, name: &str, ips: &[IpAddr]) {
            self.zone.lock().unwrap().insert(name.to_ascii_lowercase(), Entry::Addresses(ips.to_vec()));
        }

        pub(crate) fn servfail(&self, name: &str) {
            self.zone.lock().unwrap().insert(name.to_ascii_lowercase(), Entry::ServFail);
        }

        /// Queries for `name` are dropped unanswered.
        pub(crate) fn silent(&self, name: &str) {
            self.zone.lock().unwrap().insert(name.to_ascii_lowercase(), Entry::Silent);
        }

        /// How many queries arrived so far.
        pub(crate) fn queries(&self) -> usize {
            self.queries.load(Ordering::SeqCst)
        }
    }

    impl Drop for TestDns {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn respond(query: &[u8], zone: &HashMap<String, Entry>) -> Option<Vec<u8>> {
        let query = Message::from_vec(query).ok()?;
        if query.metadata.message_type != MessageType::Query {
            return None;
        }
        let q = query.queries.first()?.clone();
        let key = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
        answer.metadata.authoritative = true;
        answer.metadata.recursion_desired = query.metadata.recursion_desired;
        answer.metadata.recursion_available = true;
        answer.queries.push(q.clone());
        match zone.get(&key) {
            None => answer.metadata.response_code = ResponseCode::NXDomain,
            Some(Entry::ServFail) => answer.metadata.response_code = ResponseCode::ServFail,
            Some(Entry::Silent) => return None,
            Some(Entry::Addresses(ips)) => {
                let owner: Name = q.name().clone();
                for ip in ips {
                    let data = match (ip, q.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    answer.answers.push(Record::from_rdata(owner.clone(), 60, data));
                }
            }
        }
        answer.to_vec().ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::{test_dns::TestDns, *};

    fn resolver(dns: &TestDns, timeout: Duration) -> Resolver {
        Resolver::new(&[dns.addr()], timeout).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn answers_ipv4_first() {
        let dns = TestDns::start().await;
        dns.set("nas.lab.test", &[ip("::1"), ip("127.0.0.1")]);
        let r = resolver(&dns, Duration::from_secs(2));
        assert_eq!(r.lookup_ips("nas.lab.test").await.unwrap(), vec![ip("127.0.0.1"), ip("::1")]);
        assert_eq!(r.lookup_ips("NAS.Lab.Test").await.unwrap(), vec![ip("127.0.0.1"), ip("::1")]);
    }

    #[tokio::test]
    async fn localhost_and_literals_never_ask_dns() {
        let dns = TestDns::start().await;
        let r = resolver(&dns, Duration::from_secs(2));
        let loopback = vec![ip("127.0.0.1"), ip("::1")];
        for name in ["localhost", "foo.localhost", "a.b.LOCALHOST", "foo.localhost."] {
            assert_eq!(r.lookup_ips(name).await.unwrap(), loopback, "{name}");
        }
        assert_eq!(r.lookup_ips("192.0.2.7").await.unwrap(), vec![ip("192.0.2.7")]);
        assert_eq!(dns.queries(), 0);
        // A name that merely contains the word is an ordinary name.
        let p = r.lookup_ips("localhost.lab.test").await.unwrap_err();
        assert_eq!(p.kind.code(), "dns");
    }

    #[tokio::test]
    async fn failures_are_dns_problems_worded_for_the_owner() {
        let dns = TestDns::start().await;
        dns.set("empty.lab.test", &[]);
        dns.servfail("broken.lab.test");
        dns.silent("slow.lab.test");
        let r = resolver(&dns, Duration::from_millis(600));
        let cases = [
            ("gone.lab.test", "DNS problem: NXDOMAIN looking up A for gone.lab.test"),
            ("empty.lab.test", "DNS problem: no A or AAAA records found for empty.lab.test"),
            ("broken.lab.test", "DNS problem: SERVFAIL looking up A for broken.lab.test"),
            ("slow.lab.test", "DNS problem: query timed out looking up A for slow.lab.test"),
        ];
        for (name, text) in cases {
            let started = Instant::now();
            let p = r.lookup_ips(name).await.unwrap_err();
            assert_eq!(p.kind.code(), "dns", "{name}: {}", p.detail);
            assert!(p.detail.starts_with(text), "{name}: {}", p.detail);
            assert!(started.elapsed() < Duration::from_secs(2), "{name} took {:?}", started.elapsed());
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_dns_problem_within_the_timeout() {
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        let r = Resolver::new(&[addr], Duration::from_millis(600)).unwrap();
        let started = Instant::now();
        let p = r.lookup_ips("nas.lab.test").await.unwrap_err();
        assert_eq!(p.kind.code(), "dns", "{}", p.detail);
        assert!(p.detail.contains("nas.lab.test"), "{}", p.detail);
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    /// A record published after a failed attempt is seen by the next attempt: no negative caching.
    #[tokio::test]
    async fn no_negative_caching() {
        let dns = TestDns::start().await;
        let r = resolver(&dns, Duration::from_secs(2));
        let p = r.lookup_ips("late.lab.test").await.unwrap_err();
        assert!(p.detail.contains("NXDOMAIN"), "{}", p.detail);
        dns.set("late.lab.test", &[ip("127.0.0.2")]);
        assert_eq!(r.lookup_ips("late.lab.test").await.unwrap(), vec![ip("127.0.0.2")]);
        // Nor positive caching: a changed answer counts at once.
        dns.set("late.lab.test", &[ip("127.0.0.3")]);
        assert_eq!(r.lookup_ips("late.lab.test").await.unwrap(), vec![ip("127.0.0.3")]);
        // A clone shares the resolver and sees the same.
        assert_eq!(r.clone().lookup_ips("late.lab.test").await.unwrap(), vec![ip("127.0.0.3")]);
    }

    #[tokio::test]
    async fn txt_of_a_missing_name_is_empty_not_an_error() {
        let dns = TestDns::start().await;
        let r = resolver(&dns, Duration::from_secs(2));
        assert!(r.lookup_txt("_acme-challenge.gone.lab.test").await.unwrap().is_empty());
        dns.servfail("_acme-challenge.broken.lab.test");
        let p = r.lookup_txt("_acme-challenge.broken.lab.test").await.unwrap_err();
        assert!(p.detail.contains("SERVFAIL looking up TXT"), "{}", p.detail);
    }
}
