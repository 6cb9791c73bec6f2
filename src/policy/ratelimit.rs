//! Rate limits (`[limits]`, docs/security.md). Every count comes from the store, so a limit holds
//! across restarts and across replicas sharing one database. A refusal is `rateLimited` (429) with
//! `Retry-After` and a detail naming the limit and the setting that raises it.

use std::{collections::HashMap, net::IpAddr, sync::Mutex};

use http::HeaderMap;
use ipnet::IpNet;

use crate::{
    acme::{Identifier, Problem, ProblemType, Subproblem},
    config::LimitsConfig,
    store::{HOUR, Store},
};

/// The client's address, as the connection saw it (set by the server on every request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The address a rate limit counts: the TCP peer, or, when the peer is a trusted proxy, the last
/// `X-Forwarded-For` address that is not one of the trusted proxies.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer)
}

/// Requests to the unauthenticated renewal-info endpoint one client address may make per minute
/// (the burst, refilled evenly over the minute).
pub const RENEWAL_INFO_PER_IP_PER_MINUTE: u32 = 120;

/// Most addresses tracked at once; when full, addresses whose bucket is full again are dropped,
/// and if none is, the new address is let through uncounted (memory stays bounded).
const MAX_TRACKED: usize = 10_000;

/// An in-memory token bucket per client address, for renewal-info (RFC 9773 §4: clients poll it
/// unauthenticated, so the limit is per address, not per account). One process's count: each
/// replica limits on its own.
#[derive(Debug)]
pub struct AddrBuckets {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, i64)>>,
}

impl AddrBuckets {
    /// `per_minute` requests per address per minute; 0 means no limit.
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `addr` at `now` (Unix seconds), or `rateLimited` with `Retry-After`.
    pub fn check(&self, addr: IpAddr, now: i64) -> Result<(), Problem> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&addr) && map.len() >= MAX_TRACKED {
            map.retain(|_, (tokens, at)| *tokens + (now - *at) as f64 * rate < cap);
            if map.len() >= MAX_TRACKED {
                return Ok(());
            }
        }
        let (tokens, at) = map.entry(addr).or_insert((cap, now));
        *tokens = (*tokens + (now - *at).max(0) as f64 * rate).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - *tokens) / rate).ceil().max(1.0) as u64;
        Err(limited(
            format!(
                "too many renewal-info requests from {addr}: the limit is {} per minute per address",
                self.per_minute
            ),
            wait,
        ))
    }
}

/// Seconds until the oldest counted event leaves the hour (at least 1).
fn until_out_of_window(oldest: Option<i64>, now: i64) -> u64 {
    oldest.map_or(HOUR, |t| t + HOUR - now).max(1) as u64
}

fn limited(detail: String, retry_after: u64) -> Problem {
    let mut p = Problem::new(ProblemType::RateLimited, detail);
    p.retry_after = Some(retry_after);
    p
}

/// newAccount: accounts created from one address in the last hour.
pub async fn check_new_account(
    store: &Store,
    cfg: &LimitsConfig,
    addr: Option<IpAddr>,
    now: i64,
) -> Result<(), Problem> {
    let (Some(addr), limit) = (addr, cfg.accounts_per_ip_per_hour) else {
        return Ok(());
    };
    if limit == 0 {
        return Ok(());
    }
    let w = store.accounts_created_from(&addr.to_string(), now - HOUR).await?;
    if w.count >= i64::from(limit) {
        return Err(limited(
            format!(
                "too many new accounts from {addr}: {} in the last hour, the limit is {limit} \
                 (limits.accounts_per_ip_per_hour)",
                w.count
            ),
            until_out_of_window(w.oldest, now),
        ));
    }
    Ok(())
}

/// newOrder: paused names first (the most specific answer), then orders per hour, then pending
/// authorizations (counting the `new_authzs` this order would add).
pub async fn check_new_order(
    store: &Store,
    cfg: &LimitsConfig,
    account_id: &str,
    identifiers: &[Identifier],
    now: i64,
) -> Result<(), Problem> {
    check_paused(store, account_id, identifiers).await?;
    let limit = cfg.orders_per_account_per_hour;
    if limit > 0 {
        let w = store.orders_created_by(account_id, now - HOUR).await?;
        if w.count >= i64::from(limit) {
            return Err(limited(
                format!(
                    "too many new orders: {} in the last hour, the limit is {limit} (limits.orders_per_account_per_hour)",
                    w.count
                ),
                until_out_of_window(w.oldest, now),
            ));
        }
    }
    let limit = cfg.pending_authorizations_per_account;
    if limit > 0 {
        let w = store.pending_authorizations(account_id, now).await?;
        if w.count + identifiers.len() as i64 > i64::from(limit) {
            // Pending authorizations free up as they are validated, deactivated or expire.
            let retry = w.oldest.map_or(HOUR, |t| (t - now).clamp(1, HOUR)) as u64;
            return Err(limited(
                format!(
                    "too many pending authorizations: {} pending and {} more asked for, the limit is {limit} \
                     (limits.pending_authorizations_per_account); answer or deactivate the pending ones",
                    w.count,
                    identifiers.len()
                ),
                retry,
            ));
        }
    }
    Ok(())
}

/// Names this account may not order or validate after too many failed validations.
pub async fn check_paused(store: &Store, account_id: &str, identifiers: &[Identifier]) -> Result<(), Problem> {
    let paused = store.paused_identifiers(account_id, identifiers).await?;
    if paused.is_empty() {
        return Ok(());
    }
    let detail = |id: &Identifier| {
        format!(
            "validation of {} by this account is paused after too many failures \
             (limits.failed_validations_per_name_per_hour); an administrator lifts it with \
             `vacme limits unpause {account_id}`",
            id.value()
        )
    };
    let subproblems: Vec<Subproblem> = paused
        .iter()
        .map(|id| Subproblem { kind: ProblemType::RateLimited, detail: detail(id), identifier: Some(id.clone()) })
        .collect();
    Err(limited(detail(&paused[0]), HOUR as u64).with_subproblems(subproblems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let h = headers(&["198.51.100.1, 192.0.2.7, 10.0.0.3"]);
        // Through two trusted hops: the last untrusted address, not the spoofable first one.
        assert_eq!(client_addr(proxy, &h, &trusted), client);
        // From an untrusted peer, the header is ignored.
        assert_eq!(client_addr(client, &h, &trusted), client);
        // A trusted peer without a usable header counts as itself.
        assert_eq!(client_addr(proxy, &headers(&["garbage"]), &trusted), proxy);
        assert_eq!(client_addr(proxy, &HeaderMap::new(), &[]), proxy);
    }

    #[test]
    fn renewal_info_buckets_refill_over_the_minute() {
        let b = AddrBuckets::new(60);
        let (a, other): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..60 {
            b.check(a, 1000).unwrap();
        }
        let p = b.check(a, 1000).unwrap_err();
        assert_eq!((p.kind.code(), p.status, p.retry_after), ("rateLimited", 429, Some(1)));
        b.check(other, 1000).unwrap();
        b.check(a, 1001).unwrap();
        assert!(b.check(a, 1001).is_err());
        AddrBuckets::new(0).check(a, 0).unwrap();
    }

    #[test]
    fn retry_after_counts_down_to_the_oldest_event_leaving_the_hour() {
        assert_eq!(until_out_of_window(Some(1000), 1000), 3600);
        assert_eq!(until_out_of_window(Some(1000), 4599), 1);
        assert_eq!(until_out_of_window(Some(1000), 9999), 1);
        assert_eq!(until_out_of_window(None, 5), 3600);
    }
}
