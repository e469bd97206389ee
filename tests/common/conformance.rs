//! One behaviour suite for every backend and every stack of layers.
//!
//! `stack_suite!(name, Backend, cases)` expands to one test per case below
//! for each stack of `stacks::Stack` over that backend
//! (`name::enveloped::atomic_incr`); `stacks::open_stack` is how each is
//! opened. `conformance_suite!(name, factory, cases)` runs the original
//! cases over any factory: `factory(namespace)` must return a fresh, empty
//! cache isolated by that namespace (and `factory` called twice with the
//! same namespace must open the same data). Cases gate on `Capabilities`
//! where backends differ.

#[path = "stacks.rs"]
pub mod stacks;

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

// The cases below catch a layer (observe, envelope, tier) that breaks a
// promise the backend under it keeps. They run over every stack of
// `stacks::Stack` (`stack_suite!`), the plain backend included.

/// Asserts a remaining TTL is there, at most `set` and not far below it.
fn assert_ttl_within(t: Option<Duration>, set: Duration, what: &str) {
    let t = t.unwrap_or_else(|| panic!("{what}: no TTL, but {set:?} was set"));
    assert!(t <= set, "{what}: {t:?} is above the {set:?} that was set");
    assert!(
        t + Duration::from_secs(30) > set,
        "{what}: {t:?} is far below the {set:?} that was set"
    );
}

/// `get_with_ttl`, `get_many_with_ttl`, `ttl` and `entries` never answer
/// more than the TTL that was set (twice: a tier's second answer is L1's);
/// `touch` extends and shortens; an entry without a TTL has none until
/// touched.
pub async fn ttl_never_above_what_was_set(c: Shared) {
    use futures::StreamExt;
    let set = Duration::from_secs(600);
    c.set("a", b"1", Some(set)).await.unwrap();
    c.set_many(&[("b", b"2")], Some(set)).await.unwrap();
    assert!(c.add("c", b"3", Some(set)).await.unwrap());
    let caps = c.capabilities();
    for round in 0..2 {
        for k in ["a", "b", "c"] {
            let v = c.get_with_ttl(k).await.unwrap();
            let v = v.unwrap_or_else(|| panic!("{k} is missing"));
            assert_ttl_within(v.ttl, set, &format!("round {round}: get_with_ttl({k})"));
            if caps.read_ttl {
                let t = c.ttl(k).await.unwrap().expect("present");
                assert_ttl_within(t, set, &format!("round {round}: ttl({k})"));
            }
        }
        let many = c.get_many_with_ttl(&["a", "b", "c"]).await.unwrap();
        for (k, v) in ["a", "b", "c"].iter().zip(many) {
            let what = format!("round {round}: get_many_with_ttl({k})");
            assert_ttl_within(v.expect("present").ttl, set, &what);
        }
    }
    if caps.list_keys && caps.read_ttl {
        let mut s = c.entries().await.unwrap();
        let mut n = 0;
        while let Some(e) = s.next().await {
            let e = e.unwrap();
            assert_ttl_within(e.ttl, set, &format!("entries: {}", e.key));
            n += 1;
        }
        assert_eq!(n, 3);
    }
    let longer = Duration::from_secs(1200);
    assert!(c.touch("a", Some(longer)).await.unwrap());
    let v = c
        .get_with_ttl("a")
        .await
        .unwrap()
        .expect("touched, present");
    assert_eq!(&v.value[..], b"1", "touch keeps the value");
    assert_ttl_within(v.ttl, longer, "get_with_ttl after touch to 1200 s");
    if caps.read_ttl {
        let t = c.ttl("a").await.unwrap().expect("present");
        assert_ttl_within(t, longer, "ttl after touch to 1200 s");
    }
    let shorter = Duration::from_secs(100);
    assert!(c.touch("a", Some(shorter)).await.unwrap());
    let v = c
        .get_with_ttl("a")
        .await
        .unwrap()
        .expect("touched, present");
    assert_ttl_within(v.ttl, shorter, "get_with_ttl after touch to 100 s");
    c.set("f", b"x", None).await.unwrap();
    assert_eq!(c.get_with_ttl("f").await.unwrap().unwrap().ttl, None);
    if caps.read_ttl {
        assert_eq!(c.ttl("f").await.unwrap(), Some(None));
    }
    assert!(c.touch("f", Some(set)).await.unwrap());
    let v = c
        .get_with_ttl("f")
        .await
        .unwrap()
        .expect("touched, present");
    assert_ttl_within(v.ttl, set, "a TTL-less entry touched to 600 s");
}

/// `incr` counts on from a value `set` (or `set_many`, `add`) wrote, and a
/// key whose TTL passed counts from 0, as a new counter without a TTL.
pub async fn incr_on_set_and_expired_values(c: Shared) {
    c.set("k", b"5", None).await.unwrap();
    assert_eq!(c.incr("k", 1).await.unwrap(), 6, "incr after set k \"5\"");
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"6"[..]));
    c.set_many(&[("m", b"5")], None).await.unwrap();
    assert_eq!(c.incr("m", 1).await.unwrap(), 6, "incr after set_many");
    assert!(c.add("a", b"5", None).await.unwrap());
    assert_eq!(c.incr("a", 1).await.unwrap(), 6, "incr after add");
    c.set("e", b"5", Some(Duration::from_secs(1)))
        .await
        .unwrap();
    // Second-granularity backends (memcached) may keep a 1 s entry up to 2 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        c.incr("e", 1).await.unwrap(),
        1,
        "a key whose TTL passed starts at 0"
    );
    let v = c.get_with_ttl("e").await.unwrap().expect("counter");
    assert_eq!((&v.value[..], v.ttl), (&b"1"[..], None), "a new counter");
}

/// `delete` and `delete_many` say whether the keys were there, whichever
/// call wrote them, and a deleted key is gone on every read path.
pub async fn delete_reports_whether_it_existed(c: Shared) {
    assert!(!c.delete("never").await.unwrap());
    c.set("x", b"1", None).await.unwrap();
    assert_eq!(c.get("x").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert!(c.delete("x").await.unwrap());
    assert!(!c.delete("x").await.unwrap());
    assert_eq!(c.get("x").await.unwrap(), None);
    assert_eq!(c.get_with_ttl("x").await.unwrap(), None);
    assert!(!c.contains("x").await.unwrap());
    let ttl = Some(Duration::from_secs(600));
    c.set_many(&[("a", b"1"), ("b", b"2")], ttl).await.unwrap();
    assert_eq!(c.get_many(&["a", "b"]).await.unwrap().len(), 2);
    assert_eq!(c.delete_many(&["a", "b", "never"]).await.unwrap(), 2);
    assert_eq!(c.delete_many(&["a", "b", "never"]).await.unwrap(), 0);
    assert_eq!(c.get_many(&["a", "b"]).await.unwrap(), vec![None, None]);
    assert!(c.add("y", b"1", None).await.unwrap());
    assert!(c.delete("y").await.unwrap(), "added");
    c.incr("z", 1).await.unwrap();
    assert!(c.delete("z").await.unwrap(), "a counter");
    assert_eq!(c.get("z").await.unwrap(), None);
}

/// The declared `max_value_bytes` is a promise: a value of exactly that
/// size is stored under any key (memcached's limit is what its longest
/// stored key leaves). Only small limits are checked (filling Redis's 512
/// MB would cost more than it tells).
pub async fn value_at_declared_limit(c: Shared) {
    let Some(limit) = c.capabilities().max_value_bytes else {
        return;
    };
    if limit > 8 << 20 {
        return;
    }
    let v = vec![b'x'; limit as usize];
    for len in [
        1usize, 100, 200, 205, 210, 215, 220, 225, 230, 235, 240, 250,
    ] {
        let k = "k".repeat(len);
        c.set(&k, &v, None).await.unwrap_or_else(|e| {
            panic!("a value of the declared limit ({limit} bytes) under a {len}-byte key: {e}")
        });
        assert_eq!(c.get(&k).await.unwrap().map(|b| b.len()), Some(v.len()));
        assert!(c.delete(&k).await.unwrap());
    }
}

/// `clear` empties this namespace on every read path (a tier's L1 too) and
/// leaves another namespace of the same stack and a plain client's
/// namespace on the same store alone.
pub async fn clear_only_this_namespace(a: Shared, b: Shared, foreign: Option<Shared>) {
    a.set("k", b"a", None).await.unwrap();
    a.set_many(&[("k2", b"a2")], None).await.unwrap();
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(
        a.get_many(&["k2"]).await.unwrap()[0].as_deref(),
        Some(&b"a2"[..])
    );
    b.set("k", b"b", None).await.unwrap();
    if let Some(f) = &foreign {
        f.set("k", b"f", None).await.unwrap();
    }
    a.clear().await.unwrap();
    assert_eq!(a.get("k").await.unwrap(), None);
    assert_eq!(a.get_with_ttl("k").await.unwrap(), None);
    assert!(!a.contains("k").await.unwrap());
    assert_eq!(a.get_many(&["k", "k2"]).await.unwrap(), vec![None, None]);
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
    if let Some(f) = &foreign {
        assert_eq!(f.get("k").await.unwrap().as_deref(), Some(&b"f"[..]));
    }
    if a.capabilities().count {
        assert_eq!(a.len().await.unwrap(), 0);
        assert_eq!(b.len().await.unwrap(), 1);
        if let Some(f) = &foreign {
            assert_eq!(f.len().await.unwrap(), 1);
        }
    }
    a.set("k", b"again", None).await.unwrap();
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"again"[..]));
}

/// Values another client may have written: empty, binary, and bytes that
/// start like the envelope's header (`0xF5 0x01`, its old magic and
/// version), with expiry fields in the past, the future and zero.
fn foreign_values() -> Vec<(&'static str, Vec<u8>)> {
    let header = |expires_at: u64, ttl_ms: u64, rest: &[u8]| {
        let mut v = vec![0xF5, 0x01];
        v.extend_from_slice(&expires_at.to_be_bytes());
        v.extend_from_slice(&ttl_ms.to_be_bytes());
        v.extend_from_slice(rest);
        v
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let hour = 3_600_000;
    vec![
        ("empty", vec![]),
        ("f5", vec![0xF5]),
        ("f5-01", vec![0xF5, 0x01]),
        ("f5-01-short", b"\xF5\x01short".to_vec()),
        ("old-magic-stale", header(1, 1000, b"stale")),
        ("old-magic-fresh", header(now + hour, hour, b"fresh")),
        ("old-magic-zero", header(0, 0, b"zero")),
        ("old-magic-bare", header(now + hour, hour, b"")),
        ("f5-02", [&[0xF5, 0x02][..], &[0; 16], b"v2"].concat()),
        ("binary", (0..=255u8).collect()),
        ("json", br#"{"a":1}"#.to_vec()),
        ("digits", b"5".to_vec()),
    ]
}

/// Bytes another client wrote (the plain backend on the same store, and on
/// Redis a raw `SET` in its own protocol) read back through the stack as
/// exactly those bytes, on every read path, with at most the TTL they were
/// written with; a counter they wrote counts on. On memory://, which no
/// other client reaches, the stack's own round trip of the same bytes.
pub async fn foreign_bytes_read_back_exactly(
    c: Shared,
    foreign: Option<Shared>,
    raw_redis: Option<(u16, String)>,
) {
    use futures::StreamExt;
    let ttl = Duration::from_secs(600);
    let mut want: Vec<(String, Vec<u8>)> = Vec::new();
    for (k, v) in foreign_values() {
        match &foreign {
            Some(f) => f.set(k, &v, Some(ttl)).await.unwrap(),
            None => c.set(k, &v, Some(ttl)).await.unwrap(),
        }
        if let Some((port, ns)) = &raw_redis {
            let key = format!("raw-{k}");
            stacks::redis_raw_set(*port, &format!("{ns}:{key}"), &v, ttl);
            want.push((key, v.clone()));
        }
        want.push((k.to_string(), v));
    }
    let caps = c.capabilities();
    let keys: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
    // Every misread is listed, not just the first: which keys and which
    // read paths a layer gets wrong is the point of the case.
    let mut bad: Vec<String> = Vec::new();
    let mut check =
        |what: String, got: Option<Vec<u8>>, ttl_got: Option<Option<Duration>>, v: &[u8]| {
            if got.as_deref() != Some(v) {
                bad.push(format!("{what}: {got:?}, written {v:?}"));
            } else if let Some(t) = ttl_got
                && !t.is_some_and(|t| t <= ttl && t + Duration::from_secs(30) > ttl)
            {
                bad.push(format!("{what}: TTL {t:?}, written with {ttl:?}"));
            }
        };
    // Twice: a tier's second answers come from L1.
    for round in 0..2 {
        for (k, v) in &want {
            let what = |op: &str| format!("round {round}: {op}({k:?})");
            let got = c.get(k).await.unwrap().map(|b| b.to_vec());
            check(what("get"), got, None, v);
            if !c.contains(k).await.unwrap() {
                check(what("contains"), None, None, v);
            }
            let got = c.get_with_ttl(k).await.unwrap();
            let ttl_got = got.as_ref().map(|g| g.ttl);
            check(
                what("get_with_ttl"),
                got.map(|g| g.value.to_vec()),
                ttl_got,
                v,
            );
            if caps.read_ttl {
                let t = c.ttl(k).await.unwrap();
                check(what("ttl"), t.map(|_| v.clone()), t, v);
            }
        }
        let got = c.get_many(&keys).await.unwrap();
        for ((k, v), g) in want.iter().zip(got) {
            check(
                format!("round {round}: get_many {k:?}"),
                g.map(|b| b.to_vec()),
                None,
                v,
            );
        }
        let got = c.get_many_with_ttl(&keys).await.unwrap();
        for ((k, v), g) in want.iter().zip(got) {
            let ttl_got = g.as_ref().map(|g| g.ttl);
            let what = format!("round {round}: get_many_with_ttl {k:?}");
            check(what, g.map(|g| g.value.to_vec()), ttl_got, v);
        }
    }
    if caps.list_keys {
        let mut s = c.entries().await.unwrap();
        let mut got = HashMap::new();
        while let Some(e) = s.next().await {
            let e = e.unwrap();
            got.insert(e.key, (e.value.to_vec(), e.ttl));
        }
        for (k, v) in &want {
            let g = got.remove(k);
            let ttl_got = g.as_ref().map(|g| g.1).filter(|_| caps.read_ttl);
            check(format!("entries {k:?}"), g.map(|g| g.0), ttl_got, v);
        }
    }
    assert!(
        bad.is_empty(),
        "{} misreads of bytes another client wrote:\n{}",
        bad.len(),
        bad.join("\n")
    );
    if let Some(f) = &foreign {
        assert_eq!(c.incr("digits", 1).await.unwrap(), 6, "a foreign counter");
        assert_eq!(f.get("digits").await.unwrap().as_deref(), Some(&b"6"[..]));
    }
}

/// The value `set` writes in round `i` of the race, and back.
fn version(i: u64) -> Vec<u8> {
    format!("v{i:06}").into_bytes()
}

fn version_of(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.strip_prefix('v')?.parse().ok()
}

/// `touch` racing `set` and `delete` on one key: after each acknowledged
/// `set` of version i a read returns version i or a newer one (or nothing,
/// a delete having run), never an older; after an acknowledged `delete`
/// that began once version j was acknowledged, a read never returns
/// version j or older. Tasks on one handle, then (where the store is
/// shared) the toucher and deleter on a second handle. `rounds` sets each.
pub async fn touch_races_set_and_delete(c: Shared, second: Option<Shared>, rounds: u64) {
    let mut bad = race(c.clone(), c.clone(), "one handle", rounds).await;
    if let Some(s) = second {
        bad.extend(race(c, s, "two handles", rounds).await);
    }
    assert!(
        bad.is_empty(),
        "{} stale reads, the first: {:#?}",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
}

/// One race: `w` sets and reads back, `o` touches (two tasks) and deletes
/// and reads.
async fn race(w: Shared, o: Shared, label: &'static str, rounds: u64) -> Vec<String> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    const KEY: &str = "raced";
    let ttl = Some(Duration::from_secs(60));
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    // All four tasks start together, and each yields after every step, so
    // they interleave even where every call finishes at once (memory://).
    let start = Arc::new(tokio::sync::Barrier::new(4));
    let writer = {
        let (w, acked, done, bad) = (w.clone(), acked.clone(), done.clone(), bad.clone());
        let start = start.clone();
        tokio::spawn(async move {
            start.wait().await;
            for i in 1..=rounds {
                let set = w.set(KEY, &version(i), ttl).await;
                set.unwrap_or_else(|e| panic!("{label}: set: {e}"));
                acked.store(i, SeqCst);
                // Every read path in turn.
                let got = match i % 3 {
                    0 => w.get(KEY).await,
                    1 => w.get_with_ttl(KEY).await.map(|v| v.map(|v| v.value)),
                    _ => w.get_many(&[KEY]).await.map(|mut v| v.pop().unwrap()),
                };
                let got = got.unwrap_or_else(|e| panic!("{label}: read: {e}"));
                if let Some(v) = got
                    && version_of(&v).is_none_or(|j| j < i)
                {
                    let msg = format!("{label}: read {v:?} after the set of v{i:06} returned");
                    bad.lock().unwrap().push(msg);
                }
                tokio::task::yield_now().await;
            }
            done.store(true, SeqCst);
        })
    };
    // Two touchers: a touch that is a read then a write has a narrow window.
    let touchers: Vec<_> = (0..2)
        .map(|_| {
            let (o, done, start) = (o.clone(), done.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                for _ in 0..rounds * 20 {
                    if done.load(SeqCst) {
                        break;
                    }
                    let t = o.touch(KEY, ttl).await;
                    t.unwrap_or_else(|e| panic!("{label}: touch: {e}"));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let deleter = {
        let (o, acked, done, bad) = (o.clone(), acked.clone(), done.clone(), bad.clone());
        tokio::spawn(async move {
            start.wait().await;
            for _ in 0..rounds * 20 {
                if done.load(SeqCst) {
                    break;
                }
                let before = acked.load(SeqCst);
                let d = o.delete(KEY).await;
                d.unwrap_or_else(|e| panic!("{label}: delete: {e}"));
                let got = o.get(KEY).await;
                let got = got.unwrap_or_else(|e| panic!("{label}: read: {e}"));
                if let Some(v) = got
                    && version_of(&v).is_none_or(|j| j <= before)
                {
                    let msg = format!(
                        "{label}: read {v:?} after a delete that began once v{before:06} was set"
                    );
                    bad.lock().unwrap().push(msg);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    writer.await.unwrap();
    for t in touchers {
        t.await.unwrap();
    }
    deleter.await.unwrap();
    // Quiet again: the last write is what the writer's handle reads.
    w.set(KEY, b"final", ttl).await.unwrap();
    assert!(
        o.touch(KEY, ttl).await.unwrap(),
        "{label}: touch after the race"
    );
    assert_eq!(w.get(KEY).await.unwrap().as_deref(), Some(&b"final"[..]));
    assert!(w.delete(KEY).await.unwrap());
    assert_eq!(w.get(KEY).await.unwrap(), None);
    bad.lock().unwrap().clone()
}

/// A remaining TTL as the parity script compares it: the TTL it was set
/// with when near it, else its exact value (which then differs).
fn ttl_bucket(t: Option<Duration>) -> String {
    let Some(t) = t else {
        return "never".into();
    };
    for set in [100, 600, 1200] {
        let set = Duration::from_secs(set);
        if t <= set && t + Duration::from_secs(30) > set {
            return format!("~{set:?}");
        }
    }
    format!("{t:?}")
}

/// A result as the parity script compares it: errors by kind.
fn show<T>(r: unicache::Result<T>, f: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => format!("Err({:?})", e.kind()),
    }
}

fn debug<T: std::fmt::Debug>(v: T) -> String {
    format!("{v:?}")
}

fn value_ttl(v: Option<unicache::ValueTtl>) -> String {
    v.map_or("None".into(), |v| {
        format!("{:?} {}", v.value, ttl_bucket(v.ttl))
    })
}

fn ttl_answer(t: Option<Option<Duration>>) -> String {
    t.map_or("absent".into(), ttl_bucket)
}

/// Every trait operation (but `clear_all`, which would empty the shared
/// servers) on `c`, one line per answer.
async fn parity_script(c: &Shared) -> Vec<String> {
    use futures::StreamExt;
    let d = Duration::from_secs;
    let mut out = Vec::new();
    let mut log = |op: &str, answer: String| out.push(format!("{op} -> {answer}"));
    log("get missing", show(c.get("missing").await, debug));
    log("set a", show(c.set("a", b"1", None).await, debug));
    log("get a", show(c.get("a").await, debug));
    log("contains a", show(c.contains("a").await, debug));
    log("contains missing", show(c.contains("missing").await, debug));
    let many = c.set_many(&[("b", b"2"), ("c", b"3")], Some(d(600))).await;
    log("set_many b c", show(many, debug));
    let many = c.get_many(&["a", "b", "missing", "a"]).await;
    log("get_many", show(many, debug));
    for k in ["a", "b", "missing"] {
        log(
            &format!("get_with_ttl {k}"),
            show(c.get_with_ttl(k).await, value_ttl),
        );
        log(&format!("ttl {k}"), show(c.ttl(k).await, ttl_answer));
    }
    let many = c.get_many_with_ttl(&["a", "b", "missing"]).await;
    log(
        "get_many_with_ttl",
        show(many, |v| {
            debug(v.into_iter().map(value_ttl).collect::<Vec<_>>())
        }),
    );
    log("add a", show(c.add("a", b"x", None).await, debug));
    log("add d", show(c.add("d", b"4", Some(d(600))).await, debug));
    log("get d", show(c.get("d").await, debug));
    log("ttl d", show(c.ttl("d").await, ttl_answer));
    log("set n", show(c.set("n", b"5", None).await, debug));
    log("incr n 1", show(c.incr("n", 1).await, debug));
    log("incr n -10", show(c.incr("n", -10).await, debug));
    log("get n", show(c.get("n").await, debug));
    log("incr fresh 2", show(c.incr("fresh", 2).await, debug));
    log("ttl fresh", show(c.ttl("fresh").await, ttl_answer));
    log("set text", show(c.set("text", b"abc", None).await, debug));
    log("incr text", show(c.incr("text", 1).await, debug));
    log("get text", show(c.get("text").await, debug));
    log("touch b", show(c.touch("b", Some(d(1200))).await, debug));
    log("ttl b", show(c.ttl("b").await, ttl_answer));
    log("get_with_ttl b", show(c.get_with_ttl("b").await, value_ttl));
    log(
        "touch missing",
        show(c.touch("missing", Some(d(60))).await, debug),
    );
    log("len", show(c.len().await, debug));
    log("is_empty", show(c.is_empty().await, debug));
    let keys = match c.keys().await {
        Ok(s) => {
            let got: unicache::Result<Vec<String>> =
                s.collect::<Vec<_>>().await.into_iter().collect();
            show(got, |mut k| {
                k.sort();
                debug(k)
            })
        }
        Err(e) => show::<()>(Err(e), debug),
    };
    log("keys", keys);
    let entries = match c.entries().await {
        Ok(s) => {
            let got: unicache::Result<Vec<unicache::Entry>> =
                s.collect::<Vec<_>>().await.into_iter().collect();
            show(got, |e| {
                let mut e: Vec<String> = e
                    .into_iter()
                    .map(|e| format!("{} {:?} {}", e.key, e.value, ttl_bucket(e.ttl)))
                    .collect();
                e.sort();
                debug(e)
            })
        }
        Err(e) => show::<()>(Err(e), debug),
    };
    log("entries", entries);
    log("delete a", show(c.delete("a").await, debug));
    log("delete a again", show(c.delete("a").await, debug));
    let n = c.delete_many(&["b", "c", "missing"]).await;
    log("delete_many b c missing", show(n, debug));
    log("delete_many b", show(c.delete_many(&["b"]).await, debug));
    let all = ["a", "b", "c", "d", "n", "fresh", "text"];
    log("get_many all", show(c.get_many(&all).await, debug));
    log("stats", show(c.stats().await, |s| s.backend));
    log("compact", show(c.compact().await, debug));
    log("flush", show(c.flush().await, debug));
    log("clear", show(c.clear().await, debug));
    log("get_many after clear", show(c.get_many(&all).await, debug));
    log("len after clear", show(c.len().await, debug));
    log("close", show(c.close().await, debug));
    out
}

/// Every trait operation answers through the stack as on the plain
/// backend (a layer that forgets to forward one falls to the trait's
/// `Unsupported` default, or answers differently), and the stack reports
/// the backend's capabilities (but `inline`, which a tier is not, and
/// `max_value_bytes`, which `value_at_declared_limit` checks) and keeps
/// them: `keys`, `len` and `ttl` work exactly when it says so.
pub async fn same_answers_as_plain(c: Shared, plain: Shared) {
    assert_eq!(c.backend(), plain.backend());
    let flags = |c: unicache::Capabilities| {
        (
            c.ttl,
            c.read_ttl,
            c.list_keys,
            c.count,
            c.persistent,
            c.shared,
            c.evicts,
            c.batch_concurrency,
        )
    };
    let caps = c.capabilities();
    assert_eq!(flags(caps), flags(plain.capabilities()), "capabilities");
    assert_eq!(c.keys().await.is_ok(), caps.list_keys, "keys vs list_keys");
    assert_eq!(c.len().await.is_ok(), caps.count, "len vs count");
    assert_eq!(c.ttl("x").await.is_ok(), caps.read_ttl, "ttl vs read_ttl");
    let got = parity_script(&c).await;
    let want = parity_script(&plain).await;
    let differ: Vec<String> = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| g != w)
        .map(|(g, w)| format!("{g}   (plain: {w})"))
        .collect();
    assert!(
        differ.is_empty(),
        "answers differ from the plain backend's:\n{}",
        differ.join("\n")
    );
}

/// Expands to the whole suite for one cache factory. `$factory` is an
/// async fn taking a namespace and returning `Arc<dyn Cache>`; `$cases` is
/// how many random sequences the model test runs. (The suite over every
/// stack of layers is `stack_suite!`.)
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $factory:path, $cases:expr) => {
        mod $name {
            use super::*;

            async fn open(ns: &str) -> $crate::common::conformance::Shared {
                $factory(ns).await
            }

            $crate::conformance_cases!($cases);
        }
    };
}

/// The whole suite over `Backend::$backend` and each stack of layers
/// (`stacks::Stack`), one module per stack: `$name::enveloped::atomic_incr`.
/// `$cases` is how many random sequences each stack's model test runs.
#[macro_export]
macro_rules! stack_suite {
    ($name:ident, $backend:ident, $cases:expr) => {
        mod $name {
            $crate::stack_suite!(@stack $backend, plain, Plain, $cases);
            $crate::stack_suite!(@stack $backend, observed, Observed, $cases);
            $crate::stack_suite!(@stack $backend, enveloped, Enveloped, $cases);
            $crate::stack_suite!(@stack $backend, tiered, Tiered, $cases);
            $crate::stack_suite!(@stack $backend, tier_envelope, TierEnvelope, $cases);
            $crate::stack_suite!(@stack $backend, all, All, $cases);
        }
    };
    (@stack $backend:ident, $name:ident, $stack:ident, $cases:expr) => {
        mod $name {
            use $crate::common::conformance::stacks::{self, Backend, Stack};
            const BACKEND: Backend = Backend::$backend;
            const STACK: Stack = Stack::$stack;

            async fn open(ns: &str) -> $crate::common::conformance::Shared {
                stacks::open_stack(BACKEND, STACK, ns).await
            }

            $crate::conformance_cases!($cases);
            $crate::stack_cases!();
        }
    };
}

/// The cases that need to know the backend and stack (`BACKEND`, `STACK`
/// and `open` in scope): a plain client beside the stack, a second handle.
#[macro_export]
macro_rules! stack_cases {
    () => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ttl_never_above_what_was_set() {
            suite::ttl_never_above_what_was_set(fresh().await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn incr_on_set_and_expired_values() {
            suite::incr_on_set_and_expired_values(fresh().await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn delete_reports_whether_it_existed() {
            suite::delete_reports_whether_it_existed(fresh().await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn value_at_declared_limit() {
            suite::value_at_declared_limit(fresh().await).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn clear_only_this_namespace() {
            let ns = $crate::common::unique_ns("iso");
            let a = open(&ns).await;
            let b = open(&format!("{ns}-other")).await;
            let f = stacks::foreign(BACKEND, STACK, &format!("{ns}-foreign")).await;
            suite::clear_only_this_namespace(a, b, f).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn foreign_bytes_read_back_exactly() {
            let ns = $crate::common::unique_ns("foreign");
            let c = open(&ns).await;
            let f = stacks::foreign(BACKEND, STACK, &ns).await;
            let raw = BACKEND.raw_redis_port().map(|p| (p, ns.clone()));
            suite::foreign_bytes_read_back_exactly(c, f, raw).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn touch_races_set_and_delete() {
            let ns = $crate::common::unique_ns("race");
            let c = open(&ns).await;
            let second = match BACKEND.shared() {
                true => Some(open(&ns).await),
                false => None,
            };
            // In-process calls take about a microsecond, so a touch that
            // reads then writes leaves a window of ~100 ns: memory:// (the
            // one store no second handle reaches) needs many more rounds
            // (50,000 take a few seconds) than a store behind a socket or a file.
            let rounds = match BACKEND.shared() {
                true => 200,
                false => 50_000,
            };
            suite::touch_races_set_and_delete(c, second, rounds).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn same_answers_as_plain() {
            let c = fresh().await;
            let ns = $crate::common::unique_ns("plain");
            let plain = stacks::open_stack(BACKEND, Stack::Plain, &ns).await;
            suite::same_answers_as_plain(c, plain).await
        }
    };
}

/// The suite's cases as tests, for a module with `async fn open(ns)`
/// returning a fresh cache in that namespace (the same data for the same
/// namespace); `$cases` is how many random sequences the model test runs.
#[macro_export]
macro_rules! conformance_cases {
    ($cases:expr) => {
        use $crate::common::conformance as suite;

        async fn fresh() -> suite::Shared {
            open(&$crate::common::unique_ns("t")).await
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
            let a = open(&ns).await;
            let b = open(&format!("{ns}-other")).await;
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
    };
}
