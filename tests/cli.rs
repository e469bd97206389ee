//! The `unicache` binary as a user runs it: real files in temp dirs, the
//! seed's input format, JSON Lines, stdin, and every bad input we promise a
//! clear one-line error for.

use std::path::Path;
use std::process::Output;

mod common;

use assert_cmd::Command;
use serde_json::Value;

fn unicache() -> Command {
    Command::cargo_bin("unicache").unwrap()
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Runs `write` with --input/--output in `dir`, returning the process output.
fn write_cmd(dir: &Path, input: &str, extra: &[&str]) -> Output {
    let out = dir.join("out").join("summary.json");
    unicache()
        .args(["write", "--quiet", "--input", input, "--output"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn seed_sample_writes_memory_and_sqlite_next_to_output() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/sample_input.json"
    ))
    .unwrap();
    let input = write_file(dir.path(), "in.json", &sample);
    let out = write_cmd(dir.path(), &input, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["records_written"], 6);
    assert_eq!(s["backends_used"], serde_json::json!(["memory", "sqlite"]));
    assert_eq!(s["records_skipped"], 0);
    assert_eq!(s["input"]["format"], "seed");
    assert_eq!(s["targets"][1]["written"], 6);
    // The summary file holds the same JSON.
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["records_written"], 6);

    // The SQLite default is a real file beside the output, owner-only.
    let db = dir.path().join("out/cache.sqlite3");
    assert!(db.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let got = unicache()
        .args([
            "get",
            "--cache",
            &format!("sqlite:{}", db.display()),
            "user:1",
        ])
        .output()
        .unwrap();
    assert_eq!(got.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim_end(),
        r#"{"key":"user:1","name":"Ada Lovelace","role":"admin","score":98.5}"#
    );
    // And a plain SQL reader sees the same (documented layout).
    let conn = rusqlite::Connection::open(&db).unwrap();
    let v: Vec<u8> = conn
        .query_row("select value from cache where key='42'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        v,
        br#"{"key":42,"note":"integer keys become their decimal text"}"#
    );
}

#[test]
fn jsonl_with_bad_lines_is_partial_and_accounted() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(
        dir.path(),
        "in.jsonl",
        "{\"key\":\"a\",\"v\":1}\n{\"v\":2}\n{oops\n[1]\n{\"key\":\"b\"}\n",
    );
    let rejects = dir.path().join("rejects.jsonl");
    let db = dir.path().join("c.sqlite3");
    let out = write_cmd(
        dir.path(),
        &input,
        &[
            "--cache",
            &format!("sqlite:{}", db.display()),
            "--rejects",
            rejects.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["records_read"], 5);
    assert_eq!(s["records_written"], 2);
    assert_eq!(s["records_skipped"], 3);
    let lines: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["position"]["line"], 2);
    assert!(
        lines[1]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    assert!(
        lines[2]["reason"]
            .as_str()
            .unwrap()
            .contains("not an object")
    );
    // Nothing was stored under "".
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("select count(*) from cache where key=''", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn stdin_jsonl_and_seed_with_backends_last() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.sqlite3");
    let out = unicache()
        .args(["write", "-q", "--input", "-", "--output"])
        .arg(dir.path().join("o.json"))
        .args(["--cache", &format!("sqlite:{}", db.display())])
        .write_stdin("{\"key\":\"x\"}\n{\"key\":\"y\"}\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary(&out)["records_written"], 2);

    // Seed config on stdin, backends after records: still honoured.
    let cfg = format!(
        "{{\"records\": [{{\"key\": \"k1\"}}], \"backends\": [\"sqlite:{}\"]}}",
        db.display()
    );
    let out = unicache()
        .args(["write", "-q", "--input", "-", "--output"])
        .arg(dir.path().join("o.json"))
        .write_stdin(cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["targets"][0]["backend"], "sqlite");
    assert_eq!(s["records_written"], 1);
}

#[test]
fn missing_key_policies() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "in.json", r#"[{"key":"a"},{"name":"no key"}]"#);
    let out = write_cmd(
        dir.path(),
        &input,
        &["--cache", "memory://", "--missing-key", "hash"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary(&out)["records_written"], 2);

    let out = write_cmd(
        dir.path(),
        &input,
        &["--cache", "memory://", "--missing-key", "fail"],
    );
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains("record 2") && e.contains("\"key\""), "{e}");

    let out = write_cmd(
        dir.path(),
        &input,
        &["--cache", "memory://", "--key-field", "name"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(summary(&out)["records_skipped"], 1);
}

/// A fatal error: exit 2, one line on stderr containing every `needles`.
fn assert_fatal(out: &Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(out));
    let e = stderr(out);
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
    assert!(e.starts_with("unicache: error: "), "{e}");
    for n in needles {
        assert!(e.contains(n), "{n:?} not in {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn bad_inputs_get_clear_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let missing = d.join("nope.json");
    assert_fatal(
        &write_cmd(d, missing.to_str().unwrap(), &[]),
        &["nope.json", "not found"],
    );

    let bad = write_file(
        d,
        "bad.json",
        "{\"records\": [\n  {\"key\": \"a\"},\n  {\"key\": }\n]}",
    );
    let out = write_cmd(d, &bad, &["--cache", "memory://"]);
    assert_fatal(&out, &["bad.json", "line 3 column"]);
    // What was read before the error is still accounted for in the summary.
    assert_eq!(summary(&out)["records_written"], 1);

    let empty = write_file(d, "empty.json", "  \n");
    assert_fatal(&write_cmd(d, &empty, &[]), &["empty.json", "empty"]);

    let ok = write_file(d, "ok.json", r#"[{"key":"a"}]"#);
    assert_fatal(
        &write_cmd(d, &ok, &["--cache", "mongodb://x"]),
        &["unknown backend", "mongodb"],
    );
    let unknown_name = write_file(
        d,
        "cfg.json",
        r#"{"records":[{"key":"a"}],"backends":["postgres"]}"#,
    );
    assert_fatal(
        &write_cmd(d, &unknown_name, &[]),
        &["unknown backend", "postgres"],
    );

    // Unwritable output (its parent is a regular file).
    let out = unicache()
        .args([
            "write",
            "-q",
            "--input",
            &ok,
            "--cache",
            "memory://",
            "--output",
        ])
        .arg(d.join("ok.json").join("summary.json"))
        .output()
        .unwrap();
    assert_fatal(&out, &["output", "ok.json"]);

    // Unwritable database path.
    let out = write_cmd(d, &ok, &["--cache", &format!("sqlite:{}/x.db", ok)]);
    assert_fatal(&out, &["sqlite", "x.db"]);

    // A corrupt (non-SQLite) database file.
    let corrupt = write_file(
        d,
        "corrupt.sqlite3",
        &"this is not a database\n".repeat(500),
    );
    let out = write_cmd(d, &ok, &["--cache", &format!("sqlite:{corrupt}")]);
    assert_fatal(&out, &["corrupt.sqlite3", "not a SQLite database"]);

    // The seed's own two-column table is refused, not overwritten.
    let seed_db = d.join("seed.sqlite3");
    rusqlite::Connection::open(&seed_db)
        .unwrap()
        .execute_batch("CREATE TABLE cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        .unwrap();
    let out = write_cmd(
        d,
        &ok,
        &["--cache", &format!("sqlite:{}", seed_db.display())],
    );
    assert_fatal(&out, &["seed.sqlite3", "layout"]);

    // Usage errors exit 2 as well.
    let out = unicache()
        .args(["write", "--batch-size", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn single_cache_commands() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ops.sqlite3").display());
    let run = |args: &[&str]| unicache().args(args).output().unwrap();

    assert_eq!(
        run(&["set", "--cache", &url, "greeting", "hello"])
            .status
            .code(),
        Some(0)
    );
    let out = run(&["get", "--cache", &url, "greeting"]);
    assert_eq!(out.stdout, b"hello\n");
    let out = run(&["get", "--cache", &url, "absent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"));

    let out = run(&["set", "--cache", &url, "--ttl", "1", "short", "x"]);
    assert_eq!(out.status.code(), Some(0));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        run(&["get", "--cache", &url, "short"]).status.code(),
        Some(1)
    );

    let out = run(&["stats", "--cache", &url]);
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["backend"], "sqlite");
    assert_eq!(s["entries"], 1);

    let out = run(&["delete", "--cache", &url, "greeting", "absent"]);
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"1\n"[..])
    );
    assert_eq!(
        run(&["delete", "--cache", &url, "greeting"]).status.code(),
        Some(1)
    );

    run(&["set", "--cache", &url, "a", "1"]);
    assert_eq!(run(&["clear", "--cache", &url]).status.code(), Some(0));
    let s: Value = serde_json::from_slice(&run(&["stats", "--cache", &url]).stdout).unwrap();
    assert_eq!(s["entries"], 0);

    let out = run(&["set", "--cache", &url, "--ttl", "0", "k", "v"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn several_processes_share_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("shared.sqlite3").display());
    let inputs: Vec<String> = (0..4)
        .map(|p| {
            (0..5000)
                .map(|i| format!("{{\"key\":\"k{}\",\"writer\":{p}}}\n", i % 2500 + p * 1000))
                .collect()
        })
        .collect();
    common::write_at_once(dir.path(), &db, &inputs, 100);
    // Keys k0..k5499 were written (overlapping ranges); each by one of its writers.
    let conn = rusqlite::Connection::open(dir.path().join("shared.sqlite3")).unwrap();
    let n: i64 = conn
        .query_row("select count(*) from cache", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 5500);
}

/// A 1 MiB tmpfs mounted for one test and unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (and a line on stderr) where mounting is not permitted.
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipping the real full-disk case: cannot mount a tmpfs here ({}); \
                 the RLIMIT_FSIZE case still runs",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Runs `unicache` with a file-size limit (RLIMIT_FSIZE) standing in for a
/// full disk: writes past it fail (EFBIG) the way a full disk fails them.
fn unicache_with_fsize_limit(bytes: u64, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("unicache"));
    cmd.args(args);
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    cmd.output().unwrap()
}

/// Writes 20,000 records (2.6 MB) into a file and a SQLite target in
/// `cache_dir`, where `run` makes the disk fill up, and checks what a user
/// must see: no panic, a partial exit, every record written or failed, a
/// one-line error naming the file, and a store that still opens holding
/// exactly what was written. Returns each target's first error.
fn fill_the_disk(cache_dir: &std::path::Path, run: impl Fn(&[&str]) -> Output) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..20_000)
        .map(|i| format!("{{\"key\":\"k{i}\",\"pad\":\"{}\"}}\n", "x".repeat(100)))
        .collect();
    let input = write_file(dir.path(), "in.jsonl", &lines);
    let mut errors = Vec::new();
    for target in ["file", "sqlite"] {
        let url = format!(
            "{target}:{}",
            cache_dir.join(format!("full.{target}")).display()
        );
        let summary = dir.path().join(format!("s-{target}.json"));
        let args = [
            "write", "-q", "--input", &input, "--cache", &url, "--output",
        ];
        let out = run(&[&args[..], &[summary.to_str().unwrap()]].concat());
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(1), "{target}: {err}");
        let s: Value = serde_json::from_str(
            &std::fs::read_to_string(&summary)
                .unwrap_or_else(|_| panic!("{target}: no summary; stderr: {err}")),
        )
        .unwrap();
        let t = &s["targets"][0];
        let (written, failed) = (
            t["written"].as_u64().unwrap(),
            t["failed"].as_u64().unwrap(),
        );
        assert_eq!(written + failed, 20_000, "{target}: {s}");
        assert!(written > 0 && failed > 0, "{target}: {s}");
        let e = t["errors"][0].as_str().unwrap();
        assert!(e.contains(&format!("full.{target}")), "{target}: {e}");
        assert!(!e.contains('\n'));
        errors.push(e.to_string());
        // What was acknowledged is there: the store opens and holds it all.
        let got = unicache()
            .args(["stats", "--cache", &url])
            .output()
            .unwrap();
        let st: Value = serde_json::from_slice(&got.stdout)
            .unwrap_or_else(|_| panic!("{target}: stats: {}", stderr(&got)));
        assert_eq!(st["entries"].as_u64(), Some(written), "{target}: {st}");
        std::fs::remove_file(cache_dir.join(format!("full.{target}"))).unwrap();
    }
    errors
}

#[test]
fn a_full_disk_is_reported_and_every_record_accounted() {
    // A file-size limit fails writes past it (EFBIG) the way a full disk does.
    let dir = tempfile::tempdir().unwrap();
    fill_the_disk(dir.path(), |args| {
        unicache_with_fsize_limit(512 * 1024, args)
    });
}

#[test]
fn a_really_full_filesystem_is_reported_and_every_record_accounted() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let errors = fill_the_disk(disk.dir.path(), |args| {
        unicache().args(args).output().unwrap()
    });
    for e in errors {
        assert!(e.contains("disk full"), "{e}");
    }
}
