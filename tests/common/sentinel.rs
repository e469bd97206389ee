//! A Redis Sentinel set-up for tests: one master, its replicas and three
//! sentinels (`redis-server --sentinel`), on free loopback ports, failing
//! over fast (`down-after-milliseconds` 1000). Every process is killed on
//! drop (and dies with the test process).

use std::process::Command;
use std::time::{Duration, Instant};

use super::servers::{Process, free_port, redis_cmd, redis_ready, wait_for};

/// The name the sentinels monitor the master under.
pub const MASTER: &str = "mymaster";
/// `down-after-milliseconds`.
pub const DOWN_AFTER_MS: u64 = 1000;

/// One process of the set-up.
pub type Node = Process;

/// `redis-cli -p PORT ARGS...` (stdout, trimmed).
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// A master, its replicas and three sentinels.
pub struct SentinelSet {
    /// Data nodes; the first started as the master.
    pub nodes: Vec<Node>,
    pub sentinels: Vec<Node>,
}

fn field(reply: &str, name: &str) -> Option<String> {
    let mut lines = reply.lines();
    while let Some(l) = lines.next() {
        if l == name {
            return lines.next().map(str::to_string);
        }
    }
    None
}

impl SentinelSet {
    /// Starts a master with `replicas` replicas and three sentinels, and
    /// waits until every sentinel knows all of them.
    pub fn start(replicas: usize) -> SentinelSet {
        let data = |port: u16, dir: &std::path::Path| {
            let mut c = redis_cmd(port, dir);
            c.args([
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ]);
            c
        };
        let mport = free_port(false);
        let mdir = tempfile::tempdir().unwrap();
        let mcmd = data(mport, mdir.path());
        let mut nodes = vec![Process::spawned(mport, mdir, mcmd, redis_ready)];
        for _ in 0..replicas {
            let port = free_port(false);
            let dir = tempfile::tempdir().unwrap();
            let mut c = data(port, dir.path());
            c.args(["--replicaof", "127.0.0.1", &mport.to_string()]);
            nodes.push(Process::spawned(port, dir, c, redis_ready));
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port(false);
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n\
                     dir {d}\nloglevel warning\n\
                     sentinel monitor {MASTER} 127.0.0.1 {mport} 2\n\
                     sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {MASTER} 3000\n\
                     sentinel parallel-syncs {MASTER} 2\n",
                    d = dir.path().display()
                ),
            )
            .unwrap();
            let mut c = Command::new("redis-server");
            c.arg(&conf)
                .arg("--sentinel")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            sentinels.push(Process::spawned(port, dir, c, redis_ready));
        }
        let set = SentinelSet { nodes, sentinels };
        set.wait_known(replicas);
        set
    }

    /// Waits until every live sentinel sees `replicas` replicas and the
    /// other live sentinels, and the master has them all online.
    pub fn wait_known(&self, replicas: usize) {
        let live = self.sentinels.iter().filter(|s| s.alive()).count();
        wait_for("the sentinels to know the set-up", || {
            let Some(m) = self.master_port() else {
                return false;
            };
            let online = cli(m, &["INFO", "replication"])
                .matches("state=online")
                .count();
            online >= replicas
                && self.sentinels.iter().filter(|s| s.alive()).all(|s| {
                    let r = cli(s.port, &["SENTINEL", "MASTER", MASTER]);
                    field(&r, "num-slaves").and_then(|n| n.parse::<usize>().ok()) >= Some(replicas)
                        && field(&r, "num-other-sentinels").and_then(|n| n.parse::<usize>().ok())
                            >= Some(live - 1)
                })
        });
    }

    /// `redis+sentinel://` URL over all three sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// The master's port as a live sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().filter(|s| s.alive()).find_map(|s| {
            let r = cli(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER]);
            r.lines().nth(1)?.parse().ok()
        })
    }

    /// The data node listening on `port`.
    pub fn node(&mut self, port: u16) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// Waits (up to `within`) until the sentinels name a master other than
    /// `old` and it says `ROLE` master; returns its port.
    pub fn wait_new_master(&self, old: u16, within: Duration) -> u16 {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Some(p) = self.master_port().filter(|p| *p != old)
                && cli(p, &["ROLE"]).lines().next() == Some("master")
            {
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no failover from port {old} within {within:?}");
    }
}

/// The set-up the tests of one binary share (the conformance suite's).
pub fn shared() -> &'static SentinelSet {
    static S: std::sync::OnceLock<SentinelSet> = std::sync::OnceLock::new();
    S.get_or_init(|| SentinelSet::start(2))
}
