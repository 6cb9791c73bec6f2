//! One shared DNS resolver for validation: the configured (internal) nameservers, no caching
//! between attempts, so a record added after a failed attempt is seen by the next.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    TokioResolver,
    config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::{RData, RecordType},
};

use super::ValidationSetupError;
use crate::acme::{Problem, ProblemType};

/// The validation resolver.
#[derive(Clone, Debug)]
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// Uses exactly `nameservers` (UDP, then TCP on truncation), or the system configuration when empty.
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
        opts.timeout = timeout.min(Duration::from_secs(5));
        opts.attempts = 2;
        opts.cache_size = 0;
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = ResolveHosts::Never;
        let inner = builder.build().map_err(|e| setup(&e))?;
        Ok(Self { inner })
    }

    /// TXT values at `name` (CNAMEs followed), each value's strings joined. An empty list when
    /// the name has none; a `dns` problem when the lookup itself failed.
    pub async fn lookup_txt(&self, name: &str) -> Result<Vec<String>, Problem> {
        let fqdn = format!("{name}.");
        match self.inner.lookup(fqdn.as_str(), RecordType::TXT).await {
            Ok(found) => Ok(found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => {
                        Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part)).collect::<String>())
                    }
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(Problem::new(ProblemType::Dns, format!("DNS problem looking up TXT for {name}: {e}"))),
        }
    }

    /// A and AAAA records of `name`, or a `dns` problem that says what went wrong.
    pub async fn lookup_ips(&self, name: &str) -> Result<Vec<IpAddr>, Problem> {
        // RFC 6761 §6.3: localhost names are loopback, without asking DNS.
        if name == "localhost" || name.ends_with(".localhost") {
            return Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        }
        let fqdn = format!("{name}.");
        match self.inner.lookup_ip(fqdn.as_str()).await {
            Ok(found) => {
                let mut ips: Vec<IpAddr> = found.iter().collect();
                // IPv4 first: on a LAN it is what devices answer on most often.
                ips.sort_by_key(|ip| ip.is_ipv6());
                if ips.is_empty() {
                    Err(Problem::new(ProblemType::Dns, format!("no A or AAAA records found for {name}")))
                } else {
                    Ok(ips)
                }
            }
            Err(e) if e.is_nx_domain() => {
                Err(Problem::new(ProblemType::Dns, format!("DNS problem: NXDOMAIN looking up A/AAAA for {name}")))
            }
            Err(e) if e.is_no_records_found() => {
                Err(Problem::new(ProblemType::Dns, format!("no A or AAAA records found for {name}")))
            }
            Err(e) => Err(Problem::new(ProblemType::Dns, format!("DNS problem looking up A/AAAA for {name}: {e}"))),
        }
    }
}
