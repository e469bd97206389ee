//! The value envelope of caches with fail-safe or refresh-ahead on.
//!
//! Such a cache stores each value behind an 18-byte header:
//!
//! | bytes | what |
//! |---|---|
//! | 0 | magic `0xF5` (never the first byte of UTF-8 text or JSON) |
//! | 1 | version, `1` |
//! | 2..10 | logical expiry, Unix milliseconds, big-endian; `0`: none |
//! | 10..18 | the logical TTL it was stored with, milliseconds; `0`: none |
//!
//! and a physical TTL of the logical TTL plus `fail_safe_max`, so an entry
//! whose logical expiry passed is still there for fail-safe. [`Enveloped`]
//! is the [`Cache`] layer that writes and reads it: every read (`get`,
//! `get_many`, `get_with_ttl`, `ttl`, `contains`, `entries` and so
//! `export`) returns the plain value and treats a logically expired entry as
//! absent. Values without the header (written by `incr`, or by a cache
//! opened without these options) read as they are. Caches without the
//! options never see this layer: their values are exactly the bytes given.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::cache::{Cache, CacheFuture, Entry, EntryStream, ValueTtl, now_millis};
use crate::error::Result;
use crate::layer::Layer;

/// First byte of an enveloped value.
pub const MAGIC: u8 = 0xF5;
/// Envelope format version.
pub const VERSION: u8 = 1;
/// Length of the header before the value.
pub const HEADER_LEN: usize = 18;

/// One stored value with its logical expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The plain value.
    pub value: Bytes,
    /// Logical expiry in Unix milliseconds; `0`: none.
    pub expires_at: u64,
    /// The logical TTL it was stored with, in milliseconds; `0`: none.
    pub ttl_ms: u64,
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
    let ttl_ms = ttl.map_or(0, |t| {
        u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
    });
    let expires_at = if ttl_ms == 0 {
        0
    } else {
        now_millis().saturating_add(ttl_ms)
    };
    let mut out = Vec::with_capacity(HEADER_LEN + value.len());
    out.push(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out.extend_from_slice(&ttl_ms.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Splits a stored value into header and plain value; a value without the
/// header is plain with no logical expiry.
pub(crate) fn decode(raw: Bytes) -> Stored {
    if raw.len() < HEADER_LEN || raw[0] != MAGIC || raw[1] != VERSION {
        return Stored {
            value: raw,
            expires_at: 0,
            ttl_ms: 0,
        };
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let (expires_at, ttl_ms) = (word(2), word(10));
    Stored {
        value: raw.slice(HEADER_LEN..),
        expires_at,
        ttl_ms,
    }
}

/// The [`Cache`] layer of enveloped caches (see the module docs).
#[derive(Debug)]
pub struct Enveloped {
    inner: Arc<dyn Cache>,
    /// How long entries are kept after their logical expiry.
    keep: Duration,
    default_ttl: Option<Duration>,
}

impl Enveloped {
    /// Wraps `inner`; entries stay `keep` past their logical expiry.
    pub fn new(inner: Arc<dyn Cache>, keep: Duration, default_ttl: Option<Duration>) -> Self {
        Enveloped {
            inner,
            keep,
            default_ttl,
        }
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
        let physical = ttl.map(|t| t.saturating_add(self.keep));
        self.inner.set(key, &encode(value, ttl), physical).await
    }

    fn fresh(s: Stored, now: u64) -> Option<Bytes> {
        (!s.is_stale(now)).then_some(s.value)
    }
}

#[async_trait]
impl Layer for Enveloped {
    fn inner(&self) -> &Arc<dyn Cache> {
        &self.inner
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
            Ok(self.raw(key).await?.is_some_and(|s| !s.is_stale(now)))
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
        let physical = ttl.map(|t| t.saturating_add(self.keep));
        self.inner.set_many(&refs, physical).await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        Ok(Layer::get_with_ttl(self, key).await?.map(|v| v.ttl))
    }

    /// Enveloped too, but with no fail-safe extension: `add` is for locks
    /// and leases, which must end when their TTL does.
    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let ttl = self.logical_ttl(ttl)?;
        self.inner.add(key, &encode(value, ttl), ttl).await
    }

    /// Counters stay plain decimal text (no envelope), readable as they are.
    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.inner.incr(key, delta).await
    }

    /// Rewrites the value with a new logical expiry (not atomic with a
    /// concurrent `set`); `false` when absent or logically expired.
    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        match self.raw(key).await? {
            Some(s) if !s.is_stale(now_millis()) => {
                self.store(key, &s.value, ttl).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
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
    let ttl = if s.expires_at == 0 && s.ttl_ms == 0 {
        v.ttl
    } else {
        s.remaining(now)
    };
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
        assert_eq!(&s.value[..], b"hello");
        assert_eq!(s.ttl_ms, 10_000);
        let now = now_millis();
        assert!(!s.is_stale(now) && s.is_stale(now + 10_001));
        assert!(!s.in_refresh_window(now, 800));
        assert!(s.in_refresh_window(now + 8_500, 800));
        let never = decode(Bytes::from(encode(b"x", None)));
        assert!(!never.is_stale(u64::MAX) && never.remaining(0).is_none());
        // Anything without the header, even short or near-miss, is plain.
        for plain in [&b""[..], b"\xF5", b"\xF5\x02xxxxxxxxxxxxxxxxxxxx", b"42"] {
            let s = decode(Bytes::copy_from_slice(plain));
            assert_eq!(&s.value[..], plain);
            assert_eq!((s.expires_at, s.ttl_ms), (0, 0));
        }
    }
}
