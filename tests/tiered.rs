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
        .into()
}

async fn plain(ns: &str) -> Arc<dyn Cache> {
    let port = shared_redis().port;
    unicache::open(&format!("redis://127.0.0.1:{port}?namespace={ns}"))
        .await
        .unwrap()
        .into()
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
    // The plain handle's write publishes an invalidation too: let it land
    // before the fill, or it evicts the fresh fill and costs an L2 hit.
    wait_received(&*c, 1).await;
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
    let received = tier_stat(&*c, "invalidations_received").await;
    l2.set_many(&vals, None).await.unwrap();
    wait_received(&*c, received + 1).await;
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

fn wall_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// `TIER <name> <i> <micros>` lines a child printed.
fn marks(out: &std::process::Output, name: &str) -> std::collections::HashMap<u64, u64> {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {text}\n{}",
        common::stderr(out)
    );
    text.lines()
        .filter_map(|l| {
            // libtest's "test tier_child ... " may precede the first mark.
            let mut f = l[l.find("TIER ")? + 5..].split(' ');
            (f.next()? == name).then_some(())?;
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// A child process of the cross-process tests: a reader polls `k` through
/// its L1 and prints when it first sees each new value; a writer sets `k`
/// to 0..N (through its tiered cache, or with `redis-cli SET`) and prints
/// when each write returned.
#[test]
#[ignore]
fn tier_child() {
    let Ok(role) = std::env::var("TIER_ROLE") else {
        return;
    };
    let url = std::env::var("TIER_URL").unwrap();
    let n: u64 = std::env::var("TIER_N").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(unicache::open(&url)).unwrap();
    if role == "reader" {
        let mut last = None;
        let t = Instant::now();
        while last != Some(n - 1) && t.elapsed() < Duration::from_secs(60) {
            let v = rt.block_on(c.get("k")).unwrap();
            let v = v.and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok());
            if let Some(seen) = v
                && v != last
            {
                println!("TIER seen {seen} {}", wall_micros());
                last = v;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let s = rt.block_on(c.stats()).unwrap();
        println!("TIER stats {}", s.tier.unwrap());
        return;
    }
    let port = std::env::var("TIER_PORT").unwrap();
    let subscribers: usize = std::env::var("TIER_SUBSCRIBERS").unwrap().parse().unwrap();
    let channel = std::env::var("TIER_CHANNEL").unwrap();
    let t = Instant::now();
    loop {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port, "--raw", "PUBSUB", "NUMSUB", &channel])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<usize>().ok())
            >= Some(subscribers)
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "subscribers never came: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = std::env::var("TIER_KEY").unwrap_or_default();
    for i in 0..n {
        let v = i.to_string();
        if role == "cli" {
            let st = std::process::Command::new("redis-cli")
                .args(["-p", &port, "SET", &key, &v])
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        } else {
            rt.block_on(c.set("k", v.as_bytes(), None)).unwrap();
        }
        println!("TIER wrote {i} {}", wall_micros());
        // Readers refill L1 between writes, so each write has an L1 to evict.
        std::thread::sleep(Duration::from_millis(4));
    }
}

/// Three processes, one Redis: after each of 1,000 writes in one, the
/// two others read the new value; the time from the write's return to
/// the reader seeing it (eviction + its next poll + one L2 GET) has a p99
/// under 5 ms.
fn cross_process(writer: &str, invalidation: &str, n: u64) -> u64 {
    let server = servers::redis_server();
    let ns = unique_ns("tier-3p");
    let url = redis_url(
        server.port,
        &ns,
        &format!("&l1_invalidation={invalidation}"),
    );
    let env = |role: &str| {
        vec![
            ("TIER_ROLE", role.to_string()),
            ("TIER_URL", url.clone()),
            ("TIER_N", n.to_string()),
            ("TIER_PORT", server.port.to_string()),
            ("TIER_SUBSCRIBERS", "3".to_string()),
            ("TIER_CHANNEL", format!("unicache:l1:0:{ns}")),
            ("TIER_KEY", format!("{ns}:k")),
        ]
    };
    let readers: Vec<_> = (0..2)
        .map(|_| common::spawn_self("tier_child", &env("reader")))
        .collect();
    let w = common::spawn_self("tier_child", &env(writer));
    let wrote = marks(&w.wait_with_output().unwrap(), "wrote");
    assert_eq!(wrote.len() as u64, n);
    let mut lat = Vec::new();
    for r in readers {
        let out = r.wait_with_output().unwrap();
        let seen = marks(&out, "seen");
        assert!(
            seen.contains_key(&(n - 1)),
            "a reader never read the last value"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let stats = text
            .lines()
            .find(|l| l.starts_with("TIER stats"))
            .unwrap_or("");
        println!("reader {stats}");
        // Values a reader saw through L2 before it held them in L1 have no
        // eviction to time; every value it did see is timed from its write.
        for (i, at) in seen {
            if i > 0 {
                lat.push(at.saturating_sub(wrote[&i]));
            }
        }
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "{writer} writes, {invalidation}: {} samples, write return -> read of the new value in the \
         other processes: p50 {} us, p99 {} us, max {} us",
        lat.len(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    assert!(lat.len() as u64 >= n, "too few values seen: {}", lat.len());
    p(0.99)
}

/// [`cross_process`] held to its bound: p99 under 5 ms, or, on a machine
/// whose run queue is longer than its cores (shared CI), where every
/// wake-up waits for whole time slices, under 50 ms (said when so). A noisy
/// machine gets a second run; a broken eviction (an L1 serving until its
/// TTL) fails both. `scripts/test.sh` runs these two tests on their own,
/// after the rest of the suite.
fn cross_process_within_bound(writer: &str, invalidation: &str, n: u64) {
    let mut worst = 0;
    for attempt in 1..=2 {
        let p99 = cross_process(writer, invalidation, n);
        let load = overload();
        let bound = if load > 1.0 { 50_000 } else { 5_000 };
        if load > 1.0 {
            println!("load average {load:.1}x the cores: checking p99 < 50 ms, not 5 ms");
        }
        if p99 < bound {
            return;
        }
        println!("attempt {attempt}: p99 {p99} us over {bound} us (load {load:.1}x)");
        worst = p99;
    }
    panic!("p99 {worst} us in both runs");
}

/// The 1-minute load average divided by the number of cores.
fn overload() -> f64 {
    let avg: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    avg / std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

#[test]
fn three_processes_pubsub_p99_under_5ms() {
    cross_process_within_bound("tiered", "pubsub", 1000);
}

#[test]
fn redis_cli_writes_evict_with_client_tracking() {
    cross_process_within_bound("cli", "tracking", 300);
}

async fn tier_stat(c: &dyn Cache, field: &str) -> u64 {
    tier(&c.stats().await.unwrap(), field)
}

/// Waits (at most 2 s) until `c` has received `at_least` invalidations.
async fn wait_received(c: &dyn Cache, at_least: u64) {
    let t = Instant::now();
    while tier_stat(c, "invalidations_received").await < at_least {
        assert!(t.elapsed() < Duration::from_secs(2), "no invalidation came");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits (at most 1 s after `killed`) until `c` counts a flush after a lost
/// subscription beyond `flushes`; returns the time since `killed`.
async fn flushed_since(c: &dyn Cache, flushes: u64, killed: Instant) -> Duration {
    while tier_stat(c, "l1_flushes_after_lost_subscription").await == flushes {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "L1 not flushed within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    killed.elapsed()
}

/// Waits until `c`'s L1 is subscribed again; returns how long it took.
async fn wait_subscribed(c: &dyn Cache, within: Duration) -> Duration {
    let t = Instant::now();
    while c.stats().await.unwrap().tier.unwrap()["subscribed"] != true {
        assert!(t.elapsed() < within, "not resubscribed within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.elapsed()
}

/// Fills `c`'s L1 with `k` = `v` and checks it is served from L1.
async fn hold(c: &dyn Cache, w: &dyn Cache, v: &str) {
    w.set("k", v.as_bytes(), None).await.unwrap();
    // Until w's message for this write arrives, it may evict what c read.
    let t = Instant::now();
    loop {
        let before = tier_stat(c, "l1_hits").await;
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some(v.as_bytes()));
        if tier_stat(c, "l1_hits").await == before + 1 {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "never held in L1");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_subscription_never_serves_an_overwritten_value() {
    let server = servers::redis_server();
    let ns = unique_ns("tier-kill");
    let url = redis_url(server.port, &ns, "");
    let c = unicache::open(&url).await.unwrap();
    let w = unicache::open(&url).await.unwrap();
    let mut flush_times = Vec::new();
    for i in 0..20 {
        hold(&*c, &*w, &format!("old{i}")).await;
        let flushes = tier_stat(&*c, "l1_flushes_after_lost_subscription").await;
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &server.port.to_string(),
                "CLIENT",
                "KILL",
                "TYPE",
                "pubsub",
            ])
            .output()
            .unwrap();
        let killed = Instant::now();
        assert!(
            String::from_utf8_lossy(&out.stdout).trim() >= "1",
            "{out:?}"
        );
        // A write after the kill: its message reaches no one killed. The
        // promise (README, "Tiered cache") is 50 ms: a read that begins
        // more than 50 ms after the write returned sees it; one before may
        // still see the old value while c learns of the kill.
        let new = format!("new{i}");
        w.set("k", new.as_bytes(), None).await.unwrap();
        let acked = Instant::now();
        loop {
            let began = Instant::now();
            let got = c.get("k").await.unwrap();
            if began.duration_since(acked) > Duration::from_millis(50) {
                assert_eq!(
                    got.as_deref(),
                    Some(new.as_bytes()),
                    "round {i}: L1 served a value overwritten 50 ms before the read"
                );
                break;
            }
            let old = format!("old{i}");
            let seen = got.as_deref();
            assert!(
                seen == Some(new.as_bytes()) || seen == Some(old.as_bytes()),
                "round {i}: {seen:?}"
            );
            if seen == Some(new.as_bytes()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        flush_times.push(flushed_since(&*c, flushes, killed).await);
        wait_subscribed(&*c, Duration::from_secs(5)).await;
    }
    flush_times.sort();
    println!(
        "CLIENT KILL TYPE pubsub -> L1 flushed: median {:?}, max {:?} (20 kills)",
        flush_times[10], flush_times[19]
    );
    // Subscribed again: invalidations flow and L1 serves.
    hold(&*c, &*w, "after").await;
    w.set("k", b"after2", None).await.unwrap();
    wait_value(&*c, "k", Some(b"after2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_flushes_l1_and_resubscribes() {
    let mut server = servers::redis_server();
    let ns = unique_ns("tier-restart");
    let url = redis_url(server.port, &ns, "");
    let c = unicache::open(&url).await.unwrap();
    let w = unicache::open(&url).await.unwrap();
    hold(&*c, &*w, "old").await;
    let t = Instant::now();
    server.restart(servers::redis_ready);
    let restarted = t.elapsed();
    // Written after the restart, to the new (empty) server.
    let mut tries = 0;
    while let Err(e) = w.set("k", b"new", None).await {
        tries += 1;
        assert!(tries < 100, "L2 never came back: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // c's own L2 connection may fail once more before it reconnects.
    let mut got = c.get("k").await;
    for _ in 0..50 {
        if got.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        got = c.get("k").await;
    }
    assert_eq!(got.unwrap().as_deref(), Some(&b"new"[..]));
    assert!(tier_stat(&*c, "l1_flushes_after_lost_subscription").await >= 1);
    let again = wait_subscribed(&*c, Duration::from_secs(5)).await;
    println!("redis restart took {restarted:?}; resubscribed {again:?} after it");
    assert!(tier_stat(&*c, "resubscribes").await >= 1);
    hold(&*c, &*w, "later").await;
    w.set("k", b"later2", None).await.unwrap();
    wait_value(&*c, "k", Some(b"later2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_l2_at_open_is_the_same_error() {
    let port = servers::free_port(false);
    let plain = format!("redis://127.0.0.1:{port}?connect_timeout=1s");
    let a = unicache::open(&plain).await.unwrap_err();
    let b = unicache::open(&format!("{plain}&l1=100"))
        .await
        .unwrap_err();
    assert_eq!(a.kind(), b.kind());
    assert_eq!(
        a.to_string(),
        b.to_string().replace("&l1=100", ""),
        "tiered open error differs"
    );
    // A backplane needs Redis: asking for one over SQLite is an error.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let e = unicache::open(&format!(
        "sqlite:{}?l1=10&l1_invalidation=pubsub",
        db.display()
    ))
    .await
    .unwrap_err();
    assert!(e.to_string().contains("needs a Redis L2"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_down_later_reads_fall_back_to_l1_and_writes_fail() {
    let mut mc = servers::memcached_server();
    let url = format!(
        "memcached://127.0.0.1:{}?namespace={}&l1=100&l1_ttl=1h&response_timeout=500ms",
        mc.port,
        unique_ns("tier-down")
    );
    let c = unicache::open(&url).await.unwrap();
    c.set("held", b"v", None).await.unwrap();
    mc.kill();
    assert_eq!(c.get("held").await.unwrap().as_deref(), Some(&b"v"[..]));
    let e = c.set("held", b"w", None).await.unwrap_err();
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    // A connection error may come after the write was sent (it may have
    // landed): L1 dropped its copy, so the read goes to L2 (down).
    let got = c.get("held").await;
    assert!(!matches!(got, Ok(Some(_))), "{got:?}");
    // Stats still answer (memcached's with each server's error).
    let s = c.stats().await.unwrap();
    assert!(tier(&s, "l2_errors") >= 1, "{s:?}");
    assert_eq!(tier(&s, "l1_hits"), 1, "{s:?}");
}

/// A Redis L2 whose `stats` fails (the server is gone): the tier's counters
/// still come back, with L2's error beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_answer_with_the_tier_while_l2_is_down() {
    let mut server = servers::redis_server();
    let url = redis_url(
        server.port,
        &unique_ns("tier-stats-down"),
        "&l1_invalidation=none&response_timeout=500ms&connect_timeout=500ms",
    );
    let c = unicache::open(&url).await.unwrap();
    c.set("held", b"v", None).await.unwrap();
    assert_eq!(c.get("held").await.unwrap().as_deref(), Some(&b"v"[..]));
    server.kill();
    assert_eq!(c.get("held").await.unwrap().as_deref(), Some(&b"v"[..]));
    let s = c.stats().await.unwrap();
    assert_eq!(tier(&s, "l1_hits"), 2, "{s:?}");
    assert!(tier(&s, "l2_errors") >= 1, "{s:?}");
    let why = s.tier.as_ref().unwrap()["l2_stats_error"].as_str().unwrap();
    assert!(why.contains("127.0.0.1"), "{why}");
    assert_eq!((s.backend.as_str(), s.errors), ("redis", 1));
}

/// A writer of known TTLs and a reader through L1: no read returns a value
/// after its L2 expiry (counted from the write's return) plus 10 ms.
#[test]
fn l1_never_outlives_l2_property() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ns = unique_ns("tier-prop");
    let (a, b) = rt.block_on(async { (tiered(&ns).await, tiered(&ns).await) });
    let cfg = ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let op = prop_oneof![
        (0u8..3, 10u64..200, any::<bool>()).prop_map(|(k, t, by_a)| (0u8, k, t, by_a)),
        (0u8..3).prop_map(|k| (1, k, 0, true)),
        (0u64..60).prop_map(|ms| (2, 0, ms, true)),
    ];
    let next = std::sync::atomic::AtomicU64::new(0);
    proptest!(cfg, |(ops in proptest::collection::vec(op, 1..25))| {
        let r: Result<(), String> = rt.block_on(async {
            // value -> when it expires in L2 at the latest
            let mut expiry = std::collections::HashMap::new();
            for (kind, k, n, by_a) in &ops {
                let key = format!("p{k}");
                match kind {
                    0 => {
                        let v = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string();
                        let w = if *by_a { &a } else { &b };
                        w.set(&key, v.as_bytes(), Some(Duration::from_millis(*n))).await.unwrap();
                        expiry.insert(v, Instant::now() + Duration::from_millis(*n));
                    }
                    1 => {
                        let asked = Instant::now();
                        if let Some(v) = a.get(&key).await.unwrap() {
                            let v = String::from_utf8(v.to_vec()).unwrap();
                            if let Some(e) = expiry.get(&v) && asked > *e + Duration::from_millis(10) {
                                return Err(format!("{key}={v} read {:?} after its expiry", asked - *e));
                            }
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(*n)).await,
                }
            }
            Ok(())
        });
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    });
}

/// On a cluster the backplane is sharded pub/sub on the channel's own
/// shard: both processes' subscriptions sit on one master, none is a
/// classic subscription, and writes on any slot invalidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_uses_sharded_pubsub_on_one_shard() {
    let cluster = servers::shared_cluster();
    // A namespace whose channel is not on the first seed, so both the
    // subscriber and the publisher must follow MOVED.
    let ns = (0..100)
        .map(|_| unique_ns("tier-cl"))
        .find(|ns| {
            let req = format!("SPUBLISH unicache:l1:0:{ns} x\r\n");
            servers::ask(cluster.nodes[0].port, &req).is_some_and(|r| r.starts_with("-MOVED"))
        })
        .unwrap();
    let url = format!("{}?namespace={ns}&l1=1000", cluster.url());
    let a = unicache::open(&url).await.unwrap();
    let b = unicache::open(&url).await.unwrap();
    let channel = format!("unicache:l1:0:{ns}");
    let counts: Vec<(u64, u64)> = cluster
        .nodes
        .iter()
        .map(|n| {
            let ask = |sub: &str| {
                let out = std::process::Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "--raw", "PUBSUB", sub, &channel])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.lines()
                    .nth(1)
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0)
            };
            (ask("SHARDNUMSUB"), ask("NUMSUB"))
        })
        .collect();
    assert_eq!(counts.iter().map(|c| c.0).sum::<u64>(), 2, "{counts:?}");
    assert_eq!(counts.iter().filter(|c| c.0 > 0).count(), 1, "{counts:?}");
    assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), 0, "{counts:?}");
    for i in 0..50 {
        let k = format!("k{i}");
        a.set(&k, b"1", None).await.unwrap();
        assert_eq!(b.get(&k).await.unwrap().as_deref(), Some(&b"1"[..]));
        a.set(&k, b"2", None).await.unwrap();
        wait_value(&*b, &k, Some(b"2")).await;
    }
    let s = b.stats().await.unwrap();
    assert!(tier(&s, "invalidations_received") >= 50, "{s:?}");
}

/// A real Redis cache that counts the L2 calls the tier makes.
#[derive(Debug)]
struct Counting(Arc<dyn Cache>, std::sync::atomic::AtomicU64);

impl Counting {
    fn calls(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn count(&self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Cache for Counting {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn endpoint(&self) -> String {
        self.0.endpoint()
    }
    fn capabilities(&self) -> unicache::Capabilities {
        self.0.capabilities()
    }
    fn get<'a>(&'a self, key: &'a str) -> unicache::CacheFuture<'a, Option<bytes::Bytes>> {
        self.count();
        self.0.get(key)
    }
    fn get_with_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> unicache::CacheFuture<'a, Option<unicache::ValueTtl>> {
        self.count();
        self.0.get_with_ttl(key)
    }
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> unicache::CacheFuture<'a, ()> {
        self.0.set(key, value, ttl)
    }
    fn delete<'a>(&'a self, key: &'a str) -> unicache::CacheFuture<'a, bool> {
        self.0.delete(key)
    }
    fn contains<'a>(&'a self, key: &'a str) -> unicache::CacheFuture<'a, bool> {
        self.0.contains(key)
    }
    async fn get_many(&self, keys: &[&str]) -> unicache::Result<Vec<Option<bytes::Bytes>>> {
        self.count();
        self.0.get_many(keys).await
    }
    async fn get_many_with_ttl(
        &self,
        keys: &[&str],
    ) -> unicache::Result<Vec<Option<unicache::ValueTtl>>> {
        self.count();
        self.0.get_many_with_ttl(keys).await
    }
    async fn set_many(&self, e: &[(&str, &[u8])], ttl: Option<Duration>) -> unicache::Result<()> {
        self.0.set_many(e, ttl).await
    }
    async fn delete_many(&self, keys: &[&str]) -> unicache::Result<u64> {
        self.0.delete_many(keys).await
    }
    async fn clear(&self) -> unicache::Result<()> {
        self.0.clear().await
    }
    async fn len(&self) -> unicache::Result<u64> {
        self.0.len().await
    }
    async fn stats(&self) -> unicache::Result<unicache::Stats> {
        self.0.stats().await
    }
}

/// 1,000 keys with half in L1: the other 500 are one L2 call (Redis
/// pipelines it: one round trip), and L1 hits make none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_half_in_l1_is_one_l2_call() {
    use unicache::tiered::{TierConfig, TieredCache};
    let ns = unique_ns("tier-many");
    let l2 = plain(&ns).await;
    let keys: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let e: Vec<(&str, &[u8])> = refs.iter().map(|k| (*k, &b"v"[..])).collect();
    l2.set_many(&e, None).await.unwrap();
    let counting = Arc::new(Counting(l2, Default::default()));
    let t = TieredCache::builder(TierConfig::new(10_000))
        .options(&unicache::CacheOptions::new().namespace(ns.clone()))
        .build(counting.clone())
        .await
        .unwrap();
    t.get_many(&refs[..500]).await.unwrap();
    assert_eq!(counting.calls(), 1);
    let got = t.get_many(&refs).await.unwrap();
    assert!(got.iter().all(|v| v.as_deref() == Some(&b"v"[..])));
    assert_eq!(
        counting.calls(),
        2,
        "more than one L2 call for the 500 misses"
    );
    t.get_many(&refs).await.unwrap();
    t.get("m1").await.unwrap();
    assert_eq!(counting.calls(), 2, "L1 hits went to L2");
}

/// A read-through `Handle` over the tier: 20 concurrent callers run the
/// factory once; the value then comes from L1, and another process's
/// instance (same Redis) reads it from L2 without running its factory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_set_single_flight_through_both_tiers() {
    use unicache::{Fill, Handle};
    let ns = unique_ns("tier-gos");
    let h = Handle::new(tiered(&ns).await);
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (h, runs) = (h.clone(), runs.clone());
            tokio::spawn(async move {
                h.get_or_set("hot", Some(Duration::from_secs(60)), || async move {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Fill::Cache(bytes::Bytes::from_static(b"computed")))
                })
                .await
            })
        })
        .collect();
    for c in calls {
        assert_eq!(&c.await.unwrap().unwrap()[..], b"computed");
    }
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    let before = tier_stat(&**h.cache(), "l1_hits").await;
    let v = h
        .get_or_set("hot", None, || async { Err("not called".into()) })
        .await
        .unwrap();
    assert_eq!(&v[..], b"computed");
    assert_eq!(tier_stat(&**h.cache(), "l1_hits").await, before + 1);
    let other = Handle::new(tiered(&ns).await);
    let v = other
        .get_or_set("hot", None, || async { Err("not called".into()) })
        .await
        .unwrap();
    assert_eq!(&v[..], b"computed");
    assert_eq!(tier_stat(&**other.cache(), "l2_hits").await, 1);
}

/// Without a backplane (memcached) another process's write is seen once
/// this L1's copy expires: staleness is bounded by `l1_ttl`, and this
/// process's own writes are seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_backplane_l1_ttl_bounds_staleness() {
    let mc = &servers::shared_memcached()[0];
    let url = format!(
        "memcached://127.0.0.1:{}?namespace={}&l1=100&l1_ttl=300ms",
        mc.port,
        unique_ns("tier-mc")
    );
    let a = unicache::open(&url).await.unwrap();
    let b = unicache::open(&url).await.unwrap();
    a.set("k", b"1", None).await.unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"1"[..]));
    let written = Instant::now();
    a.set("k", b"2", None).await.unwrap();
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(
        b.get("k").await.unwrap().as_deref(),
        Some(&b"1"[..]),
        "stale within l1_ttl"
    );
    wait_value_within(&*b, "k", Some(b"2"), Duration::from_millis(400)).await;
    assert!(written.elapsed() <= Duration::from_millis(400));
}

async fn wait_value_within(c: &dyn Cache, key: &str, want: Option<&[u8]>, within: Duration) {
    let t = Instant::now();
    while c.get(key).await.unwrap().as_deref() != want {
        assert!(t.elapsed() < within, "{key} never became {want:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `redis-cli ARGS...` against `port`; returns its stdout, trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("redis-cli not found: sudo apt-get install -y redis-tools");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `redis-cli -c SET key v` through the node on `port` (following `MOVED`).
fn cli_set(port: u16, key: &str, v: &str) {
    assert_eq!(cli(port, &["-c", "SET", key, v]), "OK", "SET {key}");
}

/// The index of the live master that holds `key` (it answers without `MOVED`).
fn owner(cluster: &servers::Cluster, key: &str) -> usize {
    (0..cluster.nodes.len())
        .find(|&i| {
            servers::ask(cluster.nodes[i].port, &format!("EXISTS {key}\r\n"))
                .is_some_and(|r| r.starts_with(':'))
        })
        .unwrap_or_else(|| panic!("no node holds {key}"))
}

/// One key (without the namespace) per master, as (master index, key).
fn key_per_master(cluster: &servers::Cluster, ns: &str) -> Vec<(usize, String)> {
    let masters = (0..cluster.nodes.len())
        .filter(|&i| cluster.is_master(i))
        .count();
    let mut out: Vec<(usize, String)> = Vec::new();
    for i in 0..1000 {
        let k = format!("k{i}");
        let o = owner(cluster, &format!("{ns}:{k}"));
        if !out.iter().any(|(m, _)| *m == o) {
            out.push((o, k));
        }
        if out.len() == masters {
            break;
        }
    }
    out
}

/// Reads `key` through `c` until it is `want` and served from L1.
async fn held_in_l1(c: &dyn Cache, key: &str, want: &str) {
    let t = Instant::now();
    loop {
        let before = tier_stat(c, "l1_hits").await;
        let got = c.get(key).await.unwrap();
        if got.as_deref() == Some(want.as_bytes()) && tier_stat(c, "l1_hits").await == before + 1 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{key} never held in L1 as {want}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Ids of the clients on `port` with client tracking on (`t` in `flags`).
fn tracking_clients(port: u16) -> Vec<String> {
    cli(port, &["CLIENT", "LIST"])
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('t')))
        })
        .filter_map(|l| Some(l.split(' ').next()?.strip_prefix("id=")?.to_string()))
        .collect()
}

fn tracking_url(cluster: &servers::Cluster, ns: &str) -> String {
    format!(
        "{}?namespace={ns}&l1=1000&l1_invalidation=tracking",
        cluster.url()
    )
}

/// Client tracking is accepted on a cluster: one RESP3 connection per
/// master with `CLIENT TRACKING ON BCAST`, beside the sharded subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tracking_opens_one_tracking_connection_per_master() {
    let cluster = servers::shared_cluster();
    let ns = unique_ns("tier-cltr-open");
    let c = unicache::open(&tracking_url(cluster, &ns)).await.unwrap();
    let s = c.stats().await.unwrap();
    let t = s.tier.as_ref().unwrap();
    assert_eq!(t["invalidation"], "tracking", "{t}");
    assert_eq!(t["subscribed"], true, "{t}");
    assert_eq!(tier(&s, "tracked_masters"), 3, "{t}");
    for n in &cluster.nodes {
        let list = cli(n.port, &["CLIENT", "LIST"]);
        assert!(
            list.lines().any(|l| l.contains("resp=3")
                && l.split(' ')
                    .any(|f| f.starts_with("flags=") && f.contains('t') && f.contains('B'))),
            "no BCAST tracking client on {}: {list}",
            n.port
        );
    }
}

/// `redis-cli -c SET` on keys held by each of the three masters evicts
/// them from L1; the time from `redis-cli` returning to this process
/// reading the new value is measured over 300 writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tracking_redis_cli_writes_on_every_shard_evict() {
    let cluster = servers::shared_cluster();
    let ns = unique_ns("tier-cltr-cli");
    let c = unicache::open(&tracking_url(cluster, &ns)).await.unwrap();
    let keys = key_per_master(cluster, &ns);
    assert_eq!(keys.len(), 3, "{keys:?}");
    let seed = cluster.nodes[0].port;
    for (_, k) in &keys {
        cli_set(seed, &format!("{ns}:{k}"), "init");
    }
    let mut lat = Vec::new();
    for i in 0..300 {
        let (_, k) = &keys[i % 3];
        let old = if i < 3 {
            "init".to_string()
        } else {
            format!("v{}", i - 3)
        };
        held_in_l1(&*c, k, &old).await;
        let new = format!("v{i}");
        cli_set(seed, &format!("{ns}:{k}"), &new);
        let t = Instant::now();
        while c.get(k).await.unwrap().as_deref() != Some(new.as_bytes()) {
            assert!(t.elapsed() < Duration::from_secs(1), "{k} never evicted");
            tokio::task::yield_now().await;
        }
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "cluster tracking, redis-cli -c SET on 3 masters, 300 writes: redis-cli return -> new value \
         read here: p50 {} us, p99 {} us, max {} us",
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    let s = c.stats().await.unwrap();
    assert!(tier(&s, "invalidations_received") >= 300, "{s:?}");
    assert_eq!(tier(&s, "l1_flushes_after_lost_subscription"), 0, "{s:?}");
    // 10 ms, not the single-server test's 5: the other tests of this
    // binary run at once and the load average lags them.
    let load = overload();
    let bound = if load > 1.0 { 50_000 } else { 10_000 };
    assert!(p(0.99) < bound, "p99 {} us (load {load:.1}x)", p(0.99));
}

/// `CLIENT KILL ID` of the tracking connection on one master (each in
/// turn): L1 is flushed within 1 s, a value written after the kill is
/// never served from L1, and tracking comes back on that master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tracking_killed_connection_flushes_l1() {
    let cluster = servers::redis_cluster();
    let ns = unique_ns("tier-cltr-kill");
    let c = unicache::open(&tracking_url(&cluster, &ns)).await.unwrap();
    let keys = key_per_master(&cluster, &ns);
    let seed = cluster.nodes[0].port;
    let mut flush_times = Vec::new();
    for round in 0..6 {
        let (m, k) = &keys[round % 3];
        let full = format!("{ns}:{k}");
        let old = format!("old{round}");
        cli_set(seed, &full, &old);
        held_in_l1(&*c, k, &old).await;
        let flushes = tier_stat(&*c, "l1_flushes_after_lost_subscription").await;
        let port = cluster.nodes[*m].port;
        // The connections replaced at the last loss close asynchronously.
        let t = Instant::now();
        let mut ids = tracking_clients(port);
        while ids.len() != 1 {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "tracking clients on {port}: {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            ids = tracking_clients(port);
        }
        assert_eq!(cli(port, &["CLIENT", "KILL", "ID", &ids[0]]), "1");
        let killed = Instant::now();
        let new = format!("new{round}");
        cli_set(seed, &full, &new);
        assert_eq!(
            c.get(k).await.unwrap().as_deref(),
            Some(new.as_bytes()),
            "round {round}: L1 served a value overwritten after the kill"
        );
        flush_times.push(flushed_since(&*c, flushes, killed).await);
        wait_subscribed(&*c, Duration::from_secs(5)).await;
        // Tracked again on that master: the next write there evicts.
        held_in_l1(&*c, k, &new).await;
        cli_set(seed, &full, "again");
        wait_value(&*c, k, Some(b"again")).await;
    }
    flush_times.sort_unstable();
    println!(
        "cluster tracking, CLIENT KILL ID of one master's tracking connection -> L1 flush seen (after a \
         redis-cli SET and a get): \
         median {:?}, max {:?} over {} kills",
        flush_times[flush_times.len() / 2],
        flush_times[flush_times.len() - 1],
        flush_times.len()
    );
}

/// Moves `key`'s slot (and every key in it) from master `from` to `to`, as
/// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE, NODE.
fn move_slot(cluster: &servers::Cluster, key: &str, from: usize, to: usize) {
    let (fp, tp) = (cluster.nodes[from].port, cluster.nodes[to].port);
    let slot = cli(fp, &["CLUSTER", "KEYSLOT", key]);
    let (fid, tid) = (cluster.node_id(from), cluster.node_id(to));
    assert_eq!(
        cli(tp, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &fid]),
        "OK"
    );
    assert_eq!(
        cli(fp, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &tid]),
        "OK"
    );
    for k in cli(fp, &["CLUSTER", "GETKEYSINSLOT", &slot, "1000"]).lines() {
        let to_port = tp.to_string();
        assert_eq!(
            cli(fp, &["MIGRATE", "127.0.0.1", &to_port, k, "0", "5000"]),
            "OK"
        );
    }
    assert_eq!(cli(tp, &["CLUSTER", "SETSLOT", &slot, "NODE", &tid]), "OK");
    assert_eq!(cli(fp, &["CLUSTER", "SETSLOT", &slot, "NODE", &tid]), "OK");
    for (i, n) in cluster.nodes.iter().enumerate() {
        if i != from && i != to && cluster.is_master(i) {
            cli(n.port, &["CLUSTER", "SETSLOT", &slot, "NODE", &tid]);
        }
    }
}

/// Waits until `c` is subscribed with `masters` tracked and `resubscribes`
/// past `after`; returns how long it took.
async fn wait_tracking(c: &dyn Cache, masters: u64, after: u64, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        // Stats read L2 too, which fails while a slot has no master.
        let s = c.stats().await;
        if let Ok(s) = &s
            && s.tier.as_ref().unwrap()["subscribed"] == true
            && tier(s, "tracked_masters") == masters
            && tier(s, "resubscribes") > after
        {
            return t.elapsed();
        }
        assert!(t.elapsed() < within, "tracking not re-established: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A slot moving between tracked masters needs no reconnection (MIGRATE's
/// delete at the source invalidates, the target is tracked); a master
/// added to the cluster is tracked within a heartbeat or two, before
/// slots move to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tracking_follows_slot_moves_and_a_new_master() {
    let mut cluster = servers::redis_cluster();
    let ns = unique_ns("tier-cltr-move");
    let c = unicache::open(&tracking_url(&cluster, &ns)).await.unwrap();
    let (k, full) = ("moving", format!("{ns}:moving"));
    let a = owner(&cluster, &full);
    let b = (a + 1) % 3;
    cli_set(cluster.nodes[0].port, &full, "v1");
    held_in_l1(&*c, k, "v1").await;
    let before = c.stats().await.unwrap();
    move_slot(&cluster, &full, a, b);
    let t = Instant::now();
    while tier_stat(&*c, "invalidations_received").await == tier(&before, "invalidations_received")
    {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "MIGRATE did not invalidate"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    held_in_l1(&*c, k, "v1").await;
    let bp = cluster.nodes[b].port;
    assert_eq!(cli(bp, &["SET", &full, "v2"]), "OK");
    wait_value(&*c, k, Some(b"v2")).await;
    let s = c.stats().await.unwrap();
    for f in ["resubscribes", "l1_flushes_after_lost_subscription"] {
        assert_eq!(tier(&s, f), tier(&before, f), "{f}: {s:?}");
    }
    let joined = Instant::now();
    let n = cluster.add_master();
    let joined = joined.elapsed();
    cluster.wait_ok();
    let took = wait_tracking(&*c, 4, tier(&s, "resubscribes"), Duration::from_secs(5)).await;
    println!("new master: add-node took {joined:?}; tracked {took:?} after it");
    let np = cluster.nodes[n].port;
    assert_eq!(tracking_clients(np).len(), 1);
    held_in_l1(&*c, k, "v2").await;
    move_slot(&cluster, &full, b, n);
    held_in_l1(&*c, k, "v2").await;
    assert_eq!(cli(np, &["SET", &full, "v3"]), "OK");
    wait_value(&*c, k, Some(b"v3")).await;
}

/// Reads `key` until it is `want` from L1, retrying L2 errors for `within`
/// (a slot without a master while a failover completes).
async fn held_after_failover(c: &dyn Cache, key: &str, want: &str, within: Duration) {
    let t = Instant::now();
    while c.get(key).await.is_err() || c.stats().await.is_err() {
        assert!(t.elapsed() < within, "{key} unreadable after the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held_in_l1(c, key, want).await;
}

/// Failovers: a manual one (the replica takes over, the old master stays
/// as its replica) is a changed master set, so tracking moves to the new
/// master; a crashed master flushes L1 at once, and tracking comes back on
/// the replica promoted in its place. Replicas are never tracked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tracking_follows_failovers() {
    use unicache::tiered::{Invalidation, TierConfig, TieredCache};
    let mut cluster = servers::redis_cluster_with(3, 1);
    let ns = unique_ns("tier-cltr-fo");
    // Built by hand for `l1_live`: stats read L2, which fails mid-failover.
    let parsed = unicache::open::parse(&format!("{}?namespace={ns}", cluster.url())).unwrap();
    let unicache::backends::BackendConfig::Redis(redis) = parsed.backend.clone() else {
        panic!("not a Redis URL");
    };
    let options = unicache::CacheOptions::new().namespace(ns.clone());
    let l2 = unicache::backends::open(parsed.backend, options.clone())
        .await
        .unwrap();
    let c = TieredCache::builder(TierConfig::new(1000).invalidation(Invalidation::Tracking))
        .options(&options)
        .backplane(redis)
        .build(l2)
        .await
        .unwrap();
    assert_eq!(tier_stat(&c, "tracked_masters").await, 3);
    let (k, full) = ("failing", format!("{ns}:failing"));
    let m = owner(&cluster, &full);
    let mp = cluster.nodes[m].port.to_string();
    let r = (0..cluster.nodes.len())
        .find(|&i| !cluster.is_master(i) && cli(cluster.nodes[i].port, &["ROLE"]).contains(&mp))
        .expect("a replica of the key's master");
    for i in (0..cluster.nodes.len()).filter(|&i| !cluster.is_master(i)) {
        assert!(
            tracking_clients(cluster.nodes[i].port).is_empty(),
            "replica tracked"
        );
    }
    cli_set(cluster.nodes[m].port, &full, "v1");
    held_in_l1(&c, k, "v1").await;
    let resubs = tier_stat(&c, "resubscribes").await;
    let rp = cluster.nodes[r].port;
    assert_eq!(cli(rp, &["CLUSTER", "FAILOVER"]), "OK");
    let t = Instant::now();
    while !cluster.is_master(r) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "manual failover never done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = wait_tracking(&c, 3, resubs, Duration::from_secs(3)).await;
    println!("manual failover: tracking on the new master {took:?} after the promotion was seen");
    assert_eq!(tracking_clients(rp).len(), 1);
    held_after_failover(&c, k, "v1", Duration::from_secs(5)).await;
    assert_eq!(cli(rp, &["SET", &full, "v2"]), "OK");
    wait_value(&c, k, Some(b"v2")).await;
    // The new master crashes: L1 is off until the old one is promoted back.
    held_in_l1(&c, k, "v2").await;
    let resubs = tier_stat(&c, "resubscribes").await;
    cluster.nodes[r].kill();
    let killed = Instant::now();
    while c.l1_live() {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "L1 still on 1 s after the master died"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let flushed = killed.elapsed();
    let took = wait_tracking(&c, 3, resubs, Duration::from_secs(15)).await;
    println!("master crash: L1 flushed {flushed:?} after the kill; tracking back {took:?} later");
    assert!(cluster.is_master(m));
    held_after_failover(&c, k, "v2", Duration::from_secs(5)).await;
    assert_eq!(cli(cluster.nodes[m].port, &["SET", &full, "v3"]), "OK");
    wait_value(&c, k, Some(b"v3")).await;
}

// ---- Hardening, round 2 ----

/// Item 4: L1 over memcached never serves a key after memcached stopped
/// returning it. memcached counts TTLs in whole seconds off a once-a-second
/// clock, so a key set for 2 s goes after 1-2 s and a remaining TTL of
/// "1" means anything from 0 to 1 s. Each round reads memcached directly
/// first, then through the tier: once the direct read misses, the tier
/// must miss too. Keys set by another client (filled from L2's TTL) and by
/// the tier itself (L1 stored with the written TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_over_memcached_never_outlives_l2() {
    let mc = &servers::shared_memcached()[0];
    let ns = unique_ns("tier-mc-ttl");
    let base = format!("memcached://127.0.0.1:{}?namespace={ns}", mc.port);
    let direct = unicache::open(&base).await.unwrap();
    let c = unicache::open(&format!("{base}&l1=100&l1_ttl=30s"))
        .await
        .unwrap();
    let mut checked = 0;
    for round in 0..4 {
        let k = format!("k{round}");
        if round % 2 == 0 {
            direct
                .set(&k, b"v", Some(Duration::from_secs(2)))
                .await
                .unwrap();
        } else {
            c.set(&k, b"v", Some(Duration::from_secs(2))).await.unwrap();
        }
        let t = Instant::now();
        let mut gone: Option<Instant> = None;
        while t.elapsed() < Duration::from_millis(3500) {
            let in_l2 = direct.get(&k).await.unwrap().is_some();
            let through = c.get(&k).await.unwrap();
            if !in_l2 && gone.is_none() {
                gone = Some(Instant::now());
            }
            if let Some(g) = gone {
                assert!(
                    through.is_none(),
                    "round {round}: the tier served {k} {:?} after memcached stopped returning it",
                    g.elapsed()
                );
                checked += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(gone.is_some(), "round {round}: {k} never expired");
    }
    assert!(checked > 100, "{checked}");
}

/// A TCP proxy in front of a real server. Armed with a byte pattern, it
/// lets the next request carrying it through and then closes that
/// connection as soon as the server replies: the command ran, its reply is
/// lost ("connection lost after sending").
struct Proxy {
    port: u16,
    arm: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

fn proxy(to: u16) -> Proxy {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let arm: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
    let armed = arm.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { return };
            let Ok(up) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let _ = (c.set_nodelay(true), up.set_nodelay(true));
            let doomed = Arc::new(AtomicBool::new(false));
            let (mut c1, mut up1) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            let (arm, d) = (armed.clone(), doomed.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n @ 1..) = c1.read(&mut buf) {
                    let mut a = arm.lock().unwrap();
                    if let Some(p) = a.as_deref()
                        && buf[..n].windows(p.len()).any(|w| w == p)
                    {
                        d.store(true, Ordering::SeqCst);
                        *a = None;
                    }
                    drop(a);
                    if up1.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = up1.shutdown(Shutdown::Both);
            });
            let (mut c2, mut up2) = (c, up);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n @ 1..) = up2.read(&mut buf) {
                    if doomed.load(Ordering::SeqCst) || c2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c2.shutdown(Shutdown::Both);
                let _ = up2.shutdown(Shutdown::Both);
            });
        }
    });
    Proxy { port, arm }
}

impl Proxy {
    fn arm(&self, pattern: &[u8]) {
        *self.arm.lock().unwrap() = Some(pattern.to_vec());
    }
}

/// Reads `key` through `c` until it is `want`, retrying errors (a dropped
/// connection reconnects), failing at once if L1 serves `stale`.
async fn never_stale(c: &dyn Cache, key: &str, want: &[u8], stale: &[u8], who: &str) {
    let t = Instant::now();
    loop {
        match c.get(key).await {
            Ok(Some(v)) if v == want => return,
            Ok(Some(v)) if v == stale => panic!("{who}: L1 still serves the old {key}"),
            _ => {}
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{who}: {key} never became {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Item 5: a write whose reply was lost (the connection dropped after Redis
/// ran it) evicts this process's L1 copy and tells the other processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_reply_was_lost_evicts_and_publishes() {
    let server = shared_redis();
    let p = proxy(server.port);
    let ns = unique_ns("tier-lost-reply");
    let w = unicache::open(&redis_url(p.port, &ns, "")).await.unwrap();
    let o = unicache::open(&redis_url(server.port, &ns, ""))
        .await
        .unwrap();
    let direct = plain(&ns).await;
    // set
    w.set("k", b"old-value", None).await.unwrap();
    held_in_l1(&*w, "k", "old-value").await;
    held_in_l1(&*o, "k", "old-value").await;
    p.arm(b"new-value-1");
    let e = w.set("k", b"new-value-1", None).await.unwrap_err();
    println!("set with its reply lost: {e}");
    assert_eq!(
        direct.get("k").await.unwrap().as_deref(),
        Some(&b"new-value-1"[..]),
        "the set did not land"
    );
    never_stale(&*w, "k", b"new-value-1", b"old-value", "writer").await;
    never_stale(&*o, "k", b"new-value-1", b"old-value", "other handle").await;
    // incr (its script loaded by a first call, so the armed call runs it)
    w.incr("ctr-lost", 1).await.unwrap();
    held_in_l1(&*w, "ctr-lost", "1").await;
    held_in_l1(&*o, "ctr-lost", "1").await;
    p.arm(format!("{ns}:ctr-lost").as_bytes());
    let e = w.incr("ctr-lost", 1).await.unwrap_err();
    println!("incr with its reply lost: {e}");
    assert_eq!(
        direct.get("ctr-lost").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    never_stale(&*w, "ctr-lost", b"2", b"1", "writer").await;
    never_stale(&*o, "ctr-lost", b"2", b"1", "other handle").await;
}

/// Item 10: on a frozen Redis (SIGSTOP), a tiered write fails within about
/// one `response_timeout` (1 s here), as a plain one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_write_on_a_frozen_redis_fails_within_one_timeout() {
    let server = servers::redis_server();
    let ns = unique_ns("tier-frozen");
    // A connect timeout of 1 s too: `clear` opens connections of its own.
    let url = redis_url(server.port, &ns, "&response_timeout=1s&connect_timeout=1s");
    let c = unicache::open(&url).await.unwrap();
    let o = unicache::open(&url).await.unwrap();
    c.set("k", b"v", None).await.unwrap();
    c.set("n", b"1", None).await.unwrap();
    held_in_l1(&*o, "k", "v").await;
    server.signal(libc::SIGSTOP);
    let mut took = Vec::new();
    // `clear` announced after L2's timeout with a response timeout of its
    // own: 2x before.
    for op in ["set", "delete", "incr", "set_many", "clear"] {
        let t = Instant::now();
        let r = match op {
            "set" => c.set("k", b"w", None).await.map(|_| ()),
            "delete" => c.delete("k").await.map(|_| ()),
            "incr" => c.incr("n", 1).await.map(|_| ()),
            "set_many" => {
                c.set_many(&[("a", &b"1"[..]), ("b", &b"2"[..])], None)
                    .await
            }
            _ => c.clear().await,
        };
        took.push((op, t.elapsed()));
        assert!(r.is_err(), "{op} on a frozen server succeeded");
    }
    server.signal(libc::SIGCONT);
    println!("tiered writes on a frozen Redis (response_timeout 1 s): {took:?}");
    // 1.25 s; on a machine whose run queue is longer than its cores, where
    // L2's own timer fires late, 1.6 s (still under the 2 s of two timeouts).
    let load = overload();
    let bound = Duration::from_millis(if load > 1.0 { 1600 } else { 1250 });
    if load > 1.0 {
        println!("load average {load:.1}x the cores: checking {bound:?}, not 1.25 s");
    }
    for (op, d) in took {
        assert!(d < bound, "{op} took {d:?} (load {load:.1}x)");
    }
    // The timed-out set may have landed: the other process's copy goes.
    wait_value_within(&*o, "k", None, Duration::from_secs(3)).await;
}

/// `CLOCK_MONOTONIC` in microseconds: one clock for every process here.
fn mono_micros() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// A reader that the parent stops and continues (item 6): reads `k`
/// through its L1 every 0.5 ms for `PAUSE_SECS` and prints, for each read
/// whose value differs from the previous one's, `PAUSE <start µs> <value>`;
/// and the start of the first read after any gap over 20 ms (a pause).
#[test]
#[ignore]
fn paused_child() {
    let Ok(url) = std::env::var("PAUSE_URL") else {
        return;
    };
    let secs: u64 = std::env::var("PAUSE_SECS").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(unicache::open(&url)).unwrap();
    let t = Instant::now();
    let mut last: Option<(u64, String)> = None;
    while t.elapsed() < Duration::from_secs(secs) {
        let start = mono_micros();
        let v = rt.block_on(c.get("k")).unwrap();
        let v = v.map_or("-".into(), |b| String::from_utf8_lossy(&b).into_owned());
        let gap = last.as_ref().is_some_and(|(at, _)| start - at > 20_000);
        if gap || last.as_ref().is_none_or(|(_, l)| *l != v) {
            println!("PAUSE {start} {v}");
        }
        last = Some((start, v));
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Item 6: a reader stopped (SIGSTOP) for 200 ms while a value is
/// overwritten must not serve the old value from L1 when continued, before
/// it has handled the invalidation queued meanwhile. A read that began
/// more than 50 ms after the new value's write returned must see it.
fn paused_reader_sees_writes(invalidation: &str) {
    let server = servers::redis_server();
    let ns = unique_ns("tier-paused");
    let url = redis_url(
        server.port,
        &ns,
        &format!("&l1_invalidation={invalidation}"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let w = rt.block_on(unicache::open(&url)).unwrap();
    rt.block_on(w.set("k", b"0", None)).unwrap();
    let rounds = 12u64;
    let child = common::spawn_self(
        "paused_child",
        &[
            ("PAUSE_URL", url.clone()),
            ("PAUSE_SECS", (2 + rounds * 6 / 10).to_string()),
        ],
    );
    std::thread::sleep(Duration::from_millis(1200));
    let pid = child.id() as i32;
    let mut acked = vec![(0u64, 0u64)];
    for i in 1..=rounds {
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(20));
        rt.block_on(w.set("k", i.to_string().as_bytes(), None))
            .unwrap();
        acked.push((i, mono_micros()));
        std::thread::sleep(Duration::from_millis(200));
        unsafe { libc::kill(pid, libc::SIGCONT) };
        std::thread::sleep(Duration::from_millis(380));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", common::stderr(&out));
    let mut reads = 0;
    let mut worst = 0u64;
    for l in text.lines() {
        let Some(rest) = l.find("PAUSE ").map(|i| &l[i + 6..]) else {
            continue;
        };
        let mut f = rest.split(' ');
        let start: u64 = f.next().unwrap().parse().unwrap();
        let v: u64 = f.next().unwrap().parse().unwrap_or(0);
        reads += 1;
        // The newest value acknowledged more than 50 ms before this read.
        if let Some(&(due, at)) = acked.iter().rev().find(|(_, at)| at + 50_000 < start)
            && v < due
        {
            worst = worst.max(start - at);
        }
    }
    println!("{invalidation}: {reads} reads logged, worst stale read {worst} us after the write");
    assert!(reads as u64 >= rounds, "too few reads logged: {text}");
    assert_eq!(
        worst, 0,
        "{invalidation}: a continued reader served an overwritten value"
    );
}

#[test]
fn a_paused_reader_never_serves_an_overwritten_value_pubsub() {
    paused_reader_sees_writes("pubsub");
}

#[test]
fn a_paused_reader_never_serves_an_overwritten_value_tracking() {
    paused_reader_sees_writes("tracking");
}

/// Item 7: writes by a Redis cache without an L1 (the library, or the
/// `unicache` CLI: `set`, `delete`, `incr`, `compare_and_set`, `persist`,
/// `clear`, `write`) reach the L1
/// of a tiered cache in another process in pub/sub mode; `publish=0` turns
/// that off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_an_l1_invalidate_other_l1s() {
    let port = shared_redis().port;
    let ns = unique_ns("tier-plain-writer");
    let c = unicache::open(&redis_url(port, &ns, "")).await.unwrap();
    let w = plain(&ns).await;
    let port_url = format!("redis://127.0.0.1:{port}?namespace={ns}");
    let quiet = unicache::open(&format!("{port_url}&publish=0"))
        .await
        .unwrap();
    // Library: each write kind, one key each.
    for (i, op) in [
        "set",
        "delete",
        "incr",
        "add",
        "touch",
        "persist",
        "compare_and_set",
        "set_many",
        "delete_many",
        "clear",
    ]
    .iter()
    .enumerate()
    {
        let k = format!("lib{i}");
        w.set(&k, b"10", None).await.unwrap();
        held_in_l1(&*c, &k, "10").await;
        match *op {
            "set" => w.set(&k, b"11", None).await.unwrap(),
            "delete" => assert!(w.delete(&k).await.unwrap()),
            "incr" => assert_eq!(w.incr(&k, 1).await.unwrap(), 11),
            "add" => {
                // Deleted unannounced: L1 still holds it when add succeeds.
                quiet.delete(&k).await.unwrap();
                assert!(w.add(&k, b"11", None).await.unwrap());
            }
            "touch" => assert!(w.touch(&k, Some(Duration::from_secs(60))).await.unwrap()),
            "persist" => assert!(w.persist(&k).await.unwrap()),
            "compare_and_set" => assert!(w.compare_and_set(&k, b"10", b"11", None).await.unwrap()),
            "set_many" => w.set_many(&[(&k, &b"11"[..])], None).await.unwrap(),
            "delete_many" => assert_eq!(w.delete_many(&[&k]).await.unwrap(), 1),
            _ => w.clear().await.unwrap(),
        }
        let want: Option<&[u8]> = match *op {
            "delete" | "delete_many" | "clear" => None,
            "touch" | "persist" => Some(b"10"),
            _ => Some(b"11"),
        };
        if matches!(*op, "touch" | "persist") {
            // Same value: the eviction shows as an L2 read.
            let l2 = tier_stat(&*c, "l2_hits").await;
            wait_value(&*c, &k, want).await;
            let t = Instant::now();
            while tier_stat(&*c, "l2_hits").await == l2 {
                c.get(&k).await.unwrap();
                assert!(t.elapsed() < Duration::from_secs(1), "{op} did not evict");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        } else {
            wait_value(&*c, &k, want).await;
        }
    }
    // The CLI.
    let url = format!("redis://127.0.0.1:{port}?namespace={ns}");
    let run = |args: &[&str]| {
        let out = common::unicache().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", common::stderr(&out));
    };
    w.set("cli", b"10", None).await.unwrap();
    held_in_l1(&*c, "cli", "10").await;
    run(&["set", "--cache", &url, "cli", "20"]);
    wait_value(&*c, "cli", Some(b"20")).await;
    held_in_l1(&*c, "cli", "20").await;
    run(&["incr", "--cache", &url, "cli"]);
    wait_value(&*c, "cli", Some(b"21")).await;
    held_in_l1(&*c, "cli", "21").await;
    run(&["delete", "--cache", &url, "cli"]);
    wait_value(&*c, "cli", None).await;
    w.set("cli", b"10", None).await.unwrap();
    held_in_l1(&*c, "cli", "10").await;
    run(&["clear", "--cache", &url]);
    wait_value(&*c, "cli", None).await;
    w.set("w3", b"old", None).await.unwrap();
    held_in_l1(&*c, "w3", "old").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, common::padded_jsonl("w", 10)).unwrap();
    run(&[
        "write",
        "-q",
        "--input",
        input.to_str().unwrap(),
        "--cache",
        &url,
        "--output",
        dir.path().join("summary.json").to_str().unwrap(),
    ]);
    let t = Instant::now();
    while c.get("w3").await.unwrap().as_deref() == Some(&b"old"[..]) {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "unicache write did not evict"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // publish=0: nothing is sent.
    w.set("q", b"10", None).await.unwrap();
    held_in_l1(&*c, "q", "10").await;
    let received = tier_stat(&*c, "invalidations_received").await;
    quiet.set("q", b"11", None).await.unwrap();
    w.set("q2", b"1", None).await.unwrap();
    // The publishing write's message comes; the other never does.
    let t = Instant::now();
    while tier_stat(&*c, "invalidations_received").await == received {
        assert!(t.elapsed() < Duration::from_secs(1), "no message at all");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        tier_stat(&*c, "invalidations_received").await,
        received + 1,
        "publish=0 published"
    );
}

/// Item 5, a timeout: a write that times out while Redis holds writes
/// (`CLIENT PAUSE WRITE`, which holds `PUBLISH` too) lands when the pause
/// ends; its message, not sent in time, is sent again in the background
/// and reaches the other process's L1 (its subscription never dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_write_that_lands_later_still_reaches_other_l1s() {
    let server = servers::redis_server();
    let ns = unique_ns("tier-write-pause");
    let w = unicache::open(&redis_url(server.port, &ns, "&response_timeout=300ms"))
        .await
        .unwrap();
    let o = unicache::open(&redis_url(server.port, &ns, ""))
        .await
        .unwrap();
    w.set("k", b"old", None).await.unwrap();
    held_in_l1(&*o, "k", "old").await;
    let received = tier_stat(&*o, "invalidations_received").await;
    assert_eq!(
        cli(server.port, &["CLIENT", "PAUSE", "1500", "WRITE"]),
        "OK"
    );
    let paused = Instant::now();
    let e = w.set("k", b"new", None).await.unwrap_err();
    assert_eq!(e.kind(), unicache::ErrorKind::Timeout, "{e}");
    while tier_stat(&*o, "invalidations_received").await == received {
        assert!(
            paused.elapsed() < Duration::from_secs(4),
            "the timed-out write's message never came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "message reached the other L1 {:?} after the pause began",
        paused.elapsed()
    );
    wait_value_within(&*o, "k", Some(b"new"), Duration::from_secs(1)).await;
}

/// Code, not URLs: two Redis caches and two tiers built from clones of one
/// `RedisConfig`. The second cache cannot share the first's sender id, so
/// neither tier skips the other's messages: each hears the other's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_built_from_one_redis_config_hear_each_other() {
    use unicache::backends::redis::{RedisCache, RedisConfig};
    use unicache::tiered::{TierConfig, TieredCache};
    let port = shared_redis().port;
    let cfg = RedisConfig::new(vec![format!("redis://127.0.0.1:{port}")], false);
    let opts = unicache::CacheOptions::new().namespace(unique_ns("tier-one-config"));
    let mut tiers = Vec::new();
    for _ in 0..2 {
        let l2 = RedisCache::connect(cfg.clone(), opts.clone())
            .await
            .unwrap();
        let t = TieredCache::builder(TierConfig::new(100))
            .options(&opts)
            .backplane(cfg.clone())
            .build(Arc::new(l2))
            .await
            .unwrap();
        tiers.push(t);
    }
    let (a, b) = (&tiers[0], &tiers[1]);
    a.set("k", b"1", None).await.unwrap();
    held_in_l1(b, "k", "1").await;
    held_in_l1(a, "k", "1").await;
    b.set("k", b"2", None).await.unwrap();
    wait_value(a, "k", Some(b"2")).await;
    held_in_l1(a, "k", "2").await;
    a.set("k", b"3", None).await.unwrap();
    wait_value(b, "k", Some(b"3")).await;
}
