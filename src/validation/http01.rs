//! http-01 (RFC 8555 §8.3): GET `http://<name>/.well-known/acme-challenge/<token>` and compare
//! the body with the key authorization. Bounded: timeout, redirect cap, body cap, own resolver.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    redirect::Policy,
};

use super::{Resolver, TargetPolicy, ValidationSettings, ValidationSetupError};
use crate::acme::{Identifier, Problem, ProblemType};

/// Every hop of an http-01 fetch resolves through the validation resolver.
struct ViaResolver {
    resolver: Arc<Resolver>,
    targets: Arc<TargetPolicy>,
}

impl Resolve for ViaResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (resolver, targets) = (self.resolver.clone(), self.targets.clone());
        Box::pin(async move {
            let ips = resolver
                .lookup_ips(name.as_str())
                .await
                .map_err(|p| -> Box<dyn std::error::Error + Send + Sync> { p.detail.into() })?;
            // Checked here too, so a redirect or a changed DNS answer cannot reach a refused address.
            let ips =
                allowed(&targets, ips).map_err(|why| -> Box<dyn std::error::Error + Send + Sync> { why.into() })?;
            // reqwest replaces port 0 with the URL's port.
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The http-01 checker.
#[derive(Debug)]
pub struct Http01 {
    client: reqwest::Client,
    resolver: Arc<Resolver>,
    targets: Arc<TargetPolicy>,
    port: u16,
    max_body: usize,
}

impl std::fmt::Debug for ViaResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViaResolver")
    }
}

impl Http01 {
    pub fn new(settings: &ValidationSettings, resolver: Arc<Resolver>) -> Result<Self, ValidationSetupError> {
        let max = settings.max_redirects;
        let port = settings.http01_port;
        let targets = Arc::new(TargetPolicy::new(settings.allowed_targets.clone()));
        let redirect_targets = targets.clone();
        let policy = Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(format!("more than {max} redirects"));
            }
            let url = attempt.url();
            // RFC 8555 §8.3: redirects may go to http on the validation port or https on 443.
            let allowed = match url.scheme() {
                "http" => url.port_or_known_default() == Some(port) || url.port_or_known_default() == Some(80),
                "https" => url.port_or_known_default() == Some(443),
                _ => false,
            };
            let shown = url.to_string();
            // A literal address skips the resolver, so it is checked here.
            let literal = url
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse::<IpAddr>().ok())
                .and_then(|ip| redirect_targets.check(ip).err());
            match (allowed, literal) {
                (true, None) => attempt.follow(),
                (true, Some(why)) => attempt.error(format!("redirect to {shown}: {why}")),
                (false, _) => attempt.error(format!("redirect to a disallowed URL {shown}")),
            }
        });
        let client = reqwest::Client::builder()
            .redirect(policy)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .no_proxy()
            .user_agent(concat!("vacme-validation/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(ViaResolver { resolver: resolver.clone(), targets: targets.clone() }))
            // A redirect to https is followed without certificate checks: the certificate is
            // not what http-01 proves (as Let's Encrypt does).
            .danger_accept_invalid_certs(true)
            .use_rustls_tls()
            .build()
            .map_err(|e| ValidationSetupError::Http(e.to_string()))?;
        Ok(Self { client, resolver, targets, port: settings.http01_port, max_body: settings.max_body })
    }

    pub async fn validate(&self, id: &Identifier, token: &str, key_authorization: &str) -> Result<(), Problem> {
        let host = match id {
            Identifier::Dns(name) => {
                // Resolve and check first, so DNS failures and refused targets are reported as such.
                let ips = self.resolver.lookup_ips(name).await?;
                allowed(&self.targets, ips)
                    .map_err(|why| Problem::new(ProblemType::Connection, format!("{name}: {why}")))?;
                name.clone()
            }
            Identifier::Ip(ip) => {
                self.targets.check(*ip).map_err(|why| Problem::new(ProblemType::Connection, why))?;
                match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                }
            }
        };
        let url = if self.port == 80 {
            format!("http://{host}/.well-known/acme-challenge/{token}")
        } else {
            format!("http://{host}:{}/.well-known/acme-challenge/{token}", self.port)
        };
        let mut res = self.client.get(&url).send().await.map_err(|e| fetch_problem(&url, &e))?;
        let status = res.status();
        let final_url = res.url().to_string();
        if status != reqwest::StatusCode::OK {
            return Err(Problem::unauthorized(format!("Invalid response from {final_url}: {}", status.as_u16())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| fetch_problem(&url, &e))? {
            if body.len() + chunk.len() > self.max_body {
                return Err(Problem::unauthorized(format!(
                    "Invalid response from {final_url}: body is larger than {} bytes",
                    self.max_body
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body);
        let got = text.trim_end_matches([' ', '\t', '\r', '\n']);
        if got == key_authorization {
            Ok(())
        } else {
            Err(Problem::new(
                ProblemType::IncorrectResponse,
                format!("The key authorization file from {final_url} is wrong: got {:?}", shorten(got)),
            ))
        }
    }
}

/// The addresses the target policy allows, or the first refusal when none is.
fn allowed(targets: &TargetPolicy, ips: Vec<IpAddr>) -> Result<Vec<IpAddr>, String> {
    let mut refusal = None;
    let ok: Vec<IpAddr> = ips
        .into_iter()
        .filter(|ip| match targets.check(*ip) {
            Ok(()) => true,
            Err(why) => {
                refusal.get_or_insert(why);
                false
            }
        })
        .collect();
    match (ok.is_empty(), refusal) {
        (true, Some(why)) => Err(why),
        _ => Ok(ok),
    }
}

/// The first 64 characters, printable only.
fn shorten(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).take(64).collect();
    if s.chars().count() > 64 { format!("{clean}...") } else { clean }
}

/// A connection-level failure, worded for the owner, without Rust error dumps.
fn fetch_problem(url: &str, e: &reqwest::Error) -> Problem {
    let mut root = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    if e.is_timeout() {
        Problem::new(ProblemType::Connection, format!("Fetching {url}: timed out"))
    } else if e.is_redirect() {
        Problem::new(ProblemType::Connection, format!("Fetching {url}: {root}"))
    } else if e.is_connect() {
        Problem::new(ProblemType::Connection, format!("Fetching {url}: connection failed: {root}"))
    } else {
        Problem::new(ProblemType::Connection, format!("Fetching {url}: {root}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Router, response::Redirect, routing::get};

    use super::*;

    async fn serve(app: Router) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }

    fn checker(port: u16) -> Http01 {
        checker_with_targets(port, vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
    }

    fn checker_with_targets(port: u16, allowed_targets: Vec<ipnet::IpNet>) -> Http01 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let settings = ValidationSettings {
            http01_port: port,
            tls_alpn01_port: 443,
            nameservers: vec!["127.0.0.1:1".parse().unwrap()],
            timeout: Duration::from_secs(2),
            max_redirects: 3,
            max_body: 8192,
            allowed_targets,
        };
        let resolver = Arc::new(Resolver::new(&settings.nameservers, settings.timeout).unwrap());
        Http01::new(&settings, resolver).unwrap()
    }

    fn dns(n: &str) -> Identifier {
        Identifier::Dns(n.into())
    }

    #[tokio::test]
    async fn outcomes() {
        let app = Router::new()
            .route("/.well-known/acme-challenge/good", get(|| async { "good.thumb\n" }))
            .route("/.well-known/acme-challenge/wrong", get(|| async { "something else" }))
            .route(
                "/.well-known/acme-challenge/moved",
                get(|| async { Redirect::temporary("/.well-known/acme-challenge/good") }),
            )
            .route(
                "/.well-known/acme-challenge/loop",
                get(|| async { Redirect::temporary("/.well-known/acme-challenge/loop") }),
            )
            .route("/.well-known/acme-challenge/huge", get(|| async { "x".repeat(1 << 20) }))
            .route(
                "/.well-known/acme-challenge/elsewhere",
                get(|| async { Redirect::temporary("http://127.0.0.1:1/.well-known/acme-challenge/good") }),
            );
        let port = serve(app).await;
        let c = checker(port);
        c.validate(&dns("nas.localhost"), "good", "good.thumb").await.unwrap();
        c.validate(&Identifier::Ip("127.0.0.1".parse().unwrap()), "good", "good.thumb").await.unwrap();
        c.validate(&dns("nas.localhost"), "moved", "good.thumb").await.unwrap();
        let cases = [
            ("missing", "unauthorized", "404"),
            ("wrong", "incorrectResponse", "something else"),
            ("loop", "connection", "redirects"),
            ("huge", "unauthorized", "larger than"),
            ("elsewhere", "connection", "disallowed"),
        ];
        for (token, kind, text) in cases {
            let p = c.validate(&dns("nas.localhost"), token, &format!("{token}.thumb")).await.unwrap_err();
            assert_eq!(p.kind.code(), kind, "{token}: {}", p.detail);
            assert!(p.detail.contains(text), "{token}: {}", p.detail);
        }
    }

    #[tokio::test]
    async fn nothing_listening_and_no_dns() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let c = checker(port);
        let p = c.validate(&dns("nas.localhost"), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection", "{}", p.detail);
        // Nameserver 127.0.0.1:1 answers nothing: a dns problem, within the timeout.
        let p = c.validate(&dns("nas.lab.test"), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "dns", "{}", p.detail);
    }

    #[tokio::test]
    async fn target_policy_refuses_before_connecting() {
        let c = checker_with_targets(1, vec![]);
        let p = c.validate(&Identifier::Ip("169.254.169.254".parse().unwrap()), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert!(p.detail.contains("cloud metadata"), "{}", p.detail);
        let p = c.validate(&dns("nas.localhost"), "t", "t.x").await.unwrap_err();
        assert!(p.detail.contains("loopback addresses are not in validation.allowed_targets"), "{}", p.detail);
        let p = c.validate(&Identifier::Ip("10.9.8.7".parse().unwrap()), "t", "t.x").await.unwrap_err();
        assert!(p.detail.contains("private"), "{}", p.detail);
    }

    #[tokio::test]
    async fn redirects_cannot_reach_refused_addresses() {
        let app = Router::new().route(
            "/.well-known/acme-challenge/meta",
            get(|| async { Redirect::temporary("http://169.254.169.254/.well-known/acme-challenge/x") }),
        );
        let port = serve(app).await;
        let p = checker(port).validate(&dns("nas.localhost"), "meta", "meta.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert!(p.detail.contains("169.254.169.254"), "{}", p.detail);
    }
}
