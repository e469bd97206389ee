//! `unicache_rs.Cache`: the blocking Python face of one `unicache` cache.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use futures::future::Either;
use futures::{FutureExt, StreamExt};
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyString, PyTuple};

use crate::aio::{AioTask, Bridge};
use crate::{
    ErrorClass, error_of, json_to_py, key_arg, key_utf8, run, seconds_arg, ttl_arg, utf8, value_arg,
};
use unicache::compress::{Algorithm, CompressConfig};
use unicache::{CacheExt, CacheOptions, FactoryError, Fill, Handle, KeyStream};

/// Keys fetched per round trip by the `keys()` iterator.
const KEY_CHUNK: usize = 1000;

/// Opens a cache from a URL; `options` are laid over the URL's
/// (`unicache::open_with`: each one set wins).
pub(crate) fn open(
    py: Python<'_>,
    url: &str,
    options: CacheOptions,
) -> PyResult<(Handle, CacheOptions)> {
    Ok((run(py, unicache::open_with(url, options.clone()))?, options))
}

/// [`open`] through the library's compression layer when `compress` is
/// given (else the URL's `compress=`, if any).
fn open_compressed(
    url: &str,
    options: CacheOptions,
    compress: Option<CompressConfig>,
) -> impl std::future::Future<Output = unicache::Result<Handle>> + Send + 'static {
    let stack = unicache::Stack::from_url(url).map(|s| {
        let s = s.options(options);
        if compress.is_some() {
            s.compress(compress)
        } else {
            s
        }
    });
    async move { stack?.open().await }
}

/// The `compress=` and `compress_min_size=` arguments: `None`, `"zstd"` or
/// `"zlib"`; an int of 0 or more.
fn compress_arg(
    compress: Option<&str>,
    min_size: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<CompressConfig>> {
    let algorithm = match compress {
        None => return Ok(None),
        Some("zstd") => Algorithm::Zstd,
        Some("zlib") => Algorithm::Zlib,
        Some(other) => {
            return Err(error_of(
                ErrorClass::InvalidInput,
                format!("compress must be \"zstd\", \"zlib\" or None, not {other:?}"),
            ));
        }
    };
    let mut config = CompressConfig::new(algorithm);
    if let Some(v) = min_size.filter(|v| !v.is_none()) {
        if v.is_instance_of::<PyBool>()
            || !v.is_instance_of::<PyInt>()
            || v.extract::<u64>().is_err()
        {
            return Err(error_of(
                ErrorClass::InvalidInput,
                format!("compress_min_size must be an int of 0 or more, not {v}"),
            ));
        }
        config = config.min_size(v.extract::<u64>()?);
    }
    Ok(Some(config))
}

/// The `max_bytes`, `max_entries` and `max_age` arguments laid onto
/// `options`. Each must be greater than zero, as in a URL (a bound of 0
/// would evict every entry).
fn with_bounds(
    mut options: CacheOptions,
    max_bytes: Option<&Bound<'_, PyAny>>,
    max_entries: Option<&Bound<'_, PyAny>>,
    max_age: Option<&Bound<'_, PyAny>>,
) -> PyResult<CacheOptions> {
    if let Some(v) = max_bytes.filter(|v| !v.is_none()) {
        let n = match v.cast::<PyString>() {
            Ok(s) => unicache::url::parse_size(&s.to_cow()?).map_err(crate::to_py)?,
            Err(_) => count_arg("max_bytes", v, "an int or a size string such as '500MB'")?,
        };
        options = options.max_bytes(positive("max_bytes", n, v)?);
    }
    if let Some(v) = max_entries.filter(|v| !v.is_none()) {
        let n = count_arg("max_entries", v, "an int")?;
        options = options.max_entries(positive("max_entries", n, v)?);
    }
    if let Some(v) = max_age.filter(|v| !v.is_none()) {
        let age = match v.cast::<PyString>() {
            Ok(s) => unicache::url::parse_duration(&s.to_cow()?).map_err(crate::to_py)?,
            Err(_) => seconds_arg("max_age", v, ", or a duration string such as '7d'")?,
        };
        if age.is_zero() {
            return Err(error_of(
                ErrorClass::InvalidInput,
                format!("max_age must be greater than zero, not {v}"),
            ));
        }
        options = options.max_age(age);
    }
    Ok(options)
}

/// A non-negative int argument (`bool` refused: `max_entries=True` is a slip).
fn count_arg(name: &str, v: &Bound<'_, PyAny>, forms: &str) -> PyResult<u64> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be {forms}, not {}",
            v.get_type().name()?
        )));
    }
    v.extract::<u64>().or_else(|_| positive(name, 0, v))
}

/// `n` when it is greater than zero; else an `InvalidInputError` naming `v`.
fn positive(name: &str, n: u64, v: &Bound<'_, PyAny>) -> PyResult<u64> {
    if n > 0 {
        return Ok(n);
    }
    Err(error_of(
        ErrorClass::InvalidInput,
        format!("{name} must be greater than zero, not {v}"),
    ))
}

/// A cache opened from a URL (`memory://`, `sqlite:PATH`, `file:PATH`,
/// `redis://HOST:PORT`, `redis+cluster://...`, `memcached://HOST:PORT`).
/// Values are bytes (a str is stored as UTF-8); TTLs are seconds or a
/// timedelta. Every call releases the GIL while the backend works.
/// Keyword-only bounds, over the URL's: `max_bytes` (an int or a size
/// string, `"500MB"`, `"10GiB"`), `max_entries`, `max_age` (seconds, a
/// timedelta or a duration string, `"7d"`); a backend that cannot keep one
/// raises `UnsupportedError`.
#[pyclass(module = "unicache", name = "Cache", frozen, subclass)]
pub struct Cache {
    inner: RwLock<Option<Handle>>,
    inline: bool,
    url: String,
    /// How it was opened, to open it again in a forked child.
    source: String,
    options: CacheOptions,
    /// The `compress=` argument, to open it again in a forked child.
    compress: Option<CompressConfig>,
    /// The process that opened `inner`.
    pid: AtomicU32,
}

impl Cache {
    /// Wraps an opened cache.
    pub(crate) fn wrap(inner: Handle, url: &str, options: CacheOptions) -> Self {
        Cache {
            inline: inner.capabilities().inline,
            inner: RwLock::new(Some(inner)),
            url: unicache::open::redact(url),
            source: url.to_string(),
            options,
            compress: None,
            pid: AtomicU32::new(std::process::id()),
        }
    }

    /// The open cache, or `ClosedError`.
    pub(crate) fn backend(&self) -> PyResult<Handle> {
        if self.pid.load(Ordering::Acquire) != std::process::id() {
            self.reopen_after_fork()?;
        }
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| error_of(ErrorClass::Closed, format!("cache {} is closed", self.url)))
    }

    /// In a forked child: the inherited handle's connections belong to the
    /// parent's runtime, whose threads are not here (its first call would
    /// hang), and SQLite connections must not cross a fork. Opens the cache
    /// again on this process's runtime; the inherited handle is leaked, not
    /// dropped (closing it could wait on those threads). A `memory://`
    /// cache keeps the child's copy of its entries.
    fn reopen_after_fork(&self) -> PyResult<()> {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        if self.pid.load(Ordering::Acquire) == pid {
            return Ok(()); // another thread did it
        }
        if let Some(old) = inner.as_ref()
            && old.backend() != "memory"
        {
            let again = open_compressed(&self.source, self.options.clone(), self.compress);
            let fresh = crate::runtime()?.block_on(again).map_err(crate::to_py)?;
            std::mem::forget(inner.replace(fresh));
        }
        self.pid.store(pid, Ordering::Release);
        Ok(())
    }

    /// The redacted URL.
    pub(crate) fn redacted_url(&self) -> &str {
        &self.url
    }

    fn get_bytes(&self, py: Python<'_>, key: &str) -> PyResult<Option<Bytes>> {
        let c = self.backend()?;
        if self.inline
            && let Some(r) = py.detach(|| c.get(key).now_or_never())
        {
            return r.map_err(crate::to_py);
        }
        run(py, c.get(key))
    }

    fn set_bytes(
        &self,
        py: Python<'_>,
        key: &str,
        value: &[u8],
        ttl: Option<std::time::Duration>,
    ) -> PyResult<()> {
        let c = self.backend()?;
        if self.inline
            && let Some(r) = py.detach(|| c.set(key, value, ttl).now_or_never())
        {
            return r.map_err(crate::to_py);
        }
        run(py, c.set(key, value, ttl))
    }
}

/// Runs a Python factory on the caller's thread (from inside the blocking
/// call, where it may use the cache again). An exception that is not an
/// `Exception` (`KeyboardInterrupt`, `SystemExit`, `asyncio.CancelledError`),
/// or a signal handler's exception raised as the factory returns (a signal
/// that arrived while C code ran), means the caller was interrupted: it is
/// sent on `abort` and the factory never finishes, so the caller drops the
/// flight (a waiter takes over) and nothing is stored.
async fn call_factory(
    f: Py<PyAny>,
    abort: tokio::sync::oneshot::Sender<PyErr>,
) -> Result<Fill, FactoryError> {
    let made = crate::call_back(|| {
        Python::attach(|py| -> PyResult<Bytes> {
            let v = f.bind(py).call0()?;
            let b = Bytes::from(value_arg(&v)?.into_owned());
            py.check_signals()?;
            Ok(b)
        })
    });
    match made {
        Ok(b) => Ok(Fill::Cache(b)),
        Err(e) if Python::attach(|py| !e.is_instance_of::<PyException>(py)) => {
            let _ = abort.send(e);
            std::future::pending().await
        }
        // The PyErr travels as the error's source: to_py raises it again.
        Err(e) => Err(Box::new(e)),
    }
}

/// A `bool` result for asyncio.
fn bool_of(py: Python<'_>, r: unicache::Result<bool>) -> PyResult<Bound<'_, PyAny>> {
    Ok(PyBool::new(py, r.map_err(crate::to_py)?)
        .to_owned()
        .into_any())
}

/// An integer result for asyncio.
fn i64_of(py: Python<'_>, r: unicache::Result<i64>) -> PyResult<Bound<'_, PyAny>> {
    Ok(r.map_err(crate::to_py)?.into_pyobject(py)?.into_any())
}

/// A count result for asyncio.
fn u64_of(py: Python<'_>, r: unicache::Result<u64>) -> PyResult<Bound<'_, PyAny>> {
    Ok(r.map_err(crate::to_py)?.into_pyobject(py)?.into_any())
}

/// Python's `None`.
fn none(py: Python<'_>) -> Bound<'_, PyAny> {
    py.None().into_bound(py)
}

/// A `None` result for asyncio.
fn unit(py: Python<'_>, r: unicache::Result<()>) -> PyResult<Bound<'_, PyAny>> {
    r.map_err(crate::to_py)?;
    Ok(py.None().into_bound(py))
}

/// A batch's result, or its `PartialBatchError` over `keys`.
fn batch<T>(py: Python<'_>, r: unicache::Result<T>, keys: &[String]) -> PyResult<T> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == unicache::ErrorKind::PartialBatch => {
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            crate::partial_to_py(py, &e, &refs)
        }
        Err(e) => Err(crate::to_py(e)),
    }
}

/// Keys as `String`s from a Python iterable of str. A str is refused, not
/// taken for its characters (`get_many("abc")` is a mistake for `["abc"]`).
fn keys_of(keys: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if keys.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "keys must be an iterable of str, not a str (a list of one key: [key])",
        ));
    }
    keys.try_iter()?.map(|k| key_arg(&k?)).collect()
}

#[pymethods]
impl Cache {
    /// `Cache(url, namespace=None, default_ttl=None, *, max_bytes=None,
    /// max_entries=None, max_age=None)`. The bounds (README, "Bounded disk
    /// caches") win over the URL's: `max_bytes` an int or a size string
    /// (`"500MB"`, `"10GiB"`), `max_entries` an int, `max_age` seconds, a
    /// timedelta or a duration string (`"7d"`). A backend that cannot keep
    /// a bound raises `UnsupportedError` rather than ignore it.
    ///
    /// `compress="zstd"|"zlib"` with `compress_min_size` (default 1024)
    /// opens the library's compression layer (README, "Compression").
    #[new]
    #[pyo3(signature = (url, namespace=None, default_ttl=None, *, max_bytes=None, max_entries=None, max_age=None, compress=None, compress_min_size=None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    fn new(
        py: Python<'_>,
        url: &str,
        namespace: Option<String>,
        default_ttl: Option<&Bound<'_, PyAny>>,
        max_bytes: Option<&Bound<'_, PyAny>>,
        max_entries: Option<&Bound<'_, PyAny>>,
        max_age: Option<&Bound<'_, PyAny>>,
        compress: Option<&str>,
        compress_min_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut options = CacheOptions::new();
        options.namespace = namespace;
        options.default_ttl = ttl_arg(default_ttl)?;
        let options = with_bounds(options, max_bytes, max_entries, max_age)?;
        let compress = compress_arg(compress, compress_min_size)?;
        let handle = run(py, open_compressed(url, options.clone(), compress))?;
        let mut cache = Cache::wrap(handle, url, options);
        cache.compress = compress;
        Ok(cache)
    }

    /// The URL, password redacted.
    #[getter]
    fn url(&self) -> String {
        self.url.clone()
    }

    /// The backend's name (`memory`, `sqlite`, `file`, `redis`, ...).
    #[getter]
    fn backend_name(&self) -> PyResult<&'static str> {
        Ok(self.backend()?.backend())
    }

    /// The default TTL in seconds (from the URL or `default_ttl=`), or
    /// `None`: entries stored without a TTL never expire.
    #[getter]
    fn default_ttl(&self) -> PyResult<Option<f64>> {
        Ok(self
            .backend()?
            .config()
            .default_ttl
            .map(|d| d.as_secs_f64()))
    }

    fn __repr__(&self) -> String {
        format!("unicache_rs.Cache({:?})", self.url)
    }

    /// The value under `key` as bytes, or `default`.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.get_bytes(py, &key_arg(key)?)? {
            Some(v) => Ok(PyBytes::new(py, &v).into_any()),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// Stores `value` (bytes or str) under `key`; `ttl` in seconds, or the default.
    #[pyo3(signature = (key, value, ttl=None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (k, v, t) = (key_arg(key)?, value_arg(value)?, ttl_arg(ttl)?);
        self.set_bytes(py, &k, &v, t)
    }

    /// Stores only when `key` is absent, atomically; `True` when it stored.
    #[pyo3(signature = (key, value, ttl=None))]
    fn add(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let (k, v, t) = (key_arg(key)?, value_arg(value)?, ttl_arg(ttl)?);
        let c = self.backend()?;
        run(py, c.add(&k, &v, t))
    }

    /// Stores `new` under `key` only if its live value is exactly
    /// `expected`, atomically (`ttl`: seconds, or the default); `True` when
    /// it stored. An absent key is never equal.
    #[pyo3(signature = (key, expected, new, ttl=None))]
    fn compare_and_set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        expected: &Bound<'_, PyAny>,
        new: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let (k, old, v, t) = (
            key_arg(key)?,
            value_arg(expected)?,
            value_arg(new)?,
            ttl_arg(ttl)?,
        );
        let c = self.backend()?;
        run(py, c.compare_and_set(&k, &old, &v, t))
    }

    /// Removes `key`; `True` if it was there.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (k, c) = (key_arg(key)?, self.backend()?);
        if self.inline
            && let Some(r) = py.detach(|| c.delete(&k).now_or_never())
        {
            return r.map_err(crate::to_py);
        }
        run(py, c.delete(&k))
    }

    /// Adds `delta` to the decimal integer under `key` (a missing key counts
    /// as 0), atomically; returns the new value.
    #[pyo3(signature = (key, delta=1))]
    fn incr(&self, py: Python<'_>, key: &Bound<'_, PyAny>, delta: i64) -> PyResult<i64> {
        let (k, c) = (key_arg(key)?, self.backend()?);
        run(py, c.incr(&k, delta))
    }

    /// `incr(key, -delta)`.
    #[pyo3(signature = (key, delta=1))]
    fn decr(&self, py: Python<'_>, key: &Bound<'_, PyAny>, delta: i64) -> PyResult<i64> {
        let (k, c) = (key_arg(key)?, self.backend()?);
        let d = delta.checked_neg().ok_or_else(|| {
            error_of(
                ErrorClass::InvalidInput,
                format!("decr: delta {delta} out of range"),
            )
        })?;
        run(py, c.incr(&k, d))
    }

    /// Gives `key` a new TTL (`None`: the default); `True` when it was there.
    #[pyo3(signature = (key, ttl=None))]
    fn touch(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let (k, t, c) = (key_arg(key)?, ttl_arg(ttl)?, self.backend()?);
        run(py, c.touch(&k, t))
    }

    /// Removes `key`'s TTL, whatever the default TTL (Redis `PERSIST`);
    /// `True` when it was there.
    fn persist(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (k, c) = (key_arg(key)?, self.backend()?);
        run(py, c.persist(&k))
    }

    /// Remaining seconds to live of `key`: `None` when absent, `math.inf`
    /// when it never expires.
    fn ttl(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
        let (k, c) = (key_arg(key)?, self.backend()?);
        Ok(run(py, c.ttl(&k))?.map(|t| t.map_or(f64::INFINITY, |d| d.as_secs_f64())))
    }

    /// `(value, seconds left or math.inf)`, or `None` when absent; one round trip.
    fn get_with_ttl<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let (k, c) = (key_arg(key)?, self.backend()?);
        match run(py, c.get_with_ttl(&k))? {
            None => Ok(None),
            Some(v) => {
                let ttl = v.ttl.map_or(f64::INFINITY, |d| d.as_secs_f64());
                Ok(Some(PyTuple::new(
                    py,
                    [
                        PyBytes::new(py, &v.value).into_any(),
                        ttl.into_pyobject(py)?.into_any(),
                    ],
                )?))
            }
        }
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (k, c) = (key_arg(key)?, self.backend()?);
        if self.inline
            && let Some(r) = py.detach(|| c.contains(&k).now_or_never())
        {
            return r.map_err(crate::to_py);
        }
        run(py, c.contains(&k))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let c = self.backend()?;
        Ok(run(py, c.len())? as usize)
    }

    /// A dict of the keys present among `keys`; one round trip.
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (keys, c) = (keys_of(keys)?, self.backend()?);
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = crate::run_batch(py, &refs, c.get_many(&refs))?;
        let out = PyDict::new(py);
        for (k, v) in keys.iter().zip(values) {
            if let Some(v) = v {
                out.set_item(k, PyBytes::new(py, &v))?;
            }
        }
        Ok(out)
    }

    /// Stores every entry of a mapping (or an iterable of `(key, value)`
    /// pairs); one round trip or transaction.
    #[pyo3(signature = (entries, ttl=None))]
    fn set_many(
        &self,
        py: Python<'_>,
        entries: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (t, c) = (ttl_arg(ttl)?, self.backend()?);
        // Keys as the UTF-8 `bytes` CPython encodes them to, borrowed from
        // there (no second copy per key; abi3 for 3.9 has no borrowed UTF-8).
        let mut held: Vec<(Bound<'_, PyBytes>, Bound<'_, PyAny>)> = Vec::new();
        match entries.cast::<PyDict>() {
            // Walks the dict in place: `items()` would make a tuple per
            // entry, and 100k new tuples set off the garbage collector
            // (a third of a 100k set_many's time).
            Ok(d) => {
                held.reserve(d.len());
                for (k, v) in d.iter() {
                    held.push((key_utf8(&k)?, v));
                }
            }
            Err(_) => {
                for p in entries.try_iter()? {
                    let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = p?.extract()?;
                    held.push((key_utf8(&k)?, v));
                }
            }
        }
        let values: Vec<_> = held
            .iter()
            .map(|(_, v)| value_arg(v))
            .collect::<PyResult<_>>()?;
        let refs: Vec<(&str, &[u8])> = held
            .iter()
            .zip(&values)
            .map(|((k, _), v)| Ok((utf8(k.as_bytes())?, v.as_ref())))
            .collect::<PyResult<_>>()?;
        let keys: Vec<&str> = refs.iter().map(|(k, _)| *k).collect();
        crate::run_batch(py, &keys, c.set_many(&refs, t))
    }

    /// Removes `keys`; returns how many were there.
    fn delete_many(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<u64> {
        let (keys, c) = (keys_of(keys)?, self.backend()?);
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        crate::run_batch(py, &refs, c.delete_many(&refs))
    }

    /// Removes every entry of this cache's namespace, and nothing else.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.backend()?;
        run(py, c.clear())
    }

    /// Removes everything in the store, every namespace (Redis FLUSHDB,
    /// memcached flush_all).
    fn clear_all(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.backend()?;
        run(py, c.clear_all())
    }

    /// Counters and the backend's own figures, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.backend()?;
        let s = run(py, c.stats())?;
        let text = serde_json::to_string(&s)
            .map_err(|e| error_of(ErrorClass::Serialization, format!("stats: {e}")))?;
        json_to_py(py, &text)
    }

    /// An iterator over the namespace's live keys, fetched in chunks.
    fn keys(&self, py: Python<'_>) -> PyResult<KeyIter> {
        let c = self.backend()?;
        let stream = run(py, async move { c.keys().await })?;
        Ok(KeyIter {
            state: Mutex::new((Some(stream), VecDeque::new())),
        })
    }

    /// The value under `key`; on a miss, calls `factory()` once among the
    /// concurrent callers of this handle (unicache's single-flight), stores
    /// and returns its value. The factory's exception reaches every waiting
    /// caller and nothing is stored. The factory runs on the caller's
    /// thread (its thread-locals and context variables are the caller's);
    /// it may use this cache, but not call `get_or_set` for the same key.
    /// Ctrl-C interrupts the caller within 0.1 s, whether it runs the
    /// factory or waits: its factory's value is not stored, and a waiting
    /// caller of the same key takes over and runs its own factory.
    #[pyo3(signature = (key, factory, ttl=None))]
    fn get_or_set<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        factory: &Bound<'py, PyAny>,
        ttl: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (k, t, c) = (key_arg(key)?, ttl_arg(ttl)?, self.backend()?);
        let f = factory.clone().unbind();
        let (abort, aborted) = tokio::sync::oneshot::channel();
        let work = c.get_or_set(&k, t, move || call_factory(f, abort));
        let v = crate::block(py, async move {
            let work = std::pin::pin!(work);
            match futures::future::select(work, aborted).await {
                Either::Left((r, _)) => r.map_err(crate::to_py),
                // Interrupted: `work` is dropped here, abandoning the flight.
                Either::Right((Ok(interrupt), _)) => Err(interrupt),
                // The factory finished without an interruption.
                Either::Right((Err(_), work)) => work.await.map_err(crate::to_py),
            }
        })??;
        Ok(PyBytes::new(py, &v))
    }

    /// Deletes every key of this namespace that starts with `prefix`;
    /// returns how many it deleted. Lists the keys (a scan of the
    /// namespace), so not on memcached (`UnsupportedError`).
    fn delete_prefix(&self, py: Python<'_>, prefix: &str) -> PyResult<u64> {
        let c = self.backend()?;
        run(py, async move { c.delete_prefix(prefix).await })
    }

    /// The asyncio face (`unicache_rs.AsyncCache`): starts operation `op`
    /// with `args` on the runtime and returns at once; its outcome
    /// completes the asyncio future `fut` through its loop's `bridge` (`aio.rs`).
    /// `get_or_set`'s `args` are `(key, ttl, start, loop)`, `start(sender)`
    /// the flight's Python half, called on the loop when this call leads.
    #[pyo3(signature = (bridge, fut, op, *args))]
    fn _aio(
        &self,
        py: Python<'_>,
        bridge: PyRef<'_, Bridge>,
        fut: Py<PyAny>,
        op: &str,
        args: &Bound<'_, PyTuple>,
    ) -> PyResult<AioTask> {
        let bridge = &*bridge;
        // Polled first on the loop's thread: single-key calls of an
        // in-process cache (they answer when polled; a batch could hold the
        // loop), every call of a network cache (its poll only sends) but
        // get_or_set, whose flight may call back into Python.
        let quick = if self.inline {
            matches!(op, "get" | "set" | "delete" | "contains")
        } else {
            op != "get_or_set"
        };
        macro_rules! spawn {
            ($work:expr, $convert:expr $(,)?) => {
                crate::aio::spawn(py, bridge, fut, quick, $work, $convert)
            };
        }
        let arg = |i: usize| args.get_item(i);
        let c = if op == "close" {
            match self.inner.write().unwrap_or_else(|p| p.into_inner()).take() {
                Some(c) => c,
                None => return spawn!(async {}, move |py, ()| Ok(none(py))),
            }
        } else {
            self.backend()?
        };
        match op {
            "get" => {
                let k = key_arg(&arg(0)?)?;
                spawn!(async move { c.get(&k).await }, move |py, r| {
                    Ok(match r.map_err(crate::to_py)? {
                        Some(v) => PyBytes::new(py, &v).into_any(),
                        None => none(py),
                    })
                },)
            }
            "set" | "add" => {
                let (k, v) = (key_arg(&arg(0)?)?, value_arg(&arg(1)?)?.into_owned());
                let t = ttl_arg(Some(&arg(2)?))?;
                if op == "set" {
                    spawn!(async move { c.set(&k, &v, t).await }, unit)
                } else {
                    spawn!(async move { c.add(&k, &v, t).await }, bool_of,)
                }
            }
            "compare_and_set" => {
                let k = key_arg(&arg(0)?)?;
                let (old, new) = (
                    value_arg(&arg(1)?)?.into_owned(),
                    value_arg(&arg(2)?)?.into_owned(),
                );
                let t = ttl_arg(Some(&arg(3)?))?;
                let work = async move { c.compare_and_set(&k, &old, &new, t).await };
                spawn!(work, bool_of)
            }
            "delete" => {
                let k = key_arg(&arg(0)?)?;
                spawn!(async move { c.delete(&k).await }, bool_of)
            }
            "contains" => {
                let k = key_arg(&arg(0)?)?;
                spawn!(async move { c.contains(&k).await }, bool_of,)
            }
            "incr" => {
                let (k, d): (String, i64) = (key_arg(&arg(0)?)?, arg(1)?.extract()?);
                spawn!(async move { c.incr(&k, d).await }, i64_of)
            }
            "touch" => {
                let (k, t) = (key_arg(&arg(0)?)?, ttl_arg(Some(&arg(1)?))?);
                spawn!(async move { c.touch(&k, t).await }, bool_of,)
            }
            "persist" => {
                let k = key_arg(&arg(0)?)?;
                spawn!(async move { c.persist(&k).await }, bool_of)
            }
            // unicache_rs.AsyncLock: the library's lock (python/src/lock.rs).
            "lock_acquire" | "lock_release" | "lock_extend" | "lock_locked" => {
                let l = arg(0)?.cast::<crate::lock::Lock>()?.get().get(py)?;
                match op {
                    "lock_acquire" => {
                        let w = crate::lock::wait_of(arg(1)?.extract()?);
                        spawn!(async move { l.acquire_within(w).await }, bool_of)
                    }
                    "lock_release" => spawn!(async move { l.release().await }, bool_of),
                    "lock_extend" => {
                        let t = ttl_arg(Some(&arg(1)?))?;
                        spawn!(async move { l.extend(t).await }, bool_of)
                    }
                    _ => spawn!(async move { l.locked().await }, bool_of),
                }
            }
            "ttl" => {
                let k = key_arg(&arg(0)?)?;
                spawn!(
                    async move { c.ttl(&k).await },
                    move |py, r| match r.map_err(crate::to_py)? {
                        None => Ok(none(py)),
                        Some(t) => Ok(t
                            .map_or(f64::INFINITY, |d| d.as_secs_f64())
                            .into_pyobject(py)?
                            .into_any()),
                    },
                )
            }
            "get_with_ttl" => {
                let k = key_arg(&arg(0)?)?;
                spawn!(
                    async move { c.get_with_ttl(&k).await },
                    move |py, r| match r.map_err(crate::to_py)? {
                        None => Ok(none(py)),
                        Some(v) => {
                            let ttl = v.ttl.map_or(f64::INFINITY, |d| d.as_secs_f64());
                            let t = PyTuple::new(
                                py,
                                [
                                    PyBytes::new(py, &v.value).into_any(),
                                    ttl.into_pyobject(py)?.into_any(),
                                ],
                            )?;
                            Ok(t.into_any())
                        }
                    },
                )
            }
            "len" => spawn!(async move { c.len().await }, u64_of),
            "get_many" => {
                let keys = keys_of(&arg(0)?)?;
                let work = {
                    let keys = keys.clone();
                    async move {
                        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                        c.get_many(&refs).await
                    }
                };
                spawn!(work, move |py, r| {
                    let values = batch(py, r, &keys)?;
                    let out = PyDict::new(py);
                    for (k, v) in keys.iter().zip(values) {
                        if let Some(v) = v {
                            out.set_item(k, PyBytes::new(py, &v))?;
                        }
                    }
                    Ok(out.into_any())
                })
            }
            "set_many" => {
                let entries = arg(0)?;
                let t = ttl_arg(Some(&arg(1)?))?;
                let items = match entries.cast::<PyDict>() {
                    Ok(d) => d.items().into_any(),
                    Err(_) => entries,
                };
                let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
                for p in items.try_iter()? {
                    let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = p?.extract()?;
                    pairs.push((key_arg(&k)?, value_arg(&v)?.into_owned()));
                }
                let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
                let work = async move {
                    let refs: Vec<(&str, &[u8])> = pairs
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_slice()))
                        .collect();
                    c.set_many(&refs, t).await
                };
                spawn!(work, move |py, r| {
                    batch(py, r, &keys)?;
                    Ok(none(py))
                })
            }
            "delete_many" => {
                let keys = keys_of(&arg(0)?)?;
                let work = {
                    let keys = keys.clone();
                    async move {
                        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                        c.delete_many(&refs).await
                    }
                };
                spawn!(work, move |py, r| {
                    Ok(batch(py, r, &keys)?.into_pyobject(py)?.into_any())
                })
            }
            "delete_prefix" => {
                let prefix: String = arg(0)?.extract()?;
                let work = async move { c.delete_prefix(&prefix).await };
                spawn!(work, u64_of)
            }
            "clear" => spawn!(async move { c.clear().await }, unit),
            "clear_all" => spawn!(async move { c.clear_all().await }, unit),
            "close" => spawn!(async move { c.close().await }, unit),
            "stats" => spawn!(async move { c.stats().await }, |py, r| {
                let text = serde_json::to_string(&r.map_err(crate::to_py)?)
                    .map_err(|e| error_of(ErrorClass::Serialization, format!("stats: {e}")))?;
                json_to_py(py, &text)
            }),
            "keys" => {
                let work = async move {
                    let mut stream = c.keys().await?;
                    let mut all = Vec::new();
                    while let Some(k) = stream.next().await {
                        all.push(k?);
                    }
                    Ok::<_, unicache::Error>(all)
                };
                spawn!(work, |py, r| {
                    Ok(r.map_err(crate::to_py)?.into_pyobject(py)?.into_any())
                })
            }
            "get_or_set" => {
                let (k, t) = (key_arg(&arg(0)?)?, ttl_arg(Some(&arg(1)?))?);
                let start = arg(2)?.unbind();
                let event_loop = arg(3)?.unbind();
                let work = async move {
                    c.get_or_set(&k, t, move || crate::aio::loop_factory(event_loop, start))
                        .await
                };
                spawn!(work, move |py, r| {
                    Ok(PyBytes::new(py, &r.map_err(crate::to_py)?).into_any())
                })
            }
            _ => Err(PyTypeError::new_err(format!("no asyncio operation {op:?}"))),
        }
    }

    /// Flushes and releases the cache; later calls raise `ClosedError`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.inner.write().unwrap_or_else(|p| p.into_inner()).take();
        match taken {
            Some(c) => run(py, async move { c.close().await }),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // An unclosed handle is closed in the background (flushes the file log).
        let taken = self.inner.get_mut().ok().and_then(|c| c.take());
        if self.pid.load(Ordering::Acquire) != std::process::id() {
            // Inherited through fork() and never used here: the parent's.
            std::mem::forget(taken);
            return;
        }
        if let (Some(c), Ok(rt)) = (taken, crate::runtime()) {
            rt.spawn(async move {
                let _ = c.close().await;
            });
        }
    }
}

/// Iterator returned by `Cache.keys()`.
#[pyclass(module = "unicache")]
pub struct KeyIter {
    state: Mutex<(Option<KeyStream>, VecDeque<String>)>,
}

#[pymethods]
impl KeyIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        // try_lock: blocking on it with the GIL held could deadlock with a
        // thread that holds it while waiting for the GIL.
        let Ok(mut st) = self.state.try_lock() else {
            return Err(error_of(
                ErrorClass::Error,
                "keys(): the iterator is in use by another thread".into(),
            ));
        };
        if st.1.is_empty() {
            let Some(mut stream) = st.0.take() else {
                return Ok(None);
            };
            let (chunk, more) = run(py, async move {
                let mut chunk = Vec::new();
                while chunk.len() < KEY_CHUNK {
                    match stream.next().await {
                        Some(k) => chunk.push(k?),
                        None => return Ok((chunk, None)),
                    }
                }
                Ok((chunk, Some(stream)))
            })?;
            st.0 = more;
            st.1.extend(chunk);
        }
        Ok(st.1.pop_front())
    }
}
