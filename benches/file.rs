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
//!
//! With `UNICACHE_BENCH_BOUNDED=RUNS` only the bounded log is measured
//! against the unbounded one, RUNS times each, alternating (medians and
//! ratios printed): the latency of single `set`s on a log full to its
//! `max_bytes` (every set evicts) and `set_many` of N records into a fresh
//! log bounded at half their size (the second half evicts).
//!
//! With `UNICACHE_BENCH_REOPEN=RUNS` only reopening is measured: for each
//! key count in `UNICACHE_BENCH_SIZES` (default `1000000,5000000`) a log of
//! that many keys is written and closed (which writes its hint file), then
//! opened and read one key ("reopen to first get") RUNS times each way,
//! alternating: reading the whole log (`hint_min_bytes(None)`, the old
//! path) and mapping the hint. Medians, min and max are printed.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use unicache::backends::file::{FileCache, FileConfig, SyncPolicy};
use unicache::{Cache, CacheOptions};

#[path = "support/mod.rs"]
mod support;
use support::{file_log, n};

/// get and open on an existing log (see the module doc).
fn bench_log(c: &mut Criterion, path: &std::path::Path) {
    let n = n();
    let t = Instant::now();
    let f = file_log(path);
    eprintln!(
        "file: opened {} in {:.3} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    let (keys, _) = support::data(n);
    let mut g = c.benchmark_group(format!("log_get_{n}"));
    support::bench_get(&mut g, "file", &f, &keys);
    g.finish();
    drop(f);
    let mut g = c.benchmark_group(format!("log_open_{n}"));
    g.sample_size(10);
    g.bench_function("file_index_rebuild", |b| b.iter(|| file_log(path)));
    g.finish();
}

/// A log at `path` (`sync` as given, compaction at 50%), bounded by
/// `max_bytes` when given.
fn log_with(path: &std::path::Path, sync: SyncPolicy, max_bytes: Option<u64>) -> FileCache {
    let options = match max_bytes {
        Some(m) => CacheOptions::new().max_bytes(m),
        None => CacheOptions::new(),
    };
    FileCache::open(FileConfig::new(path).sync(sync).compact_ratio(50), options).unwrap()
}

/// The size of `n` records as a log (one unbounded write).
fn log_size(entries: &[(&str, &[u8])]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.log");
    log_with(&probe, SyncPolicy::Batch, None)
        .set_many(entries, None)
        .now_or_never()
        .unwrap()
        .unwrap();
    std::fs::metadata(&probe).unwrap().len()
}

/// The bounded-log comparison (see the module doc): set_many with one
/// fsync per batch, single sets with the default periodic sync.
fn bench_bounded(runs: usize) {
    let bulk = |p: &std::path::Path, bound: Option<u64>| -> Box<dyn Cache> {
        Box::new(log_with(p, SyncPolicy::Batch, bound))
    };
    let single = |p: &std::path::Path, bound: Option<u64>| -> Box<dyn Cache> {
        Box::new(log_with(p, SyncPolicy::Periodic, bound))
    };
    support::bounded::compare("file", runs, n(), (&bulk, &single), &log_size);
}

/// Reopen to first get, with and without the hint (see the module doc).
fn bench_reopen(runs: usize) {
    let sizes = std::env::var("UNICACHE_BENCH_SIZES").unwrap_or_else(|_| "1000000,5000000".into());
    for n in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))
            .unwrap();
        let path = dir.path().join("reopen.log");
        let (keys, value) = support::data(n);
        let t = Instant::now();
        {
            let f = file_log(&path);
            for chunk in keys.chunks(10_000) {
                let e = support::entries(chunk, &value);
                f.set_many(&e, None).now_or_never().unwrap().unwrap();
            }
        }
        let hint = std::fs::metadata(path.with_extension("log.hint")).map_or(0, |m| m.len());
        eprintln!(
            "reopen: {n} keys written and closed in {:.2} s: log {:.0} MB, hint {:.0} MB",
            t.elapsed().as_secs_f64(),
            std::fs::metadata(&path).unwrap().len() as f64 / 1e6,
            hint as f64 / 1e6
        );
        let probe = &keys[n / 2];
        let open_get = |hints: bool| {
            let t = Instant::now();
            let config = FileConfig::new(&path).sync(SyncPolicy::Batch);
            let config = if hints {
                config
            } else {
                config.hint_min_bytes(None)
            };
            let f = FileCache::open(config, Default::default()).unwrap();
            let v = f.get(probe).now_or_never().unwrap().unwrap();
            let took = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(v.as_deref(), Some(&value[..]));
            drop(f);
            took
        };
        let (mut old, mut new) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            old.push(open_get(false));
            new.push(open_get(true));
        }
        let show = |name: &str, v: &[f64]| {
            let lo = v.iter().copied().fold(f64::MAX, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            let m = support::bounded::median(v.to_vec());
            eprintln!(
                "reopen to first get, {n} keys, {name}: median {m:.1} ms (min {lo:.1}, max {hi:.1}, {runs} runs)"
            );
            m
        };
        let (o, h) = (show("whole log read", &old), show("hint mapped", &new));
        eprintln!(
            "reopen, {n} keys: the hint takes {:.3}x the time of reading the log",
            h / o
        );
    }
}

fn bench(c: &mut Criterion) {
    if let Some(runs) = std::env::var("UNICACHE_BENCH_REOPEN")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        return bench_reopen(runs);
    }
    if let Some(runs) = std::env::var("UNICACHE_BENCH_BOUNDED")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        return bench_bounded(runs);
    }
    if let Some(log) = std::env::var_os("UNICACHE_BENCH_LOG") {
        return bench_log(c, std::path::Path::new(&log));
    }
    let n = n();
    let (keys, value) = support::data(n);
    let entries = support::entries(&keys, &value);

    let mut g = c.benchmark_group(format!("set_many_{n}"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("file", |b| {
        b.iter_custom(|iters| support::time_fresh_set_many(iters, &entries, file_log))
    });
    g.bench_function("sqlite", |b| {
        b.iter_custom(|iters| support::time_fresh_set_many(iters, &entries, support::sqlite))
    });
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let fpath = dir.path().join("g.log");
    let t = Instant::now();
    let f = file_log(&fpath);
    f.set_many(&entries, None).now_or_never().unwrap().unwrap();
    let write_time = t.elapsed();
    let bytes = std::fs::metadata(&fpath).unwrap().len();
    eprintln!(
        "file: wrote {n} records, {:.1} MB in {:.3} s ({:.0} MB/s)",
        bytes as f64 / 1e6,
        write_time.as_secs_f64(),
        bytes as f64 / 1e6 / write_time.as_secs_f64()
    );
    let s = support::sqlite(&dir.path().join("g.sqlite3"));
    s.set_many(&entries, None).now_or_never().unwrap().unwrap();

    let mut g = c.benchmark_group(format!("get_{n}"));
    support::bench_get(&mut g, "file", &f, &keys);
    support::bench_get(&mut g, "sqlite", &s, &keys);
    g.finish();

    let mut g = c.benchmark_group(format!("open_{n}"));
    g.sample_size(10);
    g.bench_function("file_index_rebuild", |b| b.iter(|| file_log(&fpath)));
    g.finish();
    eprintln!(
        "file: writing the store took {:.3} s (open must be below)",
        write_time.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
