//! memory:// through `Arc<dyn Cache>` against the raw quick_cache map it wraps,
//! same run, same keys. Bar (issue #2): within 1.5x per get and per set.
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

const N: usize = 100_000;

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

    let mut i = 0usize;
    g.bench_function("get/raw_quick_cache", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(raw.get(keys[i].as_str()))
        })
    });
    g.bench_function("get/unicache_dyn", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(cache.get(&keys[i]).now_or_never().unwrap().unwrap())
        })
    });
    g.bench_function("get_latency/raw_quick_cache", |b| {
        b.iter(|| {
            let v = raw.get(keys[i].as_str()).unwrap();
            i = (i + 7919 + v.len()) % N;
        })
    });
    g.bench_function("get_latency/unicache_dyn", |b| {
        b.iter(|| {
            let v = cache
                .get(&keys[i])
                .now_or_never()
                .unwrap()
                .unwrap()
                .unwrap();
            i = (i + 7919 + v.len()) % N;
        })
    });
    g.bench_function("get/unicache_static_dispatch", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
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
            i = (i + 7919) % N;
            black_box(concrete.get_now(&keys[i]))
        })
    });
    g.bench_function("set/raw_quick_cache", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            raw.insert(keys[i].clone(), Bytes::copy_from_slice(black_box(&value)))
        })
    });
    g.bench_function("set/unicache_dyn", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
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
            i = (i + 7919) % N;
            black_box(sync.get(&keys[i]).unwrap())
        })
    });
    g.bench_function("blocking_set/unicache", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            sync.set(&keys[i], black_box(&value), None).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
