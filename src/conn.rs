//! HTTPS connections within limits: a cap on connections in all and per client address (so one
//! host holding thousands of idle sockets cannot lock others out), a deadline for the TLS
//! handshake and each request head, a largest request head, and a longest connection life.
//! Every request carries the client's address (`policy::ratelimit::ClientAddr`) for the rate limits.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use http::Request;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use ipnet::IpNet;
use tokio::{
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::policy::ratelimit::{ClientAddr, client_addr};

/// Connection limits, from `[server]`.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// Most connections from one address at once; trusted proxies are exempt.
    pub max_per_ip: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_lifetime: Duration,
    pub trusted_proxies: Arc<Vec<IpNet>>,
}

/// Admits connections: one permit each from the global cap, and a count per address.
#[derive(Clone, Debug)]
pub struct Gate {
    slots: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limits: ConnLimits,
}

/// Held by a connection while it is open; gives its place back when dropped.
#[derive(Debug)]
pub struct Ticket {
    _slot: OwnedSemaphorePermit,
    ip: IpAddr,
    counted: bool,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Gate {
    pub fn new(limits: ConnLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            limits,
        }
    }

    /// Waits for a free place in the global cap (the next connection waits in the kernel's
    /// accept queue meanwhile).
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Admits a connection from `ip` holding `slot`, unless that address is at its own cap.
    pub fn admit(&self, slot: OwnedSemaphorePermit, ip: IpAddr) -> Option<Ticket> {
        let exempt = self.limits.trusted_proxies.iter().any(|net| net.contains(&ip));
        if !exempt {
            let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= self.limits.max_per_ip {
                return None;
            }
            *n += 1;
        }
        Some(Ticket { _slot: slot, ip, counted: !exempt, per_ip: self.per_ip.clone() })
    }

    /// Waits until every connection is closed, or `grace` passed. `false` if some are still open.
    pub async fn drained(&self, grace: Duration) -> bool {
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.slots.acquire_many(all)).await.is_ok()
    }
}

/// Serves one accepted connection until the client closes it, it outlives `max_lifetime`, or
/// `stop` turns true; the last two end it gracefully (requests in flight are answered).
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    ticket: Ticket,
) {
    let _ticket = ticket;
    // Responses go out as soon as they are written (no Nagle wait for the client's ACK).
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let trusted = limits.trusted_proxies.clone();
    let service = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
        let addr = client_addr(peer.ip(), req.headers(), &trusted);
        req.extensions_mut().insert(ClientAddr(addr));
        req
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = tokio::time::sleep(limits.max_lifetime) => None,
        _ = stop.wait_for(|s| *s) => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, per_ip: usize, trusted: &[&str]) -> Gate {
        Gate::new(ConnLimits {
            max_connections: max,
            max_per_ip: per_ip,
            header_timeout: Duration::from_secs(1),
            max_header_bytes: 8192,
            max_lifetime: Duration::from_secs(1),
            trusted_proxies: Arc::new(trusted.iter().map(|s| s.parse().unwrap()).collect()),
        })
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_place() {
        let g = gate(10, 2, &["10.0.0.1/32"]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = g.admit(g.slot().await.unwrap(), a).unwrap();
        let _t2 = g.admit(g.slot().await.unwrap(), a).unwrap();
        assert!(g.admit(g.slot().await.unwrap(), a).is_none(), "a third from the same address is refused");
        let _t3 = g.admit(g.slot().await.unwrap(), b).unwrap();
        drop(t1);
        let _t4 = g.admit(g.slot().await.unwrap(), a).expect("a place freed by a closed connection is reusable");
        // A trusted proxy carries many clients: no per-address cap.
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<Ticket> =
            (0..5).map(|_| g.admit(g.slots.clone().try_acquire_owned().unwrap(), proxy).unwrap()).collect();
        assert_eq!(held.len(), 5);
        assert!(!g.drained(Duration::from_millis(10)).await, "connections are still open");
    }
}
