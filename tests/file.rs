//! The file log store as users and crashes meet it: the real binary, real
//! files, SIGKILLed writers, several processes at once, damaged bytes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Std, Stdio};
use std::time::Duration;

use assert_cmd::Command;
use proptest::prelude::*;

fn unicache() -> Command {
    Command::cargo_bin("unicache").unwrap()
}

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("unicache")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn crash_value(key: &str) -> String {
    format!("value-{key}-{}", "z".repeat(key.len() % 50))
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
    // Every line is JSON: `jq -c 'select(.op=="set") | {k, v}'` reads it.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["unicache"], "file-log");
    assert_eq!(lines[1]["op"], "set");
    assert_eq!(lines[1]["k"], "a");
    assert_eq!(lines[1]["v"], r#"{"key":"a","n":1}"#);
}

#[test]
fn sigkilled_writer_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.log");
    let url = format!("file:{}", path.display());
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for run in 0..20 {
        let mut child = Std::new(bin())
            .args([
                "bench",
                "crash-writer",
                "--cache",
                &url,
                "--run",
                &format!("r{run}"),
            ])
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
    let pos = bytes.windows(7).position(|w| w == b"\"v\":\"2\"").unwrap() + 5;
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
            unicache::backends::file::HEADER
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
        let _ = unicache::backends::file::decode_line(&bytes);
        let mut line = Vec::new();
        let mut scratch = Vec::new();
        unicache::backends::file::encode_line(&mut line, &mut scratch, "set", "", "key", Some(&bytes), None);
        line.pop();
        let orig = unicache::backends::file::decode_line(&line).unwrap();
        let i = flip % line.len();
        line[i] ^= 0x20;
        if let Ok(op) = unicache::backends::file::decode_line(&line) {
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
            f.write_all(unicache::backends::file::HEADER).unwrap();
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
