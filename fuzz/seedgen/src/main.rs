//! Seed inputs for vacme's fuzz targets, one small file each, in the layouts the targets read
//! (see the doc comment of each target in fuzz/fuzz_targets/). Keys are fresh on every run except
//! the RSA ones, which are vacme's test keys (ring cannot generate RSA).

use std::{fs, path::Path};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair},
};
use serde_json::{Value, json};

/// The hand-built CSRs of vacme's tests: hostile shapes and client-shaped requests.
#[path = "../../../tests/support/hostile_csr.rs"]
mod hostile_csr;

/// Must match `NAMES` in fuzz_targets/csr.rs: bit i of the header's first byte is `NAMES[i]`.
const NAMES: [&str; 6] = ["a.lab.test", "b.lab.test", "*.lab.test", "10.0.0.5", "fd00::5", "nas.home.arpa"];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let seeds = root.join("seeds");
    let repo = root.join("..");
    jws_and_jwk(&seeds, &repo);
    csr(&seeds, &repo);
    identifier(&seeds);
    config(&seeds);
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(dir).expect("create seed dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

/// An account key of each algorithm vacme accepts.
enum Key {
    Ec(EcdsaKeyPair, &'static str, &'static str, usize),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static str),
}

impl Key {
    fn jwk(&self) -> Value {
        match self {
            Key::Ec(k, _, crv, n) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": crv, "x": B64.encode(&p[1..1 + n]), "y": B64.encode(&p[1 + n..])})
            }
            Key::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(k.public_key().as_ref())}),
            Key::Rsa(k, _) => {
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
            }
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Ec(_, alg, ..) | Key::Rsa(_, alg) => alg,
            Key::Ed(_) => "EdDSA",
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Key::Ec(k, ..) => k.sign(&rng, msg).expect("ECDSA signs").as_ref().to_vec(),
            Key::Ed(k) => k.sign(msg).as_ref().to_vec(),
            Key::Rsa(k, alg) => {
                let pad: &'static dyn signature::RsaEncoding =
                    if *alg == "PS256" { &signature::RSA_PSS_SHA256 } else { &signature::RSA_PKCS1_SHA256 };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(pad, &rng, msg, &mut sig).expect("RSA signs");
                sig
            }
        }
    }
}

fn ec(alg: &'static signature::EcdsaSigningAlgorithm, name: &'static str, crv: &'static str, n: usize) -> Key {
    let rng = SystemRandom::new();
    let pk = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate EC key");
    Key::Ec(EcdsaKeyPair::from_pkcs8(alg, pk.as_ref(), &rng).expect("load EC key"), name, crv, n)
}

/// A flattened JWS (RFC 7515 §7.2.2) as an ACME client posts it.
fn jws(key: &Key, header: Value, payload: &str) -> String {
    let p = B64.encode(header.to_string());
    let b = if payload.is_empty() { String::new() } else { B64.encode(payload) };
    let sig = key.sign(format!("{p}.{b}").as_bytes());
    json!({"protected": p, "payload": b, "signature": B64.encode(sig)}).to_string()
}

fn jws_and_jwk(seeds: &Path, repo: &Path) {
    let rsa_der = fs::read(repo.join("src/jws/testdata/rsa2048.pk8.der")).expect("vacme's RSA test key");
    let rsa = |alg| Key::Rsa(RsaKeyPair::from_pkcs8(&rsa_der).expect("RSA test key loads"), alg);
    let ed = Ed25519KeyPair::from_pkcs8(
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate Ed25519 key").as_ref(),
    )
    .expect("load Ed25519 key");
    let keys = [
        ("es256", ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "ES256", "P-256", 32)),
        ("es384", ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "ES384", "P-384", 48)),
        ("eddsa", Key::Ed(ed)),
        ("rs256", rsa("RS256")),
        ("ps256", rsa("PS256")),
    ];
    let base = "https://localhost:8443/acme";
    let (dir, jwk_dir) = (seeds.join("jws"), seeds.join("jwk"));
    for (name, key) in &keys {
        let new_account =
            json!({"alg": key.alg(), "nonce": "AAEAAQ", "url": format!("{base}/new-account"), "jwk": key.jwk()});
        write(
            &dir,
            &format!("new-account-{name}"),
            jws(key, new_account, r#"{"termsOfServiceAgreed":true,"contact":["mailto:admin@lab.test"]}"#),
        );
        write(&jwk_dir, &format!("{name}.json"), key.jwk().to_string());
    }
    let key = &keys[0].1;
    let kid = |url: &str| json!({"alg": "ES256", "nonce": "AAEAAg", "url": format!("{base}/{url}"), "kid": format!("{base}/acct/1")});
    write(
        &dir,
        "new-order",
        jws(
            key,
            kid("new-order"),
            r#"{"identifiers":[{"type":"dns","value":"a.lab.test"},{"type":"ip","value":"10.0.0.5"}],"notAfter":"2027-01-01T00:00:00Z"}"#,
        ),
    );
    write(&dir, "post-as-get", jws(key, kid("order/1"), ""));
    write(&dir, "challenge", jws(key, kid("chall/1"), "{}"));
    write(&dir, "finalize", jws(key, kid("order/1/finalize"), r#"{"csr":"MIIB"}"#));
    // Refused shapes the parser has table tests for.
    write(&dir, "alg-none", jws(key, json!({"alg": "none", "url": "u", "kid": "k"}), "{}"));
    write(&dir, "jwk-and-kid", jws(key, json!({"alg": "ES256", "url": "u", "kid": "k", "jwk": key.jwk()}), "{}"));
    write(&dir, "general-serialization", r#"{"payload":"e30","signatures":[{"protected":"e30","signature":""}]}"#);

    // RFC 7638 §3.1's example key, with the members a thumbprint ignores.
    write(
        &jwk_dir,
        "rfc7638.json",
        r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#,
    );
    write(&jwk_dir, "private-ec.json", r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}"#);
    // The raw-member layout: a selector byte, then the members' bytes.
    write(&jwk_dir, "raw-ed25519", [[3u8].as_slice(), &[7; 32]].concat());
    write(&jwk_dir, "raw-p256", [[0u8].as_slice(), &[9; 64]].concat());
}

fn csr(seeds: &Path, repo: &Path) {
    let dir = seeds.join("csr");
    let rsa_pem = fs::read_to_string(repo.join("src/issuer/testdata/rsa2048.pem")).expect("vacme's RSA test key");
    let p256 = KeyPair::generate().expect("P-256 key");
    let cases: [(&str, Vec<&str>, Option<&str>, KeyPair); 6] = [
        ("p256-one-name", vec!["a.lab.test"], None, p256),
        (
            "p384-two-names-cn",
            vec!["a.lab.test", "b.lab.test"],
            Some("b.lab.test"),
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key"),
        ),
        ("rsa2048-wildcard", vec!["*.lab.test"], None, KeyPair::from_pem(&rsa_pem).expect("RSA test key")),
        ("ed25519", vec!["nas.home.arpa"], None, KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key")),
        ("ips-and-name", vec!["10.0.0.5", "fd00::5", "a.lab.test"], None, KeyPair::generate().expect("P-256 key")),
        ("all-names", NAMES.to_vec(), Some("nas.home.arpa"), KeyPair::generate().expect("P-256 key")),
    ];
    for (name, sans, cn, key) in cases {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("rcgen accepts the names");
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        let der = p.serialize_request(&key).expect("CSR").der().to_vec();
        let bits = NAMES.iter().enumerate().filter(|(_, n)| sans.contains(n)).fold(0u8, |m, (i, _)| m | 1 << i);
        // Flags: notBefore and notAfter set, a 90-day profile cap; 2026-12-01 to 2027-03-01.
        write(&dir, name, [header(bits, 0b1011, 1_796_083_200, 1_803_859_200, 90).as_slice(), &der].concat());
        if name == "p256-one-name" {
            // The same CSR against an order with one more name: the mismatch path.
            write(&dir, "mismatch", [header(bits | 2, 0, 0, 0, 0).as_slice(), &der].concat());
        }
    }
    let rsa1024 = fs::read(repo.join("src/issuer/testdata/rsa1024-a.lab.test.csr.der")).expect("vacme's 1024-bit CSR");
    write(&dir, "rsa1024-refused", [header(1, 0, 0, 0, 0).as_slice(), &rsa1024].concat());
    // The strict reader's cases: each hostile shape against an order for a.lab.test (its victim
    // is b.lab.test, so a mutation that gets it accepted breaks the target's assertion), and
    // CSRs as certbot, cert-manager and acme.sh send them, against an order for both names.
    let slug = |case: &str| -> String {
        case.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
    };
    for (case, der) in hostile_csr::hostile_csrs(&["a.lab.test"], "b.lab.test") {
        write(&dir, &format!("hostile-{}", slug(case)), [header(1, 0, 0, 0, 0).as_slice(), &der].concat());
    }
    for (case, der) in hostile_csr::good_csrs(&["a.lab.test", "b.lab.test"]) {
        write(&dir, &format!("client-{}", slug(case)), [header(0b11, 0, 0, 0, 0).as_slice(), &der].concat());
    }
}

/// The 22-byte header of fuzz_targets/csr.rs.
fn header(names: u8, flags: u8, not_before: i64, not_after: i64, max_days: u32) -> Vec<u8> {
    let mut h = vec![names, flags];
    h.extend_from_slice(&not_before.to_be_bytes());
    h.extend_from_slice(&not_after.to_be_bytes());
    h.extend_from_slice(&max_days.to_be_bytes());
    h
}

fn identifier(seeds: &Path) {
    let dir = seeds.join("identifier");
    // Selector 0 is a dns identifier, 1 an ip one, 2 `type NUL value`.
    let cases: [(&str, u8, &str); 12] = [
        ("dns", 0, "NAS.Lab.Example."),
        ("wildcard", 0, "*.lab.example"),
        ("a-label", 0, "xn--bcher-kva.example"),
        ("localhost", 0, "localhost"),
        ("u-label", 0, "bücher.example"),
        ("reserved-hyphens", 0, "ab--c.example"),
        ("digits-tld", 0, "a.123"),
        ("ip-in-dns", 0, "10.0.0.1"),
        ("ipv4", 1, "10.0.0.5"),
        ("ipv6", 1, "fd00::5"),
        ("ipv4-mapped", 1, "::ffff:10.0.0.5"),
        ("email", 2, "email\0a@b.example"),
    ];
    for (name, selector, value) in cases {
        write(&dir, name, [[selector].as_slice(), value.as_bytes()].concat());
    }
}

fn config(seeds: &Path) {
    let dir = seeds.join("config");
    write(&dir, "zero-config.toml", "");
    write(
        &dir,
        "homelab.toml",
        r#"[server]
listen = "0.0.0.0:8443"
base_url = "https://acme.lab.example:8443"
data_dir = "/var/lib/vacme"

[policy]
allowed_domains = ["lab.example", "home.arpa"]
allowed_ips = ["10.0.0.0/8", "fd00::/8"]

[validation]
nameservers = ["10.0.0.53", "127.0.0.1:5353"]
allowed_targets = ["10.0.0.0/8"]

[issuance]
default_profile = "default"

[profiles.default]
description = "90-day server certificate"

[profiles.short]
description = "24-hour certificate for lab machines"
role = "lab-short"
max_days = 1

[vault]
address = "https://vault.lab.example:8200"
mount = "pki_int"
role = "lab-internal"

[vault.auth]
method = "approle"
role_id = "vacme"
secret_id_file = "/etc/vacme/secret-id"
"#,
    );
    // A file plus environment overrides (after the NUL), as `VACME_*` variables would give them.
    write(
        &dir,
        "env-overrides",
        "[vault]\naddress = \"http://127.0.0.1:8200\"\n\0VAULT__ROLE=other\nPOLICY__ALLOWED_DOMAINS=lab.example, home.arpa\nVALIDATION__HTTP01_PORT=5002\n",
    );
    write(&dir, "unknown-key.toml", "[server]\nlisten_addr = \"x\"\n");
    write(&dir, "bad-renewal.toml", "[renewal]\nwindow_start_percent = 80\nwindow_end_percent = 20\n");
}
