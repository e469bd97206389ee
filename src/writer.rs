//! The bulk writer: streams records from an input into several caches at once.
//!
//! One reader thread parses and keys records into batches; every batch is
//! shared (`Arc`) with one lane per target, each an async task calling
//! `set_many`. Queues are bounded, so memory stays at a few batches per lane
//! whatever the input size. Transient failures (connection, timeout) are
//! retried with backoff; what still fails is counted per target and per
//! record. Every record read ends up written, skipped or failed: never lost
//! without a word.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::cache::Cache;
use crate::error::Error;
use crate::records::{InputFormat, InputMeta, Item, KeyPolicy, Record, Rejected, read_records};

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
    /// Where rejected and failed records are written as JSON Lines.
    pub rejects: Option<PathBuf>,
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
    /// The first skipped or failed records, with where and why.
    pub rejects: Vec<Rejected>,
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

/// Shared sink for rejected/failed records.
struct Rejects {
    file: Option<std::io::BufWriter<std::fs::File>>,
    sample: Vec<Rejected>,
    error: Option<String>,
}

impl Rejects {
    fn push(&mut self, r: Rejected, target: Option<&str>) {
        if let Some(f) = &mut self.file {
            let line = serde_json::json!({
                "position": r.position,
                "target": target,
                "reason": r.reason,
                "record": r.raw,
            });
            if let Err(e) = writeln!(f, "{line}") {
                self.error.get_or_insert(format!("rejects file: {e}"));
            }
        }
        if self.sample.len() < MAX_SAMPLES {
            self.sample.push(r);
        }
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
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| Error::from(e).with_context("rejects", p.display()))?,
        )),
    };
    let rejects = Arc::new(Mutex::new(Rejects {
        file: rejects_file,
        sample: Vec::new(),
        error: None,
    }));

    // Lanes.
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

    // Reader thread.
    let batch_size = options.batch_size.max(1);
    let policy = options.keys.clone();
    let format = options.format;
    let src = source.to_string();
    let rj = rejects.clone();
    let prog = progress.clone();
    let reader = std::thread::Builder::new()
        .name("unicache-reader".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(batch_size);
            let mut skipped = 0u64;
            let send = |batch: Vec<Record>| -> bool {
                let b: Batch = Arc::new(batch);
                // A lane that ended early (it never does on errors) is ignored.
                senders
                    .iter()
                    .map(|tx| tx.blocking_send(b.clone()).is_ok())
                    .fold(false, |a, ok| a | ok)
                    || senders.is_empty()
            };
            let res = read_records(input, &src, format, &policy, |item| {
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
            (res, skipped)
        })
        .map_err(|e| Error::from(e).with_context("op", "spawn reader"))?;

    let mut target_reports = Vec::new();
    let mut failed_records: HashSet<u64> = HashSet::new();
    for lane in lanes {
        let (report, failed) = lane
            .await
            .map_err(|e| Error::new(crate::ErrorKind::Io, "writer lane crashed").set_source(e))?;
        failed_records.extend(failed);
        target_reports.push(report);
    }
    let (res, skipped) = tokio::task::spawn_blocking(move || reader.join())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_else(|| {
            (
                Err(crate::records::InputError {
                    message: "reader thread crashed".into(),
                }),
                0,
            )
        });

    let read = progress.read.load(Ordering::Relaxed);
    let (meta, error) = match res {
        Ok(m) => (m, None),
        Err(e) => (InputMeta::default(), Some(e.message)),
    };
    let mut rj = rejects.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = &mut rj.file
        && let Err(e) = f.flush()
    {
        rj.error.get_or_insert(format!("rejects file: {e}"));
    }
    let error = error.or(rj.error.take());
    let accepted = read - skipped;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(WriteReport {
        records_written: if targets.is_empty() {
            0
        } else {
            accepted - failed_records.len() as u64
        },
        backends_used: targets.iter().map(|t| t.name.clone()).collect(),
        records_read: read,
        records_skipped: skipped,
        records_failed: failed_records.len() as u64,
        targets: target_reports,
        rejects: std::mem::take(&mut rj.sample),
        input: InputSummary {
            source: source.to_string(),
            format: match meta.format {
                Some(InputFormat::Seed) => "seed",
                Some(InputFormat::Array) => "array",
                Some(InputFormat::Jsonl) => "jsonl",
                _ => "unknown",
            }
            .to_string(),
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

/// What one batch came to on one target.
struct BatchOutcome {
    batch: Batch,
    written: u64,
    retries: u64,
    /// Entry index and the error's one-line text.
    failed: Vec<(usize, String)>,
}

/// Writes one batch, retrying transient failures (whole batch or the failed
/// entries of a partial one) with exponential backoff.
async fn write_batch(cache: &dyn Cache, batch: Batch, options: &WriteOptions) -> BatchOutcome {
    let mut out = BatchOutcome {
        batch: batch.clone(),
        written: 0,
        retries: 0,
        failed: Vec::new(),
    };
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let mut attempt = 0u32;
    let mut backoff = Duration::from_millis(100);
    loop {
        let entries: Vec<(&str, &[u8])> = pending
            .iter()
            .map(|&i| (batch[i].key.as_str(), batch[i].value.as_slice()))
            .collect();
        let r =
            match tokio::time::timeout(options.op_timeout, cache.set_many(&entries, options.ttl))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    crate::ErrorKind::Timeout,
                    format!("set_many took over {:?}", options.op_timeout),
                )
                .with_backend(cache.backend())),
            };
        let can_retry = attempt < options.retries;
        let failed_before = out.failed.len();
        let mut retry = Vec::new();
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == crate::ErrorKind::PartialBatch => {
                for (j, err) in e.failures() {
                    let Some(&i) = pending.get(*j) else { continue };
                    if err.is_transient() && can_retry {
                        retry.push(i);
                    } else {
                        out.failed.push((i, err.to_string()));
                    }
                }
            }
            Err(e) if e.is_transient() && can_retry => retry = pending.clone(),
            Err(e) => {
                let msg = e.to_string();
                out.failed.extend(pending.iter().map(|&i| (i, msg.clone())));
            }
        }
        let failed_now = out.failed.len() - failed_before;
        out.written += (pending.len() - retry.len() - failed_now) as u64;
        if retry.is_empty() {
            return out;
        }
        attempt += 1;
        out.retries += 1;
        tracing::warn!(
            backend = cache.backend(),
            attempt,
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
    let batches =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut outcomes = std::pin::pin!(
        batches
            .map(|b| write_batch(&*cache, b, &options))
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
