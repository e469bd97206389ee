//! SQLite `set_many` of 1M records (keys `key:N`, 100-byte values) against a
//! raw rusqlite prepared INSERT OR REPLACE loop in one transaction on the same
//! schema, each into a fresh file, same run. Bar (issue #2): at least 0.8x.
//! Also single-key get on the filled store (compared by the file backend).
//!
//! Export (issue 8 item 24): `Cache::entries()` streaming every entry of a
//! 500k-row file (drained; and serialised as JSON lines like `export`)
//! against `sqlite3 -json FILE 'select key, value from cache'` on the same
//! file, same run. Bar: at least 0.8x sqlite3's speed.
//!
//! Bounded files (issue 21): with `UNICACHE_BENCH_BOUNDED=RUNS` only a file
//! bounded by `max_bytes` is measured against an unbounded one, RUNS times
//! each, alternating (`support/bounded.rs`): `set_many` of N records into a
//! fresh file bounded at half their size, and single `set`s on a file full
//! to its bound. Bars: at least 0.8x the throughput, at most 2x the p99.
//!
//! cargo bench --bench sqlite   (UNICACHE_BENCH_N=100000 for a quicker run)
//! UNICACHE_BENCH_BOUNDED=5 UNICACHE_BENCH_N=200000 cargo bench --bench sqlite
//! cargo bench --bench sqlite -- export   (UNICACHE_EXPORT_N, default 500000)

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use unicache::Cache;

#[path = "support/mod.rs"]
mod support;
use support::{data, n};

fn raw_insert(path: &std::path::Path, keys: &[String], value: &[u8]) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(unicache::bench_support::sqlite::SCHEMA)
        .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut st = tx.prepare(unicache::bench_support::sqlite::INSERT).unwrap();
        for k in keys {
            st.execute(rusqlite::params!["", k, value, None::<i64>])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// A SQLite file at `path`, bounded by `max_bytes` when given.
fn sqlite_with(path: &std::path::Path, max_bytes: Option<u64>) -> Box<dyn Cache> {
    let options = match max_bytes {
        Some(m) => unicache::CacheOptions::new().max_bytes(m),
        None => unicache::CacheOptions::new(),
    };
    let config =
        unicache::backends::sqlite::SqliteConfig::new(path).busy_timeout(Duration::from_secs(5));
    Box::new(unicache::backends::sqlite::SqliteCache::open(config, options).unwrap())
}

/// What entries take against a SQLite bound: key + value + the per-entry
/// overhead the README states (64 bytes).
fn counted_size(entries: &[(&str, &[u8])]) -> u64 {
    entries
        .iter()
        .map(|(k, v)| (k.len() + v.len() + 64) as u64)
        .sum()
}

fn bench(c: &mut Criterion) {
    if let Some(runs) = std::env::var("UNICACHE_BENCH_BOUNDED")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        let open = &sqlite_with;
        return support::bounded::compare("sqlite", runs, n(), (open, open), &counted_size);
    }
    let n = n();
    let (keys, value) = data(n);
    let entries = support::entries(&keys, &value);
    let mut g = c.benchmark_group(format!("sqlite_set_many_{n}"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("raw_rusqlite", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| raw_insert(&dir.path().join("raw.sqlite3"), &keys, &value),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("unicache_set_many", |b| {
        b.iter_custom(|iters| support::time_fresh_set_many(iters, &entries, support::sqlite))
    });
    g.finish();

    // Gets on a filled store.
    let dir = tempfile::tempdir().unwrap();
    let cache = support::sqlite(&dir.path().join("g.sqlite3"));
    cache
        .set_many(&entries, None)
        .now_or_never()
        .unwrap()
        .unwrap();
    let mut g = c.benchmark_group(format!("sqlite_get_{n}"));
    support::bench_get(&mut g, "unicache_get", &cache, &keys);
    g.finish();
}

fn bench_export(c: &mut Criterion) {
    use futures::StreamExt;
    let n: usize = std::env::var("UNICACHE_EXPORT_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.sqlite3");
    let cache = support::sqlite(&path);
    let keys: Vec<String> = (0..n).map(|i| format!("user:{i}")).collect();
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            format!(r#"{{"key":"user:{i}","name":"User {i}","email":"u{i}@example.com","n":{i}}}"#)
                .into_bytes()
        })
        .collect();
    let entries: Vec<(&str, &[u8])> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    for chunk in entries.chunks(50_000) {
        cache.set_many(chunk, None).now_or_never().unwrap().unwrap();
    }
    cache.flush().now_or_never().unwrap().unwrap();

    let mut g = c.benchmark_group(format!("sqlite_export_{n}"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("sqlite3_json", |b| {
        b.iter(|| {
            let st = std::process::Command::new("sqlite3")
                .arg("-json")
                .arg(&path)
                .arg("select key, value from cache")
                .stdout(std::process::Stdio::null())
                .status()
                .expect("sqlite3 on PATH");
            assert!(st.success());
        })
    });
    g.bench_function("unicache_entries", |b| {
        b.iter(|| {
            futures::executor::block_on(async {
                let mut s = cache.entries().await.unwrap();
                let mut count = 0usize;
                while let Some(e) = s.next().await {
                    count += e.unwrap().value.len();
                }
                count
            })
        })
    });
    g.bench_function("unicache_entries_to_jsonl", |b| {
        b.iter(|| {
            futures::executor::block_on(async {
                let mut out = std::io::BufWriter::new(std::io::sink());
                let mut s = cache.entries().await.unwrap();
                while let Some(e) = s.next().await {
                    let e = e.unwrap();
                    let v = std::str::from_utf8(&e.value).unwrap();
                    serde_json::to_writer(&mut out, &serde_json::json!({"key": e.key, "value": v}))
                        .unwrap();
                    std::io::Write::write_all(&mut out, b"\n").unwrap();
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_export);
criterion_main!(benches);
