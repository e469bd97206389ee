//! memcached: the conformance suite on one real server and on two, the CLI
//! read back with a plain text-protocol client, long TTLs, namespace-only
//! clear, and one of two servers killed during a bulk write.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::servers::{self, ask, shared_memcached};
use unicache::Cache;

async fn one(ns: &str) -> Arc<dyn Cache> {
    let [a, _] = shared_memcached();
    unicache::open(&format!("memcached://127.0.0.1:{}?namespace={ns}", a.port))
        .await
        .unwrap()
}

async fn two(ns: &str) -> Arc<dyn Cache> {
    let [a, b] = shared_memcached();
    unicache::open(&format!(
        "memcached://127.0.0.1:{},127.0.0.1:{}?namespace={ns}",
        a.port, b.port
    ))
    .await
    .unwrap()
}

conformance_suite!(memcached_one, one, 16);
conformance_suite!(memcached_two, two, 16);

fn unicache() -> Command {
    Command::cargo_bin("unicache").unwrap()
}

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
    let body: String = (0..100_000)
        .map(|i| format!("{{\"key\":\"m{i}\",\"pad\":\"{}\"}}\n", "x".repeat(100)))
        .collect();
    std::fs::write(&input, body).unwrap();
    let summary = dir.path().join("s.json");
    let url = format!(
        "memcached://127.0.0.1:{},127.0.0.1:{}?namespace=fault",
        a.port, b.port
    );
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("unicache"))
        .args(["write", "-q", "--batch-size", "200", "--input"])
        .arg(&input)
        .args(["--cache", &url, "--output"])
        .arg(&summary)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
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
