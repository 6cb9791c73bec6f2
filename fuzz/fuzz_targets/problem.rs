//! Problem documents (RFC 8555 §6.7, RFC 7807) rendered exactly as the API sends them: whatever
//! the detail and subproblems hold, the body is valid JSON with the right type, status and
//! content type, and the logged cause of a `serverInternal` problem never reaches it.
#![no_main]

use std::net::IpAddr;

use arbitrary::Arbitrary;
use axum::response::IntoResponse;
use http::{StatusCode, header};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vacme::{
    acme::{Identifier, Problem, ProblemType, Subproblem},
    jws::ALGORITHMS,
};

/// Every variant, so the fuzzer can pick any by index.
const KINDS: [ProblemType; 29] = [
    ProblemType::AccountDoesNotExist,
    ProblemType::AlreadyReplaced,
    ProblemType::AlreadyRevoked,
    ProblemType::BadCsr,
    ProblemType::BadNonce,
    ProblemType::BadPublicKey,
    ProblemType::BadRevocationReason,
    ProblemType::BadSignatureAlgorithm,
    ProblemType::Caa,
    ProblemType::Connection,
    ProblemType::Dns,
    ProblemType::ExternalAccountRequired,
    ProblemType::IncorrectResponse,
    ProblemType::InvalidContact,
    ProblemType::InvalidProfile,
    ProblemType::Malformed,
    ProblemType::OrderNotReady,
    ProblemType::RateLimited,
    ProblemType::RejectedIdentifier,
    ProblemType::ServerInternal,
    ProblemType::Tls,
    ProblemType::Unauthorized,
    ProblemType::UnsupportedContact,
    ProblemType::UnsupportedIdentifier,
    ProblemType::UserActionRequired,
    ProblemType::NotFound,
    ProblemType::MethodNotAllowed,
    ProblemType::PayloadTooLarge,
    ProblemType::UnsupportedMediaType,
];

/// Marks the hidden cause of an internal problem; it must never appear in a body.
const SECRET: &str = "vacme-fuzz-hidden-cause";

#[derive(Arbitrary, Debug)]
enum Input {
    /// What handlers build: a type, client-facing text, subproblems and the extra headers.
    Plain {
        kind: u8,
        detail: String,
        status: Option<u16>,
        subproblems: Vec<Sub>,
        algorithms: bool,
        location: Option<String>,
        retry_after: Option<u64>,
    },
    /// A store or CA failure whose message must stay in the log.
    Internal { cause: String, status: Option<u16> },
}

#[derive(Arbitrary, Debug)]
struct Sub {
    kind: u8,
    detail: String,
    identifier: Option<Ident>,
}

#[derive(Arbitrary, Debug)]
enum Ident {
    Dns(String),
    Ip(IpAddr),
}

fn kind(i: u8) -> ProblemType {
    KINDS[usize::from(i) % KINDS.len()]
}

fuzz_target!(|input: Input| {
    let (problem, hidden) = match input {
        Input::Plain { kind: k, detail, status, subproblems, algorithms, location, retry_after } => {
            let subs = subproblems
                .into_iter()
                .map(|s| Subproblem {
                    kind: kind(s.kind),
                    detail: s.detail,
                    identifier: s.identifier.map(|i| match i {
                        Ident::Dns(n) => Identifier::Dns(n),
                        Ident::Ip(ip) => Identifier::Ip(ip),
                    }),
                })
                .collect();
            let mut p = if algorithms {
                Problem::bad_signature_algorithm(detail, ALGORITHMS)
            } else {
                Problem::new(kind(k), detail)
            }
            .with_subproblems(subs);
            if let Some(s) = status.and_then(|s| StatusCode::from_u16(s).ok()) {
                p = p.with_status(s);
            } else if let Some(s) = status {
                // Not an HTTP status at all: the field is public, so a caller could set it.
                p.status = s;
            }
            p.location = location;
            p.retry_after = retry_after;
            (p, false)
        }
        Input::Internal { cause, status } => {
            let mut p = Problem::internal(std::io::Error::other(format!("{SECRET} {cause}")));
            if let Some(s) = status.and_then(|s| StatusCode::from_u16(s).ok()) {
                p = p.with_status(s);
            }
            (p, true)
        }
    };

    // The document as stored on a failed challenge or order (serde), and as sent (IntoResponse).
    let stored = serde_json::to_string(&problem).expect("a problem serialises");
    let expected = problem.clone();
    let res = problem.into_response();
    let want_status = StatusCode::from_u16(expected.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.status(), want_status);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    let body = runtime().block_on(axum::body::to_bytes(res.into_body(), usize::MAX)).expect("the body is in memory");
    assert_eq!(body, stored.as_bytes(), "the response body is the serialised problem");

    let v: Value = serde_json::from_slice(&body).expect("a problem body is valid JSON");
    assert_eq!(v["type"], expected.kind.urn());
    assert!(v["type"].as_str().is_some_and(|t| t.starts_with("urn:ietf:params:acme:error:")));
    assert_eq!(v["detail"], expected.detail.as_str());
    assert_eq!(v["status"], expected.status);
    let subs = v.get("subproblems").and_then(Value::as_array).map_or(0, Vec::len);
    assert_eq!(subs, expected.subproblems.len());
    for (sv, s) in v.get("subproblems").and_then(Value::as_array).into_iter().flatten().zip(&expected.subproblems) {
        assert_eq!(sv["type"], s.kind.urn());
        assert_eq!(sv["detail"], s.detail.as_str());
        if let Some(id) = &s.identifier {
            let back: Identifier = serde_json::from_value(sv["identifier"].clone()).expect("identifier JSON");
            assert_eq!(&back, id);
        }
    }
    if hidden {
        assert!(!stored.contains(SECRET), "a serverInternal body leaked its cause: {stored}");
    }
});

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime"))
}
