//! Value compression (`compress=zstd|zlib`, `compress_min_size=N`): a
//! [`Layer`] that compresses values of `N` bytes or more (default 1024)
//! before they are stored and decompresses them when read.
//!
//! A compressed value is `MARK` (`00 75 63 7A`, `"\0ucz"`), one tag byte
//! and the compressed bytes: `s` for zstd (one frame with its content size,
//! level 3), `z` for zlib (RFC 1950, level 6). A value is stored compressed
//! only when that is shorter; otherwise as it is, except that a value which
//! itself starts with `MARK` gets the tag `r` (raw: `MARK r` + the value) so
//! that reads are unambiguous. Reads return values without `MARK` (other
//! clients', counters, data written before compression was turned on)
//! exactly as stored, and a `MARK` with an unknown tag as it is too. This
//! is the format of the Python package's `compress=` (which opens this
//! layer), so either reads what the other wrote.
//!
//! Atomic operations: `incr` is the inner cache's on plain counters (a
//! counter is far below any threshold; one that was stored compressed is
//! counted under compare-and-set); `compare_and_set` compares the logical
//! (decompressed) value: the raw bytes read are the `expected` of the inner
//! cache's own `compare_and_set`, retried a bounded number of times when
//! another writer changed them meanwhile. `touch` and `persist` do not
//! touch the value.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::cache::{
    Cache, CacheFuture, Capabilities, Entry, EntryStream, ValueTtl, incr_value, parse_counter,
};
use crate::error::{Error, ErrorKind, Result};
use crate::layer::{Layer, RACE_RETRIES, lost_race, race_lost};
use crate::url::{Query, url_err};

/// First bytes of a compressed (or raw-tagged) value.
pub const MARK: &[u8; 4] = b"\x00ucz";
/// Tag of a value stored as it is behind [`MARK`].
pub const TAG_RAW: u8 = b'r';
/// Tag of a zstd frame.
pub const TAG_ZSTD: u8 = b's';
/// Tag of a zlib stream.
pub const TAG_ZLIB: u8 = b'z';
/// Values shorter than this many bytes are stored as they are, by default.
pub const DEFAULT_MIN_SIZE: u64 = 1024;
/// The zstd level (python-zstandard's default).
const ZSTD_LEVEL: i32 = 3;
/// The zlib level (Python's `zlib.compress` default).
const ZLIB_LEVEL: u32 = 6;

/// The URL options this layer reads.
pub(crate) const URL_OPTIONS: [&str; 2] = ["compress", "compress_min_size"];

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// Zstandard, level 3.
    Zstd,
    /// zlib (deflate), level 6.
    Zlib,
}

impl Algorithm {
    fn tag(self) -> u8 {
        match self {
            Algorithm::Zstd => TAG_ZSTD,
            Algorithm::Zlib => TAG_ZLIB,
        }
    }
}

/// What the layer compresses, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompressConfig {
    /// The algorithm new values are compressed with (reads take either).
    pub algorithm: Algorithm,
    /// Values shorter than this are stored as they are.
    pub min_size: u64,
}

impl CompressConfig {
    /// `algorithm` for values of [`DEFAULT_MIN_SIZE`] bytes or more.
    pub fn new(algorithm: Algorithm) -> Self {
        CompressConfig {
            algorithm,
            min_size: DEFAULT_MIN_SIZE,
        }
    }

    /// Compresses values of `n` bytes or more.
    #[must_use]
    pub fn min_size(mut self, n: u64) -> Self {
        self.min_size = n;
        self
    }
}

/// `compress=zstd|zlib` (`none`/`off`: no layer) and `compress_min_size=N`
/// (bytes, or a size such as `4KiB`).
pub(crate) fn from_query(q: &mut Query) -> Result<Option<CompressConfig>> {
    let algorithm = match q.take("compress").as_deref() {
        None | Some("" | "none" | "off" | "0") => None,
        Some("zstd") => Some(Algorithm::Zstd),
        Some("zlib") => Some(Algorithm::Zlib),
        Some(v) => {
            return Err(url_err(format!(
                "{}: compress={v:?} (use zstd, zlib or none)",
                q.scheme
            )));
        }
    };
    let min_size = q.take_size("compress_min_size")?;
    match (algorithm, min_size) {
        (Some(a), n) => Ok(Some(
            CompressConfig::new(a).min_size(n.unwrap_or(DEFAULT_MIN_SIZE)),
        )),
        (None, None) => Ok(None),
        (None, Some(_)) => Err(url_err(format!(
            "{}: compress_min_size needs compress=zstd or compress=zlib",
            q.scheme
        ))),
    }
}

/// `value` as this layer stores it (see the module docs).
pub fn encode<'v>(config: &CompressConfig, value: &'v [u8]) -> Cow<'v, [u8]> {
    if value.len() as u64 >= config.min_size
        && let Some(packed) = compress(config.algorithm, value)
        && packed.len() < value.len()
    {
        return Cow::Owned(packed);
    }
    if value.starts_with(MARK) {
        let mut out = Vec::with_capacity(MARK.len() + 1 + value.len());
        out.extend_from_slice(MARK);
        out.push(TAG_RAW);
        out.extend_from_slice(value);
        return Cow::Owned(out);
    }
    Cow::Borrowed(value)
}

/// `MARK`, the tag and the compressed bytes; `None` if the compressor
/// failed (the value is then stored as it is).
fn compress(algorithm: Algorithm, value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len() / 2 + 16);
    out.extend_from_slice(MARK);
    out.push(algorithm.tag());
    match algorithm {
        // bulk: one frame with the content size in its header, which
        // python-zstandard's one-shot `decompress` needs.
        Algorithm::Zstd => out.extend(zstd::bulk::compress(value, ZSTD_LEVEL).ok()?),
        Algorithm::Zlib => {
            use std::io::Write;
            let level = flate2::Compression::new(ZLIB_LEVEL);
            let mut e = flate2::write::ZlibEncoder::new(out, level);
            e.write_all(value).ok()?;
            out = e.finish().ok()?;
        }
    }
    Some(out)
}

/// The value `raw` stands for (see the module docs); a compressed body
/// that does not decompress is an [`ErrorKind::Corrupt`] error.
pub fn decode(raw: Bytes) -> Result<Bytes> {
    if raw.len() <= MARK.len() || !raw.starts_with(MARK) {
        return Ok(raw);
    }
    let body = &raw[MARK.len() + 1..];
    let out = match raw[MARK.len()] {
        TAG_RAW => return Ok(raw.slice(MARK.len() + 1..)),
        TAG_ZSTD => zstd::stream::decode_all(body),
        TAG_ZLIB => {
            use std::io::Read;
            let mut out = Vec::with_capacity(body.len() * 3);
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut out)
                .map(|_| out)
        }
        _ => return Ok(raw),
    };
    out.map(Bytes::from).map_err(|e| {
        Error::new(
            ErrorKind::Corrupt,
            format!("a compressed value does not decompress: {e}"),
        )
    })
}

/// The compression layer (see the module docs).
#[derive(Debug)]
pub struct Compressed {
    inner: Arc<dyn Cache>,
    config: CompressConfig,
}

/// `inner` with values compressed as `config` says.
pub fn wrap(inner: Arc<dyn Cache>, config: CompressConfig) -> Arc<dyn Cache> {
    Arc::new(Compressed { inner, config })
}

impl Compressed {
    fn encode<'v>(&self, value: &'v [u8]) -> Cow<'v, [u8]> {
        encode(&self.config, value)
    }

    /// [`decode`], the error naming the backend and key.
    fn decode(&self, key: &str, raw: Bytes) -> Result<Bytes> {
        decode(raw).map_err(|e| {
            e.with_backend(self.inner.backend())
                .with_context("key", key)
        })
    }

    fn decode_ttl(&self, key: &str, v: ValueTtl) -> Result<ValueTtl> {
        Ok(ValueTtl::new(self.decode(key, v.value)?, v.ttl))
    }

    /// The error of a read-modify-write that lost every race.
    fn lost(&self, op: &str, key: &str) -> Error {
        race_lost(self.inner.backend(), op, key)
    }

    /// `incr` on a value the inner `incr` refused: a compressed counter is
    /// counted and written back plain under compare-and-set, keeping its
    /// TTL (none: the longest the backend keeps). `None`: it changed
    /// meanwhile, try again.
    async fn incr_compressed(&self, key: &str, delta: i64, refused: Error) -> Result<Option<i64>> {
        let Some(raw) = self.inner.get_with_ttl(key).await? else {
            return Ok(None); // gone: the inner incr starts it at 0
        };
        let plain = self.decode(key, raw.value.clone())?;
        if plain == raw.value {
            // Not compressed: refused for good unless it became a counter.
            let fits = parse_counter(&raw.value).and_then(|n| n.checked_add(delta));
            return if fits.is_some() {
                Ok(None)
            } else {
                Err(refused)
            };
        }
        let n = incr_value(self.inner.backend(), key, Some(&plain), delta)?;
        let ttl = raw.ttl.or(Some(Duration::MAX));
        let new = n.to_string();
        let stored = self
            .inner
            .compare_and_set(key, &raw.value, new.as_bytes(), ttl)
            .await?;
        Ok(stored.then_some(n))
    }
}

#[async_trait]
impl Layer for Compressed {
    fn inner(&self) -> &Arc<dyn Cache> {
        &self.inner
    }

    /// The inner cache's, less the 5 bytes a raw-tagged value takes more.
    fn capabilities(&self) -> Capabilities {
        let c = self.inner.capabilities();
        Capabilities {
            max_value_bytes: c
                .max_value_bytes
                .map(|m| m.saturating_sub(MARK.len() as u64 + 1)),
            ..c
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        match self.inner.get(key) {
            CacheFuture::Ready(Some(r)) => {
                CacheFuture::ready(r.and_then(|v| v.map(|b| self.decode(key, b)).transpose()))
            }
            pending => CacheFuture::boxed(async move {
                pending.await?.map(|b| self.decode(key, b)).transpose()
            }),
        }
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        match self.encode(value) {
            Cow::Borrowed(v) => self.inner.set(key, v, ttl),
            Cow::Owned(v) => CacheFuture::boxed(async move { self.inner.set(key, &v, ttl).await }),
        }
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let raw = self.inner.get_many(keys).await?;
        raw.into_iter()
            .zip(keys)
            .map(|(v, k)| v.map(|b| self.decode(k, b)).transpose())
            .collect()
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let encoded: Vec<Cow<'_, [u8]>> = entries.iter().map(|(_, v)| self.encode(v)).collect();
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .zip(&encoded)
            .map(|((k, _), v)| (*k, &v[..]))
            .collect();
        self.inner.set_many(&refs, ttl).await
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.inner.add(key, &self.encode(value), ttl).await
    }

    /// Plain counters (the usual kind) are the inner cache's `incr`, one
    /// call; a compressed one is counted under compare-and-set.
    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        for attempt in 0..RACE_RETRIES {
            let refused = match self.inner.incr(key, delta).await {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::InvalidInput => e,
                Err(e) => return Err(e),
            };
            if let Some(n) = self.incr_compressed(key, delta, refused).await? {
                return Ok(n);
            }
            lost_race(attempt).await;
        }
        Err(self.lost("incr", key))
    }

    /// Compares the logical value: the raw bytes read (whatever their
    /// compression or level) are the inner compare-and-set's `expected`.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let new = self.encode(new);
        for attempt in 0..RACE_RETRIES {
            let Some(raw) = self.inner.get(key).await? else {
                return Ok(false);
            };
            if self.decode(key, raw.clone())? != *expected {
                return Ok(false);
            }
            if self.inner.compare_and_set(key, &raw, &new, ttl).await? {
                return Ok(true);
            }
            lost_race(attempt).await;
        }
        Err(self.lost("compare_and_set", key))
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        CacheFuture::boxed(async move {
            let v = self.inner.get_with_ttl(key).await?;
            v.map(|v| self.decode_ttl(key, v)).transpose()
        })
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let raw = self.inner.get_many_with_ttl(keys).await?;
        raw.into_iter()
            .zip(keys)
            .map(|(v, k)| v.map(|v| self.decode_ttl(k, v)).transpose())
            .collect()
    }

    async fn entries(&self) -> Result<EntryStream<'_>> {
        let inner = self.inner.entries().await?;
        Ok(inner
            .map(move |r| {
                let e = r?;
                let value = self.decode(&e.key, e.value)?;
                Ok(Entry::new(e.key, value, e.ttl))
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(a: Algorithm, min: u64) -> CompressConfig {
        CompressConfig::new(a).min_size(min)
    }

    #[test]
    fn round_trips_and_marks() {
        let big = "abc".repeat(1000).into_bytes();
        for a in [Algorithm::Zstd, Algorithm::Zlib] {
            let c = cfg(a, 1024);
            let e = encode(&c, &big).into_owned();
            assert!(e.starts_with(MARK) && e[4] == a.tag() && e.len() < big.len());
            assert_eq!(decode(Bytes::from(e)).unwrap(), big);
            // Short: as it is.
            assert!(matches!(encode(&c, b"short"), Cow::Borrowed(b"short")));
            // Starts with MARK: raw-tagged, read back exactly.
            let marked = b"\x00uczzNOT ZLIB".to_vec();
            let e = encode(&c, &marked).into_owned();
            assert_eq!(&e[..5], b"\x00uczr");
            assert_eq!(decode(Bytes::from(e)).unwrap(), marked);
        }
        // Incompressible: stored as it is.
        let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        assert!(matches!(
            encode(&cfg(Algorithm::Zstd, 0), &noise),
            Cow::Borrowed(_)
        ));
        // Unmarked and unknown tags read as they are; a bad body is Corrupt.
        for v in [&b"plain"[..], b"\x00ucz", b"\x00uczQxyz", b""] {
            assert_eq!(decode(Bytes::copy_from_slice(v)).unwrap(), v);
        }
        let e = decode(Bytes::from_static(b"\x00uczzgarbage")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
    }

    /// Bytes other tools wrote: Python's `_MARK + b"z" + zlib.compress(v,
    /// 6)` and `_MARK + b"s"` + a zstd frame from `zstd -3` (with a
    /// checksum, which python-zstandard does not write: any frame reads),
    /// for `v = b"hello " * 300`. (Byte equality of our output is not the
    /// promise: miniz_oxide's deflate is not zlib's; each reads the other.)
    #[test]
    fn reads_other_writers_bytes() {
        let v = b"hello ".repeat(300);
        let zlib = unhex(PY_ZLIB);
        assert_eq!(decode(Bytes::from(zlib)).unwrap(), v);
        let zstd = [&b"\x00uczs"[..], &unhex(CLI_ZSTD)].concat();
        assert_eq!(decode(Bytes::from(zstd)).unwrap(), v);
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const PY_ZLIB: &str = "0075637a7a789ccb48cdc9c957c8182547c95172941c2547c91149020036e6950f";
    const CLI_ZSTD: &str = "28b52ffd6408066d00003068656c6c6f200100ffe62f45f488595f";

    #[test]
    fn url_options() {
        let q = |s: &str| Query::parse("memory", Some(s)).unwrap();
        let mut a = q("compress=zstd&compress_min_size=10");
        assert_eq!(from_query(&mut a).unwrap(), Some(cfg(Algorithm::Zstd, 10)));
        let mut b = q("compress=zlib");
        assert_eq!(
            from_query(&mut b).unwrap(),
            Some(cfg(Algorithm::Zlib, DEFAULT_MIN_SIZE))
        );
        assert_eq!(from_query(&mut q("")).unwrap(), None);
        for bad in [
            "compress=lz4",
            "compress_min_size=5",
            "compress=zstd&compress_min_size=x",
        ] {
            let e = from_query(&mut q(bad)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{bad}: {e}");
        }
    }
}
