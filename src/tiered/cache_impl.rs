//! The [`Layer`] impl of [`TieredCache`]: L1 first for reads, L2 first for
//! writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::TieredCache;
use super::stats::add;
use crate::cache::{Cache, CacheFuture, Capabilities, Stats, ValueTtl};
use crate::error::{Error, ErrorKind, Result};
use crate::layer::Layer;

/// An error after which the write may have reached L2: every error but
/// those raised before anything was sent (a bad argument, an unsupported
/// call, a value too large). A connection that dropped may have carried
/// the command (Redis ran it, the reply was lost); a timeout may be a
/// slow server that runs it later; a batch may have landed in part; a
/// server error in a pipeline leaves the others applied. After those the
/// keys are evicted and announced: one extra miss is the price of never
/// serving the old value.
fn unknown_outcome(e: &Error) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::InvalidUrl
            | ErrorKind::UnknownBackend
            | ErrorKind::FeatureDisabled
            | ErrorKind::Unsupported
            | ErrorKind::InvalidInput
            | ErrorKind::ValueTooLarge
            | ErrorKind::Serialization
    )
}

impl TieredCache {
    fn l2_failed(&self, e: Error) -> Error {
        add(&self.l1.stats.l2_errors, 1);
        e
    }

    /// One key from L2 with its TTL, filling L1.
    async fn read_through(&self, key: &str) -> Result<Option<ValueTtl>> {
        let t = self.l1.ticket(key);
        let r = match self.l2.get_with_ttl(key).await {
            Err(e) if e.kind() == ErrorKind::Unsupported => self.get_then_ttl(key).await,
            r => r,
        };
        match r {
            Ok(Some(v)) => {
                add(&self.l1.stats.l2_hits, 1);
                self.l1.fill(key, &t, &v.value, v.ttl);
                Ok(Some(v))
            }
            Ok(None) => {
                add(&self.l1.stats.misses, 1);
                Ok(None)
            }
            Err(e) => Err(self.l2_failed(e)),
        }
    }

    /// For an L2 without `get_with_ttl`: `get`, then `ttl`. An L2 that
    /// cannot read TTLs is taken to keep the entry past the L1 cap.
    async fn get_then_ttl(&self, key: &str) -> Result<Option<ValueTtl>> {
        let Some(v) = self.l2.get(key).await? else {
            return Ok(None);
        };
        if !self.l2.capabilities().read_ttl {
            return Ok(Some(ValueTtl::new(v, None)));
        }
        // Gone between the two calls: return it, but do not fill L1.
        Ok(match self.l2.ttl(key).await? {
            Some(ttl) => Some(ValueTtl::new(v, ttl)),
            None => Some(ValueTtl::new(v, Some(Duration::ZERO))),
        })
    }

    /// Many keys: L1 hits, then every miss in one L2 call.
    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let mut out: Vec<Option<ValueTtl>> = keys.iter().map(|k| self.l1.get_with_ttl(k)).collect();
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let miss_keys: Vec<&str> = missing.iter().map(|&i| keys[i]).collect();
        let tickets: Vec<_> = miss_keys.iter().map(|k| self.l1.ticket(k)).collect();
        let r = match self.l2.get_many_with_ttl(&miss_keys).await {
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                self.get_many_then_ttl(&miss_keys).await
            }
            r => r,
        };
        let found = r.map_err(|e| self.l2_failed(e))?;
        let mut hits = 0;
        for ((i, t), v) in missing.iter().zip(&tickets).zip(found) {
            if let Some(v) = &v {
                hits += 1;
                self.l1.fill(keys[*i], t, &v.value, v.ttl);
            }
            out[*i] = v;
        }
        add(&self.l1.stats.l2_hits, hits);
        add(&self.l1.stats.misses, missing.len() as u64 - hits);
        Ok(out)
    }

    /// For an L2 without `get_many_with_ttl`: `get_many`, then the TTLs of
    /// the keys found, concurrently.
    async fn get_many_then_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let values = self.l2.get_many(keys).await?;
        let read_ttl = self.l2.capabilities().read_ttl;
        let ttls = futures::future::join_all(keys.iter().zip(&values).map(|(k, v)| async move {
            match v {
                Some(_) if read_ttl => self
                    .l2
                    .ttl(k)
                    .await
                    .map(|t| t.unwrap_or(Some(Duration::ZERO))),
                _ => Ok(None),
            }
        }))
        .await;
        values
            .into_iter()
            .zip(ttls)
            .map(|(v, t)| Ok(v.map(|v| ValueTtl::new(v, t.ok().flatten()))))
            .collect()
    }

    /// After a write of `keys` (begun at `started`) failed: when it may
    /// have landed, evicts them here and tells the other processes.
    async fn write_failed(&self, keys: &[&str], e: Error, started: Instant) -> Error {
        if unknown_outcome(&e) {
            keys.iter().for_each(|k| self.l1.evict(k));
            self.announce(keys, false, started).await;
        }
        self.l2_failed(e)
    }

    /// A write that only evicts: L2 first, then L1 and the other processes.
    async fn evicting<T>(&self, key: &str, r: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let t = self.l1.ticket(key);
        match r.await {
            Ok(v) => {
                self.l1.wrote(key, &t, None);
                self.announce_ok(&[key], false, started).await;
                Ok(v)
            }
            Err(e) => Err(self.write_failed(&[key], e, started).await),
        }
    }
}

#[async_trait]
impl Layer for TieredCache {
    fn inner(&self) -> &Arc<dyn Cache> {
        &self.l2
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            inline: false,
            ..self.l2.capabilities()
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        // L1 hits are counted by L1's own counters (one atomic less per hit).
        if let Some(v) = self.l1.get(key) {
            return CacheFuture::ready(Ok(Some(v)));
        }
        CacheFuture::boxed(async move { Ok(self.read_through(key).await?.map(|v| v.value)) })
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        if let Some(v) = self.l1.get_with_ttl(key) {
            return CacheFuture::ready(Ok(Some(v)));
        }
        CacheFuture::boxed(self.read_through(key))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        CacheFuture::boxed(async move {
            let started = Instant::now();
            let t = self.l1.ticket(key);
            match self.l2.set(key, value, ttl).await {
                Ok(()) => {
                    self.l1
                        .wrote(key, &t, Some((value, ttl.or(self.default_ttl))));
                    self.announce_ok(&[key], false, started).await;
                    Ok(())
                }
                Err(e) => Err(self.write_failed(&[key], e, started).await),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::boxed(self.evicting(key, self.l2.delete(key)))
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        if self.l1.contains(key) {
            return CacheFuture::ready(Ok(true));
        }
        self.l2.contains(key)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        Ok(self
            .read_many(keys)
            .await?
            .into_iter()
            .map(|v| v.map(|v| v.value))
            .collect())
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        self.read_many(keys).await
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let started = Instant::now();
        let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        let tickets: Vec<_> = keys.iter().map(|k| self.l1.ticket(k)).collect();
        match self.l2.set_many(entries, ttl).await {
            Ok(()) => {
                let ttl = ttl.or(self.default_ttl);
                for ((k, v), t) in entries.iter().zip(&tickets) {
                    self.l1.wrote(k, t, Some((v, ttl)));
                }
                self.announce_ok(&keys, false, started).await;
                Ok(())
            }
            Err(e) => Err(self.write_failed(&keys, e, started).await),
        }
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let started = Instant::now();
        let tickets: Vec<_> = keys.iter().map(|k| self.l1.ticket(k)).collect();
        match self.l2.delete_many(keys).await {
            Ok(n) => {
                for (k, t) in keys.iter().zip(&tickets) {
                    self.l1.wrote(k, t, None);
                }
                self.announce_ok(keys, false, started).await;
                Ok(n)
            }
            Err(e) => Err(self.write_failed(keys, e, started).await),
        }
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let started = Instant::now();
        let t = self.l1.ticket(key);
        match self.l2.add(key, value, ttl).await {
            Ok(true) => {
                self.l1
                    .wrote(key, &t, Some((value, ttl.or(self.default_ttl))));
                self.announce_ok(&[key], false, started).await;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => Err(self.write_failed(&[key], e, started).await),
        }
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.evicting(key, self.l2.incr(key, delta)).await
    }

    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.evicting(key, self.l2.touch(key, ttl)).await
    }

    /// As `touch`: L1 would keep the old expiry, so it forgets the key
    /// (here and, through the backplane, elsewhere).
    async fn persist(&self, key: &str) -> Result<bool> {
        self.evicting(key, self.l2.persist(key)).await
    }

    /// Like `incr`: L2 decides, L1 forgets the key (here and, through the
    /// backplane, elsewhere).
    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let cas = self.l2.compare_and_set(key, expected, new, ttl);
        self.evicting(key, cas).await
    }

    async fn clear(&self) -> Result<()> {
        let started = Instant::now();
        let r = self.l2.clear().await;
        self.cleared(r, started).await
    }

    async fn clear_all(&self) -> Result<()> {
        let started = Instant::now();
        let r = self.l2.clear_all().await;
        self.cleared(r, started).await
    }

    /// L2's stats with the tier's section. With L2 down, the tier's section
    /// still comes back (an outage is when it is wanted), beside the L2
    /// error in `tier.l2_stats_error`; L2's own figures are then absent.
    async fn stats(&self) -> Result<Stats> {
        let (mut s, failed) = match self.l2.stats().await {
            Ok(s) => (s, None),
            Err(e) => {
                add(&self.l1.stats.l2_errors, 1);
                let s = Stats {
                    backend: self.l2.backend().to_string(),
                    endpoint: self.l2.endpoint(),
                    errors: 1,
                    ..Stats::default()
                };
                (s, Some(e.to_string()))
            }
        };
        let l1_hits = self.l1.hits();
        let mut tier = self.l1.stats.json(
            l1_hits,
            self.l1.describe(),
            self.mode_name(),
            self.l1.is_live(),
        );
        if let Some(why) = failed {
            tier["l2_stats_error"] = why.into();
        }
        s.hits += l1_hits;
        s.tier = Some(tier);
        Ok(s)
    }

    async fn close(&self) -> Result<()> {
        self.l1.flush();
        self.l2.close().await
    }
}

impl TieredCache {
    /// After `clear`/`clear_all`: L1 emptied and every other process told,
    /// even when L2 failed part-way (some keys may be gone).
    async fn cleared(&self, r: Result<()>, started: Instant) -> Result<()> {
        self.l1.flush();
        // Even after a failure part-way (some keys may be gone); a
        // publishing L2 sent its own message after a success.
        if r.is_ok() {
            self.announce_ok(&[], true, started).await;
        } else {
            self.announce(&[], true, started).await;
        }
        r.map_err(|e| self.l2_failed(e))
    }
}
