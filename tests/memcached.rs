//! memcached: the conformance suite on one real server and on two, the CLI
//! read back with a plain text-protocol client, long TTLs (past 2038),
//! namespace-only clear and namespaces that look nested (`app`, `app:v2`),
//! one of two servers killed during a bulk write, a server frozen with
//! SIGSTOP (fast failures, reuse once resumed, cancelled calls), a fake
//! server answering garbage, huge timeouts, and `incr` from four processes
//! at once (both its `ma` and compare-and-set paths).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::servers::{self, ask, shared_memcached};
use common::unicache;
use unicache::Cache;

async fn one(ns: &str) -> Arc<dyn Cache> {
    let [a, _] = shared_memcached();
    unicache::open(&format!("memcached://127.0.0.1:{}?namespace={ns}", a.port))
        .await
        .unwrap()
        .into()
}

async fn two(ns: &str) -> Arc<dyn Cache> {
    let [a, b] = shared_memcached();
    unicache::open(&format!(
        "memcached://127.0.0.1:{},127.0.0.1:{}?namespace={ns}",
        a.port, b.port
    ))
    .await
    .unwrap()
    .into()
}

conformance_suite!(memcached_one, one, 16);
conformance_suite!(memcached_two, two, 16);

#[test]
fn cli_write_then_plain_get_reads_the_json() {
    let m = servers::memcached_server();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"key\":\"user:1\",\"name\":\"Ada\"}\n").unwrap();
    let out = unicache()
        .args(["write", "-q", "--input"])
        .arg(&input)
        .args([
            "--cache",
            &format!("memcached://127.0.0.1:{}", m.port),
            "--output",
        ])
        .arg(dir.path().join("s.json"))
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    // Without a namespace the key is stored as-is: `printf 'get user:1\r\n' | nc HOST PORT`.
    let reply = ask(m.port, "get user:1\r\n").unwrap();
    assert!(
        reply.contains(r#"{"key":"user:1","name":"Ada"}"#),
        "{reply}"
    );
    // And a plain clear refuses without a namespace; --all flushes.
    let out = unicache()
        .args([
            "clear",
            "--cache",
            &format!("memcached://127.0.0.1:{}", m.port),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all"));
    assert!(ask(m.port, "get user:1\r\n").unwrap().contains("VALUE"));
    let out = unicache()
        .args([
            "clear",
            "--all",
            "--cache",
            &format!("memcached://127.0.0.1:{}", m.port),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(ask(m.port, "get user:1\r\n").unwrap(), "END\r\n");
}

#[test]
fn namespace_clear_spares_other_keys_and_long_ttl_survives() {
    let m = servers::memcached_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("memcached://127.0.0.1:{}?namespace=app", m.port);
        let c = unicache::open(&url).await.unwrap();
        ask(m.port, "set foreign 0 0 4\r\nkeep\r\n").unwrap();
        c.set("month", b"31 days", Some(Duration::from_secs(31 * 86400)))
            .await
            .unwrap();
        c.set("k", b"v", None).await.unwrap();
        // A 31-day TTL sent as seconds would be read as a 1970 date and expire at once.
        assert_eq!(
            c.get("month").await.unwrap().as_deref(),
            Some(&b"31 days"[..])
        );
        c.clear().await.unwrap();
        assert_eq!(c.get("k").await.unwrap(), None);
        assert!(ask(m.port, "get foreign\r\n").unwrap().contains("keep"));
        // Another instance sees the clear too (the version lives in memcached).
        c.set("k2", b"v2", None).await.unwrap();
        let other = unicache::open(&url).await.unwrap();
        assert_eq!(other.get("k2").await.unwrap().as_deref(), Some(&b"v2"[..]));
    });
}

#[test]
fn value_over_item_size_is_a_clear_error_naming_the_limit() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = one("big").await;
        let e = c
            .set("big", &vec![0u8; 2 * 1024 * 1024], None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), unicache::ErrorKind::ValueTooLarge, "{e}");
        assert!(e.to_string().contains("limit"), "{e}");
    });
}

#[test]
fn one_of_two_servers_killed_during_a_write_every_record_accounted() {
    let mut a = servers::memcached_server();
    let b = servers::memcached_server();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, common::padded_jsonl("m", 100_000)).unwrap();
    let summary = dir.path().join("s.json");
    let url = format!(
        "memcached://127.0.0.1:{},127.0.0.1:{}?namespace=fault",
        a.port, b.port
    );
    let child = common::spawn_write(&input, &url, 200, &summary, std::process::Stdio::piped());
    let t = Instant::now();
    loop {
        let items = ask(b.port, "stats\r\n")
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("STAT curr_items ")
                        .map(|n| n.trim().parse::<u64>().unwrap_or(0))
                })
            })
            .unwrap_or(0);
        if items > 5_000 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "write did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    a.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t.elapsed()
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let tr = &s["targets"][0];
    let (written, failed) = (
        tr["written"].as_u64().unwrap(),
        tr["failed"].as_u64().unwrap(),
    );
    assert_eq!(written + failed, 100_000, "{s}");
    assert!(failed > 0, "{s}");
    assert_eq!(s["records_failed"].as_u64().unwrap(), failed);
    assert_eq!(s["records_written"].as_u64().unwrap(), written);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn down_server_reads_are_misses_with_errors_and_a_restart_is_picked_up() {
    let mut m = servers::memcached_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!(
            "memcached://127.0.0.1:{}?namespace=flap&connect_timeout=500ms",
            m.port
        ))
        .await
        .unwrap();
        c.set("k", b"v", None).await.unwrap();
        m.kill();
        // Documented: a miss, counted as an error, not an Err.
        assert_eq!(c.get("k").await.unwrap(), None);
        let s = c.stats().await.unwrap();
        assert!(s.errors >= 1 && s.misses >= 1, "{s:?}");
        assert!(c.set("k", b"v", None).await.is_err());
        // Reads with TTL too; the atomic writes fail, transient at first.
        assert_eq!(c.get_with_ttl("k").await.unwrap(), None);
        assert_eq!(
            c.get_many_with_ttl(&["k", "j"]).await.unwrap(),
            [None, None]
        );
        for e in [
            c.incr("n", 1).await.unwrap_err(),
            c.add("a", b"v", None).await.unwrap_err(),
            c.touch("k", None).await.unwrap_err(),
        ] {
            assert!(e.is_transient(), "{e}");
        }
        let s2 = c.stats().await.unwrap();
        assert!(
            s2.errors >= s.errors + 5 && s2.misses >= s.misses + 3,
            "{s2:?}"
        );
        m.restart(servers::memcached_ready);
        // Probed again within a second; then used as normal.
        let t = std::time::Instant::now();
        loop {
            if c.set("k", b"back", None).await.is_ok() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "never reconnected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"back"[..]));
    });
}

#[test]
fn ttls_past_2038_are_stored_not_dropped() {
    let m = servers::memcached_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!("memcached://127.0.0.1:{}?namespace=t", m.port))
            .await
            .unwrap();
        let thirty_years = Duration::from_secs(30 * 365 * 86400);
        c.set("30y", b"a", Some(thirty_years)).await.unwrap();
        c.set("max", b"b", Some(Duration::MAX)).await.unwrap();
        c.set_many(&[("many", &b"c"[..])], Some(Duration::MAX))
            .await
            .unwrap();
        // An exptime past 2^31-1 is taken as already expired: these would be misses.
        assert_eq!(c.get("30y").await.unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(c.get("max").await.unwrap().as_deref(), Some(&b"b"[..]));
        assert_eq!(c.get("many").await.unwrap().as_deref(), Some(&b"c"[..]));
    });
    // The CLI's `--ttl 30y` too, read back with a plain client.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"key\":\"long\",\"v\":1}\n").unwrap();
    let out = unicache()
        .args(["write", "-q", "--ttl", "30y", "--input"])
        .arg(&input)
        .args(["--cache", &format!("memcached://127.0.0.1:{}", m.port)])
        .args(["--output"])
        .arg(dir.path().join("s.json"))
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    assert!(ask(m.port, "get long\r\n").unwrap().contains("VALUE long"));
}

#[test]
fn namespaces_app_and_app_v2_never_share_keys() {
    let m = servers::memcached_server();
    // Versions planted by something else, chosen so that a naive
    // `NS:<version>:<key>` mapping makes app's `t1:user1` app:v2's `user1`,
    // and app's `__unicache_ns` app:v2's version key.
    ask(m.port, "set app:__unicache_ns 0 0 2\r\nv2\r\n").unwrap();
    ask(m.port, "set app:v2:__unicache_ns 0 0 2\r\nt1\r\n").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = |ns: &str| format!("memcached://127.0.0.1:{}?namespace={ns}", m.port);
        let app = unicache::open(&url("app")).await.unwrap();
        let v2 = unicache::open(&url("app:v2")).await.unwrap();
        v2.set("user1", b"of v2", None).await.unwrap();
        app.set("t1:user1", b"of app", None).await.unwrap();
        app.set("__unicache_ns", b"of app too", None).await.unwrap();
        app.set("v2:user1", b"app again", None).await.unwrap();
        assert_eq!(
            v2.get("user1").await.unwrap().as_deref(),
            Some(&b"of v2"[..])
        );
        assert_eq!(v2.get("t1:user1").await.unwrap(), None);
        assert_eq!(app.get("user1").await.unwrap(), None);
        // Fresh instances agree (the versions live in memcached).
        let (app2, v2b) = (
            unicache::open(&url("app")).await.unwrap(),
            unicache::open(&url("app:v2")).await.unwrap(),
        );
        assert_eq!(
            app2.get("t1:user1").await.unwrap().as_deref(),
            Some(&b"of app"[..])
        );
        assert_eq!(
            v2b.get("user1").await.unwrap().as_deref(),
            Some(&b"of v2"[..])
        );
        // Clearing one leaves the other.
        app.clear().await.unwrap();
        assert_eq!(app.get("t1:user1").await.unwrap(), None);
        assert_eq!(
            v2.get("user1").await.unwrap().as_deref(),
            Some(&b"of v2"[..])
        );
        app.set("k", b"app", None).await.unwrap();
        v2.clear().await.unwrap();
        assert_eq!(v2.get("user1").await.unwrap(), None);
        assert_eq!(app.get("k").await.unwrap().as_deref(), Some(&b"app"[..]));
    });
    // A plain namespace keeps readable keys: `app:<version>:k`.
    let version = ask(m.port, "get app:__unicache_ns\r\n").unwrap();
    let version = version.lines().nth(1).unwrap().to_string();
    assert!(
        ask(m.port, &format!("get app:{version}:k\r\n"))
            .unwrap()
            .contains("app")
    );
}

/// Handles that use a new namespace for the first time together agree on
/// its version token (each server's copy only moves forward, and a token
/// is used once every server holds it): before, two handles could each
/// settle on another token for a second, and one's writes were lost to the
/// other (the conformance suite's touch race on two handles caught it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_using_a_new_namespace_together_agree_on_its_token() {
    for round in 0..60 {
        let ns = common::unique_ns(&format!("agree{round}"));
        let mut handles = Vec::new();
        for _ in 0..4 {
            handles.push(two(&ns).await);
        }
        // Eight writes at once from each handle: each asks for the token.
        let keys: Vec<(usize, String)> = (0..handles.len())
            .flat_map(|h| (0..8).map(move |k| (h, format!("h{h}k{k}"))))
            .collect();
        let writes = keys.iter().map(|(h, k)| {
            let h = handles[*h].clone();
            async move { h.set(k, b"v", None).await.unwrap() }
        });
        futures::future::join_all(writes).await;
        for (j, h) in handles.iter().enumerate() {
            for (i, k) in &keys {
                let got = h.get(k).await.unwrap();
                assert!(
                    got.is_some(),
                    "round {round}: handle {j} does not see {k}, written by handle {i}"
                );
            }
        }
    }
}

/// A memcached of this test's own, so that it can be frozen (SIGSTOP);
/// resumed and killed on drop.
struct Freezable {
    child: std::process::Child,
    port: u16,
}

impl Freezable {
    fn start() -> Self {
        let port = servers::free_port(false);
        let mut cmd = std::process::Command::new("memcached");
        cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
            .args(["-m", "64", "-t", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        let s = Freezable {
            child: cmd.spawn().expect("memcached installed"),
            port,
        };
        let t = Instant::now();
        while !servers::memcached_ready(port) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "memcached did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn signal(&self, sig: libc::c_int) {
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// SIGSTOP, then waits until every thread has stopped (a stop signal
    /// reaches a process's threads asynchronously).
    fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.child.id());
        let t = Instant::now();
        while !all_stopped(&tasks) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "memcached did not stop"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Whether every thread under `/proc/PID/task` is in state `T` (stopped).
fn all_stopped(tasks: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(tasks) else {
        return false;
    };
    dir.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
            .unwrap_or(false)
    })
}

impl Drop for Freezable {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes waiting in the receive queues of the server's side of its
/// loopback connections (`/proc/net/tcp`: local port `port`, `rx_queue`).
fn server_recv_queued(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let rx = u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()?;
            (local_port == port && f.get(3) == Some(&"01")).then_some(rx)
        })
        .sum()
}

#[test]
fn requests_from_many_tasks_go_out_together_and_each_gets_its_own_reply() {
    const TASKS: usize = 40;
    let m = Freezable::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c: Arc<dyn Cache> = unicache::open(&format!(
            "memcached://127.0.0.1:{}?namespace=pipe&response_timeout=20s",
            m.port
        ))
        .await
        .unwrap()
        .into();
        let keys: Vec<String> = (0..TASKS).map(|i| format!("key{i}")).collect();
        let vals: Vec<String> = (0..TASKS)
            .map(|i| format!("value-{i}-{}", "x".repeat(i)))
            .collect();
        c.set_many(&common::entries(&keys, &vals), None)
            .await
            .unwrap();
        // Every connection is open now; freeze the server and ask from
        // TASKS tasks at once.
        m.freeze();
        let asked: Vec<_> = keys
            .iter()
            .map(|k| {
                let (c, k) = (c.clone(), k.clone());
                tokio::spawn(async move { c.get(&k).await })
            })
            .collect();
        // Each request reaches the server without waiting for another's
        // reply: all of them wait in the frozen server's sockets, not just
        // one per pooled connection.
        let one = format!("mg {}:key0 v\r\n", "pipe").len() as u64;
        let t = Instant::now();
        while server_recv_queued(m.port) < one * TASKS as u64 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "only {} bytes reached the server, {} requests' worth",
                server_recv_queued(m.port),
                server_recv_queued(m.port) / one
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        m.signal(libc::SIGCONT);
        // Replies are matched by order: every task gets its own value.
        for (i, a) in asked.into_iter().enumerate() {
            let got = a.await.unwrap().unwrap();
            assert_eq!(got.as_deref(), Some(vals[i].as_bytes()), "task {i}");
        }
    });
}

#[test]
fn big_requests_that_fill_the_socket_share_the_connection_with_small_ones() {
    const WRITERS: usize = 6;
    const VALUES: usize = 10;
    let m = Freezable::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c: Arc<dyn Cache> =
            unicache::open(&format!("memcached://127.0.0.1:{}?namespace=big", m.port))
                .await
                .unwrap()
                .into();
        c.set("small", b"s", None).await.unwrap();
        // Each writer's batch (2.5 MB) is more than a socket takes at once,
        // so it is written in parts while small gets queue behind it.
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let c = c.clone();
                tokio::spawn(async move {
                    let keys: Vec<String> = (0..VALUES).map(|i| format!("w{w}:{i}")).collect();
                    let vals: Vec<Vec<u8>> = (0..VALUES)
                        .map(|i| vec![(w * VALUES + i) as u8; 256 * 1024])
                        .collect();
                    c.set_many(&common::entries(&keys, &vals), None)
                        .await
                        .unwrap();
                    let got = c
                        .get_many(&keys.iter().map(String::as_str).collect::<Vec<_>>())
                        .await
                        .unwrap();
                    for (i, g) in got.iter().enumerate() {
                        assert_eq!(g.as_deref(), Some(&vals[i][..]), "writer {w} value {i}");
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        assert_eq!(c.get("small").await.unwrap().as_deref(), Some(&b"s"[..]));
                    }
                })
            })
            .collect();
        for t in writers.into_iter().chain(readers) {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .unwrap()
                .unwrap();
        }
    });
}

#[test]
fn frozen_server_fails_fast_after_one_timeout_and_is_used_again_when_it_answers() {
    let m = Freezable::start();
    let addr = format!("127.0.0.1:{}", m.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!(
            "memcached://{addr}?namespace=frz&response_timeout=1s&connect_timeout=500ms"
        ))
        .await
        .unwrap();
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        let vals: Vec<String> = (0..200).map(|i| format!("v{i}")).collect();
        let entries = common::entries(&keys, &vals);
        c.set_many(&entries, None).await.unwrap();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        m.freeze();
        // The first call waits the response timeout (its replies, if they
        // ever come, must not be read as another request's).
        let t = Instant::now();
        let got = c.get_many(&refs[..100]).await.unwrap();
        assert!(got.iter().all(Option::is_none));
        let first = t.elapsed();
        assert!(
            first >= Duration::from_millis(900) && first < Duration::from_secs(3),
            "{first:?}"
        );
        // Then it is marked down: ten more batches fail at once, naming it.
        let t = Instant::now();
        for _ in 0..10 {
            let e = c.set_many(&entries[..100], None).await.unwrap_err();
            let first_failure = e
                .failures()
                .first()
                .map(|(_, e)| e.to_string())
                .unwrap_or_else(|| e.to_string());
            assert!(
                first_failure.contains(&addr) && first_failure.contains("marked down"),
                "{first_failure}"
            );
            assert!(first_failure.contains("not answering"), "{first_failure}");
        }
        assert!(c.set("one", b"x", None).await.is_err());
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
        // Down for over 5 s: permanent (the writer stops retrying), saying
        // for how long; the probe due first waits out its timeout once.
        tokio::time::sleep(Duration::from_millis(5100)).await;
        for _ in 0..2 {
            let e = c.set("one", b"x", None).await.unwrap_err();
            assert_eq!(e.kind(), unicache::ErrorKind::Backend, "{e}");
            assert!(e.to_string().contains("(not answering for "), "{e}");
        }
        // Resumed: probed within a second, then used as before.
        m.signal(libc::SIGCONT);
        let t = Instant::now();
        while c.set("after", b"yes", None).await.is_err() {
            assert!(t.elapsed() < Duration::from_secs(5), "never used again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = c.get_many(&refs).await.unwrap();
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v.as_deref(), Some(vals[i].as_bytes()), "key {i}");
        }
        assert_eq!(c.get("after").await.unwrap().as_deref(), Some(&b"yes"[..]));
    });
}

#[test]
fn cli_write_to_a_server_frozen_mid_run_ends_fast_with_every_record_accounted() {
    let m = Freezable::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let n = 100_000;
    let body: String = (0..n).map(|i| format!("{{\"key\":\"f{i}\"}}\n")).collect();
    std::fs::write(&input, body).unwrap();
    let summary = dir.path().join("s.json");
    let url = format!("memcached://127.0.0.1:{}?response_timeout=1s", m.port);
    let child = common::spawn_write(&input, &url, 20, &summary, std::process::Stdio::null());
    let mut child = ChildGuard(child);
    let t = Instant::now();
    while items(m.port) < 1_000 {
        assert!(t.elapsed() < Duration::from_secs(30), "write did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    m.freeze();
    let t = Instant::now();
    // Each of thousands of batches used to wait out its timeout and retries.
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "still writing after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("write ended {:?} after the freeze", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(1));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let (written, failed) = (
        s["records_written"].as_u64().unwrap(),
        s["records_failed"].as_u64().unwrap(),
    );
    assert_eq!(written + failed, n, "{s}");
    assert!(failed > 0, "{s}");
}

/// The server's `curr_items` (0 when it does not answer).
fn items(port: u16) -> u64 {
    ask(port, "stats\r\n")
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("STAT curr_items ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Kills the child on drop (a failed assertion must not leave it running).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP server that is not memcached (real memcached never sends garbage):
/// answers `stats settings` properly when `sane_stats`, anything else with
/// `reply`. Counts connections; stops (and closes them) on drop.
struct FakeServer {
    port: u16,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    fn start(reply: &'static [u8], sane_stats: bool) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (acc, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<std::net::TcpStream> = Vec::new();
            while !st.load(Ordering::Relaxed) {
                if let Ok((s, _)) = l.accept() {
                    s.set_nonblocking(true).unwrap();
                    acc.fetch_add(1, Ordering::Relaxed);
                    conns.push(s);
                }
                let mut buf = [0u8; 4096];
                conns.retain_mut(|s| match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => {
                        let answer: &[u8] = if sane_stats && buf[..n].starts_with(b"stats settings")
                        {
                            b"STAT item_size_max 1048576\r\nEND\r\n"
                        } else {
                            reply
                        };
                        s.write_all(answer).is_ok()
                    }
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        FakeServer {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_server_answering_garbage_is_a_protocol_error_naming_it_not_a_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Garbage from the first request on: open fails at once.
        let http = FakeServer::start(b"HTTP/1.1 400 Bad Request\r\n\r\n", false);
        let t = Instant::now();
        let e = unicache::open(&format!(
            "memcached://127.0.0.1:{}?response_timeout=20s",
            http.port
        ))
        .await
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(e.kind(), unicache::ErrorKind::Backend, "{e}");
        let want = format!(
            "unexpected reply from 127.0.0.1:{}: HTTP/1.1 400 Bad Request\\r\\n",
            http.port
        );
        assert!(e.to_string().contains(&want), "{e}");
        // Garbage without a newline after a sane open: each call fails at
        // once, on a new connection (a connection that sent garbage is dropped).
        let junk = FakeServer::start(b"\x00\xffjunk", true);
        let c = unicache::open(&format!(
            "memcached://127.0.0.1:{}?response_timeout=20s",
            junk.port
        ))
        .await
        .unwrap();
        let t = Instant::now();
        for _ in 0..4 {
            let e = c.set("k", b"v", None).await.unwrap_err();
            assert_eq!(e.kind(), unicache::ErrorKind::Backend, "{e}");
            let want = format!(
                "unexpected reply from 127.0.0.1:{}: \\x00\\xffjunk",
                junk.port
            );
            assert!(e.to_string().contains(&want), "{e}");
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // Two pooled connections: the open's is used (and dropped) by the
        // second call; every other call needs a new one. Reused: only 2.
        assert_eq!(junk.accepted.load(std::sync::atomic::Ordering::Relaxed), 4);
        // Reads fail too, never a miss: absence is an answer the server
        // did not give (a down server's keys are misses; this one answers).
        let e = c.get("k").await.unwrap_err();
        assert!(e.to_string().contains("unexpected reply from"), "{e}");
        let e = c.get_many(&["a", "b"]).await.unwrap_err();
        assert!(e.to_string().contains("unexpected reply from"), "{e}");
        assert!(c.stats().await.unwrap().errors >= 6);
        // And so do the atomic operations, fast and never as an answer.
        let t = Instant::now();
        let errors = [
            c.get_with_ttl("k").await.unwrap_err(),
            c.get_many_with_ttl(&["a", "b"]).await.unwrap_err(),
            c.incr("n", 1).await.unwrap_err(),
            c.incr("n", -1).await.unwrap_err(),
            c.add("a", b"v", None).await.unwrap_err(),
            c.touch("a", None).await.unwrap_err(),
            c.ttl("a").await.unwrap_err(),
        ];
        for e in errors {
            assert!(e.to_string().contains("unexpected reply from"), "{e}");
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    });
}

#[test]
fn huge_timeouts_do_not_overflow() {
    let m = servers::memcached_server();
    let huge = u64::MAX;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!(
            "memcached://127.0.0.1:{}?namespace=huge&connect_timeout={huge}&response_timeout={huge}",
            m.port
        );
        let c = unicache::open(&url).await.unwrap();
        c.set("k", b"v", Some(Duration::MAX)).await.unwrap();
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert!(c.stats().await.is_ok());
        // Zero would time every call out: refused, naming the options.
        let e = unicache::open(&format!("memcached://127.0.0.1:{}?response_timeout=0", m.port))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("response_timeout"), "{e}");
    });
    // Through the CLI too (a panic would exit 101).
    let out = unicache()
        .args(["set", "--cache"])
        .arg(format!(
            "memcached://127.0.0.1:{}?response_timeout={huge}&connect_timeout={huge}",
            m.port
        ))
        .args(["big", "v"])
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
}

#[test]
fn a_call_cancelled_mid_reply_leaves_no_reply_for_the_next_one() {
    let m = Freezable::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!("memcached://127.0.0.1:{}", m.port))
            .await
            .unwrap();
        let keys: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
        c.set_many(&entries, None).await.unwrap();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        // A caller gives up (drops the future) while the server is frozen;
        // the server answers that request once resumed.
        m.freeze();
        let cancelled =
            tokio::time::timeout(Duration::from_millis(300), c.get_many(&refs[..50])).await;
        assert!(cancelled.is_err());
        m.signal(libc::SIGCONT);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Every pooled connection is used in turn: none may hold those replies.
        for _ in 0..4 {
            let got = c.get_many(&refs[50..]).await.unwrap();
            for (i, v) in got.iter().enumerate() {
                assert_eq!(v.as_deref(), Some(refs[50 + i].as_bytes()));
            }
        }
        assert_eq!(c.stats().await.unwrap().errors, 0);
    });
}

#[test]
fn one_probe_at_a_time_waits_on_a_frozen_server() {
    let m = Freezable::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!(
            "memcached://127.0.0.1:{}?response_timeout=2s",
            m.port
        ))
        .await
        .unwrap();
        m.freeze();
        assert!(c.set("a", b"1", None).await.is_err());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // A probe is due: this call takes it and waits out its timeout...
        let probe = {
            let c = c.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let r = c.set("b", b"2", None).await;
                (r.is_err(), t.elapsed())
            })
        };
        // ...and while it waits, a second later, nobody else waits.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let t = Instant::now();
        assert!(c.set("c", b"3", None).await.is_err());
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        let (failed, took) = probe.await.unwrap();
        assert!(failed && took >= Duration::from_millis(1900), "{took:?}");
    });
}

#[test]
fn timeouts_ending_near_the_clocks_limit_do_not_overflow() {
    let m = servers::memcached_server();
    // Instant is CLOCK_MONOTONIC; a deadline right at its i64 limit once
    // made the timer's rounding overflow.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let rt = tokio::runtime::Runtime::new().unwrap();
    for back in [0i64, 1, 2, 3] {
        let d = (i64::MAX - ts.tv_sec - back) as u64;
        rt.block_on(async {
            let url = format!(
                "memcached://127.0.0.1:{}?connect_timeout={d}&response_timeout={d}",
                m.port
            );
            let c = unicache::open(&url).await.unwrap();
            c.set("k", b"v", None).await.unwrap();
            assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        });
    }
}

#[test]
fn a_restarted_server_is_used_at_once_through_new_connections() {
    let mut m = servers::memcached_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!("memcached://127.0.0.1:{}", m.port))
            .await
            .unwrap();
        // Both pooled connections in use once.
        c.set("a", b"1", None).await.unwrap();
        c.set("b", b"2", None).await.unwrap();
        m.restart(servers::memcached_ready);
        // Each pooled connection is now closed by the old process: each call
        // replaces its one instead of failing and marking the server down.
        for k in ["c", "d", "e"] {
            c.set(k, k.as_bytes(), None).await.unwrap();
        }
        assert_eq!(c.get("c").await.unwrap().as_deref(), Some(&b"c"[..]));
        assert_eq!(c.get("a").await.unwrap(), None);
        assert_eq!(c.stats().await.unwrap().errors, 0);
    });
}

/// How many increments the cross-process test makes in all.
const CROSS_INCRS: i64 = 2000;
/// Processes of the cross-process test, and tasks in each.
const PROCS: i64 = 4;
const TASKS: i64 = 4;

/// Child of `concurrent_incr_from_four_processes_ends_exact`: opens its own
/// cache from `UC_INCR_URL` and makes `UC_INCR_N` `incr(KEY, 1)` from
/// [`TASKS`] concurrent tasks. Does nothing without its environment.
#[test]
#[ignore]
fn incr_child() {
    let (Ok(url), Ok(key), Ok(n)) = (
        std::env::var("UC_INCR_URL"),
        std::env::var("UC_INCR_KEY"),
        std::env::var("UC_INCR_N"),
    ) else {
        return;
    };
    let n: i64 = n.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&url).await.unwrap();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (c, key) = (c.clone(), key.clone());
                tokio::spawn(async move {
                    for _ in 0..n / TASKS {
                        c.incr(&key, 1).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Waits for `child` at most until `deadline`, killing it then.
fn wait_until(mut child: std::process::Child, deadline: Instant) -> std::process::Output {
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Four processes, each with its own cache and four tasks, increment one
/// key: the count is exact, from a missing key (`ma` with autovivify racing
/// to create it) and from a negative start (the compare-and-set path across
/// processes, then `ma` once the counter passes zero while other processes
/// may still be in their CAS loop). Read back with a plain text `get`.
#[test]
fn concurrent_incr_from_four_processes_ends_exact() {
    let m = servers::memcached_server();
    let url = format!("memcached://127.0.0.1:{}", m.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(unicache::open(&url)).unwrap();
    for (key, start) in [("fresh", None), ("negative", Some(-CROSS_INCRS / 2))] {
        if let Some(s) = start {
            rt.block_on(c.set(key, s.to_string().as_bytes(), None))
                .unwrap();
        }
        let env = [
            ("UC_INCR_URL", url.clone()),
            ("UC_INCR_KEY", key.to_string()),
            ("UC_INCR_N", (CROSS_INCRS / PROCS).to_string()),
        ];
        let children: Vec<_> = (0..PROCS)
            .map(|_| common::spawn_self("incr_child", &env))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        for child in children {
            let out = wait_until(child, deadline);
            common::assert_exit(&out, 0);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("1 passed"), "the child ran: {stdout}");
        }
        let want = start.unwrap_or(0) + CROSS_INCRS;
        let got = rt.block_on(c.get(key)).unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want.to_string(), "{key}");
        let raw = ask(m.port, &format!("get {key}\r\n")).unwrap();
        assert!(raw.contains(&format!("\r\n{want}\r\n")), "{raw}");
    }
}

/// The compare-and-set path keeps the TTL; overflows are refused before
/// anything is written (the stored value is left as it was); memcached's own
/// space-padded decrement result is not a counter in the one grammar every
/// backend shares (Redis's) and is left as it was too.
#[test]
fn incr_paths_keep_ttl_and_leave_failures_unchanged() {
    let m = servers::memcached_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!("memcached://127.0.0.1:{}?ttl=1h", m.port))
            .await
            .unwrap();
        c.set("neg", b"-5", Some(Duration::from_secs(100)))
            .await
            .unwrap();
        assert_eq!(c.incr("neg", 1).await.unwrap(), -4);
        assert_eq!(c.incr("neg", 10).await.unwrap(), 6, "through zero");
        assert_eq!(c.incr("neg", -2).await.unwrap(), 4, "CAS path, positive");
        let t = c.ttl("neg").await.unwrap().unwrap().unwrap();
        assert!(
            t > Duration::from_secs(90) && t <= Duration::from_secs(100),
            "{t:?}"
        );
        // A key created by incr gets the default TTL (1 h), on either path.
        c.incr("up", 1).await.unwrap();
        c.incr("down", -1).await.unwrap();
        for k in ["up", "down"] {
            let t = c.ttl(k).await.unwrap().unwrap().unwrap();
            assert!(t > Duration::from_secs(3590), "{k}: {t:?}");
        }
        // Values ma would wrap or push past i64::MAX: an error, value unchanged.
        for (stored, delta) in [
            ("18446744073709551615", 1),
            ("9223372036854775807", 1),
            ("9223372036854775808", 0),
            ("18446744073709551615", i64::MAX),
        ] {
            c.set("big", stored.as_bytes(), None).await.unwrap();
            let e = c.incr("big", delta).await.unwrap_err();
            assert_eq!(e.kind(), unicache::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("big"), "{e}");
            let raw = ask(m.port, "get big\r\n").unwrap();
            assert!(
                raw.contains(&format!("\r\n{stored}\r\n")),
                "{stored}: {raw}"
            );
        }
        // memcached's own decr pads a shorter number with spaces: "9 ".
        ask(m.port, "set pad 0 0 2\r\n10\r\n").unwrap();
        assert!(ask(m.port, "decr pad 1\r\n").unwrap().starts_with('9'));
        let e = c.incr("pad", -10).await.unwrap_err();
        assert_eq!(e.kind(), unicache::ErrorKind::InvalidInput, "{e}");
        assert_eq!(c.get("pad").await.unwrap().as_deref(), Some(&b"9 "[..]));
    });
}

/// Sets `k0..k59` one by one on `c`: the keys that stored (their server is
/// up) and the errors of those that did not, each within `fast`.
async fn set_each(c: &dyn Cache, tag: &str, fast: Duration) -> (Vec<String>, Vec<unicache::Error>) {
    let (mut stored, mut failed) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let k = format!("k{i}");
        let t = Instant::now();
        let r = c.set(&k, tag.as_bytes(), None).await;
        assert!(t.elapsed() < fast, "set {k} took {:?}", t.elapsed());
        match r {
            Ok(()) => stored.push(k),
            Err(e) => failed.push(e),
        }
    }
    (stored, failed)
}

/// One of two servers is down before open (killed, then frozen with
/// SIGSTOP): open succeeds with the other and marks it down. Keys hashed to
/// the live server are stored and read back, in a namespace (whose version
/// token every server keeps a copy of, so the dead one's copy is not
/// needed); keys hashed to the dead one fail at once naming it (reads are
/// misses); once it is back it is used again. Both servers down: open
/// fails, naming the problem. Before, open failed whenever either was down.
#[test]
fn open_succeeds_with_one_of_two_servers_down_and_uses_it_when_back() {
    let mut dead = servers::memcached_server();
    let live = servers::memcached_server();
    let dead_addr = format!("127.0.0.1:{}", dead.port);
    let url = |ns: &str| {
        format!(
            "memcached://{dead_addr},127.0.0.1:{}?namespace={ns}&connect_timeout=500ms&response_timeout=1s",
            live.port
        )
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Both up: the namespace's token is on both.
        let c = unicache::open(&url("half")).await.unwrap();
        c.set("before", b"1", None).await.unwrap();
        drop(c);
        dead.kill();
        let t = Instant::now();
        let c = unicache::open(&url("half")).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let (stored, failed) = set_each(&*c, "down", Duration::from_millis(900)).await;
        assert!(
            stored.len() >= 10 && failed.len() >= 10,
            "{stored:?} {failed:?}"
        );
        for e in &failed {
            let msg = e.to_string();
            assert!(msg.contains(&dead_addr), "{msg}");
        }
        for k in &stored {
            assert_eq!(
                c.get(k).await.unwrap().as_deref(),
                Some(&b"down"[..]),
                "{k}"
            );
        }
        let all: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let got = c.get_many(&refs).await.unwrap();
        assert_eq!(got.iter().filter(|v| v.is_some()).count(), stored.len());
        // A fresh namespace, first used while a server is down, works too.
        let fresh = unicache::open(&url("fresh")).await.unwrap();
        let (s2, _) = set_each(&*fresh, "f", Duration::from_millis(900)).await;
        assert!(!s2.is_empty());
        assert_eq!(fresh.get(&s2[0]).await.unwrap().as_deref(), Some(&b"f"[..]));

        // Back (empty, restarted): probed within a second, then used again;
        // the namespace keeps its token (from the live server's copy).
        dead.restart(servers::memcached_ready);
        let t = Instant::now();
        loop {
            let (s, f) = set_each(&*c, "back", Duration::from_secs(3)).await;
            if f.is_empty() {
                assert_eq!(s.len(), 60);
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "never used again: {f:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let got = c.get_many(&refs).await.unwrap();
        assert!(
            got.iter().all(|v| v.as_deref() == Some(&b"back"[..])),
            "{got:?}"
        );

        // Both down: open fails, naming a server.
        dead.kill();
        let e = unicache::open(&format!(
            "memcached://{dead_addr},{dead_addr}?connect_timeout=500ms"
        ))
        .await
        .unwrap_err();
        assert!(e.to_string().contains(&dead_addr), "{e}");
    });
}

/// A frozen (SIGSTOPped) server at open costs one response timeout, not a
/// failed open; its keys then fail at once, `clear_all` flushes the other
/// server and names it (it stopped at the first failing server before), and
/// it is used again once resumed.
#[test]
fn open_succeeds_with_one_of_two_servers_frozen() {
    let frozen = Freezable::start();
    let live = servers::memcached_server();
    let frozen_addr = format!("127.0.0.1:{}", frozen.port);
    let url = format!(
        "memcached://{frozen_addr},127.0.0.1:{}?namespace=frozen&connect_timeout=500ms&response_timeout=1s",
        live.port
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        frozen.freeze();
        let t = Instant::now();
        let c = unicache::open(&url).await.unwrap();
        let took = t.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
        // Fail fast: at most one probe (1 s) while the loop runs.
        let t = Instant::now();
        let (stored, failed) = set_each(&*c, "v", Duration::from_millis(1500)).await;
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(
            stored.len() >= 10 && failed.len() >= 10,
            "{stored:?} {failed:?}"
        );
        for e in &failed {
            let msg = e.to_string();
            assert!(
                msg.contains(&frozen_addr) && msg.contains("not answering"),
                "{msg}"
            );
        }
        assert_eq!(c.get(&stored[0]).await.unwrap().as_deref(), Some(&b"v"[..]));
        // clear_all flushes the live server and names the frozen one.
        let e = c.clear_all().await.unwrap_err();
        assert!(e.to_string().contains(&frozen_addr), "{e}");
        assert_eq!(c.get(&stored[0]).await.unwrap(), None);
        frozen.signal(libc::SIGCONT);
        let t = Instant::now();
        loop {
            let (_, f) = set_each(&*c, "w", Duration::from_secs(3)).await;
            if f.is_empty() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(6),
                "never used again: {f:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(c.get("k0").await.unwrap().as_deref(), Some(&b"w"[..]));
    });
}

/// A server killed under running caches takes only its own keys: in each of
/// eight namespaces (whose version tokens, before, lived on one server each,
/// so about half the namespaces lost every key with it) the keys hashed to
/// the live server are still stored and read once the token is read again.
/// `clear_all` flushes the live server although the dead one is listed
/// first (it stopped at the first failure before) and names the dead one.
#[test]
fn a_dead_server_takes_only_its_own_keys_in_every_namespace() {
    let mut dead = servers::memcached_server();
    let live = servers::memcached_server();
    let dead_addr = format!("127.0.0.1:{}", dead.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut caches = Vec::new();
        for n in 0..8 {
            let c = unicache::open(&format!(
                "memcached://{dead_addr},127.0.0.1:{}?namespace=tok{n}&connect_timeout=500ms&response_timeout=1s",
                live.port
            ))
            .await
            .unwrap();
            let (_, failed) = set_each(&*c, "both", Duration::from_secs(2)).await;
            assert!(failed.is_empty(), "{failed:?}");
            caches.push(c);
        }
        dead.kill();
        // Past the 1 s a namespace's token is cached for: read again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for (n, c) in caches.iter().enumerate() {
            let (stored, failed) = set_each(&**c, "one", Duration::from_millis(900)).await;
            assert!(
                stored.len() >= 10 && failed.len() >= 10,
                "namespace tok{n}: {} stored, {} failed, first: {:?}",
                stored.len(),
                failed.len(),
                failed.first().map(ToString::to_string)
            );
            for k in &stored {
                assert_eq!(c.get(k).await.unwrap().as_deref(), Some(&b"one"[..]), "tok{n} {k}");
            }
        }
        // delete_many deletes the live server's keys and lists the dead
        // one's as failures (it failed whole before, the count lost).
        let all: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (stored, _) = set_each(&*caches[1], "del", Duration::from_millis(900)).await;
        let e = caches[1].delete_many(&refs).await.unwrap_err();
        assert_eq!(e.kind(), unicache::ErrorKind::PartialBatch, "{e}");
        assert_eq!(e.failures().len(), 60 - stored.len(), "{e}");
        assert!(
            e.failures().iter().all(|(i, f)| !stored.contains(&all[*i])
                && f.to_string().contains(&dead_addr)),
            "{e}"
        );
        assert_eq!(e.context("deleted"), Some(stored.len().to_string().as_str()));
        assert_eq!(caches[1].get(&stored[0]).await.unwrap(), None);
        let kept = {
            let (stored, _) = set_each(&*caches[0], "kept", Duration::from_millis(900)).await;
            stored[0].clone()
        };
        let e = caches[0].clear_all().await.unwrap_err();
        assert!(e.to_string().contains(&dead_addr), "{e}");
        assert_eq!(caches[0].get(&kept).await.unwrap(), None, "live server not flushed");
    });
}
