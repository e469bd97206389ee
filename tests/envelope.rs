//! The value envelope of `fail_safe=1` / `refresh_ahead` caches against
//! concurrent writers and foreign values, and the one `incr` grammar, on
//! every backend (real redis-server, memcached, SQLite and log files).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::servers::{self, shared_redis};
use futures::StreamExt;
use unicache::{ErrorKind, Handle};

const LIMIT: Duration = Duration::from_secs(120);
const FS: &str = "fail_safe=1&fail_safe_max=1h";

/// One store of each backend: `(name, enveloped URL, plain URL)`, both URLs
/// on the same data (memory:// has no second view: `plain` is `None`).
fn stores(dir: &std::path::Path) -> Vec<(&'static str, String, Option<String>)> {
    let redis = shared_redis().port;
    let mc = servers::shared_memcached()[0].port;
    let ns = common::unique_ns("env");
    let sqlite = dir.join("e.sqlite3");
    let file = dir.join("e.jsonl");
    let pair = |base: String| {
        let sep = if base.contains('?') { '&' } else { '?' };
        (format!("{base}{sep}{FS}"), Some(base))
    };
    let mut out = vec![("memory", format!("memory://?{FS}"), None)];
    for (name, base) in [
        ("sqlite", format!("sqlite:{}", sqlite.display())),
        ("file", format!("file:{}?sync=never", file.display())),
        ("redis", format!("redis://127.0.0.1:{redis}?namespace={ns}")),
        (
            "memcached",
            format!("memcached://127.0.0.1:{mc}?namespace={ns}"),
        ),
    ] {
        let (env, plain) = pair(base);
        out.push((name, env, plain));
    }
    out
}

/// What the setter saw go wrong.
#[derive(Debug, Default, PartialEq, Eq)]
struct Damage {
    /// Reads after an acknowledged `set` that returned another value.
    reverted: u64,
    /// Reads after an acknowledged `delete` that found a value.
    resurrected: u64,
}

/// `TOUCHERS` tasks (each on a cache opened on its own, like another
/// process, except memory:// which has one) touch one key in a loop while
/// the setter stores v0..v{N-1}, deleting after every odd version, and
/// reads back after every acknowledged operation. A `touch` only changes
/// the expiry: any other value read back is a write it undid.
async fn touch_race(url: &str, versions: usize) -> (Damage, u64) {
    const TOUCHERS: usize = 3;
    let setter = unicache::open(url).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let touched = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TOUCHERS {
        let c: Handle = if url.starts_with("memory:") {
            setter.clone()
        } else {
            unicache::open(url).await.unwrap()
        };
        let (stop, touched) = (stop.clone(), touched.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if c.touch("k", Some(Duration::from_secs(600))).await.unwrap() {
                    touched.fetch_add(1, Ordering::Relaxed);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut damage = Damage::default();
    for i in 0..versions {
        let v = format!("v{i}");
        setter
            .set("k", v.as_bytes(), Some(Duration::from_secs(300)))
            .await
            .unwrap();
        if setter.get("k").await.unwrap().as_deref() != Some(v.as_bytes()) {
            damage.reverted += 1;
        }
        if i % 2 == 1 {
            setter.delete("k").await.unwrap();
            if setter.get("k").await.unwrap().is_some() {
                damage.resurrected += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (damage, touched.load(Ordering::Relaxed))
}

/// Issue "Hardening, round 2", item 1: `touch` through the envelope never
/// undoes a concurrent `set` or `delete`, on every backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn touch_under_fail_safe_never_reverts_a_set_or_resurrects_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    tokio::time::timeout(LIMIT, async {
        let mut failed = Vec::new();
        for (name, url, _) in stores(dir.path()) {
            let versions = if name == "memory" { 20_000 } else { 600 };
            let (damage, touched) = touch_race(&url, versions).await;
            eprintln!("{name}: {damage:?}, {touched} touches");
            assert!(touched > 0, "{name}: the touchers never found the key");
            if damage != Damage::default() {
                failed.push((name, damage));
            }
        }
        assert!(failed.is_empty(), "{failed:?}");
    })
    .await
    .unwrap();
}

/// Item 2: `incr` through the envelope counts an enveloped integer (its
/// logical expiry kept), restarts a logically expired one at 0, and counts
/// a plain (foreign) one as before; concurrent increments lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_under_fail_safe_counts_enveloped_expired_and_plain_values() {
    let dir = tempfile::tempdir().unwrap();
    tokio::time::timeout(LIMIT, async {
        let stores = stores(dir.path());
        let mut opened = Vec::new();
        for (name, url, plain) in &stores {
            let h = unicache::open(url).await.unwrap();
            // memcached keeps whole seconds: a logical TTL of 1 s.
            h.set("old", b"5", Some(Duration::from_secs(1)))
                .await
                .unwrap();
            opened.push((*name, h, plain.clone()));
        }
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        for (name, h, plain) in &opened {
            assert_eq!(h.get("old").await.unwrap(), None, "{name}");
            assert_eq!(h.incr("old", 3).await.unwrap(), 3, "{name}: restarted at 0");
            assert_eq!(
                h.get("old").await.unwrap().as_deref(),
                Some(&b"3"[..]),
                "{name}"
            );

            h.set("cnt", b"5", Some(Duration::from_secs(60)))
                .await
                .unwrap();
            assert_eq!(h.incr("cnt", 2).await.unwrap(), 7, "{name}");
            assert_eq!(h.incr("cnt", -10).await.unwrap(), -3, "{name}");
            assert_eq!(
                h.get("cnt").await.unwrap().as_deref(),
                Some(&b"-3"[..]),
                "{name}"
            );
            let ttl = h.ttl("cnt").await.unwrap().unwrap().unwrap();
            assert!(
                ttl > Duration::from_secs(50) && ttl <= Duration::from_secs(60),
                "{name}: the logical expiry is kept: {ttl:?}"
            );
            let e = h.incr("cnt", i64::MAX).await;
            assert_eq!(e.unwrap(), i64::MAX - 3, "{name}");
            let e = h.incr("cnt", 4).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");

            // A plain counter: one made by incr, and one another client wrote.
            assert_eq!(h.incr("fresh", 41).await.unwrap(), 41, "{name}");
            assert_eq!(h.incr("fresh", 1).await.unwrap(), 42, "{name}");
            if let Some(plain) = plain {
                let p = unicache::open(plain).await.unwrap();
                assert_eq!(p.get("fresh").await.unwrap().as_deref(), Some(&b"42"[..]));
                p.set("foreign", b"10", None).await.unwrap();
                assert_eq!(h.incr("foreign", 5).await.unwrap(), 15, "{name}");
                assert_eq!(p.get("foreign").await.unwrap().as_deref(), Some(&b"15"[..]));
                p.set("word", b"abc", None).await.unwrap();
                let e = h.incr("word", 1).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
                assert_eq!(p.get("word").await.unwrap().as_deref(), Some(&b"abc"[..]));
            }

            // Concurrent increments of one enveloped counter lose nothing.
            h.set("many", b"0", Some(Duration::from_secs(60)))
                .await
                .unwrap();
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let h = h.clone();
                    tokio::spawn(async move {
                        let mut got = Vec::new();
                        for _ in 0..25 {
                            got.push(h.incr("many", 1).await.unwrap());
                        }
                        got
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all.sort();
            assert_eq!(all, (1..=100).collect::<Vec<i64>>(), "{name}");
            let ttl = h.ttl("many").await.unwrap().unwrap().unwrap();
            assert!(ttl > Duration::from_secs(50), "{name}: {ttl:?}");
        }
    })
    .await
    .unwrap();
}

/// Item 3: values another client wrote that begin like the old envelope
/// (`F5 01`) read back as exactly their bytes through a fail-safe cache,
/// with their own TTL, in `get`, `get_with_ttl` and `entries` (export).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_that_look_like_envelopes_read_as_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = vec![0xF5, 0x01];
    // A logical expiry in 1970 and a TTL of 5 ms: the old reader dropped it.
    header.extend_from_slice(&1u64.to_be_bytes());
    header.extend_from_slice(&5u64.to_be_bytes());
    let mut past = header.clone();
    past.extend_from_slice(b"gone");
    let mut none = vec![0xF5, 0x01];
    none.extend_from_slice(&[0; 16]);
    none.extend_from_slice(b"stripped");
    let all_ff = [&[0xF5, 0x01][..], &[0xFF; 16]].concat();
    let values: Vec<(&str, Vec<u8>)> = vec![("past", past), ("none", none), ("ff", all_ff)];
    tokio::time::timeout(LIMIT, async {
        for (name, url, plain) in stores(dir.path()) {
            let Some(plain) = plain else { continue };
            let p = unicache::open(&plain).await.unwrap();
            let h = unicache::open(&url).await.unwrap();
            for (k, v) in &values {
                p.set(k, v, Some(Duration::from_secs(100))).await.unwrap();
                let got = h.get(k).await.unwrap();
                assert_eq!(got.as_deref(), Some(&v[..]), "{name} {k}");
                let vt = h.get_with_ttl(k).await.unwrap().unwrap();
                assert_eq!(&vt.value[..], &v[..], "{name} {k}");
                let ttl = vt.ttl.unwrap();
                assert!(
                    ttl <= Duration::from_secs(100) && ttl > Duration::from_secs(90),
                    "{name} {k}: {ttl:?}"
                );
                assert!(h.contains(k).await.unwrap(), "{name} {k}");
            }
            if h.capabilities().list_keys {
                let mut got: Vec<(String, Vec<u8>)> = h
                    .entries()
                    .await
                    .unwrap()
                    .map(|e| e.unwrap())
                    .map(|e| (e.key, e.value.to_vec()))
                    .collect()
                    .await;
                got.sort();
                let mut want: Vec<(String, Vec<u8>)> = values
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                want.sort();
                assert_eq!(got, want, "{name}");
            }
            // What the envelope layer writes reads back as given, even a
            // value that is itself an envelope.
            h.set("x", b"plain", None).await.unwrap();
            let raw = p.get("x").await.unwrap().unwrap();
            assert_ne!(&raw[..], b"plain", "{name}: stored behind a header");
            h.set("nested", &raw, None).await.unwrap();
            assert_eq!(h.get("nested").await.unwrap().unwrap(), raw, "{name}");
        }
    })
    .await
    .unwrap();
}

/// Item 14: one `incr` grammar (Redis's, checked against redis-server
/// 7.0): the same table of stored values gives the same answers on every
/// backend, written plainly or through the envelope; a refused value is
/// left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_grammar_is_the_same_on_every_backend() {
    let table: &[(&[u8], Option<i64>)] = &[
        (b"0", Some(1)),
        (b"5", Some(6)),
        (b"-5", Some(-4)),
        (b"-1", Some(0)),
        (b"9223372036854775806", Some(i64::MAX)),
        (b"-9223372036854775808", Some(i64::MIN + 1)),
        (b"9223372036854775807", None),
        (b"9223372036854775808", None),
        (b"+5", None),
        (b"007", None),
        (b"00", None),
        (b"-0", None),
        (b" 5", None),
        (b"5 ", None),
        (b"5\n", None),
        (b"5\r\n", None),
        (b"\t5", None),
        (b"", None),
        (b"-", None),
        (b"5.0", None),
        (b"1e3", None),
        (b"0x10", None),
        (b"\xff", None),
    ];
    let dir = tempfile::tempdir().unwrap();
    tokio::time::timeout(LIMIT, async {
        let mut caches: Vec<(String, Handle)> = Vec::new();
        for (name, url, plain) in stores(dir.path()) {
            let plain = plain.unwrap_or_else(|| "memory://".into());
            caches.push((
                format!("{name} plain"),
                unicache::open(&plain).await.unwrap(),
            ));
            caches.push((
                format!("{name} fail-safe"),
                unicache::open(&url).await.unwrap(),
            ));
        }
        let mut wrong = Vec::new();
        for (name, c) in &caches {
            for (i, (v, want)) in table.iter().enumerate() {
                let k = format!("g{i}-{}", name.replace(' ', "-"));
                c.set(&k, v, None).await.unwrap();
                let got = match c.incr(&k, 1).await {
                    Ok(n) => Some(n),
                    Err(e) if e.kind() == ErrorKind::InvalidInput => {
                        let kept = c.get(&k).await.unwrap();
                        assert_eq!(kept.as_deref(), Some(*v), "{name}: {v:?} left as it was");
                        None
                    }
                    Err(e) => panic!("{name}: {v:?}: {e}"),
                };
                if got != *want {
                    wrong.push(format!(
                        "{name}: {:?} gave {got:?}",
                        v.escape_ascii().to_string()
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    })
    .await
    .unwrap();
}

/// `compare_and_set` itself on every backend (and a Redis Cluster), plain
/// and through the envelope: stores only over exactly the expected live
/// bytes, with the TTL given (or the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_on_every_backend_and_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = servers::shared_cluster();
    let ns = common::unique_ns("cas");
    tokio::time::timeout(LIMIT, async {
        let mut urls: Vec<(String, String)> = Vec::new();
        for (name, url, plain) in stores(dir.path()) {
            let plain = plain.unwrap_or_else(|| "memory://".into());
            urls.push((format!("{name} plain"), plain));
            urls.push((format!("{name} fail-safe"), url));
        }
        let c = format!("{}?namespace={ns}", cluster.url());
        urls.push(("cluster plain".into(), c.clone()));
        urls.push(("cluster fail-safe".into(), format!("{c}&{FS}")));
        let mut opened = Vec::new();
        for (i, (name, url)) in urls.into_iter().enumerate() {
            // Plain and fail-safe views share a store: keys of their own.
            let h = unicache::open(&url).await.unwrap();
            let name = format!("{name} #{i}");
            // memcached keeps whole seconds.
            h.set(&format!("short{i}"), b"s", Some(Duration::from_secs(1)))
                .await
                .unwrap();
            opened.push((i, name, h));
        }
        let ttl = Some(Duration::from_secs(100));
        for (i, name, h) in &opened {
            let (none, k, n) = (format!("none{i}"), format!("k{i}"), format!("n{i}"));
            let (none, k, n) = (none.as_str(), k.as_str(), n.as_str());
            assert!(
                !h.compare_and_set(none, b"", b"x", None).await.unwrap(),
                "{name}"
            );
            assert_eq!(h.get(none).await.unwrap(), None, "{name}: nothing stored");
            h.set(k, b"a\0b", None).await.unwrap();
            for wrong in [&b"a"[..], b"a\0", b"a\0bc", b""] {
                let r = h.compare_and_set(k, wrong, b"x", None).await.unwrap();
                assert!(!r, "{name}: {wrong:?}");
            }
            assert_eq!(
                h.get(k).await.unwrap().as_deref(),
                Some(&b"a\0b"[..]),
                "{name}"
            );
            assert!(
                h.compare_and_set(k, b"a\0b", b"new", ttl).await.unwrap(),
                "{name}"
            );
            assert_eq!(
                h.get(k).await.unwrap().as_deref(),
                Some(&b"new"[..]),
                "{name}"
            );
            let t = h.ttl(k).await.unwrap().unwrap().unwrap();
            assert!(
                t > Duration::from_secs(90) && t <= Duration::from_secs(100),
                "{name}: {t:?}"
            );
            assert!(
                h.compare_and_set(k, b"new", b"", None).await.unwrap(),
                "{name}"
            );
            assert_eq!(h.get(k).await.unwrap().as_deref(), Some(&b""[..]), "{name}");
            assert_eq!(h.ttl(k).await.unwrap(), Some(None), "{name}: no TTL now");
            // A counter incr wrote (TEXT on SQLite) equals its digits.
            h.incr(n, 7).await.unwrap();
            assert!(
                h.compare_and_set(n, b"7", b"8", None).await.unwrap(),
                "{name}"
            );
            assert_eq!(h.incr(n, 1).await.unwrap(), 9, "{name}");
            let e = h
                .compare_and_set(k, b"", b"x", Some(Duration::ZERO))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
        }
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        for (i, name, h) in &opened {
            let short = format!("short{i}");
            let r = h
                .compare_and_set(&short, b"s", b"back", None)
                .await
                .unwrap();
            assert!(!r, "{name}: an expired key is never equal");
            assert_eq!(h.get(&short).await.unwrap(), None, "{name}");
        }
        // The touch race and an enveloped counter on the cluster too.
        let (damage, touched) = touch_race(&format!("{c}&{FS}"), 300).await;
        assert_eq!(damage, Damage::default(), "cluster");
        assert!(touched > 0);
        let h = unicache::open(&format!("{c}&{FS}")).await.unwrap();
        h.set("cnt", b"5", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(h.incr("cnt", 2).await.unwrap(), 7);
    })
    .await
    .unwrap();
}
