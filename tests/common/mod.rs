//! Shared test helpers: the conformance suite and real-server harnesses.
#![allow(dead_code)]

pub mod conformance;
pub mod servers;

use std::sync::atomic::{AtomicU64, Ordering};

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
pub fn assert_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one `unicache write` process per input (JSON Lines text) against
/// `url`, all at once, and asserts every one exits 0.
pub fn write_at_once(dir: &std::path::Path, url: &str, inputs: &[String], batch_size: usize) {
    let children: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(p, lines)| {
            let input = dir.join(format!("in{p}.jsonl"));
            std::fs::write(&input, lines).unwrap();
            std::process::Command::new(assert_cmd::cargo::cargo_bin("unicache"))
                .args([
                    "write",
                    "-q",
                    "--batch-size",
                    &batch_size.to_string(),
                    "--input",
                ])
                .arg(&input)
                .args(["--cache", url, "--output"])
                .arg(dir.join(format!("s{p}.json")))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        assert_exit(&c.wait_with_output().unwrap(), 0);
    }
}
