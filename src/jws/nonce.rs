//! Anti-replay nonces (RFC 8555 §6.5): issued on every response, accepted once.
//!
//! With SQLite (one process), nonces live in memory: a nonce is a counter and its MAC under a
//! key made at start, and a window of the last `WINDOW` counters remembers which were redeemed.
//! That costs no database commit per request (two fsyncs each, otherwise). A restart forgets
//! them, so clients holding an old nonce get `badNonce` once and retry with the fresh one that
//! answer carries, as every ACME client does. Several replicas (PostgreSQL) need the database
//! backend, so that a nonce from one replica is accepted once by any.

use std::sync::Mutex;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    hmac,
    rand::{SecureRandom, SystemRandom},
};
use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError};

/// How many of the most recently issued nonces stay redeemable (128 KiB of bits).
const WINDOW: u64 = 1 << 20;
const MAC_LEN: usize = 16;

/// Where nonces are kept.
#[derive(Debug)]
pub enum Nonces {
    Memory(MemoryNonces),
    /// In the store, valid for `ttl_secs`, for replicas that share it. Redeeming is one DELETE
    /// counted by its affected rows, so of two replicas redeeming a nonce at once, one does.
    Database {
        store: Store,
        ttl_secs: i64,
    },
}

impl Nonces {
    /// A fresh nonce.
    pub async fn issue(&self, now: i64) -> Result<String, StoreError> {
        match self {
            Nonces::Memory(m) => Ok(m.issue()),
            Nonces::Database { store, ttl_secs } => store.new_nonce(now + ttl_secs).await,
        }
    }

    /// How many nonces could still be redeemed: those in the window, or the unexpired rows.
    pub async fn outstanding(&self) -> Result<u64, StoreError> {
        match self {
            Nonces::Memory(m) => Ok(m.outstanding()),
            Nonces::Database { store, .. } => store.nonce_count().await,
        }
    }

    /// `true` exactly once per issued nonce.
    pub async fn redeem(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
        match self {
            Nonces::Memory(m) => Ok(m.redeem(nonce)),
            Nonces::Database { store, .. } => store.redeem_nonce(nonce, now).await,
        }
    }
}

/// Counter-and-MAC nonces with a redeemed-bit window.
pub struct MemoryNonces {
    key: hmac::Key,
    state: Mutex<Window>,
}

impl std::fmt::Debug for MemoryNonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryNonces")
    }
}

struct Window {
    /// The counter of the next nonce.
    next: u64,
    /// Bit `c % WINDOW` is set once counter `c` was redeemed.
    redeemed: Vec<u64>,
}

impl MemoryNonces {
    pub fn new() -> Result<Self, StoreError> {
        let mut key = [0u8; 32];
        SystemRandom::new().fill(&mut key).map_err(|_| StoreError::Random)?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            state: Mutex::new(Window { next: 0, redeemed: vec![0; (WINDOW / 64) as usize] }),
        })
    }

    fn mac(&self, counter: u64) -> hmac::Tag {
        hmac::sign(&self.key, &counter.to_be_bytes())
    }

    pub fn issue(&self) -> String {
        let counter = {
            let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let c = w.next;
            w.next += 1;
            // The slot now belongs to `c`; whatever older counter used it has left the window.
            let (word, bit) = slot(c);
            w.redeemed[word] &= !bit;
            c
        };
        let mut raw = [0u8; 8 + MAC_LEN];
        raw[..8].copy_from_slice(&counter.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(counter).as_ref()[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Nonces issued that are still inside the window.
    pub fn outstanding(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).next.min(WINDOW)
    }

    pub fn redeem(&self, nonce: &str) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else { return false };
        if raw.len() != 8 + MAC_LEN {
            return false;
        }
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&raw[..8]);
        let counter = u64::from_be_bytes(counter);
        // Constant time, so the MAC cannot be guessed byte by byte.
        let expected = self.mac(counter);
        if !bool::from(expected.as_ref()[..MAC_LEN].ct_eq(&raw[8..])) {
            return false;
        }
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if counter >= w.next || w.next - counter > WINDOW {
            return false;
        }
        let (word, bit) = slot(counter);
        if w.redeemed[word] & bit != 0 {
            return false;
        }
        w.redeemed[word] |= bit;
        true
    }
}

fn slot(counter: u64) -> (usize, u64) {
    let i = counter % WINDOW;
    ((i / 64) as usize, 1u64 << (i % 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nonce_is_accepted_once() {
        let n = MemoryNonces::new().unwrap();
        let (a, b) = (n.issue(), n.issue());
        assert_ne!(a, b);
        assert!(n.redeem(&b));
        assert!(!n.redeem(&b), "replay");
        assert!(n.redeem(&a), "order does not matter");
        assert!(!n.redeem(&a));
    }

    #[test]
    fn forged_foreign_and_old_nonces_are_refused() {
        let n = MemoryNonces::new().unwrap();
        let good = n.issue();
        let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
        raw[3] ^= 1; // another counter, same MAC
        assert!(!n.redeem(&URL_SAFE_NO_PAD.encode(&raw)));
        assert!(!MemoryNonces::new().unwrap().redeem(&good), "another process (a restart) has another key");
        for junk in ["", "abc", "!!!!", &"A".repeat(64)] {
            assert!(!n.redeem(junk), "{junk}");
        }
        // Not yet issued: a valid MAC for a future counter is still refused.
        let mut future = [0u8; 8 + MAC_LEN];
        future[..8].copy_from_slice(&5u64.to_be_bytes());
        future[8..].copy_from_slice(&n.mac(5).as_ref()[..MAC_LEN]);
        assert!(!n.redeem(&URL_SAFE_NO_PAD.encode(future)));
    }

    #[test]
    fn nonces_older_than_the_window_expire() {
        let n = MemoryNonces::new().unwrap();
        let old = n.issue();
        let kept = n.issue();
        n.redeem(&kept);
        n.state.lock().unwrap().next += WINDOW - 1; // as if a window's worth had been issued
        assert!(!n.redeem(&old), "left the window");
        let fresh = n.issue();
        assert!(n.redeem(&fresh), "its slot was cleared when it was issued");
    }
}
