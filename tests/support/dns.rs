//! A small authoritative DNS responder on loopback UDP for the test zone: A records for every
//! name in the zone (or per-name overrides), TXT records the test sets, NXDOMAIN outside.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use tokio::net::UdpSocket;

#[derive(Default)]
struct Zone {
    suffix: String,
    default_a: Option<Ipv4Addr>,
    txt: HashMap<String, Vec<String>>,
    cname: HashMap<String, String>,
    caa: HashMap<String, Vec<(u8, String, String)>>,
    /// TXT values are also read from `<dir>/<name>` (one per line), so a client's hook
    /// script in another process can publish records.
    txt_dir: Option<std::path::PathBuf>,
}

pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

const TYPE_A: u16 = 1;
const TYPE_TXT: u16 = 16;
const TYPE_CNAME: u16 = 5;
const TYPE_CAA: u16 = 257;

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

impl TestDns {
    /// Serves `zone`, answering A `a` for the zone apex and every name below it.
    pub async fn with_zone(zone: &str, a: Ipv4Addr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone =
            Arc::new(Mutex::new(Zone { suffix: zone.to_ascii_lowercase(), default_a: Some(a), ..Zone::default() }));
        let shared = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else { continue };
                let answer = respond(&buf[..n], &shared.lock().unwrap());
                if let Some(answer) = answer {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        });
        Self { addr, zone, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    #[allow(dead_code)]
    pub fn add_txt(&self, name: &str, value: &str) {
        self.zone.lock().unwrap().txt.entry(name.to_ascii_lowercase()).or_default().push(value.to_owned());
    }

    /// Adds a CAA record (RFC 8659) at `name`.
    #[allow(dead_code)]
    pub fn add_caa(&self, name: &str, flags: u8, tag: &str, value: &str) {
        self.zone.lock().unwrap().caa.entry(name.to_ascii_lowercase()).or_default().push((
            flags,
            tag.into(),
            value.into(),
        ));
    }

    /// `name` becomes a CNAME for `target` (acme-dns style delegation).
    #[allow(dead_code)]
    pub fn set_cname(&self, name: &str, target: &str) {
        self.zone.lock().unwrap().cname.insert(name.to_ascii_lowercase(), target.to_ascii_lowercase());
    }

    /// Also serve TXT values from files in `dir`.
    #[allow(dead_code)]
    pub fn serve_txt_from(&self, dir: &std::path::Path) {
        self.zone.lock().unwrap().txt_dir = Some(dir.to_owned());
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses one question and builds the answer; None for anything that is not a plain query.
fn respond(q: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let qname = labels.join(".");
    let in_zone = |n: &str| n == zone.suffix || n.ends_with(&format!(".{}", zone.suffix));
    // (owner name, type, rdata); owners are written in full, not compressed.
    let mut answers: Vec<(String, u16, Vec<u8>)> = Vec::new();
    let mut name = qname.clone();
    if in_zone(&name) {
        // Like a recursive server: the CNAME, then the target's records.
        if let Some(target) = zone.cname.get(&name) {
            answers.push((name.clone(), TYPE_CNAME, encode_name(target)));
            name = target.clone();
        }
        match qtype {
            TYPE_A => {
                if let Some(a) = zone.default_a {
                    answers.push((name.clone(), TYPE_A, a.octets().to_vec()));
                }
            }
            TYPE_CAA => {
                for (flags, tag, value) in zone.caa.get(&name).into_iter().flatten() {
                    let mut rdata = vec![*flags, tag.len() as u8];
                    rdata.extend_from_slice(tag.as_bytes());
                    rdata.extend_from_slice(value.as_bytes());
                    answers.push((name.clone(), TYPE_CAA, rdata));
                }
            }
            TYPE_TXT => {
                let mut values = zone.txt.get(&name).cloned().unwrap_or_default();
                if let Some(dir) = &zone.txt_dir
                    && let Ok(text) = std::fs::read_to_string(dir.join(&name))
                {
                    values.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
                }
                for v in values {
                    let mut rdata = vec![v.len() as u8];
                    rdata.extend_from_slice(v.as_bytes());
                    answers.push((name.clone(), TYPE_TXT, rdata));
                }
            }
            _ => {}
        }
    }
    let in_zone = in_zone(&qname);
    let rcode: u8 = if in_zone { 0 } else { 3 };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&q[0..2]);
    out.push(0x84 | (q[2] & 0x01)); // QR, AA, RD copied
    out.push(rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(q.get(12..question_end)?);
    for (owner, kind, rdata) in answers {
        out.extend_from_slice(&encode_name(&owner));
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}
