//! Counters per tier, shown under `"tier"` in `stats` JSON.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lock-free counters of one tiered cache.
#[derive(Debug, Default)]
pub(crate) struct TierStats {
    pub l2_hits: AtomicU64,
    pub misses: AtomicU64,
    pub backfills: AtomicU64,
    pub invalidations_sent: AtomicU64,
    pub invalidations_received: AtomicU64,
    pub l1_flushes: AtomicU64,
    pub resubscribes: AtomicU64,
    pub l2_errors: AtomicU64,
    pub publish_errors: AtomicU64,
    /// Client tracking connections on a cluster (one per master) when last
    /// connected.
    pub tracked_masters: AtomicU64,
}

/// Adds `n` to `c`.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Sets `c` to `n`.
#[cfg(feature = "redis")]
pub(crate) fn set(c: &AtomicU64, n: u64) {
    c.store(n, Ordering::Relaxed);
}

impl TierStats {
    /// The counters as JSON, plus what describes the L1 and the backplane.
    pub fn json(
        &self,
        l1_hits: u64,
        l1: serde_json::Value,
        invalidation: &str,
        live: bool,
    ) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "l1_hits": l1_hits,
            "l2_hits": g(&self.l2_hits),
            "misses": g(&self.misses),
            "backfills": g(&self.backfills),
            "invalidations_sent": g(&self.invalidations_sent),
            "invalidations_received": g(&self.invalidations_received),
            "l1_flushes_after_lost_subscription": g(&self.l1_flushes),
            "resubscribes": g(&self.resubscribes),
            "l2_errors": g(&self.l2_errors),
            "publish_errors": g(&self.publish_errors),
            "tracked_masters": g(&self.tracked_masters),
            "invalidation": invalidation,
            "subscribed": live,
            "l1": l1,
        })
    }
}
