//! `unicache write`: the seed's job, streamed and fanned out.
//!
//! Resolves the targets (`--cache` or the seed config's `backends`), refuses
//! an output or rejects path that is the input or a target's file, checks
//! that the summary can be written before touching any cache, runs the
//! writer with an optional progress bar, then saves (temp file + rename) and
//! prints the summary. A run that stops before writing leaves a previous
//! summary as it was.

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;

use unicache::records::{InputFormat, KeyPolicy, MissingKey, sniff};
use unicache::writer::{OutputFile, Progress, Target, WriteOptions, WriteReport, write_records};

use super::files::{refuse_input_in_stores, refuse_overlaps, store_files};
use super::{Outcome, open_url, parse_count, parse_span, parse_ttl, stdout_write};

#[derive(Args, Debug)]
pub struct WriteArgs {
    /// Input: the seed's {"records": [...], "backends": [...]}, a JSON array, or JSON Lines; `-` for stdin.
    #[arg(long, short, default_value = "data/sample_input.json")]
    input: String,
    /// Where the JSON summary is written (it is also printed).
    #[arg(long, short, default_value = "data/output_summary.json")]
    output: PathBuf,
    /// Target cache URL or bare name; repeatable; overrides the config's "backends".
    #[arg(long = "cache", short = 'c', value_name = "URL")]
    caches: Vec<String>,
    /// Field holding each record's key (string, or integer used as decimal text).
    #[arg(long, default_value = "key")]
    key_field: String,
    /// Records without a usable key: skip (count and report), hash (key by content hash), fail (stop).
    #[arg(long, default_value = "skip")]
    missing_key: MissingKey,
    /// TTL for every record (30, 500ms, 5m, 2h, 31d).
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<Duration>,
    /// Records per batch (one transaction or round trip each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch_size: u64,
    /// Write skipped and failed records here as JSON Lines (position, target, reason, record); mode 0600.
    #[arg(long, value_name = "PATH")]
    rejects: Option<PathBuf>,
    /// Treat a target as down once no batch has succeeded on it for this long
    /// (its remaining records then fail at once, with the reason).
    #[arg(long, default_value = "30s", value_name = "DUR", value_parser = parse_span)]
    give_up_after: Duration,
    /// Input format; auto detects it from the first bytes.
    #[arg(long, default_value = "auto")]
    format: InputFormat,
    /// Retries of a batch after a transient failure (connection, timeout).
    #[arg(long, default_value_t = 8, value_parser = parse_count)]
    retries: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics while the write runs
    /// (per target: records written, failed, retries, batches in flight,
    /// throughput; per operation: calls, latency, errors). Port 0 picks a
    /// free port; the address is printed on stderr.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// After the write, keep serving /metrics until the final figures have
    /// been scraped once, at most this long (30, 500ms, 5m).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_span, requires = "metrics_addr")]
    metrics_linger: Duration,
    /// Push the same metrics to an OpenTelemetry collector over OTLP/HTTP
    /// (protobuf): a base URL (http://127.0.0.1:4318, /v1/metrics appended)
    /// or the full metrics URL. Needs the `otel` cargo feature.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// How often the OTLP pipeline pushes (a last push follows the write).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_span, requires = "otlp_endpoint")]
    otlp_interval: Duration,
}

/// An input stream the reader thread can own.
type Input = Box<dyn Read + Send>;

pub(super) fn open_input(input: &str) -> anyhow::Result<Input> {
    if input == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    Ok(Box::new(open_file(input)?))
}

/// Opens an input file; a directory or a missing file is an error naming it.
fn open_file(input: &str) -> anyhow::Result<File> {
    match File::open(Path::new(input)) {
        Ok(f) => {
            if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                bail!("input {input} is a directory, not a file");
            }
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("input file {input} not found")
        }
        Err(e) => Err(e).with_context(|| format!("cannot open input {input}")),
    }
}

/// The input, opened once and its format detected once, with the seed
/// config's `backends` when they are needed (no `--cache`). The input
/// returned still yields every record; the format is final.
struct Prepared {
    input: Input,
    format: InputFormat,
    backends: Option<Vec<String>>,
}

/// Opens the input; without `--cache`, sniffs it and, for the seed's
/// object, reads its `backends` (which may follow the records) and starts over: a
/// file is rewound, stdin is spooled to a temp file.
fn prepare_input(args: &WriteArgs) -> anyhow::Result<Prepared> {
    let file = (args.input != "-")
        .then(|| open_file(&args.input))
        .transpose()?;
    let raw: Input = match &file {
        Some(f) => Box::new(f.try_clone().context("cannot read input")?),
        None => Box::new(std::io::stdin()),
    };
    if !args.caches.is_empty() {
        // The writer detects the format (once), and reports an input it
        // cannot read in the summary, like any later input error.
        let (input, format, backends) = (raw, args.format, None);
        return Ok(Prepared {
            input,
            format,
            backends,
        });
    }
    let mut seekable = match file {
        Some(f) => {
            drop(raw);
            f
        }
        // Stdin: sniffed first (any read sizes from a pipe, the bytes put
        // back), spooled only when it is the seed's object.
        None => {
            let (format, r) =
                sniff(raw, &args.input, args.format).map_err(|e| anyhow!(e.message))?;
            if format != InputFormat::Seed {
                let (input, backends) = (Box::new(r), None);
                return Ok(Prepared {
                    input,
                    format,
                    backends,
                });
            }
            spool(r)?
        }
    };
    seekable.rewind().context("cannot rewind the input")?;
    let (format, backends) =
        unicache::records::prepare_seekable(&mut seekable, &args.input, args.format)
            .map_err(|e| anyhow!(e.message))?;
    Ok(Prepared {
        input: Box::new(seekable),
        format,
        backends,
    })
}

/// Copies stdin (what is left of it, after the bytes put back) to a temp file.
fn spool(mut r: impl Read) -> anyhow::Result<File> {
    let mut tmp = tempfile::tempfile().context("spooling stdin to a temp file")?;
    std::io::copy(&mut r, &mut tmp).context("spooling stdin to a temp file")?;
    Ok(tmp)
}

/// Runs `write`; bare target names resolve under `dir`, by default the
/// summary's directory.
pub async fn run(args: WriteArgs, quiet: bool, dir: Option<&Path>) -> anyhow::Result<Outcome> {
    let prepared = prepare_input(&args)?;
    let out_dir = match args.output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let names = target_names(&args, prepared.backends)?;
    let input = prepared.input;
    let bare_dir = dir.unwrap_or(&out_dir);
    let mut urls = Vec::new();
    for name in &names {
        urls.push(unicache::open::resolve_name(name, bare_dir)?);
    }
    refuse_own_files(&args, &urls)?;

    // Fail on an unwritable summary before any cache is touched.
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create output directory {}", out_dir.display()))?;
    let summary_file =
        OutputFile::create(&args.output).map_err(|e| anyhow!("cannot write summary to {e}"))?;
    if let Some(r) = &args.rejects {
        // A probe: the writer creates the real one once targets are open.
        drop(OutputFile::create(r).map_err(|e| anyhow!("cannot write rejects to {e}"))?);
    }

    // The recorder goes in before the targets open: their handles register with it.
    let listener = match &args.metrics_addr {
        Some(addr) => Some(super::metrics::Server::bind(addr).await?),
        None => None,
    };
    let otlp = args
        .otlp_endpoint
        .as_deref()
        .map(|e| (e, args.otlp_interval));
    let recorders = super::metrics::Recorders::install(listener.is_some(), otlp)?;
    if recorders.any() {
        super::observe(true);
    }

    // Open every target first: an unreachable one is fatal before anything is written.
    let mut targets = Vec::new();
    let opened = futures::future::join_all(urls.iter().map(|u| open_url(u, false))).await;
    for (name, cache) in names.iter().zip(opened) {
        let cache = cache.with_context(|| format!("target {}", unicache::open::redact(name)))?;
        targets.push(Target {
            name: unicache::open::redact(name),
            cache,
        });
    }

    let server = match (listener, recorders.prometheus.clone()) {
        (Some(listener), Some(handle)) => {
            let caches = targets.iter().map(|t| t.cache.clone()).collect();
            let s = super::metrics::Server::start(listener, handle, caches)?;
            super::note(&format!("metrics: serving http://{}/metrics", s.addr));
            Some(s)
        }
        _ => None,
    };

    let progress = Arc::new(Progress::default());
    let bar = ProgressLine::start(quiet, &progress, targets.len());
    let report = write_records(
        input,
        &args.input,
        &targets,
        &options(&args, prepared.format),
        progress,
    )
    .await?;
    bar.finish();
    for t in &targets {
        if let Err(e) = t.cache.close().await {
            tracing::warn!("closing {}: {e}", t.name);
        }
    }
    let outcome = finish(&report, summary_file, quiet);
    recorders.finish().await;
    if let Some(s) = server {
        s.linger(args.metrics_linger).await;
    }
    outcome
}

/// The targets: `--cache`, else the seed config's `backends`, else memory.
fn target_names(args: &WriteArgs, backends: Option<Vec<String>>) -> anyhow::Result<Vec<String>> {
    if !args.caches.is_empty() {
        return Ok(args.caches.clone());
    }
    let names = match backends {
        Some(b) if !b.is_empty() => b,
        Some(_) => bail!(
            "{}: \"backends\" is empty; name at least one or pass --cache",
            args.input
        ),
        None => {
            tracing::warn!(
                "no backends in the input and no --cache: writing to memory:// (lost at exit)"
            );
            vec!["memory".to_string()]
        }
    };
    Ok(names)
}

/// Refuses a summary or rejects path that is the input, a target's store
/// (or one of its companion files) or the other output.
fn refuse_own_files(args: &WriteArgs, urls: &[String]) -> anyhow::Result<()> {
    let mut stores = Vec::new();
    for url in urls {
        // A URL that does not parse fails when it is opened, with its own message.
        let Ok(parsed) = unicache::open::parse(url) else {
            continue;
        };
        for p in store_files(&parsed.backend) {
            stores.push((format!("a file of target {}", parsed.redacted), p));
        }
    }
    // stdin redirected from a file is that file.
    let input = PathBuf::from(if args.input == "-" {
        "/dev/stdin"
    } else {
        &args.input
    });
    refuse_input_in_stores(&input, &stores)?;
    let mut protected = vec![("the input".to_string(), input)];
    protected.extend(stores);
    let mut outputs = vec![("--output", args.output.as_path())];
    if let Some(r) = &args.rejects {
        outputs.push(("--rejects", r.as_path()));
    }
    refuse_overlaps(&outputs, &protected)
}

/// The writer's options; `format` is the one already detected.
fn options(args: &WriteArgs, format: InputFormat) -> WriteOptions {
    let mut options = WriteOptions::default();
    options.batch_size = args.batch_size as usize;
    options.ttl = args.ttl;
    options.retries = args.retries;
    options.format = format;
    options.keys = KeyPolicy {
        field: args.key_field.clone(),
        missing: args.missing_key,
    };
    options.rejects = args.rejects.clone();
    options.give_up_after = args.give_up_after;
    options
}

/// Saves and prints the summary, warns, and maps the report to an outcome.
/// A summary that cannot be saved is still printed; the run then exits 2.
fn finish(report: &WriteReport, file: OutputFile, quiet: bool) -> anyhow::Result<Outcome> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    let mut file = file;
    let saved = file.write_all(text.as_bytes()).and_then(|_| file.commit());
    match stdout_write(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            tracing::warn!("cannot print the summary: {e}")
        }
        _ => {}
    }
    let save_error = saved.err().map(|e| {
        format!(
            "cannot write summary to {e} (the records' outcome is in the summary printed on stdout)"
        )
    });
    match (&report.error, save_error) {
        (Some(e), Some(s)) => bail!("{e} (the summary accounts for what was written before); {s}"),
        (Some(e), None) => bail!("{e} (the summary accounts for what was written before)"),
        (None, Some(s)) => bail!("{s}"),
        (None, None) => {}
    }
    if !quiet {
        warn_about(report);
    }
    Ok(if report.is_complete() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

pub(super) fn warn_about(report: &WriteReport) {
    if report.records_skipped > 0 {
        let first = report.rejects.iter().find(|r| r.target.is_none());
        tracing::warn!(
            "{} records skipped{}",
            report.records_skipped,
            first
                .map(|r| format!(", first at {}: {}", r.position, r.reason))
                .unwrap_or_default()
        );
    }
    for t in report.targets.iter().filter(|t| t.failed > 0) {
        tracing::warn!(
            "{} records failed on {}{}",
            t.failed,
            t.name,
            t.errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(note) = &report.rejects_note {
        tracing::warn!(
            "{} rejects not in the summary: {note}",
            report.rejects_omitted
        );
    }
}

/// The progress spinner on a terminal's stderr.
pub(super) struct ProgressLine {
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressLine {
    pub(super) fn start(quiet: bool, progress: &Arc<Progress>, targets: usize) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            pb
        });
        let ticker = bar.clone().map(|pb| {
            let p = progress.clone();
            let n = targets.max(1) as u64;
            tokio::spawn(async move {
                loop {
                    let read = p.read.load(std::sync::atomic::Ordering::Relaxed);
                    let stored = p.stored.load(std::sync::atomic::Ordering::Relaxed) / n;
                    pb.set_message(format!("{read} records read, {stored} stored per target"));
                    pb.tick();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        });
        ProgressLine { bar, ticker }
    }

    pub(super) fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        if let Some(pb) = self.bar {
            pb.finish_and_clear();
        }
    }
}
