//! The tiered cache (an L1 in process, any L2) against real servers: the
//! conformance suite through both tiers, exact TTLs between tiers,
//! invalidation across processes (pub/sub and client tracking), a lost
//! subscription, a property test on expiry, and L2 failures.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::servers::{self, shared_redis};
use common::unique_ns;
use unicache::Cache;

fn redis_url(port: u16, ns: &str, extra: &str) -> String {
    format!("redis://127.0.0.1:{port}?namespace={ns}&l1=10000&l1_ttl=30s{extra}")
}

async fn tiered(ns: &str) -> Arc<dyn Cache> {
    unicache::open(&redis_url(shared_redis().port, ns, ""))
        .await
        .unwrap()
}

async fn plain(ns: &str) -> Arc<dyn Cache> {
    let port = shared_redis().port;
    unicache::open(&format!("redis://127.0.0.1:{port}?namespace={ns}"))
        .await
        .unwrap()
}

conformance_suite!(tiered_redis, tiered, 16);

fn tier(s: &unicache::Stats, field: &str) -> u64 {
    s.tier.as_ref().unwrap()[field].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_serves_hits_and_fills_with_l2s_remaining_ttl() {
    let ns = unique_ns("tier-ttl");
    let c = tiered(&ns).await;
    let l2 = plain(&ns).await;
    l2.set("k", b"v", Some(Duration::from_millis(400)))
        .await
        .unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    for _ in 0..10 {
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }
    let s = c.stats().await.unwrap();
    assert_eq!((tier(&s, "l2_hits"), tier(&s, "l1_hits")), (1, 10), "{s:?}");
    assert_eq!(tier(&s, "backfills"), 1);
    // L1 answers with L2's remaining TTL, not its own 30 s cap.
    let t = c.get_with_ttl("k").await.unwrap().unwrap().ttl.unwrap();
    assert!(
        t <= Duration::from_millis(400) && t > Duration::from_millis(100),
        "{t:?}"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(c.get("k").await.unwrap(), None, "L1 outlived L2");
    // A batch with half in L1 sends the other half to L2 in one call.
    let keys: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let vals: Vec<(&str, &[u8])> = refs.iter().map(|k| (*k, &b"x"[..])).collect();
    l2.set_many(&vals, None).await.unwrap();
    c.get_many(&refs[..5]).await.unwrap();
    let before = c.stats().await.unwrap();
    let got = c.get_many(&refs).await.unwrap();
    assert!(got.iter().all(|v| v.as_deref() == Some(&b"x"[..])));
    let after = c.stats().await.unwrap();
    assert_eq!(tier(&after, "l1_hits") - tier(&before, "l1_hits"), 5);
    assert_eq!(tier(&after, "l2_hits") - tier(&before, "l2_hits"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_l2_first_and_other_instances_evict() {
    let ns = unique_ns("tier-inv");
    let a = tiered(&ns).await;
    let b = tiered(&ns).await;
    a.set("k", b"1", None).await.unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"1"[..]));
    a.set("k", b"2", None).await.unwrap();
    let t = Instant::now();
    while b.get("k").await.unwrap().as_deref() != Some(&b"2"[..]) {
        assert!(t.elapsed() < Duration::from_secs(1), "never evicted");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Deletes, batches, incr, touch and clear all reach the other L1.
    b.get("k").await.unwrap();
    a.delete("k").await.unwrap();
    wait_value(&*b, "k", None).await;
    a.set_many(&[("x", b"1"), ("y", b"1")], None).await.unwrap();
    b.get_many(&["x", "y"]).await.unwrap();
    a.set_many(&[("x", b"2"), ("y", b"2")], None).await.unwrap();
    wait_value(&*b, "y", Some(b"2")).await;
    a.set("n", b"1", None).await.unwrap();
    b.get("n").await.unwrap();
    // incr is Unsupported on Redis until its backend implements it.
    match a.incr("n", 5).await {
        Ok(_) => wait_value(&*b, "n", Some(b"6")).await,
        Err(e) => assert_eq!(e.kind(), unicache::ErrorKind::Unsupported, "{e}"),
    }
    b.get("x").await.unwrap();
    a.clear().await.unwrap();
    wait_value(&*b, "x", None).await;
    let s = b.stats().await.unwrap();
    assert!(tier(&s, "invalidations_received") >= 5, "{s:?}");
    // Own messages are skipped: a's L1 keeps what a wrote.
    a.set("own", b"v", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = tier(&a.stats().await.unwrap(), "l1_hits");
    a.get("own").await.unwrap();
    assert_eq!(tier(&a.stats().await.unwrap(), "l1_hits"), before + 1);
}

async fn wait_value(c: &dyn Cache, key: &str, want: Option<&[u8]>) {
    let t = Instant::now();
    while c.get(key).await.unwrap().as_deref() != want {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{key} never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
