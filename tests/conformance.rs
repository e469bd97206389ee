//! The conformance suite against every backend compiled in, plain and under
//! each stack of layers (`common/stacks.rs`). Remote backends run against
//! real servers the harness starts (see `common/servers.rs`), shared by the
//! tests of this binary.

mod common;

// Every case over every backend and each stack of layers over it (plain,
// observed, enveloped, tiered, tier + envelope, all): `memory::tiered::batches`.
// The last argument is how many random sequences each model test runs.
// 902 tests; measured 263-279 s for the binary on the 2-core machine with
// other builds running (load 11-17), mostly the 2.1 s waits of the expiry
// cases (five per stack) and the touch races.
#[cfg(feature = "memory")]
stack_suite!(memory, Memory, 64);
#[cfg(feature = "sqlite")]
stack_suite!(sqlite, Sqlite, 32);
#[cfg(feature = "file")]
stack_suite!(file, File, 32);
#[cfg(feature = "redis")]
stack_suite!(redis, Redis, 16);
#[cfg(feature = "redis")]
stack_suite!(redis_cluster, RedisCluster, 8);
#[cfg(feature = "memcached")]
stack_suite!(memcached, Memcached, 16);

/// Issue 8 item 9 end to end: a password holding `? / , # @ :` and `%`,
/// not percent-encoded, reaches a real Redis intact; errors never show it.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unencoded_password_reaches_a_real_redis() {
    let server = common::servers::redis_server();
    let pw = "QM?ARK/s,e#c@r:e%t";
    let set = common::servers::ask(server.port, &format!("CONFIG SET requirepass \"{pw}\"\r\n"));
    assert!(set.is_some_and(|r| r.starts_with("+OK")));
    let url = format!(
        "redis://default:{pw}@127.0.0.1:{}?namespace=pw",
        server.port
    );
    let c = unicache::open(&url).await.unwrap();
    c.set("k", b"v", None).await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert!(!c.endpoint().contains(pw), "{}", c.endpoint());
    let wrong = url.replace("QM?", "QX?");
    let e = unicache::open(&wrong).await.unwrap_err().to_string();
    assert!(!e.contains("ARK/s,e#c@r:e%t"), "{e}");
    for bad in [
        format!("{url}&bogus=1"),
        url.replace(&server.port.to_string(), "99999"),
    ] {
        let e = unicache::open(&bad).await.unwrap_err().to_string();
        assert!(!e.contains(pw), "{e}");
    }
}

/// Item 16: `must_exist` given to `open_with` reaches the SQLite backend:
/// a missing file is NotFound and nothing is created; a URL's own options
/// still apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_exist_reaches_sqlite_through_open_with() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/missing.sqlite3");
    let opts = unicache::CacheOptions::new().must_exist(true);
    let url = format!("sqlite:{}?namespace=x", path.display());
    let e = unicache::open_with(&url, opts.clone()).await.unwrap_err();
    assert_eq!(e.kind(), unicache::ErrorKind::NotFound, "{e}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    unicache::open(&url)
        .await
        .unwrap()
        .set("k", b"v", None)
        .await
        .unwrap();
    let c = unicache::open_with(&url, opts).await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}
