//! The file log store against the SQLite backend on the same data, same run
//! (issue #3): set_many of 1M records (keys `key:N`, 100-byte values, default
//! durability: one fsync per batch), get on a 1M-entry store, and opening a
//! 1M-entry store (index rebuild) next to the time it took to write it.
//!
//! cargo bench --bench file   (UNICACHE_BENCH_N=100000 for a quicker run)
//!
//! With `UNICACHE_BENCH_LOG=PATH` (a log of keys `key:0`..`key:N-1`, as
//! `scripts/bench_file.sh` writes it, N from `UNICACHE_BENCH_N`) only get and
//! open run, on that log: the index at 10M keys. Compare two builds with
//! criterion's `--save-baseline main` / `--baseline main`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use unicache::Cache;
use unicache::backends::file::{FileCache, FileConfig, SyncPolicy};
use unicache::backends::sqlite::{SqliteCache, SqliteConfig};

fn n() -> usize {
    std::env::var("UNICACHE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// get and open on an existing log (see the module doc).
fn bench_log(c: &mut Criterion, path: &std::path::Path) {
    let n = n();
    let t = Instant::now();
    let f = FileCache::open(
        FileConfig::new(path)
            .sync(SyncPolicy::Batch)
            .compact_ratio(50),
        Default::default(),
    )
    .unwrap();
    eprintln!(
        "file: opened {} in {:.3} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    let keys: Vec<String> = (0..n).map(|i| format!("key:{i}")).collect();
    let mut g = c.benchmark_group(format!("log_get_{n}"));
    let mut i = 0usize;
    g.bench_function("file", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            f.get(&keys[i]).now_or_never().unwrap().unwrap().unwrap()
        })
    });
    g.finish();
    drop(f);
    let mut g = c.benchmark_group(format!("log_open_{n}"));
    g.sample_size(10);
    g.bench_function("file_index_rebuild", |b| {
        b.iter(|| {
            FileCache::open(
                FileConfig::new(path)
                    .sync(SyncPolicy::Batch)
                    .compact_ratio(50),
                Default::default(),
            )
            .unwrap()
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    if let Some(log) = std::env::var_os("UNICACHE_BENCH_LOG") {
        return bench_log(c, std::path::Path::new(&log));
    }
    let n = n();
    let keys: Vec<String> = (0..n).map(|i| format!("key:{i}")).collect();
    let value = vec![b'x'; 100];
    let entries: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|k| (k.as_str(), value.as_slice()))
        .collect();

    let mut g = c.benchmark_group(format!("set_many_{n}"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("file", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let t = Instant::now();
                let f = FileCache::open(
                    FileConfig::new(dir.path().join("f.log"))
                        .sync(SyncPolicy::Batch)
                        .compact_ratio(50),
                    Default::default(),
                )
                .unwrap();
                f.set_many(&entries, None).now_or_never().unwrap().unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.bench_function("sqlite", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let t = Instant::now();
                let s = SqliteCache::open(
                    SqliteConfig::new(dir.path().join("s.sqlite3"))
                        .busy_timeout(Duration::from_secs(5)),
                    Default::default(),
                )
                .unwrap();
                s.set_many(&entries, None).now_or_never().unwrap().unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let fpath = dir.path().join("g.log");
    let t = Instant::now();
    let f = FileCache::open(
        FileConfig::new(&fpath)
            .sync(SyncPolicy::Batch)
            .compact_ratio(50),
        Default::default(),
    )
    .unwrap();
    f.set_many(&entries, None).now_or_never().unwrap().unwrap();
    let write_time = t.elapsed();
    let bytes = std::fs::metadata(&fpath).unwrap().len();
    eprintln!(
        "file: wrote {n} records, {:.1} MB in {:.3} s ({:.0} MB/s)",
        bytes as f64 / 1e6,
        write_time.as_secs_f64(),
        bytes as f64 / 1e6 / write_time.as_secs_f64()
    );
    let s = SqliteCache::open(
        SqliteConfig::new(dir.path().join("g.sqlite3")).busy_timeout(Duration::from_secs(5)),
        Default::default(),
    )
    .unwrap();
    s.set_many(&entries, None).now_or_never().unwrap().unwrap();

    let mut g = c.benchmark_group(format!("get_{n}"));
    let mut i = 0usize;
    g.bench_function("file", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            f.get(&keys[i]).now_or_never().unwrap().unwrap()
        })
    });
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            s.get(&keys[i]).now_or_never().unwrap().unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("open_{n}"));
    g.sample_size(10);
    g.bench_function("file_index_rebuild", |b| {
        b.iter(|| {
            FileCache::open(
                FileConfig::new(&fpath)
                    .sync(SyncPolicy::Batch)
                    .compact_ratio(50),
                Default::default(),
            )
            .unwrap()
        })
    });
    g.finish();
    eprintln!(
        "file: writing the store took {:.3} s (open must be below)",
        write_time.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
