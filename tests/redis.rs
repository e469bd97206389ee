//! Redis: the conformance suite on a real redis-server and on a real
//! 3-master Redis Cluster, the CLI against them, and a server restart in the
//! middle of a bulk write. Servers are started by `common::servers`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::servers::{self, calls, redis_cli, shared_cluster, shared_redis};
use common::{stderr, unicache};
use unicache::Cache;

async fn single(ns: &str) -> Arc<dyn Cache> {
    let port = shared_redis().port;
    unicache::open(&format!("redis://127.0.0.1:{port}?namespace={ns}"))
        .await
        .unwrap()
        .into()
}

async fn cluster(ns: &str) -> Arc<dyn Cache> {
    let url = shared_cluster().url();
    unicache::open(&format!("{url}?namespace={ns}"))
        .await
        .unwrap()
        .into()
}

conformance_suite!(redis_single, single, 16);
conformance_suite!(redis_cluster, cluster, 8);

#[test]
fn cli_write_then_redis_cli_reads_it_and_clear_spares_foreign_keys() {
    let port = shared_redis().port;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"key\":\"user:1\",\"name\":\"Ada\"}\n{\"key\":\"user:2\",\"name\":\"Grace\"}\n",
    )
    .unwrap();
    let url = format!("redis://127.0.0.1:{port}?namespace=clitest");
    let out = unicache()
        .args(["write", "-q", "--input"])
        .arg(&input)
        .args(["--cache", &url, "--output"])
        .arg(dir.path().join("s.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        redis_cli(port, &["GET", "clitest:user:1"]),
        r#"{"key":"user:1","name":"Ada"}"#
    );

    // Someone else's key, outside the namespace.
    redis_cli(port, &["SET", "foreign", "keep me"]);
    let out = unicache()
        .args(["clear", "--cache", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(redis_cli(port, &["EXISTS", "clitest:user:1"]), "0");
    assert_eq!(redis_cli(port, &["GET", "foreign"]), "keep me");

    // Without a namespace a plain clear refuses and points at --all.
    let bare = format!("redis://127.0.0.1:{port}");
    let out = unicache()
        .args(["clear", "--cache", &bare])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--all"), "{}", stderr(&out));
    assert_eq!(redis_cli(port, &["GET", "foreign"]), "keep me");

    // Stats include the server's own figures.
    let out = unicache()
        .args(["stats", "--cache", &url])
        .output()
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        s["server"]["redis_version"]
            .as_str()
            .unwrap()
            .starts_with('7'),
        "{s}"
    );
    assert!(s["server"]["keyspace_hits"].is_u64());
}

#[test]
fn clear_all_flushes_a_database_by_name() {
    let server = servers::redis_server();
    let url = format!("redis://127.0.0.1:{}/3", server.port);
    redis_cli(server.port, &["-n", "3", "SET", "x", "1"]);
    redis_cli(server.port, &["-n", "0", "SET", "other_db", "1"]);
    let out = unicache()
        .args(["clear", "--all", "--cache", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(redis_cli(server.port, &["-n", "3", "DBSIZE"]), "0");
    assert_eq!(redis_cli(server.port, &["-n", "0", "GET", "other_db"]), "1");
}

#[test]
fn unreachable_server_is_a_clear_error_within_the_timeout_without_password() {
    let port = servers::free_port(false);
    let t = Instant::now();
    let out = unicache()
        .args([
            "get",
            "--cache",
            &format!("redis://user:s3cret@127.0.0.1:{port}?connect_timeout=1s"),
            "k",
        ])
        .output()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
}

#[test]
fn cluster_spreads_keys_over_every_master_and_batches_span_slots() {
    let c = shared_cluster();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cache = cluster("spread").await;
        let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        cache.set_many(&entries, None).await.unwrap();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert!(
            cache
                .get_many(&refs)
                .await
                .unwrap()
                .iter()
                .all(|v| v.is_some())
        );
        assert_eq!(cache.len().await.unwrap(), 3000);
        for n in &c.nodes {
            let here: u64 = redis_cli(n.port, &["DBSIZE"]).parse().unwrap();
            assert!(here > 500, "node {} holds only {here} keys", n.port);
        }
        cache.clear().await.unwrap();
        assert_eq!(cache.len().await.unwrap(), 0);
    });
}

#[test]
fn restart_during_bulk_write_loses_nothing() {
    let mut server = servers::redis_server();
    let port = server.port;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, common::padded_jsonl("r", 200_000)).unwrap();
    let summary = dir.path().join("s.json");
    let url = format!("redis://127.0.0.1:{port}?namespace=fault&response_timeout=2s");
    let child = common::spawn_write(&input, &url, 500, &summary, std::process::Stdio::piped());
    // Let it get going, then kill the server and bring it back (empty).
    let t = Instant::now();
    while redis_cli(port, &["DBSIZE"]).parse::<u64>().unwrap_or(0) < 20_000 {
        assert!(t.elapsed() < Duration::from_secs(30), "write did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    server.restart(servers::redis_ready);
    let out = child.wait_with_output().unwrap();
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let written = s["targets"][0]["written"].as_u64().unwrap();
    let failed = s["targets"][0]["failed"].as_u64().unwrap();
    assert_eq!(written + failed, 200_000, "{s}");
    assert!(
        s["targets"][0]["retries"].as_u64().unwrap() >= 1,
        "no retry seen: {s}"
    );
    // The restarted server is empty: what it holds is exactly what was written after the restart.
    let held: u64 = redis_cli(port, &["DBSIZE"]).parse().unwrap();
    assert!(
        held > 0 && held <= written,
        "held {held}, written {written}"
    );
    assert_eq!(
        out.status.code(),
        Some(if failed == 0 { 0 } else { 1 }),
        "{}",
        stderr(&out)
    );
}

#[test]
fn reads_during_an_outage_are_errors_and_the_connection_comes_back() {
    use futures::StreamExt;
    let mut server = servers::redis_server();
    let port = server.port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!(
            "redis://127.0.0.1:{port}?namespace=outage&connect_timeout=1s&response_timeout=1s"
        ))
        .await
        .unwrap();
        c.set("k", b"v", None).await.unwrap();
        assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        // Node-wide commands keep their connections between calls...
        assert_eq!(c.len().await.unwrap(), 1);
        c.stats().await.unwrap();

        server.kill();
        // Neither a hit nor a miss: an error, naming the server.
        let e = c.get("k").await.unwrap_err();
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(c.get_many(&["k", "other"]).await.is_err());
        assert!(c.contains("k").await.is_err());

        server.restart(servers::redis_ready);
        // The connection comes back by itself (the server restarted empty).
        let t = Instant::now();
        while let Err(e) = c.set("k2", b"w", None).await {
            assert!(t.elapsed() < Duration::from_secs(15), "no reconnect: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(c.get("k2").await.unwrap().as_deref(), Some(&b"w"[..]));
        assert_eq!(c.get("k").await.unwrap(), None);

        // ...and replace them, first time, once the server is back.
        assert_eq!(c.len().await.unwrap(), 1);
        assert_eq!(c.keys().await.unwrap().collect::<Vec<_>>().await.len(), 1);
        let s = c.stats().await.unwrap();
        assert_eq!((s.hits, s.misses), (2, 1), "{s:?}");
        assert!(s.errors >= 3, "{s:?}");

        // A restart between two node-wide calls, with nothing in between to
        // notice it: the kept connection is dead, the call still succeeds.
        server.restart(servers::redis_ready);
        assert_eq!(c.len().await.unwrap(), 0);
        server.restart(servers::redis_ready);
        assert!(c.keys().await.unwrap().collect::<Vec<_>>().await.is_empty());
    });
}

#[test]
fn single_gets_with_auth_and_a_database_number() {
    // Single GETs take the backend's own plain connection; it must log in and
    // select the database like the main one.
    let server = servers::redis_auth_server();
    let pw = servers::REDIS_PASSWORD;
    let url = format!("redis://default:{pw}@127.0.0.1:{}/3", server.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&url).await.unwrap();
        c.set("k", b"in-db-3", None).await.unwrap();
        for _ in 0..3 {
            assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"in-db-3"[..]));
            assert_eq!(c.get("absent").await.unwrap(), None);
        }
        // Those GETs went over the plain connection (logged in, in db 3),
        // while the main one's last command is still the SET.
        let clients = redis_cli(server.port, &["-a", pw, "CLIENT", "LIST"]);
        let last = |cmd: &str| {
            clients
                .lines()
                .any(|l| l.contains(" db=3 ") && l.contains(&format!(" cmd={cmd} ")))
        };
        // The SET's pipeline ends with its invalidation message, or with a
        // count of who would hear it (PUBSUB NUMSUB) when nobody listened.
        assert!(
            last("get") && (last("publish") || last("pubsub|numsub")),
            "{clients}"
        );
        let s = c.stats().await.unwrap();
        assert_eq!((s.hits, s.misses, s.errors), (3, 3, 0), "{s:?}");
    });
    let in_db3 = redis_cli(server.port, &["-a", pw, "-n", "3", "GET", "k"]);
    assert_eq!(in_db3, "in-db-3");
    let in_db0 = redis_cli(server.port, &["-a", pw, "-n", "0", "GET", "k"]);
    assert_eq!(in_db0, "");
}

#[test]
fn a_get_cancelled_mid_reply_never_answers_the_next_get() {
    let server = servers::redis_server();
    let port = server.port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!("redis://127.0.0.1:{port}"))
            .await
            .unwrap();
        c.set("first", b"1", None).await.unwrap();
        c.set("second", b"2", None).await.unwrap();
        assert_eq!(c.get("first").await.unwrap().as_deref(), Some(&b"1"[..]));
        // The server holds every client's commands for 300 ms: the GET below
        // is written, then abandoned before its reply comes.
        redis_cli(port, &["CLIENT", "PAUSE", "300", "ALL"]);
        let r = tokio::time::timeout(Duration::from_millis(50), c.get("first")).await;
        assert!(r.is_err(), "the paused GET answered: {r:?}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        for _ in 0..3 {
            assert_eq!(c.get("second").await.unwrap().as_deref(), Some(&b"2"[..]));
        }
    });
}

#[test]
fn tls_with_a_private_ca() {
    let (server, ca) = servers::redis_tls_server();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!(
            "rediss://127.0.0.1:{}?namespace=tls&tls_ca={}",
            server.port,
            ca.display()
        );
        let c = unicache::open(&url).await.unwrap();
        c.set_many(&[("a", b"1"), ("b", b"2")], None).await.unwrap();
        assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(c.len().await.unwrap(), 2);
        c.clear().await.unwrap();
        // Without the CA the server's certificate is not trusted.
        let e = unicache::open(&format!(
            "rediss://127.0.0.1:{}?connect_timeout=2s",
            server.port
        ))
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("127.0.0.1:{}", server.port)),
            "{e}"
        );
    });
}

#[test]
fn passwords_never_reach_summaries_stats_or_errors() {
    let server = servers::redis_auth_server();
    let pw = servers::REDIS_PASSWORD;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"key\":\"a\"}\n").unwrap();
    let url = format!(
        "redis://default:{pw}@127.0.0.1:{}?namespace=auth",
        server.port
    );
    let out = unicache()
        .args(["write", "--input"])
        .arg(&input)
        .args(["--cache", &url, "--output"])
        .arg(dir.path().join("s.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out),
        std::fs::read_to_string(dir.path().join("s.json")).unwrap()
    );
    assert!(!all.contains(pw), "{all}");
    assert!(all.contains("default:***@"), "{all}");
    let out = unicache()
        .args(["stats", "--cache", &url])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(pw));
    // A wrong password: a clear error, still without either password.
    let bad = format!("redis://default:wrong-{pw}@127.0.0.1:{}", server.port);
    let out = unicache()
        .args(["get", "--cache", &bad, "a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains(pw), "{}", stderr(&out));
}

/// Records of the cluster topology tests. Debug build, 2 cores: sized so
/// that each case stays well under a minute yet the write outlasts the
/// topology change (see the README's Redis Cluster notes).
const TOPO_RECORDS: usize = 500_000;

/// One topology test at a time: they time themselves, and share 2 cores.
static TOPO: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `{"key":"key:N","v":"<100 bytes>"}`: the line is the stored value.
fn topo_line(i: usize) -> String {
    format!("{{\"key\":\"key:{i}\",\"v\":\"{:0>100}\"}}", i)
}

fn topo_input(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("in.jsonl");
    let mut body = String::with_capacity(n * 130);
    for i in 0..n {
        body.push_str(&topo_line(i));
        body.push('\n');
    }
    std::fs::write(&path, body).unwrap();
    path
}

/// A `unicache write` run in the background, killed if it outlives `limit`.
struct Writer {
    child: std::process::Child,
    started: Instant,
    summary: std::path::PathBuf,
    rejects: std::path::PathBuf,
}

impl Writer {
    fn start(dir: &std::path::Path, input: &std::path::Path, url: &str, tag: &str) -> Writer {
        let summary = dir.join(format!("{tag}.summary.json"));
        let rejects = dir.join(format!("{tag}.rejects.jsonl"));
        let child = common::unicache_std()
            .args(["write", "-v", "--input"])
            .arg(input)
            .args(["--cache", url, "--output"])
            .arg(&summary)
            .arg("--rejects")
            .arg(&rejects)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Writer {
            child,
            started: Instant::now(),
            summary,
            rejects,
        }
    }

    /// Waits up to `limit`; returns exit code, summary, stderr and duration.
    fn finish(mut self, limit: Duration) -> (i32, serde_json::Value, String, Duration) {
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code().unwrap_or(-1);
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("unicache write still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = self.started.elapsed();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        let s = serde_json::from_str(&std::fs::read_to_string(&self.summary).unwrap_or_default())
            .unwrap_or(serde_json::Value::Null);
        (code, s, err, took)
    }

    fn rejected_keys(path: &std::path::Path) -> std::collections::HashSet<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["record"]["key"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

/// Reads keys `0..n` back: every written key has its value; returns how
/// many were found and the cache's stats.
async fn read_back(url: &str, n: usize, skip: &std::collections::HashSet<String>) -> usize {
    let cache = unicache::open(url).await.unwrap();
    let mut found = 0;
    for start in (0..n).step_by(10_000) {
        let keys: Vec<String> = (start..(start + 10_000).min(n))
            .map(|i| format!("key:{i}"))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let vals = cache.get_many(&refs).await.unwrap();
        for (j, v) in vals.into_iter().enumerate() {
            let i = start + j;
            if skip.contains(&keys[j]) {
                continue;
            }
            let v = v.unwrap_or_else(|| panic!("key:{i} missing"));
            assert_eq!(v, topo_line(i).as_bytes(), "key:{i}");
            found += 1;
        }
    }
    found
}

/// The writer's `redis cluster ...: moved=N ...` line (logged at `-v`).
fn routing_line(stderr: &str) -> String {
    stderr
        .lines()
        .rfind(|l| l.contains("slot_map_refreshes="))
        .unwrap_or("no routing line")
        .to_string()
}

/// A write with a topology change `change` started `delay` into it: exit 0,
/// every key readable with its value, at most 3x the time without it.
fn write_through(
    cluster: &servers::Cluster,
    change: impl FnOnce(&servers::Cluster) -> std::process::Child,
) {
    let dir = tempfile::tempdir().unwrap();
    let input = topo_input(dir.path(), TOPO_RECORDS);
    let base = cluster.url();
    let (code, _, err, plain) = Writer::start(
        dir.path(),
        &input,
        &format!("{base}?namespace=plain"),
        "plain",
    )
    .finish(Duration::from_secs(120));
    assert_eq!(code, 0, "{err}");
    let url = format!("{base}?namespace=moving");
    let w = Writer::start(dir.path(), &input, &url, "moving");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let mut mover = change(cluster);
    let waiter = std::thread::spawn(move || (mover.wait().unwrap(), t.elapsed()));
    let (code, s, err, took) = w.finish(Duration::from_secs(120));
    let write_end = t.elapsed();
    let (st, moved_for) = waiter.join().unwrap();
    assert!(st.success(), "redis-cli failed");
    assert_eq!(code, 0, "{err}\n{s}");
    assert_eq!(s["records_written"], TOPO_RECORDS as u64, "{s}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let found = rt.block_on(read_back(&url, TOPO_RECORDS, &Default::default()));
    assert_eq!(found, TOPO_RECORDS);
    eprintln!(
        "{TOPO_RECORDS} records: {plain:?} steady, {took:?} with the change \
         (the change ran {moved_for:?}, the write ended {write_end:?} after it began); {}",
        routing_line(&err)
    );
    assert!(
        took <= plain * 3 + Duration::from_secs(1),
        "took {took:?} vs {plain:?} without the change"
    );
}

#[test]
fn cluster_write_survives_a_2000_slot_reshard() {
    let _g = TOPO.lock().unwrap_or_else(|p| p.into_inner());
    let c = servers::redis_cluster_with(3, 0);
    write_through(&c, |c| c.reshard(0, 1, 2000));
}

#[test]
fn cluster_write_survives_adding_a_master_and_rebalancing() {
    let _g = TOPO.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = servers::redis_cluster_with(3, 0);
    c.add_master();
    write_through(&c, |c| c.rebalance());
}

#[test]
fn cluster_write_survives_a_master_killed_mid_write() {
    let _g = TOPO.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = servers::redis_cluster_with(3, 1);
    let dir = tempfile::tempdir().unwrap();
    let input = topo_input(dir.path(), TOPO_RECORDS);
    let victim = (0..c.nodes.len()).find(|&i| c.is_master(i)).unwrap();
    // Its only seed is the master about to die: it must know the rest.
    let url = format!("redis+cluster://{}?namespace=failover", c.addr(victim));
    let w = Writer::start(dir.path(), &input, &url, "failover");
    std::thread::sleep(Duration::from_millis(400));
    c.nodes[victim].kill();
    let rejects = w.rejects.clone();
    let (code, s, err, took) = w.finish(Duration::from_secs(60));
    let (read, written, failed, skipped) = (
        s["records_read"].as_u64().unwrap(),
        s["records_written"].as_u64().unwrap(),
        s["records_failed"].as_u64().unwrap(),
        s["records_skipped"].as_u64().unwrap(),
    );
    assert_eq!(read, TOPO_RECORDS as u64, "{s}");
    assert_eq!(read, written + failed + skipped, "{s}");
    assert_eq!(code, if failed == 0 { 0 } else { 1 }, "{err}");
    let rejected = Writer::rejected_keys(&rejects);
    assert_eq!(rejected.len() as u64, failed, "{s}");
    c.wait_ok();
    // Read through a replica seed only (the promoted one's peers).
    let replica = (0..c.nodes.len())
        .find(|&i| i != victim && !c.is_master(i))
        .unwrap();
    let via_replica = format!("redis+cluster://{}?namespace=failover", c.addr(replica));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let found = rt.block_on(read_back(&via_replica, TOPO_RECORDS, &rejected));
    assert_eq!(found as u64 + failed, TOPO_RECORDS as u64);
    eprintln!(
        "failover: {took:?}, written {written}, failed {failed}; {}",
        routing_line(&err)
    );
}

/// Asserts `got[i]` is `vals[i]` for every key `key:i`.
fn assert_values<B: AsRef<[u8]>>(got: &[Option<B>], vals: &[String], when: &str) {
    for (i, v) in got.iter().enumerate() {
        let v = v.as_ref().map(AsRef::as_ref);
        assert_eq!(v, Some(vals[i].as_bytes()), "key:{i}, {when}");
    }
}

/// Runs `round` (given its number) again and again while 2,000 slots move
/// from master 0 to master 1, for at most 60 s; then asserts the reshard
/// succeeded and `cache` was redirected (`MOVED`) at least once.
async fn while_resharding(
    c: &servers::Cluster,
    cache: &dyn Cache,
    what: &str,
    mut round: impl AsyncFnMut(u32),
) {
    let t = Instant::now();
    let mut mover = c.reshard(0, 1, 2000);
    let mut rounds = 0u32;
    loop {
        round(rounds).await;
        rounds += 1;
        if mover.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "reshard still running"
        );
    }
    assert!(mover.wait().unwrap().success());
    let s = cache.stats().await.unwrap();
    let routing = &s.server.as_ref().unwrap()["cluster"];
    eprintln!("{what}: {rounds} in {:?}; {routing}", t.elapsed());
    assert!(routing["moved"].as_u64().unwrap() > 0, "{routing}");
}

#[test]
fn cluster_reads_during_a_reshard_never_miss() {
    let _g = TOPO.lock().unwrap_or_else(|p| p.into_inner());
    let c = servers::redis_cluster_with(3, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cache = unicache::open(&format!("{}?namespace=reads", c.url()))
            .await
            .unwrap();
        let keys: Vec<String> = (0..10_000).map(|i| format!("key:{i}")).collect();
        let vals: Vec<String> = (0..10_000).map(topo_line).collect();
        cache
            .set_many(&common::entries(&keys, &vals), None)
            .await
            .unwrap();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        while_resharding(&c, &*cache, "reads: rounds of 10k", async |rounds| {
            let got = cache.get_many(&refs).await.unwrap();
            assert_values(&got, &vals, &format!("round {rounds}"));
        })
        .await;
    });
}

#[test]
fn cluster_down_fails_fast_then_recovers_without_reopening() {
    let _g = TOPO.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = servers::redis_cluster_with(3, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("{}?namespace=down&response_timeout=1s", c.url());
        let cache = unicache::open(&url).await.unwrap();
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        cache.set_many(&entries, None).await.unwrap();
        c.nodes[0].kill();
        // Until the others mark it failed (node timeout 2 s), then CLUSTERDOWN.
        let t = Instant::now();
        let mut saw_down = false;
        while t.elapsed() < Duration::from_secs(10) {
            let call = Instant::now();
            let r = cache.set_many(&entries, None).await;
            assert!(
                call.elapsed() < Duration::from_millis(2500),
                "{:?}",
                call.elapsed()
            );
            let e = r.unwrap_err();
            for (_, f) in e.failures() {
                assert!(f.is_transient(), "{f}");
            }
            if e.failures().len() == entries.len() {
                saw_down = e
                    .failures()
                    .iter()
                    .any(|(_, f)| f.to_string().contains("CLUSTERDOWN"));
                if saw_down {
                    break;
                }
            }
        }
        assert!(saw_down, "never saw CLUSTERDOWN");
        c.nodes[0].restart(servers::redis_ready);
        c.wait_ok();
        cache.set_many(&entries, None).await.unwrap();
        assert_eq!(cache.len().await.unwrap(), 1000);
    });
}

/// Every call on a cache whose server stopped answering (SIGSTOP) ends
/// within about `response_timeout` (500 ms; a call that must open a new
/// connection: `connect_timeout`, 500 ms too) with a Timeout-kind error
/// naming host:port; after SIGCONT the same cache works again.
async fn stopped_server_calls_time_out(cache: &dyn Cache, addr: &str) {
    let bound = Duration::from_millis(800);
    macro_rules! timed {
        ($what:expr, $call:expr) => {{
            let t = Instant::now();
            let r = $call;
            let took = t.elapsed();
            assert!(took < bound, "{} took {took:?}", $what);
            let e = r.expect_err($what);
            let e = e.failures().first().map(|f| f.1.clone()).unwrap_or(e);
            assert!(e.is_timeout(), "{}: {e}", $what);
            assert!(e.to_string().contains(addr), "{}: {e}", $what);
        }};
    }
    timed!("get", cache.get("k").await);
    timed!("get again", cache.get("k").await);
    timed!("set", cache.set("k", b"2", None).await);
    timed!("get_many", cache.get_many(&["k", "j"]).await);
    timed!("set_many", cache.set_many(&[("k", &b"3"[..])], None).await);
    timed!("delete", cache.delete("k").await);
    timed!("contains", cache.contains("k").await);
    timed!("ttl", cache.ttl("k").await);
    timed!("len", cache.len().await);
    timed!("clear", cache.clear().await);
    timed!("stats", cache.stats().await);
    // Other keys: a late-running incr or add must not change `k`.
    timed!("add", cache.add("a", b"1", None).await);
    timed!("incr", cache.incr("n", 1).await);
    timed!("touch", cache.touch("t", None).await);
    timed!("get_with_ttl", cache.get_with_ttl("k").await);
    timed!(
        "get_many_with_ttl",
        cache.get_many_with_ttl(&["k", "j"]).await
    );
}

#[test]
fn a_stopped_server_times_out_each_call_and_the_cache_recovers() {
    // With a password too: the direct GET connection's AUTH must not wait twice.
    for (server, auth) in [
        (servers::redis_server(), String::new()),
        (
            servers::redis_auth_server(),
            format!(":{}@", servers::REDIS_PASSWORD),
        ),
    ] {
        let addr = format!("127.0.0.1:{}", server.port);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let url = format!(
                "redis://{auth}{addr}?namespace=stop&response_timeout=500ms&connect_timeout=500ms"
            );
            let cache = unicache::open(&url).await.unwrap();
            cache.set("k", b"1", None).await.unwrap();
            server.signal(libc::SIGSTOP);
            stopped_server_calls_time_out(cache.as_ref(), &addr).await;
            server.signal(libc::SIGCONT);
            let t = Instant::now();
            while cache.get("k").await.is_err() {
                assert!(t.elapsed() < Duration::from_secs(5), "no recovery");
            }
            cache.set("k", b"4", None).await.unwrap();
            assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"4"[..]));
            assert_eq!(
                cache.get_many(&["k"]).await.unwrap()[0].as_deref(),
                Some(&b"4"[..])
            );
        });
    }
}

#[test]
fn a_stopped_cluster_master_times_out_each_call_and_the_cache_recovers() {
    let _g = TOPO.lock().unwrap_or_else(|p| p.into_inner());
    let c = servers::redis_cluster_with(3, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A hash-tag namespace: every key on the stopped master.
        let url = format!(
            "{}?namespace={{stop}}&response_timeout=500ms&connect_timeout=500ms",
            c.url()
        );
        let cache = unicache::open(&url).await.unwrap();
        cache.set("k", b"1", None).await.unwrap();
        let slot = unicache::bench_support::redis::hash_slot(b"{stop}:k");
        let owner = (0..c.nodes.len())
            .find(|&i| {
                redis_cli(
                    c.nodes[i].port,
                    &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()],
                ) == "1"
            })
            .unwrap();
        c.nodes[owner].signal(libc::SIGSTOP);
        stopped_server_calls_time_out(cache.as_ref(), &c.addr(owner)).await;
        c.nodes[owner].signal(libc::SIGCONT);
        let t = Instant::now();
        while cache.get("k").await.is_err() {
            assert!(t.elapsed() < Duration::from_secs(5), "no recovery");
        }
        cache.set("k", b"4", None).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"4"[..]));
    });
}

#[test]
fn huge_ttls_are_clamped_not_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for cache in [single("hugettl").await, cluster("hugettl").await] {
            let century = Duration::from_secs(100 * 365 * 86_400);
            for ttl in [Duration::MAX, Duration::from_secs(u64::MAX)] {
                cache.set("k", b"v", Some(ttl)).await.unwrap();
                let left = cache.ttl("k").await.unwrap().unwrap().unwrap();
                assert!(left > century, "{left:?}");
                cache
                    .set_many(&[("a", &b"1"[..]), ("b", &b"2"[..])], Some(ttl))
                    .await
                    .unwrap();
                assert!(cache.ttl("b").await.unwrap().unwrap().unwrap() > century);
            }
            assert_eq!(cache.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
            cache.clear().await.unwrap();
        }
    });
}

#[test]
fn namespaces_never_overlap() {
    use unicache::CacheOptions;
    let port = shared_redis().port;
    let url = format!("redis://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let open = |ns: &str| unicache::open_with(&url, CacheOptions::new().namespace(ns));
        // `app:v2` would share keys with `app`: refused, saying why.
        let e = open("app:v2").await.unwrap_err();
        assert_eq!(e.kind(), unicache::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("\"app\""), "{e}");
        // Glob characters in a namespace match only themselves in clear's SCAN.
        let names = ["ovl", "ovl-v2", "o*", "o?l", "o[v]l", "o\\", "ov", "{ovl}"];
        let mut caches = Vec::new();
        for ns in names {
            let c = open(ns).await.unwrap();
            c.set_many(&[("user1", ns.as_bytes()), ("v2:user1", b"x")], None)
                .await
                .unwrap();
            caches.push(c);
        }
        for (i, c) in caches.iter().enumerate() {
            assert_eq!(c.len().await.unwrap(), 2, "{}", names[i]);
            c.clear().await.unwrap();
            assert_eq!(c.len().await.unwrap(), 0, "{}", names[i]);
            for (j, other) in caches.iter().enumerate().skip(i + 1) {
                assert_eq!(
                    other.get("user1").await.unwrap().as_deref(),
                    Some(names[j].as_bytes()),
                    "clear of {} touched {}",
                    names[i],
                    names[j]
                );
                assert_eq!(other.len().await.unwrap(), 2, "{}", names[j]);
            }
        }
        assert_eq!(redis_cli(port, &["GET", "ovl:user1"]), "");
    });
}

#[test]
fn clear_deletes_a_scan_page_in_one_command_and_spares_other_namespaces() {
    const N: usize = 5_000;
    let server = servers::redis_server();
    let c = servers::redis_cluster_with(3, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let urls = [format!("redis://127.0.0.1:{}", server.port), c.url()];
        let ports: [Vec<u16>; 2] = [vec![server.port], c.nodes.iter().map(|n| n.port).collect()];
        for (url, ports) in urls.iter().zip(ports) {
            let mine = unicache::open(&format!("{url}?namespace=pages"))
                .await
                .unwrap();
            let other = unicache::open(&format!("{url}?namespace=pages2"))
                .await
                .unwrap();
            let keys: Vec<String> = (0..N).map(|i| format!("k{i}")).collect();
            let entries: Vec<(&str, &[u8])> =
                keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
            mine.set_many(&entries, None).await.unwrap();
            other.set_many(&entries[..300], None).await.unwrap();
            for &p in &ports {
                redis_cli(p, &["CONFIG", "RESETSTAT"]);
            }
            mine.clear().await.unwrap();
            assert_eq!(mine.len().await.unwrap(), 0, "{url}");
            assert_eq!(other.len().await.unwrap(), 300, "{url}");
            // A page of up to 1,000 keys is one command (one UNLINK, or in a
            // cluster one script), not a command per key.
            // (A script's own UNLINKs count as UNLINK calls too.)
            let cmd = if ports.len() == 1 { "unlink" } else { "eval" };
            let sent: u64 = ports.iter().map(|&p| calls(p, cmd)).sum();
            let scans: u64 = ports.iter().map(|&p| calls(p, "scan")).sum();
            assert!(
                (5..=scans).contains(&sent),
                "{sent} {cmd} for {scans} pages ({url})"
            );
            other.clear().await.unwrap();
        }
    });
}

#[test]
fn hash_tag_namespaces_keep_one_slot_in_a_cluster() {
    let c = shared_cluster();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cache = cluster("{tagged}").await;
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        cache.set_many(&entries, None).await.unwrap();
        let slot = unicache::bench_support::redis::hash_slot(b"{tagged}:k1").to_string();
        let here: Vec<String> = c
            .nodes
            .iter()
            .map(|n| redis_cli(n.port, &["CLUSTER", "COUNTKEYSINSLOT", &slot]))
            .collect();
        assert!(here.contains(&"500".to_string()), "{here:?}");
        assert_eq!(cache.len().await.unwrap(), 500);
        cache.clear().await.unwrap();
        assert_eq!(cache.len().await.unwrap(), 0);
    });
}

#[test]
fn cluster_mset_batches_during_a_reshard_split_and_land() {
    let _g = TOPO.lock().unwrap_or_else(|p| p.into_inner());
    let c = servers::redis_cluster_with(3, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cache = unicache::open(&format!("{}?namespace=mset", c.url()))
            .await
            .unwrap();
        // 50k keys a batch: about 3 per slot, so each slot's keys go as one
        // MSET, which a slot being migrated answers with TRYAGAIN or ASK.
        let keys: Vec<String> = (0..50_000).map(|i| format!("key:{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        while_resharding(&c, &*cache, "mset: rounds of 50k", async |round| {
            let vals: Vec<String> = (0..keys.len()).map(|i| format!("{round}:{i}")).collect();
            let entries: Vec<(&str, &[u8])> = refs
                .iter()
                .zip(&vals)
                .map(|(k, v)| (*k, v.as_bytes()))
                .collect();
            cache.set_many(&entries, None).await.unwrap();
            let got = cache.get_many(&refs).await.unwrap();
            assert_values(&got, &vals, &format!("round {round}"));
        })
        .await;
    });
}

#[test]
fn cluster_mset_on_a_half_migrated_slot_gets_tryagain_and_still_lands() {
    let c = servers::redis_cluster_with(3, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cache = unicache::open(&format!("{}?namespace=half", c.url()))
            .await
            .unwrap();
        cache
            .set_many(&[("{t}a", &b"1"[..]), ("{t}b", &b"1"[..])], None)
            .await
            .unwrap();
        let slot = unicache::bench_support::redis::hash_slot(b"half:{t}a").to_string();
        let count = |i: usize| redis_cli(c.nodes[i].port, &["CLUSTER", "COUNTKEYSINSLOT", &slot]);
        let from = (0..3).find(|&i| count(i) == "2").unwrap();
        let to = (from + 1) % 3;
        let (fp, tp) = (c.nodes[from].port, c.nodes[to].port);
        // Half a migration, as `redis-cli --cluster reshard` does it: one of
        // the two keys has moved, the slot is still the source's.
        redis_cli(
            tp,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &c.node_id(from)],
        );
        redis_cli(
            fp,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &c.node_id(to)],
        );
        let port = tp.to_string();
        let out = redis_cli(
            fp,
            &["MIGRATE", "127.0.0.1", &port, "half:{t}a", "0", "5000"],
        );
        assert_eq!(out, "OK");
        // One MSET for the slot: TRYAGAIN (keys on both sides), then SETs, ASKed.
        let entries = [
            ("{t}a", &b"2"[..]),
            ("{t}b", &b"2"[..]),
            ("{t}c", &b"2"[..]),
        ];
        cache.set_many(&entries, None).await.unwrap();
        let keys = ["{t}a", "{t}b", "{t}c"];
        let two = Some(&b"2"[..]);
        let got = cache.get_many(&keys).await.unwrap();
        assert!(got.iter().all(|v| v.as_deref() == two), "{got:?}");
        // Finish the migration; the next reads are MOVED.
        let out = redis_cli(
            fp,
            &[
                "MIGRATE",
                "127.0.0.1",
                &port,
                "",
                "0",
                "5000",
                "KEYS",
                "half:{t}b",
            ],
        );
        assert_eq!(out, "OK");
        for n in &c.nodes {
            redis_cli(
                n.port,
                &["CLUSTER", "SETSLOT", &slot, "NODE", &c.node_id(to)],
            );
        }
        let got = cache.get_many(&keys).await.unwrap();
        assert!(got.iter().all(|v| v.as_deref() == two), "{got:?}");
        assert_eq!(cache.get("{t}c").await.unwrap().as_deref(), two);
        let s = cache.stats().await.unwrap();
        let routing = &s.server.as_ref().unwrap()["cluster"];
        for what in ["tryagain", "ask", "moved"] {
            assert!(routing[what].as_u64().unwrap() > 0, "no {what}: {routing}");
        }
    });
}

// ---- atomic operations (issue 10) ----

/// Child of the `incr_from_four_processes_*` tests: `UNICACHE_INCR_N`
/// increments of `counter` in the cache at `UNICACHE_INCR_URL`, 8 at a time.
/// Does nothing without them (a plain `--ignored` run).
#[test]
#[ignore]
fn incr_child() {
    let (Ok(url), Ok(n)) = (
        std::env::var("UNICACHE_INCR_URL"),
        std::env::var("UNICACHE_INCR_N"),
    ) else {
        return;
    };
    let n: usize = n.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&url).await.unwrap();
        let tasks = (0..8).map(|t| {
            let c = c.clone();
            async move {
                for _ in (t..n).step_by(8) {
                    c.incr("counter", 1).await.unwrap();
                }
            }
        });
        futures::future::join_all(tasks).await;
    });
    println!("incr_child did {n}");
}

/// 4 processes increment one counter `n / 4` times each; it ends at `n`.
fn incr_from_four_processes(url: &str, n: usize) -> String {
    let kids: Vec<_> = (0..4)
        .map(|_| {
            let env = [
                ("UNICACHE_INCR_URL", url.to_string()),
                ("UNICACHE_INCR_N", (n / 4).to_string()),
            ];
            common::spawn_self("incr_child", &env)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for mut k in kids {
        while k.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = k.kill();
                let _ = k.wait();
                panic!("an incr child ran over 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = k.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", stderr(&out));
        assert!(
            text.contains(&format!("incr_child did {}", n / 4)),
            "{text}"
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(url).await.unwrap();
        let got = c.get("counter").await.unwrap().unwrap();
        String::from_utf8(got.to_vec()).unwrap()
    })
}

#[test]
fn incr_from_four_processes_single_server() {
    let port = shared_redis().port;
    let ns = common::unique_ns("incr4");
    let url = format!("redis://127.0.0.1:{port}?namespace={ns}");
    assert_eq!(incr_from_four_processes(&url, 4000), "4000");
    // Decimal text, as redis-cli reads it.
    assert_eq!(redis_cli(port, &["GET", &format!("{ns}:counter")]), "4000");
}

#[test]
fn incr_from_four_processes_cluster() {
    let c = shared_cluster();
    // No node knows the scripts: every process meets NOSCRIPT at once.
    for n in &c.nodes {
        redis_cli(n.port, &["SCRIPT", "FLUSH"]);
    }
    let ns = common::unique_ns("incr4");
    let url = format!("{}?namespace={ns}", c.url());
    assert_eq!(incr_from_four_processes(&url, 2000), "2000");
    let key = format!("{ns}:counter");
    assert_eq!(redis_cli(c.nodes[0].port, &["-c", "GET", &key]), "2000");
}

/// `INFO commandstats` calls of `cmd` (e.g. `evalsha`).

#[test]
fn scripts_cost_one_command_per_key_and_are_loaded_once() {
    let server = servers::redis_server();
    let port = server.port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!("redis://127.0.0.1:{port}?namespace=s"))
            .await
            .unwrap();
        redis_cli(port, &["SCRIPT", "FLUSH"]);
        redis_cli(port, &["CONFIG", "RESETSTAT"]);
        // First use: EVALSHA answered NOSCRIPT, then EVAL (which loads it).
        assert_eq!(c.incr("n", 1).await.unwrap(), 1);
        assert_eq!((calls(port, "evalsha"), calls(port, "eval")), (1, 1));
        // From then on EVALSHA alone (the SHA-1 in the code is the script's).
        for i in 2..=20 {
            assert_eq!(c.incr("n", 1).await.unwrap(), i);
        }
        assert_eq!((calls(port, "evalsha"), calls(port, "eval")), (20, 1));
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let vals: Vec<String> = keys.iter().map(|k| format!("v{k}")).collect();
        c.set_many(&common::entries(&keys, &vals), None)
            .await
            .unwrap();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = c.get_many_with_ttl(&refs).await.unwrap();
        assert!(got.iter().zip(&vals).all(|(g, v)| {
            let g = g.as_ref().unwrap();
            g.value == v.as_bytes() && g.ttl.is_none()
        }));
        // The GET+PTTL script, unknown to the server: one SCRIPT LOAD and
        // the 100 EVALSHA again, never 100 copies of the script.
        assert_eq!((calls(port, "evalsha"), calls(port, "eval")), (220, 1));
        assert_eq!(calls(port, "script|load"), 1);
        let got = c.get_many_with_ttl(&refs).await.unwrap();
        assert!(got.iter().all(Option::is_some));
        // A single key on a plain server: GET and PTTL pipelined on the
        // direct connection, no script, so a SCRIPT FLUSH does not touch it.
        // (Commands run inside scripts count too: counted from here.)
        redis_cli(port, &["CONFIG", "RESETSTAT"]);
        assert!(c.get_with_ttl("k1").await.unwrap().is_some());
        assert_eq!((calls(port, "evalsha"), calls(port, "eval")), (0, 0));
        assert_eq!((calls(port, "get"), calls(port, "pttl")), (1, 1));
        redis_cli(port, &["SCRIPT", "FLUSH"]);
        for _ in 0..2 {
            let got = c.get_with_ttl("k1").await.unwrap().unwrap();
            assert_eq!((&got.value[..], got.ttl), (&b"vk1"[..], None));
        }
        assert_eq!((calls(port, "evalsha"), calls(port, "eval")), (0, 0));
        assert_eq!((calls(port, "get"), calls(port, "pttl")), (3, 3));
        c.set("short", b"v", Some(Duration::from_secs(30)))
            .await
            .unwrap();
        let ttl = c.get_with_ttl("short").await.unwrap().unwrap().ttl.unwrap();
        assert!(
            ttl > Duration::from_secs(29) && ttl <= Duration::from_secs(30),
            "{ttl:?}"
        );
        assert_eq!(c.get_with_ttl("absent").await.unwrap(), None);
        // touch and add are plain commands.
        assert!(c.touch("k1", Some(Duration::from_secs(9))).await.unwrap());
        assert!(c.add("new", b"1", None).await.unwrap());
        assert_eq!((calls(port, "pexpire"), calls(port, "set")), (1, 2));
    });
}

#[test]
fn atomic_ops_keep_redis_forms_ttls_and_exact_numbers() {
    use unicache::ErrorKind;
    let port = shared_redis().port;
    let ns = common::unique_ns("forms");
    let k = |key: &str| format!("{ns}:{key}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("redis://127.0.0.1:{port}?namespace={ns}");
        let c = unicache::open(&format!("{base}&ttl=60s")).await.unwrap();
        // A new counter gets the default TTL; an existing one keeps none.
        assert_eq!(c.incr("fresh", 5).await.unwrap(), 5);
        let pttl: i64 = redis_cli(port, &["PTTL", &k("fresh")]).parse().unwrap();
        assert!((55_000..=60_000).contains(&pttl), "{pttl}");
        redis_cli(port, &["SET", &k("plain"), "7"]);
        assert_eq!(c.incr("plain", 1).await.unwrap(), 8);
        assert_eq!(redis_cli(port, &["PTTL", &k("plain")]), "-1");
        // Beyond 2^53 (where Lua's doubles round) and up to i64::MAX, exact.
        redis_cli(port, &["SET", &k("big"), "9007199254740993"]);
        assert_eq!(c.incr("big", 2).await.unwrap(), 9_007_199_254_740_995);
        redis_cli(port, &["SET", &k("max"), &(i64::MAX - 1).to_string()]);
        assert_eq!(c.incr("max", 1).await.unwrap(), i64::MAX);
        assert_eq!(redis_cli(port, &["GET", &k("max")]), i64::MAX.to_string());
        // Another type under the key is not a number either.
        redis_cli(port, &["RPUSH", &k("list"), "a"]);
        let e = c.incr("list", 1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("list"), "{e}");
        // add and touch without a TTL take the default one.
        assert!(c.add("a", b"x", None).await.unwrap());
        let pttl: i64 = redis_cli(port, &["PTTL", &k("a")]).parse().unwrap();
        assert!((55_000..=60_000).contains(&pttl), "{pttl}");
        redis_cli(port, &["PERSIST", &k("a")]);
        assert!(c.touch("a", None).await.unwrap());
        let pttl: i64 = redis_cli(port, &["PTTL", &k("a")]).parse().unwrap();
        assert!((55_000..=60_000).contains(&pttl), "{pttl}");
        // Without a default TTL, touch(None) makes a key permanent.
        let forever = unicache::open(&base).await.unwrap();
        assert!(forever.touch("a", None).await.unwrap());
        assert_eq!(redis_cli(port, &["PTTL", &k("a")]), "-1");
        assert!(forever.touch("a", None).await.unwrap(), "already permanent");
        assert!(!forever.touch("missing", None).await.unwrap());
        // A huge TTL is clamped as for set, and reads back.
        assert!(c.touch("a", Some(Duration::MAX)).await.unwrap());
        let got = c.get_with_ttl("a").await.unwrap().unwrap();
        assert!(got.ttl.unwrap() > Duration::from_secs(100 * 365 * 86_400));
        assert!(c.add("huge", b"h", Some(Duration::MAX)).await.unwrap());
        // get_with_ttl counts hits and misses like get.
        let before = c.stats().await.unwrap();
        assert!(c.get_with_ttl("nope").await.unwrap().is_none());
        c.get_many_with_ttl(&["a", "nope"]).await.unwrap();
        let after = c.stats().await.unwrap();
        assert_eq!(
            (after.hits - before.hits, after.misses - before.misses),
            (1, 2)
        );
        c.clear().await.unwrap();
    });
}

#[test]
fn cluster_counters_during_a_reshard_count_every_incr_once() {
    let _g = TOPO.lock().unwrap_or_else(|p| p.into_inner());
    let c = servers::redis_cluster_with(3, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cache = unicache::open(&format!("{}?namespace=ctr", c.url()))
            .await
            .unwrap();
        let keys: Vec<String> = (0..500).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        while_resharding(&c, &*cache, "incr: rounds of 500", async |rounds| {
            let incrs = refs.iter().map(|k| cache.incr(k, 1));
            for n in futures::future::join_all(incrs).await {
                assert_eq!(n.unwrap(), i64::from(rounds) + 1, "round {rounds}");
            }
            let got = cache.get_many_with_ttl(&refs).await.unwrap();
            for (k, g) in refs.iter().zip(got) {
                let g = g.unwrap_or_else(|| panic!("{k} missing in round {rounds}"));
                assert_eq!(g.value, (rounds + 1).to_string().as_bytes());
                assert_eq!(g.ttl, None);
            }
        })
        .await;
    });
}

/// An error reply on the direct connection (a key of another type) is
/// reported through the other connection, and the direct one, still in
/// step, is kept: no reconnect per call.
#[test]
fn error_replies_keep_the_direct_connection() {
    let server = servers::redis_server();
    let port = server.port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = unicache::open(&format!("redis://127.0.0.1:{port}?namespace=e"))
            .await
            .unwrap();
        redis_cli(port, &["RPUSH", "e:list", "x"]);
        // Both direct connections (get, get_with_ttl) are open after these.
        assert_eq!(c.get("absent").await.unwrap(), None);
        assert_eq!(c.get_with_ttl("absent").await.unwrap(), None);
        let connections = || {
            redis_cli(port, &["INFO", "stats"])
                .lines()
                .find_map(|l| l.strip_prefix("total_connections_received:"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        let before = connections();
        for _ in 0..3 {
            let e = c.get("list").await.unwrap_err();
            assert!(e.to_string().contains("WRONGTYPE"), "{e}");
            let e = c.get_with_ttl("list").await.unwrap_err();
            assert!(e.to_string().contains("WRONGTYPE"), "{e}");
        }
        // +1: the second INFO's own redis-cli connection.
        assert_eq!(connections(), before + 1, "a connection per error reply");
        assert_eq!(c.get("absent").await.unwrap(), None);
    });
}
