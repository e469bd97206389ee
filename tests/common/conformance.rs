//! One behaviour suite for every backend and every stack of layers: the
//! shipped suite (`unicache::testing`, `unicache::conformance_tests!`) plus
//! the cases that need to know the stack (a plain client beside it, a
//! second handle, the raw Redis keys).
//!
//! `stack_suite!(name, Backend, cases)` expands to one test per case for
//! each stack of `stacks::Stack` over that backend
//! (`name::enveloped::atomic_incr`); `stacks::open_stack` is how each is
//! opened. `conformance_suite!(name, factory, cases)` runs the shipped
//! cases over any factory: `factory(namespace)` must return a fresh, empty
//! cache isolated by that namespace (and `factory` called twice with the
//! same namespace must open the same data). Cases gate on `Capabilities`
//! where backends differ.

#[path = "stacks.rs"]
pub mod stacks;

use std::collections::HashMap;
use std::time::Duration;

pub use unicache::testing::*;

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

            $crate::conformance_cases!(unicache::testing::Config {
                model_sequences: $cases,
                ..Default::default()
            });
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
            $crate::stack_suite!(@stack $backend, compressed, Compressed, $cases);
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

            $crate::conformance_cases!(unicache::testing::Config {
                model_sequences: $cases,
                // In-process calls take about a microsecond, so a touch that
                // reads then writes leaves a window of ~100 ns: memory://
                // (the one store no second handle reaches) needs many more
                // rounds (50,000 take a few seconds) than a store behind a
                // socket or a file.
                touch_rounds: if BACKEND.shared() { 200 } else { 50_000 },
                ..Default::default()
            });
            $crate::stack_cases!();
        }
    };
}

/// The cases that need to know the backend and stack (`BACKEND`, `STACK`
/// and `open` in scope): a plain client beside the stack, a second handle.
#[macro_export]
macro_rules! stack_cases {
    () => {
        use $crate::common::conformance as suite;

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
        /// The toucher and deleter on a second handle of the same store
        /// (the shipped case races on one handle).
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn touch_races_across_two_handles() {
            if !BACKEND.shared() {
                return;
            }
            let ns = $crate::common::unique_ns("race");
            let (c, second) = (open(&ns).await, open(&ns).await);
            let bad = suite::touch_race(c, second, "two handles", 200).await;
            assert!(
                bad.is_empty(),
                "{} stale reads, the first: {:#?}",
                bad.len(),
                &bad[..bad.len().min(8)]
            );
        }
        /// The shipped case for a default TTL, opened with `ttl=2s` (see
        /// `ttl_expiry` for why not 1 s).
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn persist_under_a_default_ttl() {
            let ns = $crate::common::unique_ns("persist");
            let c = stacks::open_stack_with(BACKEND, STACK, &ns, "&ttl=2s").await;
            unicache::testing::persist_under_a_default_ttl(c).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn same_answers_as_plain() {
            let c = open(&$crate::common::unique_ns("t")).await;
            let ns = $crate::common::unique_ns("plain");
            let plain = stacks::open_stack(BACKEND, Stack::Plain, &ns).await;
            suite::same_answers_as_plain(c, plain).await
        }
    };
}

/// The shipped suite (`unicache::conformance_tests!`) as tests, for a
/// module with `async fn open(ns)` returning a fresh cache in that
/// namespace (the same data for the same namespace), with `$config` (a
/// `unicache::testing::Config`).
#[macro_export]
macro_rules! conformance_cases {
    ($config:expr) => {
        unicache::conformance_tests!(open, $config);
    };
}
