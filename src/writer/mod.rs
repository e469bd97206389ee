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
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cache::Cache;
use crate::error::Error;
use crate::records::{InputError, InputFormat, KeyPolicy};

mod batch;
mod lane;
mod output;
mod reader;
mod rejects;

pub use output::OutputFile;
pub use rejects::RejectEntry;

use lane::{Lane, spawn_lanes};
use reader::{ReaderOutcome, format_name, spawn_reader};
use rejects::Rejects;

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

pub(crate) type Batch = Arc<batch::Packed>;

/// Streams `input` into every target: opens the lanes (one per target)
/// and the reader, waits for both, and reports; see the module docs.
pub async fn write_records(
    input: Box<dyn Read + Send>,
    source: &str,
    targets: &[Target],
    options: &WriteOptions,
    progress: Arc<Progress>,
) -> Result<WriteReport, Error> {
    let started = Instant::now();
    let rejects = Arc::new(Mutex::new(Rejects::open(options.rejects.as_deref())?));
    let (senders, lanes) = spawn_lanes(targets, options, &rejects, &progress);
    let reader = spawn_reader(input, source, options, senders, &rejects, &progress)?;
    let (target_reports, failed_records) = join_lanes(lanes).await?;
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
    let mut rj = rejects.lock().unwrap_or_else(|p| p.into_inner());
    let counts = Counts {
        read: progress.read.load(Ordering::Relaxed),
        failed: failed_records.len() as u64,
        elapsed: started.elapsed().as_secs_f64(),
    };
    Ok(report(
        source,
        targets,
        options,
        target_reports,
        outcome,
        &mut rj,
        counts,
    ))
}

/// Waits for every lane; returns their reports and the positions of the
/// records that failed on at least one target.
async fn join_lanes(lanes: Vec<Lane>) -> Result<(Vec<TargetReport>, HashSet<u64>), Error> {
    let mut target_reports = Vec::new();
    let mut failed_records: HashSet<u64> = HashSet::new();
    for lane in lanes {
        let (report, failed) = lane
            .await
            .map_err(|e| Error::new(crate::ErrorKind::Io, "writer lane crashed").set_source(e))?;
        failed_records.extend(failed);
        target_reports.push(report);
    }
    Ok((target_reports, failed_records))
}

/// What the run came to, in numbers.
struct Counts {
    read: u64,
    failed: u64,
    elapsed: f64,
}

/// The summary: every record read is written, skipped or failed.
fn report(
    source: &str,
    targets: &[Target],
    options: &WriteOptions,
    target_reports: Vec<TargetReport>,
    outcome: ReaderOutcome,
    rj: &mut Rejects,
    counts: Counts,
) -> WriteReport {
    let Counts {
        read,
        failed,
        elapsed,
    } = counts;
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
    WriteReport {
        records_written: if targets.is_empty() {
            0
        } else {
            accepted - failed
        },
        backends_used: targets.iter().map(|t| t.name.clone()).collect(),
        records_read: read,
        records_skipped: outcome.skipped,
        records_failed: failed,
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
    }
}
