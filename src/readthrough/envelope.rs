//! The value envelope of caches with fail-safe or refresh-ahead on.
//!
//! Such a cache stores each value behind a 29-byte header:
//!
//! | bytes | what |
//! |---|---|
//! | 0..4 | magic `F5 75 63 65` (`0xF5` is never a byte of UTF-8 text or JSON; then `uce`) |
//! | 4 | version, `2` |
//! | 5..13 | logical expiry, Unix milliseconds, big-endian; `0`: none |
//! | 13..21 | the logical TTL it was stored with, milliseconds, big-endian; `0`: none |
//! | 21..29 | check: xxh3-64 of bytes 0..21, big-endian |
//!
//! and a physical TTL of the logical TTL plus `fail_safe_max`, so an entry
//! whose logical expiry passed is still there for fail-safe. [`Enveloped`]
//! is the [`Cache`] layer that writes and reads it: every read (`get`,
//! `get_many`, `get_with_ttl`, `ttl`, `contains`, `entries` and so
//! `export`) returns the plain value and treats a logically expired entry as
//! absent. Caches without the options never see this layer: their values
//! are exactly the bytes given.
//!
//! A stored value is an envelope only when all of this holds: at least 29
//! bytes, the magic and version, the check, and expiry and TTL consistent
//! (both 0, or both set with the expiry at least the TTL: it was written at
//! expiry - TTL, not before 1970). Anything else (counters written by
//! `incr`, values of a cache opened without these options, other clients'
//! values) reads as exactly its bytes, with its own TTL. A foreign value is
//! taken for an envelope only if it starts with these 5 bytes and its next
//! 16 bytes hash to its next 8: for values that are not built to collide,
//! a chance of 2^-64 per value that already starts with the magic.
//!
//! Version 1 (18 bytes: `F5 01`, expiry, TTL, no check), written before,
//! is not read as an envelope: any value starting `F5 01` could be one, and
//! telling them apart is what version 2 is for. Such entries read as their
//! raw bytes (header included) until they expire (their logical TTL plus
//! `fail_safe_max`); clear the namespace after upgrading to drop them at
//! once.
//!
//! `touch`, `persist`, `incr` and `compare_and_set` through this layer are atomic
//! read-modify-writes: the raw bytes read are the `expected` of the inner
//! cache's [`Cache::compare_and_set`], retried a bounded number of times
//! when another writer changed them meanwhile (a value a `set` changed is
//! then touched or counted as it now is, a deleted one is not brought
//! back). Where the inner cache has no `compare_and_set` they are
//! `Unsupported`, never a plain read then write.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::cache::{
    Cache, CacheFuture, Capabilities, Entry, EntryStream, Stats, ValueTtl, incr_value, now_millis,
    parse_counter,
};
use crate::error::{Error, ErrorKind, Result};
use crate::layer::{Layer, RACE_RETRIES, lost_race, race_lost};

/// First bytes of an enveloped value.
pub const MAGIC: [u8; 4] = [0xF5, b'u', b'c', b'e'];
/// Envelope format version.
pub const VERSION: u8 = 2;
/// Length of the header before the value.
pub const HEADER_LEN: usize = 29;
/// Bytes the check covers: magic, version, expiry and TTL.
const CHECKED: usize = 21;

/// One stored value with its logical expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The plain value.
    pub value: Bytes,
    /// Logical expiry in Unix milliseconds; `0`: none.
    pub expires_at: u64,
    /// The logical TTL it was stored with, in milliseconds; `0`: none.
    pub ttl_ms: u64,
    /// Whether it was stored behind the header (else: plain bytes).
    pub enveloped: bool,
}

impl Stored {
    /// Whether its logical expiry has passed at `now` (Unix ms).
    pub fn is_stale(&self, now: u64) -> bool {
        self.expires_at != 0 && now >= self.expires_at
    }

    /// Remaining logical TTL at `now`: `None` when it never expires.
    pub fn remaining(&self, now: u64) -> Option<Duration> {
        (self.expires_at != 0).then(|| Duration::from_millis(self.expires_at.saturating_sub(now)))
    }

    /// Whether more than `permille`/1000 of its logical TTL has elapsed.
    pub fn in_refresh_window(&self, now: u64, permille: u16) -> bool {
        if self.expires_at == 0 || self.ttl_ms == 0 {
            return false;
        }
        let left = self.expires_at.saturating_sub(now);
        let elapsed = self.ttl_ms.saturating_sub(left);
        elapsed.saturating_mul(1000) >= self.ttl_ms.saturating_mul(u64::from(permille))
    }
}

/// `value` behind a header for a logical `ttl` from now.
pub fn encode(value: &[u8], ttl: Option<Duration>) -> Vec<u8> {
    let Some(ttl) = ttl else {
        return encode_at(value, 0, 0);
    };
    let now = now_millis();
    // At least 1 ms, and never past u64::MAX: expiry - TTL stays the write
    // time, which `decode` checks.
    let ttl_ms = u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, u64::MAX - now);
    encode_at(value, now + ttl_ms, ttl_ms)
}

/// `value` behind a header with this logical expiry and TTL (both 0: none).
pub(crate) fn encode_at(value: &[u8], expires_at: u64, ttl_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + value.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out.extend_from_slice(&ttl_ms.to_be_bytes());
    let check = xxhash_rust::xxh3::xxh3_64(&out[..CHECKED]);
    out.extend_from_slice(&check.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The big-endian u64 at `at`.
fn word(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Splits a stored value into header and plain value; a value that is not
/// an envelope (see the module docs) is plain with no logical expiry.
pub(crate) fn decode(raw: Bytes) -> Stored {
    let plain = |raw| Stored {
        value: raw,
        expires_at: 0,
        ttl_ms: 0,
        enveloped: false,
    };
    if raw.len() < HEADER_LEN || raw[..4] != MAGIC || raw[4] != VERSION {
        return plain(raw);
    }
    let (expires_at, ttl_ms) = (word(&raw, 5), word(&raw, 13));
    let checked = word(&raw, CHECKED) == xxhash_rust::xxh3::xxh3_64(&raw[..CHECKED]);
    let consistent = (expires_at == 0) == (ttl_ms == 0) && expires_at >= ttl_ms;
    if !(checked && consistent) {
        return plain(raw);
    }
    Stored {
        value: raw.slice(HEADER_LEN..),
        expires_at,
        ttl_ms,
        enveloped: true,
    }
}

/// The [`Cache`] layer of enveloped caches (see the module docs).
#[derive(Debug)]
pub struct Enveloped {
    inner: Arc<dyn Cache>,
    /// How long entries are kept after their logical expiry.
    keep: Duration,
    default_ttl: Option<Duration>,
    /// The hits and misses of this layer's own reads (before a `delete`,
    /// a `touch`, an `incr`...), taken out of the inner cache's stats:
    /// they are not the caller's reads.
    own_reads: [std::sync::atomic::AtomicU64; 2],
}

impl Enveloped {
    /// Wraps `inner`; entries stay `keep` past their logical expiry.
    pub fn new(inner: Arc<dyn Cache>, keep: Duration, default_ttl: Option<Duration>) -> Self {
        Enveloped {
            inner,
            keep,
            default_ttl,
            own_reads: Default::default(),
        }
    }

    /// A read of the stored bytes for this layer's own use: not counted in
    /// [`Cache::stats`]' hits and misses (see `own_reads`).
    async fn peek(&self, key: &str) -> Result<Option<Bytes>> {
        let v = self.inner.get(key).await?;
        self.count_own(&[v.is_some()]);
        Ok(v)
    }

    /// [`Enveloped::peek`] for many keys.
    async fn peek_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let v = self.inner.get_many(keys).await?;
        let found: Vec<bool> = v.iter().map(Option::is_some).collect();
        self.count_own(&found);
        Ok(v)
    }

    fn count_own(&self, found: &[bool]) {
        use std::sync::atomic::Ordering::Relaxed;
        let hits = found.iter().filter(|f| **f).count() as u64;
        self.own_reads[0].fetch_add(hits, Relaxed);
        self.own_reads[1].fetch_add(found.len() as u64 - hits, Relaxed);
    }

    /// `cache` in this layer when `config` turns fail-safe or refresh-ahead
    /// on; `None` when values stay the raw bytes.
    pub fn for_config(cache: &Arc<dyn Cache>, config: &super::Config) -> Option<Arc<Self>> {
        let fs = config.fail_safe;
        fs.needs_envelope()
            .then(|| Arc::new(Enveloped::new(cache.clone(), fs.keep(), config.default_ttl)))
    }

    /// The entry under `key` whether logically fresh or stale.
    pub(crate) async fn raw(&self, key: &str) -> Result<Option<Stored>> {
        Ok(self.inner.get(key).await?.map(decode))
    }

    /// The call's TTL or the default; zero refused.
    fn logical_ttl(&self, ttl: Option<Duration>) -> Result<Option<Duration>> {
        crate::cache::resolve_ttl(ttl, self.default_ttl)
            .map_err(|e| e.with_backend(self.inner.backend()))
    }

    /// Stores `value` with a logical `ttl` and a physical one `keep` longer.
    pub(crate) async fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let ttl = self.logical_ttl(ttl)?;
        self.inner
            .set(key, &encode(value, ttl), self.physical(ttl))
            .await
    }

    fn fresh(s: Stored, now: u64) -> Option<Bytes> {
        (!s.is_stale(now)).then_some(s.value)
    }

    /// The physical TTL of an entry with logical `ttl`.
    fn physical(&self, ttl: Option<Duration>) -> Option<Duration> {
        ttl.map(|t| t.saturating_add(self.keep))
    }

    /// The error of a read-modify-write that lost every race.
    fn lost(&self, op: &str, key: &str) -> Error {
        race_lost(self.inner.backend(), op, key)
    }

    /// `incr` on a value the inner cache's own `incr` refused with
    /// `refused`: an enveloped counter is counted and written back under
    /// compare-and-set, keeping its logical expiry; a logically expired one
    /// restarts at 0 as a new plain counter (the default TTL). `None`: the
    /// value changed or went meanwhile, try again.
    async fn incr_enveloped(&self, key: &str, delta: i64, refused: Error) -> Result<Option<i64>> {
        let Some(raw) = self.peek(key).await? else {
            return Ok(None);
        };
        let s = decode(raw.clone());
        if !s.enveloped {
            // Still plain: refused for good unless it changed into a counter.
            let fits = parse_counter(&raw).and_then(|n| n.checked_add(delta));
            return if fits.is_some() {
                Ok(None)
            } else {
                Err(refused)
            };
        }
        let now = now_millis();
        let (n, new, physical) = if s.is_stale(now) {
            (delta, delta.to_string().into_bytes(), None)
        } else {
            let n = incr_value(self.inner.backend(), key, Some(&s.value), delta)?;
            let new = encode_at(n.to_string().as_bytes(), s.expires_at, s.ttl_ms);
            (n, new, self.physical(s.remaining(now)))
        };
        let stored = self
            .inner
            .compare_and_set(key, &raw, &new, physical)
            .await?;
        Ok(stored.then_some(n))
    }
}

#[async_trait]
impl Layer for Enveloped {
    fn inner(&self) -> &Arc<dyn Cache> {
        &self.inner
    }

    /// The inner cache's, with the header taken off the largest value.
    fn capabilities(&self) -> Capabilities {
        let c = self.inner.capabilities();
        Capabilities {
            max_value_bytes: c
                .max_value_bytes
                .map(|m| m.saturating_sub(HEADER_LEN as u64)),
            ..c
        }
    }

    /// `true` only for a logically fresh entry; a stale one (kept for
    /// fail-safe) is removed too. One read more than the inner `delete`.
    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::boxed(async move {
            let before = self.peek(key).await?.map(decode);
            let deleted = self.inner.delete(key).await?;
            Ok(deleted && !before.is_some_and(|s| s.is_stale(now_millis())))
        })
    }

    /// Counts logically fresh entries only, as `delete` does.
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let now = now_millis();
        let stale = self.peek_many(keys).await?;
        let stale = stale
            .into_iter()
            .filter(|v| v.clone().is_some_and(|b| decode(b).is_stale(now)))
            .count() as u64;
        Ok(self.inner.delete_many(keys).await?.saturating_sub(stale))
    }

    /// The inner cache's stats, less this layer's own reads.
    async fn stats(&self) -> Result<Stats> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = self.inner.stats().await?;
        s.hits = s.hits.saturating_sub(self.own_reads[0].load(Relaxed));
        s.misses = s.misses.saturating_sub(self.own_reads[1].load(Relaxed));
        Ok(s)
    }

    /// Logically fresh entries, counted by reading them (entries kept past
    /// their logical expiry for fail-safe are not counted): one pass over
    /// the namespace, as `export` makes.
    async fn len(&self) -> Result<u64> {
        let mut n = 0;
        let mut entries = Layer::entries(self).await?;
        while let Some(e) = entries.next().await {
            e?;
            n += 1;
        }
        Ok(n)
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        CacheFuture::boxed(async move {
            let now = now_millis();
            Ok(self.raw(key).await?.and_then(|s| Self::fresh(s, now)))
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        CacheFuture::boxed(self.store(key, value, ttl))
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::boxed(async move {
            let now = now_millis();
            Ok(self
                .peek(key)
                .await?
                .is_some_and(|b| !decode(b).is_stale(now)))
        })
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let now = now_millis();
        let raw = self.inner.get_many(keys).await?;
        Ok(raw
            .into_iter()
            .map(|v| v.and_then(|b| Self::fresh(decode(b), now)))
            .collect())
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let ttl = self.logical_ttl(ttl)?;
        let encoded: Vec<Vec<u8>> = entries.iter().map(|(_, v)| encode(v, ttl)).collect();
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .zip(&encoded)
            .map(|((k, _), v)| (*k, &v[..]))
            .collect();
        self.inner.set_many(&refs, self.physical(ttl)).await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        Ok(Layer::get_with_ttl(self, key).await?.map(|v| v.ttl))
    }

    /// Enveloped too, but with no fail-safe extension: `add` is for locks
    /// and leases, which must end when their TTL does.
    /// A key whose logical expiry passed (kept only for fail-safe) counts
    /// as absent: it is replaced under compare-and-set.
    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let ttl = self.logical_ttl(ttl)?;
        let encoded = encode(value, ttl);
        for attempt in 0..RACE_RETRIES {
            if self.inner.add(key, &encoded, ttl).await? {
                return Ok(true);
            }
            let Some(raw) = self.peek(key).await? else {
                lost_race(attempt).await;
                continue; // gone meanwhile: add again
            };
            if !decode(raw.clone()).is_stale(now_millis()) {
                return Ok(false);
            }
            if self.inner.compare_and_set(key, &raw, &encoded, ttl).await? {
                return Ok(true);
            }
            lost_race(attempt).await;
        }
        Err(self.lost("add", key))
    }

    /// A plain or missing counter is the inner cache's own `incr` (plain
    /// decimal text, readable as it is); an enveloped one (`set k 5`
    /// through this layer) is counted under compare-and-set keeping its
    /// logical expiry, and a logically expired one restarts at 0. The
    /// backend's own `incr` goes first (plain counters, the usual kind, take
    /// one call); on an enveloped one it is refused, which the backend
    /// counts in its `errors`.
    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        for attempt in 0..RACE_RETRIES {
            let refused = match self.inner.incr(key, delta).await {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::InvalidInput => e,
                Err(e) => return Err(e),
            };
            if let Some(n) = self.incr_enveloped(key, delta, refused).await? {
                return Ok(n);
            }
            lost_race(attempt).await;
        }
        Err(self.lost("incr", key))
    }

    /// A new logical expiry (and physical one `keep` later) written under
    /// compare-and-set with the raw bytes read; a plain value gets `ttl` as
    /// its physical TTL, its bytes unchanged. `false` when absent or
    /// logically expired.
    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let ttl = self.logical_ttl(ttl)?;
        for attempt in 0..RACE_RETRIES {
            let Some(raw) = self.peek(key).await? else {
                return Ok(false);
            };
            let s = decode(raw.clone());
            if s.is_stale(now_millis()) {
                return Ok(false);
            }
            let stored = if s.enveloped {
                let new = encode(&s.value, ttl);
                let physical = self.physical(ttl);
                self.inner
                    .compare_and_set(key, &raw, &new, physical)
                    .await?
            } else {
                self.inner.compare_and_set(key, &raw, &raw, ttl).await?
            };
            if stored {
                return Ok(true);
            }
            lost_race(attempt).await;
        }
        Err(self.lost("touch", key))
    }

    /// A logically fresh envelope is rewritten with no logical expiry
    /// (`expires_at` 0) under compare-and-set with the raw bytes read, as
    /// `touch` is. Its physical TTL is the longest the inner cache keeps
    /// ([`Duration::MAX`], clamped by the backend: memcached's 2038, Redis's
    /// 2^62 ms): the inner `compare_and_set` has no "never" when the cache
    /// has a default TTL, and a `persist` after it would not be atomic. A
    /// plain value (a counter) is the inner cache's own `persist`.
    /// `false` when absent or logically expired.
    async fn persist(&self, key: &str) -> Result<bool> {
        for attempt in 0..RACE_RETRIES {
            let Some(raw) = self.peek(key).await? else {
                return Ok(false);
            };
            let s = decode(raw.clone());
            if s.is_stale(now_millis()) {
                return Ok(false);
            }
            if !s.enveloped {
                return self.inner.persist(key).await;
            }
            let new = encode(&s.value, None);
            let never = Some(Duration::MAX);
            if self.inner.compare_and_set(key, &raw, &new, never).await? {
                return Ok(true);
            }
            lost_race(attempt).await;
        }
        Err(self.lost("persist", key))
    }

    /// Compares the plain value (logically fresh only) and stores `new`
    /// enveloped, as `set` does, under the inner compare-and-set.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let ttl = self.logical_ttl(ttl)?;
        let encoded = encode(new, ttl);
        for attempt in 0..RACE_RETRIES {
            let Some(raw) = self.peek(key).await? else {
                return Ok(false);
            };
            let s = decode(raw.clone());
            if s.is_stale(now_millis()) || s.value[..] != *expected {
                return Ok(false);
            }
            let physical = self.physical(ttl);
            if self
                .inner
                .compare_and_set(key, &raw, &encoded, physical)
                .await?
            {
                return Ok(true);
            }
            lost_race(attempt).await;
        }
        Err(self.lost("compare_and_set", key))
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        CacheFuture::boxed(async move {
            let Some(v) = self.inner.get_with_ttl(key).await? else {
                return Ok(None);
            };
            Ok(with_logical_ttl(v, now_millis()))
        })
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let now = now_millis();
        let raw = self.inner.get_many_with_ttl(keys).await?;
        Ok(raw
            .into_iter()
            .map(|v| v.and_then(|v| with_logical_ttl(v, now)))
            .collect())
    }

    async fn entries(&self) -> Result<EntryStream<'_>> {
        let now = now_millis();
        let inner = self.inner.entries().await?;
        Ok(inner
            .filter_map(move |r| async move {
                match r {
                    Err(e) => Some(Err(e)),
                    Ok(e) => with_logical_ttl(ValueTtl::new(e.value, e.ttl), now)
                        .map(|v| Ok(Entry::new(e.key, v.value, v.ttl))),
                }
            })
            .boxed())
    }
}

/// A stored value and physical TTL as the plain value and logical TTL;
/// `None` when logically expired. Plain values keep their physical TTL.
fn with_logical_ttl(v: ValueTtl, now: u64) -> Option<ValueTtl> {
    let s = decode(v.value);
    if s.is_stale(now) {
        return None;
    }
    let ttl = if s.enveloped { s.remaining(now) } else { v.ttl };
    Some(ValueTtl::new(s.value, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_plain_values() {
        let raw = Bytes::from(encode(b"hello", Some(Duration::from_secs(10))));
        assert_eq!(raw.len(), HEADER_LEN + 5);
        let s = decode(raw);
        assert!(s.enveloped);
        assert_eq!(&s.value[..], b"hello");
        assert_eq!(s.ttl_ms, 10_000);
        let now = now_millis();
        assert!(!s.is_stale(now) && s.is_stale(now + 10_001));
        assert!(!s.in_refresh_window(now, 800));
        assert!(s.in_refresh_window(now + 8_500, 800));
        let never = decode(Bytes::from(encode(b"x", None)));
        assert!(never.enveloped && !never.is_stale(u64::MAX) && never.remaining(0).is_none());
        // The longest TTL still decodes (expiry - TTL is the write time).
        let huge = decode(Bytes::from(encode(b"h", Some(Duration::MAX))));
        assert!(huge.enveloped && huge.expires_at == u64::MAX, "{huge:?}");
        // Anything without a valid header, even short or near-miss, is plain.
        let v1 = [&[0xF5, 0x01][..], &[0xFF; 16], b"x"].concat();
        let mut bad_check = encode(b"v", Some(Duration::from_secs(1)));
        bad_check[CHECKED] ^= 1;
        let mut bad_field = encode(b"v", Some(Duration::from_secs(1)));
        bad_field[12] ^= 1;
        let inconsistent = |exp: u64, ttl: u64| {
            let mut v = encode_at(b"v", exp, ttl);
            let check = xxhash_rust::xxh3::xxh3_64(&v[..CHECKED]);
            v[CHECKED..HEADER_LEN].copy_from_slice(&check.to_be_bytes());
            v
        };
        for plain in [
            &b""[..],
            b"\xF5",
            b"\xF5\x02xxxxxxxxxxxxxxxxxxxx",
            b"42",
            &v1,
            &bad_check,
            &bad_field,
            &inconsistent(5, 0),
            &inconsistent(0, 5),
            &inconsistent(5, 6),
            &encode(b"", None)[..HEADER_LEN - 1],
        ] {
            let s = decode(Bytes::copy_from_slice(plain));
            assert!(!s.enveloped, "{plain:?}");
            assert_eq!(&s.value[..], plain);
            assert_eq!((s.expires_at, s.ttl_ms), (0, 0));
        }
        // A consistent, checked header built by hand is one (as encode_at).
        assert!(decode(Bytes::from(inconsistent(7, 5))).enveloped);
    }
}
