//! A small synchronous facade for programs without an async runtime.
//!
//! reqwest's pattern: the facade owns one thread running a current-thread
//! tokio runtime, and each call sends a job there and waits for the answer.
//! Jobs run as tasks side by side: one caller's `get_or_set` may wait there
//! for a key's factory while its leader's thread sends the value in.
//! Backends that work in process (memory, SQLite, file: see
//! [`crate::Capabilities::inline`]) answer single-key calls on the caller's
//! thread instead, without the round trip to that thread.
//! It never calls `block_on` on the caller's thread, so it is safe to use
//! from inside another runtime too (it only blocks that thread).
//!
//! ```
//! use unicache::Fill;
//!
//! let cache = unicache::blocking::Cache::open("memory://").unwrap();
//! cache.set("k", b"v", None).unwrap();
//! assert_eq!(cache.get("k").unwrap().as_deref(), Some(&b"v"[..]));
//! let v = cache
//!     .get_or_set("user:1", None, || Ok(Fill::Cache("Ada".into())))
//!     .unwrap();
//! assert_eq!(&v[..], b"Ada");
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::mpsc;

use crate::cache::{Cache as AsyncCache, Stats, ValueTtl};
use crate::error::{Error, ErrorKind, Result};
use crate::readthrough::{Begin, FactoryError, Fill, Handle};

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Owns the runtime thread; dropping it stops the thread.
struct Runtime {
    tx: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Runtime {
    fn start() -> Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::from(e).with_context("op", "start runtime"))?;
        let thread = std::thread::Builder::new()
            .name("unicache-blocking".into())
            .spawn(move || {
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job);
                    }
                })
            })
            .map_err(|e| Error::from(e).with_context("op", "spawn runtime thread"))?;
        Ok(Runtime {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::pin(async move {
            let _ = done_tx.send(fut.await);
        });
        self.tx
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        done_rx.recv().map_err(|_| gone())?
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A blocking handle to any cache.
pub struct Cache {
    inner: Handle,
    rt: Runtime,
    /// The backend finishes single-key operations inline
    /// ([`crate::Capabilities::inline`]): they run on the caller's thread.
    inline: bool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Cache")
            .field("inner", &self.inner)
            .finish()
    }
}

fn gone() -> Error {
    Error::new(ErrorKind::Io, "the blocking runtime thread has stopped")
}

impl Cache {
    /// Opens a cache from a URL (see [`crate::open()`]).
    pub fn open(url: &str) -> Result<Self> {
        let rt = Runtime::start()?;
        let url = url.to_string();
        let inner = rt.run(async move { crate::open(&url).await })?;
        Ok(Cache {
            inline: inner.capabilities().inline,
            inner,
            rt,
        })
    }

    /// Wraps an already opened async cache (its own read-through state).
    pub fn from_async(inner: Arc<dyn AsyncCache>) -> Result<Self> {
        Self::from_handle(Handle::new(inner))
    }

    /// Wraps a handle: it and its clones, async or blocking, share one
    /// single-flight table.
    pub fn from_handle(inner: Handle) -> Result<Self> {
        Ok(Cache {
            inline: inner.capabilities().inline,
            inner,
            rt: Runtime::start()?,
        })
    }

    /// The async cache behind this handle.
    pub fn inner(&self) -> &Arc<dyn AsyncCache> {
        self.inner.cache()
    }

    /// The read-through handle behind this facade.
    pub fn handle(&self) -> &Handle {
        &self.inner
    }

    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.rt.run(fut)
    }

    /// Runs a single-key operation here when the backend finishes it inline;
    /// `None` sends the caller to the runtime thread.
    fn on_this_thread<'a, T: Unpin>(
        &self,
        op: impl FnOnce() -> crate::CacheFuture<'a, T>,
    ) -> Option<Result<T>> {
        if self.inline {
            op().now_or_never()
        } else {
            None
        }
    }

    /// See [`AsyncCache::get`].
    pub fn get(&self, key: &str) -> Result<Option<Bytes>> {
        if let Some(r) = self.on_this_thread(|| self.inner.get(key)) {
            return r;
        }
        let (c, k) = (self.inner.cache().clone(), key.to_string());
        self.run(async move { c.get(&k).await })
    }

    /// See [`AsyncCache::set`].
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        if let Some(r) = self.on_this_thread(|| self.inner.set(key, value, ttl)) {
            return r;
        }
        let (c, k, v) = (self.inner.cache().clone(), key.to_string(), value.to_vec());
        self.run(async move { c.set(&k, &v, ttl).await })
    }

    /// See [`AsyncCache::delete`].
    pub fn delete(&self, key: &str) -> Result<bool> {
        if let Some(r) = self.on_this_thread(|| self.inner.delete(key)) {
            return r;
        }
        let (c, k) = (self.inner.cache().clone(), key.to_string());
        self.run(async move { c.delete(&k).await })
    }

    /// See [`AsyncCache::contains`].
    pub fn contains(&self, key: &str) -> Result<bool> {
        if let Some(r) = self.on_this_thread(|| self.inner.contains(key)) {
            return r;
        }
        let (c, k) = (self.inner.cache().clone(), key.to_string());
        self.run(async move { c.contains(&k).await })
    }

    /// See [`AsyncCache::get_many`].
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let c = self.inner.cache().clone();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        self.run(async move {
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            c.get_many(&refs).await
        })
    }

    /// See [`AsyncCache::set_many`].
    pub fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let c = self.inner.cache().clone();
        let owned: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        self.run(async move {
            let refs: Vec<(&str, &[u8])> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            c.set_many(&refs, ttl).await
        })
    }

    /// See [`AsyncCache::clear`].
    pub fn clear(&self) -> Result<()> {
        let c = self.inner.cache().clone();
        self.run(async move { c.clear().await })
    }

    /// See [`AsyncCache::len`].
    pub fn len(&self) -> Result<u64> {
        let c = self.inner.cache().clone();
        self.run(async move { c.len().await })
    }

    /// See [`AsyncCache::is_empty`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// See [`AsyncCache::stats`].
    pub fn stats(&self) -> Result<Stats> {
        let c = self.inner.cache().clone();
        self.run(async move { c.stats().await })
    }

    /// See [`AsyncCache::flush`].
    pub fn flush(&self) -> Result<()> {
        let c = self.inner.cache().clone();
        self.run(async move { c.flush().await })
    }
}

/// Read-through and atomic operations.
impl Cache {
    /// [`Handle::get_or_set`] with a synchronous factory, run on the
    /// caller's thread. Callers of one facade (and of the [`Handle`] it was
    /// made from) share one factory run per missing key. A sync closure
    /// cannot be interrupted: one that returns after `factory_timeout`
    /// gives every waiter the [`ErrorKind::Timeout`] error and its value is
    /// not stored. A factory that panics hands the key over to a waiting
    /// caller, as a cancelled async one does.
    pub fn get_or_set<F>(&self, key: &str, ttl: Option<Duration>, factory: F) -> Result<Bytes>
    where
        F: FnOnce() -> std::result::Result<Fill, FactoryError>,
    {
        // In-process backends answer a hit here, without the round trip.
        if self.inline
            && let Some(hit) = self.inner.hit(key, ttl).now_or_never()
            && let Some(v) = hit?
        {
            return Ok(v);
        }
        let (h, k) = (self.inner.clone(), key.to_string());
        let leader = match self.run(async move { h.begin(&k, ttl).await })? {
            Begin::Done(got) => return Ok(got.value),
            Begin::Lead(leader) => leader,
        };
        let result = factory();
        self.run(leader.complete(result)).map(|got| got.value)
    }

    /// See [`AsyncCache::add`].
    pub fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let (c, k, v) = (self.inner.cache().clone(), key.to_string(), value.to_vec());
        self.run(async move { c.add(&k, &v, ttl).await })
    }

    /// See [`AsyncCache::incr`].
    pub fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let (c, k) = (self.inner.cache().clone(), key.to_string());
        self.run(async move { c.incr(&k, delta).await })
    }

    /// See [`AsyncCache::touch`].
    pub fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let (c, k) = (self.inner.cache().clone(), key.to_string());
        self.run(async move { c.touch(&k, ttl).await })
    }

    /// See [`AsyncCache::persist`].
    pub fn persist(&self, key: &str) -> Result<bool> {
        let (c, k) = (self.inner.cache().clone(), key.to_string());
        self.run(async move { c.persist(&k).await })
    }

    /// See [`AsyncCache::ttl`].
    pub fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let (c, k) = (self.inner.cache().clone(), key.to_string());
        self.run(async move { c.ttl(&k).await })
    }

    /// See [`AsyncCache::get_with_ttl`].
    pub fn get_with_ttl(&self, key: &str) -> Result<Option<ValueTtl>> {
        if let Some(r) = self.on_this_thread(|| self.inner.get_with_ttl(key)) {
            return r;
        }
        let (c, k) = (self.inner.cache().clone(), key.to_string());
        self.run(async move { c.get_with_ttl(&k).await })
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let c = self.inner.cache().clone();
        if let Err(e) = self.run(async move { c.close().await }) {
            tracing::warn!("closing cache: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn works_inside_an_async_runtime() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let c = super::Cache::open("memory://").unwrap();
            c.set_many(&[("a", b"1"), ("b", b"2")], None).unwrap();
            assert_eq!(
                c.get_many(&["a", "x"]).unwrap()[0].as_deref(),
                Some(&b"1"[..])
            );
            assert!(c.delete("a").unwrap());
            assert_eq!(c.len().unwrap(), 1);
        });
    }

    #[test]
    fn get_or_set_runs_one_sync_factory_for_many_threads() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let c = std::sync::Arc::new(super::Cache::open("memory://").unwrap());
        let runs = std::sync::Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (c, runs) = (c.clone(), runs.clone());
                std::thread::spawn(move || {
                    c.get_or_set("k", None, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        Ok(crate::Fill::Cache("v".into()))
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(&t.join().unwrap().unwrap()[..], b"v");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let e = c.get_or_set("e", None, || Err("no".into())).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Factory);
        assert_eq!(c.get("e").unwrap(), None);
        assert!(c.add("a", b"1", None).unwrap());
        assert!(!c.add("a", b"2", None).unwrap());
        assert_eq!(c.incr("n", 5).unwrap(), 5);
        assert!(
            c.touch("a", Some(std::time::Duration::from_secs(60)))
                .unwrap()
        );
        assert!(c.ttl("a").unwrap().unwrap().is_some());
        assert_eq!(&c.get_with_ttl("a").unwrap().unwrap().value[..], b"1");
    }

    #[test]
    fn open_error_is_returned() {
        let e = super::Cache::open("nope://x").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::UnknownBackend);
    }
}
