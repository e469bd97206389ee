//! A named lock across tasks, threads and processes sharing a cache;
//! Python's `cache.lock(name, timeout=, blocking_timeout=)` wraps it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> unicache::Result<()> {
//! use std::time::Duration;
//! use unicache::Lock;
//!
//! let cache: std::sync::Arc<dyn unicache::Cache> = unicache::open("memory://").await?.into();
//! let lock = Lock::new(cache.clone(), "nightly-job")?
//!     .timeout(Some(Duration::from_secs(30)))
//!     .blocking_timeout(Some(Duration::from_secs(5)));
//! if lock.acquire().await? {
//!     // ... the work only one holder does at a time ...
//!     assert!(lock.release().await?);
//! }
//! # Ok(()) }
//! ```
//!
//! The lock is the key `__unicache_lock:<name>` in the cache's namespace,
//! taken with [`Cache::add`] (atomic on every backend) holding a random
//! token of this holder (`pid:random hex`), with `timeout` to live, so a
//! holder that dies frees it then. Releasing is a
//! [`Cache::compare_and_set`] of the holder's token to a "free" marker that
//! lives a minute ([`FREE`], [`FREE_TTL`]), and acquiring takes an absent
//! key or one holding the marker: only the holder releases or extends, in
//! one atomic step. There is no compare-and-delete in the [`Cache`] trait,
//! and adding one natively to every backend and layer was more than this
//! needed: the marker costs one small entry per released lock for a
//! minute. Rust and Python holders of a name on one cache exclude each
//! other (Python's lock is this one).
//!
//! Waiting acquires poll with capped exponential backoff and jitter
//! (`Backoff`, shared with read-through's leases), up to
//! `blocking_timeout`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache::Cache;
use crate::error::{Error, ErrorKind, Result};

/// The prefix of lock keys: `__unicache_lock:<name>`.
pub const LOCK_PREFIX: &str = "__unicache_lock:";
/// What a released lock's key holds (for [`FREE_TTL`]): acquiring takes a
/// key holding it as it takes an absent one.
pub const FREE: &[u8] = b"\x00unicache-lock-free";
/// How long the [`FREE`] marker of a released lock stays.
pub const FREE_TTL: Duration = Duration::from_secs(60);

/// First wait between polls; doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(5);
/// Longest wait between polls.
const MAX_POLL: Duration = Duration::from_millis(100);

/// Capped exponential backoff with jitter for pollers: 5 ms doubling to
/// 100 ms, each wait between half and all of the step, so waiters do not
/// poll in step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    step: Duration,
}

impl Backoff {
    /// A backoff at its first step.
    pub(crate) fn new() -> Self {
        Backoff { step: FIRST_POLL }
    }

    /// The next wait (jittered), and the step doubled for the one after.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let d = self.step;
        self.step = (self.step * 2).min(MAX_POLL);
        let half = u64::try_from((d / 2).as_nanos()).unwrap_or(u64::MAX);
        d / 2 + Duration::from_nanos(fastrand::u64(0..=half))
    }
}

/// A token naming one holder: `pid:16 hex digits`.
pub(crate) fn holder_token() -> String {
    format!("{}:{:016x}", std::process::id(), fastrand::u64(..))
}

/// A named lock on a cache (see the module docs). One `Lock` is one
/// holder: it holds the lock at most once at a time; other holders (in
/// this process or another) are other `Lock` values of the same name.
#[derive(Debug)]
pub struct Lock {
    cache: Arc<dyn Cache>,
    name: String,
    key: String,
    timeout: Option<Duration>,
    blocking_timeout: Option<Duration>,
    /// This holder's token while it holds the lock.
    token: Mutex<Option<Bytes>>,
}

impl Lock {
    /// The lock `name` on `cache`, not taken; `timeout` the cache's default
    /// TTL (or never), no `blocking_timeout` (wait as long as it takes). An
    /// empty name is an [`ErrorKind::InvalidInput`] error.
    pub fn new(cache: Arc<dyn Cache>, name: &str) -> Result<Self> {
        if name.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a lock's name must not be empty",
            ));
        }
        Ok(Lock {
            cache,
            name: name.to_string(),
            key: format!("{LOCK_PREFIX}{name}"),
            timeout: None,
            blocking_timeout: None,
            token: Mutex::new(None),
        })
    }

    /// How long a taken lock lives unless released or extended (`None`:
    /// the cache's default TTL, or never): what frees it when its holder
    /// dies.
    #[must_use]
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long [`Lock::acquire`] waits for a lock held elsewhere (`None`:
    /// as long as it takes).
    #[must_use]
    pub fn blocking_timeout(mut self, wait: Option<Duration>) -> Self {
        self.blocking_timeout = wait;
        self
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cache key the lock lives under (`__unicache_lock:<name>`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This holder's token while it holds the lock (as far as it knows: the
    /// lock may have expired since).
    pub fn token(&self) -> Option<Bytes> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes the lock, waiting with backoff while another holder has it, up
    /// to the `blocking_timeout`; `false` when that passed first.
    /// An [`ErrorKind::InvalidInput`] error when this `Lock` already holds
    /// it.
    pub async fn acquire(&self) -> Result<bool> {
        self.acquire_within(self.blocking_timeout).await
    }

    /// Takes the lock if it is free now; `false` when another holder has it.
    pub async fn try_acquire(&self) -> Result<bool> {
        self.acquire_within(Some(Duration::ZERO)).await
    }

    /// [`Lock::acquire`] waiting at most `wait` (`None`: as long as it
    /// takes; zero: one try).
    pub async fn acquire_within(&self, wait: Option<Duration>) -> Result<bool> {
        if self.token().is_some() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("lock {:?} is already held by this Lock", self.name),
            ));
        }
        // None: a wait too long for Instant, i.e. no deadline.
        let deadline = wait.and_then(|w| Instant::now().checked_add(w));
        let token = Bytes::from(holder_token());
        let mut backoff = Backoff::new();
        loop {
            if self.take(&token).await? {
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
                return Ok(true);
            }
            let mut pause = backoff.next_wait();
            if let Some(d) = deadline {
                match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => pause = pause.min(left),
                    _ => return Ok(false),
                }
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt: an absent key or a released one (the [`FREE`] marker).
    async fn take(&self, token: &[u8]) -> Result<bool> {
        Ok(self.cache.add(&self.key, token, self.timeout).await?
            || self
                .cache
                .compare_and_set(&self.key, FREE, token, self.timeout)
                .await?)
    }

    /// Frees the lock if this holder still holds it, atomically; `false`
    /// (and nothing changed) when it does not: never taken, already
    /// released, or expired and maybe taken by another. Either way this
    /// `Lock` no longer holds it.
    pub async fn release(&self) -> Result<bool> {
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(token) = token else {
            return Ok(false);
        };
        self.cache
            .compare_and_set(&self.key, &token, FREE, Some(FREE_TTL))
            .await
    }

    /// Gives the held lock `timeout` from now (`None`: the cache's default
    /// TTL, or never), atomically and only if this holder still holds it;
    /// `false` otherwise.
    pub async fn extend(&self, timeout: Option<Duration>) -> Result<bool> {
        let Some(token) = self.token() else {
            return Ok(false);
        };
        self.cache
            .compare_and_set(&self.key, &token, &token, timeout)
            .await
    }

    /// Whether any holder has the lock now.
    pub async fn locked(&self) -> Result<bool> {
        Ok(self
            .cache
            .get(&self.key)
            .await?
            .is_some_and(|v| v[..] != *FREE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= FIRST_POLL / 2 && waits[0] <= FIRST_POLL);
        for w in &waits[5..] {
            assert!(*w >= MAX_POLL / 2 && *w <= MAX_POLL, "{w:?}");
        }
    }

    #[test]
    fn tokens_differ_and_name_the_process() {
        let (a, b) = (holder_token(), holder_token());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}:", std::process::id())));
    }
}
