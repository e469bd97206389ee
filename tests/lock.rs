//! `unicache::Lock` on real stores: mutual exclusion across two handles
//! of one SQLite file, file log, Redis, memcached pair (and Redis under
//! every layer), only the holder releasing or extending, an expired lock
//! taken by another, and the bound of a blocking wait.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use unicache::{Cache, Lock};

use common::servers;

/// Tasks per handle, each doing `PER_TASK` locked increments.
const TASKS: usize = 4;
const PER_TASK: usize = 15;

type Shared = Arc<dyn Cache>;

/// Opens the store under test (a second call: a second handle).
async fn open(url: &str) -> Shared {
    unicache::open(url).await.unwrap().into()
}

/// A lock of `name` on `c` that waits at most 30 s.
fn lock(c: &Shared, name: &str) -> Lock {
    Lock::new(c.clone(), name)
        .unwrap()
        .timeout(Some(Duration::from_secs(30)))
        .blocking_timeout(Some(Duration::from_secs(30)))
}

/// `TASKS` tasks on each handle increment a counter by get + set (not
/// atomic by itself) under the lock: the total is exact only if no two
/// ever held it at once.
async fn locked_increments_are_exact(handles: [Shared; 2]) {
    let mut tasks = Vec::new();
    for c in &handles {
        for _ in 0..TASKS {
            let (c, l) = (c.clone(), lock(c, "counter"));
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    assert!(l.acquire().await.unwrap(), "acquired within 30 s");
                    let n: u64 = match c.get("n").await.unwrap() {
                        Some(v) => std::str::from_utf8(&v).unwrap().parse().unwrap(),
                        None => 0,
                    };
                    // Widen the read-modify-write window.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    c.set("n", n.saturating_add(1).to_string().as_bytes(), None)
                        .await
                        .unwrap();
                    assert!(l.release().await.unwrap(), "released by its holder");
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let want = (2 * TASKS * PER_TASK).to_string();
    assert_eq!(
        handles[0].get("n").await.unwrap().as_deref(),
        Some(want.as_bytes())
    );
    assert!(!lock(&handles[1], "counter").locked().await.unwrap());
}

/// Only the holder releases or extends; another holder's `release` does
/// nothing.
async fn only_the_holder_releases(a: Shared, b: Shared) {
    let (la, lb) = (lock(&a, "job"), lock(&b, "job"));
    assert!(la.try_acquire().await.unwrap());
    assert!(!lb.try_acquire().await.unwrap(), "held by a");
    assert!(!lb.release().await.unwrap(), "b does not hold it");
    assert!(!lb.extend(Some(Duration::from_secs(60))).await.unwrap());
    assert!(lb.locked().await.unwrap(), "still held after b's release");
    assert!(!lb.try_acquire().await.unwrap(), "still a's");
    assert_eq!(
        la.try_acquire().await.unwrap_err().kind(),
        unicache::ErrorKind::InvalidInput,
        "one Lock holds it once"
    );
    assert!(la.release().await.unwrap());
    assert!(!la.release().await.unwrap(), "released twice: nothing");
    assert!(!lb.locked().await.unwrap(), "released: free");
    assert!(
        lb.try_acquire().await.unwrap(),
        "a released marker is taken"
    );
    assert!(lb.release().await.unwrap());
}

/// A holder that outlived its timeout has lost the lock: another takes it,
/// and the old holder can neither release nor extend it.
async fn expired_lock_is_taken_by_another(a: Shared, b: Shared) {
    let la = lock(&a, "short").timeout(Some(Duration::from_secs(1)));
    let lb = lock(&b, "short");
    assert!(la.try_acquire().await.unwrap());
    assert!(!lb.try_acquire().await.unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(lb.try_acquire().await.unwrap(), "expired: taken by b");
    assert!(!la.release().await.unwrap(), "a lost it");
    assert!(!la.extend(Some(Duration::from_secs(60))).await.unwrap());
    assert!(lb.locked().await.unwrap(), "b still holds it");
    assert!(lb.release().await.unwrap());
}

/// `extend` keeps a lock past its first timeout; `blocking_timeout`
/// bounds a wait for a held lock.
async fn extend_and_blocking_timeout(a: Shared, b: Shared) {
    let la = lock(&a, "long").timeout(Some(Duration::from_secs(1)));
    assert!(la.acquire().await.unwrap());
    assert!(la.extend(Some(Duration::from_secs(60))).await.unwrap());
    let lb = lock(&b, "long").blocking_timeout(Some(Duration::from_millis(300)));
    let started = Instant::now();
    // 2.1 s of waiting in 300 ms attempts: past a's first timeout.
    for _ in 0..7 {
        assert!(!lb.acquire().await.unwrap(), "extended: still a's");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2100) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    assert!(la.release().await.unwrap());
    assert!(lb.acquire().await.unwrap(), "free again: taken at once");
    lb.release().await.unwrap();
}

/// The four cases over a store: `url(ns)` gives its URL in a namespace.
macro_rules! lock_tests {
    ($name:ident, $url:expr) => {
        mod $name {
            use super::*;

            async fn two(prefix: &str) -> [Shared; 2] {
                let url = ($url)(common::unique_ns(prefix));
                [open(&url).await, open(&url).await]
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn locked_increments_through_two_handles_are_exact() {
                locked_increments_are_exact(two("count").await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn release_by_a_non_holder_does_nothing() {
                let [a, b] = two("holder").await;
                only_the_holder_releases(a, b).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn expired_lock_can_be_taken_by_another() {
                let [a, b] = two("expired").await;
                expired_lock_is_taken_by_another(a, b).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn extend_keeps_it_and_blocking_timeout_bounds_the_wait() {
                let [a, b] = two("extend").await;
                extend_and_blocking_timeout(a, b).await
            }
        }
    };
}

fn tmp() -> &'static tempfile::TempDir {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
}

#[cfg(feature = "sqlite")]
lock_tests!(sqlite, |ns: String| format!(
    "sqlite:{}?namespace={ns}",
    tmp().path().join("locks.sqlite3").display()
));
#[cfg(feature = "file")]
lock_tests!(file, |ns: String| format!(
    "file:{}?namespace={ns}",
    tmp().path().join("locks.log").display()
));
#[cfg(feature = "redis")]
lock_tests!(redis, |ns: String| format!(
    "redis://127.0.0.1:{}?namespace={ns}",
    servers::shared_redis().port
));
// Every layer between the lock and Redis: the tier's L1 on both handles
// (kept coherent by the backplane), the envelope, observe.
#[cfg(feature = "redis")]
lock_tests!(redis_all_layers, |ns: String| format!(
    "redis://127.0.0.1:{}?namespace={ns}&l1=100&fail_safe=1&observe=1",
    servers::shared_redis().port
));
#[cfg(feature = "memcached")]
lock_tests!(memcached, |ns: String| {
    let [a, b] = servers::shared_memcached();
    format!(
        "memcached://127.0.0.1:{},127.0.0.1:{}?namespace={ns}",
        a.port, b.port
    )
});

/// memory:// is one process's store: one handle, two holders.
#[cfg(feature = "memory")]
mod memory {
    use super::*;

    async fn one() -> [Shared; 2] {
        let c = open("memory://").await;
        [c.clone(), c]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locked_increments_are_exact_in_one_handle() {
        locked_increments_are_exact(one().await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn release_by_a_non_holder_does_nothing() {
        let [a, b] = one().await;
        only_the_holder_releases(a, b).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_lock_can_be_taken_by_another() {
        let [a, b] = one().await;
        expired_lock_is_taken_by_another(a, b).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_name_is_refused() {
        let [a, _] = one().await;
        let e = Lock::new(a, "").unwrap_err();
        assert_eq!(e.kind(), unicache::ErrorKind::InvalidInput, "{e}");
    }
}
