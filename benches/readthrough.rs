//! `get_or_set` on a hit against a plain `get` of the same cache, same
//! keys, same run: on memory:// (bar: at most 1.2x) and on a loopback
//! Redis (bar: within noise). The two alternate, three rounds each, so a
//! drift of the machine shows in both. A hit is the backend's get plus a
//! zero-TTL check: no lock, no map lookup.
//!
//! cargo bench --bench readthrough   (starts its own redis-server)

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use unicache::{FactoryError, Fill};

/// The test harness's server start-up (free port, ready check, killed on drop).
#[allow(dead_code)]
#[path = "../tests/common/servers.rs"]
mod servers;

const N: usize = 10_000;
const ROUNDS: usize = 3;
const TTL: Option<Duration> = Some(Duration::from_secs(3600));

async fn never() -> Result<Fill, FactoryError> {
    Err("a hit must not run the factory".into())
}

fn keys() -> Vec<String> {
    (0..N).map(|i| format!("key:{i}")).collect()
}

fn memory(c: &mut Criterion) {
    let keys = keys();
    let h = unicache::open("memory://?capacity=20000")
        .now_or_never()
        .unwrap()
        .unwrap();
    for k in &keys {
        h.set(k, &[7u8; 100], None).now_or_never().unwrap().unwrap();
    }
    let mut g = c.benchmark_group("readthrough_memory");
    let mut i = 0usize;
    for round in 1..=ROUNDS {
        g.bench_function(format!("get/{round}"), |b| {
            b.iter(|| {
                i = (i + 7919) % N;
                let v: Option<Bytes> = h.get(&keys[i]).now_or_never().unwrap().unwrap();
                black_box(v)
            })
        });
        g.bench_function(format!("get_or_set_hit/{round}"), |b| {
            b.iter(|| {
                i = (i + 7919) % N;
                let f = h.get_or_set(&keys[i], TTL, never);
                black_box(f.now_or_never().unwrap().unwrap())
            })
        });
    }
    g.finish();
}

fn redis(c: &mut Criterion) {
    let server = servers::redis_server();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys = keys();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let h = rt.block_on(async {
        let h = unicache::open(&url).await.unwrap();
        let entries: Vec<(&str, &[u8])> =
            keys.iter().map(|k| (k.as_str(), &[7u8; 100][..])).collect();
        h.set_many(&entries, None).await.unwrap();
        h
    });
    let mut g = c.benchmark_group("readthrough_redis");
    let mut i = 0usize;
    for round in 1..=ROUNDS {
        g.bench_function(format!("get/{round}"), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 7919) % N;
                let (h, k) = (&h, &keys[i]);
                async move { black_box(h.get(k).await.unwrap()) }
            })
        });
        g.bench_function(format!("get_or_set_hit/{round}"), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 7919) % N;
                let (h, k) = (&h, &keys[i]);
                async move { black_box(h.get_or_set(k, TTL, never).await.unwrap()) }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = memory, redis
}
criterion_main!(benches);
