//! memory:// get with the observability layer off and on, same run, same
//! keys. Bar (issue 13): on at most 1.1x off.
//!
//! `off` is the cache as `unicache::open` returns it; `on` is the same cache
//! wrapped in the observe layer (what `CacheOptions::observe(true)` does)
//! while a Prometheus recorder is installed (as `unicache write
//! --metrics-addr` does), so every call updates real counters;
//! `on_no_recorder` is the layer with no recorder.
//!
//! cargo bench --bench metrics

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use std::hint::black_box;
use unicache::Cache;

const N: usize = 100_000;
const URL: &str = "memory://?capacity=200000";

fn open() -> Arc<dyn Cache> {
    let c = unicache::open(URL).now_or_never().unwrap().unwrap();
    for i in 0..N {
        c.set(&format!("key:{i}"), &[7u8; 100], None)
            .now_or_never()
            .unwrap()
            .unwrap();
    }
    c.into()
}

fn bench(c: &mut Criterion) {
    let keys: Vec<String> = (0..N).map(|i| format!("key:{i}")).collect();
    let mut g = c.benchmark_group("metrics");
    // One store under all three, so only the layer differs (separate
    // 100k-entry maps differ by where they sit in memory).
    let plain = open();
    let bare_layer = unicache::observe::instrument(plain.clone(), None);
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let observed = unicache::observe::instrument(plain.clone(), None);
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
    for chained in [false, true] {
        let on = "on (recorder)";
        interleaved(on, chained, &keys, &plain, &observed);
        interleaved("on (no recorder)", chained, &keys, &plain, &bare_layer);
        interleaved("control: off vs off", chained, &keys, &plain, &plain);
    }
    // The counters did count (the bench measured real work).
    assert!(handle.render().contains("unicache_hits_total"));
}

/// On this shared machine the load drifts between criterion's groups, so
/// the ratio is also taken from rounds that alternate off and on (100k gets
/// each, 41 rounds): the median of the per-round ratios.
fn interleaved(
    what: &str,
    chained: bool,
    keys: &[String],
    off: &Arc<dyn Cache>,
    on: &Arc<dyn Cache>,
) {
    // Independent lookups (the CPU overlaps their cache misses) or, with
    // `chained`, each key depending on the previous value (what one get
    // costs a caller that uses the value).
    let round = |c: &Arc<dyn Cache>| {
        let t = std::time::Instant::now();
        let mut i = 0usize;
        for _ in 0..100_000 {
            let v = c.get(&keys[i]).now_or_never().unwrap().unwrap();
            let step = if chained {
                v.map_or(0, |v| v.len())
            } else {
                100
            };
            i = (i + 7819 + step) % N;
        }
        t.elapsed().as_nanos() as f64 / 100_000.0
    };
    let mut ratios = Vec::new();
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    for r in 0..41 {
        // Alternate which goes first, so neither always runs warm.
        let (a, b) = if r % 2 == 0 {
            let a = round(off);
            (a, round(on))
        } else {
            let b = round(on);
            (round(off), b)
        };
        offs.push(a);
        ons.push(b);
        ratios.push(b / a);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "interleaved memory:// get{}, {what}, median of 41 rounds: off {:.1} ns, on {:.1} ns, ratio on/off {:.3}",
        if chained { " (chained)" } else { "" },
        med(&mut offs),
        med(&mut ons),
        med(&mut ratios)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
