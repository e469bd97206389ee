//! The asyncio bridge behind `unicache_rs.AsyncCache`. A call spawns its
//! Rust future on the shared runtime and returns at once. Each event loop
//! has one [`Bridge`]: a queue of finished calls and a socket pair whose
//! read end the loop watches (`loop.add_reader`). A runtime worker that
//! finishes a call pushes its completion on the queue and, when the queue
//! was empty, writes one byte: it never takes the GIL. The loop then runs
//! [`Bridge::drain`], which converts every queued result to Python and
//! completes its asyncio future, so a burst of completions costs one
//! wake-up. No Python thread waits for the backend. Cancelling the awaiter
//! calls [`AioTask::cancel`], which aborts the Rust future (dropping it
//! cancels the backend call).

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use pyo3::prelude::*;

use unicache::{FactoryError, Fill};

/// A finished call, run on the loop's thread with the GIL.
type Completion = Box<dyn FnOnce(Python<'_>) + Send>;

/// What the runtime shares with one event loop.
pub(crate) struct Shared {
    queue: Mutex<Vec<Completion>>,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    /// The loop cannot watch a file descriptor (`add_reader` raised
    /// `NotImplementedError`): wake it with `call_soon_threadsafe(drain)`
    /// instead, this bound method (which holds the loop: not the usual
    /// case, where the bridge holds no reference to its loop).
    call_soon: std::sync::atomic::AtomicBool,
    wake: Mutex<Option<(Py<PyAny>, Py<PyAny>)>>,
}

impl Shared {
    /// Queues `done`; wakes the loop when the queue was empty (otherwise a
    /// wake-up is already on its way and the drain will find this too).
    fn push(&self, done: Completion) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.push(done);
            q.len() == 1
        };
        if !was_empty {
            return;
        }
        if self.call_soon.load(std::sync::atomic::Ordering::Acquire) {
            Python::attach(|py| {
                let wake = self.wake.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((call_soon, drain)) = wake.as_ref() {
                    // A closed loop: no one is waiting any more.
                    let _ = call_soon.bind(py).call1((drain,));
                }
            });
        } else {
            // WouldBlock: the socket holds unread bytes, so a wake-up is pending.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }
}

/// One event loop's bridge (see the module's documentation).
#[pyclass(module = "unicache_rs._unicache", frozen)]
pub struct Bridge {
    pub(crate) shared: Arc<Shared>,
}

#[pymethods]
impl Bridge {
    #[new]
    fn new() -> PyResult<Self> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(Bridge {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                wake_tx,
                wake_rx,
                call_soon: Default::default(),
                wake: Mutex::new(None),
            }),
        })
    }

    /// The descriptor the loop watches.
    fn fileno(&self) -> i32 {
        self.shared.wake_rx.as_raw_fd()
    }

    /// Wakes the loop with `call_soon_threadsafe(drain)` instead of the
    /// descriptor (loops without `add_reader`).
    fn use_call_soon(&self, call_soon_threadsafe: Py<PyAny>, drain: Py<PyAny>) {
        *self.shared.wake.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((call_soon_threadsafe, drain));
        self.shared
            .call_soon
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Completes every finished call's asyncio future (on the loop).
    fn drain(&self, py: Python<'_>) {
        // The wake-up bytes first, then the queue: a completion pushed
        // after the swap finds the queue empty and writes a new byte.
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.shared.wake_rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        let done =
            std::mem::take(&mut *self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for d in done {
            d(py);
        }
    }
}

/// The Rust half of one asyncio call: `cancel()` aborts it.
#[pyclass(module = "unicache_rs._unicache", frozen)]
pub struct AioTask {
    abort: Option<tokio::task::AbortHandle>,
}

#[pymethods]
impl AioTask {
    /// Aborts the Rust future (a no-op once it finished).
    fn cancel(&self) {
        if let Some(a) = &self.abort {
            a.abort();
        }
    }
}

/// Completes the asyncio future `fut` with `out` (a value or the
/// exception to raise), unless its awaiter was cancelled meanwhile.
fn settle(py: Python<'_>, fut: &Py<PyAny>, out: PyResult<Bound<'_, PyAny>>) {
    let fut = fut.bind(py);
    let r = (|| -> PyResult<()> {
        if fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        match out {
            Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,))?,
            Err(e) => {
                let cancelled = py.import("asyncio")?.getattr("CancelledError")?;
                if e.is_instance(py, &cancelled) {
                    fut.call_method0("cancel")?
                } else {
                    fut.call_method1("set_exception", (e.into_value(py),))?
                }
            }
        };
        Ok(())
    })();
    if let Err(e) = r {
        e.write_unraisable(py, Some(fut));
    }
}

/// Runs `work` and completes the asyncio future `fut` with its outcome,
/// converted by `convert` on the loop. With `poll_here`, the first poll
/// happens here, on the loop's thread: an in-process cache's single-key
/// call (memory://) usually answers in it with no thread hop, and a network
/// call sends its request at once instead of after a runtime worker wakes
/// up to start it (its reply is then awaited on the runtime, which polls it
/// again at once, so the no-op waker of this first poll is never the one
/// relied on).
pub(crate) fn spawn<T, W, C>(
    py: Python<'_>,
    bridge: &Bridge,
    fut: Py<PyAny>,
    poll_here: bool,
    work: W,
    convert: C,
) -> PyResult<AioTask>
where
    T: Send + 'static,
    W: Future<Output = T> + Send + 'static,
    C: for<'py> FnOnce(Python<'py>, T) -> PyResult<Bound<'py, PyAny>> + Send + 'static,
{
    let rt = crate::runtime()?;
    let mut work = Box::pin(work);
    if poll_here {
        let _in_runtime = rt.enter();
        if let Some(out) = (&mut work).now_or_never() {
            settle(py, &fut, convert(py, out));
            return Ok(AioTask { abort: None });
        }
    }
    let shared = bridge.shared.clone();
    let handle = rt.spawn(async move {
        let out = work.await;
        shared.push(Box::new(move |py| settle(py, &fut, convert(py, out))));
    });
    Ok(AioTask {
        abort: Some(handle.abort_handle()),
    })
}

/// The channel a coroutine factory's outcome comes back on: Python calls
/// it once, `(True, value)` or `(False, exception)`.
#[pyclass(module = "unicache_rs._unicache", frozen)]
pub struct FillSender {
    tx: Mutex<Option<tokio::sync::oneshot::Sender<PyResult<Bytes>>>>,
}

#[pymethods]
impl FillSender {
    fn __call__(&self, ok: bool, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let out = if ok {
            crate::value_arg(value).map(|v| Bytes::from(v.into_owned()))
        } else {
            Err(PyErr::from_value(value.clone()))
        };
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(out);
        }
        Ok(())
    }
}

/// A `get_or_set` factory for the engine that asks the event loop to run
/// the flight's Python `start(sender)` (which creates the factory's task)
/// and waits for its outcome. Called only when this call leads the
/// engine's flight.
pub(crate) async fn loop_factory(
    event_loop: Py<PyAny>,
    start: Py<PyAny>,
) -> Result<Fill, FactoryError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sender = FillSender {
        tx: Mutex::new(Some(tx)),
    };
    Python::attach(|py| -> PyResult<()> {
        let sender = Py::new(py, sender)?;
        event_loop
            .bind(py)
            .call_method1("call_soon_threadsafe", (start, sender))?;
        Ok(())
    })
    .map_err(|e| -> FactoryError { Box::new(e) })?;
    match rx.await {
        Ok(Ok(b)) => Ok(Fill::Cache(b)),
        // The PyErr travels as the error's source: to_py raises it again.
        Ok(Err(e)) => Err(Box::new(e)),
        // The sender was dropped unused (the loop closed): never stored.
        Err(_) => std::future::pending().await,
    }
}
