//! Python bindings of unicache: the extension module `unicache_rs._unicache`.
//!
//! Every backend call runs on one shared tokio runtime with the GIL released
//! (`run`), so Python threads overlap their I/O. Errors become the
//! exceptions of `unicache_rs.errors` (`to_py`); nothing panics across the
//! boundary.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

mod aio;
mod cache;
mod lock;
mod write;

/// The runtime every call runs on; its workers drive the network backends'
/// connections while callers block (GIL released) on their own threads.
/// A process forked after it started (gunicorn `--preload`, multiprocessing's
/// `fork`) has none of its threads, so it gets a runtime of its own (the
/// parent's is left alone: dropping it would wait for threads that are not
/// there).
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut rt = RT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, rt)) = *rt
        && owner == pid
    {
        return Ok(rt);
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get().clamp(2, 4))
        .unwrap_or(2);
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(WORKER_NAME)
        .enable_all()
        .build()
        .map_err(|e| {
            error_of(
                ErrorClass::Error,
                format!("cannot start the unicache runtime: {e}"),
            )
        })?;
    let built: &'static tokio::runtime::Runtime = Box::leak(Box::new(built));
    *rt = Some((pid, built));
    Ok(built)
}

/// Runs `fut` to completion with the GIL released and maps its error.
/// Ctrl-C (any signal handler's exception) ends the wait: see [`block`].
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    fut: impl Future<Output = unicache::Result<T>> + Send,
) -> PyResult<T> {
    block(py, fut)?.map_err(to_py)
}

/// [`run`] for a batch over `keys`: a `PartialBatchError` says which keys
/// failed (in its message, and as `keys` and `failures`).
pub(crate) fn run_batch<T: Send>(
    py: Python<'_>,
    keys: &[&str],
    fut: impl Future<Output = unicache::Result<T>> + Send,
) -> PyResult<T> {
    match block(py, fut)? {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == unicache::ErrorKind::PartialBatch => partial_to_py(py, &e, keys),
        Err(e) => Err(to_py(e)),
    }
}

/// Keys named in a `PartialBatchError`'s message; the rest are counted.
const SHOWN_KEYS: usize = 5;

/// A `PartialBatchError` for `e` over the batch `keys`: `keys` lists the
/// failed keys in batch order, `failures` maps each to its own exception.
pub(crate) fn partial_to_py<T>(py: Python<'_>, e: &unicache::Error, keys: &[&str]) -> PyResult<T> {
    let failed: Vec<(&str, &unicache::Error)> = e
        .failures()
        .iter()
        .filter_map(|(i, err)| keys.get(*i).map(|k| (*k, err)))
        .collect();
    let mut message = format!("{e}: ");
    for (n, (k, err)) in failed.iter().take(SHOWN_KEYS).enumerate() {
        let sep = if n == 0 { "" } else { ", " };
        message.push_str(&format!("{sep}{k:?} ({err})"));
    }
    if failed.len() > SHOWN_KEYS {
        message.push_str(&format!(" and {} more", failed.len() - SHOWN_KEYS));
    }
    let failures = pyo3::types::PyDict::new(py);
    for (k, err) in &failed {
        let one = error_of(ErrorClass::of(err.kind()), err.to_string());
        failures.set_item(*k, one.value(py))?;
    }
    let names: Vec<&str> = failed.iter().map(|(k, _)| *k).collect();
    let exc = error_of(ErrorClass::PartialBatch, message);
    exc.value(py).setattr("keys", names)?;
    exc.value(py).setattr("failures", failures)?;
    Err(exc)
}

/// How often a caller blocked in [`block`] lets Python run its signal
/// handlers: Ctrl-C reaches Python within this (plus the handler's time).
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Runs `fut` to completion on the runtime with the GIL released. On
/// Python's main thread, every [`SIGNAL_POLL`] it takes the GIL to run
/// Python's pending signal handlers (no other thread runs them); when one raises
/// (`KeyboardInterrupt`), `fut` is dropped, which cancels the operation
/// (a `get_or_set` leader's flight is handed over to a waiter), and the
/// exception is returned.
pub(crate) fn block<T: Send>(py: Python<'_>, fut: impl Future<Output = T> + Send) -> PyResult<T> {
    let rt = runtime()?;
    if IN_RUN.get() {
        // A nested block_on would panic.
        return Err(error_of(
            ErrorClass::Error,
            "unicache: a blocking call from inside a unicache call".into(),
        ));
    }
    let signals = on_main_thread(py);
    let r = py.detach(|| {
        IN_RUN.set(true);
        // A panic (a bug) becomes an exception, never an abort.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                if signals {
                    interruptible(fut).await
                } else {
                    Ok(fut.await)
                }
            })
        }));
        IN_RUN.set(false);
        r
    });
    match r {
        Ok(r) => r,
        Err(_) => Err(error_of(
            ErrorClass::Error,
            "unicache: internal error (a panic)".into(),
        )),
    }
}

/// Whether this is Python's main thread, the one that runs signal handlers
/// (elsewhere `check_signals` does nothing, so waits there arm no timer).
/// Asked once per thread and process (a fork makes the forking thread the
/// child's main thread).
fn on_main_thread(py: Python<'_>) -> bool {
    thread_local! {
        static MAIN: std::cell::Cell<Option<(u32, bool)>> = const { std::cell::Cell::new(None) };
    }
    let pid = std::process::id();
    if let Some((owner, main)) = MAIN.get()
        && owner == pid
    {
        return main;
    }
    let ask = || -> PyResult<bool> {
        let threading = py.import("threading")?;
        let main = threading.call_method0("main_thread")?.getattr("ident")?;
        main.eq(threading.call_method0("get_ident")?)
    };
    // When in doubt, poll: the cost is a timer per wait.
    let main = ask().unwrap_or(true);
    MAIN.set(Some((pid, main)));
    main
}

/// `fut`'s output, or the exception a Python signal handler raised while
/// it waited (`fut` is then dropped). A call that finishes on its first
/// poll never arms the timer.
async fn interruptible<F: Future>(fut: F) -> PyResult<F::Output> {
    use futures::future::{Either, select};
    let mut fut = std::pin::pin!(fut);
    loop {
        let tick = std::pin::pin!(tokio::time::sleep(SIGNAL_POLL));
        match select(fut.as_mut(), tick).await {
            Either::Left((out, _)) => return Ok(out),
            Either::Right(((), _)) => Python::attach(|py| py.check_signals())?,
        }
    }
}

/// Runs `f` (Python code: a `get_or_set` factory) on this thread from
/// inside [`block`]: outside the runtime's context, so `f` may call the
/// cache again (a nested [`block`]).
pub(crate) fn call_back<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(|| {
        let was = IN_RUN.replace(false);
        let r = f();
        IN_RUN.set(was);
        r
    })
}

/// The runtime's worker threads' name.
const WORKER_NAME: &str = "unicache-py";

thread_local! {
    /// Set while this thread blocks in [`run`].
    static IN_RUN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Exception classes of `unicache_rs.errors`, by the Rust error's kind.
#[derive(Clone, Copy)]
pub(crate) enum ErrorClass {
    Error,
    InvalidUrl,
    Unsupported,
    InvalidInput,
    ValueTooLarge,
    Io,
    NotFound,
    Corrupt,
    Connection,
    Timeout,
    Backend,
    Serialization,
    PartialBatch,
    Closed,
    Write,
}

impl ErrorClass {
    fn of(kind: unicache::ErrorKind) -> Self {
        use unicache::ErrorKind as K;
        match kind {
            K::InvalidUrl | K::UnknownBackend => ErrorClass::InvalidUrl,
            K::FeatureDisabled | K::Unsupported => ErrorClass::Unsupported,
            K::InvalidInput => ErrorClass::InvalidInput,
            K::ValueTooLarge => ErrorClass::ValueTooLarge,
            K::Io => ErrorClass::Io,
            K::NotFound => ErrorClass::NotFound,
            K::Corrupt => ErrorClass::Corrupt,
            K::Connection => ErrorClass::Connection,
            K::Timeout => ErrorClass::Timeout,
            K::Backend => ErrorClass::Backend,
            K::Serialization => ErrorClass::Serialization,
            K::PartialBatch => ErrorClass::PartialBatch,
            K::Factory => ErrorClass::Error,
            _ => ErrorClass::Error,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ErrorClass::Error => "Error",
            ErrorClass::InvalidUrl => "InvalidUrlError",
            ErrorClass::Unsupported => "UnsupportedError",
            ErrorClass::InvalidInput => "InvalidInputError",
            ErrorClass::ValueTooLarge => "ValueTooLargeError",
            ErrorClass::Io => "IoError",
            ErrorClass::NotFound => "NotFoundError",
            ErrorClass::Corrupt => "CorruptError",
            ErrorClass::Connection => "ConnectionError",
            ErrorClass::Timeout => "TimeoutError",
            ErrorClass::Backend => "BackendError",
            ErrorClass::Serialization => "SerializationError",
            ErrorClass::PartialBatch => "PartialBatchError",
            ErrorClass::Closed => "ClosedError",
            ErrorClass::Write => "WriteError",
        }
    }
}

/// A `unicache_rs.errors` exception of `class` with `message`.
pub(crate) fn error_of(class: ErrorClass, message: String) -> PyErr {
    Python::attach(|py| {
        match py
            .import("unicache_rs.errors")
            .and_then(|m| m.getattr(class.name()))
        {
            Ok(t) => PyErr::from_type(t.cast_into().expect("exception type"), message),
            Err(e) => e,
        }
    })
}

/// The Python exception for a unicache error: its class by kind, the Rust
/// message (one line, passwords redacted by the library).
/// A Python exception raised by a `get_or_set` factory comes back as the
/// error's source and is raised again as it was.
pub(crate) fn to_py(e: unicache::Error) -> PyErr {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(py_err) = s.downcast_ref::<PyErr>() {
            return Python::attach(|py| py_err.clone_ref(py));
        }
        source = s.source();
    }
    error_of(ErrorClass::of(e.kind()), e.to_string())
}

/// A TTL argument: seconds (int or float) or a `datetime.timedelta`.
pub(crate) fn ttl_arg(ttl: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    match ttl {
        Some(t) if !t.is_none() => seconds_arg("ttl", t, "").map(Some),
        _ => Ok(None),
    }
}

/// A duration argument called `name`: seconds (int or float) or a
/// `datetime.timedelta`; `more` names further forms the caller takes.
pub(crate) fn seconds_arg(name: &str, t: &Bound<'_, PyAny>, more: &str) -> PyResult<Duration> {
    let secs: f64 = match t.extract::<f64>() {
        Ok(s) => s,
        Err(_) if t.hasattr("total_seconds")? => t.call_method0("total_seconds")?.extract()?,
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "{name} must be seconds (int or float) or a timedelta{more}, not {}",
                t.get_type().name()?
            )));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| {
        error_of(
            ErrorClass::InvalidInput,
            format!("invalid {name} {secs}: must be a positive number of seconds"),
        )
    })
}

/// A value argument as bytes: `bytes` as is (borrowed), `str` as UTF-8,
/// `bytearray` and `memoryview` copied.
pub(crate) fn value_arg<'a>(v: &'a Bound<'_, PyAny>) -> PyResult<std::borrow::Cow<'a, [u8]>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(std::borrow::Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(std::borrow::Cow::Owned(
            s.to_cow()?.into_owned().into_bytes(),
        ));
    }
    let name = v.get_type().name()?;
    if name == "bytearray" || name == "memoryview" {
        let b = v.py().get_type::<PyBytes>().call1((v,))?;
        return Ok(std::borrow::Cow::Owned(
            b.cast::<PyBytes>()?.as_bytes().to_vec(),
        ));
    }
    Err(PyTypeError::new_err(format!(
        "a cache value must be bytes or str, not {name}"
    )))
}

/// A key argument: a `str`.
pub(crate) fn key_arg(k: &Bound<'_, PyAny>) -> PyResult<String> {
    let b = key_utf8(k)?;
    utf8(b.as_bytes()).map(str::to_owned)
}

/// A key argument (a `str`) as its UTF-8 `bytes`, to borrow from.
pub(crate) fn key_utf8<'py>(k: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    match k.cast::<PyString>() {
        Ok(s) => s.encode_utf8(),
        Err(_) => Err(PyTypeError::new_err(format!(
            "a cache key must be str, not {}",
            k.get_type().name()?
        ))),
    }
}

/// `bytes` from [`key_utf8`] as `&str` (CPython's encoder wrote valid UTF-8).
pub(crate) fn utf8(b: &[u8]) -> PyResult<&str> {
    std::str::from_utf8(b).map_err(|e| PyTypeError::new_err(format!("a cache key: {e}")))
}

/// Converts a JSON text to Python objects with the `json` module.
pub(crate) fn json_to_py<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}

#[pymodule]
fn _unicache(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<cache::Cache>()?;
    m.add_class::<cache::KeyIter>()?;
    m.add_class::<lock::Lock>()?;
    m.add_class::<aio::AioTask>()?;
    m.add_class::<aio::Bridge>()?;
    m.add_class::<aio::FillSender>()?;
    m.add_function(wrap_pyfunction!(write::write, m)?)?;
    m.add_function(wrap_pyfunction!(path_url_body, m)?)?;
    m.add_function(wrap_pyfunction!(_before_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork, m)?)?;
    Ok(())
}

/// The body of a `sqlite:`/`file:` URL for a local path (`%`, `?`, `#` escaped).
/// `os.register_at_fork(before=...)`: keeps the SQLite upkeep threads out
/// of SQLite across the fork, so that the child finds none of SQLite's
/// mutexes held by a thread it does not have.
#[pyfunction]
fn _before_fork(py: Python<'_>) {
    py.detach(unicache::backends::sqlite::prepare_fork);
}

/// `os.register_at_fork(after_in_parent=..., after_in_child=...)`.
#[pyfunction]
fn _after_fork() {
    unicache::backends::sqlite::after_fork();
}

#[pyfunction]
fn path_url_body(path: std::path::PathBuf) -> String {
    unicache::url::path_to_url_body(&path)
}
