//! Promises a layer stacked on a backend (observe, envelope, tier) could
//! break while the backend alone keeps them: TTLs never above what was
//! set, `incr` after `set`, `delete`'s answer, the declared value limit,
//! `clear` of one namespace only.

use std::time::Duration;

use super::Shared;

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
