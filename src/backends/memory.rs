//! `memory://`: a bounded in-process cache on quick_cache.
//!
//! Chosen over moka on measured figures (~256 ns insert / ~178 ns get
//! against ~1,440 / ~1,095 ns). quick_cache has no per-entry TTL, so the
//! expiry instant is stored beside the value and an expired entry is removed
//! and reported as a miss when read. It never blocks on I/O.
//!
//! `add`, `incr`, `touch` and `compare_and_set` are atomic per key through
//! quick_cache's `entry` API: the live entry is checked and changed under its shard's
//! write lock; an absent key gets a placeholder that concurrent `add`/`incr`
//! of the same key wait on, so `get` and `set` pay nothing for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use quick_cache::sync::Cache as QuickCache;
use quick_cache::sync::{EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use crate::cache::{
    Bounds,
    Cache, CacheFuture, CacheOptions, Capabilities, Counters, KeyStream, Stats, ValueTtl,
    incr_value,
};
use crate::error::{Error, ErrorKind, Result};

const BACKEND: &str = "memory";
/// Default number of entries of a `memory://` cache.
pub const DEFAULT_CAPACITY: u64 = 100_000;

/// Settings of a `memory://?capacity=N&max_bytes=N` cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Maximum number of entries (at least 1).
    pub capacity: u64,
    /// Optional bound on the summed size of keys and values.
    pub max_bytes: Option<u64>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            capacity: DEFAULT_CAPACITY,
            max_bytes: None,
        }
    }
}

impl MemoryConfig {
    /// The defaults: [`DEFAULT_CAPACITY`] entries, no byte bound.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` entries.
    pub fn capacity(mut self, n: u64) -> Self {
        self.capacity = n;
        self
    }

    /// At most `n` bytes of keys and values.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }
}

impl super::BackendSpec for MemoryConfig {
    fn from_url(t: &crate::url::Target<'_>) -> Result<(Self, CacheOptions)> {
        use crate::url::{Query, split_query, url_err};
        let rest = t.rest.strip_prefix("//").unwrap_or(t.rest);
        let (body, q) = split_query(rest);
        if !body.is_empty() {
            return Err(url_err(format!(
                "memory: unexpected {body:?} (use memory://?capacity=N)"
            )));
        }
        let mut q = Query::parse("memory", q)?;
        let options = q.common()?;
        let capacity = q.take_u64("capacity")?.unwrap_or(DEFAULT_CAPACITY);
        if capacity == 0 {
            return Err(url_err("memory: capacity must be at least 1"));
        }
        let max_bytes = q.take_size("max_bytes")?;
        if max_bytes == Some(0) {
            return Err(url_err("memory: max_bytes must be greater than zero"));
        }
        q.finish(&["capacity", "max_bytes"], t)?;
        Ok((
            MemoryConfig {
                capacity,
                max_bytes,
            },
            options,
        ))
    }

    async fn open(mut self, options: CacheOptions) -> Result<Arc<dyn Cache>> {
        // Bounds set in code: entries and bytes are the map's own; an age
        // bound it cannot keep.
        let b = options.bounds;
        if b.max_age.is_some() {
            let how = "give entries a TTL (ttl= or per call) instead of max_age";
            Bounds { max_age: b.max_age, ..Bounds::default() }.refuse("memory", how)?;
        }
        if let Some(n) = b.max_entries {
            self.capacity = self.capacity.min(n.max(1));
        }
        if let Some(n) = b.max_bytes {
            self.max_bytes = Some(self.max_bytes.map_or(n, |m| m.min(n)));
        }
        Ok(Arc::new(MemoryCache::open(self, options)))
    }
}
/// How often `add`/`incr` look again when a concurrent `set` or `delete`
/// took the placeholder they were about to fill.
const PLACEHOLDER_RETRIES: usize = 16;

/// Bookkeeping bytes counted per entry on top of key and value.
const ENTRY_OVERHEAD: u64 = 64;

#[derive(Clone)]
struct Entry {
    value: Bytes,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

impl WeighedValue for Entry {
    fn weighed_len(&self) -> usize {
        self.value.len()
    }
}

/// A value of a map that [`EntryWeighter`] weighs: `memory://`'s entries,
/// the tier's L1 entries.
pub(crate) trait WeighedValue {
    /// Its size in bytes, key excluded.
    fn weighed_len(&self) -> usize;
}

/// Weighs entries so that one weight budget enforces both bounds: with
/// `W = capacity * max_bytes` and `weight = max(max_bytes, size * capacity)`,
/// staying under `W` keeps the count under `capacity` and the bytes under
/// `max_bytes`.
#[derive(Debug, Clone)]
pub(crate) struct EntryWeighter {
    pub(crate) capacity: u64,
    max_bytes: Option<u64>,
}

/// A quick_cache map bounded as `config` says (entries, and bytes when
/// given), and its weighter: `memory://`'s map, and the tier's L1.
pub(crate) fn weighted_map<V: WeighedValue + Clone, L: Lifecycle<String, V> + Clone>(
    config: &MemoryConfig,
    lifecycle: L,
) -> (
    QuickCache<String, V, EntryWeighter, DefaultHashBuilder, L>,
    EntryWeighter,
) {
    let capacity = config.capacity.max(1);
    let weighter = EntryWeighter {
        capacity,
        max_bytes: config.max_bytes,
    };
    let weight_capacity = match config.max_bytes {
        None => capacity,
        Some(mb) => mb.saturating_mul(capacity),
    };
    let map = QuickCache::with(
        capacity.min(1 << 24) as usize,
        weight_capacity,
        weighter.clone(),
        DefaultHashBuilder::default(),
        lifecycle,
    );
    (map, weighter)
}

impl EntryWeighter {
    /// The weight of an entry of `key_len` + `value_len` bytes.
    pub(crate) fn weigh(&self, key_len: usize, value_len: usize) -> u64 {
        match self.max_bytes {
            None => 1,
            Some(mb) => {
                let size = key_len as u64 + value_len as u64 + ENTRY_OVERHEAD;
                mb.max(size.saturating_mul(self.capacity))
            }
        }
    }
}

impl<V: WeighedValue> Weighter<String, V> for EntryWeighter {
    fn weight(&self, key: &String, val: &V) -> u64 {
        self.weigh(key.len(), val.weighed_len())
    }
}

/// Counts evictions into the cache's counters.
#[derive(Clone)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<String, Entry> for CountEvictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _key: String, _val: Entry) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A bounded in-process cache (entries, optionally bytes) with per-entry TTL.
pub struct MemoryCache {
    map: QuickCache<String, Entry, EntryWeighter, DefaultHashBuilder, CountEvictions>,
    weighter: EntryWeighter,
    options: CacheOptions,
    counters: Counters,
    evictions: Arc<AtomicU64>,
    /// Set once any entry carries an expiry; until then `len` is O(1).
    any_ttl: AtomicBool,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("capacity", &self.weighter.capacity)
            .field("max_bytes", &self.weighter.max_bytes)
            .finish_non_exhaustive()
    }
}

impl MemoryCache {
    /// A cache of at most `config.capacity` entries and, if given,
    /// `config.max_bytes` bytes. Never fails.
    pub fn open(config: MemoryConfig, options: CacheOptions) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let (map, weighter) = weighted_map(&config, CountEvictions(evictions.clone()));
        MemoryCache {
            map,
            weighter,
            options,
            counters: Counters::default(),
            evictions,
            any_ttl: AtomicBool::new(false),
        }
    }

    fn entry(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<Entry> {
        let ttl = self.options.effective_ttl(ttl)?;
        let weight = self.weighter.weigh(key.len(), value.len());
        if weight > self.map.shard_capacity() {
            return Err(Error::new(
                ErrorKind::ValueTooLarge,
                format!(
                    "{} bytes of key and value do not fit in one shard of this cache \
                     (raise max_bytes)",
                    key.len() + value.len()
                ),
            )
            .with_backend(BACKEND)
            .with_context("key", key));
        }
        if ttl.is_some() {
            self.any_ttl.store(true, Ordering::Relaxed);
        }
        Ok(Entry {
            value: Bytes::copy_from_slice(value),
            // A TTL past what Instant can hold never expires (no overflow panic).
            expires: ttl.and_then(|d| Instant::now().checked_add(d)),
        })
    }

    /// Synchronous get (the trait's `get` is this plus a ready future).
    pub fn get_now(&self, key: &str) -> Option<Bytes> {
        let v = self.lookup(key).map(|e| e.value);
        if v.is_some() {
            self.counters.hit(1);
        } else {
            self.counters.miss(1);
        }
        v
    }

    fn lookup(&self, key: &str) -> Option<Entry> {
        let e = self.map.get(key)?;
        // Only entries with an expiry pay for reading the clock.
        let Some(t) = e.expires else { return Some(e) };
        let now = Instant::now();
        if t > now {
            Some(e)
        } else {
            // Remove only if it is still the expired entry we saw.
            self.map.remove_if(key, |v| !v.live(now));
            None
        }
    }

    /// The live value under `key` with its remaining TTL.
    fn lookup_with_ttl(&self, key: &str) -> Option<ValueTtl> {
        let e = self.lookup(key)?;
        let ttl = e
            .expires
            .map(|t| t.saturating_duration_since(Instant::now()));
        Some(ValueTtl::new(e.value, ttl))
    }

    /// `add`: stores unless a live entry is there, atomically.
    fn add_now(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let entry = self.entry(key, value, ttl)?;
        for _ in 0..PLACEHOLDER_RETRIES {
            let now = Instant::now();
            let guard = match self.map.entry(key, None, |_, e: &mut Entry| {
                if e.live(now) {
                    EntryAction::Retain(())
                } else {
                    EntryAction::ReplaceWithGuard
                }
            }) {
                EntryResult::Retained(()) => return Ok(false),
                EntryResult::Vacant(g) | EntryResult::Replaced(g, _) => g,
                EntryResult::Removed(..) | EntryResult::Timeout => continue,
            };
            if guard.insert(entry.clone()).is_ok() {
                self.counters.set(1);
                return Ok(true);
            }
        }
        // Each retry lost to a write that replaced our placeholder: ours
        // took effect first and was overwritten.
        Ok(true)
    }

    /// `incr`: the counter is parsed and rewritten under the shard lock.
    fn incr_now(&self, key: &str, delta: i64) -> Result<i64> {
        for _ in 0..PLACEHOLDER_RETRIES {
            let now = Instant::now();
            let guard = match self.map.entry(key, None, |_, e: &mut Entry| {
                if !e.live(now) {
                    return EntryAction::ReplaceWithGuard;
                }
                let n = incr_value(BACKEND, key, Some(&e.value), delta);
                if let Ok(n) = n {
                    e.value = Bytes::from(n.to_string());
                }
                EntryAction::Retain(n)
            }) {
                EntryResult::Retained(n) => {
                    self.counters.set(1);
                    return n;
                }
                EntryResult::Vacant(g) | EntryResult::Replaced(g, _) => g,
                EntryResult::Removed(..) | EntryResult::Timeout => continue,
            };
            let entry = self.entry(key, delta.to_string().as_bytes(), None)?;
            if guard.insert(entry).is_ok() {
                self.counters.set(1);
                return Ok(delta);
            }
        }
        Ok(delta)
    }

    /// `compare_and_set`: the live entry is compared and replaced in place
    /// under its shard's write lock (quick_cache re-weighs it after), so
    /// `get` and `set` take no extra lock. An absent key's placeholder is
    /// released at once: nothing is stored.
    fn compare_and_set_now(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let mut new = Some(self.entry(key, new, ttl)?);
        let now = Instant::now();
        let r = self.map.entry(key, None, |_, e: &mut Entry| {
            if !e.live(now) {
                return EntryAction::Remove;
            }
            match new.take() {
                Some(n) if e.value[..] == *expected => {
                    *e = n;
                    EntryAction::Retain(true)
                }
                _ => EntryAction::Retain(false),
            }
        });
        let stored = matches!(r, EntryResult::Retained(true));
        if stored {
            self.counters.set(1);
        }
        Ok(stored)
    }

    /// `touch`: a new expiry for a live entry, value untouched.
    fn touch_now(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let ttl = self.options.effective_ttl(ttl)?;
        self.expire_now(key, ttl)
    }

    /// A live entry's expiry set to `ttl` from now (`None`: never), value
    /// untouched: `touch` with the TTL resolved, and `persist`.
    fn expire_now(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let now = Instant::now();
        let expires = ttl.and_then(|d| now.checked_add(d));
        if ttl.is_some() {
            self.any_ttl.store(true, Ordering::Relaxed);
        }
        let r = self.map.entry(key, None, |_, e: &mut Entry| {
            if e.live(now) {
                e.expires = expires;
                EntryAction::Retain(())
            } else {
                EntryAction::Remove
            }
        });
        // A vacant key's placeholder is released when its guard drops here.
        Ok(matches!(r, EntryResult::Retained(())))
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn endpoint(&self) -> String {
        format!("memory://?capacity={}", self.weighter.capacity)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            read_ttl: true,
            list_keys: true,
            count: true,
            evicts: true,
            inline: true,
            ..Capabilities::default()
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        CacheFuture::ready(Ok(self.get_now(key)))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        CacheFuture::ready(self.counters.track(self.entry(key, value, ttl)).map(|e| {
            self.map.insert(key.to_string(), e);
            self.counters.set(1);
        }))
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        let now = Instant::now();
        let existed = matches!(self.map.remove(key), Some((_, e)) if e.live(now));
        if existed {
            self.counters.delete(1);
        }
        CacheFuture::ready(Ok(existed))
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::ready(Ok(self
            .map
            .peek(key)
            .is_some_and(|e| e.live(Instant::now()))))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let out: Vec<Option<Bytes>> = keys
            .iter()
            .map(|k| self.lookup(k).map(|e| e.value))
            .collect();
        self.counters.read(&out);
        Ok(out)
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let mut failures = Vec::new();
        let mut n = 0;
        for (i, (k, v)) in entries.iter().enumerate() {
            match self.entry(k, v, ttl) {
                Ok(e) => {
                    self.map.insert(k.to_string(), e);
                    n += 1;
                }
                Err(e) => failures.push((i, e)),
            }
        }
        self.counters.set(n);
        if failures.is_empty() {
            Ok(())
        } else {
            self.counters.error();
            Err(Error::partial(failures))
        }
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let now = Instant::now();
        let n = keys
            .iter()
            .filter(|k| matches!(self.map.remove(**k), Some((_, e)) if e.live(now)))
            .count() as u64;
        self.counters.delete(n);
        Ok(n)
    }

    async fn clear(&self) -> Result<()> {
        // The map belongs to this instance alone: clearing it all is the namespace.
        self.map.clear();
        Ok(())
    }

    async fn len(&self) -> Result<u64> {
        if !self.any_ttl.load(Ordering::Relaxed) {
            return Ok(self.map.len() as u64);
        }
        let now = Instant::now();
        Ok(self.map.iter().filter(|(_, e)| e.live(now)).count() as u64)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let now = Instant::now();
        Ok(self
            .map
            .peek(key)
            .filter(|e| e.live(now))
            .map(|e| e.expires.map(|t| t - now)))
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.counters.track(self.add_now(key, value, ttl))
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.counters.track(self.incr_now(key, delta))
    }

    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.counters.track(self.touch_now(key, ttl))
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        self.counters.track(self.expire_now(key, None))
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        self.counters
            .track(self.compare_and_set_now(key, expected, new, ttl))
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        let v = self.lookup_with_ttl(key);
        self.counters.read(std::slice::from_ref(&v));
        CacheFuture::ready(Ok(v))
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let out: Vec<Option<ValueTtl>> = keys.iter().map(|k| self.lookup_with_ttl(k)).collect();
        self.counters.read(&out);
        Ok(out)
    }

    async fn keys(&self) -> Result<KeyStream> {
        let now = Instant::now();
        let keys: Vec<Result<String>> = self
            .map
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(k, _)| Ok(k))
            .collect();
        Ok(Box::pin(futures::stream::iter(keys)))
    }

    async fn stats(&self) -> Result<Stats> {
        let mut s = self.counters.snapshot(BACKEND, self.endpoint());
        s.evictions = self.evictions.load(Ordering::Relaxed);
        s.entries = Some(self.len().await?);
        s.server = Some(serde_json::json!({
            "capacity": self.weighter.capacity,
            "max_bytes": self.weighter.max_bytes,
            "weight": self.map.weight(),
        }));
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn evicts_at_capacity_and_counts() {
        let c = MemoryCache::open(MemoryConfig::new().capacity(100), CacheOptions::new());
        for i in 0..1000 {
            c.set(&format!("k{i}"), b"v", None)
                .now_or_never()
                .unwrap()
                .unwrap();
        }
        let s = c.stats().now_or_never().unwrap().unwrap();
        assert!(s.entries.unwrap() <= 100, "{s:?}");
        assert!(s.evictions >= 900, "{s:?}");
    }

    #[test]
    fn byte_bound_holds() {
        let c = MemoryCache::open(
            MemoryConfig::new().capacity(1000).max_bytes(100_000),
            CacheOptions::new(),
        );
        let v = vec![0u8; 1000];
        for i in 0..1000 {
            c.set(&format!("k{i}"), &v, None)
                .now_or_never()
                .unwrap()
                .unwrap();
        }
        let n = c.len().now_or_never().unwrap().unwrap();
        assert!(n * 1000 <= 100_000, "{n} entries of 1000 bytes");
        assert!(n > 10);
        let big = vec![0u8; 200_000];
        let e = c
            .set("big", &big, None)
            .now_or_never()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueTooLarge);
    }

    /// Threads hammering one counter, with sets and deletes of other keys
    /// in the same shards, lose no increment; `add` has one winner per round.
    #[test]
    fn incr_and_add_are_atomic_across_threads() {
        let c = Arc::new(MemoryCache::open(MemoryConfig::new(), CacheOptions::new()));
        std::thread::scope(|s| {
            for t in 0..8 {
                let c = c.clone();
                s.spawn(move || {
                    for i in 0..5_000 {
                        c.incr_now("n", 1).unwrap();
                        let k = format!("other{}", (t * 7 + i) % 50);
                        c.set(&k, b"x", None).now_or_never().unwrap().unwrap();
                        c.delete(&k).now_or_never().unwrap().unwrap();
                    }
                });
            }
        });
        assert_eq!(c.get_now("n").as_deref(), Some(&b"40000"[..]));
        for round in 0..200 {
            let key = format!("race{round}");
            let wins: usize = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| c.add_now(&key, b"v", None).unwrap() as usize))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(wins, 1, "round {round}");
        }
    }
}
