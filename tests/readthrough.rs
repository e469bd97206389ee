//! Read-through (`Handle::get_or_set`): single-flight in one process on
//! every backend, errors, cancellation and panics, across processes with
//! `lock=lease`, batches, timeouts, jitter and bad input. Real servers and
//! real files throughout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::servers::{self, shared_memcached, shared_redis};
use unicache::{ErrorKind, FactoryError, Fill, Handle};

/// Every test is bounded: a hang fails it instead of stalling the suite.
const LIMIT: Duration = Duration::from_secs(60);
const TTL: Option<Duration> = Some(Duration::from_secs(300));

fn tmp() -> &'static tempfile::TempDir {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
}

/// The URL of `backend` with the query `q` (no leading `?`), in a fresh
/// namespace (memory:// is its own instance anyway).
fn url(backend: &str, q: &str) -> String {
    let ns = common::unique_ns("rt");
    let sep = if q.is_empty() { "" } else { "&" };
    match backend {
        "memory" => format!("memory://?{q}"),
        "sqlite" => format!(
            "sqlite:{}?namespace={ns}{sep}{q}",
            tmp().path().join("rt.sqlite3").display()
        ),
        "file" => format!(
            "file:{}?namespace={ns}{sep}{q}",
            tmp().path().join("rt.jsonl").display()
        ),
        "redis" => format!(
            "redis://127.0.0.1:{}?namespace={ns}{sep}{q}",
            shared_redis().port
        ),
        "memcached" => format!(
            "memcached://127.0.0.1:{}?namespace={ns}{sep}{q}",
            shared_memcached()[0].port
        ),
        other => panic!("no backend {other}"),
    }
}

async fn open(backend: &str, q: &str) -> Handle {
    unicache::open(&url(backend, q)).await.unwrap()
}

/// A factory that counts its runs, sleeps, then answers `fill`.
fn counted(
    runs: &Arc<AtomicUsize>,
    sleep: Duration,
    fill: Result<Fill, &'static str>,
) -> impl FnOnce() -> futures::future::BoxFuture<'static, Result<Fill, FactoryError>> + use<> {
    let runs = runs.clone();
    move || {
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(sleep).await;
            fill.map_err(FactoryError::from)
        })
    }
}

/// `n` concurrent callers of one key, each with its own counted factory;
/// their results in spawn order.
async fn callers(
    h: &Handle,
    key: &str,
    n: usize,
    runs: &Arc<AtomicUsize>,
    sleep: Duration,
    fill: Result<Fill, &'static str>,
) -> Vec<unicache::Result<Bytes>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (h, key, f) = (
                h.clone(),
                key.to_string(),
                counted(runs, sleep, fill.clone()),
            );
            tokio::spawn(async move { h.get_or_set(&key, TTL, f).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn stampede(backend: &str) {
    let h = open(backend, "").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let value = Fill::Cache(Bytes::from_static(b"computed once"));
    let ms50 = Duration::from_millis(50);
    let results = tokio::time::timeout(LIMIT, callers(&h, "hot", 1000, &runs, ms50, Ok(value)))
        .await
        .expect("stampede did not finish in time");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{backend}: factory runs");
    for r in results {
        assert_eq!(&r.unwrap()[..], b"computed once", "{backend}");
    }
    assert_eq!(
        h.get("hot").await.unwrap().as_deref(),
        Some(&b"computed once"[..])
    );
    assert_eq!(h.flights_running(), 0);
    let s = h.read_through_stats();
    assert_eq!(s.factory_runs, 1);
    assert!(s.coalesced > 0, "{s:?}");
    // A hit afterwards runs nothing.
    let again = h.get_or_set("hot", TTL, counted(&runs, ms50, Err("not called")));
    assert_eq!(&again.await.unwrap()[..], b"computed once");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_memory() {
    stampede("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_sqlite() {
    stampede("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_file() {
    stampede("file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_redis() {
    stampede("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_memcached() {
    stampede("memcached").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn factory_error_reaches_every_waiter_and_is_not_cached() {
    for backend in ["memory", "redis"] {
        let h = open(backend, "").await;
        let runs = Arc::new(AtomicUsize::new(0));
        let ms50 = Duration::from_millis(50);
        let results = callers(&h, "err", 100, &runs, ms50, Err("database down")).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{backend}");
        for r in results {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Factory, "{e}");
            let shown = e.to_string();
            assert!(
                shown.contains("database down") && shown.contains("key=err"),
                "{shown}"
            );
            assert!(!shown.contains('\n'));
        }
        assert_eq!(h.get("err").await.unwrap(), None, "{backend}: error cached");
        // The next call runs the factory again.
        let ok = Ok(Fill::Cache(Bytes::from_static(b"back")));
        let r = callers(&h, "err", 1, &runs, Duration::ZERO, ok).await;
        assert_eq!(&r[0].as_ref().unwrap()[..], b"back");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(h.read_through_stats().factory_errors, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn do_not_cache_returns_to_every_waiter_and_stores_nothing() {
    for backend in ["memory", "sqlite"] {
        let h = open(backend, "").await;
        let runs = Arc::new(AtomicUsize::new(0));
        let fill = Ok(Fill::DoNotCache(Bytes::from_static(b"private")));
        // Nothing is stored, so a caller that arrives after the run ended
        // runs the factory again: the run outlasts the 200 callers' start
        // even on a loaded machine (50 ms did not, once).
        let slow = Duration::from_millis(500);
        let results = callers(&h, "dnc", 200, &runs, slow, fill).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        for r in results {
            assert_eq!(&r.unwrap()[..], b"private");
        }
        assert_eq!(h.get("dnc").await.unwrap(), None, "{backend}: stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_leader_lets_a_waiter_take_over() {
    let h = open("memory", "").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let slow = counted(&runs, Duration::from_secs(30), Err("never finishes"));
    let leader = {
        let h = h.clone();
        tokio::spawn(async move { h.get_or_set("k", TTL, slow).await })
    };
    while h.flights_running() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fill = Ok(Fill::Cache(Bytes::from_static(b"from a waiter")));
    let waiters = {
        let (h, runs) = (h.clone(), runs.clone());
        tokio::spawn(
            async move { callers(&h, "k", 20, &runs, Duration::from_millis(20), fill).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort(); // drops the leader's future mid-factory
    assert!(leader.await.unwrap_err().is_cancelled());
    let results = tokio::time::timeout(LIMIT, waiters).await.unwrap().unwrap();
    for r in results {
        assert_eq!(&r.unwrap()[..], b"from a waiter");
    }
    // The cancelled run and exactly one waiter's.
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        h.get("k").await.unwrap().as_deref(),
        Some(&b"from a waiter"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panicking_factory_lets_a_waiter_take_over() {
    let h = open("sqlite", "").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let leader = {
        let (h, runs) = (h.clone(), runs.clone());
        tokio::spawn(async move {
            h.get_or_set("p", TTL, || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!("factory bug");
            })
            .await
        })
    };
    while h.flights_running() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fill = Ok(Fill::Cache(Bytes::from_static(b"recovered")));
    let results = tokio::time::timeout(
        LIMIT,
        callers(&h, "p", 20, &runs, Duration::from_millis(20), fill),
    )
    .await
    .unwrap();
    assert!(leader.await.unwrap_err().is_panic());
    for r in results {
        assert_eq!(&r.unwrap()[..], b"recovered");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_values_round_trip() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct User {
        name: String,
        age: u32,
    }
    let h = open("memory", "").await;
    let ada = User {
        name: "Ada".into(),
        age: 36,
    };
    let a = ada.clone();
    let got: User = h
        .get_or_set_json("user:1", TTL, || async move { Ok(Fill::Cache(a)) })
        .await
        .unwrap();
    assert_eq!(got, ada);
    assert_eq!(
        h.get("user:1").await.unwrap().as_deref(),
        Some(&br#"{"name":"Ada","age":36}"#[..])
    );
    // A stored value of another shape is a Serialization error naming the key.
    h.set("user:2", b"not json", None).await.unwrap();
    let e = h
        .get_or_set_json::<User, _, _>("user:2", TTL, || async { Err("unused".into()) })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Serialization);
    assert!(e.to_string().contains("user:2"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hard_factory_timeout_fails_every_waiter() {
    let h = open("redis", "factory_timeout=100ms").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let fill = Ok(Fill::Cache(Bytes::from_static(b"too late")));
    let t = std::time::Instant::now();
    let results = callers(&h, "slow", 50, &runs, Duration::from_secs(5), fill).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    for r in results {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(
            e.to_string()
                .contains("factory did not finish within 100ms"),
            "{e}"
        );
    }
    assert_eq!(h.get("slow").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_jitter_spreads_expiries_within_the_bound() {
    let h = open("redis", "ttl_jitter=10s").await;
    let base = Duration::from_secs(60);
    let mut ttls = Vec::new();
    for i in 0..20 {
        let key = format!("j{i}");
        h.get_or_set(&key, Some(base), || async { Ok(Fill::Cache("v".into())) })
            .await
            .unwrap();
        ttls.push(h.ttl(&key).await.unwrap().unwrap().unwrap());
    }
    for t in &ttls {
        // Redis counts down from the store: allow a second for the test.
        assert!(
            *t > base - Duration::from_secs(1) && *t <= base + Duration::from_secs(10),
            "{t:?}"
        );
    }
    let spread = ttls.iter().max().unwrap().as_millis() - ttls.iter().min().unwrap().as_millis();
    assert!(spread > 1000, "TTLs not spread: {ttls:?}");
    // Without the option, TTLs are exactly what was asked.
    let plain = open("redis", "").await;
    plain
        .get_or_set("p", Some(base), || async { Ok(Fill::Cache("v".into())) })
        .await
        .unwrap();
    let t = plain.ttl("p").await.unwrap().unwrap().unwrap();
    assert!(t <= base && t > base - Duration::from_secs(1), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_documented_error() {
    for backend in ["memory", "sqlite", "file", "redis", "memcached"] {
        let h = open(backend, "").await;
        let runs = Arc::new(AtomicUsize::new(0));
        let f = counted(&runs, Duration::ZERO, Ok(Fill::Cache("v".into())));
        let e = h
            .get_or_set("k", Some(Duration::ZERO), f)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{backend}: {e}");
        let e = h
            .get_or_set_many(&["a"], Some(Duration::ZERO), |_| async { Ok(vec![]) })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{backend}: {e}");
        assert_eq!(runs.load(Ordering::SeqCst), 0, "{backend}: factory ran");
    }
    // memcached: a key over its 250-byte limit is stored under its hash
    // (documented); a value over item_size_max is ValueTooLarge, returned
    // rather than served uncached on every call.
    let h = open("memcached", "").await;
    let long = "k".repeat(10_000);
    let v = h
        .get_or_set(&long, TTL, || async { Ok(Fill::Cache("long".into())) })
        .await
        .unwrap();
    assert_eq!(&v[..], b"long");
    assert_eq!(h.get(&long).await.unwrap().as_deref(), Some(&b"long"[..]));
    let huge = Bytes::from(vec![b'x'; 2 << 20]);
    let e = h
        .get_or_set("huge", TTL, || async move { Ok(Fill::Cache(huge)) })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueTooLarge, "{e}");
    // URL options are checked at open.
    for bad in [
        "lock=maybe",
        "lease_ttl=0",
        "factory_timeout=0",
        "ttl_jitter=soon",
    ] {
        let e = unicache::open(&format!("memory://?{bad}"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidUrl, "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_fills_only_missing_keys_in_two_commands_on_redis() {
    let server = servers::redis_server(); // its own: commandstats are exact
    let h = unicache::open(&format!("redis://127.0.0.1:{}", server.port))
        .await
        .unwrap();
    let keys: Vec<String> = (0..1000).map(|i| format!("b:{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let present: Vec<(&str, &[u8])> = refs.iter().step_by(2).map(|k| (*k, &b"old"[..])).collect();
    h.set_many(&present, None).await.unwrap();
    assert!(
        servers::ask(server.port, "CONFIG RESETSTAT\r\n")
            .unwrap()
            .starts_with("+OK")
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let values = h
        .get_or_set_many(&refs, None, |missing| async move {
            c.fetch_add(1, Ordering::SeqCst);
            assert_eq!(missing.len(), 500);
            assert!(
                missing
                    .iter()
                    .all(|k| k[2..].parse::<u32>().unwrap() % 2 == 1)
            );
            Ok(missing
                .iter()
                .map(|k| Some(Fill::Cache(Bytes::from(format!("new {k}")))))
                .collect())
        })
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for (i, v) in values.iter().enumerate() {
        let want = if i % 2 == 0 {
            "old".to_string()
        } else {
            format!("new b:{i}")
        };
        assert_eq!(v.as_deref(), Some(want.as_bytes()), "key {i}");
    }
    let stats = servers::ask(server.port, "INFO commandstats\r\n").unwrap();
    let data: Vec<&str> = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_config"))
        // The MSET's pipeline also carries its invalidation message (or a
        // count of its listeners).
        .filter(|l| !l.starts_with("cmdstat_publish") && !l.starts_with("cmdstat_pubsub"))
        .collect();
    // One MGET, one MSET: the two round trips for the data.
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(
        data.iter().any(|l| l.starts_with("cmdstat_mget:calls=1,")),
        "{data:?}"
    );
    assert!(
        data.iter().any(|l| l.starts_with("cmdstat_mset:calls=1,")),
        "{data:?}"
    );
    // Now every key is there: one MGET, no factory.
    let again = h
        .get_or_set_many(&refs, None, |_| async {
            Err::<Vec<_>, _>("not called".into())
        })
        .await
        .unwrap();
    assert_eq!(again, values);
}

/// Env of [`lease_child`]: the cache URL, the file each factory run appends
/// a line to (O_APPEND: lines from several processes never mix), and the
/// Unix millisecond at which every child starts calling.
const CHILD_URL: &str = "UNICACHE_RT_URL";
const CHILD_RUNS: &str = "UNICACHE_RT_RUNS";
const CHILD_START: &str = "UNICACHE_RT_START";

fn unix_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.unwrap().as_millis() as u64
}

/// One process of the cross-process test: 50 concurrent callers of one
/// missing key. Returns at once when run without its environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by lease_* tests in child processes"]
async fn lease_child() {
    let (Ok(url), Ok(runs), Ok(start)) = (
        std::env::var(CHILD_URL),
        std::env::var(CHILD_RUNS),
        std::env::var(CHILD_START),
    ) else {
        return;
    };
    let h = unicache::open(&url).await.unwrap();
    let start: u64 = start.parse().unwrap();
    tokio::time::sleep(Duration::from_millis(start.saturating_sub(unix_ms()))).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (h, runs) = (h.clone(), runs.clone());
            tokio::spawn(async move {
                h.get_or_set("shared", TTL, || async move {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&runs)?;
                    writeln!(f, "run by {}", std::process::id())?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(Fill::Cache(Bytes::from_static(b"computed by one process")))
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(&t.await.unwrap().unwrap()[..], b"computed by one process");
    }
    println!("child ok: {:?}", h.read_through_stats());
}

/// 8 processes x 50 callers of one missing key with `lock=lease`: one
/// factory run in all.
fn lease_across_processes(backend: &str) {
    let url = url(backend, "lock=lease&lease_ttl=10s");
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.txt");
    let start = unix_ms() + 2000; // every child up and connected by then
    let env = [
        (CHILD_URL, url.clone()),
        (CHILD_RUNS, runs.display().to_string()),
        (CHILD_START, start.to_string()),
    ];
    let mut children: Vec<_> = (0..8)
        .map(|_| common::spawn_self("lease_child", &env))
        .collect();
    let deadline = std::time::Instant::now() + LIMIT;
    for c in &mut children {
        while c.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                children.iter_mut().for_each(|c| {
                    let _ = c.kill();
                    let _ = c.wait();
                });
                panic!("{backend}: children did not finish within {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("child ok"),
            "{backend}: {text}{}",
            common::stderr(&out)
        );
    }
    let lines = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(
        lines.lines().count(),
        1,
        "{backend}: factory runs:\n{lines}"
    );
    // The lease is gone once the value is stored.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let h = unicache::open(&url).await.unwrap();
        assert_eq!(
            h.get("shared").await.unwrap().as_deref(),
            Some(&b"computed by one process"[..])
        );
        let lease = format!("{}shared", unicache::readthrough::LEASE_PREFIX);
        assert_eq!(
            h.get(&lease).await.unwrap(),
            None,
            "{backend}: lease left behind"
        );
    });
}

#[test]
fn lease_across_processes_redis() {
    lease_across_processes("redis");
}

#[test]
fn lease_across_processes_memcached() {
    lease_across_processes("memcached");
}

/// The hit path's future stays small: the miss path is boxed.
#[test]
fn hit_future_is_small() {
    let h = futures::executor::block_on(unicache::open("memory://")).unwrap();
    let f = h.get_or_set("k", None, || async { Ok(Fill::Cache("v".into())) });
    assert!(
        std::mem::size_of_val(&f) <= 256,
        "{}",
        std::mem::size_of_val(&f)
    );
}

#[test]
fn lease_across_processes_sqlite() {
    lease_across_processes("sqlite");
}

#[test]
fn lease_across_processes_file() {
    lease_across_processes("file");
}

/// The two-step engine: callers of `get_or_set` wait for a [`Leader`]
/// from `begin` and get what it completes with; their own factories never
/// run. A leader stopped at `factory_timeout` gives them the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn begin_and_complete_serve_get_or_set_waiters() {
    let h = open("memory", "factory_timeout=5s").await;
    let runs = Arc::new(AtomicUsize::new(0));
    for (key, timed_out) in [("ok", false), ("late", true)] {
        let unicache::readthrough::Begin::Lead(leader) = h.begin(key, TTL).await.unwrap() else {
            panic!("a miss must lead");
        };
        assert_eq!(leader.key(), key);
        assert_eq!(leader.factory_timeout(), Some(Duration::from_secs(5)));
        let before = h.read_through_stats().coalesced;
        let waiters = {
            let (h, runs) = (h.clone(), runs.clone());
            let fill = Err("a waiter's factory must not run");
            tokio::spawn(async move { callers(&h, key, 20, &runs, Duration::ZERO, fill).await })
        };
        while h.read_through_stats().coalesced < before + 20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got = if timed_out {
            let e = leader.timed_out().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
            None
        } else {
            let got = leader.complete(Ok(Fill::Cache("led".into()))).await;
            Some(got.unwrap())
        };
        let results = tokio::time::timeout(LIMIT, waiters).await.unwrap().unwrap();
        for r in results {
            match &got {
                Some(g) => assert_eq!(r.unwrap(), g.value),
                None => assert_eq!(r.unwrap_err().kind(), ErrorKind::Timeout),
            }
        }
        let stored = h.get(key).await.unwrap();
        assert_eq!(stored.as_deref(), got.map(|g| g.value).as_deref());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // A hit is `Done` at once.
    let begun = h.begin("ok", TTL).await.unwrap();
    assert!(matches!(begun, unicache::readthrough::Begin::Done(g) if &g.value[..] == b"led"));
}

/// A leader dropped on a thread without a runtime (a sync factory that
/// panicked in the blocking facade) hands the key over and frees its
/// lease at once: the next caller does not wait out `lease_ttl`. Before,
/// the lease was only deleted when the drop happened inside a runtime.
#[test]
fn blocking_panicking_factory_frees_its_lease() {
    let url = url("sqlite", "lock=lease&lease_ttl=30s");
    let c = unicache::blocking::Cache::open(&url).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.get_or_set("k", TTL, || panic!("factory bug"))
    }));
    assert!(panicked.is_err());
    let t = std::time::Instant::now();
    let v = c
        .get_or_set("k", TTL, || Ok(Fill::Cache("after".into())))
        .unwrap();
    assert_eq!(&v[..], b"after");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited {:?} for the dropped lease",
        t.elapsed()
    );
    let lease = format!("{}k", unicache::readthrough::LEASE_PREFIX);
    assert_eq!(c.get(&lease).unwrap(), None, "lease left behind");
}

/// The blocking facade and async callers of one handle share one flight;
/// a sync factory that returns after `factory_timeout` is a timeout for
/// all of them and its value is not stored.
#[test]
fn blocking_and_async_callers_share_one_flight() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let h = rt.block_on(open("redis", "factory_timeout=300ms"));
    let c = Arc::new(unicache::blocking::Cache::from_handle(h.clone()).unwrap());
    let runs = Arc::new(AtomicUsize::new(0));
    for (key, sleep) in [("shared", 100), ("late", 500)] {
        let leader = {
            let (c, runs) = (c.clone(), runs.clone());
            std::thread::spawn(move || {
                c.get_or_set(key, TTL, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(sleep));
                    Ok(Fill::Cache("sync".into()))
                })
            })
        };
        while h.flights_running() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let fill = Err("an async waiter's factory must not run");
        let waiters = rt.block_on(callers(&h, key, 20, &runs, Duration::ZERO, fill));
        let led = leader.join().unwrap();
        for r in waiters.into_iter().chain([led]) {
            match sleep {
                100 => assert_eq!(&r.unwrap()[..], b"sync"),
                _ => assert_eq!(r.unwrap_err().kind(), ErrorKind::Timeout),
            }
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(c.get("late").unwrap(), None);
    drop(c);
}
