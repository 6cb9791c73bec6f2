//! How handlers tell jobs there is work, and jobs tell handlers it is done.

use tokio::sync::{Notify, watch};

/// How handlers tell the store-backed jobs there is work, and the jobs tell handlers it is done.
/// (The in-memory queues, `Revocations` and `CaChecks`, wake their job when pushed to.)
#[derive(Debug)]
pub struct Wake {
    pub validation: Notify,
    pub issuance: Notify,
    /// Bumped after every finished issuance, so finalize can wait for its order.
    pub issued: watch::Sender<u64>,
}

impl Default for Wake {
    fn default() -> Self {
        Self { validation: Notify::new(), issuance: Notify::new(), issued: watch::Sender::new(0) }
    }
}

impl Wake {
    /// Signals that an issuance finished (whatever its outcome).
    pub fn issued(&self) {
        self.issued.send_modify(|n| *n = n.wrapping_add(1));
    }
}
