//! The asyncio bridge behind `unicache_rs.AsyncCache`: a call spawns its
//! Rust future on the shared runtime and returns at once; when the future
//! finishes, a runtime worker takes the GIL just long enough to schedule
//! `_settle(future, ok, value)` on the caller's event loop with
//! `loop.call_soon_threadsafe`. No Python thread waits for the backend.
//! Cancelling the asyncio future's awaiter calls [`AioTask::cancel`], which
//! aborts the Rust future (dropping it cancels the backend call).

use std::future::Future;
use std::sync::Mutex;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use unicache::{FactoryError, Fill};

/// The Rust half of one asyncio call: `cancel()` aborts it.
#[pyclass(module = "unicache_rs._unicache", frozen)]
pub struct AioTask {
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl AioTask {
    /// Aborts the Rust future (a no-op once it finished).
    fn cancel(&self) {
        self.abort.abort();
    }
}

/// `unicache_rs.aio._settle`, looked up once.
fn settle(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    static SETTLE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    SETTLE.get_or_try_init(py, || {
        Ok(py.import("unicache_rs.aio")?.getattr("_settle")?.unbind())
    })
}

/// Spawns `work` on the runtime; its outcome, converted by `convert` with
/// the GIL held, completes the asyncio future `fut` on `event_loop`.
pub(crate) fn spawn<T, W, C>(
    event_loop: Py<PyAny>,
    fut: Py<PyAny>,
    work: W,
    convert: C,
) -> PyResult<AioTask>
where
    T: Send + 'static,
    W: Future<Output = T> + Send + 'static,
    C: for<'py> FnOnce(Python<'py>, T) -> PyResult<Bound<'py, PyAny>> + Send + 'static,
{
    let rt = crate::runtime()?;
    let handle = rt.spawn(async move {
        let out = work.await;
        Python::attach(|py| {
            let (ok, value) = match convert(py, out) {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_bound(py).into_any()),
            };
            let scheduled = settle(py).and_then(|s| {
                event_loop
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (s, fut, ok, value))
            });
            // A closed loop: no one is waiting any more.
            drop(scheduled);
        })
    });
    Ok(AioTask {
        abort: handle.abort_handle(),
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
