//! Helpers the criterion benches share; each includes this file with
//! `#[path = "support/mod.rs"] mod support;`.
#![allow(dead_code)]

pub mod bounded;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use futures::FutureExt;
use unicache::Cache;
use unicache::backends::file::{FileCache, FileConfig, SyncPolicy};
use unicache::backends::sqlite::{SqliteCache, SqliteConfig};

/// Records per run: `UNICACHE_BENCH_N`, default 1M.
pub fn n() -> usize {
    std::env::var("UNICACHE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// Keys `key:0`..`key:{n-1}` and the one 100-byte value every bench stores.
pub fn data(n: usize) -> (Vec<String>, Vec<u8>) {
    (
        (0..n).map(|i| format!("key:{i}")).collect(),
        vec![b'x'; 100],
    )
}

/// Each key with `value`, as `set_many` takes them.
pub fn entries<'a>(keys: &'a [String], value: &'a [u8]) -> Vec<(&'a str, &'a [u8])> {
    keys.iter().map(|k| (k.as_str(), value)).collect()
}

/// A SQLite store at `path` (5 s busy timeout, default options).
pub fn sqlite(path: &Path) -> SqliteCache {
    SqliteCache::open(
        SqliteConfig::new(path).busy_timeout(Duration::from_secs(5)),
        Default::default(),
    )
    .unwrap()
}

/// A file log at `path` (one fsync per batch, compaction at 50%).
pub fn file_log(path: &Path) -> FileCache {
    FileCache::open(
        FileConfig::new(path)
            .sync(SyncPolicy::Batch)
            .compact_ratio(50),
        Default::default(),
    )
    .unwrap()
}

/// Total time of `iters` runs of: open a store with `open` in a fresh temp
/// dir, then one `set_many` of `entries` (directory clean-up not timed).
pub fn time_fresh_set_many<C: Cache>(
    iters: u64,
    entries: &[(&str, &[u8])],
    open: impl Fn(&Path) -> C,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let cache = open(&dir.path().join("store"));
        cache
            .set_many(entries, None)
            .now_or_never()
            .unwrap()
            .unwrap();
        total += t.elapsed();
    }
    total
}

/// Benchmarks `name` in `g`: one get per iteration on `cache`, which holds
/// every key of `keys`, striding through them by a prime so consecutive gets
/// hit unrelated keys. A miss fails the bench: it would time the wrong path.
pub fn bench_get<C: Cache + ?Sized>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    cache: &C,
    keys: &[String],
) {
    let mut i = 0usize;
    g.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            cache
                .get(&keys[i])
                .now_or_never()
                .expect("a local store answers at once")
                .unwrap()
                .expect("the key was stored")
        })
    });
}
