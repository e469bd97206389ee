//! Read-through caching: [`Handle::get_or_set`] ("get this, or compute it
//! and store it") without stampedes.
//!
//! [`crate::open()`] returns a [`Handle`]: the opened [`Cache`] (reached
//! through `Deref`, so `handle.get(..)` is the backend's own call, at no
//! extra cost) plus per-instance state: the single-flight table and the
//! read-through [`Config`].
//!
//! - **A hit** is the backend's `get` and nothing else: no lock, no map
//!   lookup (`Handle::lookup` is the one place that decides what a hit is).
//! - **A miss** joins the key's flight: the first caller of a handle (or
//!   any of its clones) runs the factory, the others wait for its outcome.
//!   The factory's error reaches every waiter and is not cached. When the
//!   running caller is cancelled (its future dropped) or its factory
//!   panics, a waiter takes over and runs its own factory.
//!   [`Fill::DoNotCache`] returns the value to every waiter and stores
//!   nothing.
//! - **Across processes** (`lock=lease`, on caches several processes
//!   share): the leader also takes a lease, the key
//!   `__unicache_lease:<key>` in the cache's own namespace, with
//!   [`Cache::add`] and a TTL of `lease_ttl` (default 10 s). Other processes
//!   poll (capped exponential backoff with jitter) for the value or the
//!   lease's end, then read the value or take the lease over. The leader
//!   deletes its lease after storing. Lease keys are ordinary short-lived
//!   entries: `keys()` and `len()` count them while they live.
//! - **`factory_timeout`**: a factory still running then is dropped and
//!   every waiter gets an [`ErrorKind::Timeout`] error; nothing is stored.
//! - **`ttl_jitter`**: stored TTLs get a random extra of up to the bound.
//! - **One engine for every front-end**: [`Handle::get_or_set`] is
//!   [`Handle::begin`] (a hit, another caller's outcome, or a [`Leader`]),
//!   the factory, then [`Leader::complete`]. The blocking facade runs a
//!   sync factory between the two, the Python package a coroutine; both
//!   share the handle's flights with async callers.
//!
//! - **Fail-safe, soft timeout, refresh-ahead** (opt-in): see
//!   [`failsafe`], [`envelope`] and [`Handle::get_or_set_with_info`].

mod config;
mod engine;
pub mod envelope;
pub mod failsafe;
mod flight;
mod lease;
mod many;
mod refresh;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

pub(crate) use config::URL_OPTIONS;
pub use config::{Config, DEFAULT_LEASE_TTL, LockMode, ReadThroughOptions};
pub use engine::{Begin, Leader};
pub use envelope::Enveloped;
pub use failsafe::{FailSafe, FailSafeOptions};
pub use lease::LEASE_PREFIX;

use crate::cache::Cache;
use crate::error::{Error, ErrorKind, Result};
use flight::{Flights, Role};

/// The error a factory returns; any `std::error::Error + Send + Sync`
/// converts into it with `?` or `.into()`. It reaches callers as the source
/// of an [`ErrorKind::Factory`] error.
pub type FactoryError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a factory answers: a value to store and return, or one to return
/// without storing (an answer too partial or too personal to cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fill<T = Bytes> {
    /// Store the value (with the call's TTL) and return it.
    Cache(T),
    /// Return the value to every waiter; store nothing.
    DoNotCache(T),
}

impl<T> Fill<T> {
    /// The value, stored or not.
    pub fn into_value(self) -> T {
        match self {
            Fill::Cache(v) | Fill::DoNotCache(v) => v,
        }
    }
}

/// What [`Handle::get_or_set_with_info`] returns: the value and whether it
/// is a stale one served by fail-safe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Got {
    /// The value.
    pub value: Bytes,
    /// `true` when the factory failed or timed out (or outlived the soft
    /// timeout) and this is the kept stale value.
    pub stale: bool,
}

/// Read-through counters of one handle and its clones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadThroughStats {
    /// Factory runs started (batches count once).
    pub factory_runs: u64,
    /// Factory runs that failed or timed out.
    pub factory_errors: u64,
    /// Callers that waited for another caller's factory in this process.
    pub coalesced: u64,
    /// Fresh values whose store failed transiently (returned anyway).
    pub store_errors: u64,
    /// Times a lease was held elsewhere and this process waited.
    pub lease_waits: u64,
    /// Stale values served by fail-safe: once per failed or timed-out
    /// factory run (not per waiter), and once per caller answered at the
    /// soft timeout.
    pub fail_safe_served: u64,
    /// Background refreshes started (refresh-ahead, or a factory that
    /// outlived the soft timeout).
    pub background_runs: u64,
}

#[derive(Debug, Default)]
struct Counters {
    factory_runs: AtomicU64,
    factory_errors: AtomicU64,
    coalesced: AtomicU64,
    store_errors: AtomicU64,
    lease_waits: AtomicU64,
    fail_safe_served: AtomicU64,
    background_runs: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// State shared by a handle and its clones.
#[derive(Debug)]
struct Shared {
    config: Config,
    flights: Flights,
    counters: Counters,
    /// The envelope layer (also `cache`) when fail-safe or refresh-ahead is on.
    envelope: Option<Arc<Enveloped>>,
}

/// A cache with read-through: what [`crate::open()`] returns.
///
/// `Deref<Target = dyn Cache>`, so every [`Cache`] and
/// [`crate::CacheExt`] method is called on it directly. Cloning is cheap
/// (two `Arc`s) and clones share the single-flight table; two handles made
/// separately over one cache do not.
#[derive(Clone)]
pub struct Handle {
    cache: Arc<dyn Cache>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("cache", &self.cache)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl std::ops::Deref for Handle {
    type Target = dyn Cache;
    fn deref(&self) -> &(dyn Cache + 'static) {
        &*self.cache
    }
}

impl AsRef<dyn Cache> for Handle {
    fn as_ref(&self) -> &(dyn Cache + 'static) {
        &*self.cache
    }
}

impl From<Handle> for Arc<dyn Cache> {
    fn from(h: Handle) -> Self {
        h.cache
    }
}

impl From<Arc<dyn Cache>> for Handle {
    fn from(cache: Arc<dyn Cache>) -> Self {
        Handle::new(cache)
    }
}

/// What one factory run produced, before storing.
#[derive(Debug)]
enum Produced {
    /// Store it, then return it.
    Store(Bytes),
    /// Return it as it is.
    Return(Bytes),
}

impl Handle {
    /// Wraps any cache, with the default read-through settings (in-process
    /// single-flight only, no timeout, no jitter).
    pub fn new(cache: Arc<dyn Cache>) -> Self {
        Handle::with_config(cache, Config::default())
    }

    /// Wraps any cache with these read-through settings.
    /// With fail-safe or refresh-ahead on, the cache is wrapped in the
    /// [`Enveloped`] layer first (its values get a logical expiry).
    pub fn with_config(cache: Arc<dyn Cache>, config: Config) -> Self {
        let envelope = Enveloped::for_config(&cache, &config);
        let cache = match &envelope {
            Some(e) => e.clone() as Arc<dyn Cache>,
            None => cache,
        };
        Handle::over(cache, config, envelope)
    }

    /// A handle over `cache`, an already stacked cache whose envelope layer
    /// (somewhere under it) is `envelope` ([`crate::open::Stack`] builds
    /// both).
    pub(crate) fn over(
        cache: Arc<dyn Cache>,
        config: Config,
        envelope: Option<Arc<Enveloped>>,
    ) -> Self {
        Handle {
            cache,
            shared: Arc::new(Shared {
                config,
                flights: Flights::default(),
                counters: Counters::default(),
                envelope,
            }),
        }
    }

    /// The cache behind the handle.
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.cache
    }

    /// The read-through settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Read-through counters of this handle and its clones.
    pub fn read_through_stats(&self) -> ReadThroughStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReadThroughStats {
            factory_runs: get(&c.factory_runs),
            factory_errors: get(&c.factory_errors),
            coalesced: get(&c.coalesced),
            store_errors: get(&c.store_errors),
            lease_waits: get(&c.lease_waits),
            fail_safe_served: get(&c.fail_safe_served),
            background_runs: get(&c.background_runs),
        }
    }

    /// Keys whose factory is running in this process now.
    pub fn flights_running(&self) -> usize {
        self.shared.flights.running()
    }

    /// The value under `key`, or the factory's value, stored with `ttl`
    /// (`None`: the cache's default TTL, plus `ttl_jitter`).
    ///
    /// Errors: a zero `ttl` is [`ErrorKind::InvalidInput`] before anything
    /// runs; the factory's error is [`ErrorKind::Factory`] (its error as
    /// the source) and a factory past `factory_timeout` is
    /// [`ErrorKind::Timeout`], both for every waiter; the backend's read
    /// errors as they are. A store that fails transiently (connection,
    /// timeout) still returns the value (logged, counted in
    /// [`ReadThroughStats::store_errors`]); any other store error (value
    /// too large...) is returned, since it would repeat on every call.
    ///
    /// It is [`Handle::begin`], then the factory under `factory_timeout`,
    /// then [`Leader::complete`]; front-ends whose factories are not Rust
    /// futures (a sync closure, a Python coroutine) make those calls
    /// themselves.
    pub async fn get_or_set<F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        factory: F,
    ) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Fill, FactoryError>>,
    {
        let served = self.read_through(key, ttl, factory, |b: Bytes| Ok(b));
        served.await.map(|got| got.value)
    }

    /// [`Handle::get_or_set`] for a typed value stored as compact JSON.
    /// A stored value that is not a `T` is an [`ErrorKind::Serialization`]
    /// error naming the key.
    pub async fn get_or_set_json<T, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        factory: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Fill<T>, FactoryError>>,
    {
        let encode = |v: T| serde_json::to_vec(&v).map(Bytes::from).map_err(Error::from);
        let got = self.read_through(key, ttl, factory, encode).await?;
        serde_json::from_slice(&got.value).map_err(|e| {
            Error::from(e)
                .with_backend(self.cache.backend())
                .with_context("key", key)
        })
    }

    /// Joins or starts the flight of `key`.
    fn join(&self, key: &str) -> Role {
        let role = self.shared.flights.join(key);
        if matches!(role, Role::Waiter(_)) {
            bump(&self.shared.counters.coalesced);
        }
        role
    }

    /// What a hit is: the cache's `get` (with fail-safe or refresh-ahead
    /// on, the [`Enveloped`] layer's: logically fresh values only).
    async fn lookup(&self, key: &str) -> Result<Option<Bytes>> {
        self.cache.get(key).await
    }

    /// Runs a factory's future under `factory_timeout`: `Err(limit)` when
    /// it was stopped there.
    async fn timed<T>(&self, run: impl Future<Output = T>) -> std::result::Result<T, Duration> {
        match self.shared.config.factory_timeout {
            None => Ok(run.await),
            Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| limit),
        }
    }

    fn count_factory_run(&self) {
        bump(&self.shared.counters.factory_runs);
    }

    /// Turns a factory's result (or its timeout) into what to store; a
    /// failure is counted and becomes the error every waiter gets.
    fn settle<V>(
        &self,
        key: &str,
        result: std::result::Result<std::result::Result<Fill<V>, FactoryError>, Duration>,
        encode: impl FnOnce(V) -> Result<Bytes>,
    ) -> Result<Produced> {
        let failure = match result {
            Ok(Ok(Fill::Cache(v))) => return encode(v).map(Produced::Store),
            Ok(Ok(Fill::DoNotCache(v))) => return encode(v).map(Produced::Return),
            Ok(Err(e)) => Ok(e),
            Err(limit) => Err(limit),
        };
        bump(&self.shared.counters.factory_errors);
        Err(self.factory_error(failure).with_context("key", key))
    }

    /// The error for a factory's own error, or `Err(limit)`: a timeout.
    fn factory_error(&self, failure: std::result::Result<FactoryError, Duration>) -> Error {
        let err = match failure {
            Ok(e) => Error::new(ErrorKind::Factory, "").set_source(e),
            Err(limit) => Error::new(
                ErrorKind::Timeout,
                format!("factory did not finish within {limit:?}"),
            ),
        };
        err.with_backend(self.cache.backend())
    }

    /// Stores a fresh value (see [`Handle::get_or_set`] for which store
    /// errors are returned) and returns it.
    async fn store(&self, key: &str, produced: Produced, ttl: Option<Duration>) -> Result<Bytes> {
        let value = match produced {
            Produced::Return(v) => return Ok(v),
            Produced::Store(v) => v,
        };
        let ttl = self.shared.config.store_ttl(ttl)?;
        match self.cache.set(key, &value, ttl).await {
            Ok(()) => Ok(value),
            Err(e) if e.is_transient() => {
                bump(&self.shared.counters.store_errors);
                tracing::warn!("get_or_set: value for {key:?} computed but not stored: {e}");
                Ok(value)
            }
            Err(e) => Err(e),
        }
    }
}

impl Got {
    /// A fresh (not stale) value.
    fn fresh(value: Bytes) -> Self {
        Got {
            value,
            stale: false,
        }
    }
}

/// A zero TTL is refused before any read or factory run.
fn check_ttl(ttl: Option<Duration>) -> Result<()> {
    crate::cache::resolve_ttl(ttl, None).map(drop)
}
