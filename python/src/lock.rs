//! `unicache_rs._unicache.Lock`: the library's `unicache::Lock`, which
//! `cache.lock(...)` (`unicache_rs.Lock`, `AsyncLock`) wraps: one
//! implementation of the lock for Rust and Python.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::cache::Cache;
use crate::{run, ttl_arg};

/// A named lock on a cache; see `unicache_rs.Lock` for its use.
#[pyclass(module = "unicache", name = "Lock", frozen)]
pub struct Lock {
    /// The library's lock, and the process it was made in.
    inner: Mutex<(Arc<unicache::Lock>, u32)>,
    cache: Py<Cache>,
    name: String,
    timeout: Option<Duration>,
}

impl Lock {
    /// The library's lock; in a forked child (a lock made at import time,
    /// used by a gunicorn worker) one of its own over the cache the child
    /// reopened: the parent's handle would hang there. Its holding, if
    /// any, stays the parent's.
    pub(crate) fn get(&self, py: Python<'_>) -> PyResult<Arc<unicache::Lock>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.1 != std::process::id() {
            let cache = self.cache.bind(py).get();
            *inner = (
                Arc::new(make(cache, &self.name, self.timeout)?),
                std::process::id(),
            );
        }
        Ok(inner.0.clone())
    }
}

fn make(cache: &Cache, name: &str, timeout: Option<Duration>) -> PyResult<unicache::Lock> {
    let handle = cache.backend()?;
    Ok(unicache::Lock::new(handle.cache().clone(), name)
        .map_err(crate::to_py)?
        .timeout(timeout))
}

/// How long an acquire waits: `None` (or infinite, or too long for a
/// `Duration`) as long as it takes; negative: one try.
pub(crate) fn wait_of(wait: Option<f64>) -> Option<Duration> {
    let w = wait?;
    if w.is_nan() || w <= 0.0 {
        return Some(Duration::ZERO);
    }
    Duration::try_from_secs_f64(w).ok()
}

#[pymethods]
impl Lock {
    /// `Lock(cache, name, timeout=None)`: `timeout` seconds (or a
    /// timedelta) to live once taken; `None`: the cache's default TTL.
    #[new]
    #[pyo3(signature = (cache, name, timeout=None))]
    fn new(
        cache: Bound<'_, Cache>,
        name: &str,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let timeout = ttl_arg(timeout)?;
        let lock = make(cache.get(), name, timeout)?;
        Ok(Lock {
            inner: Mutex::new((Arc::new(lock), std::process::id())),
            cache: cache.unbind(),
            name: name.to_string(),
            timeout,
        })
    }

    /// Takes the lock, waiting up to `wait` seconds (`None`: as long as it
    /// takes, `0`: one try); `False` when that passed first.
    #[pyo3(signature = (wait=None))]
    fn acquire(&self, py: Python<'_>, wait: Option<f64>) -> PyResult<bool> {
        let l = self.get(py)?;
        run(py, async move { l.acquire_within(wait_of(wait)).await })
    }

    /// Frees the lock if this holder holds it; `False` (nothing changed)
    /// otherwise.
    fn release(&self, py: Python<'_>) -> PyResult<bool> {
        let l = self.get(py)?;
        run(py, async move { l.release().await })
    }

    /// Gives the held lock `timeout` from now; `False` if not held.
    #[pyo3(signature = (timeout=None))]
    fn extend(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let (l, t) = (self.get(py)?, ttl_arg(timeout)?);
        run(py, async move { l.extend(t).await })
    }

    /// Whether any holder has the lock now.
    fn locked(&self, py: Python<'_>) -> PyResult<bool> {
        let l = self.get(py)?;
        run(py, async move { l.locked().await })
    }

    /// This holder's token while it holds the lock, else `None`.
    #[getter]
    fn token<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        Ok(self.get(py)?.token().map(|t| PyBytes::new(py, &t)))
    }
}
