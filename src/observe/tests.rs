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
    let opts = crate::CacheOptions::new().namespace("t1").observe(true);
    let c = crate::open_with("memory://?capacity=2", opts)
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
    let opts = crate::CacheOptions::new().observe(true);
    let c = crate::open_with("memory://", opts)
        .now_or_never()
        .unwrap()
        .unwrap();
    assert!(format!("{:?}", c.cache()).starts_with("Observed"));
}
