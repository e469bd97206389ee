//! `unicache export` and `unicache import`: every live entry of any cache
//! that can list its keys, streamed, as the seed's cache file
//! (`{"key": "value", ...}`) or as JSON Lines (`{"key":..,"value":..}`, with
//! `value_b64` for bytes that are not UTF-8 and `ttl_ms` when the entry
//! expires). `export | import` copies one cache into another.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use futures::StreamExt;
use serde::de::{self, MapAccess, Visitor};

use super::{Outcome, open_cache};

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

pub async fn export(
    url: &str,
    output: &str,
    format: Format,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    let cache = open_cache(url, Path::new(".")).await?;
    let format = if format == Format::Auto {
        Format::Jsonl
    } else {
        format
    };
    let out: Box<dyn Write> = if output == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(output)
                .with_context(|| format!("cannot write export to {output}"))?,
        )
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut keys = cache.keys().await?;
    let read_ttl = cache.capabilities().read_ttl;
    let (mut n, mut skipped, mut first) = (0u64, 0u64, true);
    if format == Format::Json {
        w.write_all(b"{")?;
    }
    let mut batch: Vec<String> = Vec::with_capacity(BATCH);
    let mut done = false;
    while !done {
        batch.clear();
        while batch.len() < BATCH {
            match keys.next().await {
                Some(k) => batch.push(k?),
                None => {
                    done = true;
                    break;
                }
            }
        }
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let values = cache.get_many(&refs).await?;
        for (k, v) in batch.iter().zip(values) {
            // Gone (expired or deleted) since it was listed: nothing to export.
            let Some(v) = v else { continue };
            match format {
                Format::Json => {
                    let Ok(text) = std::str::from_utf8(&v) else {
                        skipped += 1;
                        eprintln!(
                            "unicache: export: value of {k:?} is not UTF-8; skipped (use --format jsonl)"
                        );
                        continue;
                    };
                    if !first {
                        w.write_all(b",")?;
                    }
                    first = false;
                    w.write_all(b"\n")?;
                    serde_json::to_writer(&mut w, k)?;
                    w.write_all(b": ")?;
                    serde_json::to_writer(&mut w, text)?;
                }
                _ => {
                    let mut obj = serde_json::Map::new();
                    obj.insert("key".into(), k.clone().into());
                    match std::str::from_utf8(&v) {
                        Ok(t) => obj.insert("value".into(), t.into()),
                        Err(_) => obj.insert(
                            "value_b64".into(),
                            base64::engine::general_purpose::STANDARD.encode(&v).into(),
                        ),
                    };
                    if read_ttl && let Ok(Some(Some(ttl))) = cache.ttl(k).await {
                        obj.insert("ttl_ms".into(), (ttl.as_millis().max(1) as u64).into());
                    }
                    serde_json::to_writer(&mut w, &obj)?;
                    w.write_all(b"\n")?;
                }
            }
            n += 1;
        }
    }
    if format == Format::Json {
        w.write_all(b"\n}\n")?;
    }
    w.flush()?;
    if !quiet {
        eprintln!(
            "unicache: exported {n} entries from {}{}",
            cache.endpoint(),
            if skipped > 0 {
                format!(", skipped {skipped}")
            } else {
                String::new()
            }
        );
    }
    Ok(if skipped > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    })
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
                eprintln!("unicache: import: {e}");
            }
            Err(e) => return Err(e.into()),
        }
        for e in batch.iter().filter(|e| e.ttl.is_some()) {
            match self.cache.set(&e.key, &e.value, e.ttl).await {
                Ok(()) => self.imported += 1,
                Err(err) => {
                    self.failed += 1;
                    eprintln!("unicache: import: {err}");
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

pub async fn import(url: &str, input: &str, format: Format) -> anyhow::Result<Outcome> {
    let cache = open_cache(url, Path::new(".")).await?;
    let raw: Box<dyn Read + Send> = if input == "-" {
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(input) {
            Ok(f) => Box::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("import file {input} not found")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {input}")),
        }
    };
    let mut r = BufReader::with_capacity(1 << 20, raw);
    let format = match format {
        Format::Auto => {
            // JSON Lines when the first line is a whole {"key":..,"value"/"value_b64":..} object.
            let buf = r.fill_buf()?;
            let first = buf.split(|&b| b == b'\n').next().unwrap_or(b"");
            match serde_json::from_slice::<serde_json::Value>(first) {
                Ok(v)
                    if v["key"].is_string()
                        && (v.get("value").is_some() || v.get("value_b64").is_some()) =>
                {
                    Format::Jsonl
                }
                _ => Format::Json,
            }
        }
        f => f,
    };
    let mut imp = Importer {
        cache: cache.clone(),
        batch: Vec::new(),
        imported: 0,
        failed: 0,
    };
    match format {
        Format::Jsonl | Format::Auto => {
            let mut line = String::new();
            let mut n = 0u64;
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    break;
                }
                n += 1;
                if line.trim().is_empty() {
                    continue;
                }
                imp.push(parse_jsonl_line(line.trim_end(), n, input)?)
                    .await?;
            }
        }
        Format::Json => {
            // Streams the seed's {"key": "value", ...} object through a channel
            // so memory stays bounded; the parser runs on a blocking thread.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(4 * BATCH);
            let source = input.to_string();
            let parser = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                struct V(tokio::sync::mpsc::Sender<Entry>);
                impl<'de> Visitor<'de> for V {
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
                            if self
                                .0
                                .blocking_send(Entry {
                                    key: k,
                                    value,
                                    ttl: None,
                                })
                                .is_err()
                            {
                                return Err(de::Error::custom("import stopped"));
                            }
                        }
                        Ok(())
                    }
                }
                let mut de = serde_json::Deserializer::from_reader(r);
                de::Deserializer::deserialize_map(&mut de, V(tx))
                    .and_then(|_| de.end())
                    .map_err(|e| {
                        anyhow::anyhow!("{source}: line {} column {}: {e}", e.line(), e.column())
                    })
            });
            while let Some(e) = rx.recv().await {
                imp.push(e).await?;
            }
            parser.await??;
        }
    }
    imp.flush().await?;
    cache.close().await?;
    println!(
        "{}",
        serde_json::json!({"imported": imp.imported, "failed": imp.failed, "cache": cache.endpoint()})
    );
    Ok(if imp.failed > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    })
}
