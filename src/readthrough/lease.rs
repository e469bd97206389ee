//! Cross-process leases (`lock=lease`): one factory run per missing key
//! across every process sharing the cache.
//!
//! The lease is the key `__unicache_lease:<key>` in the cache's own
//! namespace, taken with [`crate::Cache::add`] (atomic on every shared
//! backend) for `lease_ttl`; its value names the holder (`pid:random`).
//! Whoever does not get it polls, with the capped exponential backoff and
//! jitter of [`crate::lock`]'s locks, for the value (then returns it) or the lease's end (then takes
//! the lease and runs its factory). A process that waited three lease
//! lifetimes without either runs its factory without a lease, so callers
//! never hang on a store whose leases keep failing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Handle, bump};
use crate::cache::Cache;
use crate::error::Result;
use crate::lock::{Backoff, holder_token};

/// The prefix of lease keys: `__unicache_lease:<key>`.
pub const LEASE_PREFIX: &str = "__unicache_lease:";

/// The result of trying to lead across processes.
pub(crate) enum Acquired {
    /// Another process stored the value meanwhile.
    Value(Bytes),
    /// This process holds the lease: run the factory, then release it.
    Held(Lease),
    /// Waited too long: run the factory without a lease.
    GaveUp,
}

/// A lease this process holds; [`Lease::release`] deletes it, dropping it
/// unreleased (a cancelled leader) deletes it from a task spawned on the
/// runtime that took it.
pub(crate) struct Lease {
    cache: Arc<dyn Cache>,
    key: String,
    taken: Instant,
    ttl: Duration,
    released: bool,
    /// Where the delete of a dropped lease runs: a leader may be dropped
    /// on a thread without a runtime (the blocking facade's caller, whose
    /// sync factory panicked; a Python thread).
    runtime: Option<tokio::runtime::Handle>,
}

/// The lease key of `key`.
pub(crate) fn lease_key(key: &str) -> String {
    let mut k = String::with_capacity(LEASE_PREFIX.len() + key.len());
    k.push_str(LEASE_PREFIX);
    k.push_str(key);
    k
}

/// Takes the lease of `key`, or waits until the value is there or the
/// lease can be taken.
pub(crate) async fn acquire(h: &Handle, key: &str) -> Result<Acquired> {
    let ttl = h.shared.config.lease_ttl;
    let lkey = lease_key(key);
    let token = holder_token();
    let give_up = Instant::now() + ttl.saturating_mul(3);
    // The lock's backoff (5 ms doubling to 100 ms, jittered): 100 ms is
    // how late a waiter sees a stored value at worst.
    let mut backoff = Backoff::new();
    loop {
        // Timed from before the request: the server's countdown starts
        // later, so this side's view of the lease's end is never late.
        let taken = Instant::now();
        if h.cache.add(&lkey, token.as_bytes(), Some(ttl)).await? {
            let lease = Lease {
                cache: h.cache.clone(),
                key: lkey,
                taken,
                ttl,
                released: false,
                runtime: tokio::runtime::Handle::try_current().ok(),
            };
            // The previous holder may have stored the value and released.
            if let Some(v) = h.lookup(key).await? {
                lease.release().await;
                return Ok(Acquired::Value(v));
            }
            return Ok(Acquired::Held(lease));
        }
        bump(&h.shared.counters.lease_waits);
        loop {
            tokio::time::sleep(backoff.next_wait()).await;
            if let Some(v) = h.lookup(key).await? {
                return Ok(Acquired::Value(v));
            }
            if Instant::now() >= give_up {
                tracing::warn!("get_or_set: lease on {key:?} held too long; running the factory");
                return Ok(Acquired::GaveUp);
            }
            if !h.cache.contains(&lkey).await? {
                break; // released or expired: try to take it
            }
        }
    }
}

impl Lease {
    /// Whether the lease is surely still ours (not expired and maybe
    /// taken by another process): then deleting it is safe.
    fn still_ours(&self) -> bool {
        self.taken.elapsed() < self.ttl - self.ttl / 10
    }

    /// Ends the lease so waiting processes stop polling at once. Errors are
    /// only logged: the lease expires by itself.
    pub(crate) async fn release(mut self) {
        self.released = true;
        if self.still_ours()
            && let Err(e) = self.cache.delete(&self.key).await
        {
            tracing::warn!("get_or_set: releasing lease {:?}: {e}", self.key);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released || !self.still_ours() {
            return;
        }
        // A cancelled or panicking leader: free the lease without waiting
        // for its TTL when a runtime is there to do it.
        let here = || tokio::runtime::Handle::try_current().ok();
        if let Some(rt) = self.runtime.take().or_else(here) {
            let (cache, key) = (self.cache.clone(), std::mem::take(&mut self.key));
            rt.spawn(async move {
                let _ = cache.delete(&key).await;
            });
        }
    }
}
