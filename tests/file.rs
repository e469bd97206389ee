//! The file log store as users and crashes meet it: the real binary, real
//! files, SIGKILLed writers, several processes at once, damaged bytes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Std, Stdio};
use std::time::Duration;

use common::unicache;
use futures::StreamExt;
use proptest::prelude::*;
use unicache::Cache;
use unicache::backends::file::{FileCache, FileConfig, SyncPolicy};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The value the crash writer stores under `key`.
fn crash_value(key: &str) -> String {
    format!("value-{key}-{}", "z".repeat(key.len() % 50))
}

/// Set by the SIGKILL test for its crash-writer child (this test binary).
const CRASH_URL: &str = "UNICACHE_TEST_CRASH_URL";
const CRASH_RUN: &str = "UNICACHE_TEST_CRASH_RUN";

/// The crash writer: a no-op unless started by the SIGKILL test, then
/// `set_many` batches of 100 entries `RUN:I`, printing `ack N` after each
/// returns, until killed (or 20 s, so a lost parent cannot leave it running).
#[test]
fn crash_writer_child() {
    let (Ok(url), Ok(run)) = (std::env::var(CRASH_URL), std::env::var(CRASH_RUN)) else {
        return;
    };
    let end = std::time::Instant::now() + Duration::from_secs(20);
    rt().block_on(async {
        let c = unicache::open(&url).await.unwrap();
        let mut out = std::io::stdout().lock();
        for b in 0.. {
            let keys: Vec<String> = (b * 100..b * 100 + 100)
                .map(|i| format!("{run}:{i}"))
                .collect();
            let vals: Vec<String> = keys.iter().map(|k| crash_value(k)).collect();
            c.set_many(&common::entries(&keys, &vals), None)
                .await
                .unwrap();
            writeln!(out, "ack {}", (b + 1) * 100).unwrap();
            out.flush().unwrap();
            if std::time::Instant::now() > end {
                break;
            }
        }
    });
}

#[test]
fn seed_file_name_writes_a_readable_private_log() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    std::fs::write(
        &input,
        r#"{"records": [{"key": "a", "n": 1}, {"key": "b", "n": 2}], "backends": ["file"]}"#,
    )
    .unwrap();
    let out = unicache()
        .args(["write", "-q", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("out/summary.json"))
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    let log = dir.path().join("out/cache_file.jsonl");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Every line is JSON: `jq -c 'select(.op=="set") | {k, j}'` reads it,
    // and a record (JSON text) is stored as JSON, not escaped in a string.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["unicache"], "file-log");
    assert_eq!(lines[0]["version"], 2);
    assert_eq!(lines[1]["op"], "set");
    assert_eq!(lines[1]["k"], "a");
    assert_eq!(lines[1]["j"], serde_json::json!({"key": "a", "n": 1}));
    assert!(lines[1].get("v").is_none(), "{}", lines[1]);
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .ends_with(r#","j":{"key":"a","n":1}}"#)
    );
}

#[test]
fn sigkilled_writer_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.log");
    let url = format!("file:{}", path.display());
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for run in 0..20 {
        let mut child = Std::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_URL, &url)
            .env(CRASH_RUN, format!("r{run}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Random kill time between 20 and 300 ms.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(20 + seed % 280);
        let reader = std::thread::spawn(move || {
            let mut last = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ack ") {
                    last = n.parse().unwrap();
                }
            }
            last
        });
        std::thread::sleep(wait);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let n = reader.join().unwrap();
        acked.push((format!("r{run}"), n));

        // After each kill: opens, every acknowledged record exact, nothing corrupt.
        rt().block_on(async {
            let c = unicache::open(&url).await.unwrap();
            for (r, n) in &acked {
                let keys: Vec<String> = (0..*n).map(|i| format!("{r}:{i}")).collect();
                for chunk in keys.chunks(1000) {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    let got = c.get_many(&refs).await.unwrap();
                    for (k, v) in chunk.iter().zip(got) {
                        assert_eq!(
                            v.as_deref(),
                            Some(crash_value(k).as_bytes()),
                            "run {run}: {k} lost"
                        );
                    }
                }
            }
            let s = c.stats().await.unwrap();
            assert_eq!(s.server.as_ref().unwrap()["corrupt_records"], 0, "{s:?}");
        });
    }
    assert!(
        acked.iter().map(|(_, n)| n).sum::<u64>() > 0,
        "no write was ever acknowledged"
    );
}

/// Set by the hint SIGKILL test for its child.
const HINT_CRASH_PATH: &str = "UNICACHE_TEST_HINT_CRASH_PATH";

/// The hint crash child: a no-op unless started by the test below, then in
/// a loop until killed (or 20 s): opens the log, writes 300 new keys
/// `RUN:I` and overwrites the run's first 300, compacts every other round,
/// closes (which writes a hint: `hint_min_bytes=0`) and prints `ack N`.
#[test]
fn hint_crash_child() {
    let (Ok(path), Ok(run)) = (std::env::var(HINT_CRASH_PATH), std::env::var(CRASH_RUN)) else {
        return;
    };
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut out = std::io::stdout().lock();
    rt().block_on(async {
        for b in 0u64.. {
            let c = FileCache::open(
                FileConfig::new(&path)
                    .sync(SyncPolicy::Never)
                    .hint_min_bytes(Some(0)),
                Default::default(),
            )
            .unwrap();
            let keys: Vec<String> = (b * 300..b * 300 + 300)
                .chain(0..300)
                .map(|i| format!("{run}:{i}"))
                .collect();
            let vals: Vec<String> = keys.iter().map(|k| crash_value(k)).collect();
            c.set_many(&common::entries(&keys, &vals), None)
                .await
                .unwrap();
            if b % 2 == 1 {
                c.compact().await.unwrap();
            }
            drop(c);
            writeln!(out, "ack {}", (b + 1) * 300).unwrap();
            out.flush().unwrap();
            if std::time::Instant::now() > end {
                break;
            }
        }
    });
}

/// Writers SIGKILLed anywhere, in a compaction or while they write the hint
/// file: every open after (which maps the hint when it is valid) has every
/// acknowledged record, nothing damaged, the same entries as an open that
/// reads the whole log, and no temporary file is left.
#[test]
fn sigkilled_hint_writers_and_compactions_leave_a_correct_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hint.log");
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut seed = 0x2545f4914f6cdd1du64;
    for run in 0..12 {
        let mut child = Std::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "hint_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HINT_CRASH_PATH, &path)
            .env(CRASH_RUN, format!("h{run}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(30 + seed % 400);
        let reader = std::thread::spawn(move || {
            let mut last = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ack ") {
                    last = n.parse().unwrap();
                }
            }
            last
        });
        std::thread::sleep(wait);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.push((format!("h{run}"), reader.join().unwrap()));
        rt().block_on(async {
            let hinted = fopen(&path, Default::default()).unwrap();
            let read = FileCache::open(
                FileConfig::new(&path).hint_min_bytes(None),
                Default::default(),
            )
            .unwrap();
            for (r, n) in &acked {
                let keys: Vec<String> = (0..*n).map(|i| format!("{r}:{i}")).collect();
                for chunk in keys.chunks(1000) {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    let got = hinted.get_many(&refs).await.unwrap();
                    for (k, v) in chunk.iter().zip(got) {
                        assert_eq!(
                            v.as_deref(),
                            Some(crash_value(k).as_bytes()),
                            "run {run}: {k} lost"
                        );
                    }
                }
            }
            let (a, b) = (hinted.stats().await.unwrap(), read.stats().await.unwrap());
            assert_eq!(a.server.as_ref().unwrap()["corrupt_records"], 0, "{a:?}");
            assert_eq!(a.entries, b.entries, "run {run}");
            assert_eq!(
                a.server.as_ref().unwrap()["keys_all_namespaces"],
                b.server.as_ref().unwrap()["keys_all_namespaces"]
            );
        });
        let temps: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".compact-"))
            .collect();
        assert!(temps.is_empty(), "run {run}: left behind {temps:?}");
    }
    assert!(
        acked.iter().any(|(_, n)| *n > 0),
        "no round was acknowledged"
    );
    assert!(dir.path().join("hint.log.hint").exists());
}

#[test]
fn four_processes_write_overlapping_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file:{}", dir.path().join("shared.log").display());
    let inputs: Vec<String> = (0..4)
        .map(|p| {
            (0..5000)
                .map(|i| {
                    format!(
                        "{{\"key\":\"k{}\",\"writer\":{p}}}\n",
                        (i * 7 + p * 1000) % 5500
                    )
                })
                .collect()
        })
        .collect();
    common::write_at_once(dir.path(), &url, &inputs, 50);
    rt().block_on(async {
        let c = unicache::open(&url).await.unwrap();
        let mut expected: std::collections::HashMap<String, Vec<String>> = Default::default();
        for p in 0..4 {
            for i in 0..5000 {
                let k = format!("k{}", (i * 7 + p * 1000) % 5500);
                expected
                    .entry(k.clone())
                    .or_default()
                    .push(format!("{{\"key\":\"{k}\",\"writer\":{p}}}"));
            }
        }
        assert_eq!(c.len().await.unwrap(), expected.len() as u64);
        for (k, vals) in &expected {
            let v = c
                .get(k)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{k} lost"));
            let v = String::from_utf8(v.to_vec()).unwrap();
            assert!(vals.contains(&v), "{k} holds {v}, never written");
        }
        let s = c.stats().await.unwrap();
        assert_eq!(s.server.unwrap()["corrupt_records"], 0);
    });
}

#[test]
fn damaged_middle_line_is_skipped_torn_tail_is_cut_foreign_file_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.log");
    let url = format!("file:{}", path.display());
    rt().block_on(async {
        let c = unicache::open(&url).await.unwrap();
        c.set("a", b"1", None).await.unwrap();
        c.set("b", b"2", None).await.unwrap();
        c.set("c", b"3", None).await.unwrap();
    });
    // Flip one byte inside b's value, and leave half a line at the end.
    let mut bytes = std::fs::read(&path).unwrap();
    let pos = bytes.windows(5).position(|w| w == b"\"j\":2").unwrap() + 4;
    bytes[pos] = b'9';
    bytes.extend_from_slice(b"{\"c\":123,\"op\":\"set\",\"k\":\"d\",\"v\":\"hal");
    std::fs::write(&path, &bytes).unwrap();
    rt().block_on(async {
        let c = unicache::open(&url).await.unwrap();
        assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(
            c.get("b").await.unwrap(),
            None,
            "a damaged line must never yield a value"
        );
        assert_eq!(c.get("c").await.unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(c.get("d").await.unwrap(), None);
        let s = c.stats().await.unwrap().server.unwrap();
        assert_eq!(s["corrupt_records"], 1);
        assert!(s["torn_tail_bytes"].as_u64().unwrap() > 0);
        // The next write cuts the torn tail and appends cleanly.
        c.set("e", b"5", None).await.unwrap();
        let s = c.stats().await.unwrap().server.unwrap();
        assert_eq!(s["torn_tail_bytes"], 0);
    });
    rt().block_on(async {
        let c = unicache::open(&url).await.unwrap();
        assert_eq!(c.get("e").await.unwrap().as_deref(), Some(&b"5"[..]));
        // Compaction drops the damaged line and dead bytes.
        c.compact().await.unwrap();
        let s = c.stats().await.unwrap().server.unwrap();
        assert_eq!(s["corrupt_records"], 0);
        assert_eq!(c.len().await.unwrap(), 3);
    });

    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, "my precious notes\n").unwrap();
    let out = unicache()
        .args([
            "get",
            "--cache",
            &format!("file:{}", foreign.display()),
            "k",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a unicache file log"));
    assert_eq!(
        std::fs::read_to_string(&foreign).unwrap(),
        "my precious notes\n"
    );
}

#[test]
fn compaction_is_noticed_by_another_instance_and_threshold_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.log");
    let url = format!("file:{}?compact_ratio=50", path.display());
    rt().block_on(async {
        let a = unicache::open(&url).await.unwrap();
        let b = unicache::open(&url).await.unwrap();
        let v = vec![b'x'; 1000];
        for round in 0..6 {
            let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
            let entries: Vec<(&str, &[u8])> =
                keys.iter().map(|k| (k.as_str(), v.as_slice())).collect();
            a.set_many(&entries, None).await.unwrap();
            let _ = round;
        }
        // 3 MB written, ~0.5 MB live: compaction must have run.
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 1_500_000, "log is {size} bytes");
        a.set("fresh", b"after", None).await.unwrap();
        assert_eq!(
            b.get("fresh").await.unwrap().as_deref(),
            Some(&b"after"[..])
        );
        assert_eq!(b.get("k7").await.unwrap().as_deref(), Some(&v[..]));
        assert_eq!(b.len().await.unwrap(), 501);
        b.clear().await.unwrap();
        assert_eq!(a.len().await.unwrap(), 0);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            unicache::bench_support::file::HEADER
        );
    });
}

#[test]
fn a_get_sees_what_another_process_finished_writing_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file:{}", dir.path().join("x.log").display());
    rt().block_on(async {
        // Opened (index built) before the other process writes anything.
        let mine = unicache::open(&url).await.unwrap();
        mine.set("shared", b"mine", None).await.unwrap();
        for round in 0..3 {
            let v = format!("theirs-{round}");
            unicache()
                .args(["set", "-q", "--cache", &url, "shared", &v])
                .assert()
                .success();
            unicache()
                .args(["set", "-q", "--cache", &url, &format!("new{round}"), "n"])
                .assert()
                .success();
            assert_eq!(
                mine.get("shared").await.unwrap().as_deref(),
                Some(v.as_bytes())
            );
            assert!(mine.contains(&format!("new{round}")).await.unwrap());
        }
        unicache()
            .args(["delete", "-q", "--cache", &url, "shared"])
            .assert()
            .success();
        assert_eq!(mine.get("shared").await.unwrap(), None);
        unicache()
            .args(["compact", "-q", "--cache", &url])
            .assert()
            .success();
        assert_eq!(mine.get("new2").await.unwrap().as_deref(), Some(&b"n"[..]));
        assert_eq!(mine.len().await.unwrap(), 3);
    });
}

#[test]
fn export_import_round_trip_and_seed_cache_file() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("src.sqlite3").display());
    let file = format!("file:{}", dir.path().join("dst.log").display());
    rt().block_on(async {
        let c = unicache::open(&sqlite).await.unwrap();
        c.set("text", b"hello", None).await.unwrap();
        c.set("bin", &[0u8, 255, 7], None).await.unwrap();
        c.set("ttl", b"soon", Some(Duration::from_secs(3600)))
            .await
            .unwrap();
    });
    let exported = unicache()
        .args(["export", "--cache", &sqlite])
        .output()
        .unwrap();
    assert_eq!(exported.status.code(), Some(0));
    let out = unicache()
        .args(["import", "--cache", &file, "-"])
        .write_stdin(exported.stdout)
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    rt().block_on(async {
        let c = unicache::open(&file).await.unwrap();
        assert_eq!(c.get("text").await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            c.get("bin").await.unwrap().as_deref(),
            Some(&[0u8, 255, 7][..])
        );
        let ttl = c.ttl("ttl").await.unwrap().unwrap().unwrap();
        assert!(ttl > Duration::from_secs(3500));
    });

    // The seed's own cache file ({"key": "json text"}) imports as-is.
    let seed = dir.path().join("cache_file.json");
    std::fs::write(
        &seed,
        r#"{"user:1": "{\"key\": \"user:1\", \"n\": 1}", "user:2": "{\"key\": \"user:2\"}"}"#,
    )
    .unwrap();
    let out = unicache()
        .args(["import", "--cache", &file])
        .arg(&seed)
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    let json = unicache()
        .args(["export", "--cache", &file, "--format", "json"])
        .output()
        .unwrap();
    // json export: the binary value cannot be a JSON string: skipped, exit 1, said on stderr.
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["user:1"], r#"{"key": "user:1", "n": 1}"#);
    assert_eq!(v["text"], "hello");

    // An empty cache exports nothing, successfully.
    let out = unicache()
        .args(["export", "--cache", "memory://"])
        .output()
        .unwrap();
    assert_eq!((out.status.code(), out.stdout.len()), (Some(0), 0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// The line decoder never panics and never accepts a line whose bytes changed.
    #[test]
    fn line_decoder_total(bytes in proptest::collection::vec(any::<u8>(), 0..200), flip in 0usize..200) {
        let _ = unicache::bench_support::file::decode_line(&bytes);
        let mut line = Vec::new();
        let mut scratch = Vec::new();
        unicache::bench_support::file::encode_line(&mut line, &mut scratch, "set", "", "key", Some(&bytes), None);
        line.pop();
        let orig = unicache::bench_support::file::decode_line(&line).unwrap();
        let i = flip % line.len();
        line[i] ^= 0x20;
        if let Ok(op) = unicache::bench_support::file::decode_line(&line) {
            // Only flips that do not change the meaning may pass (e.g. inside "c" digits they cannot).
            prop_assert_eq!(op, orig);
        }
    }

    /// Opening arbitrary bytes (after the header, or instead of it) never
    /// panics: it opens, or fails with a clear error, and never invents values.
    #[test]
    fn opening_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2000), with_header in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let mut f = std::fs::File::create(&path).unwrap();
        if with_header {
            f.write_all(unicache::bench_support::file::HEADER).unwrap();
        }
        f.write_all(&body).unwrap();
        drop(f);
        let r = rt().block_on(unicache::open(&format!("file:{}", path.display())));
        match r {
            Ok(c) => {
                let n = rt().block_on(c.len()).unwrap();
                prop_assert_eq!(n, 0, "random bytes decoded into entries");
            }
            Err(e) => prop_assert!(matches!(e.kind(), unicache::ErrorKind::Corrupt), "{e}"),
        }
    }
}

#[test]
fn log_deleted_under_a_running_cache_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.log");
    rt().block_on(async {
        let c = unicache::open(&format!("file:{}", path.display()))
            .await
            .unwrap();
        c.set("a", b"1", None).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        // Must neither hang (the write lock is held while reloading) nor fail.
        let r = tokio::time::timeout(Duration::from_secs(10), c.set("b", b"2", None)).await;
        r.expect("set hung after the log was deleted").unwrap();
        assert_eq!(c.get("a").await.unwrap(), None);
        assert_eq!(c.get("b").await.unwrap().as_deref(), Some(&b"2"[..]));
    });
}

fn fopen(path: &std::path::Path, options: unicache::CacheOptions) -> unicache::Result<FileCache> {
    FileCache::open(
        FileConfig::new(path)
            .sync(SyncPolicy::Batch)
            .compact_ratio(50),
        options,
    )
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_link(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

#[test]
fn a_log_opened_through_a_symlink_stays_one_file_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.log");
    let link = dir.path().join("link.log");
    std::os::unix::fs::symlink("real.log", &link).unwrap();
    rt().block_on(async {
        // Created through the link: the real file is made, the link kept.
        let a = fopen(&link, Default::default()).unwrap();
        let b = fopen(&real, Default::default()).unwrap();
        a.set("before", b"1", None).await.unwrap();
        b.set("from-real", b"2", None).await.unwrap();
        a.compact().await.unwrap();
        assert!(is_link(&link), "compaction replaced the symlink");
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("real.log"));
        assert_eq!(mode(&real), 0o600);
        // Both instances still share one store, both ways, after compactions.
        a.set("after", b"3", None).await.unwrap();
        assert_eq!(b.get("after").await.unwrap().as_deref(), Some(&b"3"[..]));
        b.compact().await.unwrap();
        b.set("after-b", b"4", None).await.unwrap();
        assert_eq!(a.get("after-b").await.unwrap().as_deref(), Some(&b"4"[..]));
        assert_eq!(
            a.get("from-real").await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
        a.clear().await.unwrap();
        assert!(is_link(&link), "clear replaced the symlink");
        b.set("last", b"5", None).await.unwrap();
        let c = fopen(&link, Default::default()).unwrap();
        assert_eq!(c.get("last").await.unwrap().as_deref(), Some(&b"5"[..]));
        assert_eq!(c.len().await.unwrap(), 1);
    });
    // One lock, the real file's; no temp files left.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["link.log", "real.log", "real.log.lock"]);
}

#[test]
fn compaction_never_follows_a_planted_temp_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c.log");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let pid = std::process::id();
    // The old predictable name, and guesses at the new one.
    let planted = [
        format!("c.log.compact-{pid}"),
        format!("c.log.compact-{pid}-0000000000000000"),
        format!("c.log.compact-{pid}-0000000000000001"),
    ];
    for p in &planted {
        std::os::unix::fs::symlink(&victim, dir.path().join(p)).unwrap();
    }
    rt().block_on(async {
        let c = fopen(&log, Default::default()).unwrap();
        for i in 0..100 {
            c.set(&format!("k{i}"), b"old", None).await.unwrap();
            c.set(&format!("k{i}"), format!("v{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        c.compact().await.unwrap();
        c.compact().await.unwrap();
        assert_eq!(c.get("k7").await.unwrap().as_deref(), Some(&b"v7"[..]));
    });
    let victim_now = std::fs::read(&victim).unwrap();
    assert_eq!(String::from_utf8_lossy(&victim_now), "precious");
    assert!(!is_link(&log));
    assert_eq!(mode(&log), 0o600);
    for p in &planted {
        assert!(is_link(&dir.path().join(p)), "{p} was touched");
    }
    // The compacted log holds the header and the 100 live lines.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 101);
    rt().block_on(async {
        let c = fopen(&log, Default::default()).unwrap();
        assert_eq!(c.len().await.unwrap(), 100);
        assert_eq!(c.get("k99").await.unwrap().as_deref(), Some(&b"v99"[..]));
    });
}

#[test]
fn stale_compaction_temp_files_are_removed_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("s.log");
    rt().block_on(async {
        fopen(&log, Default::default())
            .unwrap()
            .set("a", b"1", None)
            .await
            .unwrap();
    });
    // A pid that is gone, one that is alive, and a file a live process locks.
    let dead = {
        let mut c = Std::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let mut alive = Std::new("sleep").arg("30").spawn().unwrap();
    let p = |name: String| dir.path().join(name);
    let stale_old = p(format!("s.log.compact-{dead}"));
    let stale_new = p(format!("s.log.compact-{dead}-00ff00ff00ff00ff"));
    let live_pid = p(format!("s.log.compact-{}-0123456789abcdef", alive.id()));
    let locked = p(format!("s.log.compact-{dead}-fedcba9876543210"));
    let unrelated = p("s.log.compact-notes.txt".to_string());
    for f in [&stale_old, &stale_new, &live_pid, &locked, &unrelated] {
        std::fs::write(f, b"half a compaction").unwrap();
    }
    let holder = std::fs::File::open(&locked).unwrap();
    holder.lock().unwrap();
    // Open cleans up.
    let c = fopen(&log, Default::default()).unwrap();
    assert!(
        !stale_old.exists() && !stale_new.exists(),
        "stale temp files kept"
    );
    assert!(live_pid.exists(), "a live process's temp file was removed");
    assert!(locked.exists(), "a locked temp file was removed");
    assert!(unrelated.exists());
    // So does compaction, once the process is gone and the lock released.
    alive.kill().unwrap();
    alive.wait().unwrap();
    drop(holder);
    std::fs::write(&stale_old, b"again").unwrap();
    rt().block_on(async {
        c.compact().await.unwrap();
        assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    });
    assert!(!stale_old.exists() && !live_pid.exists() && !locked.exists());
    assert!(unrelated.exists());
}

#[test]
fn must_exist_creates_nothing_and_says_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let ro = unicache::CacheOptions::new().must_exist(true);
    for missing in [
        dir.path().join("nope.log"),
        dir.path().join("sub/dir/nope.log"),
    ] {
        let e = fopen(&missing, ro.clone()).unwrap_err();
        assert_eq!(e.kind(), unicache::ErrorKind::NotFound, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    // A dangling symlink is missing too, and its target is not created.
    std::os::unix::fs::symlink("target.log", dir.path().join("dangling.log")).unwrap();
    let e = fopen(&dir.path().join("dangling.log"), ro.clone()).unwrap_err();
    assert_eq!(e.kind(), unicache::ErrorKind::NotFound);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "something was created: {names:?}");
    // An empty file is not a log yet: NotFound, and no header or lock
    // written (read-only commands wrote both).
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, b"").unwrap();
    let e = fopen(&empty, ro.clone()).unwrap_err();
    assert_eq!(e.kind(), unicache::ErrorKind::NotFound, "{e}");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert!(!dir.path().join("empty.log.lock").exists());
    std::fs::remove_file(&empty).unwrap();
    // Without must_exist, missing directories are created (mode 0600 log).
    let made = dir.path().join("new/dir/made.log");
    rt().block_on(async {
        let c = fopen(&made, Default::default()).unwrap();
        c.set("k", b"v", None).await.unwrap();
        // An existing log opens with must_exist, and reads.
        let r = fopen(&made, ro.clone()).unwrap();
        assert_eq!(r.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(r.len().await.unwrap(), 1);
    });
    assert_eq!(mode(&made), 0o600);
}

#[test]
fn huge_ttls_saturate_instead_of_overflowing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("t.log");
    let century = Duration::from_secs(100 * 365 * 86_400);
    rt().block_on(async {
        let c = fopen(&log, Default::default()).unwrap();
        c.set("max", b"1", Some(Duration::MAX)).await.unwrap();
        c.set("secs", b"2", Some(Duration::from_secs(u64::MAX)))
            .await
            .unwrap();
        c.set_many(&[("many", &b"3"[..])], Some(Duration::MAX))
            .await
            .unwrap();
        // Milliseconds just past u64: a cast would wrap to 384 ms.
        c.set(
            "wraps",
            b"5",
            Some(Duration::from_secs(18_446_744_073_709_552)),
        )
        .await
        .unwrap();
        let d = fopen(
            &log,
            unicache::CacheOptions::new().default_ttl(Duration::from_millis(u64::MAX)),
        )
        .unwrap();
        d.set("default", b"4", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        for k in ["max", "secs", "many", "default", "wraps"] {
            assert!(c.get(k).await.unwrap().is_some(), "{k} expired at once");
            let ttl = c.ttl(k).await.unwrap().unwrap().unwrap();
            assert!(ttl > century, "{k}: {ttl:?}");
        }
    });
    // Saturated at u64::MAX in the log, and read back after reopening.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("\"x\":{}", u64::MAX)), "{text}");
    rt().block_on(async {
        let c = fopen(&log, Default::default()).unwrap();
        assert_eq!(c.len().await.unwrap(), 5);
        c.compact().await.unwrap();
        assert_eq!(c.get("max").await.unwrap().as_deref(), Some(&b"1"[..]));
    });
}

#[test]
fn namespaces_that_look_nested_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("n.log");
    let ns = |n: &str| unicache::CacheOptions::new().namespace(n);
    rt().block_on(async {
        let app = fopen(&log, ns("app")).unwrap();
        let v2 = fopen(&log, ns("app:v2")).unwrap();
        let none = fopen(&log, Default::default()).unwrap();
        app.set("v2:user1", b"app's", None).await.unwrap();
        v2.set("user1", b"v2's", None).await.unwrap();
        none.set("app:v2:user1", b"no namespace's", None)
            .await
            .unwrap();
        assert_eq!(
            v2.get("user1").await.unwrap().as_deref(),
            Some(&b"v2's"[..])
        );
        assert_eq!(app.get("user1").await.unwrap(), None);
        assert_eq!(v2.get("v2:user1").await.unwrap(), None);
        assert_eq!(app.len().await.unwrap(), 1);
        app.clear().await.unwrap();
        assert_eq!(app.len().await.unwrap(), 0);
        assert_eq!(
            v2.get("user1").await.unwrap().as_deref(),
            Some(&b"v2's"[..])
        );
        let keys: Vec<String> = v2.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
        assert_eq!(keys, ["user1"]);
        assert_eq!(
            none.get("app:v2:user1").await.unwrap().as_deref(),
            Some(&b"no namespace's"[..])
        );
        // The namespace is its own field in each line.
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains(r#""n":"app:v2","k":"user1""#), "{text}");
    });
}

#[test]
fn entries_stream_what_keys_and_get_return() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("e.log");
    let ns = unicache::CacheOptions::new().namespace("mine");
    rt().block_on(async {
        let c = fopen(&log, ns).unwrap();
        let other = fopen(&log, Default::default()).unwrap();
        let big = vec![0xffu8; 5 << 20]; // a line past the index's short lengths
        for i in 0..3000 {
            c.set(&format!("k{i}"), format!("v{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        for i in (0..3000).step_by(3) {
            c.set(&format!("k{i}"), b"newer", Some(Duration::from_secs(600)))
                .await
                .unwrap();
        }
        c.delete_many(&["k1", "k4"]).await.unwrap();
        c.set("gone-soon", b"x", Some(Duration::from_millis(1)))
            .await
            .unwrap();
        c.set("big", &big, None).await.unwrap();
        c.set("\u{e9}\"quoted\"\n", &[0, 1, 2], None).await.unwrap();
        other.set("k2", b"not mine", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut got: Vec<unicache::Entry> = c
            .entries()
            .await
            .unwrap()
            .map(|e| e.unwrap())
            .collect()
            .await;
        got.sort_by(|a, b| a.key.cmp(&b.key));
        let keys: Vec<String> = c.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
        assert_eq!(got.len(), keys.len());
        assert_eq!(got.len(), 3000 - 2 + 2);
        for (e, k) in got.iter().zip(&keys) {
            assert_eq!(&e.key, k);
            assert_eq!(Some(&e.value), c.get(k).await.unwrap().as_ref(), "{k}");
            match (e.ttl, c.ttl(k).await.unwrap().unwrap()) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!(a.abs_diff(b) < Duration::from_secs(5), "{k}"),
                other => panic!("{k}: ttl {other:?}"),
            }
        }
        assert_eq!(
            got.iter().find(|e| e.key == "big").unwrap().value.len(),
            big.len()
        );
        // Still the same after a compaction (lines moved, index moved).
        c.compact().await.unwrap();
        let again = c.entries().await.unwrap().count().await;
        assert_eq!(again, got.len());
        assert_eq!(c.get("big").await.unwrap().unwrap().len(), big.len());
    });
}

#[test]
fn a_symlink_planted_at_the_lock_file_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("l.log");
    let victim = dir.path().join("victim");
    std::os::unix::fs::symlink(&victim, dir.path().join("l.log.lock")).unwrap();
    let e = fopen(&log, Default::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("symbolic link") && msg.contains("l.log.lock"),
        "{msg}"
    );
    assert!(!victim.exists(), "the lock's symlink target was created");
}

#[test]
fn a_compaction_sigkilled_mid_run_leaves_a_temp_file_the_next_open_removes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("k.log");
    let value = vec![b'v'; 300];
    rt().block_on(async {
        let c = FileCache::open(
            FileConfig::new(&log)
                .sync(SyncPolicy::Never)
                .compact_ratio(99),
            Default::default(),
        )
        .unwrap();
        let keys: Vec<String> = (0..100_000).map(|i| format!("key:{i}")).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &value[..])).collect();
        c.set_many(&entries, None).await.unwrap();
        c.set_many(&entries, None).await.unwrap();
    });
    let temps = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".compact-"))
            .collect()
    };
    let mut child = common::unicache_std()
        .args(["compact", "-q", "--cache"])
        .arg(format!("file:{}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut killed = false;
    while std::time::Instant::now() < deadline {
        if !temps().is_empty() {
            killed = child.kill().is_ok();
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    if killed && !temps().is_empty() {
        rt().block_on(async {
            let c = fopen(&log, Default::default()).unwrap();
            assert_eq!(
                c.get("key:99999").await.unwrap().as_deref(),
                Some(&value[..])
            );
        });
    } else {
        eprintln!("the compaction finished before it could be killed; checking the leftovers only");
    }
    assert!(temps().is_empty(), "left behind: {:?}", temps());
}

/// `touch` and `incr` through one instance are seen by another on the same
/// log (it catches up first), survive compaction and a reopen, and are
/// plain `set` lines that `jq` reads: same value, new expiry.
#[test]
fn touch_and_incr_are_set_lines_seen_by_other_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let url = format!("file:{}", path.display());
    rt().block_on(async {
        let a = unicache::open(&url).await.unwrap();
        let b = unicache::open(&url).await.unwrap();
        a.set("k", b"value", Some(Duration::from_secs(1)))
            .await
            .unwrap();
        assert!(b.touch("k", Some(Duration::from_secs(3600))).await.unwrap());
        let got = a.get_with_ttl("k").await.unwrap().unwrap();
        assert_eq!(&got.value[..], b"value");
        assert!(got.ttl.unwrap() > Duration::from_secs(3590), "{got:?}");
        a.set("n", b"5", Some(Duration::from_secs(600)))
            .await
            .unwrap();
        assert_eq!(b.incr("n", 2).await.unwrap(), 7);
        assert_eq!(a.incr("n", 3).await.unwrap(), 10);
        let last = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = last
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let touched = &lines[1];
        assert_eq!(
            (touched["op"].as_str(), touched["v"].as_str()),
            (Some("set"), Some("value"))
        );
        let (x0, x1) = (
            lines[0]["x"].as_u64().unwrap(),
            touched["x"].as_u64().unwrap(),
        );
        assert!(x1 >= x0 + 3_500_000, "{x0} -> {x1}");
        // A counter is JSON text (a number): stored as `j`.
        let counter = lines.last().unwrap();
        assert_eq!(counter["j"], 10);
        assert_eq!(counter["x"], lines[2]["x"], "incr keeps the expiry");
        a.compact().await.unwrap();
        drop((a, b));
        let c = unicache::open(&url).await.unwrap();
        assert!(c.ttl("k").await.unwrap().unwrap().unwrap() > Duration::from_secs(3590));
        let n = c.get_with_ttl("n").await.unwrap().unwrap();
        assert_eq!(&n.value[..], b"10");
        assert!(n.ttl.unwrap() > Duration::from_secs(590));
    });
}

/// Owner, group and mode of `path`.
fn owner_mode(path: &std::path::Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// Compaction, `clear` and `clear_all` replace the log with a new file: it
/// keeps the old one's owner, group and mode (a shared 0664 log of another
/// user and group stayed 0600 root:root before). A lock file created next to
/// an existing log takes its owner, group and read/write bits, so whoever may
/// write the log may lock it. As root the owner and group are another
/// user's; otherwise our own (the mode is still checked).
#[test]
fn compaction_and_clear_keep_the_logs_owner_group_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("shared.log");
    let lock = dir.path().join("shared.log.lock");
    let me = owner_mode(dir.path());
    let root = me.0 == 0;
    let (uid, gid) = if root { (4321, 4322) } else { (me.0, me.1) };
    rt().block_on(async {
        let c = fopen(&log, Default::default()).unwrap();
        c.set("a", b"1", None).await.unwrap();
        assert_eq!(owner_mode(&log).2, 0o600, "a new log is private");
        drop(c);
        std::fs::remove_file(&lock).unwrap();
        std::os::unix::fs::chown(&log, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o664)).unwrap();
        let c = fopen(&log, Default::default()).unwrap();
        c.set("b", b"2", None).await.unwrap();
        assert_eq!(owner_mode(&lock), (uid, gid, 0o664), "lock file");
        for name in ["compact", "clear", "clear_all"] {
            c.set("k", b"v", None).await.unwrap();
            let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap());
            match name {
                "compact" => c.compact().await,
                "clear" => c.clear().await,
                _ => c.clear_all().await,
            }
            .unwrap();
            let after = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).unwrap());
            assert_ne!(ino, after, "{name} did not replace the file");
            assert_eq!(owner_mode(&log), (uid, gid, 0o664), "after {name}");
        }
        c.set("c", b"3", None).await.unwrap();
        assert_eq!(c.get("c").await.unwrap().as_deref(), Some(&b"3"[..]));
    });
}

/// A version-1 log (as unicache before `j` lines wrote it, built here line
/// by line): read as it is, written with version-1 lines only (an older
/// unicache sharing it reads them) until a compaction rewrites it as
/// version 2, its old lines kept; from then on JSON values go in as `j`.
#[test]
fn a_version_1_log_is_read_and_upgraded_by_compaction() {
    use unicache::bench_support::file::{HEADER, HEADER_V1, encode_line};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.log");
    let mut log = HEADER_V1.to_vec();
    let mut scratch = Vec::new();
    let old: [(&str, &[u8], Option<u64>); 3] = [
        ("json", br#"{"a":1}"#, None),
        ("bin", &[0xff, 0, 1], None),
        ("text", b"two\nlines ", Some(u64::MAX)),
    ];
    for (k, v, x) in old {
        encode_line(&mut log, &mut scratch, "set", "", k, Some(v), x);
    }
    std::fs::write(&path, &log).unwrap();
    let last_line = || {
        let text = std::fs::read_to_string(&path).unwrap();
        text.lines().last().unwrap().to_string()
    };
    let header = |p: &Path| std::fs::read(p).unwrap()[..HEADER.len()].to_vec();
    rt().block_on(async {
        let c = unicache::open(&format!("file:{}", path.display()))
            .await
            .unwrap();
        for (k, v, _) in old {
            assert_eq!(c.get(k).await.unwrap().as_deref(), Some(v), "{k}");
        }
        c.set("new", br#"{"b":2}"#, None).await.unwrap();
        assert_eq!(header(&path), HEADER_V1, "still version 1");
        assert!(
            last_line().ends_with(r#","v":"{\"b\":2}"}"#),
            "{}",
            last_line()
        );
        c.compact().await.unwrap();
        assert_eq!(header(&path), HEADER, "compaction writes version 2");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""k":"json","v":"{\"a\":1}""#),
            "old lines copied as they were"
        );
        c.set("newer", br#"{"c":[3]}"#, None).await.unwrap();
        assert!(
            last_line().ends_with(r#","j":{"c":[3]}}"#),
            "{}",
            last_line()
        );
        drop(c);
        let c = unicache::open(&format!("file:{}", path.display()))
            .await
            .unwrap();
        for (k, v, _) in old {
            assert_eq!(c.get(k).await.unwrap().as_deref(), Some(v), "{k}");
        }
        assert_eq!(
            c.get("new").await.unwrap().as_deref(),
            Some(&br#"{"b":2}"#[..])
        );
        assert_eq!(
            c.get("newer").await.unwrap().as_deref(),
            Some(&br#"{"c":[3]}"#[..])
        );
        assert_eq!(
            c.stats().await.unwrap().server.unwrap()["corrupt_records"],
            0
        );
    });
}

/// Values stored through the library come back byte for byte, JSON text
/// or not (whitespace around it, newlines inside, invalid UTF-8), after a
/// reopen and a compaction, and a reader of the raw log sees JSON values
/// as JSON.
#[test]
fn json_and_other_values_round_trip_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.log");
    let url = format!("file:{}", path.display());
    let values: Vec<&[u8]> = vec![
        br#"{"key":"a","n":[1,2,{"x":5}]}"#,
        br#"{"a":1,"x":7,"t":8}"#,
        b"123",
        br#""quoted""#,
        b" {\"lead\":1}",
        b"{\"trail\":1}\n",
        b"{\"inner\":\n1}",
        b"[1,\r\n2]",
        b"plain text",
        b"",
        &[0xff, 0xfe, b'{'],
        b"\"\xff\"",
    ];
    rt().block_on(async {
        let c = unicache::open(&url).await.unwrap();
        for (i, v) in values.iter().enumerate() {
            let ttl = (i % 2 == 0).then(|| Duration::from_secs(3600));
            c.set(&format!("k{i}"), v, ttl).await.unwrap();
        }
        for round in 0..3 {
            if round == 1 {
                c.compact().await.unwrap();
            }
            let c2 = unicache::open(&url).await.unwrap();
            for (i, v) in values.iter().enumerate() {
                let k = format!("k{i}");
                assert_eq!(
                    c.get(&k).await.unwrap().as_deref(),
                    Some(*v),
                    "{k} round {round}"
                );
                assert_eq!(
                    c2.get(&k).await.unwrap().as_deref(),
                    Some(*v),
                    "{k} reopened"
                );
            }
        }
    });
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let mut json = 0;
    for line in text.lines().skip(1) {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(v) = j.get("j") {
            let i: usize = j["k"].as_str().unwrap()[1..].parse().unwrap();
            let want: serde_json::Value = serde_json::from_slice(values[i]).unwrap();
            assert_eq!(*v, want);
            json += 1;
        }
    }
    assert_eq!(json, 4, "{text}");
}

/// A process that only reads (no write of its own sends it to the path)
/// follows another process's compactions and the writes after them:
/// through the record writers leave in the lock file, without a `stat`
/// per operation. In the last round the compacted log plus the other
/// process's write is exactly as long as the log the reader has indexed:
/// a reader that compared lengths only (and kept reading its old file)
/// would return the old value there.
#[test]
fn a_reader_notices_another_processs_compaction() {
    use unicache::bench_support::file::encode_line;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    let url = format!("file:{}", path.display());
    let len = || std::fs::metadata(&path).unwrap().len();
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    let cli = |args: &[&str]| {
        unicache()
            .arg(args[0])
            .args(["-q", "--cache", &url])
            .args(&args[1..])
            .assert()
            .success();
    };
    rt().block_on(async {
        let writer = unicache::open(&url).await.unwrap();
        for i in 0..200 {
            writer
                .set("k", format!("old-{i}").as_bytes(), None)
                .await
                .unwrap();
        }
        writer.set("gone", b"x", None).await.unwrap();
        drop(writer);
        let reader = unicache::open(&url).await.unwrap();
        assert_eq!(
            reader.get("k").await.unwrap().as_deref(),
            Some(&b"old-199"[..])
        );
        for round in 0..2 {
            let before = inode();
            cli(&["compact"]);
            assert_ne!(inode(), before, "compaction replaced the file");
            let v = format!("new-{round}");
            cli(&["set", "k", &v]);
            assert_eq!(
                reader.get("k").await.unwrap().as_deref(),
                Some(v.as_bytes())
            );
        }
        cli(&["delete", "gone"]);
        assert_eq!(reader.get("gone").await.unwrap(), None);
        // Grow the log past the reader's view with dead lines, let the
        // reader catch up, then compact and write one line that makes the
        // new file exactly as long as the old one.
        for i in 0..100 {
            cli_pad(&url, i);
        }
        assert!(reader.contains("pad").await.unwrap());
        let seen = len();
        cli(&["compact"]);
        let compacted = len();
        assert!(compacted + 60 < seen, "{compacted} vs {seen}");
        let want = (seen - compacted) as usize;
        // A value whose `set` line (checksum digits included) is `want`
        // bytes: lengths and letters tried until the checksum fits.
        let value = (1..want)
            .flat_map(|n| ['z', 'y', 'x', 'w', 'u', 's'].map(|c| c.to_string().repeat(n)))
            .find(|v| {
                let (mut out, mut scratch) = (Vec::new(), Vec::new());
                encode_line(
                    &mut out,
                    &mut scratch,
                    "set",
                    "",
                    "k",
                    Some(v.as_bytes()),
                    None,
                );
                out.len() == want
            })
            .expect("a value of the right length");
        cli(&["set", "k", &value]);
        assert_eq!(len(), seen, "as long as the file the reader indexed");
        let got = reader.get("k").await.unwrap().unwrap_or_default();
        assert!(
            got == value.as_bytes(),
            "stale value {:?}",
            String::from_utf8_lossy(&got[..got.len().min(20)])
        );
        assert_eq!(
            reader.get("pad").await.unwrap().as_deref(),
            Some(&b"pad-99"[..])
        );
    });
}

/// One `set pad pad-I` by another process.
fn cli_pad(url: &str, i: usize) {
    unicache()
        .args(["set", "-q", "--cache", url, "pad", &format!("pad-{i}")])
        .assert()
        .success();
}

/// A log whose first line names a later format version is refused by name
/// (upgrade), not as "not a file log", and is left as it was.
#[test]
fn a_log_from_a_newer_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for v in ["3", "10"] {
        let path = dir.path().join(format!("v{v}.log"));
        let body = format!("{{\"unicache\":\"file-log\",\"version\":{v}}}\n");
        std::fs::write(&path, &body).unwrap();
        let e = rt()
            .block_on(unicache::open(&format!("file:{}", path.display())))
            .unwrap_err();
        assert_eq!(e.kind(), unicache::ErrorKind::Unsupported, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("file-log version {v}")), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), body, "untouched");
    }
}
