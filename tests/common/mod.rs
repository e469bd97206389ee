//! Shared test helpers: the conformance suite and real-server harnesses.
#![allow(dead_code)]

pub mod conformance;
pub mod sentinel;
pub mod servers;
pub mod tmpfs;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `unicache` binary under test (the workspace's `cli` crate, which
/// `cargo test` at the root builds with the library).
pub fn unicache_bin() -> std::path::PathBuf {
    let p = assert_cmd::cargo::cargo_bin("unicache");
    assert!(
        p.exists(),
        "the unicache binary is not built at {}: run the tests from the workspace root \
         (./scripts/test.sh, or cargo test, which builds the CLI too), or cargo build -p unicache-cli first",
        p.display()
    );
    p
}

/// The `unicache` binary under test, for `assert_cmd` runs.
pub fn unicache() -> assert_cmd::Command {
    assert_cmd::Command::new(unicache_bin())
}

/// The `unicache` binary under test, for spawned (long-running) children.
pub fn unicache_std() -> std::process::Command {
    std::process::Command::new(unicache_bin())
}

/// A process's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `n` JSON Lines records keyed `{prefix}{i}`, each with a 100-byte pad.
pub fn padded_jsonl(prefix: &str, n: usize) -> String {
    let pad = "x".repeat(100);
    (0..n)
        .map(|i| format!("{{\"key\":\"{prefix}{i}\",\"pad\":\"{pad}\"}}\n"))
        .collect()
}

/// Spawns `unicache write -q` of `input` into `url`, summary to `summary`,
/// stdout discarded and stderr as given.
pub fn spawn_write(input: &Path, url: &str, batch: usize, summary: &Path, err: Stdio) -> Child {
    unicache_std()
        .args(["write", "-q", "--batch-size", &batch.to_string(), "--input"])
        .arg(input)
        .args(["--cache", url, "--output"])
        .arg(summary)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

/// Pairs keys with values as `set_many` takes them.
pub fn entries<'a, V: AsRef<[u8]>>(keys: &'a [String], vals: &'a [V]) -> Vec<(&'a str, &'a [u8])> {
    keys.iter()
        .zip(vals)
        .map(|(k, v)| (k.as_str(), v.as_ref()))
        .collect()
}

/// A namespace no other test in this process uses.
pub fn unique_ns(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Asserts an exit code, showing the process's stderr when it differs.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one `unicache write` process per input (JSON Lines text) against
/// `url`, all at once, and asserts every one exits 0.
pub fn write_at_once(dir: &Path, url: &str, inputs: &[String], batch_size: usize) {
    let children: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(p, lines)| {
            let input = dir.join(format!("in{p}.jsonl"));
            std::fs::write(&input, lines).unwrap();
            let summary = dir.join(format!("s{p}.json"));
            spawn_write(&input, url, batch_size, &summary, Stdio::piped())
        })
        .collect();
    for c in children {
        assert_exit(&c.wait_with_output().unwrap(), 0);
    }
}

/// Runs this test binary again as a child process that runs only the test
/// `name` (an `#[ignore]`d test that reads its work from `env`): the
/// cross-process tests (several processes on one cache) use it.
/// The child test must return at once when its environment is not set.
pub fn spawn_self(name: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}
