//! The bounded-store comparison the file and SQLite benches share (issue
//! 21's bars): a store bounded against the same store unbounded, `runs`
//! times each, alternating, medians and ratios printed. Two parts:
//! `set_many` of `n` records into a fresh store bounded at half their size
//! (the second half evicts; in one call, or in batches of
//! `UNICACHE_BENCH_BATCH`), and the latency of single `set`s on a store
//! full to its bound (every set evicts).

use std::path::Path;
use std::time::{Duration, Instant};

use futures::FutureExt;
use unicache::Cache;

/// Opens a store at a path, bounded at `Some(max_bytes)` or not.
pub type Open<'a> = &'a dyn Fn(&Path, Option<u64>) -> Box<dyn Cache>;

/// What a set of entries takes against a `max_bytes` bound.
pub type Size<'a> = &'a dyn Fn(&[(&str, &[u8])]) -> u64;

/// Percentile `p` (0..=100) of sorted `v`.
fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Both parts (see the module doc); `UNICACHE_BENCH_BOUNDED_PART=set_many|set`
/// runs one only. `bulk` opens the stores `set_many` writes, `single` those
/// of the single sets (a file log syncs each batch in one, periodically in
/// the other); `size` is what a set of entries takes against the bound.
pub fn compare(
    label: &str,
    runs: usize,
    n: usize,
    (bulk, single): (Open<'_>, Open<'_>),
    size: Size<'_>,
) {
    let part = std::env::var("UNICACHE_BENCH_BOUNDED_PART").unwrap_or_default();
    if part != "set" {
        set_many(label, runs, n, bulk, size);
    }
    if part != "set_many" {
        single_sets(label, runs, n, single, size);
    }
}

/// `set_many` of `n` records into a fresh store, unbounded and bounded at
/// half their size.
fn set_many(label: &str, runs: usize, n: usize, open: Open<'_>, size: Size<'_>) {
    let (keys, value) = super::data(n);
    let entries = super::entries(&keys, &value);
    let half = size(&entries) / 2;
    // `UNICACHE_BENCH_BATCH=1000` writes in batches as `unicache write`
    // does; by default one `set_many` of all.
    let batch = std::env::var("UNICACHE_BENCH_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(n)
        .max(1);
    let (mut plain, mut bounded) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for (bound, out) in [(None, &mut plain), (Some(half), &mut bounded)] {
            let dir = tempfile::tempdir().unwrap();
            let t = Instant::now();
            let c = open(&dir.path().join("store"), bound);
            for chunk in entries.chunks(batch) {
                c.set_many(chunk, None).now_or_never().unwrap().unwrap();
            }
            let d = t.elapsed();
            let rate = n as f64 / d.as_secs_f64();
            eprintln!(
                "{label} run {run}: set_many {n} (batches of {batch}) bounded={bound:?}: {:.3} s, {rate:.0} records/s",
                d.as_secs_f64()
            );
            out.push(rate);
        }
    }
    let (p, b) = (median(plain), median(bounded));
    eprintln!(
        "{label} set_many {n} (batches of {batch}): median {p:.0} records/s unbounded, {b:.0} bounded at {half} bytes: ratio {:.2}",
        b / p
    );
}

/// Single `set`s of `m` new keys on a store first filled with `m` others,
/// bounded at what those take (each set evicts) or not. Returns (p50, p99,
/// p99.9, max) in µs.
fn latency(open: Open<'_>, m: usize, bound: Option<u64>) -> [f64; 4] {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir.path().join("store"), bound);
    let (keys, value) = super::data(2 * m);
    let fill = super::entries(&keys[..m], &value);
    c.set_many(&fill, None).now_or_never().unwrap().unwrap();
    let mut times = Vec::with_capacity(m);
    for k in &keys[m..] {
        let t = Instant::now();
        c.set(k, &value, None).now_or_never().unwrap().unwrap();
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    [
        us(pct(&times, 50.0)),
        us(pct(&times, 99.0)),
        us(pct(&times, 99.9)),
        us(times[m - 1]),
    ]
}

/// Single `set`s on a store full to its bound, against the same unbounded.
fn single_sets(label: &str, runs: usize, n: usize, open: Open<'_>, size: Size<'_>) {
    let m = (n / 5).max(1000);
    let (keys, value) = super::data(m);
    let bound = size(&super::entries(&keys, &value));
    let (mut p99_plain, mut p99_bounded) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let a = latency(open, m, None);
        let b = latency(open, m, Some(bound));
        eprintln!(
            "{label} run {run}: single set µs [p50, p99, p99.9, max]: unbounded {a:.1?}, bounded {b:.1?}"
        );
        p99_plain.push(a[1]);
        p99_bounded.push(b[1]);
    }
    let (a, b) = (median(p99_plain), median(p99_bounded));
    eprintln!(
        "{label} single set p99: median {a:.2} µs unbounded, {b:.2} µs bounded: ratio {:.2}",
        b / a
    );
}
