//! `unicache export` and `unicache import`: every live entry of any cache
//! that can list its keys, streamed, as the seed's cache file
//! (`{"key": "value", ...}`) or as JSON Lines (`{"key":..,"value":..}`, with
//! `value_b64` for bytes that are not UTF-8 and `ttl_ms` when the entry
//! expires). `export | import` copies one cache into another.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use futures::StreamExt;
use unicache::records::InputFormat;
use unicache::writer::{OutputFile, Progress, Target, WriteOptions, write_records};

use super::files::{refuse_overlaps, store_files};
use super::{Outcome, note, open_url};

/// Export/import file layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Decide from the content (import only).
    Auto,
    /// The seed's cache file: one object, key -> string value.
    Json,
    /// One `{"key": .., "value": ..}` object per line.
    Jsonl,
}

/// Streams every live entry of `url` to `output` (`-`: stdout). A file is
/// written beside its path and renamed over it when complete (mode 0600: it
/// holds cached data), so a failed export leaves the previous file whole.
pub async fn export(
    url: &str,
    output: &str,
    format: Format,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    let format = if format == Format::Auto {
        Format::Jsonl
    } else {
        format
    };
    if output != "-" {
        let parsed = unicache::open::parse(url)?;
        let own: Vec<_> = store_files(&parsed.backend)
            .into_iter()
            .map(|p| (format!("a file of the cache {}", parsed.redacted), p))
            .collect();
        refuse_overlaps(&[("--output", Path::new(output))], &own)?;
    }
    let cache = open_url(url, true).await?;
    let (n, skipped) = if output == "-" {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let counts = match write_entries(&*cache, &mut w, format).await {
            Err(ExportError::Write(e)) => return Err(anyhow::Error::from(e).context("stdout")),
            other => other?,
        };
        w.flush().context("stdout")?;
        counts
    } else {
        let mut file = OutputFile::create(Path::new(output))
            .map_err(|e| anyhow!("cannot write export to {e}"))?;
        let counts = match write_entries(&*cache, &mut file, format).await {
            Err(ExportError::Write(e)) => bail!("cannot write export to {e}"),
            other => other?,
        };
        file.commit()
            .map_err(|e| anyhow!("cannot write export to {e}"))?;
        counts
    };
    if !quiet {
        note(&format!(
            "exported {n} entries from {}{}",
            cache.endpoint(),
            if skipped > 0 {
                format!(", skipped {skipped}")
            } else {
                String::new()
            }
        ));
    }
    Ok(if skipped > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    })
}

/// Why an export stopped: the cache or the output.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error(transparent)]
    Cache(#[from] unicache::Error),
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// Writes the entries of `cache` as `format`; returns (exported, skipped).
async fn write_entries(
    cache: &dyn unicache::Cache,
    w: &mut impl Write,
    format: Format,
) -> Result<(u64, u64), ExportError> {
    let mut entries = cache.entries().await?;
    let (mut n, mut skipped) = (0u64, 0u64);
    if format == Format::Json {
        w.write_all(b"{")?;
    }
    while let Some(e) = entries.next().await {
        let e = e?;
        match format {
            Format::Json => {
                let Ok(text) = std::str::from_utf8(&e.value) else {
                    skipped += 1;
                    note(&format!(
                        "export: value of {:?} is not UTF-8; skipped (use --format jsonl)",
                        e.key
                    ));
                    continue;
                };
                w.write_all(if n == 0 { b"\n" } else { b",\n" })?;
                serde_json::to_writer(&mut *w, &e.key).map_err(std::io::Error::from)?;
                w.write_all(b": ")?;
                serde_json::to_writer(&mut *w, text).map_err(std::io::Error::from)?;
            }
            _ => write_jsonl_entry(w, &e)?,
        }
        n += 1;
    }
    if format == Format::Json {
        w.write_all(b"\n}\n")?;
    }
    Ok((n, skipped))
}

/// `{"key":..,"ttl_ms":..,"value"|"value_b64":..}`: the fields in this order
/// (the order serde_json's sorted maps gave them before).
fn write_jsonl_entry(w: &mut impl Write, e: &unicache::Entry) -> std::io::Result<()> {
    w.write_all(b"{\"key\":")?;
    serde_json::to_writer(&mut *w, &e.key)?;
    if let Some(ttl) = e.ttl {
        write!(
            w,
            ",\"ttl_ms\":{}",
            ttl.as_millis().clamp(1, u64::MAX as u128)
        )?;
    }
    match std::str::from_utf8(&e.value) {
        Ok(t) => {
            w.write_all(b",\"value\":")?;
            serde_json::to_writer(&mut *w, t)?;
        }
        Err(_) => {
            w.write_all(b",\"value_b64\":\"")?;
            w.write_all(
                base64::engine::general_purpose::STANDARD
                    .encode(&e.value)
                    .as_bytes(),
            )?;
            w.write_all(b"\"")?;
        }
    }
    w.write_all(b"}\n")
}

/// `unicache import`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    cache: super::CacheArg,
    /// File to read (`-`: stdin).
    input: String,
    /// Input layout; auto tells JSON Lines from the seed's object.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Entries per batch (one transaction or round trip each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch_size: u64,
    /// Write entries that failed here as JSON Lines (position, target, reason, record); mode 0600.
    #[arg(long, value_name = "PATH")]
    rejects: Option<PathBuf>,
    /// Treat the cache as down once no batch has succeeded on it for this long.
    #[arg(long, default_value = "30s", value_name = "DUR", value_parser = super::parse_span)]
    give_up_after: Duration,
    /// Retries of a batch after a transient failure (connection, timeout).
    #[arg(long, default_value_t = 8, value_parser = super::parse_count)]
    retries: u32,
}

/// Reads entries written by `export` (or a seed cache file) into the cache
/// through the writer (batches, retries, accounting); prints a one-line
/// summary: `imported`, `failed`, `cache` and the writer's counts.
pub async fn import(args: ImportArgs, quiet: bool, dir: &Path) -> anyhow::Result<Outcome> {
    let url = args.cache.at(dir)?;
    let input = super::write::open_input(&args.input)?;
    refuse_import_overlaps(&args, &url)?;
    let cache = open_url(&url, false).await?;
    let targets = [Target {
        name: cache.endpoint(),
        cache: cache.clone(),
    }];
    let progress = Arc::new(Progress::default());
    let bar = super::write::ProgressLine::start(quiet, &progress, 1);
    let report = write_records(
        input,
        &args.input,
        &targets,
        &import_options(&args),
        progress,
    )
    .await;
    bar.finish();
    let closed = cache.close().await;
    let report = report?;
    closed?;
    let mut line = serde_json::to_value(&report)?;
    line["imported"] = report.records_written.into();
    line["failed"] = report.records_failed.into();
    line["cache"] = cache.endpoint().into();
    super::stdout_write(format!("{line}\n").as_bytes())?;
    if let Some(e) = &report.error {
        bail!("{e} (the summary accounts for what was imported before)");
    }
    if !quiet {
        super::write::warn_about(&report);
    }
    Ok(if report.is_complete() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

/// Refuses a rejects path that is the input or one of the cache's files.
fn refuse_import_overlaps(args: &ImportArgs, url: &str) -> anyhow::Result<()> {
    let Some(rejects) = &args.rejects else {
        return Ok(());
    };
    let mut protected = Vec::new();
    if args.input != "-" {
        protected.push(("the input".to_string(), PathBuf::from(&args.input)));
    }
    if let Ok(parsed) = unicache::open::parse(url) {
        for p in store_files(&parsed.backend) {
            protected.push((format!("a file of the cache {}", parsed.redacted), p));
        }
    }
    refuse_overlaps(&[("--rejects", rejects.as_path())], &protected)
}

fn import_options(args: &ImportArgs) -> WriteOptions {
    let mut options = WriteOptions::default();
    options.batch_size = args.batch_size as usize;
    options.retries = args.retries;
    options.give_up_after = args.give_up_after;
    options.rejects = args.rejects.clone();
    options.format = match args.format {
        Format::Auto => InputFormat::AnyEntries,
        Format::Json => InputFormat::CacheFile,
        Format::Jsonl => InputFormat::Entries,
    };
    options
}
