//! Successful ACME responses: JSON or a PEM chain, with the headers RFC 8555 asks for.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// A response body plus `Location`, `Retry-After` and `Link` headers.
#[derive(Debug)]
pub struct AcmeResponse {
    status: StatusCode,
    body: Body,
    location: Option<String>,
    retry_after: Option<u64>,
    links: Vec<String>,
}

#[derive(Debug)]
enum Body {
    Json(serde_json::Value),
    PemChain(String),
    Empty,
}

impl AcmeResponse {
    /// A JSON body. Serialising our own wire types cannot fail; if it did, the client gets `{}`.
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        let body = serde_json::to_value(value).unwrap_or_else(|_| serde_json::json!({}));
        Self { status, body: Body::Json(body), location: None, retry_after: None, links: Vec::new() }
    }

    /// RFC 8555 §7.4.2: `application/pem-certificate-chain`.
    pub fn pem_chain(chain: String) -> Self {
        Self {
            status: StatusCode::OK,
            body: Body::PemChain(chain),
            location: None,
            retry_after: None,
            links: Vec::new(),
        }
    }

    pub fn empty(status: StatusCode) -> Self {
        Self { status, body: Body::Empty, location: None, retry_after: None, links: Vec::new() }
    }

    pub fn location(mut self, url: String) -> Self {
        self.location = Some(url);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds `Link: <url>;rel="rel"`.
    pub fn link(mut self, url: &str, rel: &str) -> Self {
        self.links.push(format!("<{url}>;rel=\"{rel}\""));
        self
    }
}

impl IntoResponse for AcmeResponse {
    fn into_response(self) -> Response {
        let mut res = match self.body {
            Body::Json(v) => (self.status, Json(v)).into_response(),
            Body::PemChain(pem) => {
                (self.status, [(header::CONTENT_TYPE, "application/pem-certificate-chain")], pem).into_response()
            }
            Body::Empty => self.status.into_response(),
        };
        let headers = res.headers_mut();
        if let Some(v) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, v);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for link in self.links {
            if let Ok(v) = HeaderValue::from_str(&link) {
                headers.append(header::LINK, v);
            }
        }
        res
    }
}
