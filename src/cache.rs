//! The `Cache` trait every backend implements, with its options, capabilities
//! and statistics.
//!
//! The trait works on bytes and is object-safe, so a program picks a backend at
//! run time (`Arc<dyn Cache>` from [`crate::open()`]). Typed helpers live in
//! [`CacheExt`]. Batch operations must be one round trip or one transaction per
//! call in every backend, never a loop of single calls.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, ErrorKind, Result};

/// A boxed stream of keys, as returned by [`Cache::keys`].
pub type KeyStream = futures::stream::BoxStream<'static, Result<String>>;

/// A boxed stream of live entries, as returned by [`Cache::entries`].
pub type EntryStream<'a> = futures::stream::BoxStream<'a, Result<Entry>>;

/// One live entry: its key, value and remaining time to live (`None`: never
/// expires), as [`Cache::entries`] streams it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The key, without the namespace.
    pub key: String,
    /// The stored bytes.
    pub value: Bytes,
    /// Remaining time to live; `None` when the entry never expires or the
    /// backend cannot tell ([`Capabilities::read_ttl`]).
    pub ttl: Option<Duration>,
}

impl Entry {
    /// An entry.
    pub fn new(key: String, value: Bytes, ttl: Option<Duration>) -> Self {
        Entry { key, value, ttl }
    }
}

/// A value read together with its remaining time to live, as
/// [`Cache::get_with_ttl`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValueTtl {
    /// The stored bytes.
    pub value: Bytes,
    /// Remaining time to live; `None` when the entry never expires.
    pub ttl: Option<Duration>,
}

impl ValueTtl {
    /// A value and its remaining TTL.
    pub fn new(value: Bytes, ttl: Option<Duration>) -> Self {
        ValueTtl { value, ttl }
    }
}

/// The prefix of the keys unicache itself keeps in a cache's namespace for
/// coordination: locks (`__unicache_lock:`) and read-through leases
/// (`__unicache_lease:`). A tier never keeps them in its memory L1, so every
/// holder reads the shared store's current state.
pub const INTERNAL_PREFIX: &str = "__unicache_";

/// How many keys [`Cache::entries`]' default implementation reads per batch.
const ENTRY_BATCH: usize = 1000;

/// The future of a single-key operation.
///
/// In-process backends (memory, SQLite) finish the work when the method is
/// called and return [`CacheFuture::ready`], so a hit costs no allocation;
/// network backends return [`CacheFuture::boxed`]. Either way callers just
/// `.await` it.
#[must_use = "futures do nothing unless awaited"]
pub enum CacheFuture<'a, T> {
    /// Already computed.
    Ready(Option<Result<T>>),
    /// Still to run.
    Pending(futures::future::BoxFuture<'a, Result<T>>),
}

impl<'a, T> CacheFuture<'a, T> {
    /// A finished operation.
    pub fn ready(r: Result<T>) -> Self {
        CacheFuture::Ready(Some(r))
    }

    /// An operation still to run.
    pub fn boxed(f: impl std::future::Future<Output = Result<T>> + Send + 'a) -> Self {
        CacheFuture::Pending(Box::pin(f))
    }
}

impl<T: Unpin> std::future::Future for CacheFuture<'_, T> {
    type Output = Result<T>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<T>> {
        match self.get_mut() {
            CacheFuture::Ready(v) => std::task::Poll::Ready(v.take().unwrap_or_else(|| {
                Err(Error::new(
                    ErrorKind::InvalidInput,
                    "cache future polled after completion",
                ))
            })),
            CacheFuture::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

/// One cache, any backend.
///
/// `ttl: None` means "use the cache's default TTL" (which may be "never").
/// Expired entries are never returned. `delete` reports whether the key was
/// there. `clear` removes only what this cache instance's namespace holds.
#[async_trait]
pub trait Cache: Send + Sync + fmt::Debug {
    /// The backend's short name (`memory`, `sqlite`, `redis`...).
    fn backend(&self) -> &'static str;

    /// Where the cache lives, with any password replaced by `***`.
    fn endpoint(&self) -> String;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The value under `key`, if present and not expired.
    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>>;

    /// Stores `value` under `key`, replacing any previous value.
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()>;

    /// Removes `key`; `true` if it was there (and not expired).
    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool>;

    /// Whether `key` is present and not expired. Does not count as a hit or miss.
    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool>;

    /// Values for `keys`, in the same order; one round trip or transaction.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>>;

    /// Stores all entries; one round trip or transaction. On per-entry
    /// failures returns [`ErrorKind::PartialBatch`] listing the failed indices.
    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()>;

    /// Removes all `keys`; returns how many were there.
    async fn delete_many(&self, keys: &[&str]) -> Result<u64>;

    /// Removes every entry in this cache's namespace, and nothing else.
    async fn clear(&self) -> Result<()>;

    /// Removes everything in the underlying store: every namespace, and on a
    /// shared server other applications' data too (Redis FLUSHDB, memcached
    /// flush_all). Never implied by [`Cache::clear`]; ask for it by name.
    async fn clear_all(&self) -> Result<()> {
        self.clear().await
    }

    /// Number of live entries in this cache's namespace.
    async fn len(&self) -> Result<u64>;

    /// Whether the cache holds no live entry.
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Remaining time to live of `key`: `Ok(None)` when absent,
    /// `Ok(Some(None))` when it never expires.
    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let _ = key;
        Err(self.unsupported("ttl"))
    }

    /// Stores `value` only when `key` is absent or expired; `true` when it
    /// stored. One atomic step on every backend (Redis `SET NX PX`, memcached
    /// `ms` mode `E`, one SQLite statement, the file log under its lock).
    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let _ = (key, value, ttl);
        Err(self.unsupported("add"))
    }

    /// Adds `delta` (may be negative) to the integer stored under `key` as
    /// decimal text and returns the new value, atomically. A missing key
    /// starts at 0 and is created with the cache's default TTL; an existing
    /// key keeps its TTL. A value that is not a decimal `i64` in Redis's
    /// form (`0`, or an optional `-`, a digit 1-9, digits: no `+`, leading
    /// zeros or spaces, the same on every backend), or a result that
    /// overflows `i64`, is an [`ErrorKind::InvalidInput`] error naming the
    /// key, and the value is left unchanged.
    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let _ = (key, delta);
        Err(self.unsupported("incr"))
    }

    /// Stores `new` under `key` with `ttl` (`None`: the cache's default
    /// TTL, as for [`Cache::set`]) only if the live value is exactly
    /// `expected`, in one atomic step; `true` when it stored. An absent or
    /// expired key is never equal. Native on every backend (a Redis Lua
    /// script, memcached `mg` + `ms C<cas>`, one SQLite `UPDATE`, the file
    /// log under its lock, memory:// under its shard lock); a layer that
    /// cannot do it atomically returns [`ErrorKind::Unsupported`].
    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let _ = (key, expected, new, ttl);
        Err(self.unsupported("compare_and_set"))
    }

    /// Gives `key` a new expiry (`None`: the cache's default TTL, which may
    /// be "never") without rewriting its value; `true` when the key was
    /// there.
    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let _ = (key, ttl);
        Err(self.unsupported("touch"))
    }

    /// Removes `key`'s expiry without rewriting its value, whatever the
    /// cache's default TTL (Redis `PERSIST`); `true` when the key was there
    /// (an entry that never expired counts). Native on every backend (an
    /// `UPDATE` of the expiry, a Lua `EXISTS` + `PERSIST`, memcached
    /// `mg T0`, the file log under its lock); `Unsupported` by default.
    async fn persist(&self, key: &str) -> Result<bool> {
        let _ = key;
        Err(self.unsupported("persist"))
    }

    /// The value under `key` with its remaining TTL, read in one round trip.
    /// Counts as a hit or miss like [`Cache::get`]. A TTL of zero means the
    /// entry expired or was deleted just after its value was read (Redis's
    /// pipelined `GET` + `PTTL`): the value is returned, not to be kept.
    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        let _ = key;
        CacheFuture::ready(Err(self.unsupported("get_with_ttl")))
    }

    /// [`Cache::get_with_ttl`] for many keys, in order; one round trip or
    /// transaction.
    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let _ = keys;
        Err(self.unsupported("get_many_with_ttl"))
    }

    /// Streams every live key of this cache's namespace.
    async fn keys(&self) -> Result<KeyStream> {
        Err(self.unsupported("keys"))
    }

    /// Streams every live entry of this cache's namespace with its remaining
    /// TTL, for export. The default lists [`Cache::keys`] and reads them in
    /// batches of 1,000 with [`Cache::get_many`] (plus [`Cache::ttl`] per key
    /// where the backend can read TTLs); backends that can do better (one
    /// streamed query) override it. Entries that expire or are deleted while
    /// the stream runs are left out.
    async fn entries(&self) -> Result<EntryStream<'_>> {
        use futures::StreamExt;
        let keys = self.keys().await?;
        let read_ttl = self.capabilities().read_ttl;
        let batches = keys.chunks(ENTRY_BATCH).then(move |chunk| async move {
            let keys: Vec<String> = chunk.into_iter().collect::<Result<_>>()?;
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let values = self.get_many(&refs).await?;
            let mut out = Vec::with_capacity(keys.len());
            for (key, value) in keys.into_iter().zip(values) {
                let Some(value) = value else { continue };
                let ttl = if read_ttl {
                    match self.ttl(&key).await? {
                        None => continue, // expired since it was read
                        Some(t) => t,
                    }
                } else {
                    None
                };
                out.push(Ok(Entry { key, value, ttl }));
            }
            Ok::<_, Error>(out)
        });
        Ok(batches
            .flat_map(|r| match r {
                Ok(v) => futures::stream::iter(v),
                Err(e) => futures::stream::iter(vec![Err(e)]),
            })
            .boxed())
    }

    /// Counters of this instance, plus the backend's own figures where it has them.
    async fn stats(&self) -> Result<Stats>;

    /// Rewrites the store without dead space (file log; SQLite VACUUM).
    async fn compact(&self) -> Result<()> {
        Err(self.unsupported("compact"))
    }

    /// Makes every acknowledged write durable as far as the backend allows.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Flushes and releases resources. The cache must not be used afterwards.
    async fn close(&self) -> Result<()> {
        self.flush().await
    }

    /// An [`ErrorKind::Unsupported`] error for `op` on this backend.
    fn unsupported(&self, op: &str) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!("{} does not support {op}", self.backend()),
        )
        .with_backend(self.backend())
    }
}

/// What a backend can do; operations outside it return `Unsupported`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Entries can expire.
    pub ttl: bool,
    /// The remaining TTL of an entry can be read.
    pub read_ttl: bool,
    /// Keys can be listed ([`Cache::keys`]).
    pub list_keys: bool,
    /// [`Cache::len`] can count the namespace's entries exactly.
    pub count: bool,
    /// Data survives the process.
    pub persistent: bool,
    /// Several processes can share the cache.
    pub shared: bool,
    /// The cache may drop entries to stay within a bound.
    pub evicts: bool,
    /// Largest value accepted, when the backend has a limit.
    pub max_value_bytes: Option<u64>,
    /// How many batches a bulk writer should keep in flight (0 or 1: one at a time).
    pub batch_concurrency: usize,
    /// Single-key operations (`get`, `set`, `delete`, `contains`) do their
    /// work when called and return a finished future, which may be polled
    /// without a runtime (in-process backends). The blocking facade then
    /// answers on the caller's thread instead of its runtime thread.
    pub inline: bool,
}

/// Options common to every backend, from the URL query or set in code.
/// The layers above the backends own their options (see [`mod@crate::open`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheOptions {
    /// Prefix that isolates this cache's keys; `clear` touches only it.
    pub namespace: Option<String>,
    /// TTL applied when `set` is called with `ttl: None`.
    pub default_ttl: Option<Duration>,
    /// Open only a store that already exists: a local backend (SQLite, file
    /// log) whose file is missing fails with [`ErrorKind::NotFound`] instead
    /// of creating it. Read-only commands set this so a mistyped path creates
    /// nothing.
    pub must_exist: bool,
    /// How large a disk cache may grow (`sqlite:` and `file:`; see
    /// [`Bounds`]). Backends that cannot bound themselves refuse a bound
    /// instead of ignoring it.
    pub bounds: Bounds,
}

/// The bounds of a disk cache (README, "Bounded disk caches"): a property
/// of the store, shared by every process that opens it. `None` everywhere
/// (the default) is unbounded: nothing is evicted, only expired entries
/// are purged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bounds {
    /// At most this many bytes of entries: keys, values and a fixed
    /// per-entry overhead (each backend documents how it counts).
    pub max_bytes: Option<u64>,
    /// At most this many live entries.
    pub max_entries: Option<u64>,
    /// Entries written longer ago than this are evicted even when their
    /// TTL has not passed.
    pub max_age: Option<Duration>,
}

impl Bounds {
    /// No bound at all.
    pub fn is_unbounded(&self) -> bool {
        *self == Bounds::default()
    }

    /// An [`ErrorKind::Unsupported`] error when any bound is set, for a
    /// backend that cannot keep one (`how` says what to use instead).
    pub fn refuse(&self, backend: &'static str, how: &str) -> Result<()> {
        if self.is_unbounded() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("{backend} cannot keep max_bytes, max_entries or max_age: {how}"),
        )
        .with_backend(backend))
    }
}

impl CacheOptions {
    /// Options with nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the namespace.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Sets the default TTL.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// At most `n` bytes (see [`Bounds::max_bytes`]).
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.bounds.max_bytes = Some(n);
        self
    }

    /// At most `n` live entries (see [`Bounds::max_entries`]).
    pub fn max_entries(mut self, n: u64) -> Self {
        self.bounds.max_entries = Some(n);
        self
    }

    /// Entries evicted once older than `age` (see [`Bounds::max_age`]).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.bounds.max_age = Some(age);
        self
    }

    /// Opens only an existing store (see [`CacheOptions::must_exist`]).
    pub fn must_exist(mut self, yes: bool) -> Self {
        self.must_exist = yes;
        self
    }

    /// The TTL to apply for a call's `ttl` argument, rejecting zero.
    pub fn effective_ttl(&self, ttl: Option<Duration>) -> Result<Option<Duration>> {
        resolve_ttl(ttl, self.default_ttl)
    }
}

/// A call's `ttl`, or `default` when it has none; a zero TTL is an
/// [`ErrorKind::InvalidInput`] error. Every layer that applies a default
/// TTL goes through this one rule.
pub(crate) fn resolve_ttl(
    ttl: Option<Duration>,
    default: Option<Duration>,
) -> Result<Option<Duration>> {
    match ttl.or(default) {
        Some(d) if d.is_zero() => Err(Error::new(
            ErrorKind::InvalidInput,
            "a TTL must be greater than zero",
        )),
        other => Ok(other),
    }
}

/// A point-in-time view of one cache's statistics (JSON in the CLI).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Backend name.
    pub backend: String,
    /// Redacted endpoint.
    pub endpoint: String,
    /// Reads that found a live value.
    pub hits: u64,
    /// Reads that found nothing (or only an expired value).
    pub misses: u64,
    /// Entries written.
    pub sets: u64,
    /// Entries removed by `delete`/`delete_many` that existed.
    pub deletes: u64,
    /// Entries the cache dropped to stay within its bounds.
    pub evictions: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Live entries, when the backend can count them cheaply.
    pub entries: Option<u64>,
    /// The backend's own figures (server INFO, file sizes...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<serde_json::Value>,
    /// A tiered cache's per-tier counters (see [`crate::tiered`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<serde_json::Value>,
}

impl Stats {
    /// Hit ratio in `[0, 1]`, or `None` before any read.
    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.hits + self.misses;
        (total > 0).then(|| self.hits as f64 / total as f64)
    }
}

/// Lock-free counters each backend instance keeps.
#[derive(Debug, Default)]
pub struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    sets: AtomicU64,
    deletes: AtomicU64,
    evictions: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// Counts `n` hits.
    pub fn hit(&self, n: u64) {
        self.hits.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts `n` misses.
    pub fn miss(&self, n: u64) {
        self.misses.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts `n` writes.
    pub fn set(&self, n: u64) {
        self.sets.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts `n` deletions of present keys.
    pub fn delete(&self, n: u64) {
        self.deletes.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts `n` evictions.
    pub fn evict(&self, n: u64) {
        self.evictions.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts one failed operation.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a read result: hits for `Some`, misses for `None`.
    pub fn read<T>(&self, values: &[Option<T>]) {
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        self.hit(hits);
        self.miss(values.len() as u64 - hits);
    }
    /// Passes `r` through, counting an error when it is one.
    pub fn track<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.error();
        }
        r
    }

    /// A [`Stats`] with these counters filled in.
    pub fn snapshot(&self, backend: &str, endpoint: String) -> Stats {
        Stats {
            backend: backend.to_string(),
            endpoint,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            sets: self.sets.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            entries: None,
            server: None,
            tier: None,
        }
    }
}

/// Typed helpers over any [`Cache`]: values as JSON through serde.
#[async_trait]
pub trait CacheExt: Cache {
    /// Decodes the JSON value under `key`.
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::from(e)
                    .with_backend(self.backend())
                    .with_context("key", key)
            }),
        }
    }

    /// Stores `value` as compact JSON under `key`.
    async fn set_json<T: Serialize + Sync + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| Error::from(e).with_context("key", key))?;
        self.set(key, &bytes, ttl).await
    }

    /// Deletes every live key of this cache's namespace that starts with
    /// `prefix` (`""`: all of them, as [`Cache::clear`] but key by key);
    /// returns how many it deleted. Generic over any backend: lists the
    /// namespace's keys ([`Cache::keys`], a scan of the namespace), then
    /// deletes the matches in batches of 1,000 ([`Cache::delete_many`]).
    /// Not atomic: a key written under the prefix while it runs may stay.
    /// A backend that cannot list keys (memcached) returns
    /// [`ErrorKind::Unsupported`].
    async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        use futures::StreamExt;
        let mut keys = self.keys().await?;
        // Collected first: deleting while a backend streams its keys could
        // disturb the listing (a SQLite cursor, a Redis SCAN).
        let mut matching = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k?;
            if k.starts_with(prefix) {
                matching.push(k);
            }
        }
        drop(keys);
        let mut deleted = 0;
        for chunk in matching.chunks(ENTRY_BATCH) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            deleted += self.delete_many(&refs).await?;
        }
        Ok(deleted)
    }
}

impl<C: Cache + ?Sized> CacheExt for C {}

/// Milliseconds since the Unix epoch, the clock persistent backends store
/// expiry times in.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The counter [`Cache::incr`] computes: `current` (`None`: absent, 0)
/// plus `delta`. A value that is not a counter ([`parse_counter`]) or an
/// overflow is an [`ErrorKind::InvalidInput`] error naming the key.
/// Public for backends written outside this crate, so that `incr` means
/// the same everywhere.
pub fn incr_value(
    backend: &'static str,
    key: &str,
    current: Option<&[u8]>,
    delta: i64,
) -> Result<i64> {
    let bad = |what: &str| {
        Error::new(ErrorKind::InvalidInput, format!("incr: {what}"))
            .with_backend(backend)
            .with_context("key", key)
    };
    let n = match current {
        None => 0,
        Some(b) => {
            parse_counter(b).ok_or_else(|| bad("the value is not a decimal 64-bit integer"))?
        }
    };
    n.checked_add(delta)
        .ok_or_else(|| bad(&format!("{n} + {delta} overflows a 64-bit integer")))
}

/// A stored value as [`Cache::incr`] reads it, with Redis's grammar
/// (`string2ll`, checked against redis-server 7.0): `0`, or an optional `-`
/// then a digit 1-9 then digits, within `i64`. No `+`, no leading zeros
/// (`007`, `-0`, `00`), no spaces or newlines anywhere: one grammar on
/// every backend, so a value counts on all of them or on none.
pub fn parse_counter(v: &[u8]) -> Option<i64> {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    let canonical = match digits {
        [b'0'] => v.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    // `parse` alone would take `+5` and `007`; the digits are checked above.
    canonical
        .then(|| std::str::from_utf8(v).ok()?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `delete_prefix` deletes the prefix's keys of its own namespace only
    /// (memory, and a SQLite file two namespaces share).
    #[tokio::test]
    async fn delete_prefix_keeps_other_keys_and_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.sqlite3");
        let db = crate::url::path_to_url_body(&db);
        let mut urls = vec![("memory://".to_string(), None)];
        // The memory-only build (CI's feature check) has no SQLite.
        if cfg!(feature = "sqlite") {
            urls.push((
                format!("sqlite:{db}?namespace=a"),
                Some(format!("sqlite:{db}?namespace=b")),
            ));
        }
        for (url, other) in urls {
            let c = crate::open(&url).await.unwrap();
            let o = match &other {
                Some(u) => Some(crate::open(u).await.unwrap()),
                None => None,
            };
            for k in ["user:1", "user:2", "users", "other"] {
                c.set(k, b"v", None).await.unwrap();
            }
            if let Some(o) = &o {
                o.set("user:1", b"theirs", None).await.unwrap();
            }
            assert_eq!(c.delete_prefix("user:").await.unwrap(), 2, "{url}");
            assert!(c.get("user:1").await.unwrap().is_none());
            assert!(c.get("users").await.unwrap().is_some());
            assert!(c.get("other").await.unwrap().is_some());
            if let Some(o) = &o {
                assert_eq!(
                    o.get("user:1").await.unwrap().as_deref(),
                    Some(&b"theirs"[..])
                );
            }
            assert_eq!(c.delete_prefix("").await.unwrap(), 2, "{url}");
            assert_eq!(c.len().await.unwrap(), 0);
        }
    }

    #[test]
    fn zero_ttl_rejected_default_applied() {
        let o = CacheOptions::new().default_ttl(Duration::from_secs(5));
        assert_eq!(o.effective_ttl(None).unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(
            o.effective_ttl(Some(Duration::from_secs(1))).unwrap(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            o.effective_ttl(Some(Duration::ZERO)).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    /// The inputs redis-server 7.0 was asked (`SET k ...; INCRBY k 0`):
    /// the same answers here.
    #[test]
    fn counter_grammar_is_redis_s() {
        for (v, n) in [
            ("0", Some(0)),
            ("5", Some(5)),
            ("-5", Some(-5)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("+5", None),
            ("007", None),
            ("00", None),
            ("-0", None),
            (" 5", None),
            ("5 ", None),
            ("5\n", None),
            ("\t5", None),
            ("", None),
            ("-", None),
            ("5.0", None),
            ("1e3", None),
            ("0x10", None),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("\u{665}", None),
        ] {
            assert_eq!(parse_counter(v.as_bytes()), n, "{v:?}");
        }
        assert_eq!(parse_counter(b"\xff"), None);
        let e = incr_value("x", "k", Some(b"9223372036854775807"), 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(incr_value("x", "k", None, -3).unwrap(), -3);
    }

    #[test]
    fn counters_read() {
        let c = Counters::default();
        c.read(&[Some(1), None, Some(2)]);
        let s = c.snapshot("x", "y".into());
        assert_eq!((s.hits, s.misses), (2, 1));
        assert_eq!(s.hit_ratio(), Some(2.0 / 3.0));
    }
}
