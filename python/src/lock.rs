//! `unicache_rs._unicache.Lock`: the library's `unicache::Lock`, which
//! `cache.lock(...)` (`unicache_rs.Lock`, `AsyncLock`) wraps: one
//! implementation of the lock for Rust and Python.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::cache::Cache;
use crate::{run, ttl_arg};

/// A named lock on a cache; see `unicache_rs.Lock` for its use.
#[pyclass(module = "unicache", name = "Lock", frozen)]
pub struct Lock {
    pub(crate) inner: Arc<unicache::Lock>,
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
    fn new(cache: &Cache, name: &str, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let handle = cache.backend()?;
        let lock = unicache::Lock::new(handle.cache().clone(), name)
            .map_err(crate::to_py)?
            .timeout(ttl_arg(timeout)?);
        Ok(Lock {
            inner: Arc::new(lock),
        })
    }

    /// Takes the lock, waiting up to `wait` seconds (`None`: as long as it
    /// takes, `0`: one try); `False` when that passed first.
    #[pyo3(signature = (wait=None))]
    fn acquire(&self, py: Python<'_>, wait: Option<f64>) -> PyResult<bool> {
        let l = self.inner.clone();
        run(py, async move { l.acquire_within(wait_of(wait)).await })
    }

    /// Frees the lock if this holder holds it; `False` (nothing changed)
    /// otherwise.
    fn release(&self, py: Python<'_>) -> PyResult<bool> {
        let l = self.inner.clone();
        run(py, async move { l.release().await })
    }

    /// Gives the held lock `timeout` from now; `False` if not held.
    #[pyo3(signature = (timeout=None))]
    fn extend(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let (l, t) = (self.inner.clone(), ttl_arg(timeout)?);
        run(py, async move { l.extend(t).await })
    }

    /// Whether any holder has the lock now.
    fn locked(&self, py: Python<'_>) -> PyResult<bool> {
        let l = self.inner.clone();
        run(py, async move { l.locked().await })
    }

    /// This holder's token while it holds the lock, else `None`.
    #[getter]
    fn token<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.token().map(|t| PyBytes::new(py, &t))
    }
}
