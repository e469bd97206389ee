//! Fail-safe, the soft factory timeout, refresh-ahead and the value
//! envelope they need, on real servers and real files.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::servers::{self, redis_cli, shared_redis};
use futures::StreamExt;
use unicache::{ErrorKind, FactoryError, Fill, Handle};

const LIMIT: Duration = Duration::from_secs(60);
const SHORT: Option<Duration> = Some(Duration::from_millis(300));
const FS: &str = "fail_safe=1&fail_safe_max=1h&fail_safe_throttle=2s";

fn redis_url(port: u16, ns: &str, q: &str) -> String {
    format!("redis://127.0.0.1:{port}?namespace={ns}&{q}")
}

async fn ok(v: &'static str) -> Result<Fill, FactoryError> {
    Ok(Fill::Cache(v.into()))
}

async fn fail() -> Result<Fill, FactoryError> {
    Err("origin down".into())
}

/// Stores `v1` with a short TTL and waits past its logical expiry.
async fn cache_then_expire(h: &Handle, key: &str) {
    let v = h.get_or_set(key, SHORT, || ok("v1")).await.unwrap();
    assert_eq!(&v[..], b"v1");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        h.get(key).await.unwrap(),
        None,
        "logically expired is a miss"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_off_keeps_raw_bytes_on_redis() {
    let port = shared_redis().port;
    let ns = common::unique_ns("fs");
    let h = unicache::open(&redis_url(port, &ns, "lock=local"))
        .await
        .unwrap();
    h.get_or_set("k", None, || ok("plain")).await.unwrap();
    assert_eq!(redis_cli(port, &["GET", &format!("{ns}:k")]), "plain");
    assert!(h.read_through_stats().fail_safe_served == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_on_get_and_export_show_the_plain_value() {
    let port = shared_redis().port;
    let ns = common::unique_ns("fs");
    let url = redis_url(port, &ns, FS);
    let h = unicache::open(&url).await.unwrap();
    h.set("k", b"plain", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    // On the server: header (magic F5 "uce", version 2, expiry, TTL,
    // check) + value, physically kept fail_safe_max longer.
    let raw = redis_cli(port, &["--no-raw", "GET", &format!("{ns}:k")]);
    assert!(
        raw.starts_with("\"\\xf5uce\\x02") && raw.ends_with("plain\""),
        "{raw}"
    );
    let pttl: u64 = redis_cli(port, &["PTTL", &format!("{ns}:k")])
        .parse()
        .unwrap();
    assert!(pttl > 3_600_000 && pttl <= 3_660_000, "{pttl}");
    assert_eq!(&h.get("k").await.unwrap().unwrap()[..], b"plain");
    assert_eq!(
        h.get_many(&["k", "x"]).await.unwrap()[0].as_deref(),
        Some(&b"plain"[..])
    );
    let vt = h.get_with_ttl("k").await.unwrap().unwrap();
    assert_eq!(&vt.value[..], b"plain");
    assert!(vt.ttl.unwrap() <= Duration::from_secs(60), "{:?}", vt.ttl);
    // Counters stay plain decimal text.
    assert_eq!(h.incr("n", 5).await.unwrap(), 5);
    assert_eq!(redis_cli(port, &["GET", &format!("{ns}:n")]), "5");
    assert_eq!(&h.get("n").await.unwrap().unwrap()[..], b"5");
    let entries: Vec<_> = h.entries().await.unwrap().collect().await;
    let mut got: Vec<(String, Vec<u8>)> = entries
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| (e.key, e.value.to_vec()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("k".into(), b"plain".to_vec()), ("n".into(), b"5".to_vec())]
    );
    // The CLI's export reads through the same layer.
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("e.jsonl");
    let out = common::unicache()
        .args(["export", "-q", "-c", &url, "-o"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let text = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        text.contains("plain") && !text.contains("\\u00f5"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_value_served_and_flagged_on_redis_then_throttled() {
    tokio::time::timeout(LIMIT, async {
        let port = shared_redis().port;
        let ns = common::unique_ns("fs");
        let h = unicache::open(&redis_url(port, &ns, FS)).await.unwrap();
        cache_then_expire(&h, "k").await;
        let runs = Arc::new(AtomicUsize::new(0));
        let failing = |runs: &Arc<AtomicUsize>| {
            let runs = runs.clone();
            move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                fail().await
            }
        };
        let got = h
            .get_or_set_with_info("k", SHORT, failing(&runs))
            .await
            .unwrap();
        assert_eq!((&got.value[..], got.stale), (&b"v1"[..], true));
        assert_eq!(h.read_through_stats().fail_safe_served, 1);
        // Within the throttle (2 s) the stale value is a hit: no factory run.
        for _ in 0..5 {
            let got = h
                .get_or_set_with_info("k", SHORT, failing(&runs))
                .await
                .unwrap();
            assert_eq!((&got.value[..], got.stale), (&b"v1"[..], false));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Past the throttle the factory is tried again (and here succeeds).
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let v = h.get_or_set("k", SHORT, || ok("v2")).await.unwrap();
        assert_eq!(&v[..], b"v2");
        // Without fail-safe the same failure is the factory's error.
        let plain = unicache::open(&redis_url(port, &ns, "lock=local"))
            .await
            .unwrap();
        let e = plain.get_or_set("gone", SHORT, fail).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Factory);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_timeout_serves_stale_and_without_stale_is_a_timeout() {
    let port = shared_redis().port;
    let ns = common::unique_ns("fs");
    let q = format!("{FS}&factory_timeout=200ms");
    let h = unicache::open(&redis_url(port, &ns, &q)).await.unwrap();
    cache_then_expire(&h, "k").await;
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        ok("late").await
    };
    let got = h.get_or_set_with_info("k", SHORT, slow).await.unwrap();
    assert_eq!((&got.value[..], got.stale), (&b"v1"[..], true));
    let e = h.get_or_set("none", SHORT, slow).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
}

/// With Redis killed there is nothing to read the stale value from (no L1
/// in this library): the read error is returned, the factory never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_is_a_connection_error_not_a_stale_value() {
    let mut server = servers::redis_server();
    let ns = common::unique_ns("fs");
    let h = unicache::open(&redis_url(server.port, &ns, FS))
        .await
        .unwrap();
    cache_then_expire(&h, "k").await;
    server.kill();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let res = tokio::time::timeout(LIMIT, async {
        h.get_or_set("k", SHORT, move || async move {
            r.fetch_add(1, Ordering::SeqCst);
            fail().await
        })
        .await
    })
    .await
    .unwrap();
    let e = res.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// On a local backend the stale value stays readable whatever is down: the
/// origin failing (the factory) serves it, across a reopen too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backends_serve_stale_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("sqlite:{}?{FS}", dir.path().join("c.sqlite3").display()),
        format!("file:{}?{FS}", dir.path().join("c.jsonl").display()),
    ] {
        let h = unicache::open(&url).await.unwrap();
        cache_then_expire(&h, "k").await;
        h.close().await.unwrap();
        drop(h);
        let h = unicache::open(&url).await.unwrap();
        let got = h.get_or_set_with_info("k", SHORT, fail).await.unwrap();
        assert_eq!((&got.value[..], got.stale), (&b"v1"[..], true), "{url}");
        // A key never cached has no stale value: the factory's error.
        let e = h.get_or_set("other", SHORT, fail).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Factory, "{url}");
    }
}

#[tokio::test]
async fn bad_options_are_refused() {
    for q in [
        "fail_safe=maybe",
        "fail_safe_max=0s",
        "refresh_ahead=1.5",
        "refresh_ahead=x",
        "soft_timeout=0ms",
    ] {
        let e = unicache::open(&format!("memory://?{q}")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_timeout_returns_stale_fast_and_stores_the_late_value() {
    tokio::time::timeout(LIMIT, async {
        let port = shared_redis().port;
        let ns = common::unique_ns("fs");
        let q = format!("{FS}&soft_timeout=100ms&factory_timeout=5s");
        let h = unicache::open(&redis_url(port, &ns, &q)).await.unwrap();
        cache_then_expire(&h, "k").await;
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let started = std::time::Instant::now();
        let got = h
            .get_or_set_with_info("k", Some(Duration::from_secs(60)), move || async move {
                r.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                ok("late").await
            })
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!((&got.value[..], got.stale), (&b"v1"[..], true));
        assert!(took < Duration::from_millis(1_000), "waited {took:?}");
        // Callers meanwhile join the running flight: no second factory run.
        let got = h.get_or_set_with_info("k", SHORT, fail).await.unwrap();
        assert_eq!((&got.value[..], got.stale), (&b"v1"[..], true));
        tokio::time::sleep(Duration::from_millis(1_800)).await;
        assert_eq!(&h.get("k").await.unwrap().unwrap()[..], b"late");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let ttl = h.get_with_ttl("k").await.unwrap().unwrap().ttl.unwrap();
        assert!(
            ttl > Duration::from_secs(50),
            "stored with the call's TTL: {ttl:?}"
        );
        // No stale value: the soft timeout does not apply, the hard one does.
        let q = format!("{FS}&soft_timeout=50ms&factory_timeout=300ms");
        let h = unicache::open(&redis_url(port, &ns, &q)).await.unwrap();
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            ok("never").await
        };
        let e = h
            .get_or_set_with_info("fresh", SHORT, slow)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_one_background_run_under_100_hits_callers_never_wait() {
    tokio::time::timeout(LIMIT, async {
        let port = shared_redis().port;
        let ns = common::unique_ns("fs");
        let h = unicache::open(&redis_url(port, &ns, "refresh_ahead=0.5"))
            .await
            .unwrap();
        let ttl = Some(Duration::from_millis(3_000));
        h.get_or_set("k", ttl, || ok("v1")).await.unwrap();
        // Before half the TTL: a plain hit, nothing refreshed.
        h.get_or_set_with_info("k", ttl, fail).await.unwrap();
        assert_eq!(h.read_through_stats().background_runs, 0);
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        let runs = Arc::new(AtomicUsize::new(0));
        let started = std::time::Instant::now();
        let calls = (0..100).map(|_| {
            let (h, r) = (h.clone(), runs.clone());
            tokio::spawn(async move {
                let t = std::time::Instant::now();
                let got = h
                    .get_or_set_with_info("k", ttl, move || async move {
                        r.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1_000)).await;
                        ok("v2").await
                    })
                    .await
                    .unwrap();
                (got, t.elapsed())
            })
        });
        for r in futures::future::join_all(calls).await {
            let (got, took) = r.unwrap();
            assert_eq!((&got.value[..], got.stale), (&b"v1"[..], false));
            assert!(
                took < Duration::from_millis(600),
                "a caller waited {took:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_millis(900));
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(h.read_through_stats().background_runs, 1);
        assert_eq!(&h.get("k").await.unwrap().unwrap()[..], b"v2");
        // Plain get never refreshes.
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        h.get("k").await.unwrap();
        assert_eq!(h.read_through_stats().background_runs, 1);
    })
    .await
    .unwrap();
}

/// The blocking facade serves the stale value too (unflagged).
#[test]
fn blocking_facade_serves_stale_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}?{FS}", dir.path().join("b.sqlite3").display());
    let c = unicache::blocking::Cache::open(&url).unwrap();
    let v = c
        .get_or_set("k", SHORT, || Ok(Fill::Cache("v1".into())))
        .unwrap();
    assert_eq!(&v[..], b"v1");
    std::thread::sleep(Duration::from_millis(450));
    assert_eq!(c.get("k").unwrap(), None);
    let v = c
        .get_or_set("k", SHORT, || Err("origin down".into()))
        .unwrap();
    assert_eq!(&v[..], b"v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_value_served_on_memory_and_memcached() {
    let mc = servers::shared_memcached()[0].port;
    let ns = common::unique_ns("fs");
    for url in [
        format!("memory://?{FS}"),
        format!("memcached://127.0.0.1:{mc}?namespace={ns}&{FS}"),
    ] {
        let h = unicache::open(&url).await.unwrap();
        // memcached expiry has 1 s resolution: a longer logical TTL.
        let ttl = Some(Duration::from_secs(1));
        h.get_or_set("k", ttl, || ok("v1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(h.get("k").await.unwrap(), None, "{url}");
        let got = h.get_or_set_with_info("k", ttl, fail).await.unwrap();
        assert_eq!((&got.value[..], got.stale), (&b"v1"[..], true), "{url}");
    }
}
