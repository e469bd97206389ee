//! The bulk writer: streams records from an input into several caches at once.
//!
//! One reader thread parses and keys records into batches; every batch is
//! shared (`Arc`) with one lane per target, each an async task calling
//! `set_many`. Queues are bounded, so memory stays at a few batches per lane
//! whatever the input size. Transient failures (connection, timeout) are
//! retried with backoff; what still fails is counted per target and per
//! record. Every record read ends up written, skipped or failed: never lost
//! without a word. A target that has not taken a batch for
//! `give_up_after` is treated as down: its remaining records fail at once,
//! so a frozen server cannot stretch a run to hours.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::cache::Cache;
use crate::error::Error;
use crate::records::{
    InputError, InputFormat, Item, KeyPolicy, Position, Record, Rejected, read_records, sniff,
};

/// How a bulk write runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Records per `set_many` call.
    pub batch_size: usize,
    /// TTL for every record (`None`: each cache's default).
    pub ttl: Option<Duration>,
    /// Attempts after the first for a batch that failed transiently.
    pub retries: u32,
    /// Longest a single `set_many` may take before it counts as timed out.
    pub op_timeout: Duration,
    /// Batches queued per target before the reader waits.
    pub queue_depth: usize,
    /// Input layout.
    pub format: InputFormat,
    /// Keying.
    pub keys: KeyPolicy,
    /// Where rejected and failed records are written as JSON Lines (an
    /// [`OutputFile`]: mode 0600, replaced only at the end of the run).
    pub rejects: Option<PathBuf>,
    /// How long a target may go without a successful batch (while its
    /// batches keep failing transiently) before it is treated as down and
    /// its remaining records fail at once with the reason.
    pub give_up_after: Duration,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            batch_size: 1000,
            ttl: None,
            retries: 8,
            op_timeout: Duration::from_secs(60),
            queue_depth: 8,
            format: InputFormat::Auto,
            keys: KeyPolicy::default(),
            rejects: None,
            give_up_after: Duration::from_secs(30),
        }
    }
}

/// A cache to write to, with the name the user gave it.
#[derive(Debug, Clone)]
pub struct Target {
    /// As given (a bare name like `sqlite`, or a URL); never holds a password.
    pub name: String,
    /// The opened cache.
    pub cache: Arc<dyn Cache>,
}

/// What happened on one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetReport {
    /// Name as given.
    pub name: String,
    /// Backend kind.
    pub backend: String,
    /// Redacted endpoint.
    pub url: String,
    /// Records stored.
    pub written: u64,
    /// Records that could not be stored.
    pub failed: u64,
    /// Batch attempts repeated after a transient failure.
    pub retries: u64,
    /// Seconds this target took.
    pub duration_seconds: f64,
    /// The first few distinct errors.
    pub errors: Vec<String>,
}

/// The summary of a bulk write; serializes to the CLI's summary JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteReport {
    /// Records stored on every target (the seed's field).
    pub records_written: u64,
    /// Target names (the seed's field).
    pub backends_used: Vec<String>,
    /// Records read from the input.
    pub records_read: u64,
    /// Records left out (no usable key, not an object, malformed line).
    pub records_skipped: u64,
    /// Keyed records that failed on at least one target.
    pub records_failed: u64,
    /// Per target.
    pub targets: Vec<TargetReport>,
    /// The first skipped or failed records, with where and why (the same
    /// shape as the lines of the rejects file).
    pub rejects: Vec<RejectEntry>,
    /// Skipped or failed records left out of `rejects` (it lists the first 20).
    pub rejects_omitted: u64,
    /// Where every reject is, when `rejects_omitted` is not zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_note: Option<String>,
    /// Input source and detected format.
    pub input: InputSummary,
    /// Wall time.
    pub duration_seconds: f64,
    /// Records read per second.
    pub records_per_second: f64,
    /// A fatal input error, if the input could not be read to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where the records came from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputSummary {
    /// File name or `-`.
    pub source: String,
    /// Detected or forced format.
    pub format: String,
}

impl WriteReport {
    /// True when every record read was written everywhere.
    pub fn is_complete(&self) -> bool {
        self.error.is_none()
            && self.records_skipped == 0
            && self.records_failed == 0
            && self.records_written == self.records_read
    }
}

/// Live counters a progress display can poll.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records read so far.
    pub read: AtomicU64,
    /// Records stored so far, summed over targets.
    pub stored: AtomicU64,
}

const MAX_SAMPLES: usize = 20;

type Batch = Arc<Vec<Record>>;

/// One skipped or failed record, as listed in the summary and written to the
/// rejects file.
#[derive(Debug, Clone, Serialize)]
pub struct RejectEntry {
    /// Where it was in the input.
    pub position: Position,
    /// The target it failed on; `None` when it was skipped while reading.
    pub target: Option<String>,
    /// Why.
    pub reason: String,
    /// Its text (compact JSON when it parsed).
    pub record: String,
}

/// Shared sink for rejected/failed records.
struct Rejects {
    file: Option<OutputFile>,
    sample: Vec<RejectEntry>,
    omitted: u64,
    error: Option<String>,
}

impl Rejects {
    fn push(&mut self, r: Rejected, target: Option<&str>) {
        let entry = RejectEntry {
            position: r.position,
            target: target.map(str::to_string),
            reason: r.reason,
            record: r.raw,
        };
        if let Some(f) = &mut self.file
            && self.error.is_none()
        {
            let res = serde_json::to_writer(&mut *f, &entry)
                .map_err(std::io::Error::from)
                .and_then(|_| f.write_all(b"\n"));
            if let Err(e) = res {
                self.error = Some(format!("cannot write rejects to {e}"));
            }
        }
        if self.sample.len() < MAX_SAMPLES {
            self.sample.push(entry);
        } else {
            self.omitted += 1;
        }
    }

    /// Completes the rejects file; returns the first error.
    fn finish(&mut self) -> Option<String> {
        if let Some(f) = self.file.take()
            && self.error.is_none()
            && let Err(e) = f.commit()
        {
            self.error = Some(format!("cannot write rejects to {e}"));
        }
        self.error.take()
    }

    /// The summary's pointer to the full list, when it is cut short.
    fn note(&self, path: Option<&Path>) -> Option<String> {
        (self.omitted > 0).then(|| match path {
            Some(p) => format!(
                "only the first {MAX_SAMPLES} are listed; all are in {}",
                p.display()
            ),
            None => format!(
                "only the first {MAX_SAMPLES} are listed; write them all with --rejects PATH"
            ),
        })
    }
}

/// Streams `input` into every target; see the module docs.
pub async fn write_records(
    input: Box<dyn Read + Send>,
    source: &str,
    targets: &[Target],
    options: &WriteOptions,
    progress: Arc<Progress>,
) -> Result<WriteReport, Error> {
    let started = Instant::now();
    let rejects_file = match &options.rejects {
        None => None,
        Some(p) => Some(OutputFile::create(p).map_err(|e| {
            Error::new(crate::ErrorKind::Io, format!("cannot write rejects to {e}"))
        })?),
    };
    let rejects = Arc::new(Mutex::new(Rejects {
        file: rejects_file,
        sample: Vec::new(),
        omitted: 0,
        error: None,
    }));

    let (senders, lanes) = spawn_lanes(targets, options, &rejects, &progress);
    let reader = spawn_reader(input, source, options, senders, &rejects, &progress)?;

    let mut target_reports = Vec::new();
    let mut failed_records: HashSet<u64> = HashSet::new();
    for lane in lanes {
        let (report, failed) = lane
            .await
            .map_err(|e| Error::new(crate::ErrorKind::Io, "writer lane crashed").set_source(e))?;
        failed_records.extend(failed);
        target_reports.push(report);
    }
    let outcome = tokio::task::spawn_blocking(move || reader.join())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_else(|| ReaderOutcome {
            result: Err(InputError {
                message: "reader thread crashed".into(),
            }),
            skipped: 0,
            format: None,
        });

    let read = progress.read.load(Ordering::Relaxed);
    let mut rj = rejects.lock().unwrap_or_else(|p| p.into_inner());
    let rejects_error = rj.finish();
    let rejects_note = rj.note(
        options
            .rejects
            .as_deref()
            .filter(|_| rejects_error.is_none()),
    );
    let error = match (outcome.result.err().map(|e| e.message), rejects_error) {
        (Some(input), Some(rejects)) => Some(format!("{input}; {rejects}")),
        (input, rejects) => input.or(rejects),
    };
    let accepted = read - outcome.skipped;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(WriteReport {
        records_written: if targets.is_empty() {
            0
        } else {
            accepted - failed_records.len() as u64
        },
        backends_used: targets.iter().map(|t| t.name.clone()).collect(),
        records_read: read,
        records_skipped: outcome.skipped,
        records_failed: failed_records.len() as u64,
        targets: target_reports,
        rejects: std::mem::take(&mut rj.sample),
        rejects_omitted: rj.omitted,
        rejects_note,
        input: InputSummary {
            source: source.to_string(),
            format: format_name(outcome.format).to_string(),
        },
        duration_seconds: elapsed,
        records_per_second: if elapsed > 0.0 {
            read as f64 / elapsed
        } else {
            0.0
        },
        error,
    })
}

type Lane = tokio::task::JoinHandle<(TargetReport, Vec<u64>)>;

/// One lane per target, each fed by a bounded queue.
fn spawn_lanes(
    targets: &[Target],
    options: &WriteOptions,
    rejects: &Arc<Mutex<Rejects>>,
    progress: &Arc<Progress>,
) -> (Vec<mpsc::Sender<Batch>>, Vec<Lane>) {
    let mut senders = Vec::new();
    let mut lanes = Vec::new();
    for t in targets {
        let (tx, rx) = mpsc::channel::<Batch>(options.queue_depth.max(1));
        senders.push(tx);
        lanes.push(tokio::spawn(run_lane(
            t.clone(),
            rx,
            options.clone(),
            rejects.clone(),
            progress.clone(),
        )));
    }
    (senders, lanes)
}

fn format_name(f: Option<InputFormat>) -> &'static str {
    match f {
        Some(InputFormat::Seed) => "seed",
        Some(InputFormat::Array) => "array",
        Some(InputFormat::Jsonl | InputFormat::Entries) => "jsonl",
        Some(InputFormat::CacheFile) => "json",
        _ => "unknown",
    }
}

/// What the reader thread comes back with.
struct ReaderOutcome {
    result: Result<(), InputError>,
    skipped: u64,
    /// Known as soon as the first bytes were read, even when reading failed later.
    format: Option<InputFormat>,
}

/// Starts the thread that parses and keys records into batches and hands
/// each batch to every lane.
fn spawn_reader(
    input: Box<dyn Read + Send>,
    source: &str,
    options: &WriteOptions,
    senders: Vec<mpsc::Sender<Batch>>,
    rejects: &Arc<Mutex<Rejects>>,
    progress: &Arc<Progress>,
) -> Result<std::thread::JoinHandle<ReaderOutcome>, Error> {
    let batch_size = options.batch_size.max(1);
    let policy = options.keys.clone();
    let format = options.format;
    let src = source.to_string();
    let rj = rejects.clone();
    let prog = progress.clone();
    let send = move |batch: Vec<Record>| -> bool {
        let b: Batch = Arc::new(batch);
        // A lane that ended early (it never does on errors) is ignored.
        senders
            .iter()
            .map(|tx| tx.blocking_send(b.clone()).is_ok())
            .fold(false, |a, ok| a | ok)
            || senders.is_empty()
    };
    std::thread::Builder::new()
        .name("unicache-reader".into())
        .spawn(move || {
            // The format is known before the first record, so a run that
            // stops later still reports it.
            let (format, r) = match sniff(input, &src, format) {
                Ok(found) => found,
                Err(e) => {
                    return ReaderOutcome {
                        result: Err(e),
                        skipped: 0,
                        format: None,
                    };
                }
            };
            let mut batch = Vec::with_capacity(batch_size);
            let mut skipped = 0u64;
            let res = read_records(r, &src, format, &policy, |item| {
                prog.read.fetch_add(1, Ordering::Relaxed);
                match item {
                    Item::Record(r) => {
                        batch.push(r);
                        if batch.len() >= batch_size {
                            let full =
                                std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                            return send(full);
                        }
                    }
                    Item::Rejected(r) => {
                        skipped += 1;
                        rj.lock().unwrap_or_else(|p| p.into_inner()).push(r, None);
                    }
                }
                true
            });
            if !batch.is_empty() {
                send(batch);
            }
            ReaderOutcome {
                result: res.map(|_| ()),
                skipped,
                format: Some(format),
            }
        })
        .map_err(|e| Error::from(e).with_context("op", "spawn reader"))
}

/// What one batch came to on one target.
struct BatchOutcome {
    batch: Batch,
    written: u64,
    retries: u64,
    /// Entry index and the error's one-line text.
    failed: Vec<(usize, String)>,
}

/// A lane's view of its target, shared by the batches it has in flight.
#[derive(Default)]
struct Health {
    /// Start of the first failed attempt since the last success.
    failing_since: Mutex<Option<Instant>>,
    /// Why the target is treated as down, once it is.
    down: Mutex<Option<String>>,
}

impl Health {
    fn succeeded(&self) {
        *self.failing_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records a transiently failed attempt that started at `start`; true
    /// when the target has now failed for `give_up` and is treated as down.
    fn failed(&self, start: Instant, err: &str, give_up: Duration) -> bool {
        let mut since = self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        let first = *since.get_or_insert(start);
        if first.elapsed() < give_up {
            return false;
        }
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.get_or_insert_with(|| {
            format!(
                "target down: no batch succeeded for {:.1}s (give-up-after {:?}); last error: {err}",
                first.elapsed().as_secs_f64(),
                give_up
            )
        });
        true
    }

    fn down(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One attempt at the `pending` records of `batch`: one `set_many` call,
/// or, when records carry their own TTLs (import), one per run of
/// consecutive records with the same TTL (order kept). Failures are indexed
/// into `pending`, as one `set_many` call's would be.
async fn attempt(
    cache: &dyn Cache,
    batch: &[Record],
    pending: &[usize],
    options: &WriteOptions,
) -> Result<(), Error> {
    let entries: Vec<(&str, &[u8])> = pending
        .iter()
        .map(|&i| (batch[i].key.as_str(), batch[i].value.as_slice()))
        .collect();
    if pending.iter().all(|&i| batch[i].ttl.is_none()) {
        return set_many(cache, &entries, options.ttl, options).await;
    }
    let ttl = |j: usize| batch[pending[j]].ttl.or(options.ttl);
    let (mut failures, mut start) = (Vec::new(), 0);
    while start < entries.len() {
        let end = (start..entries.len())
            .find(|&j| ttl(j) != ttl(start))
            .unwrap_or(entries.len());
        match set_many(cache, &entries[start..end], ttl(start), options).await {
            Ok(()) => {}
            Err(e) if e.kind() == crate::ErrorKind::PartialBatch => {
                failures.extend(e.failures().iter().map(|(j, err)| (start + j, err.clone())))
            }
            Err(e) => failures.extend((start..end).map(|j| (j, e.clone()))),
        }
        start = end;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::partial(failures))
    }
}

/// One `set_many` call, bounded by `op_timeout`; a panicking backend is
/// an error for this batch, not a crashed run.
async fn set_many(
    cache: &dyn Cache,
    entries: &[(&str, &[u8])],
    ttl: Option<Duration>,
    options: &WriteOptions,
) -> Result<(), Error> {
    use futures::FutureExt;
    let call = std::panic::AssertUnwindSafe(cache.set_many(entries, ttl)).catch_unwind();
    match tokio::time::timeout(options.op_timeout, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::new(crate::ErrorKind::Backend, "set_many panicked")
            .with_backend(cache.backend())),
        Err(_) => Err(Error::new(
            crate::ErrorKind::Timeout,
            format!("set_many took over {:?}", options.op_timeout),
        )
        .with_backend(cache.backend())),
    }
}

/// Writes one batch, retrying transient failures (whole batch or the failed
/// entries of a partial one) with exponential backoff, until the target is
/// down (see [`WriteOptions::give_up_after`]).
async fn write_batch(
    cache: &dyn Cache,
    batch: Batch,
    options: &WriteOptions,
    health: &Health,
) -> BatchOutcome {
    let mut out = BatchOutcome {
        batch: batch.clone(),
        written: 0,
        retries: 0,
        failed: Vec::new(),
    };
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let mut attempts = 0u32;
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some(reason) = health.down() {
            out.failed
                .extend(pending.iter().map(|&i| (i, reason.clone())));
            return out;
        }
        let start = Instant::now();
        let r = attempt(cache, &batch, &pending, options).await;
        let can_retry = attempts < options.retries;
        let failed_before = out.failed.len();
        let mut retry = Vec::new();
        // The last transient error, retried or not: it counts toward give-up.
        let mut transient = None;
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == crate::ErrorKind::PartialBatch => {
                for (j, err) in e.failures() {
                    let Some(&i) = pending.get(*j) else { continue };
                    if err.is_transient() {
                        transient = Some(err.to_string());
                    }
                    if err.is_transient() && can_retry {
                        retry.push(i);
                    } else {
                        out.failed.push((i, err.to_string()));
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if e.is_transient() {
                    transient = Some(msg.clone());
                }
                if e.is_transient() && can_retry {
                    retry = pending.clone();
                } else {
                    out.failed.extend(pending.iter().map(|&i| (i, msg.clone())));
                }
            }
        }
        let failed_now = out.failed.len() - failed_before;
        let stored = (pending.len() - retry.len() - failed_now) as u64;
        out.written += stored;
        if stored > 0 {
            health.succeeded();
        }
        let down = stored == 0
            && transient.is_some_and(|t| health.failed(start, &t, options.give_up_after));
        if retry.is_empty() {
            return out;
        }
        if down {
            pending = retry;
            continue; // fails them with the reason at the top
        }
        attempts += 1;
        out.retries += 1;
        tracing::warn!(
            backend = cache.backend(),
            attempt = attempts,
            "retrying {} records",
            retry.len()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        pending = retry;
    }
}

async fn run_lane(
    target: Target,
    rx: mpsc::Receiver<Batch>,
    options: WriteOptions,
    rejects: Arc<Mutex<Rejects>>,
    progress: Arc<Progress>,
) -> (TargetReport, Vec<u64>) {
    use futures::StreamExt;
    let started = Instant::now();
    let cache = target.cache.clone();
    let mut report = TargetReport {
        name: target.name.clone(),
        backend: cache.backend().to_string(),
        url: cache.endpoint(),
        ..TargetReport::default()
    };
    let mut failed_positions = Vec::new();
    let note_error = |report: &mut TargetReport, s: &str| {
        if report.errors.len() < 5 && !report.errors.iter().any(|e| e == s) {
            report.errors.push(s.to_string());
        }
    };
    // Network backends keep several batches in flight; `buffered` still
    // hands results back in batch order, and one connection keeps the
    // server-side order too.
    let concurrency = cache.capabilities().batch_concurrency.max(1);
    let health = Health::default();
    let batches =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut outcomes = std::pin::pin!(
        batches
            .map(|b| write_batch(&*cache, b, &options, &health))
            .buffered(concurrency)
    );
    while let Some(o) = outcomes.next().await {
        report.written += o.written;
        report.retries += o.retries;
        progress.stored.fetch_add(o.written, Ordering::Relaxed);
        if !o.failed.is_empty() {
            report.failed += o.failed.len() as u64;
            let mut rj = rejects.lock().unwrap_or_else(|p| p.into_inner());
            for (i, err) in o.failed {
                note_error(&mut report, &err);
                let rec = &o.batch[i];
                failed_positions.push(rec.position.record);
                rj.push(
                    Rejected {
                        position: rec.position,
                        reason: format!("{}: {err}", target.name),
                        raw: String::from_utf8_lossy(&rec.value).into_owned(),
                    },
                    Some(&target.name),
                );
            }
        }
    }
    if let Err(e) = cache.flush().await {
        note_error(&mut report, &e.to_string());
    }
    report.duration_seconds = started.elapsed().as_secs_f64();
    (report, failed_positions)
}

/// An output file that replaces its path only when complete.
///
/// A regular file (or a new one) is written to a temporary file beside it,
/// created exclusively (`O_EXCL`, so never through a planted symlink) with a
/// random name and mode 0600 (it may hold cached data), which
/// [`OutputFile::commit`] fsyncs and renames over the path (over the real
/// file when the path is a symlink). Dropped uncommitted, it is removed and
/// the previous file is untouched. Anything else (`/dev/null`, a FIFO, a
/// terminal) is written directly and never fsynced. Errors name the path.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    temp: Option<PathBuf>,
    file: std::io::BufWriter<std::fs::File>,
}

impl OutputFile {
    /// Opens `path` for writing as described on [`OutputFile`].
    pub fn create(path: &Path) -> std::io::Result<OutputFile> {
        let named = |e: std::io::Error| named_error(path, e);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(named(std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "is a directory",
                )));
            }
            Ok(m) if !m.is_file() => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(named)?;
                return Ok(OutputFile {
                    path: path.to_path_buf(),
                    temp: None,
                    file: std::io::BufWriter::new(f),
                });
            }
            _ => {}
        }
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = match real.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = real.file_name().unwrap_or_default().to_string_lossy();
        loop {
            let temp = dir.join(format!(".{name}.{}.tmp", random_suffix()));
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            match o.open(&temp) {
                Ok(f) => {
                    return Ok(OutputFile {
                        path: real,
                        temp: Some(temp),
                        file: std::io::BufWriter::with_capacity(1 << 16, f),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(named(e)),
            }
        }
    }

    /// The path this file replaces.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes; for a regular file also fsyncs it, renames it over the path
    /// and fsyncs the directory.
    pub fn commit(mut self) -> std::io::Result<()> {
        let named = |e| named_error(&self.path, e);
        self.file.flush().map_err(named)?;
        let Some(temp) = self.temp.as_ref() else {
            return Ok(());
        };
        self.file.get_ref().sync_all().map_err(named)?;
        std::fs::rename(temp, &self.path).map_err(named)?;
        self.temp = None;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf).map_err(|e| named_error(&self.path, e))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file
            .write_all(buf)
            .map_err(|e| named_error(&self.path, e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush().map_err(|e| named_error(&self.path, e))
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// The error with the path in front, kind kept (so a broken pipe stays one).
fn named_error(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// 64 bits no other process can guess: a randomly keyed SipHash of a
/// counter, the time and the pid.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}
