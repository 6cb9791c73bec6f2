//! http-01 (RFC 8555 §8.3): GET `http://<name>/.well-known/acme-challenge/<token>` and compare
//! the body with the key authorization. Bounded: timeout, redirect cap, body cap, own resolver.

use std::{
    cell::RefCell,
    error::Error as StdError,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    redirect::Policy,
};

use super::{Resolver, TargetPolicy, ValidationSettings, ValidationSetupError, is_localhost_name};
use crate::acme::{Identifier, Problem, ProblemType};

tokio::task_local! {
    /// The addresses the current fetch's latest hop resolved to, so a connection problem can
    /// name the address that failed (each validation runs in its own scope).
    static RESOLVED: RefCell<Vec<IpAddr>>;
}

/// A hop vacme itself refused (DNS failure, refused target, disallowed redirect): its problem
/// is already worded for the owner and travels through reqwest's error chain unchanged.
#[derive(Debug)]
pub(super) struct Refused(Problem);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.detail)
    }
}

impl StdError for Refused {}

/// Every hop of an http-01 fetch resolves through the validation resolver, not getaddrinfo.
pub(super) struct ViaResolver {
    pub(super) resolver: Arc<Resolver>,
    pub(super) targets: Arc<TargetPolicy>,
}

impl fmt::Debug for ViaResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ViaResolver")
    }
}

impl Resolve for ViaResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (resolver, targets) = (self.resolver.clone(), self.targets.clone());
        Box::pin(async move {
            let refused = |p: Problem| -> Box<dyn StdError + Send + Sync> { Box::new(Refused(p)) };
            let host = name.as_str();
            let ips = resolver.lookup_ips(host).await.map_err(refused)?;
            // Checked on every hop, so a redirect or a changed DNS answer cannot reach a refused address.
            let ips = allowed(&targets, ips)
                .map_err(|why| refused(Problem::new(ProblemType::Connection, format!("{host}: {why}"))))?;
            let _ = RESOLVED.try_with(|seen| seen.replace(ips.clone()));
            // hyper-util puts the URL's port on addresses that carry port 0.
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The http-01 checker: one HTTP client for all validations, and one for `.localhost` names.
#[derive(Debug)]
pub struct Http01 {
    /// Reaches what `validation.allowed_targets` allows.
    client: reqwest::Client,
    targets: Arc<TargetPolicy>,
    /// The same, plus loopback: for names under `.localhost` only (RFC 6761 §6.3 puts them
    /// there), so the zero-config quickstart validates without opening loopback to every name.
    localhost_client: reqwest::Client,
    port: u16,
    max_body: usize,
}

impl Http01 {
    /// Builds the clients; `resolver` answers every hop.
    pub fn new(settings: &ValidationSettings, resolver: Arc<Resolver>) -> Result<Self, ValidationSetupError> {
        let targets = Arc::new(TargetPolicy::new(settings.allowed_targets.clone()));
        let client = build_client(settings, resolver.clone(), targets.clone())?;
        let localhost_client = build_client(settings, resolver, Arc::new(targets.with_loopback()))?;
        Ok(Self { client, targets, localhost_client, port: settings.http01_port, max_body: settings.max_body })
    }

    /// Ok when the file holds `key_authorization`; otherwise a problem saying what was seen.
    pub async fn validate(&self, id: &Identifier, token: &str, key_authorization: &str) -> Result<(), Problem> {
        // RFC 8555 §8.1: a token is base64url; anything else must not reach a URL path.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(Problem::malformed("the challenge token is not base64url"));
        }
        let mut client = &self.client;
        let host = match id {
            // RFC 8555 §7.1.3: a wildcard is proven by dns-01 only.
            Identifier::Dns(name) if id.is_wildcard() => {
                return Err(Problem::unauthorized(format!("http-01 cannot prove the wildcard name {name}")));
            }
            // Resolved (and checked against the target policy) by ViaResolver, on every hop.
            Identifier::Dns(name) => {
                if is_localhost_name(name) {
                    client = &self.localhost_client;
                }
                name.clone()
            }
            // RFC 8738 §3: connect to the address itself; Host is the literal.
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
        RESOLVED.scope(RefCell::new(Vec::new()), self.fetch(client, &url, token, key_authorization)).await
    }

    async fn fetch(
        &self,
        client: &reqwest::Client,
        url: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Problem> {
        let mut res = client.get(url).send().await.map_err(|e| fetch_problem(url, &e))?;
        let status = res.status();
        let final_url = res.url().to_string();
        // After a redirect the answer comes from wherever the name pointed vacme, so the detail
        // names that place; it never carries what was read there (see `mismatch`).
        let from = if final_url == url { final_url.clone() } else { format!("{final_url} (redirected from {url})") };
        if status != reqwest::StatusCode::OK {
            return Err(Problem::unauthorized(format!("Invalid response from {from}: {}", status.as_u16())));
        }
        let too_large = || {
            Problem::unauthorized(format!(
                "Invalid response from {from}: the body is larger than {} bytes; \
                 a key authorization file holds only the key authorization",
                self.max_body
            ))
        };
        if res.content_length().is_some_and(|len| len > self.max_body as u64) {
            return Err(too_large());
        }
        // Read in chunks and stop at the cap: a huge or endless body costs at most `max_body`.
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| fetch_problem(&final_url, &e))? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        // RFC 8555 §8.3: the client may add trailing whitespace; nothing else may differ.
        let end = body.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')).map_or(0, |i| i + 1);
        let got = &body[..end];
        if got == key_authorization.as_bytes() {
            Ok(())
        } else {
            Err(Problem::new(
                ProblemType::IncorrectResponse,
                format!(
                    "The key authorization file from {from} did not match this challenge: \
                     expected {key_authorization:?}, got {}",
                    mismatch(got, token)
                ),
            ))
        }
    }
}

/// What a wrong key authorization file held, without its bytes. The body comes from an address
/// the owner of the name chose (directly or by a redirect), possibly a service inside the
/// operator's allowed ranges that answers anything with a page; echoing it would read that
/// service back to whoever ordered the name. Its size and how it compares with the values the
/// client already knows (its token, the key authorization's shape) are enough to fix the file.
fn mismatch(got: &[u8], token: &str) -> String {
    let size = match got.len() {
        1 => "1 byte".to_owned(),
        n => format!("{n} bytes"),
    };
    if got.is_empty() {
        "an empty file".to_owned()
    } else if got.first().is_some_and(u8::is_ascii_whitespace) {
        format!("{size} starting with whitespace (only trailing whitespace is allowed)")
    } else if got.starts_with(format!("{token}.").as_bytes()) {
        format!("{size}: this challenge's token with another thumbprint (a file written for another account key)")
    } else {
        format!("{size} that are not this challenge's key authorization (the content is not shown)")
    }
}

/// One validation client reaching what `targets` allows, on every hop.
fn build_client(
    settings: &ValidationSettings,
    resolver: Arc<Resolver>,
    targets: Arc<TargetPolicy>,
) -> Result<reqwest::Client, ValidationSetupError> {
    let policy = redirect_policy(settings.max_redirects, settings.http01_port, targets.clone());
    reqwest::Client::builder()
        .redirect(policy)
        .timeout(settings.timeout)
        // Shorter than the whole attempt, so a connect that hangs (a firewall dropping
        // packets) is reported as such rather than as a slow server.
        .connect_timeout(settings.timeout.mul_f64(0.75))
        .no_proxy()
        // A fresh connection per fetch: a kept-alive one could still point at an address the
        // name no longer has (the owner fixed DNS after a failed attempt).
        .pool_max_idle_per_host(0)
        .user_agent(concat!("vacme-validation/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(ViaResolver { resolver, targets }))
        // A redirect to https is followed without certificate checks: the certificate is
        // not what http-01 proves (Let's Encrypt does the same).
        .danger_accept_invalid_certs(true)
        .use_rustls_tls()
        .build()
        .map_err(|e| ValidationSetupError::Http(e.to_string()))
}

/// RFC 8555 §8.3 lets the server follow redirects; vacme follows at most `max` of them, only to
/// http on port 80 or the http-01 port, or https on 443, and never to a refused address literal.
fn redirect_policy(max: usize, port: u16, targets: Arc<TargetPolicy>) -> Policy {
    Policy::custom(move |attempt| {
        let refuse = |detail: String| -> Box<dyn StdError + Send + Sync> {
            Box::new(Refused(Problem::new(ProblemType::Connection, detail)))
        };
        let shown = attempt.url().to_string();
        let from = attempt.previous().last().map(Url::to_string).unwrap_or_default();
        // `previous` holds the original URL and every redirect already followed.
        if attempt.previous().len() > max {
            return attempt.error(refuse(format!("Fetching {from}: too many redirects (more than {max})")));
        }
        let url = attempt.url();
        let allowed = match url.scheme() {
            "http" => url.port_or_known_default().is_some_and(|p| p == 80 || p == port),
            "https" => url.port_or_known_default() == Some(443),
            _ => false,
        };
        if !allowed {
            let ports = if port == 80 { "80".to_owned() } else { format!("80 or {port}") };
            return attempt.error(refuse(format!(
                "Fetching {from}: redirect to a disallowed URL {shown}: only http on port {ports} \
                 or https on port 443 is followed"
            )));
        }
        // A literal address skips the resolver, so it is checked here.
        if let Some(why) = literal_host(url).and_then(|ip| targets.check(ip).err()) {
            return attempt.error(refuse(format!("Fetching {from}: redirect to {shown}: {why}")));
        }
        attempt.follow()
    })
}

/// The host of `url` when it is an address literal (`[..]` around IPv6), which skips the resolver.
pub(super) fn literal_host(url: &Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
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

/// A failed fetch, worded for the owner and naming the address tried (boulder `detailedError`):
/// never a Rust error chain. The raw error goes to the debug log.
fn fetch_problem(url: &str, e: &reqwest::Error) -> Problem {
    tracing::debug!(url, error = ?e, "http-01 fetch failed");
    let chain = || sources(e);
    if let Some(Refused(problem)) = chain().find_map(|s| s.downcast_ref::<Refused>()) {
        return problem.clone();
    }
    let failed = e.url().map_or_else(|| url.to_owned(), Url::to_string);
    let at = e.url().map(address_tried).unwrap_or_default();
    let connection = |what: &str| Problem::new(ProblemType::Connection, format!("{at}Fetching {failed}: {what}"));
    if let Some(tls) = chain().find_map(|s| s.downcast_ref::<rustls::Error>()) {
        return Problem::new(ProblemType::Tls, format!("{at}Fetching {failed}: TLS handshake failed: {tls}"));
    }
    let io = chain().find_map(|s| s.downcast_ref::<std::io::Error>()).map(std::io::Error::kind);
    if e.is_timeout() || io == Some(std::io::ErrorKind::TimedOut) {
        return if e.is_connect() {
            connection("Timeout during connect (likely firewall problem)")
        } else {
            connection("Timeout after connect (your server may be slow or overloaded)")
        };
    }
    if let Some(kind) = io {
        use std::io::ErrorKind::*;
        return connection(match kind {
            ConnectionRefused => "Connection refused",
            ConnectionReset => "Connection reset by peer",
            ConnectionAborted | BrokenPipe | UnexpectedEof => "Connection closed by the server",
            HostUnreachable => "No route to host",
            NetworkUnreachable => "Network unreachable",
            AddrNotAvailable => "Address not available",
            _ => "Error getting validation data",
        });
    }
    // The innermost HTTP error says what the server did (outer ones are "canceled" wrappers).
    if let Some(h) = chain().filter_map(|s| s.downcast_ref::<hyper::Error>()).last() {
        return connection(if h.is_incomplete_message() || h.is_closed() {
            "Connection closed before a full response was received"
        } else {
            "The server did not answer with a valid HTTP response"
        });
    }
    if e.is_body() || e.is_decode() {
        return connection("Error reading the response body");
    }
    connection("Error getting validation data")
}

/// The causes under `e`, outermost first.
fn sources<'a>(e: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(e.source(), |&s| s.source())
}

/// `127.0.0.1:5002: ` for the host of `url` (its literal, or what the resolver answered for it
/// on this fetch), ready to prefix a detail; empty when unknown.
fn address_tried(url: &Url) -> String {
    let Some(port) = url.port_or_known_default() else { return String::new() };
    let ips = match literal_host(url) {
        Some(ip) => vec![ip],
        None => RESOLVED.try_with(|seen| seen.borrow().clone()).unwrap_or_default(),
    };
    if ips.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = ips.into_iter().map(|ip| SocketAddr::new(ip, port).to_string()).collect();
    format!("{}: ", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::{Router, body::Body, http::HeaderMap, response::Redirect, routing::get};
    use bytes::Bytes;

    use super::{super::resolver::test_dns::TestDns, *};

    const CHALLENGE: &str = "/.well-known/acme-challenge";

    /// Serves `app(port)` on 127.0.0.1 and returns the port.
    async fn serve(app: impl FnOnce(u16) -> Router) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = app(port);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }

    /// A responder for every outcome; tokens name the behaviour.
    fn responder(port: u16) -> Router {
        let to = |target: String| get(move || async move { Redirect::temporary(&target) });
        let endless = || {
            // Never ends: only a reader that stops at the cap gets past it.
            let chunks = futures_util::stream::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1024])));
            Body::from_stream(chunks)
        };
        Router::new()
            .route(&format!("{CHALLENGE}/good"), get(|| async { "good.thumb\n" }))
            .route(&format!("{CHALLENGE}/spaced"), get(|| async { "spaced.thumb \r\n\t" }))
            .route(&format!("{CHALLENGE}/indented"), get(|| async { " indented.thumb" }))
            .route(&format!("{CHALLENGE}/wrong"), get(|| async { format!("\x1b[31mnot it{}", "z".repeat(200)) }))
            .route(
                &format!("{CHALLENGE}/host"),
                get(|h: HeaderMap| async move { h.get("host").map(|v| v.as_bytes().to_vec()).unwrap_or_default() }),
            )
            .route(
                &format!("{CHALLENGE}/agent"),
                get(|h: HeaderMap| async move { h.get("user-agent").map(|v| v.as_bytes().to_vec()).unwrap_or_default() }),
            )
            .route(&format!("{CHALLENGE}/moved"), to(format!("{CHALLENGE}/good")))
            .route(&format!("{CHALLENGE}/loop"), to(format!("{CHALLENGE}/loop")))
            .route(&format!("{CHALLENGE}/huge"), get(|| async { "x".repeat(1 << 20) }))
            .route(&format!("{CHALLENGE}/endless"), get(move || async move { endless() }))
            .route(&format!("{CHALLENGE}/elsewhere"), to(format!("http://127.0.0.1:1{CHALLENGE}/good")))
            .route(&format!("{CHALLENGE}/ftp"), to(format!("ftp://nas.lab.test{CHALLENGE}/good")))
            .route(&format!("{CHALLENGE}/to-gone"), to(format!("http://gone.lab.test:{port}{CHALLENGE}/good")))
            .route(&format!("{CHALLENGE}/to-other"), to(format!("http://other.lab.test:{port}{CHALLENGE}/good")))
            .route(&format!("{CHALLENGE}/meta"), to(format!("http://169.254.169.254{CHALLENGE}/x")))
            // A service only the host should read, and challenge files that lead to it.
            .route("/internal", get(|| async { SECRET }))
            .route(&format!("{CHALLENGE}/to-secret"), to(format!("http://other.lab.test:{port}/internal")))
            .route(&format!("{CHALLENGE}/to-secret-here"), to("/internal".to_owned()))
            .route(&format!("{CHALLENGE}/to-missing"), to(format!("http://other.lab.test:{port}/nothing")))
            .route(&format!("{CHALLENGE}/secret"), get(|| async { SECRET }))
            .route(&format!("{CHALLENGE}/other-key"), get(|| async { "other-key.someone-elses-thumbprint" }))
            .route(&format!("{CHALLENGE}/empty"), get(|| async { "\r\n" }))
            .route(&format!("{CHALLENGE}/to-localhost"), to(format!("http://x.localhost:{port}{CHALLENGE}/good")))
    }

    /// What the loopback-only service serves; never in a problem detail.
    const SECRET: &str = "admin-password=hunter2-TOP-SECRET";

    fn checker(dns: &TestDns, port: u16) -> Http01 {
        checker_with_targets(dns, port, vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
    }

    fn checker_with_targets(dns: &TestDns, port: u16, allowed_targets: Vec<ipnet::IpNet>) -> Http01 {
        checker_with(dns, port, allowed_targets, Duration::from_secs(2))
    }

    fn checker_with(dns: &TestDns, port: u16, allowed_targets: Vec<ipnet::IpNet>, timeout: Duration) -> Http01 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let settings = ValidationSettings {
            http01_port: port,
            tls_alpn01_port: 443,
            nameservers: vec![dns.addr()],
            timeout,
            max_redirects: 3,
            max_body: 8192,
            allowed_targets,
            caa_identities: vec![],
        };
        // As NetValidator builds it.
        let resolver = Arc::new(Resolver::new(&settings.nameservers, settings.timeout / 2).unwrap());
        Http01::new(&settings, resolver).unwrap()
    }

    /// The test zone: `nas` and `other` at 127.0.0.1, everything else NXDOMAIN.
    async fn zone() -> TestDns {
        let dns = TestDns::start().await;
        dns.set("nas.lab.test", &["127.0.0.1".parse().unwrap()]);
        dns.set("other.lab.test", &["127.0.0.1".parse().unwrap()]);
        dns
    }

    fn dns_id(n: &str) -> Identifier {
        Identifier::Dns(n.into())
    }

    #[tokio::test]
    async fn right_answers_through_the_validation_resolver() {
        let dns = zone().await;
        let port = serve(responder).await;
        let c = checker(&dns, port);
        let nas = dns_id("nas.lab.test");
        for token in ["good", "spaced", "moved", "to-other"] {
            let expected = if token == "spaced" { "spaced.thumb" } else { "good.thumb" };
            c.validate(&nas, token, expected).await.unwrap_or_else(|p| panic!("{token}: {}", p.detail));
        }
        // Host is the name with its port (not 80 here); the User-Agent names vacme.
        c.validate(&nas, "host", &format!("nas.lab.test:{port}")).await.unwrap();
        c.validate(&nas, "agent", concat!("vacme-validation/", env!("CARGO_PKG_VERSION"))).await.unwrap();
        assert!(dns.queries() > 0, "resolution went through the test DNS server");
    }

    #[tokio::test]
    async fn wrong_answers_are_problems_worded_for_the_owner() {
        let dns = zone().await;
        let port = serve(responder).await;
        let c = checker(&dns, port);
        let cases = [
            (
                "missing",
                "unauthorized",
                format!("Invalid response from http://nas.lab.test:{port}{CHALLENGE}/missing: 404"),
            ),
            ("indented", "incorrectResponse", "got 15 bytes starting with whitespace".to_owned()),
            ("wrong", "incorrectResponse", "got 211 bytes that are not this challenge's key authorization".to_owned()),
            ("empty", "incorrectResponse", "got an empty file".to_owned()),
            ("other-key", "incorrectResponse", "this challenge's token with another thumbprint".to_owned()),
            (
                "to-missing",
                "unauthorized",
                format!(
                    "Invalid response from http://other.lab.test:{port}/nothing \
                     (redirected from http://nas.lab.test:{port}{CHALLENGE}/to-missing): 404"
                ),
            ),
            ("wrong", "incorrectResponse", r#"expected "wrong.thumb""#.to_owned()),
            ("loop", "connection", format!("Fetching http://nas.lab.test:{port}{CHALLENGE}/loop: too many redirects")),
            ("huge", "unauthorized", "larger than 8192 bytes".to_owned()),
            ("elsewhere", "connection", "redirect to a disallowed URL http://127.0.0.1:1/".to_owned()),
            ("ftp", "connection", "redirect to a disallowed URL ftp://".to_owned()),
            ("to-gone", "dns", "DNS problem: NXDOMAIN looking up A for gone.lab.test".to_owned()),
        ];
        for (token, kind, text) in cases {
            let p = c.validate(&dns_id("nas.lab.test"), token, &format!("{token}.thumb")).await.unwrap_err();
            assert_eq!(p.kind.code(), kind, "{token}: {}", p.detail);
            assert!(p.detail.contains(&text), "{token}: {:?} lacks {text:?}", p.detail);
            assert!(!p.detail.contains("not it"), "{token}: the body is never echoed: {}", p.detail);
        }
    }

    #[tokio::test]
    async fn a_body_read_after_a_redirect_is_never_echoed() {
        let dns = zone().await;
        let port = serve(responder).await;
        let c = checker(&dns, port);
        for token in ["to-secret", "to-secret-here", "secret"] {
            let p = c.validate(&dns_id("nas.lab.test"), token, &format!("{token}.thumb")).await.unwrap_err();
            assert_eq!(p.kind.code(), "incorrectResponse", "{token}: {}", p.detail);
            assert!(!p.detail.contains("hunter2") && !p.detail.contains("SECRET"), "{token}: {}", p.detail);
            // What happened is still said: where vacme was sent, and how much it read there.
            assert!(p.detail.contains(&format!("got {} bytes", SECRET.len())), "{token}: {}", p.detail);
            if token != "secret" {
                assert!(p.detail.contains("/internal (redirected from http://nas.lab.test"), "{token}: {}", p.detail);
            }
        }
    }

    #[tokio::test]
    async fn only_localhost_names_reach_loopback_with_nothing_listed() {
        let dns = zone().await;
        dns.set("two.lab.test", &["127.0.0.2".parse().unwrap()]);
        let port = serve(responder).await;
        // Nothing listed (the default): a .localhost name validates on loopback ...
        let c = checker_with_targets(&dns, port, vec![]);
        c.validate(&dns_id("foo.localhost"), "good", "good.thumb").await.unwrap();
        c.validate(&dns_id("localhost"), "good", "good.thumb").await.unwrap();
        // ... a name that resolves there does not, nor an address literal.
        let p = c.validate(&dns_id("nas.lab.test"), "good", "good.thumb").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert!(p.detail.contains("loopback addresses are not in validation.allowed_targets"), "{}", p.detail);
        let p = c.validate(&Identifier::Ip("127.0.0.1".parse().unwrap()), "good", "good.thumb").await.unwrap_err();
        assert!(p.detail.contains("loopback addresses are not in validation.allowed_targets"), "{}", p.detail);
        // A listed name cannot borrow the exemption by redirecting to a .localhost name.
        let listener = tokio::net::TcpListener::bind(("127.0.0.2", port)).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, responder(port)).await.unwrap() });
        let two = checker_with_targets(&dns, port, vec!["127.0.0.2/32".parse().unwrap()]);
        two.validate(&dns_id("two.lab.test"), "good", "good.thumb").await.unwrap();
        let p = two.validate(&dns_id("two.lab.test"), "to-localhost", "good.thumb").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection", "{}", p.detail);
        assert!(p.detail.contains("x.localhost: vacme does not connect to 127.0.0.1"), "{}", p.detail);
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_at_the_cap() {
        let dns = zone().await;
        let port = serve(responder).await;
        let started = Instant::now();
        let p = checker(&dns, port).validate(&dns_id("nas.lab.test"), "endless", "x").await.unwrap_err();
        // Reading it all would end in the 2 s timeout (a `connection` problem), never here.
        assert_eq!(p.kind.code(), "unauthorized", "{}", p.detail);
        assert!(p.detail.contains("larger than 8192 bytes"), "{}", p.detail);
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_missing_name_is_a_dns_problem() {
        let dns = zone().await;
        let port = serve(responder).await;
        let p = checker(&dns, port).validate(&dns_id("gone.lab.test"), "good", "good.thumb").await.unwrap_err();
        assert_eq!(p.kind.code(), "dns");
        assert_eq!(
            p.detail,
            "DNS problem: NXDOMAIN looking up A for gone.lab.test - check that a DNS record exists for this name"
        );
    }

    #[tokio::test]
    async fn an_unanswered_dns_query_is_a_dns_problem_not_a_timeout() {
        let dns = zone().await;
        dns.silent("slow.lab.test");
        let c = checker_with(&dns, 1, vec!["127.0.0.0/8".parse().unwrap()], Duration::from_secs(1));
        let p = c.validate(&dns_id("slow.lab.test"), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "dns", "{}", p.detail);
        assert_eq!(p.detail, "DNS problem: query timed out looking up A for slow.lab.test");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connection_problem_naming_the_address() {
        let dns = zone().await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let p = checker(&dns, port).validate(&dns_id("nas.lab.test"), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert_eq!(
            p.detail,
            format!("127.0.0.1:{port}: Fetching http://nas.lab.test:{port}{CHALLENGE}/t: Connection refused")
        );
    }

    /// A raw TCP server that answers every connection with `reply` (or holds it open when None).
    async fn raw_server(reply: Option<&'static [u8]>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                if let Some(reply) = reply {
                    let mut request = [0u8; 1024];
                    let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut request).await;
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut conn, reply).await;
                }
                held.push(conn);
            }
        });
        port
    }

    #[tokio::test]
    async fn silent_and_non_http_servers_are_connection_problems() {
        let dns = zone().await;
        let targets = vec!["127.0.0.0/8".parse().unwrap()];
        let silent = raw_server(None).await;
        let c = checker_with(&dns, silent, targets.clone(), Duration::from_millis(500));
        let p = c.validate(&dns_id("nas.lab.test"), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert_eq!(
            p.detail,
            format!(
                "127.0.0.1:{silent}: Fetching http://nas.lab.test:{silent}{CHALLENGE}/t: \
                 Timeout after connect (your server may be slow or overloaded)"
            )
        );
        let garbage = raw_server(Some(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")).await;
        let c = checker_with(&dns, garbage, targets, Duration::from_secs(2));
        let p = c.validate(&dns_id("nas.lab.test"), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert!(p.detail.ends_with("The server did not answer with a valid HTTP response"), "{}", p.detail);
    }

    #[tokio::test]
    async fn every_address_of_the_name_is_tried() {
        let dns = zone().await;
        // 127.0.0.2 is loopback too but nothing listens there: refused, then 127.0.0.1 answers.
        dns.set("multi.lab.test", &["127.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap()]);
        let port = serve(responder).await;
        checker(&dns, port).validate(&dns_id("multi.lab.test"), "good", "good.thumb").await.unwrap();
    }

    #[tokio::test]
    async fn an_ipv6_only_name_is_reached() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            eprintln!("no IPv6 loopback here; skipped");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, responder(port)).await.unwrap() });
        let dns = zone().await;
        dns.set("six.lab.test", &["::1".parse().unwrap()]);
        let c = checker(&dns, port);
        c.validate(&dns_id("six.lab.test"), "good", "good.thumb").await.unwrap();
        // RFC 8738: an IPv6 identifier's Host is the bracketed literal.
        c.validate(&Identifier::Ip("::1".parse().unwrap()), "host", &format!("[::1]:{port}")).await.unwrap();
    }

    #[tokio::test]
    async fn localhost_names_and_ip_identifiers_need_no_dns() {
        let dns = zone().await;
        let port = serve(responder).await;
        let c = checker(&dns, port);
        c.validate(&dns_id("foo.localhost"), "good", "good.thumb").await.unwrap();
        let ip = Identifier::Ip("127.0.0.1".parse().unwrap());
        c.validate(&ip, "good", "good.thumb").await.unwrap();
        c.validate(&ip, "host", &format!("127.0.0.1:{port}")).await.unwrap();
        assert_eq!(dns.queries(), 0);
    }

    #[tokio::test]
    async fn bad_tokens_and_wildcards_never_reach_the_network() {
        let dns = zone().await;
        let c = checker(&dns, 1);
        for token in ["", "../../etc", "a/b", "a?b"] {
            let p = c.validate(&dns_id("nas.lab.test"), token, "x").await.unwrap_err();
            assert_eq!(p.kind.code(), "malformed", "{token:?}");
        }
        let p = c.validate(&dns_id("*.lab.test"), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "unauthorized", "{}", p.detail);
        assert_eq!(dns.queries(), 0);
    }

    #[tokio::test]
    async fn target_policy_refuses_before_connecting() {
        let dns = zone().await;
        let c = checker_with_targets(&dns, 1, vec![]);
        let p = c.validate(&Identifier::Ip("169.254.169.254".parse().unwrap()), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert!(p.detail.contains("cloud metadata"), "{}", p.detail);
        // A .localhost name is not refused (nothing listens on port 1): RFC 6761 puts it on loopback.
        let p = c.validate(&dns_id("nas.localhost"), "t", "t.x").await.unwrap_err();
        assert!(p.detail.ends_with("Connection refused"), "{}", p.detail);
        let p = c.validate(&dns_id("nas.lab.test"), "t", "t.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert!(p.detail.starts_with("nas.lab.test: "), "{}", p.detail);
        let p = c.validate(&Identifier::Ip("10.9.8.7".parse().unwrap()), "t", "t.x").await.unwrap_err();
        assert!(p.detail.contains("private"), "{}", p.detail);
    }

    #[tokio::test]
    async fn redirects_cannot_reach_refused_addresses() {
        let dns = zone().await;
        let port = serve(responder).await;
        let p = checker(&dns, port).validate(&dns_id("nas.lab.test"), "meta", "meta.x").await.unwrap_err();
        assert_eq!(p.kind.code(), "connection");
        assert!(p.detail.contains("169.254.169.254"), "{}", p.detail);
    }
}
