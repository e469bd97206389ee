//! memory:// get with the observability layer off and on, same run, same
//! keys. Bar (issue 13): on at most 1.1x off.
//!
//! `off` is the cache as `unicache::open` returns it; `on` is the same cache
//! opened with `CacheOptions::observe(true)` while a Prometheus recorder is
//! installed (what `unicache write --metrics-addr` does), so every call
//! updates real counters; `on_no_recorder` is the layer with no recorder.
//!
//! cargo bench --bench metrics

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use std::hint::black_box;
use unicache::{Cache, CacheOptions};

const N: usize = 100_000;
const URL: &str = "memory://?capacity=200000";

fn open(observe: bool) -> Arc<dyn Cache> {
    let opts = CacheOptions::new().observe(observe);
    let c = unicache::open_with(URL, opts)
        .now_or_never()
        .unwrap()
        .unwrap();
    for i in 0..N {
        c.set(&format!("key:{i}"), &[7u8; 100], None)
            .now_or_never()
            .unwrap()
            .unwrap();
    }
    c
}

fn bench(c: &mut Criterion) {
    let keys: Vec<String> = (0..N).map(|i| format!("key:{i}")).collect();
    let mut g = c.benchmark_group("metrics");
    let plain = open(false);
    let bare_layer = open(true);
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let observed = open(true);
    let mut i = 0usize;
    for (name, cache) in [
        ("get/off", &plain),
        ("get/on", &observed),
        ("get/on_no_recorder", &bare_layer),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 7919) % N;
                black_box(cache.get(&keys[i]).now_or_never().unwrap().unwrap())
            })
        });
    }
    g.finish();
    // The counters did count (the bench measured real work).
    assert!(handle.render().contains("unicache_hits_total"));
}

criterion_group!(benches, bench);
criterion_main!(benches);
