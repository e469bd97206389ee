//! Issue 10's atomic operations on the local backends, across processes and
//! on bad input. Each cross-process test runs this binary's ignored
//! `incr_worker` in 4 child processes (`common::spawn_self`) against one
//! SQLite file or one file log.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use unicache::{Cache, ErrorKind};

const PROCESSES: usize = 4;
/// Concurrent tasks per process, each doing `PER_TASK` increments.
const TASKS: usize = 4;
const PER_TASK: usize = 50;

/// Child side: each of `TASKS` tasks tries one `add` of the same key, then
/// does `incr(1)` `PER_TASK` times; prints every value it got back (0 for a
/// successful add), one per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the cross-process tests as a child process"]
async fn incr_worker() {
    let Ok(url) = std::env::var("UNICACHE_ATOMIC_URL") else {
        return;
    };
    let cache = unicache::open(&url).await.unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(PER_TASK);
                // 0 stands for "this task's add stored".
                if c.add("first", b"me", None).await.unwrap() {
                    got.push(0);
                }
                for _ in 0..PER_TASK {
                    got.push(c.incr("counter", 1).await.unwrap());
                }
                got
            })
        })
        .collect();
    let mut out = String::new();
    for t in tasks {
        for n in t.await.unwrap() {
            out.push_str(&format!("got {n}\n"));
        }
    }
    print!("{out}");
}

/// Runs 4 workers on `url` at once; exactly one add stored, every value
/// 1..=N came back exactly once across the processes and the counter ends
/// at N.
async fn incr_from_four_processes(url: &str) {
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| common::spawn_self("incr_worker", &[("UNICACHE_ATOMIC_URL", url.to_string())]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    for mut child in children {
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a worker did not finish within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        common::assert_exit(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        seen.extend(
            text.lines()
                // The harness's "test incr_worker ... " may precede the first.
                .filter_map(|l| l.split_once("got ").map(|(_, n)| n))
                .map(|n| n.parse::<i64>().unwrap()),
        );
    }
    let total = (PROCESSES * TASKS * PER_TASK) as i64;
    let adds = seen.iter().filter(|n| **n == 0).count();
    assert_eq!(adds, 1, "one add of 16 tasks in 4 processes stored");
    seen.retain(|n| *n != 0);
    assert_eq!(seen.len() as i64, total, "every worker reported");
    let distinct: BTreeSet<i64> = seen.iter().copied().collect();
    let missing: Vec<i64> = (1..=total).filter(|n| !distinct.contains(n)).collect();
    assert!(
        missing.is_empty() && distinct.len() as i64 == total,
        "each of 1..={total} given once: {} distinct, {} missing (first {:?})",
        distinct.len(),
        missing.len(),
        missing.first()
    );
    let cache = unicache::open(url).await.unwrap();
    let end = cache.get("counter").await.unwrap();
    assert_eq!(end.as_deref(), Some(total.to_string().as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_incr_from_four_processes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter.sqlite3");
    incr_from_four_processes(&format!("sqlite:{}?busy_timeout=60s", path.display())).await;
    // sqlite3 reads the number.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let (kind, text): (String, String) = raw
        .query_row(
            "SELECT typeof(value), value FROM cache WHERE key = 'counter'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((kind.as_str(), text.as_str()), ("text", "800"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_log_incr_from_four_processes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter.jsonl");
    incr_from_four_processes(&format!("file:{}?sync=never", path.display())).await;
    // The last line holds the number (JSON text: a `j` field).
    let log = std::fs::read_to_string(&path).unwrap();
    let last = log.lines().last().unwrap();
    assert!(last.contains(r#""k":"counter","j":800}"#), "{last}");
}

/// Every local backend, fresh.
async fn local_caches(dir: &std::path::Path) -> Vec<std::sync::Arc<dyn Cache>> {
    let mut out: Vec<std::sync::Arc<dyn Cache>> =
        vec![unicache::open("memory://").await.unwrap().into()];
    for url in [
        format!("sqlite:{}", dir.join("bad.sqlite3").display()),
        format!("file:{}", dir.join("bad.jsonl").display()),
    ] {
        out.push(unicache::open(&url).await.unwrap().into());
    }
    out
}

/// A TTL of zero and a non-integer counter: InvalidInput naming the key,
/// nothing changed, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_input_on_every_local_backend() {
    let dir = tempfile::tempdir().unwrap();
    for c in local_caches(dir.path()).await {
        let name = c.backend();
        let zero = Some(Duration::ZERO);
        let e = c.add("k", b"v", zero).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
        assert!(!c.contains("k").await.unwrap(), "{name}: nothing stored");
        c.set("k", b"v", None).await.unwrap();
        let e = c.touch("k", zero).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
        assert_eq!(c.ttl("k").await.unwrap(), Some(None), "{name}: kept");
        for bad in [
            &b"1.5"[..],
            b" 7",
            b"0x10",
            b"",
            b"\xff\xfe",
            b"99999999999999999999",
        ] {
            c.set("odd", bad, None).await.unwrap();
            let e = c.incr("odd", 1).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
            assert_eq!(e.context("key"), Some("odd"), "{name}: {e}");
            assert_eq!(c.get("odd").await.unwrap().as_deref(), Some(bad), "{name}");
        }
        assert_eq!(c.incr("big", i64::MAX).await.unwrap(), i64::MAX);
        let e = c.incr("big", 1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
        assert_eq!(c.incr("big", i64::MIN).await.unwrap(), -1, "{name}");
    }
}

/// The memory backend's limit is its byte bound: a key too large for one
/// shard is ValueTooLarge for add and incr, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_over_the_memory_limit() {
    let c = unicache::open("memory://?capacity=10&max_bytes=1000")
        .await
        .unwrap();
    let key = "k".repeat(5000);
    let e = c.add(&key, b"v", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
    let e = c.incr(&key, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
    assert!(!c.touch(&key, None).await.unwrap());
    assert_eq!(c.get_with_ttl(&key).await.unwrap(), None);
    assert_eq!(c.len().await.unwrap(), 0);
}
