//! The tiered cache against what it wraps, same run, same keys, on a
//! redis-server this bench starts on a free loopback port. Bars (issue 11):
//!
//! - `l1_hit/*`: a get answered by L1, through `Arc<dyn Cache>`, at most
//!   1.2x a plain `memory://` get, on the hot set (`*_hot1k`: 1,000 keys
//!   with stride 7) and on all 50,000 keys visited in a stride
//!   (`*_stride50k`: most lookups miss the CPU's caches; issue 25);
//! - `l2_hit/*`: an L1 miss (L1 TTL of 1 ms, keys cycling) that reads
//!   Redis and fills L1, at most 1.1x a plain Redis get;
//! - `get_many_1000/*`: 1,000 keys with half in L1 against a plain Redis
//!   `get_many` of the 500 others: one round trip costs the same.
//!
//! cargo bench --bench tiered

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use std::hint::black_box;
use unicache::Cache;

/// The test harness's server start-up (free port, ready check, killed on drop).
#[allow(dead_code)]
#[path = "../tests/common/servers.rs"]
mod servers;

#[path = "support/paired.rs"]
mod paired;

const N: usize = 1_000;
/// Keys of the strided L1 hits: all of them held in L1 and in `memory://`.
const BIG: usize = 50_000;
/// A prime that does not divide `BIG`: every key before one comes back.
const STRIDE: usize = 7919;

fn bench(c: &mut Criterion) {
    let server = servers::redis_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let big: Vec<String> = (0..BIG).map(|i| format!("key:{i}")).collect();
    // The hot set is the first N of them.
    let keys = big[..N].to_vec();
    let value = [7u8; 100];
    let base = format!("redis://127.0.0.1:{}?namespace=bench", server.port);
    let open = |u: String| -> Arc<dyn Cache> { rt.block_on(unicache::open(&u)).unwrap().into() };
    let memory = open("memory://?capacity=100000".into());
    // L1 entries always carry an expiry (the cap), so a hit reads the clock.
    let memory_ttl = open("memory://?capacity=100000&ttl=1h".into());
    let plain = open(base.clone());
    let tiered = open(format!("{base}&l1=100000&l1_ttl=1h"));
    // Misses without evictions: each key comes back after ~1,000 gets,
    // long after its 1 ms in L1.
    let one = open(format!("{base}&l1=10000&l1_ttl=1ms"));
    rt.block_on(async {
        for chunk in big.chunks(1_000) {
            let entries: Vec<(&str, &[u8])> =
                chunk.iter().map(|k| (k.as_str(), &value[..])).collect();
            memory.set_many(&entries, None).await.unwrap();
            memory_ttl.set_many(&entries, None).await.unwrap();
            plain.set_many(&entries, None).await.unwrap();
        }
        // `plain`'s writes publish invalidations: let them land before the
        // fill, or they would evict what it stored.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for chunk in big.chunks(1_000) {
            let ks: Vec<&str> = chunk.iter().map(String::as_str).collect();
            // Fills L1 (one L2 call per chunk).
            tiered.get_many(&ks).await.unwrap();
        }
    });
    let _in_rt = rt.enter();
    let missed = big
        .iter()
        .filter(|k| tiered.get(k).now_or_never().is_none())
        .count();
    drop(_in_rt);
    eprintln!("l1_hit: {missed} of {BIG} keys not in L1 after the fill");

    // memory:// and the L1 hit in alternation first (the ratios to read on
    // a shared machine), then each on its own through criterion.
    {
        let _in_rt = rt.enter();
        for (set, n, stride, iters) in [("hot1k", N, 7, 20_000), ("stride50k", BIG, STRIDE, 5_000)]
        {
            let (mut a, mut b) = (0usize, 0usize);
            paired::paired(
                &format!("l1_hit_{set}"),
                101,
                iters,
                || {
                    a = (a + stride) % n;
                    black_box(memory.get(&big[a]).now_or_never().unwrap().unwrap());
                },
                || {
                    b = (b + stride) % n;
                    let v = match tiered.get(&big[b]).now_or_never() {
                        Some(r) => r,
                        None => rt.block_on(tiered.get(&big[b])),
                    };
                    black_box(v.unwrap());
                },
            );
        }
    }

    let mut g = c.benchmark_group("l1_hit");
    let mut i = 0usize;
    for (set, n, stride) in [("hot1k", N, 7), ("stride50k", BIG, STRIDE)] {
        let keys = &big[..n];
        g.bench_function(format!("memory_plain_{set}"), |b| {
            b.iter(|| {
                i = (i + stride) % n;
                black_box(memory.get(&keys[i]).now_or_never().unwrap().unwrap())
            })
        });
        g.bench_function(format!("memory_plain_with_ttl_{set}"), |b| {
            b.iter(|| {
                i = (i + stride) % n;
                black_box(memory_ttl.get(&keys[i]).now_or_never().unwrap().unwrap())
            })
        });
        g.bench_function(format!("tiered_{set}"), |b| {
            // An L2 read polled below needs the runtime's timers.
            let _in_rt = rt.enter();
            b.iter(|| {
                i = (i + stride) % n;
                // A hit answers inline; while the backplane's freshness lease
                // has lapsed (its task ran late on a loaded machine) the read
                // goes to L2 instead, and is awaited.
                let v = match tiered.get(&keys[i]).now_or_never() {
                    Some(r) => r,
                    None => rt.block_on(tiered.get(&keys[i])),
                };
                black_box(v.unwrap())
            })
        });
    }
    g.finish();
    let s = rt.block_on(tiered.stats()).unwrap().tier.unwrap();
    eprintln!(
        "l1_hit/tiered: l1_hits {} l2_hits {} (the fill read {BIG})",
        s["l1_hits"], s["l2_hits"]
    );

    let mut g = c.benchmark_group("l2_hit");
    g.bench_function("redis_plain", |b| {
        b.iter(|| {
            i = (i + 7) % N;
            black_box(rt.block_on(plain.get(&keys[i])).unwrap())
        })
    });
    // What the tier asks L2 for: the value and its remaining TTL.
    g.bench_function("redis_plain_get_with_ttl", |b| {
        b.iter(|| {
            i = (i + 7) % N;
            black_box(rt.block_on(plain.get_with_ttl(&keys[i])).unwrap())
        })
    });
    g.bench_function("tiered_miss_and_fill", |b| {
        b.iter(|| {
            i = (i + 7) % N;
            black_box(rt.block_on(one.get(&keys[i])).unwrap())
        })
    });
    g.finish();
    let s = rt.block_on(one.stats()).unwrap().tier.unwrap();
    eprintln!(
        "l2_hit/tiered_miss_and_fill: l1_hits {} l2_hits {}",
        s["l1_hits"], s["l2_hits"]
    );

    let half: Vec<&str> = keys.iter().skip(N / 2).map(String::as_str).collect();
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut g = c.benchmark_group("get_many_1000");
    g.bench_function("redis_plain_500", |b| {
        b.iter(|| black_box(rt.block_on(plain.get_many(&half)).unwrap()))
    });
    g.bench_function("redis_plain_500_with_ttl", |b| {
        b.iter(|| black_box(rt.block_on(plain.get_many_with_ttl(&half)).unwrap()))
    });
    // A fresh L1 holding the first half each time: the other half is one
    // L2 call (get_many_with_ttl), then filled.
    let fresh = || {
        let t = open(format!("{base}&l1=10000&l1_ttl=1h"));
        rt.block_on(t.get_many(&all[..N / 2])).unwrap();
        t
    };
    g.bench_function("tiered_half_in_l1", |b| {
        b.iter_batched(
            fresh,
            |t| black_box(rt.block_on(t.get_many(&all)).unwrap()),
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
