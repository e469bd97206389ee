//! A backend of your own: an in-process map with TTLs that implements
//! `unicache::Cache`, is used through a `Handle` (read-through with
//! single-flight comes for free), and passes the conformance suite that
//! unicache ships for backend authors:
//!
//! ```sh
//! cargo run --example custom_backend
//! cargo test --example custom_backend --features testing   # the suite
//! ```
//!
//! A real backend would talk to its store where this one locks a map; the
//! shape is the same: single-key calls return a [`CacheFuture`], batches
//! are one call each, TTLs are validated with [`CacheOptions::effective_ttl`]
//! and counters parsed with [`unicache::cache::incr_value`], so that every
//! backend answers alike.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use unicache::{Cache, CacheFuture, CacheOptions, Capabilities, Counters, Result, Stats, ValueTtl};

/// A value and when it expires (`None`: never).
type Slot = (Bytes, Option<Instant>);

/// The backend: a map behind a lock, and the counters `stats` reports.
#[derive(Debug, Default)]
pub struct MapCache {
    map: Mutex<HashMap<String, Slot>>,
    counters: Counters,
    options: CacheOptions,
}

impl MapCache {
    /// Runs `f` on the map with `key`'s expired entry already dropped.
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut HashMap<String, Slot>) -> T) -> T {
        let mut map = self.map.lock().unwrap();
        if map.get(key).is_some_and(|(_, at)| expired(*at)) {
            map.remove(key);
        }
        f(&mut map)
    }

    /// When an entry written now with `ttl` expires; a zero TTL is an error.
    fn deadline(&self, ttl: Option<Duration>) -> Result<Option<Instant>> {
        // A TTL too long for the clock means "never", not "already expired".
        Ok(self
            .options
            .effective_ttl(ttl)?
            .and_then(|t| Instant::now().checked_add(t)))
    }

    fn read(&self, key: &str) -> Option<ValueTtl> {
        let got = self.with(key, |m| m.get(key).cloned());
        self.counters.read(std::slice::from_ref(&got));
        got.map(|(v, at)| ValueTtl::new(v, at.map(|at| at - Instant::now())))
    }

    fn write(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let at = self.deadline(ttl)?;
        let mut map = self.map.lock().unwrap();
        for (k, v) in entries {
            map.insert(k.to_string(), (Bytes::copy_from_slice(v), at));
        }
        self.counters.set(entries.len() as u64);
        Ok(())
    }

    fn remove(&self, key: &str) -> bool {
        let gone = self.with(key, |m| m.remove(key).is_some());
        self.counters.delete(u64::from(gone));
        gone
    }
}

fn expired(at: Option<Instant>) -> bool {
    at.is_some_and(|at| at <= Instant::now())
}

#[async_trait::async_trait]
impl Cache for MapCache {
    fn backend(&self) -> &'static str {
        "map"
    }

    fn endpoint(&self) -> String {
        "map://".into()
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        (c.ttl, c.read_ttl, c.list_keys, c.count, c.inline) = (true, true, true, true, true);
        c
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        CacheFuture::ready(Ok(self.read(key).map(|v| v.value)))
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        CacheFuture::ready(Ok(self.read(key)))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        CacheFuture::ready(self.write(&[(key, value)], ttl))
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::ready(Ok(self.remove(key)))
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::ready(Ok(self.with(key, |m| m.contains_key(key))))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        Ok(keys.iter().map(|k| self.read(k).map(|v| v.value)).collect())
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        Ok(keys.iter().map(|k| self.read(k)).collect())
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.write(entries, ttl)
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        Ok(keys.iter().filter(|k| self.remove(k)).count() as u64)
    }

    async fn clear(&self) -> Result<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }

    async fn len(&self) -> Result<u64> {
        let map = self.map.lock().unwrap();
        Ok(map.values().filter(|(_, at)| !expired(*at)).count() as u64)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        Ok(self.with(key, |m| {
            m.get(key).map(|(_, at)| at.map(|at| at - Instant::now()))
        }))
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let at = self.deadline(ttl)?;
        let stored = self.with(key, |m| match m.contains_key(key) {
            true => false,
            false => m
                .insert(key.into(), (Bytes::copy_from_slice(value), at))
                .is_none(),
        });
        self.counters.set(u64::from(stored));
        Ok(stored)
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let at = self.deadline(None)?;
        self.with(key, |m| {
            let (old, at) = m
                .get(key)
                .map_or((None, at), |(v, at)| (Some(v.clone()), *at));
            let n = unicache::cache::incr_value("map", key, old.as_deref(), delta)?;
            m.insert(key.into(), (Bytes::from(n.to_string()), at));
            Ok(n)
        })
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let at = self.deadline(ttl)?;
        Ok(self.with(key, |m| match m.get_mut(key) {
            Some(slot) if slot.0 == expected => {
                *slot = (Bytes::copy_from_slice(new), at);
                true
            }
            _ => false,
        }))
    }

    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let at = self.deadline(ttl)?;
        Ok(self.with(key, |m| m.get_mut(key).map(|slot| slot.1 = at).is_some()))
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        Ok(self.with(key, |m| m.get_mut(key).map(|slot| slot.1 = None).is_some()))
    }

    async fn keys(&self) -> Result<unicache::KeyStream> {
        use futures::StreamExt;
        let map = self.map.lock().unwrap();
        let live: Vec<Result<String>> = map
            .iter()
            .filter(|(_, (_, at))| !expired(*at))
            .map(|(k, _)| Ok(k.clone()))
            .collect();
        Ok(futures::stream::iter(live).boxed())
    }

    async fn stats(&self) -> Result<Stats> {
        let mut s = self.counters.snapshot(self.backend(), self.endpoint());
        s.entries = Some(self.len().await?);
        Ok(s)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    // Any `Cache` takes the library's front-ends: here read-through.
    let cache = unicache::Handle::new(std::sync::Arc::new(MapCache::default()));
    let v = cache
        .get_or_set("greeting", Some(Duration::from_secs(60)), || async {
            Ok(unicache::Fill::Cache(Bytes::from_static(
                b"hello from a custom backend",
            )))
        })
        .await?;
    println!("{}", String::from_utf8_lossy(&v));
    println!(
        "{}",
        serde_json::to_string(&cache.cache().stats().await?).unwrap()
    );
    Ok(())
}

/// The shipped suite, one test per case: `cargo test --example
/// custom_backend --features testing`.
#[cfg(all(test, feature = "testing"))]
mod conformance {
    use std::sync::Arc;

    /// Each namespace is a map of its own.
    async fn open(_namespace: &str) -> Arc<dyn unicache::Cache> {
        Arc::new(super::MapCache::default())
    }

    unicache::conformance_tests!(open);
}
