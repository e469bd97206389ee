//! Bounded SQLite files (`max_bytes`, `max_entries`, `max_age`): the bound
//! holds after every write, eviction is in write order with a second chance
//! for what was read, the bound belongs to the file (every process keeps
//! it), the usage always equals a recount (also after SIGKILL), and four
//! processes writing ten times the bound lose nothing the bound did not
//! evict.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use unicache::{Cache, CacheOptions};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn url(path: &Path, query: &str) -> String {
    format!("sqlite:{}?{query}", path.display())
}

async fn open(path: &Path, query: &str) -> Arc<dyn Cache> {
    unicache::open(&url(path, query)).await.unwrap().into()
}

/// The file's usage as `stats` reports it: (bytes, entries, evictions).
async fn usage(c: &dyn Cache) -> (i64, i64, i64) {
    let s = c.stats().await.unwrap();
    let b = &s.server.unwrap()["bounded"];
    let n = |k: &str| b[k].as_i64().unwrap_or_else(|| panic!("{k} in {b}"));
    (n("bytes_used"), n("entries"), n("evictions"))
}

/// The usage recounted from the rows, as the triggers count it.
fn recount(path: &Path) -> (i64, i64) {
    let c = Connection::open(path).unwrap();
    c.query_row(
        "SELECT coalesce(sum(length(CAST(key AS BLOB)) + length(CAST(value AS BLOB)) + 64), 0), \
         count(*) FROM cache",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn entries_and_bytes_stay_within_their_bounds_after_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let path = dir.path().join("n.sqlite3");
    let c = rt.block_on(open(&path, "max_entries=100"));
    assert!(c.capabilities().evicts);
    for i in 0..1000 {
        rt.block_on(c.set(&format!("k{i}"), b"v", None)).unwrap();
        let (_, entries, _) = rt.block_on(usage(&*c));
        assert!(entries <= 100, "{entries} entries after write {i}");
    }
    let (_, entries, evictions) = rt.block_on(usage(&*c));
    assert_eq!((entries, evictions), (100, 900));
    assert_eq!(rt.block_on(c.len()).unwrap(), 100);
    // Write order: the newest 100 are what is left.
    assert!(rt.block_on(c.get("k899")).unwrap().is_none());
    assert!(rt.block_on(c.get("k900")).unwrap().is_some());
    assert_eq!(rt.block_on(c.stats()).unwrap().evictions, 900);

    let path = dir.path().join("b.sqlite3");
    let c = rt.block_on(open(&path, "max_bytes=100KB"));
    let value = vec![b'x'; 1000];
    for batch in 0..40 {
        let keys: Vec<String> = (0..25).map(|i| format!("b{batch}-{i}")).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &value[..])).collect();
        rt.block_on(c.set_many(&entries, None)).unwrap();
        let (bytes, _, _) = rt.block_on(usage(&*c));
        assert!(bytes <= 100_000, "{bytes} bytes after batch {batch}");
        assert_eq!((bytes, rt.block_on(usage(&*c)).1), recount(&path));
    }
    let (bytes, entries, evictions) = rt.block_on(usage(&*c));
    assert!(bytes > 90_000, "evicted more than needed: {bytes}");
    assert_eq!(entries + evictions, 1000);
}

#[test]
fn a_read_entry_gets_a_second_chance() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let path = dir.path().join("clock.sqlite3");
    let c = rt.block_on(open(&path, "max_entries=10"));
    for i in 0..10 {
        rt.block_on(c.set(&format!("k{i}"), b"v", None)).unwrap();
    }
    // k0 is the oldest, but read; k1 is the oldest unread.
    assert!(rt.block_on(c.get("k0")).unwrap().is_some());
    rt.block_on(c.set("k10", b"v", None)).unwrap();
    assert!(rt.block_on(c.get("k0")).unwrap().is_some(), "k0 was read");
    assert!(rt.block_on(c.get("k1")).unwrap().is_none(), "k1 was not");
    // Reads through get_many count too.
    rt.block_on(c.get_many(&["k2"])).unwrap();
    rt.block_on(c.set("k11", b"v", None)).unwrap();
    assert!(rt.block_on(c.get("k2")).unwrap().is_some());
    assert!(rt.block_on(c.get("k3")).unwrap().is_none());
}

/// Expired entries go before live ones, and are not counted as evictions
/// (cachelib's prune test: 1 s and 5 s entries interleaved, then writes
/// after the 1 s ones expired keep every 5 s one).
#[test]
fn expired_entries_go_before_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let path = dir.path().join("exp.sqlite3");
    let c = rt.block_on(open(&path, "max_entries=9"));
    for i in 0..5 {
        rt.block_on(c.set(&format!("short{i}"), b"v", Some(Duration::from_secs(1))))
            .unwrap();
        rt.block_on(c.set(&format!("long{i}"), b"v", Some(Duration::from_secs(60))))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1200));
    // short0 went when the 10th entry came; short1..4 have expired since:
    // four new entries take their places.
    for i in 0..4 {
        rt.block_on(c.set(&format!("new{i}"), b"v", None)).unwrap();
        for j in 0..5 {
            let k = format!("long{j}");
            assert!(rt.block_on(c.contains(&k)).unwrap(), "{k} after new{i}");
        }
    }
    // One eviction only: the 10th entry before any had expired.
    assert_eq!(rt.block_on(usage(&*c)).2, 1);
}

#[test]
fn entries_older_than_max_age_go() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let path = dir.path().join("age.sqlite3");
    let c = rt.block_on(open(&path, "max_age=1s"));
    rt.block_on(c.set("old", b"v", Some(Duration::from_secs(3600))))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    rt.block_on(c.set("new", b"v", None)).unwrap();
    assert!(rt.block_on(c.get("old")).unwrap().is_none());
    assert!(rt.block_on(c.get("new")).unwrap().is_some());
    assert_eq!(rt.block_on(usage(&*c)).2, 1);
}

/// The bound belongs to the file: a process that gives none keeps it, one
/// that gives another replaces it; a plain (version 1) file with rows
/// becomes bounded with its usage counted.
#[test]
fn the_bound_is_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let path = dir.path().join("f.sqlite3");
    let plain = rt.block_on(open(&path, ""));
    for i in 0..30 {
        rt.block_on(plain.set(&format!("p{i}"), b"0123456789", None))
            .unwrap();
    }
    assert!(!plain.capabilities().evicts);
    let a = rt.block_on(open(&path, "max_entries=50"));
    assert_eq!(
        rt.block_on(usage(&*a)).1,
        30,
        "counted when it became bounded"
    );
    assert_eq!(rt.block_on(usage(&*a)).0, recount(&path).0);
    let b = rt.block_on(open(&path, ""));
    assert!(b.capabilities().evicts, "the file's bound");
    for i in 0..100 {
        rt.block_on(b.set(&format!("b{i}"), b"v", None)).unwrap();
    }
    assert_eq!(rt.block_on(usage(&*b)).1, 50);
    let _c = rt.block_on(open(&path, "max_entries=20"));
    rt.block_on(b.set("one-more", b"v", None)).unwrap();
    assert_eq!(rt.block_on(usage(&*b)).1, 20, "replaced by the last open");
    let s = rt.block_on(b.stats()).unwrap();
    assert_eq!(s.server.unwrap()["bounded"]["max_entries"], 20);
    // Bounds are refused, never ignored, where a backend cannot keep them.
    let e = rt
        .block_on(unicache::open("sqlite:/tmp/x?max_bytes=0"))
        .unwrap_err();
    assert!(e.to_string().contains("greater than zero"), "{e}");
    let o = CacheOptions::new().max_bytes(1000);
    let e = rt
        .block_on(unicache::open_with("redis://127.0.0.1:1", o))
        .unwrap_err();
    assert_eq!(e.kind(), unicache::ErrorKind::Unsupported, "{e}");
}

/// The child of the SIGKILL test: writes batches into a bounded file
/// until killed.
#[test]
#[ignore = "run by the cross-process tests as a child process"]
fn bounded_writer_child() {
    let Ok(path) = std::env::var("BOUNDED_PATH") else {
        return;
    };
    let tag = std::env::var("BOUNDED_TAG").unwrap();
    let n: usize = std::env::var("BOUNDED_N").unwrap().parse().unwrap();
    let rt = rt();
    let c = rt.block_on(open(Path::new(&path), "max_entries=500&max_bytes=200KB"));
    let value = vec![b'v'; 300];
    for batch in 0..n / 50 {
        let keys: Vec<String> = (0..50).map(|i| format!("{tag}-{batch}-{i}")).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &value[..])).collect();
        rt.block_on(c.set_many(&entries, None)).unwrap();
    }
    println!("done");
}

fn spawn_writer(path: &Path, tag: &str, n: usize) -> std::process::Child {
    common::spawn_self(
        "bounded_writer_child",
        &[
            ("BOUNDED_PATH", path.display().to_string()),
            ("BOUNDED_TAG", tag.to_string()),
            ("BOUNDED_N", n.to_string()),
        ],
    )
}

#[test]
fn the_usage_equals_a_recount_after_a_sigkill_mid_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill.sqlite3");
    for round in 0..3 {
        let mut child = spawn_writer(&path, &format!("r{round}"), 1_000_000);
        std::thread::sleep(Duration::from_millis(300 + 150 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let rt = rt();
        let c = rt.block_on(open(&path, ""));
        let (bytes, entries, _) = rt.block_on(usage(&*c));
        assert_eq!((bytes, entries), recount(&path), "round {round}");
        assert!(
            entries <= 500 && bytes <= 200_000,
            "{bytes} bytes, {entries} entries"
        );
    }
}

/// Four processes write ten times the bound at once: the bound holds, and
/// every key written is either there or counted as evicted.
#[test]
fn four_processes_writing_ten_times_the_bound_keep_it_and_lose_nothing_uncounted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("four.sqlite3");
    // Bounded before the writers start, so that every eviction is counted.
    let rt = rt();
    drop(rt.block_on(open(&path, "max_entries=500&max_bytes=200KB")));
    let per = 1_250; // 4 x 1,250 = 5,000 = 10 x 500 entries
    let children: Vec<_> = (0..4)
        .map(|p| spawn_writer(&path, &format!("p{p}"), per))
        .collect();
    for ch in children {
        let out = ch.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = rt.block_on(open(&path, ""));
    let (bytes, entries, evictions) = rt.block_on(usage(&*c));
    assert!(
        entries <= 500 && bytes <= 200_000,
        "{bytes} bytes, {entries} entries"
    );
    assert_eq!((bytes, entries), recount(&path));
    let mut present = 0;
    for p in 0..4 {
        let keys: Vec<String> = (0..per / 50)
            .flat_map(|b| (0..50).map(move |i| format!("p{p}-{b}-{i}")))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = rt.block_on(c.get_many(&refs)).unwrap();
        for v in got.into_iter().flatten() {
            assert_eq!(v.len(), 300);
            present += 1;
        }
    }
    assert_eq!(present, entries);
    assert_eq!(
        present + evictions,
        5_000,
        "every key there or counted as evicted"
    );
}
