//! Single-cache commands: get, set, incr, touch, ttl, delete, clear, stats,
//! compact. All but `set` and `incr` open only an existing store: they never
//! create one. A change the backend acknowledged is made: a failure while
//! closing afterwards (SQLite's checkpoint on a full disk) is a warning, and
//! the exit code is the operation's (README, "Exit codes").

use std::io::Read;
use std::time::Duration;

use anyhow::Context;

use super::{Outcome, note, open_url, stdout_write};

/// Closes `cache` after `done` (what the command changed) was committed:
/// closing only syncs or tidies up (a checkpoint, a purge), so its failure
/// does not undo the change; it is reported as a warning, not as the
/// command's error.
async fn close_after(cache: &dyn unicache::Cache, done: &str) {
    if let Err(e) = cache.close().await {
        note(&format!(
            "warning: {done} in {}; closing the cache failed afterwards, which does not undo it: {e}",
            cache.endpoint()
        ));
    }
}

pub async fn get(url: &str, key: &str, raw: bool) -> anyhow::Result<Outcome> {
    let cache = open_url(url, true).await?;
    match cache.get(key).await? {
        Some(v) => {
            stdout_write(&v)?;
            if !raw {
                stdout_write(b"\n")?;
            }
            Ok(Outcome::Success)
        }
        None => {
            note(&format!("key {key:?} not found in {}", cache.endpoint()));
            Ok(Outcome::Partial)
        }
    }
}

pub async fn set(
    url: &str,
    key: &str,
    value: &str,
    ttl: Option<Duration>,
    if_absent: bool,
) -> anyhow::Result<Outcome> {
    let cache = open_url(url, false).await?;
    let bytes = if value == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("reading the value from stdin")?;
        b
    } else {
        value.as_bytes().to_vec()
    };
    if if_absent {
        let stored = cache.add(key, &bytes, ttl).await?;
        let done = if stored {
            format!("stored {key:?}")
        } else {
            format!("{key:?} was there, nothing stored")
        };
        close_after(&*cache, &done).await;
        if !stored {
            note(&format!(
                "key {key:?} already exists in {}; nothing written",
                cache.endpoint()
            ));
            return Ok(Outcome::Partial);
        }
        return Ok(Outcome::Success);
    }
    cache.set(key, &bytes, ttl).await?;
    close_after(&*cache, &format!("stored {key:?}")).await;
    Ok(Outcome::Success)
}

pub async fn incr(url: &str, key: &str, delta: i64) -> anyhow::Result<Outcome> {
    let cache = open_url(url, false).await?;
    let n = cache.incr(key, delta).await?;
    close_after(&*cache, &format!("{key:?} is now {n}")).await;
    stdout_write(format!("{n}\n").as_bytes())?;
    Ok(Outcome::Success)
}

pub async fn touch(url: &str, key: &str, ttl: Duration) -> anyhow::Result<Outcome> {
    let cache = open_url(url, true).await?;
    let touched = cache.touch(key, Some(ttl)).await?;
    let done = if touched { "touched" } else { "did not find" };
    close_after(&*cache, &format!("{done} {key:?}")).await;
    if touched {
        Ok(Outcome::Success)
    } else {
        note(&format!("key {key:?} not found in {}", cache.endpoint()));
        Ok(Outcome::Partial)
    }
}

pub async fn ttl(url: &str, key: &str) -> anyhow::Result<Outcome> {
    let cache = open_url(url, true).await?;
    let ttl = match cache.ttl(key).await {
        // A backend that reads TTLs only with the value.
        Err(e) if e.is_unsupported() => cache.get_with_ttl(key).await?.map(|v| v.ttl),
        other => other?,
    };
    match ttl {
        Some(Some(d)) => stdout_write(format!("{}\n", d.as_millis()).as_bytes())?,
        Some(None) => stdout_write(b"never\n")?,
        None => {
            note(&format!("key {key:?} not found in {}", cache.endpoint()));
            return Ok(Outcome::Partial);
        }
    }
    Ok(Outcome::Success)
}

pub async fn delete(url: &str, keys: &[String]) -> anyhow::Result<Outcome> {
    let cache = open_url(url, true).await?;
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let n = cache.delete_many(&refs).await?;
    close_after(&*cache, &format!("deleted {n} key(s)")).await;
    stdout_write(format!("{n}\n").as_bytes())?;
    Ok(if n > 0 {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

pub async fn clear(url: &str, all: bool) -> anyhow::Result<Outcome> {
    let cache = open_url(url, true).await?;
    if all {
        cache.clear_all().await?;
    } else {
        cache.clear().await?;
    }
    let what = if all {
        "cleared everything"
    } else {
        "cleared the namespace"
    };
    close_after(&*cache, what).await;
    Ok(Outcome::Success)
}

/// How `stats` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsFormat {
    /// The `Stats` object as pretty JSON.
    Json,
    /// The Prometheus text exposition.
    Prometheus,
}

pub async fn stats(url: &str, format: StatsFormat) -> anyhow::Result<Outcome> {
    if format == StatsFormat::Json {
        let cache = open_url(url, true).await?;
        let s = cache.stats().await?;
        let mut text = serde_json::to_string_pretty(&s)?;
        text.push('\n');
        stdout_write(text.as_bytes())?;
        return Ok(Outcome::Success);
    }
    super::observe(true);
    let handle = super::metrics::install()?;
    let cache = open_url(url, true).await?;
    let s = cache.stats().await?;
    publish_stats(&s, url);
    let text = super::metrics::render(&handle, &[cache]).await;
    stdout_write(text.as_bytes())?;
    Ok(Outcome::Success)
}

/// The cache's own counters and its backend's numeric figures (server INFO,
/// file sizes: top-level numbers of `server`) as gauges, labelled like the
/// observe layer's metrics plus `field`.
fn publish_stats(s: &unicache::Stats, url: &str) {
    let namespace = unicache::open::parse(url)
        .ok()
        .and_then(|p| p.options.namespace)
        .unwrap_or_default();
    let labels = |field: &str| {
        [
            ("backend", s.backend.clone()),
            ("namespace", namespace.clone()),
            ("field", field.to_string()),
        ]
    };
    let own = [
        ("hits", s.hits),
        ("misses", s.misses),
        ("sets", s.sets),
        ("deletes", s.deletes),
        ("errors", s.errors),
    ];
    for (field, v) in own {
        metrics::gauge!("unicache_cache_stat", &labels(field)).set(v as f64);
    }
    let Some(serde_json::Value::Object(server)) = &s.server else {
        return;
    };
    for (field, v) in server {
        if let Some(n) = v.as_f64() {
            metrics::gauge!("unicache_backend_stat", &labels(field)).set(n);
        }
    }
}

pub async fn compact(url: &str, quiet: bool) -> anyhow::Result<Outcome> {
    let cache = open_url(url, true).await?;
    cache.compact().await?;
    if quiet {
        return Ok(Outcome::Success);
    }
    let s = cache.stats().await?;
    let mut text = serde_json::to_string_pretty(&s)?;
    text.push('\n');
    stdout_write(text.as_bytes())?;
    Ok(Outcome::Success)
}
