use super::*;
use futures::FutureExt;

/// The process's recorder, installed once for every test here.
fn handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static H: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    H.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("recorder")
    })
}

/// The value of the sample `name{...label...}` whose labels contain `has`.
fn sample(text: &str, name: &str, has: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| has.iter().all(|h| l.contains(h)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn layer_counts_hits_misses_bytes_errors_and_evictions() {
    let h = handle();
    let c = crate::open("memory://?capacity=2&namespace=t1&observe=1")
        .now_or_never()
        .unwrap()
        .unwrap();
    let run = |f: CacheFuture<'_, ()>| f.now_or_never().unwrap();
    run(c.set("a", b"12345", None)).unwrap();
    assert!(c.get("a").now_or_never().unwrap().unwrap().is_some());
    assert!(c.get("zz").now_or_never().unwrap().unwrap().is_none());
    let err = run(c.set("b", b"x", Some(Duration::ZERO))).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    let many = c.get_many(&["a", "q"]).now_or_never().unwrap().unwrap();
    assert_eq!(many.len(), 2);
    for k in ["c", "d", "e", "f"] {
        run(c.set(k, b"v", None)).unwrap();
    }
    let stats = c.stats().now_or_never().unwrap().unwrap();
    let text = h.render();
    let ns = "namespace=\"t1\"";
    let get = "operation=\"get\"";
    assert_eq!(
        sample(&text, "unicache_hits_total", &[ns, get]),
        1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "unicache_misses_total", &[ns, get]), 1.0);
    assert_eq!(sample(&text, "unicache_bytes_read_total", &[ns, get]), 5.0);
    let gm = "operation=\"get_many\"";
    assert_eq!(sample(&text, "unicache_hits_total", &[ns, gm]), 1.0);
    assert_eq!(sample(&text, "unicache_misses_total", &[ns, gm]), 1.0);
    assert_eq!(sample(&text, "unicache_keys_total", &[ns, gm]), 2.0);
    let set = "operation=\"set\"";
    assert_eq!(sample(&text, "unicache_operations_total", &[ns, set]), 6.0);
    assert_eq!(
        sample(&text, "unicache_bytes_written_total", &[ns, set]),
        9.0
    );
    let kind = "kind=\"InvalidInput\"";
    assert_eq!(
        sample(&text, "unicache_errors_total", &[ns, set, kind]),
        1.0
    );
    // Evictions come from the backend's own figures, published on stats().
    assert!(stats.evictions > 0);
    let ev = sample(&text, "unicache_evictions_total", &[ns]);
    assert_eq!(ev, stats.evictions as f64);
    // Never a key in a label.
    assert!(!text.contains("\"zz\""));
}

#[test]
fn without_the_switch_there_is_no_layer() {
    let c = crate::open("memory://").now_or_never().unwrap().unwrap();
    assert!(!format!("{:?}", c.cache()).contains("Observed"));
    let c = crate::Stack::from_url("memory://")
        .unwrap()
        .observe(true)
        .open()
        .now_or_never()
        .unwrap()
        .unwrap();
    assert!(format!("{:?}", c.cache()).starts_with("Observed"));
}

/// Gets from many threads (more than there are slots, and threads that
/// exit and hand their slot on) all reach the facade: after `stats()` the
/// figures are exact.
#[test]
fn per_thread_counts_from_many_threads_add_up_exactly() {
    let h = handle();
    let opts = crate::CacheOptions::new().namespace("t3");
    let c = crate::Stack::from_url("memory://?observe=1")
        .unwrap()
        .options(opts)
        .open()
        .now_or_never()
        .unwrap()
        .unwrap();
    c.set("k", b"abc", None).now_or_never().unwrap().unwrap();
    let threads = local::SLOTS + 6;
    std::thread::scope(|s| {
        for t in 0..threads {
            let c = &c;
            s.spawn(move || {
                for i in 0..(1000 + t) {
                    let key = if i % 3 == 0 { "absent" } else { "k" };
                    c.get(key).now_or_never().unwrap().unwrap();
                }
            });
        }
    });
    // A second wave reuses the slots the first gave back.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5000 {
                    c.contains("k").now_or_never().unwrap().unwrap();
                }
            });
        }
    });
    let gets: usize = (0..threads).map(|t| 1000 + t).sum();
    let misses: usize = (0..threads).map(|t| (1000 + t).div_ceil(3)).sum();
    c.stats().now_or_never().unwrap().unwrap();
    let text = h.render();
    let ns = "namespace=\"t3\"";
    let get = "operation=\"get\"";
    let f = |name, op| sample(&text, name, &[ns, op]);
    assert_eq!(f("unicache_operations_total", get), gets as f64, "{text}");
    assert_eq!(f("unicache_misses_total", get), misses as f64);
    assert_eq!(f("unicache_hits_total", get), (gets - misses) as f64);
    assert_eq!(
        f("unicache_bytes_read_total", get),
        3.0 * (gets - misses) as f64
    );
    let contains = "operation=\"contains\"";
    assert_eq!(f("unicache_operations_total", contains), 20_000.0);
    // Dropping the cache hands on what it counted since.
    c.get("k").now_or_never().unwrap().unwrap();
    drop(c);
    let text = h.render();
    assert_eq!(
        sample(&text, "unicache_operations_total", &[ns, get]),
        gets as f64 + 1.0
    );
}
