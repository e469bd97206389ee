//! The cases every backend answers alike: reads, writes, batches, TTLs,
//! `clear`, statistics, the typed and blocking front-ends, and the atomic
//! operations.

use std::time::Duration;

use bytes::Bytes;

use super::Shared;
use crate::{CacheExt, ErrorKind};

/// Pairs keys with values as `set_many` takes them.
fn entries<'a, V: AsRef<[u8]>>(keys: &'a [String], vals: &'a [V]) -> Vec<(&'a str, &'a [u8])> {
    keys.iter()
        .zip(vals)
        .map(|(k, v)| (k.as_str(), v.as_ref()))
        .collect()
}

/// `set`, `get`, `contains` and `delete` of one key, overwritten once.
pub async fn set_get_delete(c: Shared) {
    assert_eq!(c.get("a").await.unwrap(), None);
    c.set("a", b"1", None).await.unwrap();
    assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    c.set("a", b"2", None).await.unwrap();
    assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert!(c.contains("a").await.unwrap());
    assert!(c.delete("a").await.unwrap());
    assert!(!c.delete("a").await.unwrap());
    assert!(!c.contains("a").await.unwrap());
    assert_eq!(c.get("a").await.unwrap(), None);
}

/// Binary and empty values; empty, 300-byte, non-ASCII and whitespace keys.
pub async fn binary_empty_and_unicode(c: Shared) {
    let binary: Vec<u8> = (0..=255u8).collect();
    let long_key = "k".repeat(300);
    let cases: Vec<(&str, &[u8])> = vec![
        ("bin", &binary),
        ("empty", b""),
        ("ключ 🔑 with spaces\tand\ttabs", b"unicode"),
        ("line\nbreak\r\n", b"newlines"),
        (&long_key, b"long key"),
        ("", b"empty key"),
    ];
    for (k, v) in &cases {
        c.set(k, v, None).await.unwrap();
    }
    for (k, v) in &cases {
        assert_eq!(c.get(k).await.unwrap().as_deref(), Some(*v), "key {k:?}");
    }
    if c.capabilities().count {
        assert_eq!(c.len().await.unwrap(), cases.len() as u64);
    }
}

/// A 1 MiB value round-trips, or is refused as `ValueTooLarge` by a
/// backend that declares a smaller `max_value_bytes`.
pub async fn large_value(c: Shared) {
    let v: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    match c.set("big", &v, None).await {
        Ok(()) => assert_eq!(c.get("big").await.unwrap().as_deref(), Some(&v[..])),
        Err(e) => {
            // Only a backend that declares a smaller limit may refuse it.
            let limit = c
                .capabilities()
                .max_value_bytes
                .expect("refused without a declared limit");
            assert!(limit < v.len() as u64, "{e}");
            assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
        }
    }
}

/// `set_many`, `get_many` (repeated and missing keys, in order) and
/// `delete_many` of 250 keys; empty batches.
pub async fn batches(c: Shared) {
    let keys: Vec<String> = (0..250).map(|i| format!("batch:{i}")).collect();
    let vals: Vec<Vec<u8>> = (0..250).map(|i| format!("v{i}").into_bytes()).collect();
    c.set_many(&entries(&keys, &vals), None).await.unwrap();
    let mut ask: Vec<&str> = keys.iter().map(String::as_str).collect();
    ask.push("batch:missing");
    let got = c.get_many(&ask).await.unwrap();
    assert_eq!(got.len(), 251);
    for (i, g) in got.iter().take(250).enumerate() {
        assert_eq!(g.as_deref(), Some(vals[i].as_slice()));
    }
    assert_eq!(got[250], None);
    assert_eq!(c.get_many(&[]).await.unwrap().len(), 0);
    // A key asked twice is answered twice.
    let v3 = Some(Bytes::from(vals[3].clone()));
    assert_eq!(
        c.get_many(&["batch:3", "batch:missing", "batch:3", "batch:missing"])
            .await
            .unwrap(),
        vec![v3.clone(), None, v3, None]
    );
    c.set_many(&[], None).await.unwrap();
    let del: Vec<&str> = keys[..100].iter().map(String::as_str).collect();
    assert_eq!(c.delete_many(&del).await.unwrap(), 100);
    assert_eq!(c.delete_many(&del).await.unwrap(), 0);
    if c.capabilities().count {
        assert_eq!(c.len().await.unwrap(), 150);
    } else {
        assert!(c.len().await.unwrap_err().is_unsupported());
    }
}

/// Entries expire after their TTL on every read path (a 2 s TTL is gone
/// after 3.1 s), `ttl` answers, and a zero TTL is `InvalidInput`.
pub async fn ttl_expiry(c: Shared) {
    // 2 s, not 1: memcached's clock ticks in whole seconds, so an entry
    // with a 1 s TTL can be gone right after its write (it lives between 0
    // and 1 s there); one with 2 s lives between 1 and 2 s.
    c.set("short", b"x", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    c.set("long", b"y", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    c.set_many(&[("bshort", b"x")], Some(Duration::from_secs(2)))
        .await
        .unwrap();
    c.set("forever", b"z", None).await.unwrap();
    assert_eq!(c.get("short").await.unwrap().as_deref(), Some(&b"x"[..]));
    if c.capabilities().read_ttl {
        let t = c.ttl("long").await.unwrap().unwrap().unwrap();
        assert!(
            t > Duration::from_secs(3590) && t <= Duration::from_secs(3600),
            "{t:?}"
        );
        assert_eq!(c.ttl("forever").await.unwrap(), Some(None));
        assert_eq!(c.ttl("nothing").await.unwrap(), None);
    }
    // Second-granularity backends (memcached) keep a 2 s entry 1 to 2 s;
    // the rest is slack for a loaded machine.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(c.get("short").await.unwrap(), None);
    assert_eq!(c.get("bshort").await.unwrap(), None);
    assert!(!c.contains("short").await.unwrap());
    assert!(
        !c.delete("short").await.unwrap(),
        "an expired entry must not count as deleted"
    );
    assert_eq!(
        c.get_many(&["short", "long", "forever"]).await.unwrap(),
        vec![None, Some(b"y"[..].into()), Some(b"z"[..].into())]
    );
    if c.capabilities().count {
        assert_eq!(c.len().await.unwrap(), 2);
    }
    assert_eq!(
        c.set("zero", b"x", Some(Duration::ZERO))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

/// A TTL too large for the backend's clock or protocol is kept as "very
/// long", never as "already expired", and never panics.
pub async fn huge_ttl(c: Shared) {
    let huge = [
        ("max", Duration::MAX),
        ("secs", Duration::from_secs(u64::MAX)),
        ("ms", Duration::from_millis(u64::MAX)),
        ("30y", Duration::from_secs(30 * 365 * 86400)),
    ];
    for (k, ttl) in huge {
        c.set(k, b"v", Some(ttl)).await.unwrap();
        assert_eq!(
            c.get(k).await.unwrap().as_deref(),
            Some(&b"v"[..]),
            "set with a TTL of {ttl:?} must be readable"
        );
        assert!(c.contains(k).await.unwrap(), "{ttl:?}");
    }
    c.set_many(&[("many", b"w")], Some(Duration::MAX))
        .await
        .unwrap();
    assert_eq!(c.get("many").await.unwrap().as_deref(), Some(&b"w"[..]));
    if c.capabilities().read_ttl {
        // Present, and either "never" or far away.
        let t = c.ttl("max").await.unwrap().expect("entry is there");
        assert!(
            t.is_none_or(|t| t > Duration::from_secs(365 * 86400)),
            "{t:?}"
        );
    }
}

/// `clear` empties the cache, `len` follows, and the cache is usable after.
pub async fn clear_and_len(c: Shared) {
    let count = c.capabilities().count;
    if count {
        assert!(c.is_empty().await.unwrap());
    }
    c.set_many(&[("a", b"1"), ("b", b"2"), ("c", b"3")], None)
        .await
        .unwrap();
    if count {
        assert_eq!(c.len().await.unwrap(), 3);
    }
    c.clear().await.unwrap();
    if count {
        assert_eq!(c.len().await.unwrap(), 0);
    }
    assert_eq!(
        c.get_many(&["a", "b", "c"]).await.unwrap(),
        vec![None, None, None]
    );
    // Usable after clear.
    c.set("a", b"again", None).await.unwrap();
    assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"again"[..]));
}

/// The sync facade over this backend, used from a plain thread; and, for
/// backends that declare `inline`, the contract the facade relies on: their
/// single-key futures are finished when returned.
pub async fn blocking_facade(c: Shared) {
    use futures::FutureExt;
    if c.capabilities().inline {
        c.set("inl", b"1", None).now_or_never().unwrap().unwrap();
        assert_eq!(
            c.get("inl").now_or_never().unwrap().unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert!(c.contains("inl").now_or_never().unwrap().unwrap());
        assert!(c.delete("inl").now_or_never().unwrap().unwrap());
    }
    let b = crate::blocking::Cache::from_async(c.clone()).unwrap();
    tokio::task::spawn_blocking(move || {
        b.set("sync", b"s", None).unwrap();
        assert_eq!(b.get("sync").unwrap().as_deref(), Some(&b"s"[..]));
        assert!(b.contains("sync").unwrap());
        assert_eq!(
            b.get_many(&["sync", "nope"]).unwrap(),
            vec![Some(Bytes::from_static(b"s")), None]
        );
        assert!(b.delete("sync").unwrap());
        assert!(!b.delete("sync").unwrap());
        assert_eq!(b.get("sync").unwrap(), None);
    })
    .await
    .unwrap();
    let s = c.stats().await.unwrap();
    assert!(s.hits >= 2 && s.misses >= 2, "{s:?}");
}

/// `stats` counts this handle's hits, misses, sets, deletes and errors.
pub async fn stats_count(c: Shared) {
    c.set("s", b"1", None).await.unwrap();
    c.set_many(&[("t", b"2"), ("u", b"3")], None).await.unwrap();
    c.get("s").await.unwrap();
    c.get("nope").await.unwrap();
    c.get_many(&["t", "nope2", "u"]).await.unwrap();
    c.delete("s").await.unwrap();
    c.delete("s").await.unwrap();
    let s = c.stats().await.unwrap();
    assert_eq!(s.backend, c.backend());
    assert!(s.entries.is_some() || !c.capabilities().count);
    assert_eq!(
        (s.hits, s.misses, s.sets, s.deletes, s.errors),
        (3, 2, 3, 1, 0),
        "{s:?}"
    );
    if let Some(n) = s.entries {
        assert_eq!(n, 2);
    }
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["hits"], 3);
}

/// `CacheExt::set_json`/`get_json`, and a value that is not JSON is a
/// `Serialization` error naming the key.
pub async fn typed_json(c: Shared) {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct User {
        name: String,
        age: u32,
    }
    let u = User {
        name: "Ada".into(),
        age: 36,
    };
    c.set_json("user:1", &u, None).await.unwrap();
    assert_eq!(c.get_json::<User>("user:1").await.unwrap(), Some(u));
    c.set("bad", b"not json", None).await.unwrap();
    let e = c.get_json::<User>("bad").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Serialization);
    assert_eq!(e.context("key"), Some("bad"));
}

/// `keys` lists every key (2,500), or is `Unsupported` where the backend
/// says it cannot list.
pub async fn list_keys(c: Shared) {
    use futures::StreamExt;
    let keys: Vec<String> = (0..2500).map(|i| format!("list:{i}")).collect();
    let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    c.set_many(&entries, None).await.unwrap();
    match c.keys().await {
        Ok(mut s) => {
            let mut got = Vec::new();
            while let Some(k) = s.next().await {
                got.push(k.unwrap());
            }
            got.sort();
            let mut want = keys.clone();
            want.sort();
            assert_eq!(got, want);
        }
        Err(e) => {
            assert!(!c.capabilities().list_keys);
            assert!(e.is_unsupported(), "{e}");
        }
    }
}

/// `add` stores only when the key is absent or expired (issue 10).
pub async fn atomic_add(c: Shared) {
    assert!(c.add("a", b"1", None).await.unwrap(), "absent: stored");
    assert!(!c.add("a", b"2", None).await.unwrap(), "present: refused");
    assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    // 2 s: see `ttl_expiry` (a 1 s memcached entry can be gone at once).
    c.set("short", b"old", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(!c.add("short", b"new", None).await.unwrap());
    // Second-granularity backends (memcached) keep a 2 s entry 1 to 2 s;
    // the rest is slack for a loaded machine.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(
        c.add("short", b"new", Some(Duration::from_secs(60)))
            .await
            .unwrap(),
        "an expired entry counts as absent"
    );
    assert_eq!(c.get("short").await.unwrap().as_deref(), Some(&b"new"[..]));
    if c.capabilities().read_ttl {
        let t = c.ttl("short").await.unwrap().unwrap().unwrap();
        assert!(t > Duration::from_secs(55), "{t:?}");
    }
    assert!(c.delete("a").await.unwrap());
    assert!(
        c.add("a", b"3", None).await.unwrap(),
        "deleted: absent again"
    );
    assert_eq!(
        c.add("z", b"x", Some(Duration::ZERO))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    // Concurrent adds of one key: exactly one wins.
    let wins = futures::future::join_all((0..16).map(|i| {
        let c = c.clone();
        async move {
            c.add("race", format!("{i}").as_bytes(), None)
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
}

/// `incr` keeps a decimal counter that other clients can read (issue 10).
pub async fn atomic_incr(c: Shared) {
    assert_eq!(
        c.incr("n", 1).await.unwrap(),
        1,
        "a missing key starts at 0"
    );
    assert_eq!(c.incr("n", 41).await.unwrap(), 42);
    assert_eq!(c.get("n").await.unwrap().as_deref(), Some(&b"42"[..]));
    assert_eq!(c.incr("n", -50).await.unwrap(), -8, "below zero works");
    assert_eq!(c.get("n").await.unwrap().as_deref(), Some(&b"-8"[..]));
    assert_eq!(c.incr("n", 10).await.unwrap(), 2, "and back up");
    assert_eq!(c.incr("n", 0).await.unwrap(), 2);
    assert_eq!(c.incr("neg", -3).await.unwrap(), -3);
    c.set("s", b"17", None).await.unwrap();
    assert_eq!(c.incr("s", 1).await.unwrap(), 18, "a set number counts on");
    c.set("text", b"not a number", None).await.unwrap();
    let e = c.incr("text", 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("text"), "names the key: {e}");
    assert_eq!(
        c.get("text").await.unwrap().as_deref(),
        Some(&b"not a number"[..]),
        "a failed incr changes nothing"
    );
    c.set("max", i64::MAX.to_string().as_bytes(), None)
        .await
        .unwrap();
    let e = c.incr("max", 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "overflow: {e}");
    c.set("min", i64::MIN.to_string().as_bytes(), None)
        .await
        .unwrap();
    let e = c.incr("min", -1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "underflow: {e}");
    // An existing counter keeps its TTL.
    c.set("t", b"5", Some(Duration::from_secs(100)))
        .await
        .unwrap();
    assert_eq!(c.incr("t", 1).await.unwrap(), 6);
    if c.capabilities().read_ttl {
        let t = c.ttl("t").await.unwrap().unwrap();
        assert!(t.is_some_and(|t| t > Duration::from_secs(90)), "{t:?}");
    }
    // Concurrent increments are never lost.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    c.incr("race", 1).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.get("race").await.unwrap().as_deref(), Some(&b"200"[..]));
}

/// `touch` sets a new expiry and keeps the value (issue 10).
pub async fn atomic_touch(c: Shared) {
    assert!(
        !c.touch("missing", Some(Duration::from_secs(5)))
            .await
            .unwrap()
    );
    c.set("k", b"v", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(c.touch("k", Some(Duration::from_secs(3600))).await.unwrap());
    c.set("gone", b"v", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        c.get("k").await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "touched: outlives its first TTL"
    );
    assert!(
        !c.touch("gone", Some(Duration::from_secs(60)))
            .await
            .unwrap(),
        "an expired entry cannot be touched back to life"
    );
    assert_eq!(c.get("gone").await.unwrap(), None);
    if c.capabilities().read_ttl {
        let t = c.ttl("k").await.unwrap().unwrap().unwrap();
        assert!(t > Duration::from_secs(3500), "{t:?}");
    }
    c.set("short", b"s", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(
        c.touch("short", Some(Duration::from_secs(1)))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(c.get("short").await.unwrap(), None, "shortened");
    assert_eq!(
        c.touch("k", Some(Duration::ZERO)).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

/// `persist` removes the expiry and keeps the value: a persisted entry
/// outlives its first TTL, a missing or expired key answers `false` (and
/// is not brought back), a counter stays a counter.
pub async fn atomic_persist(c: Shared) {
    assert!(!c.persist("missing").await.unwrap(), "missing: false");
    assert_eq!(c.get("missing").await.unwrap(), None, "and not created");
    // 2 s: see `ttl_expiry` (a 1 s memcached entry can be gone at once).
    let second = Some(Duration::from_secs(2));
    c.set("k", b"v", second).await.unwrap();
    c.set("gone", b"g", second).await.unwrap();
    c.set("forever", b"f", None).await.unwrap();
    assert!(c.persist("k").await.unwrap());
    assert!(
        c.persist("forever").await.unwrap(),
        "no TTL to remove: still there"
    );
    assert_eq!(c.incr("n", 5).await.unwrap(), 5);
    assert!(c.persist("n").await.unwrap());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        c.get("k").await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "persisted: outlives its first TTL, value kept"
    );
    assert!(
        !c.persist("gone").await.unwrap(),
        "an expired entry cannot be persisted back to life"
    );
    assert_eq!(c.get("gone").await.unwrap(), None);
    assert_eq!(c.incr("n", 1).await.unwrap(), 6, "still a counter");
    if c.capabilities().read_ttl {
        for k in ["k", "forever", "n"] {
            assert_eq!(c.ttl(k).await.unwrap(), Some(None), "{k}: no TTL left");
        }
        let v = c
            .get_with_ttl("k")
            .await
            .unwrap()
            .expect("persisted, present");
        assert_eq!((&v.value[..], v.ttl), (&b"v"[..], None));
    }
}

/// `persist` on a cache opened with a default TTL (at most 2 s; the case
/// sleeps 3.1 s) leaves no TTL: the default is what `set(.., None)`
/// applies, never what `persist` does. For a harness that can open with a
/// default TTL (unicache's own runs every backend and stack with `ttl=2s`).
pub async fn persist_under_a_default_ttl(c: Shared) {
    // Each persist right after its write: on a loaded machine three writes
    // in a row have taken longer than a 1 s default TTL.
    c.set("k", b"v", None).await.unwrap();
    assert!(c.persist("k").await.unwrap());
    assert_eq!(c.incr("n", 1).await.unwrap(), 1);
    assert!(c.persist("n").await.unwrap());
    assert!(!c.persist("missing").await.unwrap());
    c.set("other", b"o", None).await.unwrap();
    if c.capabilities().read_ttl {
        assert_eq!(c.ttl("k").await.unwrap(), Some(None), "persisted: no TTL");
        let t = c.ttl("other").await.unwrap().expect("present");
        assert!(t.is_some(), "the default TTL applies to the others: {t:?}");
    }
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(c.get("n").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(
        c.get("other").await.unwrap(),
        None,
        "the default TTL expired it"
    );
    if c.capabilities().read_ttl {
        assert_eq!(c.ttl("k").await.unwrap(), Some(None));
    }
}

/// `get_with_ttl` and `get_many_with_ttl` return the value and what remains
/// of its TTL (issue 10).
pub async fn with_ttl(c: Shared) {
    c.set("long", b"l", Some(Duration::from_secs(600)))
        .await
        .unwrap();
    c.set("forever", b"f", None).await.unwrap();
    let got = c.get_with_ttl("long").await.unwrap().unwrap();
    assert_eq!(&got.value[..], b"l");
    let t = got.ttl.expect("a TTL was set");
    assert!(
        t > Duration::from_secs(590) && t <= Duration::from_secs(600),
        "{t:?}"
    );
    let got = c.get_with_ttl("forever").await.unwrap().unwrap();
    assert_eq!((&got.value[..], got.ttl), (&b"f"[..], None));
    assert_eq!(c.get_with_ttl("missing").await.unwrap(), None);
    c.set("short", b"s", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let many = c
        .get_many_with_ttl(&["long", "missing", "forever", "short", "long"])
        .await
        .unwrap();
    assert_eq!(many.len(), 5);
    assert_eq!(&many[0].as_ref().unwrap().value[..], b"l");
    assert!(many[0].as_ref().unwrap().ttl.unwrap() > Duration::from_secs(590));
    assert_eq!(many[1], None);
    assert_eq!(many[2].as_ref().unwrap().ttl, None);
    let short = many[3].as_ref().unwrap().ttl.unwrap();
    assert!(
        short <= Duration::from_secs(2),
        "never longer than set: {short:?}"
    );
    assert_eq!(&many[4].as_ref().unwrap().value[..], b"l", "asked twice");
    assert!(c.get_many_with_ttl(&[]).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(c.get_with_ttl("short").await.unwrap(), None);
    let many = c.get_many_with_ttl(&["short", "forever"]).await.unwrap();
    assert_eq!(many[0], None);
    assert_eq!(&many[1].as_ref().unwrap().value[..], b"f");
}
