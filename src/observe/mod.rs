//! Observability: a [`Cache`] decorator that opens a `tracing` span per
//! operation and, with the `metrics` cargo feature, records per-operation
//! metrics through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Applied by [`crate::open_with`] when the URL has `observe=1` (or [`crate::Stack::observe`]) (or
//! by hand with [`instrument`]); without it no layer exists and nothing is
//! paid. Labels are `backend`, `namespace` and `operation` (plus `kind` on
//! errors): never a key, so cardinality stays bounded.
//!
//! Metrics (with the `metrics` feature and a recorder installed, e.g.
//! `metrics-exporter-prometheus` or an OpenTelemetry bridge such as
//! `metrics-exporter-opentelemetry`):
//!
//! | name | type | what |
//! |---|---|---|
//! | `unicache_operations_total` | counter | calls, per operation |
//! | `unicache_keys_total` | counter | keys the batch calls touched (batch sizes summed) |
//! | `unicache_hits_total`, `unicache_misses_total` | counter | reads (`get`, `get_many`, `get_with_ttl`, `get_many_with_ttl`) |
//! | `unicache_errors_total` | counter | failed calls, with label `kind` |
//! | `unicache_bytes_read_total`, `unicache_bytes_written_total` | counter | value bytes returned (the reads above) / stored (`set`, `set_many`, an `add` that stored) |
//! | `unicache_operation_duration_seconds` | histogram | latency; in-process backends time 1 call in 128 |
//! | `unicache_evictions_total`, `unicache_entries` | counter, gauge | the backend's own figures, published on each [`Cache::stats`] call |
//!
//! In-process backends keep their single-key counts (get, set, delete,
//! contains) in per-thread slots of the layer and hand them to the recorder
//! every 1,024 calls per thread, once a second, and on `stats`, `flush`,
//! `close` and drop (a scrape may lag by that much; nothing is lost): shared
//! atomics, the facade's or our own, made a memory:// get 1.4x slower.
//! With `metrics-exporter-prometheus`, a histogram sample recorded while a
//! scrape drains the histogram can be missed (metrics-util's bucket swaps
//! its block under in-flight writers), so the duration count may trail
//! `unicache_operations_total` by a few; the counters are exact.
//!
//! Spans: `cache` at DEBUG for single-key operations (fields `backend`, `op`,
//! `key_len`) and at INFO for batches and whole-cache operations (`backend`,
//! `op`, `batch`). Keys and values are never recorded. A program's own
//! subscriber sees them, and `tracing-opentelemetry` forwards them to
//! OpenTelemetry.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::Instrument;

use crate::cache::{Cache, CacheFuture, EntryStream, KeyStream, Stats, ValueTtl};
use crate::error::Result;
use crate::layer::Layer;

#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use meters::{INLINE_PUBLISH_EVERY, INLINE_SAMPLE_EVERY};

/// Wraps `cache` in the observability layer. `namespace` is the label value
/// (empty when the cache has none).
pub fn instrument(cache: Arc<dyn Cache>, namespace: Option<&str>) -> Arc<dyn Cache> {
    Arc::new(Observed::new(cache, namespace.unwrap_or("")))
}

/// The operations the layer counts, one label value each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Get,
    Set,
    Delete,
    Contains,
    GetMany,
    SetMany,
    DeleteMany,
    Clear,
    ClearAll,
    Len,
    Ttl,
    Keys,
    Entries,
    Compact,
    Flush,
    Close,
    Add,
    Incr,
    Touch,
    Persist,
    GetWithTtl,
    GetManyWithTtl,
    CompareAndSet,
}

impl Op {
    /// Every operation, in label order.
    pub const ALL: [Op; 23] = [
        Op::Get,
        Op::Set,
        Op::Delete,
        Op::Contains,
        Op::GetMany,
        Op::SetMany,
        Op::DeleteMany,
        Op::Clear,
        Op::ClearAll,
        Op::Len,
        Op::Ttl,
        Op::Keys,
        Op::Entries,
        Op::Compact,
        Op::Flush,
        Op::Close,
        Op::Add,
        Op::Incr,
        Op::Touch,
        Op::Persist,
        Op::GetWithTtl,
        Op::GetManyWithTtl,
        Op::CompareAndSet,
    ];

    /// A single-key operation (`get`, `set`, `delete`, `contains`).
    pub fn is_single(self) -> bool {
        matches!(self, Op::Get | Op::Set | Op::Delete | Op::Contains)
    }

    /// The `operation` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Contains => "contains",
            Op::GetMany => "get_many",
            Op::SetMany => "set_many",
            Op::DeleteMany => "delete_many",
            Op::Clear => "clear",
            Op::ClearAll => "clear_all",
            Op::Len => "len",
            Op::Ttl => "ttl",
            Op::Keys => "keys",
            Op::Entries => "entries",
            Op::Compact => "compact",
            Op::Flush => "flush",
            Op::Close => "close",
            Op::Add => "add",
            Op::Incr => "incr",
            Op::Touch => "touch",
            Op::Persist => "persist",
            Op::GetWithTtl => "get_with_ttl",
            Op::GetManyWithTtl => "get_many_with_ttl",
            Op::CompareAndSet => "compare_and_set",
        }
    }
}

/// The URL options this layer reads.
pub(crate) const URL_OPTIONS: [&str; 1] = ["observe"];

/// `observe=1` turns the layer on.
pub(crate) fn from_query(q: &mut crate::url::Query) -> crate::error::Result<bool> {
    match q.take("observe").as_deref() {
        None | Some("0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(v) => Err(crate::url::url_err(format!(
            "{}: observe={v:?} (use 1 or 0)",
            q.scheme
        ))),
    }
}

/// How a get goes through the layer.
pub(crate) enum FastGet<'a, S> {
    /// Counted in this thread's slot, without a span or a clock.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    Go(&'a S),
    /// The full path: a span, and timed from this instant when sampled.
    Full(Option<std::time::Instant>),
}

/// The decorator: forwards every call to the wrapped cache inside a span,
/// and counts it.
pub struct Observed {
    inner: Arc<dyn Cache>,
    backend: &'static str,
    meters: meters::Meters,
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Observed {
    /// Wraps `inner`; `namespace` is the label value.
    pub fn new(inner: Arc<dyn Cache>, namespace: &str) -> Self {
        let backend = inner.backend();
        let inline = inner.capabilities().inline;
        Observed {
            meters: meters::Meters::new(backend, namespace, inline),
            backend,
            inner,
        }
    }

    /// A single-key operation: timed, counted, inside a DEBUG span. A
    /// finished future stays finished (no allocation on in-process hits).
    fn single<'a, T: Unpin + Send + 'a>(
        &'a self,
        op: Op,
        key_len: usize,
        call: impl FnOnce() -> CacheFuture<'a, T>,
        done: impl Fn(&meters::Meters, &Result<T>) + Send + 'a,
    ) -> CacheFuture<'a, T> {
        let clock = self.meters.clock_single();
        self.single_timed(op, key_len, clock, call, done)
    }

    /// [`Self::single`] with the start time already chosen.
    fn single_timed<'a, T: Unpin + Send + 'a>(
        &'a self,
        op: Op,
        key_len: usize,
        clock: Option<std::time::Instant>,
        call: impl FnOnce() -> CacheFuture<'a, T>,
        done: impl Fn(&meters::Meters, &Result<T>) + Send + 'a,
    ) -> CacheFuture<'a, T> {
        let span = tracing::debug_span!("cache", backend = self.backend, op = op.as_str(), key_len);
        let fut = {
            let _entered = span.enter();
            call()
        };
        match fut {
            CacheFuture::Ready(Some(r)) => {
                done(&self.meters, &r);
                self.meters.done(op, &r, clock, None);
                CacheFuture::ready(r)
            }
            pending => {
                let clock = clock.or_else(|| self.meters.clock_always());
                CacheFuture::boxed(
                    async move {
                        let r = pending.await;
                        done(&self.meters, &r);
                        self.meters.done(op, &r, clock, None);
                        r
                    }
                    .instrument(span),
                )
            }
        }
    }

    /// A batch or whole-cache operation: timed, counted, inside an INFO span.
    async fn batch<T>(
        &self,
        op: Op,
        keys: usize,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::info_span!(
            "cache",
            backend = self.backend,
            op = op.as_str(),
            batch = keys
        );
        let clock = self.meters.clock_always();
        let r = call.instrument(span).await;
        self.meters.done(op, &r, clock, Some(keys as u64));
        r
    }
}

fn value_len(v: &Option<Bytes>) -> u64 {
    v.as_ref().map_or(0, |b| b.len() as u64)
}

#[async_trait]
impl Layer for Observed {
    fn inner(&self) -> &Arc<dyn Cache> {
        &self.inner
    }

    fn backend(&self) -> &'static str {
        self.backend
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        let read = |m: &meters::Meters, r: &Result<Option<Bytes>>| {
            if let Ok(v) = r {
                m.read(
                    Op::Get,
                    v.is_some() as u64,
                    v.is_none() as u64,
                    value_len(v),
                );
            }
        };
        let clock = match self.meters.fast_get() {
            // An in-process get, not sampled, no DEBUG subscriber: the
            // answer is counted where it lies (a memory:// hit takes tens
            // of nanoseconds, and every instruction added here shows).
            FastGet::Go(slot) => {
                let fut = self.inner.get(key);
                if let CacheFuture::Ready(Some(r)) = &fut {
                    self.meters.fast_done(slot, r);
                    return fut;
                }
                return self.single_timed(Op::Get, key.len(), None, move || fut, read);
            }
            FastGet::Full(clock) => clock,
        };
        self.single_timed(Op::Get, key.len(), clock, || self.inner.get(key), read)
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        let n = value.len() as u64;
        self.single(
            Op::Set,
            key.len(),
            || self.inner.set(key, value, ttl),
            move |m, r| {
                if r.is_ok() {
                    m.written(Op::Set, n);
                }
            },
        )
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        self.single(Op::Delete, key.len(), || self.inner.delete(key), |_, _| {})
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        self.single(
            Op::Contains,
            key.len(),
            || self.inner.contains(key),
            |_, _| {},
        )
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let r = self
            .batch(Op::GetMany, keys.len(), self.inner.get_many(keys))
            .await;
        if let Ok(v) = &r {
            let hits = v.iter().filter(|x| x.is_some()).count() as u64;
            let bytes = v.iter().map(value_len).sum();
            self.meters
                .read(Op::GetMany, hits, v.len() as u64 - hits, bytes);
        }
        r
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let r = self
            .batch(
                Op::SetMany,
                entries.len(),
                self.inner.set_many(entries, ttl),
            )
            .await;
        if r.is_ok() {
            let bytes = entries.iter().map(|(_, v)| v.len() as u64).sum();
            self.meters.written(Op::SetMany, bytes);
        }
        r
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.batch(Op::DeleteMany, keys.len(), self.inner.delete_many(keys))
            .await
    }

    async fn clear(&self) -> Result<()> {
        self.batch(Op::Clear, 0, self.inner.clear()).await
    }

    async fn clear_all(&self) -> Result<()> {
        self.batch(Op::ClearAll, 0, self.inner.clear_all()).await
    }

    async fn len(&self) -> Result<u64> {
        self.batch(Op::Len, 0, self.inner.len()).await
    }

    async fn is_empty(&self) -> Result<bool> {
        self.batch(Op::Len, 0, self.inner.is_empty()).await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        self.batch(Op::Ttl, 1, self.inner.ttl(key)).await
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let r = self
            .batch(Op::Add, 1, self.inner.add(key, value, ttl))
            .await;
        if let Ok(true) = r {
            self.meters.written(Op::Add, value.len() as u64);
        }
        r
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.batch(Op::Incr, 1, self.inner.incr(key, delta)).await
    }

    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.batch(Op::Touch, 1, self.inner.touch(key, ttl)).await
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        self.batch(Op::Persist, 1, self.inner.persist(key)).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let call = self.inner.compare_and_set(key, expected, new, ttl);
        self.batch(Op::CompareAndSet, 1, call).await
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        self.single(
            Op::GetWithTtl,
            key.len(),
            || self.inner.get_with_ttl(key),
            |m, r| {
                if let Ok(v) = r {
                    let bytes = v.as_ref().map_or(0, |x| x.value.len() as u64);
                    m.read(
                        Op::GetWithTtl,
                        v.is_some() as u64,
                        v.is_none() as u64,
                        bytes,
                    );
                }
            },
        )
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let r = self
            .batch(
                Op::GetManyWithTtl,
                keys.len(),
                self.inner.get_many_with_ttl(keys),
            )
            .await;
        if let Ok(v) = &r {
            let hits = v.iter().filter(|x| x.is_some()).count() as u64;
            let bytes = v.iter().flatten().map(|x| x.value.len() as u64).sum();
            self.meters
                .read(Op::GetManyWithTtl, hits, v.len() as u64 - hits, bytes);
        }
        r
    }

    async fn keys(&self) -> Result<KeyStream> {
        self.batch(Op::Keys, 0, self.inner.keys()).await
    }

    async fn entries(&self) -> Result<EntryStream<'_>> {
        self.batch(Op::Entries, 0, self.inner.entries()).await
    }

    /// The wrapped cache's stats; also publishes its evictions and entry
    /// count as `unicache_evictions_total` and `unicache_entries`.
    async fn stats(&self) -> Result<Stats> {
        let s = self.inner.stats().await?;
        self.meters.publish(&s);
        Ok(s)
    }

    async fn compact(&self) -> Result<()> {
        self.batch(Op::Compact, 0, self.inner.compact()).await
    }

    async fn flush(&self) -> Result<()> {
        self.meters.flush_local();
        self.batch(Op::Flush, 0, self.inner.flush()).await
    }

    async fn close(&self) -> Result<()> {
        self.meters.flush_local();
        self.batch(Op::Close, 0, self.inner.close()).await
    }
}

#[cfg(feature = "metrics")]
mod local;
#[cfg(feature = "metrics")]
mod meters;

#[cfg(not(feature = "metrics"))]
mod meters {
    //! Without the `metrics` feature the layer only opens spans.
    use std::time::Instant;

    use super::Op;
    use crate::cache::Stats;
    use crate::error::Result;

    pub(super) struct Meters;

    impl Meters {
        pub(super) fn new(_: &'static str, _: &str, _: bool) -> Self {
            Meters
        }
        #[inline]
        pub(super) fn clock_single(&self) -> Option<Instant> {
            None
        }
        #[inline]
        pub(super) fn clock_always(&self) -> Option<Instant> {
            None
        }
        #[inline]
        pub(super) fn fast_get(&self) -> super::FastGet<'_, ()> {
            super::FastGet::Full(None)
        }
        #[inline]
        pub(super) fn fast_done<T>(&self, _: &(), _: &Result<T>) {}
        #[inline]
        pub(super) fn done<T>(&self, _: Op, _: &Result<T>, _: Option<Instant>, _: Option<u64>) {}
        #[inline]
        pub(super) fn read(&self, _: Op, _: u64, _: u64, _: u64) {}
        #[inline]
        pub(super) fn written(&self, _: Op, _: u64) {}
        pub(super) fn flush_local(&self) {}
        pub(super) fn publish(&self, _: &Stats) {}
    }
}

pub mod writer;

#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel;

#[cfg(all(test, feature = "prometheus", feature = "memory"))]
mod tests;
