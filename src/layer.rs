//! The forwarding base of every layer: a [`Cache`] over a [`Cache`].
//!
//! A layer (the envelope, the tier, the observe layer) implements [`Layer`],
//! not [`Cache`]: it names its inner cache and overrides only what it
//! changes; every other operation forwards to the inner cache by default.
//! The blanket `impl<L: Layer> Cache for L` makes it a cache. Since the
//! [`Cache`] trait's own defaults answer `Unsupported` for the optional
//! operations, a layer written directly against [`Cache`] that forgot one
//! would silently lose it; through this trait it cannot (OpenDAL's layered
//! accessor is the model).
//!
//! This module must never know a concrete layer or backend.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::cache::{Cache, CacheFuture, Capabilities, EntryStream, KeyStream, Stats, ValueTtl};
use crate::error::{Error, ErrorKind, Result};

/// A cache that wraps another one. Every method forwards to
/// [`Layer::inner`] unless the layer overrides it; the meaning of each is
/// the [`Cache`] method of the same name.
#[async_trait]
#[allow(missing_docs)] // each method is documented on `Cache`
pub trait Layer: Send + Sync + fmt::Debug {
    /// The cache this layer wraps.
    fn inner(&self) -> &Arc<dyn Cache>;

    fn backend(&self) -> &'static str {
        self.inner().backend()
    }

    fn endpoint(&self) -> String {
        self.inner().endpoint()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        self.inner().get(key)
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        self.inner().set(key, value, ttl)
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        self.inner().delete(key)
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        self.inner().contains(key)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.inner().get_many(keys).await
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.inner().set_many(entries, ttl).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.inner().delete_many(keys).await
    }

    async fn clear(&self) -> Result<()> {
        self.inner().clear().await
    }

    async fn clear_all(&self) -> Result<()> {
        self.inner().clear_all().await
    }

    async fn len(&self) -> Result<u64> {
        self.inner().len().await
    }

    async fn is_empty(&self) -> Result<bool> {
        self.inner().is_empty().await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        self.inner().ttl(key).await
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.inner().add(key, value, ttl).await
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.inner().incr(key, delta).await
    }

    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.inner().touch(key, ttl).await
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        self.inner().persist(key).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        self.inner().compare_and_set(key, expected, new, ttl).await
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        self.inner().get_with_ttl(key)
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        self.inner().get_many_with_ttl(keys).await
    }

    async fn keys(&self) -> Result<KeyStream> {
        self.inner().keys().await
    }

    async fn entries(&self) -> Result<EntryStream<'_>> {
        self.inner().entries().await
    }

    async fn stats(&self) -> Result<Stats> {
        self.inner().stats().await
    }

    async fn compact(&self) -> Result<()> {
        self.inner().compact().await
    }

    async fn flush(&self) -> Result<()> {
        self.inner().flush().await
    }

    async fn close(&self) -> Result<()> {
        self.inner().close().await
    }

    fn unsupported(&self, op: &str) -> Error {
        self.inner().unsupported(op)
    }
}

/// Every layer is a cache: each method is the layer's own (its override,
/// or the forwarding default above).
#[async_trait]
impl<L: Layer> Cache for L {
    fn backend(&self) -> &'static str {
        Layer::backend(self)
    }

    fn endpoint(&self) -> String {
        Layer::endpoint(self)
    }

    fn capabilities(&self) -> Capabilities {
        Layer::capabilities(self)
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        Layer::get(self, key)
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        Layer::set(self, key, value, ttl)
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        Layer::delete(self, key)
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        Layer::contains(self, key)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        Layer::get_many(self, keys).await
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        Layer::set_many(self, entries, ttl).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        Layer::delete_many(self, keys).await
    }

    async fn clear(&self) -> Result<()> {
        Layer::clear(self).await
    }

    async fn clear_all(&self) -> Result<()> {
        Layer::clear_all(self).await
    }

    async fn len(&self) -> Result<u64> {
        Layer::len(self).await
    }

    async fn is_empty(&self) -> Result<bool> {
        Layer::is_empty(self).await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        Layer::ttl(self, key).await
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        Layer::add(self, key, value, ttl).await
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        Layer::incr(self, key, delta).await
    }

    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        Layer::touch(self, key, ttl).await
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        Layer::persist(self, key).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        Layer::compare_and_set(self, key, expected, new, ttl).await
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        Layer::get_with_ttl(self, key)
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        Layer::get_many_with_ttl(self, keys).await
    }

    async fn keys(&self) -> Result<KeyStream> {
        Layer::keys(self).await
    }

    async fn entries(&self) -> Result<EntryStream<'_>> {
        Layer::entries(self).await
    }

    async fn stats(&self) -> Result<Stats> {
        Layer::stats(self).await
    }

    async fn compact(&self) -> Result<()> {
        Layer::compact(self).await
    }

    async fn flush(&self) -> Result<()> {
        Layer::flush(self).await
    }

    async fn close(&self) -> Result<()> {
        Layer::close(self).await
    }

    fn unsupported(&self, op: &str) -> Error {
        Layer::unsupported(self, op)
    }
}

/// How many times a layer's read-modify-write (the envelope's `touch`,
/// `incr` and `compare_and_set`, compression's `incr` and
/// `compare_and_set`) reads again after another writer changed the value
/// between its read and its write.
pub(crate) const RACE_RETRIES: usize = 32;

/// Before the next try of a read-modify-write that lost a race: a yield
/// the first times, then a random pause growing with the losses (up to
/// 4 ms), so writers in a tight loop cannot make it lose every time (with a
/// yield alone, a `touch` racing a writer that sets in a loop over a socket
/// lost all 32 tries about once in 400 runs). Outside a Tokio runtime
/// (layers run on any executor) it only yields.
pub(crate) async fn lost_race(attempt: usize) {
    if attempt < 2 || tokio::runtime::Handle::try_current().is_err() {
        tokio::task::yield_now().await;
    } else {
        let most = 250u64 << attempt.min(4);
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=most))).await;
    }
}

/// The error of a read-modify-write on `key` that lost all
/// [`RACE_RETRIES`] races.
pub(crate) fn race_lost(backend: &'static str, op: &str, key: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("{op}: another writer changed the value {RACE_RETRIES} times in a row"),
    )
    .with_backend(backend)
    .with_context("key", key)
}
