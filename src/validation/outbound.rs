//! vacme's own outgoing calls to addresses an operator configured (webhooks), held to the rules
//! validation follows: every name resolved through the validation resolver, every address
//! checked against `validation.allowed_targets` (never link-local, loopback and private ranges
//! only when listed), no redirects, and a deadline.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::HeaderMap;
use reqwest::{Url, redirect::Policy};

use super::{
    Resolver, TargetPolicy, ValidationSetupError,
    http01::{ViaResolver, literal_host},
};

/// A client for outgoing POSTs; see the module text.
#[derive(Debug)]
pub struct Outbound {
    client: reqwest::Client,
    targets: Arc<TargetPolicy>,
}

impl Outbound {
    /// `nameservers` empty means the system resolver; `allowed` is `validation.allowed_targets`;
    /// an `https://` receiver must chain to a root in `roots` (PEM).
    pub fn new(
        nameservers: &[SocketAddr],
        allowed: Vec<ipnet::IpNet>,
        timeout: Duration,
        roots: Option<&[u8]>,
    ) -> Result<Self, ValidationSetupError> {
        let resolver = Arc::new(Resolver::new(nameservers, timeout / 2)?);
        let targets = Arc::new(TargetPolicy::new(allowed));
        let mut builder = reqwest::Client::builder();
        for cert in roots
            .map(reqwest::Certificate::from_pem_bundle)
            .transpose()
            .map_err(|e| ValidationSetupError::Http(format!("the roots for https webhooks: {e}")))?
            .unwrap_or_default()
        {
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .redirect(Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.mul_f64(0.75))
            .no_proxy()
            .user_agent(concat!("vacme/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(ViaResolver { resolver, targets: targets.clone() }))
            .use_rustls_tls()
            .build()
            .map_err(|e| ValidationSetupError::Http(e.to_string()))?;
        Ok(Self { client, targets })
    }

    /// POSTs `body` to `url`; `Ok` for a 2xx answer, else why not (worded for the operator's
    /// log: the address refused, the status, or the failure, never the URL's secrets).
    pub async fn post(&self, url: &Url, headers: HeaderMap, body: Vec<u8>) -> Result<(), String> {
        if let Some(why) = literal_host(url).and_then(|ip| self.targets.check(ip).err()) {
            return Err(why);
        }
        let res = self.client.post(url.clone()).headers(headers).body(body).send().await.map_err(|e| {
            let e = e.without_url();
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            why
        })?;
        let status = res.status();
        if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
    }
}
