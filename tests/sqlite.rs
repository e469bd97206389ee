//! SQLite when upkeep fails: a change the database committed is reported as
//! made, and a failed purge or checkpoint around it is a warning, not the
//! command's error. A full disk is a real 2 MiB tmpfs (mounting needs root:
//! skipped with a message elsewhere, a failure when `CI=true`).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_exit, stderr, unicache};
use rusqlite::Connection;

/// A mounted tmpfs, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax, `2m`); `None` (after saying
    /// why) where mounting is not permitted, unless `CI=true`: CI runs as
    /// root, so there the test must run, not skip.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true but a tmpfs cannot be mounted for the full-disk test: {why}"
                );
                eprintln!("SKIPPED: the full-disk test needs `mount -t tmpfs` (root): {why}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a file still open): detach it now, freed when closed.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Writes zeros to `dir/fill` until the disk is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("fill");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Whatever a short write left.
    while f.write(&[0]).is_ok_and(|n| n == 1) {}
    path
}

fn value_len(keep: &Connection, key: &str) -> Option<i64> {
    keep.query_row(
        "SELECT length(value) FROM cache WHERE namespace = '' AND key = ?1",
        [key],
        |r| r.get(0),
    )
    .ok()
}

/// On a full disk `set`, `delete` and `clear --all` commit (the WAL has room
/// left from earlier use) but the checkpoint at close cannot grow the
/// database file: each exits 0 with a one-line warning that the change
/// stands, and the change is there. Before, each printed "disk full" and
/// exited 2 although the change was made.
#[test]
fn a_committed_change_on_a_full_disk_exits_0_with_a_warning() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let db = fs.path().join("c.db");
    let url = format!("sqlite:{}", db.display());
    assert_exit(
        &unicache()
            .args(["set", "-c", &url, "init", "x"])
            .output()
            .unwrap(),
        0,
    );
    // A second connection held open keeps the -wal and -shm files (and the
    // WAL's allocated size) between the CLI's runs. Grow the WAL, then
    // shrink the database with VACUUM: the WAL keeps room for new frames,
    // the database file none to grow into once the disk is full.
    let keep = Connection::open(&db).unwrap();
    keep.execute_batch(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60)
         INSERT INTO cache (namespace, key, value) SELECT 'pad', 'p' || i, randomblob(4000) FROM n;
         COMMIT;
         PRAGMA wal_checkpoint(PASSIVE);
         DELETE FROM cache WHERE namespace = 'pad';
         VACUUM;
         PRAGMA wal_checkpoint(PASSIVE);",
    )
    .unwrap();
    let filler = fill(fs.path());
    let big = "v".repeat(80_000);
    let out = unicache()
        .args(["set", "-c", &url, "big", "-"])
        .write_stdin(big.clone())
        .output()
        .unwrap();
    let warned = |out: &std::process::Output, what: &str| {
        assert_exit(out, 0);
        let err = stderr(out);
        assert!(
            err.starts_with("unicache: warning: ")
                && err.contains(what)
                && err.contains("the change stands")
                && err.contains("disk full")
                && err.lines().count() == 1,
            "{err}"
        );
    };
    warned(&out, "stored \"big\"");
    assert_eq!(value_len(&keep, "big"), Some(80_000));

    let out = unicache()
        .args(["delete", "-c", &url, "init"])
        .output()
        .unwrap();
    warned(&out, "deleted 1 key(s)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    assert_eq!(value_len(&keep, "init"), None);

    let out = unicache()
        .args(["clear", "--all", "-c", &url])
        .output()
        .unwrap();
    warned(&out, "cleared everything");
    let n: i64 = keep
        .query_row("SELECT count(*) FROM cache", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);

    // Space again: the next close checkpoints without a word.
    std::fs::remove_file(filler).unwrap();
    let out = unicache()
        .args(["set", "-c", &url, "after", "y"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(stderr(&out), "");
    drop(keep);
}

/// Opening purges expired rows, which needs the write lock: while another
/// process holds it (a long write transaction), the purge waits out the busy
/// timeout and fails. That is upkeep, not the command's work: `get` still
/// reads (WAL readers need no lock), where it failed with "locked" before.
#[test]
fn a_read_works_while_another_process_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let url = format!("sqlite:{}?busy_timeout=200ms", db.display());
    assert_exit(
        &unicache()
            .args(["set", "-c", &url, "k", "v"])
            .output()
            .unwrap(),
        0,
    );
    let writer = Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let out = unicache().args(["get", "-c", &url, "k"]).output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n");
    writer.execute_batch("ROLLBACK").unwrap();
}
