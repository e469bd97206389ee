//! memory:// through `Arc<dyn Cache>` against the raw quick_cache map it wraps,
//! same run, same keys. Bars: within 1.5x per get and per set (issue #2);
//! a get within 1.15x, on the hot set (`*_hot1k`: 1,000 keys) and on all
//! 50,000 keys visited in a stride (`*_stride50k`: most lookups miss the
//! CPU's caches) (issue 25).
//!
//! `get_latency/*` chains each lookup on the previous value (the next key
//! depends on it), which is what one operation costs a caller that uses the
//! value. `get/*` issues independent lookups, whose cache misses the CPU can
//! overlap; any extra instructions per call (the trait's dispatch) shrink
//! that overlap, so this ratio is the harsher of the two.
//!
//! `blocking_*` is the sync facade (`unicache::blocking::Cache`) over the same
//! cache: memory is `inline`, so it answers on the caller's thread.
//!
//! cargo bench --bench memory

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use std::hint::black_box;
use unicache::Cache;

#[path = "support/paired.rs"]
mod paired;

/// Keys in the cache; the strided runs visit all of them, so most lookups
/// miss the CPU's caches (as a large working set does).
const N: usize = 50_000;
/// A prime that does not divide `N`: the stride visits every key before
/// it comes back to one.
const STRIDE: usize = 7919;
/// The hot set: the first `HOT` keys, visited with stride 7, so everything
/// they touch stays in the CPU's caches.
const HOT: usize = 1_000;

fn keys() -> Vec<String> {
    (0..N).map(|i| format!("key:{i}")).collect()
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let value = vec![7u8; 100];
    let mut g = c.benchmark_group("memory");

    let raw: quick_cache::sync::Cache<String, Bytes> = quick_cache::sync::Cache::new(N * 2);
    let concrete = Arc::new(unicache::backends::memory::MemoryCache::open(
        unicache::backends::memory::MemoryConfig::new().capacity((N * 2) as u64),
        Default::default(),
    ));
    let cache: Arc<dyn Cache> = concrete.clone();
    for k in &keys {
        raw.insert(k.clone(), Bytes::copy_from_slice(&value));
        cache.set(k, &value, None).now_or_never().unwrap().unwrap();
    }

    // Raw map and unicache in alternation first (the ratios to read on a
    // shared machine), then each on its own through criterion.
    for (set, n, stride, iters) in [("hot1k", HOT, 7, 20_000), ("stride50k", N, STRIDE, 5_000)] {
        let (mut a, mut b) = (0usize, 0usize);
        paired::paired(
            &format!("memory_get_{set}"),
            101,
            iters,
            || {
                a = (a + stride) % n;
                black_box(raw.get(keys[a].as_str()));
            },
            || {
                b = (b + stride) % n;
                black_box(cache.get(&keys[b]).now_or_never().unwrap().unwrap());
            },
        );
        let (mut a, mut b) = (0usize, 0usize);
        paired::paired(
            &format!("memory_get_latency_{set}"),
            101,
            iters,
            || {
                let v = raw.get(keys[a].as_str()).unwrap();
                a = (a + stride + v.len()) % n;
            },
            || {
                let v = cache
                    .get(&keys[b])
                    .now_or_never()
                    .unwrap()
                    .unwrap()
                    .unwrap();
                b = (b + stride + v.len()) % n;
            },
        );
    }

    let mut i = 0usize;
    // The same four measurements on the hot set and on every key, strided,
    // each raw map beside unicache's get.
    for (set, n, stride) in [("hot1k", HOT, 7), ("stride50k", N, STRIDE)] {
        g.bench_function(format!("get_{set}/raw_quick_cache"), |b| {
            b.iter(|| {
                i = (i + stride) % n;
                black_box(raw.get(keys[i].as_str()))
            })
        });
        g.bench_function(format!("get_{set}/unicache_dyn"), |b| {
            b.iter(|| {
                i = (i + stride) % n;
                black_box(cache.get(&keys[i]).now_or_never().unwrap().unwrap())
            })
        });
        g.bench_function(format!("get_latency_{set}/raw_quick_cache"), |b| {
            b.iter(|| {
                let v = raw.get(keys[i % n].as_str()).unwrap();
                i = (i + stride + v.len()) % n;
            })
        });
        g.bench_function(format!("get_latency_{set}/unicache_dyn"), |b| {
            b.iter(|| {
                let v = cache
                    .get(&keys[i % n])
                    .now_or_never()
                    .unwrap()
                    .unwrap()
                    .unwrap();
                i = (i + stride + v.len()) % n;
            })
        });
    }
    g.bench_function("get/unicache_static_dispatch", |b| {
        b.iter(|| {
            i = (i + STRIDE) % N;
            black_box(
                Cache::get(&*concrete, &keys[i])
                    .now_or_never()
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    g.bench_function("get/unicache_concrete_sync", |b| {
        b.iter(|| {
            i = (i + STRIDE) % N;
            black_box(concrete.get_now(&keys[i]))
        })
    });
    g.bench_function("set/raw_quick_cache", |b| {
        b.iter(|| {
            i = (i + STRIDE) % N;
            raw.insert(keys[i].clone(), Bytes::copy_from_slice(black_box(&value)))
        })
    });
    g.bench_function("set/unicache_dyn", |b| {
        b.iter(|| {
            i = (i + STRIDE) % N;
            cache
                .set(&keys[i], black_box(&value), None)
                .now_or_never()
                .unwrap()
                .unwrap()
        })
    });
    // The sync facade over the same cache (what a program without a runtime calls).
    let sync = unicache::blocking::Cache::from_async(cache.clone()).unwrap();
    g.bench_function("blocking_get/unicache", |b| {
        b.iter(|| {
            i = (i + STRIDE) % N;
            black_box(sync.get(&keys[i]).unwrap())
        })
    });
    g.bench_function("blocking_set/unicache", |b| {
        b.iter(|| {
            i = (i + STRIDE) % N;
            sync.set(&keys[i], black_box(&value), None).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
