//! `unicache_rs.write(source, caches=[...], **options)`: the Rust streaming
//! writer (`unicache::writer`) over a path, a file object or an iterable of
//! dicts, returning the summary as a dict.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use unicache::records::{InputFormat, KeyPolicy};
use unicache::writer::{Progress, Target, WriteOptions, write_records};

use crate::cache::{Cache, open};
use crate::{ErrorClass, error_of, json_to_py, run, ttl_arg};

/// Reads a Python file object (binary or text) from the writer's reader thread.
struct PyFileReader {
    file: Py<PyAny>,
    pending: Vec<u8>,
}

impl Read for PyFileReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            let chunk = Python::attach(|py| -> PyResult<Vec<u8>> {
                let data = self
                    .file
                    .bind(py)
                    .call_method1("read", (buf.len().max(8192),))?;
                if let Ok(s) = data.cast::<PyString>() {
                    return Ok(s.to_cow()?.into_owned().into_bytes());
                }
                Ok(data.cast::<PyBytes>()?.as_bytes().to_vec())
            })
            .map_err(|e| std::io::Error::other(format!("reading the file object: {e}")))?;
            self.pending = chunk;
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// Turns a Python iterable of records into JSON Lines, one `json.dumps` each.
struct PyIterReader {
    iter: Py<PyAny>,
    dumps: Py<PyAny>,
    pending: Vec<u8>,
    done: bool,
}

impl PyIterReader {
    /// Encodes records until about 64 KiB are pending or the iterable ends.
    fn refill(&mut self) -> std::io::Result<()> {
        Python::attach(|py| -> PyResult<()> {
            let it = self.iter.bind(py);
            while self.pending.len() < 64 * 1024 {
                let Some(item) = it.try_iter()?.next() else {
                    self.done = true;
                    return Ok(());
                };
                let line = self.dumps.bind(py).call1((item?,))?;
                let text = line.cast::<PyString>()?.to_cow()?;
                self.pending.extend_from_slice(text.as_bytes());
                self.pending.push(b'\n');
            }
            Ok(())
        })
        .map_err(|e| std::io::Error::other(format!("reading the records: {e}")))
    }
}

impl Read for PyIterReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() && !self.done {
            self.refill()?;
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// The input as a reader, its name, the format and, for the seed's config
/// file read without `caches`, its `backends`.
type Source = (
    Box<dyn Read + Send>,
    String,
    InputFormat,
    Option<Vec<String>>,
);

fn open_source(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    format: InputFormat,
    want_backends: bool,
) -> PyResult<Source> {
    let is_path = source.is_instance_of::<PyString>() || source.hasattr("__fspath__")?;
    if is_path {
        let path: String = py
            .import("os")?
            .call_method1("fspath", (source,))?
            .extract()?;
        let mut file = File::open(Path::new(&path)).map_err(|e| {
            error_of(
                ErrorClass::NotFound,
                format!("cannot open input {path}: {e}"),
            )
        })?;
        if !want_backends {
            return Ok((Box::new(file), path, format, None));
        }
        let (found, backends) = unicache::records::prepare_seekable(&mut file, &path, format)
            .map_err(|e| error_of(ErrorClass::InvalidInput, e.message))?;
        return Ok((Box::new(file), path, found, backends));
    }
    if source.hasattr("read")? {
        let name = match source.getattr("name") {
            Ok(n) if n.is_instance_of::<PyString>() => n.extract()?,
            _ => "<file object>".to_string(),
        };
        let reader = PyFileReader {
            file: source.clone().unbind(),
            pending: Vec::new(),
        };
        return Ok((Box::new(reader), name, format, None));
    }
    let reader = PyIterReader {
        iter: source.try_iter()?.into_any().unbind(),
        dumps: py.import("json")?.getattr("dumps")?.unbind(),
        pending: Vec::new(),
        done: false,
    };
    let format = if format == InputFormat::Auto {
        InputFormat::Jsonl
    } else {
        format
    };
    Ok((Box::new(reader), "<iterable>".to_string(), format, None))
}

/// Runs the Rust streaming writer. `source`: a path, a file object (binary
/// or text) or an iterable of dicts. `caches`: URLs, bare names (`sqlite`,
/// `file`... resolved under `dir`) or `unicache_rs.Cache` objects; without
/// it, the seed config file's `backends`. Returns the summary dict; a run
/// that stopped early raises `unicache_rs.WriteError` carrying it as `.summary`.
#[pyfunction]
#[pyo3(signature = (source, caches=None, *, key_field="key", missing_key="skip", ttl=None,
    batch_size=1000, retries=8, format="auto", rejects=None, give_up_after=30.0, dir="."))]
#[allow(clippy::too_many_arguments)]
pub fn write<'py>(
    py: Python<'py>,
    source: &Bound<'py, PyAny>,
    caches: Option<&Bound<'py, PyAny>>,
    key_field: &str,
    missing_key: &str,
    ttl: Option<&Bound<'py, PyAny>>,
    batch_size: usize,
    retries: u32,
    format: &str,
    rejects: Option<std::path::PathBuf>,
    give_up_after: f64,
    dir: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let bad = |m: String| error_of(ErrorClass::InvalidInput, m);
    let mut options = WriteOptions::default();
    options.batch_size = batch_size.max(1);
    options.ttl = ttl_arg(ttl)?;
    options.retries = retries;
    options.keys = KeyPolicy {
        field: key_field.to_string(),
        missing: missing_key.parse().map_err(bad)?,
    };
    options.rejects = rejects;
    options.give_up_after = std::time::Duration::try_from_secs_f64(give_up_after)
        .map_err(|_| bad(format!("invalid give_up_after {give_up_after}")))?;
    let format: InputFormat = format.parse().map_err(bad)?;
    let (input, name, format, backends) = open_source(py, source, format, caches.is_none())?;
    options.format = format;

    let (targets, owned) = targets(py, caches, backends, Path::new(dir))?;
    let report = run(py, async {
        let report = write_records(
            input,
            &name,
            &targets,
            &options,
            Arc::new(Progress::default()),
        )
        .await;
        for t in &targets[targets.len() - owned..] {
            let _ = t.cache.close().await;
        }
        report
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // Interrupted (Ctrl-C) before it closed the caches it opened:
            // close them now, so a file log keeps what was written.
            for t in &targets[targets.len() - owned..] {
                let _ = run(py, async { t.cache.close().await });
            }
            return Err(e);
        }
    };
    let text = serde_json::to_string(&report)
        .map_err(|e| error_of(ErrorClass::Serialization, format!("summary: {e}")))?;
    let summary = json_to_py(py, &text)?;
    if let Some(e) = &report.error {
        let err = error_of(ErrorClass::Write, e.clone());
        err.value(py).setattr("summary", &summary)?;
        return Err(err);
    }
    Ok(summary)
}

/// The writer's targets, and how many of them (at the end) it opened itself.
fn targets(
    py: Python<'_>,
    caches: Option<&Bound<'_, PyAny>>,
    backends: Option<Vec<String>>,
    dir: &Path,
) -> PyResult<(Vec<Target>, usize)> {
    let mut given = Vec::new();
    let mut names = Vec::new();
    match caches {
        Some(list) => {
            for c in list.try_iter()? {
                let c = c?;
                if let Ok(cache) = c.cast::<Cache>() {
                    let cache = cache.get();
                    given.push(Target {
                        name: cache.redacted_url().to_string(),
                        cache: cache.backend()?.into(),
                    });
                } else {
                    names.push(c.extract::<String>()?);
                }
            }
        }
        None => names = backends.unwrap_or_default(),
    }
    if given.is_empty() && names.is_empty() {
        return Err(error_of(
            ErrorClass::InvalidInput,
            "write: no caches given (caches=[...] or the seed config's \"backends\")".into(),
        ));
    }
    let owned = names.len();
    for n in names {
        let url = unicache::open::resolve_name(&n, dir).map_err(crate::to_py)?;
        let cache = open(py, &url, unicache::CacheOptions::new())?.0.into();
        given.push(Target {
            name: unicache::open::redact(&n),
            cache,
        });
    }
    Ok((given, owned))
}
