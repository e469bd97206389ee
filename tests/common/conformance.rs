//! One behaviour suite for every backend.
//!
//! `conformance_suite!(name, factory)` expands to one test per case below;
//! `factory(namespace)` must return a fresh, empty cache isolated by that
//! namespace (and `factory` called twice with the same namespace must open
//! the same data). Cases gate on `Capabilities` where backends differ.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use unicache::{Cache, CacheExt, ErrorKind};

pub type Shared = Arc<dyn Cache>;

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

pub async fn batches(c: Shared) {
    let keys: Vec<String> = (0..250).map(|i| format!("batch:{i}")).collect();
    let vals: Vec<Vec<u8>> = (0..250).map(|i| format!("v{i}").into_bytes()).collect();
    c.set_many(&super::entries(&keys, &vals), None)
        .await
        .unwrap();
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

pub async fn ttl_expiry(c: Shared) {
    c.set("short", b"x", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    c.set("long", b"y", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    c.set_many(&[("bshort", b"x")], Some(Duration::from_secs(1)))
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
    // Second-granularity backends (memcached) may keep a 1 s entry up to 2 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
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
    let b = unicache::blocking::Cache::from_async(c.clone()).unwrap();
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

/// A random operation for the model test.
#[derive(Debug, Clone)]
pub enum Op {
    Set(u8, Vec<u8>),
    Get(u8),
    Delete(u8),
    Contains(u8),
    SetMany(Vec<(u8, Vec<u8>)>),
    GetMany(Vec<u8>),
    DeleteMany(Vec<u8>),
    Len,
}

pub fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let key = 0u8..16;
    let val = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        (key.clone(), val.clone()).prop_map(|(k, v)| Op::Set(k, v)),
        key.clone().prop_map(Op::Get),
        key.clone().prop_map(Op::Delete),
        key.clone().prop_map(Op::Contains),
        proptest::collection::vec((key.clone(), val), 0..8).prop_map(Op::SetMany),
        proptest::collection::vec(key.clone(), 0..8).prop_map(Op::GetMany),
        proptest::collection::vec(key, 0..8).prop_map(Op::DeleteMany),
        Just(Op::Len),
    ]
}

fn key_name(k: u8) -> String {
    // Mix plain, spaced and non-ASCII keys so key mapping is exercised too.
    match k % 4 {
        0 => format!("k{k}"),
        1 => format!("key with space {k}"),
        2 => format!("clé-{k}-ü"),
        _ => format!("{}{k}", "x".repeat(260)),
    }
}

/// Applies `ops` to the cache and to a HashMap, comparing every answer.
pub async fn run_model(c: &Shared, ops: &[Op]) -> Result<(), String> {
    let mut model: HashMap<String, Vec<u8>> = HashMap::new();
    c.clear().await.map_err(|e| e.to_string())?;
    for (i, op) in ops.iter().enumerate() {
        let ctx = |what: &str| format!("op {i} {op:?}: {what}");
        match op {
            Op::Set(k, v) => {
                c.set(&key_name(*k), v, None)
                    .await
                    .map_err(|e| ctx(&e.to_string()))?;
                model.insert(key_name(*k), v.clone());
            }
            Op::Get(k) => {
                let got = c
                    .get(&key_name(*k))
                    .await
                    .map_err(|e| ctx(&e.to_string()))?;
                if got.as_deref() != model.get(&key_name(*k)).map(|v| v.as_slice()) {
                    return Err(ctx("get differs"));
                }
            }
            Op::Delete(k) => {
                let got = c
                    .delete(&key_name(*k))
                    .await
                    .map_err(|e| ctx(&e.to_string()))?;
                if got != model.remove(&key_name(*k)).is_some() {
                    return Err(ctx("delete result differs"));
                }
            }
            Op::Contains(k) => {
                let got = c
                    .contains(&key_name(*k))
                    .await
                    .map_err(|e| ctx(&e.to_string()))?;
                if got != model.contains_key(&key_name(*k)) {
                    return Err(ctx("contains differs"));
                }
            }
            Op::SetMany(kvs) => {
                let names: Vec<String> = kvs.iter().map(|(k, _)| key_name(*k)).collect();
                let entries: Vec<(&str, &[u8])> = names
                    .iter()
                    .zip(kvs)
                    .map(|(n, (_, v))| (n.as_str(), v.as_slice()))
                    .collect();
                c.set_many(&entries, None)
                    .await
                    .map_err(|e| ctx(&e.to_string()))?;
                // Later entries for the same key win, as in a loop of sets.
                for (n, (_, v)) in names.iter().zip(kvs) {
                    model.insert(n.clone(), v.clone());
                }
            }
            Op::GetMany(ks) => {
                let names: Vec<String> = ks.iter().map(|k| key_name(*k)).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let got = c.get_many(&refs).await.map_err(|e| ctx(&e.to_string()))?;
                for (n, g) in names.iter().zip(got) {
                    if g.as_deref() != model.get(n).map(|v| v.as_slice()) {
                        return Err(ctx(&format!("get_many differs at {n:?}")));
                    }
                }
            }
            Op::DeleteMany(ks) => {
                let mut names: Vec<String> = ks.iter().map(|k| key_name(*k)).collect();
                names.sort();
                names.dedup();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let got = c
                    .delete_many(&refs)
                    .await
                    .map_err(|e| ctx(&e.to_string()))?;
                let want = names.iter().filter(|n| model.remove(*n).is_some()).count() as u64;
                if got != want {
                    return Err(ctx(&format!("delete_many {got} != {want}")));
                }
            }
            Op::Len if !c.capabilities().count => {}
            Op::Len => {
                let got = c.len().await.map_err(|e| ctx(&e.to_string()))?;
                if got != model.len() as u64 {
                    return Err(ctx(&format!("len {got} != {}", model.len())));
                }
            }
        }
    }
    Ok(())
}

/// `add` stores only when the key is absent or expired (issue 10).
pub async fn atomic_add(c: Shared) {
    assert!(c.add("a", b"1", None).await.unwrap(), "absent: stored");
    assert!(!c.add("a", b"2", None).await.unwrap(), "present: refused");
    assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    c.set("short", b"old", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(!c.add("short", b"new", None).await.unwrap());
    // Second-granularity backends (memcached) may keep a 1 s entry up to 2 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
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
    c.set("k", b"v", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(c.touch("k", Some(Duration::from_secs(3600))).await.unwrap());
    c.set("gone", b"v", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
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
    c.set("short", b"s", Some(Duration::from_secs(1)))
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
        short <= Duration::from_secs(1),
        "never longer than set: {short:?}"
    );
    assert_eq!(&many[4].as_ref().unwrap().value[..], b"l", "asked twice");
    assert!(c.get_many_with_ttl(&[]).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(c.get_with_ttl("short").await.unwrap(), None);
    let many = c.get_many_with_ttl(&["short", "forever"]).await.unwrap();
    assert_eq!(many[0], None);
    assert_eq!(&many[1].as_ref().unwrap().value[..], b"f");
}

/// Expands to the whole suite for one backend. `$factory` is an async fn
/// taking a namespace and returning `Arc<dyn Cache>`; `$cases` is how many
/// random sequences the model test runs.
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $factory:path, $cases:expr) => {
        mod $name {
            use super::*;
            use $crate::common::conformance as suite;

            async fn fresh() -> suite::Shared {
                $factory(&$crate::common::unique_ns("t")).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn set_get_delete() {
                suite::set_get_delete(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn binary_empty_and_unicode() {
                suite::binary_empty_and_unicode(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_value() {
                suite::large_value(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn batches() {
                suite::batches(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ttl_expiry() {
                suite::ttl_expiry(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn huge_ttl() {
                suite::huge_ttl(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clear_and_len() {
                suite::clear_and_len(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stats_count() {
                suite::stats_count(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn blocking_facade() {
                suite::blocking_facade(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn typed_json() {
                suite::typed_json(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_keys() {
                suite::list_keys(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn atomic_add() {
                suite::atomic_add(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn atomic_incr() {
                suite::atomic_incr(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn atomic_touch() {
                suite::atomic_touch(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn with_ttl() {
                suite::with_ttl(fresh().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clear_keeps_other_namespaces() {
                let ns = $crate::common::unique_ns("iso");
                let a = $factory(&ns).await;
                let b = $factory(&format!("{ns}-other")).await;
                a.set("k", b"a", None).await.unwrap();
                b.set("k", b"b", None).await.unwrap();
                a.clear().await.unwrap();
                assert_eq!(a.get("k").await.unwrap(), None);
                assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
                if b.capabilities().count {
                    assert_eq!(b.len().await.unwrap(), 1);
                }
            }
            #[test]
            fn model() {
                use proptest::prelude::*;
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let cache = rt.block_on(fresh());
                let cfg = ProptestConfig {
                    cases: $cases,
                    failure_persistence: None,
                    ..ProptestConfig::default()
                };
                proptest!(cfg, |(ops in proptest::collection::vec(suite::op_strategy(), 1..60))| {
                    let r = rt.block_on(suite::run_model(&cache, &ops));
                    prop_assert!(r.is_ok(), "{}", r.unwrap_err());
                });
            }
        }
    };
}
