//! `unicache export` and `unicache import`: every live entry of any cache
//! that can list its keys, streamed, as the seed's cache file
//! (`{"key": "value", ...}`) or as JSON Lines (`{"key":..,"value":..}`, with
//! `value_b64` for bytes that are not UTF-8 and `ttl_ms` when the entry
//! expires). `export | import` copies one cache into another.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use futures::StreamExt;
use serde::de::{self, MapAccess, Visitor};
use unicache::writer::OutputFile;

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

const BATCH: usize = 1000;

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
        let parsed = unicache::url::parse(url)?;
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

/// One entry read from an export.
struct Entry {
    key: String,
    value: Vec<u8>,
    ttl: Option<Duration>,
}

struct Importer {
    cache: std::sync::Arc<dyn unicache::Cache>,
    batch: Vec<Entry>,
    imported: u64,
    failed: u64,
}

impl Importer {
    async fn push(&mut self, e: Entry) -> anyhow::Result<()> {
        self.batch.push(e);
        if self.batch.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let batch = std::mem::take(&mut self.batch);
        let plain: Vec<(&str, &[u8])> = batch
            .iter()
            .filter(|e| e.ttl.is_none())
            .map(|e| (e.key.as_str(), e.value.as_slice()))
            .collect();
        match self.cache.set_many(&plain, None).await {
            Ok(()) => self.imported += plain.len() as u64,
            Err(e) if e.kind() == unicache::ErrorKind::PartialBatch => {
                self.failed += e.failures().len() as u64;
                self.imported += (plain.len() - e.failures().len()) as u64;
                note(&format!("import: {e}"));
            }
            Err(e) => return Err(e.into()),
        }
        for e in batch.iter().filter(|e| e.ttl.is_some()) {
            match self.cache.set(&e.key, &e.value, e.ttl).await {
                Ok(()) => self.imported += 1,
                Err(err) => {
                    self.failed += 1;
                    note(&format!("import: {err}"));
                }
            }
        }
        Ok(())
    }
}

fn parse_jsonl_line(line: &str, n: u64, source: &str) -> anyhow::Result<Entry> {
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("{source}: line {n}: malformed JSON"))?;
    let key = v["key"]
        .as_str()
        .with_context(|| format!("{source}: line {n}: no string \"key\""))?
        .to_string();
    let value = match (&v["value"], &v["value_b64"]) {
        (serde_json::Value::String(s), _) => s.clone().into_bytes(),
        (_, serde_json::Value::String(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .with_context(|| format!("{source}: line {n}: bad value_b64"))?,
        (serde_json::Value::Null, _) => bail!("{source}: line {n}: no \"value\" or \"value_b64\""),
        (other, _) => other.to_string().into_bytes(),
    };
    let ttl = v["ttl_ms"].as_u64().map(Duration::from_millis);
    Ok(Entry { key, value, ttl })
}

/// Opens the import input; a directory or a missing file is an error naming it.
fn open_import_input(input: &str) -> anyhow::Result<Box<dyn Read + Send>> {
    if input == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    match std::fs::File::open(input) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => {
            bail!("cannot read import file {input}: it is a directory")
        }
        Ok(f) => Ok(Box::new(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("import file {input} not found")
        }
        Err(e) => Err(e).with_context(|| format!("cannot open import file {input}")),
    }
}

/// Reads entries written by `export` (or a seed cache file) into `url`.
pub async fn import(url: &str, input: &str, format: Format) -> anyhow::Result<Outcome> {
    let raw = open_import_input(input)?;
    let cache = open_url(url, false).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(4 * BATCH);
    let source = input.to_string();
    let parser = tokio::task::spawn_blocking(move || parse_entries(raw, &source, format, &tx));
    let mut imp = Importer {
        cache: cache.clone(),
        batch: Vec::new(),
        imported: 0,
        failed: 0,
    };
    while let Some(e) = rx.recv().await {
        imp.push(e).await?;
    }
    parser.await.context("import parser")??;
    imp.flush().await?;
    cache.close().await?;
    let line = serde_json::json!({"imported": imp.imported, "failed": imp.failed, "cache": cache.endpoint()});
    super::stdout_write(format!("{line}\n").as_bytes())?;
    Ok(if imp.failed > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    })
}

type Sink<'a> = &'a tokio::sync::mpsc::Sender<Entry>;

/// Parses `raw` as `format` (detected when `Auto`), sending each entry.
fn parse_entries(
    raw: Box<dyn Read + Send>,
    source: &str,
    format: Format,
    tx: Sink,
) -> anyhow::Result<()> {
    let mut r = BufReader::with_capacity(1 << 16, raw);
    let buf = r
        .fill_buf()
        .with_context(|| format!("cannot read {source}"))?;
    if buf.starts_with(b"\xEF\xBB\xBF") {
        r.consume(3);
    }
    match format {
        Format::Jsonl => read_jsonl(r, source, tx),
        Format::Json => read_json(r, source, tx),
        Format::Auto => {
            let (format, seen) = detect(&mut r);
            let replay = BufReader::with_capacity(1 << 16, std::io::Cursor::new(seen).chain(r));
            match format {
                Format::Json => read_json(replay, source, tx),
                _ => read_jsonl(replay, source, tx),
            }
        }
    }
}

/// JSON Lines (`export`'s default) or the seed's one object? Decided from
/// the document's structure, however large its entries: a JSON Lines
/// file's first object is one line holding only `key`, `ttl_ms`, `value` or
/// `value_b64`, with a string `key` and a value. Returns the format and the
/// bytes read to decide (one object at most), to be read again.
fn detect(r: &mut impl BufRead) -> (Format, Vec<u8>) {
    struct Tee<'a, R> {
        inner: &'a mut R,
        seen: Vec<u8>,
    }
    impl<R: Read> Read for Tee<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.seen.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }
    /// Sets the verdict as soon as it is known: a key no export line has
    /// means the seed's object, whatever follows.
    struct FirstObject<'a>(&'a std::cell::Cell<Option<bool>>);
    impl<'de> Visitor<'de> for FirstObject<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            let (mut key, mut value) = (false, false);
            while let Some(k) = m.next_key::<String>()? {
                match k.as_str() {
                    "key" => key = m.next_value::<serde_json::Value>()?.is_string(),
                    "value" | "value_b64" => {
                        m.next_value::<de::IgnoredAny>()?;
                        value = true;
                    }
                    "ttl_ms" => {
                        m.next_value::<de::IgnoredAny>()?;
                    }
                    _ => {
                        self.0.set(Some(false));
                        return Err(de::Error::custom("not an export line"));
                    }
                }
            }
            self.0.set(Some(key && value));
            Ok(())
        }
    }
    let verdict = std::cell::Cell::new(None);
    let mut tee = Tee {
        inner: r,
        seen: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_reader(&mut tee);
    let _ = de::Deserializer::deserialize_map(&mut de, FirstObject(&verdict));
    drop(de);
    let text_start = tee.seen.iter().position(|b| !b.is_ascii_whitespace());
    let one_line = text_start.is_none_or(|s| !tee.seen[s..].trim_ascii_end().contains(&b'\n'));
    let format = match verdict.get() {
        Some(true) if one_line => Format::Jsonl,
        Some(_) => Format::Json,
        // Malformed or not an object: the reader that fits reports where.
        None if one_line => Format::Jsonl,
        None => Format::Json,
    };
    (format, tee.seen)
}

fn read_jsonl(mut r: impl BufRead, source: &str, tx: Sink) -> anyhow::Result<()> {
    let mut line = String::new();
    let mut n = 0u64;
    loop {
        line.clear();
        if r.read_line(&mut line)
            .with_context(|| format!("cannot read {source} at line {}", n + 1))?
            == 0
        {
            return Ok(());
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        if tx
            .blocking_send(parse_jsonl_line(line.trim_end(), n, source)?)
            .is_err()
        {
            return Ok(()); // the importer stopped; it reports why
        }
    }
}

/// Streams the seed's `{"key": "value", ...}` object; memory stays bounded.
fn read_json(r: impl Read, source: &str, tx: Sink) -> anyhow::Result<()> {
    struct V<'a>(Sink<'a>);
    impl<'de> Visitor<'de> for V<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of key -> value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                let value = match v {
                    serde_json::Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                let entry = Entry {
                    key: k,
                    value,
                    ttl: None,
                };
                if self.0.blocking_send(entry).is_err() {
                    return Err(de::Error::custom("import stopped"));
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_reader(r);
    de::Deserializer::deserialize_map(&mut de, V(tx))
        .and_then(|_| de.end())
        .map_err(|e| anyhow!("{source}: line {} column {}: {e}", e.line(), e.column()))
}
