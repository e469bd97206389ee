//! The programs in examples/ run as a user would run them: each built
//! binary (`cargo build --examples`, which ./scripts/test.sh runs first)
//! is started and must exit 0 with the output its docs promise; the tier
//! example against a real redis-server of the harness.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::servers;

/// The built example `name` (target/<profile>/examples/name).
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin: PathBuf = profile_dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "example {name} is not built at {}: run `cargo build --examples --all-features` \
         first (./scripts/test.sh does)",
        bin.display()
    );
    Command::new(bin)
}

fn run_ok(cmd: &mut Command) -> String {
    let out: Output = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} exited {:?}\nstdout: {text}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn custom_backend_serves_read_through() {
    let out = run_ok(&mut example("custom_backend"));
    assert!(out.contains("hello from a custom backend"), "{out}");
    assert!(out.contains("\"backend\":\"map\""), "{out}");
}

#[test]
fn bulk_write_accounts_for_every_record() {
    let out = run_ok(&mut example("bulk_write"));
    assert!(
        out.contains("read 10002, written 10000, skipped 2, failed 0"),
        "{out}"
    );
    assert_eq!(out.matches("user:42 = Some(").count(), 2, "{out}");
}

#[test]
fn axum_read_through_asks_the_database_once() {
    let out = run_ok(&mut example("axum_read_through"));
    assert!(
        out.contains("50 answered 200, the database was asked 1 time(s)"),
        "{out}"
    );
    assert!(out.contains("one more request: HTTP/1.1 200 OK"), "{out}");
}

#[test]
fn tier_two_processes_see_each_others_writes() {
    let redis = servers::shared_redis();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let out = run_ok(example("tier_two_processes").arg(&url));
    assert!(out.contains("20 writes seen by the other process"), "{out}");
    // The example removed its namespace: nothing of it is left.
    let left = servers::ask(redis.port, "KEYS tier-example-*\r\n").expect("redis answers");
    assert!(left.starts_with('*'), "{left}");
    assert!(!left.contains("tier-example-"), "{left}");
}
