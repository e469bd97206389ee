//! The `unicache` binary as a user runs it: real files in temp dirs, the
//! seed's input format, JSON Lines, stdin, and every bad input we promise a
//! clear one-line error for.

use std::path::Path;
use std::process::Output;

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{stderr, unicache};
use serde_json::Value;

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
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
        "/../data/sample_input.json"
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
    let mut cmd = common::unicache_std();
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
    let lines = common::padded_jsonl("k", 20_000);
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

/// Runs `unicache ARGS` in `dir` with its stdout pipe closed before it
/// writes: a closed stdout is not an error.
fn with_closed_stdout(dir: &Path, args: &[&str]) -> Output {
    let mut child = common::unicache_std()
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn outputs_naming_the_input_or_a_store_are_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = write_file(d, "in.jsonl", "{\"key\":\"a\",\"v\":1}\n");
    let db = d.join("c.db");
    let log = d.join("c.log");
    let sqlite = format!("sqlite:{}", db.display());
    let file = format!("file:{}", log.display());
    let seeded = unicache()
        .args([
            "write", "-q", "-i", &input, "-c", &sqlite, "-c", &file, "-o",
        ])
        .arg(d.join("s.json"))
        .output()
        .unwrap();
    common::assert_exit(&seeded, 0);
    std::os::unix::fs::symlink(&db, d.join("link.db")).unwrap();
    let before: Vec<(String, Vec<u8>)> = ["in.jsonl", "c.db", "c.log", "s.json"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(d.join(n)).unwrap()))
        .collect();
    let cases: &[(&str, &str, &str)] = &[
        ("-o", "c.db", "a file of target"),
        ("-o", "./c.db", "a file of target"),
        ("-o", "link.db", "a file of target"),
        ("-o", "sub/../c.db", "a file of target"),
        ("-o", "c.db-wal", "a file of target"),
        ("-o", "c.db-shm", "a file of target"),
        ("-o", "c.log.lock", "a file of target"),
        ("-o", "in.jsonl", "the input"),
        ("--rejects", "in.jsonl", "the input"),
        ("--rejects", "c.log", "a file of target"),
        ("--rejects", "s.json", "the --output file"),
    ];
    std::fs::create_dir(d.join("sub")).unwrap();
    for (flag, path, why) in cases {
        let mut args = vec!["write", "-q", "-i", "in.jsonl", "-c", "sqlite:c.db", "-c"];
        args.push("file:c.log");
        if *flag == "--rejects" {
            args.extend(["-o", "s.json"]);
        }
        args.extend([*flag, *path]);
        let out = unicache().current_dir(d).args(&args).output().unwrap();
        assert_fatal(&out, &[flag, path, why, "refusing"]);
    }
    for (name, bytes) in before {
        assert_eq!(
            std::fs::read(d.join(&name)).unwrap(),
            bytes,
            "{name} changed"
        );
    }
    // Nothing was created either (no temp file, no summary beside them).
    assert!(
        files_in(d).iter().all(|f| !f.ends_with(".tmp")),
        "{:?}",
        files_in(d)
    );

    // export -o into the cache's own file is refused the same way.
    let out = unicache()
        .current_dir(d)
        .args(["export", "-c", "sqlite:c.db", "-o", "./c.db"])
        .output()
        .unwrap();
    assert_fatal(&out, &["c.db", "refusing"]);
    assert!(
        unicache()
            .current_dir(d)
            .args(["get", "-c", "sqlite:c.db", "a"])
            .output()
            .unwrap()
            .status
            .success()
    );
}

/// A file log opened through a symlink locks `REAL.lock` (README "The file
/// log", Symlinks): an output naming the real file or that lock, by the real
/// name or the link's, is one of the store's files. `--rejects
/// real/x.log.lock` used to replace the real lock (the guard knew only
/// `link.log.lock`).
#[test]
fn outputs_naming_the_real_file_behind_a_symlinked_store_are_refused() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("real")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink("real/x.log", d.join("link.log")).unwrap();
    // The link to the directory names the same lock another way.
    std::os::unix::fs::symlink("real", d.join("dirlink")).unwrap();
    write_file(d, "in.jsonl", "{\"key\":\"a\",\"v\":1}\n");
    let set = unicache()
        .current_dir(d)
        .args(["set", "-c", "file:link.log", "k", "v"])
        .output()
        .unwrap();
    common::assert_exit(&set, 0);
    let state = |p: &str| {
        let p = d.join(p);
        let m = std::fs::symlink_metadata(&p).unwrap();
        (m.ino(), std::fs::read(&p).unwrap())
    };
    let (log, lock) = (state("real/x.log"), state("real/x.log.lock"));
    assert!(
        std::fs::symlink_metadata(d.join("link.log"))
            .unwrap()
            .is_symlink()
    );
    let names = [
        "real/x.log",
        "real/x.log.lock",
        "dirlink/x.log.lock",
        "sub/../real/x.log.lock",
        "link.log",
    ];
    for cache in ["file:link.log", "file:dirlink/../link.log"] {
        for path in names {
            let runs: [&[&str]; 4] = [
                &["write", "-q", "-i", "in.jsonl", "-c", cache, "-o", path],
                &[
                    "write",
                    "-q",
                    "-i",
                    "in.jsonl",
                    "-c",
                    cache,
                    "-o",
                    "s.json",
                    "--rejects",
                    path,
                ],
                &["import", "-q", "-c", cache, "in.jsonl", "--rejects", path],
                &["export", "-c", cache, "-o", path],
            ];
            for args in runs {
                let out = unicache().current_dir(d).args(args).output().unwrap();
                assert_fatal(&out, &[path, "refusing"]);
            }
        }
    }
    assert_eq!(state("real/x.log"), log, "the log was replaced");
    assert_eq!(state("real/x.log.lock"), lock, "the lock was replaced");
    assert_eq!(files_in(&d.join("real")), ["x.log", "x.log.lock"]);
    let get = unicache()
        .current_dir(d)
        .args(["get", "-c", "file:real/x.log", "k"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&get.stdout), "v\n");
}

#[test]
fn a_run_that_stops_before_writing_leaves_the_previous_summary_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.json"), "previous summary").unwrap();
    std::fs::write(d.join("r.jsonl"), "previous rejects").unwrap();
    let ok = write_file(d, "ok.jsonl", "{\"key\":\"a\"}\n");
    let bad_config = write_file(d, "cfg.json", "{\"backends\": [\"memory\", ");
    let unknown = write_file(d, "unk.json", r#"{"backends":["postgres"],"records":[]}"#);
    let runs: Vec<Vec<&str>> = vec![
        vec!["-i", &ok, "-c", "mongodb://x"],
        vec!["-i", &bad_config],
        vec!["-i", &unknown],
        vec!["-i", &ok, "-c", "memory://", "--ttl", "0"],
    ];
    for extra in runs {
        let out = unicache()
            .current_dir(d)
            .args(["write", "-q", "-o", "s.json", "--rejects", "r.jsonl"])
            .args(&extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(d.join("s.json")).unwrap(),
            "previous summary"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("r.jsonl")).unwrap(),
            "previous rejects"
        );
    }
    assert_eq!(
        files_in(d),
        ["cfg.json", "ok.jsonl", "r.jsonl", "s.json", "unk.json"]
    );
}

/// Runs `sh -c 'umask 000; exec unicache ARGS'` in `dir`.
fn under_umask_000(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(assert_cmd::cargo::cargo_bin("unicache"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn exports_rejects_and_summaries_are_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_file(d, "in.jsonl", "{\"key\":\"a\"}\n{\"nokey\":1}\n");
    let out = under_umask_000(
        d,
        &[
            "write",
            "-q",
            "-i",
            "in.jsonl",
            "-c",
            "sqlite:c.db",
            "-o",
            "s.json",
            "--rejects",
            "r.jsonl",
        ],
    );
    common::assert_exit(&out, 1);
    let out = under_umask_000(d, &["export", "-q", "-c", "sqlite:c.db", "-o", "e.jsonl"]);
    common::assert_exit(&out, 0);
    for f in ["s.json", "r.jsonl", "e.jsonl", "c.db"] {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert!(
        std::fs::read_to_string(d.join("e.jsonl"))
            .unwrap()
            .contains("\"key\":\"a\"")
    );
}

#[test]
fn summaries_to_dev_null_and_to_a_full_disk_are_still_printed() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "in.jsonl", "{\"key\":\"a\"}\n{\"key\":\"b\"}\n");
    let write_to = |output: &std::path::Path| {
        unicache()
            .args(["write", "-q", "-i", &input, "-c", "memory://", "-o"])
            .arg(output)
            .output()
            .unwrap()
    };
    let out = write_to(Path::new("/dev/null"));
    common::assert_exit(&out, 0);
    assert_eq!(summary(&out)["records_written"], 2);

    // /dev/stdout in a pipe is written directly (and printed as usual).
    let out = write_to(Path::new("/dev/stdout"));
    common::assert_exit(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("\"records_written\": 2")
            .count(),
        2
    );
    // A symlink is followed: the file it names is replaced, the link stays.
    let real = dir.path().join("real.json");
    std::fs::write(&real, "old").unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link.json")).unwrap();
    let out = write_to(&dir.path().join("link.json"));
    common::assert_exit(&out, 0);
    assert!(
        std::fs::symlink_metadata(dir.path().join("link.json"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&real)
            .unwrap()
            .contains("\"records_written\": 2")
    );
    std::fs::remove_file(dir.path().join("link.json")).unwrap();
    std::fs::remove_file(&real).unwrap();

    // The summary cannot be saved (a 100-byte file-size limit): printed
    // anyway, exit 2, one line naming the file; the old summary is intact.
    let s = dir.path().join("s.json");
    std::fs::write(&s, "old").unwrap();
    let out = unicache_with_fsize_limit(
        100,
        &[
            "write",
            "-q",
            "-i",
            &input,
            "-c",
            "memory://",
            "-o",
            s.to_str().unwrap(),
        ],
    );
    assert_fatal(&out, &["cannot write summary", "s.json"]);
    assert_eq!(summary(&out)["records_written"], 2);
    assert_eq!(std::fs::read_to_string(&s).unwrap(), "old");
    assert_eq!(files_in(dir.path()), ["in.jsonl", "s.json"]);
}

#[test]
fn full_disk_errors_for_export_and_rejects_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines: String = (0..2000)
        .map(|i| {
            format!(
                "{{\"key\":\"k{i}\",\"pad\":\"{}\"}}\n{{\"nokey\":{i}}}\n",
                "x".repeat(100)
            )
        })
        .collect();
    write_file(d, "in.jsonl", &lines);
    let out = unicache()
        .current_dir(d)
        .args([
            "write",
            "-q",
            "-i",
            "in.jsonl",
            "-c",
            "sqlite:c.db",
            "-o",
            "s0.json",
        ])
        .output()
        .unwrap();
    common::assert_exit(&out, 1);
    std::fs::write(d.join("e.jsonl"), "previous export").unwrap();
    let out = unicache_with_fsize_limit(
        64 * 1024,
        &[
            "export",
            "-c",
            &format!("sqlite:{}", d.join("c.db").display()),
            "-o",
            d.join("e.jsonl").to_str().unwrap(),
        ],
    );
    assert_fatal(&out, &["cannot write export", "e.jsonl"]);
    assert_eq!(
        std::fs::read_to_string(d.join("e.jsonl")).unwrap(),
        "previous export"
    );

    let out = unicache_with_fsize_limit(
        64 * 1024,
        &[
            "write",
            "-q",
            "-i",
            d.join("in.jsonl").to_str().unwrap(),
            "-c",
            "memory://",
            "-o",
            d.join("s.json").to_str().unwrap(),
            "--rejects",
            d.join("r.jsonl").to_str().unwrap(),
        ],
    );
    assert_fatal(&out, &["cannot write rejects", "r.jsonl"]);
    assert_eq!(summary(&out)["records_skipped"], 2000);
    assert!(
        files_in(d).iter().all(|f| !f.ends_with(".tmp")),
        "{:?}",
        files_in(d)
    );
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines = common::padded_jsonl("k", 5000);
    write_file(d, "in.jsonl", &lines);
    let set = unicache()
        .current_dir(d)
        .args(["set", "-c", "sqlite:c.db", "big", "-"])
        .write_stdin("v".repeat(1 << 20))
        .output()
        .unwrap();
    common::assert_exit(&set, 0);
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "write",
            "-q",
            "-i",
            "in.jsonl",
            "-c",
            "sqlite:c.db",
            "-o",
            "s.json",
        ],
        vec!["export", "-q", "-c", "sqlite:c.db"],
        vec!["export", "-q", "-c", "sqlite:c.db", "--format", "json"],
        vec!["get", "-c", "sqlite:c.db", "big"],
        vec!["stats", "-c", "sqlite:c.db"],
        vec!["delete", "-c", "sqlite:c.db", "k1"],
    ];
    for args in runs {
        let out = with_closed_stdout(d, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{:?}: {}",
            &args[..3],
            stderr(&out)
        );
        assert!(
            stderr(&out).is_empty(),
            "{:?}: {}",
            &args[..3],
            stderr(&out)
        );
    }
    // The exit code stays what the work came to: delete of nothing is 1.
    let out = with_closed_stdout(d, &["delete", "-c", "sqlite:c.db", "absent"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // write's summary was still saved, and the records stored.
    assert_eq!(
        serde_json::from_str::<Value>(&std::fs::read_to_string(d.join("s.json")).unwrap()).unwrap()
            ["records_written"],
        5000
    );
}

#[test]
fn a_first_entry_over_a_mebibyte_round_trips_through_export_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big: String = "0123456789abcdef".repeat(2 << 16); // 2 MiB
    let src = "sqlite:src.db";
    let run = |args: &[&str], stdin: Vec<u8>| {
        unicache()
            .current_dir(d)
            .args(args)
            .write_stdin(stdin)
            .output()
            .unwrap()
    };
    // "key" and "value" as keys: a seed cache file that looks like an export line.
    for (k, v) in [
        ("big", big.as_str()),
        ("key", "a"),
        ("value", "b"),
        ("small", "x"),
    ] {
        common::assert_exit(&run(&["set", "-c", src, k, "-"], v.as_bytes().to_vec()), 0);
    }
    for format in ["jsonl", "json"] {
        let exported = run(&["export", "-q", "-c", src, "--format", format], Vec::new());
        common::assert_exit(&exported, 0);
        let dst = format!("file:dst-{format}.log");
        let out = run(&["import", "-c", &dst, "-"], exported.stdout);
        common::assert_exit(&out, 0);
        assert_eq!(summary(&out)["imported"], 4, "{format}");
        for (k, v) in [
            ("big", big.as_str()),
            ("key", "a"),
            ("value", "b"),
            ("small", "x"),
        ] {
            let got = run(&["get", "--raw", "-c", &dst, k], Vec::new());
            common::assert_exit(&got, 0);
            assert!(got.stdout == v.as_bytes(), "{format}: {k} differs");
        }
    }
    // The seed's cache file on one line, its first value over a mebibyte.
    let seed = format!("{{\"big\": \"{big}\", \"small\": \"x\"}}");
    let out = run(&["import", "-c", "file:seed.log", "-"], seed.into_bytes());
    common::assert_exit(&out, 0);
    assert_eq!(summary(&out)["imported"], 2);
    let got = run(&["get", "--raw", "-c", "file:seed.log", "big"], Vec::new());
    assert!(got.stdout == big.as_bytes());
    // A BOM and leading blank lines are fine too.
    let out = run(
        &["import", "-c", "memory://", "-"],
        b"\xEF\xBB\xBF\n\n{\"key\":\"a\",\"value\":\"b\"}\n".to_vec(),
    );
    common::assert_exit(&out, 0);
    assert_eq!(summary(&out)["imported"], 1);
    // A missing input is an error that creates no cache.
    let out = run(
        &["import", "-c", "sqlite:new.db", "missing.jsonl"],
        Vec::new(),
    );
    assert_fatal(&out, &["missing.jsonl", "not found"]);
    assert!(!d.join("new.db").exists());
    // export keeps its format: sorted fields, ttl_ms before the value.
    let out = run(
        &["set", "-c", "sqlite:fmt.db", "--ttl", "1h", "t", "soon"],
        Vec::new(),
    );
    common::assert_exit(&out, 0);
    let out = run(&["set", "-c", "sqlite:fmt.db", "b", "-"], vec![0, 255]);
    common::assert_exit(&out, 0);
    let out = run(&["export", "-q", "-c", "sqlite:fmt.db"], Vec::new());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], r#"{"key":"b","value_b64":"AP8="}"#);
    assert!(
        lines[1].starts_with(r#"{"key":"t","ttl_ms":"#)
            && lines[1].ends_with(r#","value":"soon"}"#),
        "{text}"
    );
    let out = run(
        &["export", "-q", "-c", "sqlite:fmt.db", "--format", "json"],
        Vec::new(),
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\n\"t\": \"soon\"\n}\n"
    );
    // A directory is an error naming it.
    let out = unicache()
        .args(["import", "-c", "memory://"])
        .arg(d)
        .output()
        .unwrap();
    assert_fatal(&out, &[d.to_str().unwrap(), "directory"]);
}

#[test]
fn compact_prints_the_stats_and_nothing_with_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for url in ["file:c.log", "sqlite:c.db"] {
        let set = unicache()
            .current_dir(d)
            .args(["set", "-c", url, "k", "v"])
            .output()
            .unwrap();
        common::assert_exit(&set, 0);
        let loud = unicache()
            .current_dir(d)
            .args(["compact", "-c", url])
            .output()
            .unwrap();
        common::assert_exit(&loud, 0);
        let stats: serde_json::Value = serde_json::from_slice(&loud.stdout).unwrap();
        assert!(stats.is_object(), "{url}: {stats}");
        let quiet = unicache()
            .current_dir(d)
            .args(["compact", "-q", "-c", url])
            .output()
            .unwrap();
        common::assert_exit(&quiet, 0);
        assert!(
            quiet.stdout.is_empty() && quiet.stderr.is_empty(),
            "{url}: compact -q printed {:?} {:?}",
            String::from_utf8_lossy(&quiet.stdout),
            String::from_utf8_lossy(&quiet.stderr)
        );
    }
}

#[test]
fn read_only_commands_create_nothing_and_bare_names_mean_one_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for url in [
        "sqlite:nope.db",
        "file:nope.log",
        "sqlite:missing/dir/x.db",
        "file:missing/x.log",
    ] {
        for cmd in [
            vec!["get", "-c", url, "k"],
            vec!["stats", "-c", url],
            vec!["export", "-c", url],
            vec!["delete", "-c", url, "k"],
            vec!["clear", "-c", url],
            vec!["compact", "-c", url],
        ] {
            let out = unicache().current_dir(d).args(&cmd).output().unwrap();
            let path = url.split_once(':').unwrap().1;
            assert_fatal(&out, &[path, "does not exist"]);
            assert!(files_in(d).is_empty(), "{cmd:?} created {:?}", files_in(d));
        }
    }
    // `write` with its defaults puts bare `sqlite` in data/; `get` reads it there.
    std::fs::create_dir(d.join("data")).unwrap();
    write_file(
        &d.join("data"),
        "sample_input.json",
        r#"{"records":[{"key":"u1"}],"backends":["sqlite","file"]}"#,
    );
    common::assert_exit(
        &unicache()
            .current_dir(d)
            .args(["write", "-q"])
            .output()
            .unwrap(),
        0,
    );
    for name in ["sqlite", "file"] {
        let got = unicache()
            .current_dir(d)
            .args(["get", "-c", name, "u1"])
            .output()
            .unwrap();
        common::assert_exit(&got, 0);
        assert_eq!(got.stdout, b"{\"key\":\"u1\"}\n");
    }
    // With --output elsewhere, --dir points the other commands at it.
    let out = unicache()
        .current_dir(d)
        .args([
            "write",
            "-q",
            "-i",
            "data/sample_input.json",
            "-o",
            "else/s.json",
        ])
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    assert!(d.join("else/cache.sqlite3").exists());
    let got = unicache()
        .current_dir(d)
        .args(["get", "--dir", "else", "-c", "sqlite", "u1"])
        .output()
        .unwrap();
    common::assert_exit(&got, 0);
}

#[test]
fn summary_rejects_have_the_rejects_file_shape_and_say_how_many_were_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines: String = (0..25).map(|i| format!("{{\"nokey\":{i}}}\n")).collect();
    let input = write_file(d, "in.jsonl", &format!("{lines}{{\"key\":\"a\"}}\n"));
    let rejects = d.join("r.jsonl");
    let out = write_cmd(
        d,
        &input,
        &["-c", "memory://", "--rejects", rejects.to_str().unwrap()],
    );
    common::assert_exit(&out, 1);
    let s = summary(&out);
    assert_eq!(s["rejects"].as_array().unwrap().len(), 20);
    assert_eq!(s["rejects_omitted"], 5);
    assert!(
        s["rejects_note"].as_str().unwrap().contains("r.jsonl"),
        "{s}"
    );
    let file: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(file.len(), 25);
    for (a, b) in s["rejects"].as_array().unwrap().iter().zip(&file) {
        assert_eq!(a, b);
    }
    assert_eq!(file[0]["target"], Value::Null);
    assert_eq!(file[0]["record"], "{\"nokey\":0}");
    // Without --rejects the note points at it.
    let out = write_cmd(d, &input, &["-c", "memory://"]);
    assert!(
        summary(&out)["rejects_note"]
            .as_str()
            .unwrap()
            .contains("--rejects")
    );

    // A run that stopped after the format was known reports that format.
    let bad = write_file(d, "bad.json", "[{\"key\":\"a\"}, {\"key\": ]");
    let out = write_cmd(d, &bad, &["-c", "memory://"]);
    assert_fatal(&out, &["bad.json"]);
    assert_eq!(summary(&out)["input"]["format"], "array");
}

#[test]
fn usage_errors_and_warnings_are_one_unicache_line() {
    for args in [
        &["write", "--format", "x"][..],
        &["write", "--bogus"],
        &["get"],
        &["write", "--batch-size", "0"],
        &["nosuchcommand"],
        &["set", "-c", "memory://", "k", "v", "--ttl", "0"],
    ] {
        let out = unicache().args(args).output().unwrap();
        assert_fatal(&out, &[]);
    }
    let out = unicache().args(["get"]).output().unwrap();
    assert!(stderr(&out).contains("--cache"), "{}", stderr(&out));
    let out = unicache().output().unwrap();
    assert_fatal(&out, &["a command is required", "write"]);
    // A warning: no backends anywhere.
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "in.jsonl", "{\"key\":\"a\"}\n");
    let out = unicache()
        .args(["write", "-i", &input, "-o"])
        .arg(dir.path().join("s.json"))
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    let e = stderr(&out);
    assert!(e.starts_with("unicache: warning: no backends"), "{e:?}");
}

#[test]
fn duration_and_number_flags_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_file(d, "in.jsonl", "{\"key\":\"a\"}\n");
    let values = "0|1|18446744073709551615|18446744073709551616|99999999999999999999999999|-1|1.5\
                  || |abc|5m|584942417355y|9999999999999999999d|18446744073709551615d|1ns|100y|36500d\
                  |1e9|0x10|+5|5 m|1h1h1h1h|584942417355y 1y|18446744073709551615s 1ns";
    for v in values.split('|') {
        let write = [
            "write",
            "-q",
            "-i",
            "in.jsonl",
            "-c",
            "memory://",
            "-o",
            "s.json",
        ];
        let mut runs: Vec<Vec<&str>> = ["--ttl", "--batch-size", "--retries", "--give-up-after"]
            .iter()
            .map(|flag| [&write[..], &["-c", "sqlite:c.db", flag, v]].concat())
            .collect();
        for url in ["memory://", "sqlite:c.db", "file:c.log"] {
            runs.push(vec!["set", "-c", url, "k", "v", "--ttl", v]);
        }
        for args in runs {
            let out = unicache().current_dir(d).args(&args).output().unwrap();
            let e = stderr(&out);
            assert!(matches!(out.status.code(), Some(0..=2)), "{args:?}: {e}");
            assert!(!e.contains("panicked"), "{args:?}: {e}");
            if out.status.code() == Some(2) {
                assert_fatal(&out, &[]);
            }
        }
    }
}

/// Writes 3,000 records to `url` through stdin with `flags`, freezing the server (SIGSTOP) after the first 500 were stored
/// and thawing it after `thaw` (`None`: at the end). Returns the output,
/// how long the run took after the freeze, and the rejects file's lines.
fn write_through_a_freeze(
    server: &common::servers::Process,
    url: &str,
    flags: &[&str],
    thaw: Option<std::time::Duration>,
) -> (Output, std::time::Duration, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("r.jsonl");
    let child = common::unicache_std()
        .args(["write", "-q", "-i", "-", "-c", url])
        .args(flags)
        .arg("--rejects")
        .arg(&rejects)
        .arg("-o")
        .arg(dir.path().join("s.json"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let record = |i: usize| format!("{{\"key\":\"frozen:{i}\",\"v\":{i}}}\n");
    let (out, took) = feed_across_a_freeze(child, server, record, thaw);
    let lines = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, took, lines)
}

/// Feeds lines 0..3,000 of `line` to `child`'s stdin, freezing `server`
/// (SIGSTOP) after the first 500 and thawing it `thaw` after the rest went
/// in (`None`: once the run ended). Waits at most 60 s for the run (then
/// kills it and fails); returns its output and the time since the freeze.
fn feed_across_a_freeze(
    mut child: std::process::Child,
    server: &common::servers::Process,
    line: impl Fn(usize) -> String,
    thaw: Option<std::time::Duration>,
) -> (Output, std::time::Duration) {
    use std::io::Write as _;
    let mut stdin = child.stdin.take().unwrap();
    let first: String = (0..500).map(&line).collect();
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    server.signal(libc::SIGSTOP);
    let started = std::time::Instant::now();
    let rest: String = (500..3000).map(&line).collect();
    stdin.write_all(rest.as_bytes()).unwrap();
    drop(stdin);
    if let Some(t) = thaw {
        std::thread::sleep(t);
        server.signal(libc::SIGCONT);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = rx.recv_timeout(std::time::Duration::from_secs(60));
    let took = started.elapsed();
    server.signal(libc::SIGCONT);
    let Ok(Ok(out)) = out else {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("a run through a frozen server still running 60 s after the freeze");
    };
    (out, took)
}

/// A server frozen for good: the run ends within a bound, exits 1,
/// accounts for every record, and lists the failed ones in the rejects file
/// with the reason.
fn write_to_a_frozen_server(
    server: &common::servers::Process,
    url: &str,
    flags: &[&str],
    bound: std::time::Duration,
) {
    let (out, took, lines) = write_through_a_freeze(server, url, flags, None);
    common::assert_exit(&out, 1);
    assert!(took < bound, "took {took:?}");
    let s = summary(&out);
    let n = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(n("records_read"), 3000, "{s}");
    assert_eq!(
        n("records_read"),
        n("records_written") + n("records_failed") + n("records_skipped")
    );
    assert!(
        n("records_written") >= 500 && n("records_failed") > 0,
        "{s}"
    );
    assert_eq!(lines.len() as u64, n("records_failed"));
    // The writer's give-up ("target down"), or memcached's own marking of a
    // server that stopped answering ("marked down"), whichever comes first.
    assert!(
        lines.iter().any(|l| {
            let r = l["reason"].as_str().unwrap();
            r.contains("target down") || r.contains("marked down")
        }),
        "{}",
        lines[lines.len() - 1]
    );
}

/// A URL for the server on `port` with 500 ms connect and response timeouts.
fn half_second_timeouts(scheme: &str, port: u16) -> String {
    format!("{scheme}://127.0.0.1:{port}?response_timeout=500ms&connect_timeout=500ms")
}

#[test]
fn a_frozen_redis_is_given_up_on_after_give_up_after() {
    let server = common::servers::redis_server();
    let url = half_second_timeouts("redis", server.port);
    let flags = ["--batch-size", "100", "--give-up-after", "3s"];
    write_to_a_frozen_server(&server, &url, &flags, std::time::Duration::from_secs(30));
    // Without retries each batch fails on its own timeout: give-up still
    // counts those failures (300 batches x 500 ms would be 150 s / in flight).
    let flags = [
        "--batch-size",
        "10",
        "--retries",
        "0",
        "--give-up-after",
        "2s",
    ];
    write_to_a_frozen_server(&server, &url, &flags, std::time::Duration::from_secs(10));
}

#[test]
fn a_frozen_memcached_is_given_up_on_after_give_up_after() {
    let server = common::servers::memcached_server();
    let url = half_second_timeouts("memcached", server.port);
    let flags = ["--batch-size", "100", "--give-up-after", "3s"];
    write_to_a_frozen_server(&server, &url, &flags, std::time::Duration::from_secs(30));
}

#[test]
fn a_redis_frozen_for_two_seconds_loses_nothing() {
    let server = common::servers::redis_server();
    let url = half_second_timeouts("redis", server.port);
    let thaw = Some(std::time::Duration::from_secs(2));
    let flags = ["--batch-size", "100"];
    let (out, _, lines) = write_through_a_freeze(&server, &url, &flags, thaw);
    common::assert_exit(&out, 0);
    assert_eq!(summary(&out)["records_written"], 3000);
    assert!(lines.is_empty());
    assert_eq!(
        common::servers::ask(server.port, "DBSIZE\r\n").as_deref(),
        Some(":3000\r\n")
    );
}

/// The seed config's `backends` are found whatever comes before the first
/// key: a BOM, and more leading whitespace than any read buffer holds (the
/// writer detected the format from one 64 KiB buffer and fell back to the
/// default `memory` target).
#[test]
fn seed_config_after_a_bom_and_300_kib_of_whitespace_keeps_its_backends() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ws.sqlite3");
    let cfg = format!(
        "\u{feff}{}{{\"records\": [{{\"key\": \"k1\"}}, {{\"key\": \"k2\"}}], \"backends\": [\"sqlite:{}\"]}}",
        " \n".repeat(150 * 1024),
        db.display()
    );
    let input = write_file(dir.path(), "ws.json", &cfg);
    for stdin in [false, true] {
        let mut cmd = unicache();
        cmd.args(["write", "-q", "--output"])
            .arg(dir.path().join("o.json"));
        if stdin {
            cmd.args(["--input", "-"]).write_stdin(cfg.clone());
        } else {
            cmd.args(["--input", &input]);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let s = summary(&out);
        assert_eq!(s["input"]["format"], "seed", "{s}");
        assert_eq!(s["targets"][0]["backend"], "sqlite", "{s}");
        assert_eq!(s["records_written"], 2, "{s}");
    }
}

/// Outputs through a directory that does not exist yet, stdin redirected
/// from the file an output names, an input that is a target's store, and
/// two outputs on one stream are all refused before anything is touched
/// (each overwrote the input or a store, or never ended, before).
#[test]
fn outputs_through_missing_dirs_stdin_inputs_and_store_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = write_file(d, "in.jsonl", "{\"key\":\"a\"}\n{\"key\":\"b\"}\n");
    let original = std::fs::read(&input).unwrap();
    let db = d.join("c.sqlite3");
    let db_url = format!("sqlite:{}", db.display());
    // Make the store first, so destroying it would show.
    let out = unicache()
        .args(["write", "-q", "-i", &input, "-c", &db_url, "-o"])
        .arg(d.join("s.json"))
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    let refused = |out: &Output, what: &str| {
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(out));
        assert!(stderr(out).contains("refusing"), "{what}: {}", stderr(out));
    };
    let via_missing = d.join("nd").join("..").join("in.jsonl");
    let out = unicache()
        .args(["write", "-q", "-i", &input, "-c", "memory://", "-o"])
        .arg(&via_missing)
        .output()
        .unwrap();
    refused(&out, "-o nd/../in.jsonl");
    let out = unicache()
        .args(["write", "-q", "-i", &input, "-c", &db_url, "-o"])
        .arg(d.join("nd2").join("..").join("c.sqlite3"))
        .output()
        .unwrap();
    refused(&out, "-o nd2/../c.sqlite3");
    // stdin redirected from the file (assert_cmd would pipe its content).
    let out = common::unicache_std()
        .args(["write", "-q", "-i", "-", "-c", "memory://", "-o", &input])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    refused(&out, "-i - -o in.jsonl < in.jsonl");
    let out = unicache()
        .args(["write", "-q", "-i", &input, "-c", "memory://"])
        .args(["--rejects", "/dev/stdout", "-o", "/dev/stdout"])
        .output()
        .unwrap();
    refused(&out, "-o /dev/stdout --rejects /dev/stdout");
    assert_eq!(std::fs::read(&input).unwrap(), original);
    assert!(!d.join("nd").exists() && !d.join("nd2").exists());
    let got = unicache()
        .args(["get", "-c", &db_url, "a"])
        .output()
        .unwrap();
    common::assert_exit(&got, 0);

    // A file log given as the input of a write into itself.
    let log = d.join("log.jsonl");
    let log_url = format!("file:{}", log.display());
    let out = unicache()
        .args(["write", "-q", "-i", &input, "-c", &log_url, "-o"])
        .arg(d.join("s3.json"))
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    let before = std::fs::read(&log).unwrap();
    let out = unicache()
        .args(["write", "-q", "--key-field", "k", "-i"])
        .arg(&log)
        .args(["-c", &log_url, "-o"])
        .arg(d.join("s4.json"))
        .output()
        .unwrap();
    refused(&out, "-i log -c file:log");
    assert_eq!(std::fs::read(&log).unwrap(), before);
}

/// `import` goes through the writer: every entry is read, written or
/// failed in its summary, entries keep their own TTL inside mixed batches
/// (runs of one TTL), and binary values survive.
#[test]
fn import_accounts_for_every_entry_and_keeps_each_entrys_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines: String = (0..10)
        .map(|i| match i % 3 {
            0 => format!("{{\"key\":\"k{i}\",\"ttl_ms\":3600000,\"value\":\"v{i}\"}}\n"),
            1 => format!("{{\"key\":\"k{i}\",\"value\":\"v{i}\"}}\n"),
            _ => format!(
                "{{\"key\":\"k{i}\",\"ttl_ms\":{},\"value_b64\":\"AP8=\"}}\n",
                7_200_000 + i
            ),
        })
        .collect();
    let out = unicache()
        .current_dir(d)
        .args([
            "import",
            "-q",
            "-c",
            "sqlite:i.db",
            "--batch-size",
            "4",
            "-",
        ])
        .write_stdin(lines)
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    let s = summary(&out);
    for field in ["imported", "records_read", "records_written"] {
        assert_eq!(s[field], 10, "{field}: {s}");
    }
    assert_eq!(
        (s["failed"].as_u64(), s["records_failed"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(s["input"]["format"], "jsonl", "{s}");
    let exported = unicache()
        .current_dir(d)
        .args(["export", "-q", "-c", "sqlite:i.db"])
        .output()
        .unwrap();
    for line in String::from_utf8(exported.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let i: u64 = v["key"].as_str().unwrap()[1..].parse().unwrap();
        let ttl = v["ttl_ms"].as_u64();
        match i % 3 {
            0 => assert!(
                ttl.is_some_and(|t| t > 3_000_000 && t <= 3_600_000),
                "{line}"
            ),
            1 => assert_eq!(
                (ttl, v["value"].as_str()),
                (None, Some(&*format!("v{i}"))),
                "{line}"
            ),
            _ => {
                assert!(
                    ttl.is_some_and(|t| t > 7_000_000 && t <= 7_200_000 + i),
                    "{line}"
                );
                assert_eq!(v["value_b64"], "AP8=", "{line}");
            }
        }
    }
    // A malformed line stops the import (exit 2) after accounting for the
    // entries before it.
    let out = unicache()
        .current_dir(d)
        .args(["import", "-c", "memory://", "-"])
        .write_stdin("{\"key\":\"a\",\"value\":\"b\"}\n{\"key\":\n")
        .output()
        .unwrap();
    assert_fatal(&out, &["line 2", "malformed JSON"]);
    let s = summary(&out);
    assert_eq!(
        (s["records_read"].as_u64(), s["imported"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
}

/// Entries a cache refuses (values over memcached's item size) fail one by
/// one: counted in the summary, written to --rejects, exit 1; the others
/// are imported.
#[test]
fn import_exits_1_and_lists_entries_that_failed() {
    let server = common::servers::memcached_server();
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(2 << 20);
    let mut input: String = (0..20)
        .map(|i| format!("{{\"key\":\"imp:{i}\",\"value\":\"{i}\"}}\n"))
        .collect();
    input += &format!("{{\"key\":\"imp:big1\",\"value\":\"{big}\"}}\n");
    input += &format!("{{\"key\":\"imp:big2\",\"ttl_ms\":60000,\"value\":\"{big}\"}}\n");
    let rejects = dir.path().join("rejects.jsonl");
    let url = format!("memcached://127.0.0.1:{}", server.port);
    let out = unicache()
        .args(["import", "-q", "-c", &url, "--rejects"])
        .arg(&rejects)
        .arg("-")
        .write_stdin(input)
        .output()
        .unwrap();
    common::assert_exit(&out, 1);
    let s = summary(&out);
    assert_eq!(
        (s["imported"].as_u64(), s["failed"].as_u64()),
        (Some(20), Some(2)),
        "{s}"
    );
    assert_eq!(s["records_read"], 22, "{s}");
    assert_eq!(s["targets"][0]["failed"], 2, "{s}");
    let lines: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["position"]["line"], 21);
    assert!(
        lines[1]["reason"].as_str().unwrap().contains("too large"),
        "{}",
        lines[1]
    );
    assert_eq!(
        common::servers::ask(server.port, "get imp:7\r\n").as_deref(),
        Some("VALUE imp:7 0 1\r\n7\r\nEND\r\n")
    );
}

/// A Redis frozen for two seconds mid-import: the writer's retries carry
/// the import through; nothing is lost and the retries are counted.
#[test]
fn import_retries_through_a_frozen_redis() {
    let server = common::servers::redis_server();
    let url = format!(
        "redis://127.0.0.1:{}?response_timeout=500ms&connect_timeout=500ms",
        server.port
    );
    let child = common::unicache_std()
        .args(["import", "-q", "-c", &url, "--batch-size", "100", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let entry = |i: usize| format!("{{\"key\":\"imp:{i}\",\"value\":\"{i}\"}}\n");
    let (out, _) = feed_across_a_freeze(
        child,
        &server,
        entry,
        Some(std::time::Duration::from_secs(2)),
    );
    common::assert_exit(&out, 0);
    let s = summary(&out);
    assert_eq!(
        (s["imported"].as_u64(), s["failed"].as_u64()),
        (Some(3000), Some(0)),
        "{s}"
    );
    assert!(s["targets"][0]["retries"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(
        common::servers::ask(server.port, "DBSIZE\r\n").as_deref(),
        Some(":3000\r\n")
    );
}

/// The bench helpers' sizes and counts are bounded flags, not panics
/// (a huge --value-size aborted on allocation, --requests 0 indexed past
/// the end of an empty list).
#[test]
fn bench_helper_flags_are_usage_errors_not_panics() {
    for args in [
        &[
            "bench",
            "gen",
            "--records",
            "1",
            "--value-size",
            "18446744073709551615",
        ][..],
        &[
            "bench",
            "get-latency",
            "--cache",
            "memory://",
            "--requests",
            "0",
        ],
    ] {
        let out = unicache().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("unicache: error: invalid value"),
            "{}",
            stderr(&out)
        );
    }
}

/// Issue 10's commands on a SQLite file and a file log: `set --if-absent`,
/// `incr KEY [DELTA]`, `touch KEY --ttl DUR`, `ttl KEY`, with their exit
/// codes and one-line messages.
#[test]
fn atomic_commands_if_absent_incr_touch_ttl() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("sqlite:{}", dir.path().join("a.sqlite3").display()),
        format!("file:{}", dir.path().join("a.jsonl").display()),
    ] {
        let run = |args: &[&str]| {
            let mut cmd = unicache();
            cmd.arg(args[0]).args(["--cache", &url]).args(&args[1..]);
            cmd.output().unwrap()
        };
        let text = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();
        // incr creates the store and the counter; DELTA may be negative.
        let out = run(&["incr", "n"]);
        common::assert_exit(&out, 0);
        assert_eq!(text(&out), "1\n");
        assert_eq!(text(&run(&["incr", "n", "41"])), "42\n");
        assert_eq!(text(&run(&["incr", "n", "-50"])), "-8\n");
        assert_eq!(text(&run(&["get", "n"])), "-8\n");

        let out = run(&["set", "k", "first", "--if-absent"]);
        common::assert_exit(&out, 0);
        let out = run(&["set", "k", "second", "--if-absent"]);
        common::assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("\"k\" already exists") && err.lines().count() == 1,
            "{err}"
        );
        assert_eq!(text(&run(&["get", "k"])), "first\n");

        // ttl: "never", then milliseconds after touch; absent keys exit 1.
        assert_eq!(text(&run(&["ttl", "k"])), "never\n");
        common::assert_exit(&run(&["touch", "k", "--ttl", "5m"]), 0);
        let ms: u64 = text(&run(&["ttl", "k"])).trim().parse().unwrap();
        assert!(ms > 290_000 && ms <= 300_000, "{ms}");
        assert_eq!(text(&run(&["get", "k"])), "first\n", "value kept");
        for args in [&["ttl", "nope"][..], &["touch", "nope", "--ttl", "5m"]] {
            let out = run(args);
            common::assert_exit(&out, 1);
            assert!(
                stderr(&out).contains("\"nope\" not found"),
                "{}",
                stderr(&out)
            );
        }

        // Errors: one line, exit 2.
        let out = run(&["incr", "k"]);
        common::assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(
            err.starts_with("unicache: error: ") && err.contains("key=k"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        for args in [
            &["touch", "k"][..],
            &["touch", "k", "--ttl", "0"],
            &["incr", "n", "x"],
        ] {
            let out = run(args);
            common::assert_exit(&out, 2);
            assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        }
    }
    // Read-only commands on a missing store create nothing.
    let missing = dir.path().join("missing.sqlite3");
    let url = format!("sqlite:{}", missing.display());
    for cmd in ["ttl", "touch"] {
        let mut c = unicache();
        c.args([cmd, "--cache", &url, "k"]);
        if cmd == "touch" {
            c.args(["--ttl", "5m"]);
        }
        common::assert_exit(&c.output().unwrap(), 2);
    }
    assert!(!missing.exists());
}

/// One inline command to the Redis on `port`; its reply, trimmed.
fn redis_cmd(port: u16, cmd: &str) -> String {
    common::servers::ask(port, &format!("{cmd}\r\n"))
        .unwrap_or_else(|| panic!("no reply to {cmd}"))
        .trim_end()
        .to_string()
}

/// Every key, value and whether it has a TTL (`PTTL` > 0), sorted.
fn redis_state(port: u16) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for i in 0..20 {
        let k = format!("bench:{i}");
        let v = redis_cmd(port, &format!("GET {k}"));
        let ttl: i64 = redis_cmd(port, &format!("PTTL {k}"))
            .trim_start_matches(':')
            .parse()
            .unwrap();
        out.push((k, v, ttl > 0));
    }
    out
}

/// The user's keys `bench:0..20` (half with a TTL) in db 0 of a fresh
/// redis-server.
fn redis_with_users_bench_keys() -> common::servers::Process {
    let server = common::servers::redis_server();
    for i in 0..20 {
        let ex = if i % 2 == 0 { " EX 600" } else { "" };
        assert_eq!(
            redis_cmd(server.port, &format!("SET bench:{i} user-{i}{ex}")),
            "+OK"
        );
    }
    server
}

/// `bench run` against a Redis db that holds the user's `bench:0..20`: it
/// used to overwrite them (and leave 50 keys without TTL). Now it works in a
/// namespace of its own and deletes what it wrote; a namespace that holds
/// anything is refused.
#[test]
fn bench_run_leaves_a_users_redis_keys_alone_and_nothing_behind() {
    let server = redis_with_users_bench_keys();
    let p = server.port;
    let before = redis_state(p);
    let url = format!("redis://127.0.0.1:{p}");
    let out = unicache()
        .args(["bench", "run", "-q", "-c", &url, "--ops", "get,set,mixed"])
        .args(["--keys", "50", "--concurrency", "1,4", "--requests", "300"])
        .arg("--json")
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 6, "{rows}");
    assert!(
        rows.as_array().unwrap().iter().all(|r| r["errors"] == 0),
        "{rows}"
    );
    assert_eq!(redis_state(p), before, "the user's keys changed");
    assert_eq!(redis_cmd(p, "DBSIZE"), ":20", "something was left behind");

    // A namespace that holds anything is refused, by URL or by flag.
    assert_eq!(redis_cmd(p, "SET mine:bench:3 x"), "+OK");
    for args in [
        vec!["-c".to_string(), format!("{url}/0?namespace=mine")],
        vec![
            "-c".to_string(),
            url.clone(),
            "--namespace".into(),
            "mine".into(),
        ],
    ] {
        let out = unicache()
            .args(["bench", "run", "-q", "--requests", "10"])
            .args(&args)
            .output()
            .unwrap();
        assert_fatal(&out, &["namespace \"mine\" already holds 1 entries"]);
        assert_eq!(redis_cmd(p, "GET mine:bench:3"), "$1\r\nx");
    }
    assert_eq!(redis_cmd(p, "DBSIZE"), ":21");
}

/// A child killed (and waited for) if the test fails while it runs.
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What `bench run` writes has a TTL (a killed run leaves nothing for
/// good), and Ctrl-C stops it and deletes what it wrote (exit 2).
#[test]
fn bench_run_keys_expire_and_ctrl_c_cleans_up() {
    let server = redis_with_users_bench_keys();
    let p = server.port;
    let before = redis_state(p);
    let url = format!("redis://127.0.0.1:{p}");
    for signal in [libc::SIGKILL, libc::SIGINT] {
        let mut child = Reaped(Some(
            common::unicache_std()
                .args(["bench", "run", "-q", "-c", &url, "--ops", "get,set"])
                .args(["--keys", "500", "--concurrency", "2", "--duration", "30s"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        let t = std::time::Instant::now();
        while redis_cmd(p, "DBSIZE") != ":520" {
            assert!(t.elapsed().as_secs() < 20, "the prefill never finished");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let c = child.0.take().unwrap();
        unsafe { libc::kill(c.id() as i32, signal) };
        let out = c.wait_with_output().unwrap();
        assert!(t.elapsed().as_secs() < 20, "it did not stop at once");
        if signal == libc::SIGKILL {
            // Every key it wrote expires; then they are removed here.
            let keys = redis_cmd(p, "KEYS unicache-bench-*");
            let names: Vec<&str> = keys
                .lines()
                .filter(|l| !l.starts_with(['*', '$']))
                .collect();
            assert_eq!(names.len(), 500, "{keys}");
            for k in names {
                let ttl: i64 = redis_cmd(p, &format!("PTTL {k}"))
                    .trim_start_matches(':')
                    .parse()
                    .unwrap();
                assert!(ttl > 0 && ttl <= 3_600_000 + 2 * 30_000 * 2, "{k}: {ttl}");
                redis_cmd(p, &format!("DEL {k}"));
            }
        } else {
            common::assert_exit(&out, 2);
            assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
        }
        assert_eq!(redis_cmd(p, "DBSIZE"), ":20");
        assert_eq!(redis_state(p), before, "the user's keys changed");
    }
}

/// A SQLite file holding the user's `bench:0..20` (half with a TTL): `bench
/// run` leaves them as they were and nothing of its own; a store it created
/// is removed; a non-empty namespace is refused. `--report` naming the
/// store is refused before anything runs.
#[test]
fn bench_run_on_a_sqlite_file_touches_nothing_of_the_users() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let entries: String = (0..20)
        .map(|i| {
            let ttl = if i % 2 == 0 { ",\"ttl_ms\":600000" } else { "" };
            format!("{{\"key\":\"bench:{i}\",\"value\":\"user-{i}\"{ttl}}}\n")
        })
        .collect();
    let input = write_file(d, "user.jsonl", &entries);
    let db = format!("sqlite:{}", d.join("user.db").display());
    common::assert_exit(
        &unicache()
            .args(["import", "-q", "-c", &db, &input])
            .output()
            .unwrap(),
        0,
    );
    let export = || -> Vec<(String, String, bool)> {
        let out = unicache().args(["export", "-c", &db]).output().unwrap();
        common::assert_exit(&out, 0);
        let mut v: Vec<_> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let e: Value = serde_json::from_str(l).unwrap();
                let ttl = e["ttl_ms"].as_u64();
                assert!(ttl.is_none_or(|t| t > 500_000), "{l}");
                (
                    e["key"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap().to_string(),
                    ttl.is_some(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = export();
    assert_eq!(before.len(), 20);
    let fresh = d.join("fresh.db");
    let out = unicache()
        .args(["bench", "run", "-q", "-c", &db, "-c"])
        .arg(format!("sqlite:{}", fresh.display()))
        .args(["--ops", "get,set", "--keys", "50", "--concurrency", "1,2"])
        .args(["--requests", "200", "--json"])
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    assert_eq!(export(), before, "the user's entries changed");
    assert!(!fresh.exists(), "the store it created is still there");
    let rows: i64 = rusqlite::Connection::open(d.join("user.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM cache", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 20, "rows of another namespace were left behind");

    // A namespace that holds anything is refused, by URL or by flag; an
    // empty --namespace (the default namespace) too.
    let mine = format!("{db}?namespace=mine");
    let out = unicache()
        .args(["set", "-c", &mine, "bench:1", "x"])
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    for args in [
        &["-c", mine.as_str()][..],
        &["-c", &db, "--namespace", "mine"],
        &["-c", &db, "--namespace", ""],
    ] {
        let out = unicache()
            .args(["bench", "run", "-q", "--requests", "5"])
            .args(args)
            .output()
            .unwrap();
        assert_fatal(&out, &["namespace"]);
    }
    assert_eq!(export(), before);
    let out = unicache()
        .args(["get", "-c", &mine, "bench:1"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n");

    // --report naming the store (or its journal) is refused first.
    for report in ["user.db", "user.db-wal"] {
        let out = unicache()
            .current_dir(d)
            .args([
                "bench",
                "run",
                "-q",
                "-c",
                "sqlite:user.db",
                "--requests",
                "5",
            ])
            .args(["--report", report])
            .output()
            .unwrap();
        assert_fatal(&out, &["--report", report, "refusing"]);
    }
    assert_eq!(export(), before);
}

/// The baselines that write into a user's server (`set-many`,
/// `get-latency`, `memcached-raw`, `memcached-get-many`), and `bench run` on
/// memcached (its namespace's version key included), use keys of their own
/// and delete them; `sqlite-raw` refuses an existing file (it used to delete
/// it) and removes its own.
#[test]
fn bench_baselines_leave_the_users_data_alone() {
    let server = redis_with_users_bench_keys();
    let p = server.port;
    assert_eq!(redis_cmd(p, "SET key:3 user"), "+OK");
    assert_eq!(redis_cmd(p, "SET key:latency user"), "+OK");
    let url = format!("redis://127.0.0.1:{p}");
    for args in [
        &["set-many", "--cache", &url, "--records", "2000"][..],
        &["get-latency", "--cache", &url, "--requests", "100"],
    ] {
        let out = unicache().arg("bench").args(args).output().unwrap();
        common::assert_exit(&out, 0);
    }
    assert_eq!(redis_cmd(p, "DBSIZE"), ":22");
    assert_eq!(redis_cmd(p, "GET key:3"), "$4\r\nuser");
    assert_eq!(redis_cmd(p, "GET key:latency"), "$4\r\nuser");

    let mc = common::servers::memcached_server();
    let m = mc.port;
    let items = || {
        let stats = common::servers::ask(m, "stats\r\n").unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("STAT curr_items "))
            .unwrap()
            .trim()
            .to_string()
    };
    assert!(
        common::servers::ask(m, "set key:3 0 0 4\r\nuser\r\n")
            .unwrap()
            .starts_with("STORED")
    );
    assert!(
        common::servers::ask(m, "set gm:3 0 0 4\r\nuser\r\n")
            .unwrap()
            .starts_with("STORED")
    );
    let murl = format!("memcached://127.0.0.1:{m}");
    let server_arg = format!("127.0.0.1:{m}");
    for args in [
        &[
            "memcached-raw",
            "--server",
            &server_arg,
            "--records",
            "3000",
        ][..],
        &[
            "memcached-get-many",
            "--cache",
            &murl,
            "--keys",
            "200",
            "--rounds",
            "3",
        ],
        &["set-many", "--cache", &murl, "--records", "2000"],
        &[
            "run",
            "-q",
            "-c",
            &murl,
            "--keys",
            "50",
            "--requests",
            "100",
            "--ops",
            "get,set",
        ],
    ] {
        let out = unicache().arg("bench").args(args).output().unwrap();
        common::assert_exit(&out, 0);
        assert_eq!(items(), "2", "{args:?} left items behind");
    }
    for k in ["key:3", "gm:3"] {
        let got = common::servers::ask(m, &format!("get {k}\r\n")).unwrap();
        assert!(got.contains("\r\nuser\r\n"), "{k}: {got}");
    }

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mine.db");
    std::fs::write(&db, "precious").unwrap();
    let out = unicache()
        .args(["bench", "sqlite-raw", "--records", "10", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_fatal(&out, &["exists", "refusing"]);
    assert_eq!(std::fs::read(&db).unwrap(), b"precious");
    let fresh = dir.path().join("raw.db");
    let out = unicache()
        .args(["bench", "sqlite-raw", "--records", "10", "--db"])
        .arg(&fresh)
        .output()
        .unwrap();
    common::assert_exit(&out, 0);
    assert_eq!(files_in(dir.path()), ["mine.db"]);
}

/// `import - --rejects in.jsonl < in.jsonl` replaced its input with the
/// rejects (stdin was not known to the guard there): an output that is the
/// file stdin is redirected from is refused, the file intact.
#[test]
fn an_output_that_is_the_redirected_stdin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = "{\"key\":\"a\",\"value\":\"1\"}\nnot json\n";
    write_file(d, "in.jsonl", text);
    for args in [
        &[
            "import",
            "-q",
            "-c",
            "sqlite:c.db",
            "-",
            "--rejects",
            "in.jsonl",
        ][..],
        &[
            "import",
            "-q",
            "-c",
            "sqlite:c.db",
            "-",
            "--rejects",
            "./in.jsonl",
        ],
        &[
            "write",
            "-q",
            "-i",
            "-",
            "-c",
            "memory://",
            "-o",
            "in.jsonl",
        ],
    ] {
        // A real redirection (`< in.jsonl`): stdin is the file itself.
        let stdin = std::fs::File::open(d.join("in.jsonl")).unwrap();
        let out = common::unicache_std()
            .current_dir(d)
            .args(args)
            .stdin(stdin)
            .output()
            .unwrap();
        assert_fatal(&out, &["in.jsonl", "refusing"]);
        assert_eq!(std::fs::read_to_string(d.join("in.jsonl")).unwrap(), text);
    }
}
