//! Real servers for tests, started on free loopback ports in temp dirs.
//!
//! redis-rs's pattern (`redis-test/src/server.rs`): each server is a child
//! process killed on `Drop`. Shared servers live in statics, which are never
//! dropped, so every child also gets `PR_SET_PDEATHSIG`: it dies with the
//! test process. Children are spawned from one long-lived thread because the
//! death signal follows the spawning *thread*. A missing binary fails the test
//! with how to install it; nothing is skipped silently.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnReq = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` (from the long-lived thread, dying with the test process).
pub fn spawn(mut cmd: Command) -> Child {
    static TX: OnceLock<Mutex<mpsc::Sender<SpawnReq>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnReq>();
        std::thread::spawn(move || {
            while let Ok((mut cmd, reply)) = rx.recv() {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (rtx, rrx) = mpsc::channel();
    tx.lock().unwrap().send((cmd, rtx)).unwrap();
    rrx.recv().unwrap().unwrap_or_else(|e| {
        panic!(
            "cannot start {program}: {e}. Install the servers: \
             `sudo apt-get install -y redis-server memcached` (./scripts/test.sh does it as root)"
        )
    })
}

/// A loopback port free now (and, with `bus`, port+10000 too: Redis Cluster's bus).
pub fn free_port(bus: bool) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if !bus {
            return p;
        }
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair found");
}

/// Sends `req` to a text-protocol server and returns what it answered first.
pub fn ask(port: u16, req: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits up to 20 s for `ok`, panicking with `what` after that.
pub fn wait_for(what: &str, ok: impl FnMut() -> bool) {
    wait_for_within(what, Duration::from_secs(20), ok);
}

/// Waits up to `within` for `ok` (polled every 20 ms), panicking with
/// `what` after that.
pub fn wait_for_within(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < within {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not come up within {within:?}");
}

/// One server process; killed on drop.
pub struct Process {
    child: Option<Child>,
    /// How to start it again (`restart`); `None` when started from a
    /// one-off command.
    cmd: Option<fn(u16, &std::path::Path) -> Command>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Process {
    fn start(port: u16, cmd: fn(u16, &std::path::Path) -> Command, ready: fn(u16) -> bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let first = cmd(port, dir.path());
        let mut p = Process::spawned(port, dir, first, ready);
        p.cmd = Some(cmd);
        p
    }

    /// Runs `cmd` (a server on `port`, its files in `dir`) and waits until
    /// `ready` says it answers.
    pub fn spawned(
        port: u16,
        dir: tempfile::TempDir,
        cmd: Command,
        ready: fn(u16) -> bool,
    ) -> Self {
        let p = Process {
            child: Some(spawn(cmd)),
            cmd: None,
            port,
            dir,
        };
        wait_for(&format!("server on port {port}"), || ready(port));
        p
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to the process.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Whether it runs (not killed).
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again on the same port (empty: no persistence).
    pub fn restart(&mut self, ready: fn(u16) -> bool) {
        let cmd = self.cmd.expect("restart: started from a one-off command");
        self.kill();
        self.child = Some(spawn(cmd(self.port, self.dir.path())));
        wait_for("restarted server", || ready(self.port));
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A stopped process is continued first, then killed.
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// A redis-server on `port` in `dir`, no persistence.
pub fn redis_cmd(port: u16, dir: &std::path::Path) -> Command {
    let mut c = Command::new("redis-server");
    c.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args([
        "--protected-mode",
        "no",
        "--loglevel",
        "warning",
        "--daemonize",
        "no",
    ])
    .arg("--dir")
    .arg(dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

fn redis_cluster_cmd(port: u16, dir: &std::path::Path) -> Command {
    let mut c = redis_cmd(port, dir);
    c.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
    c
}

/// PING answered with PONG.
pub fn redis_ready(port: u16) -> bool {
    ask(port, "PING\r\n").is_some_and(|r| r.starts_with("+PONG"))
}

/// A single redis-server.
pub fn redis_server() -> Process {
    Process::start(free_port(false), redis_cmd, redis_ready)
}

/// The redis-server shared by the tests of one test binary.
pub fn shared_redis() -> &'static Process {
    static S: OnceLock<Process> = OnceLock::new();
    S.get_or_init(redis_server)
}

/// A Redis Cluster, created with `redis-cli --cluster create`.
pub struct Cluster {
    pub nodes: Vec<Process>,
}

/// Cluster nodes that fail over quickly (`cluster-node-timeout` 2 s).
fn redis_cluster_fast_cmd(port: u16, dir: &std::path::Path) -> Command {
    let mut c = redis_cmd(port, dir);
    c.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
    c
}

/// `redis-cli -p PORT ARGS...`: its output, trailing whitespace trimmed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// `INFO commandstats` calls of `cmd` on the node at `port`.
pub fn calls(port: u16, cmd: &str) -> u64 {
    let info = redis_cli(port, &["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// `redis-cli --cluster ARGS...`, asserting success; returns its stdout.
pub fn redis_cli_cluster(args: &[String]) -> String {
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli not found: sudo apt-get install -y redis-tools");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "redis-cli --cluster {args:?}: {text}");
    text
}

impl Cluster {
    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...` (live nodes only).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// `127.0.0.1:PORT` of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port)
    }

    /// Node `i`'s cluster ID.
    pub fn node_id(&self, i: usize) -> String {
        let r = ask(self.nodes[i].port, "CLUSTER MYID\r\n").expect("CLUSTER MYID");
        r.lines().nth(1).expect("MYID reply").to_string()
    }

    /// Whether node `i` is a master (`ROLE`).
    pub fn is_master(&self, i: usize) -> bool {
        ask(self.nodes[i].port, "ROLE\r\n").is_some_and(|r| r.contains("master"))
    }

    /// Moves `slots` slots from master `from` to master `to`, in the background.
    pub fn reshard(&self, from: usize, to: usize, slots: u32) -> Child {
        let mut c = Command::new("redis-cli");
        c.args(["--cluster", "reshard", &self.addr(from)])
            .args(["--cluster-from", &self.node_id(from)])
            .args(["--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string()])
            .args(["--cluster-yes", "--cluster-pipeline", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn(c)
    }

    /// Starts an empty master and joins it; returns its index.
    pub fn add_master(&mut self) -> usize {
        let p = Process::start(free_port(true), self.nodes[0].cmd.unwrap(), redis_ready);
        let new = format!("127.0.0.1:{}", p.port);
        self.nodes.push(p);
        redis_cli_cluster(&["add-node".into(), new, self.addr(0)]);
        let n = self.nodes.len();
        wait_for("the new node known to every node", || {
            self.nodes.iter().all(|p| {
                ask(p.port, "CLUSTER NODES\r\n").is_some_and(|r| {
                    r.lines().filter(|l| l.contains("master")).count() >= n
                        && !r.contains("handshake")
                })
            })
        });
        n - 1
    }

    /// `--cluster rebalance --cluster-use-empty-masters`, in the background.
    pub fn rebalance(&self) -> Child {
        let mut c = Command::new("redis-cli");
        c.args(["--cluster", "rebalance", &self.addr(0)])
            .args(["--cluster-use-empty-masters", "--cluster-pipeline", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn(c)
    }

    /// Waits (up to 20 s) until every live node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_for("cluster_state:ok", || {
                ask(n.port, "CLUSTER INFO\r\n").is_some_and(|r| r.contains("cluster_state:ok"))
            });
        }
    }
}

/// Starts three cluster-enabled servers and joins them.
pub fn redis_cluster() -> Cluster {
    cluster_of(3, 0, redis_cluster_cmd)
}

/// `masters` masters with `replicas` replicas each, failing over within
/// about 3 s (node timeout 2 s).
pub fn redis_cluster_with(masters: usize, replicas: usize) -> Cluster {
    cluster_of(masters, replicas, redis_cluster_fast_cmd)
}

fn cluster_of(
    masters: usize,
    replicas: usize,
    cmd: fn(u16, &std::path::Path) -> Command,
) -> Cluster {
    let nodes: Vec<Process> = (0..masters * (1 + replicas))
        .map(|_| Process::start(free_port(true), cmd, redis_ready))
        .collect();
    let mut args: Vec<String> = vec!["create".into()];
    args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
    args.extend([
        "--cluster-replicas".into(),
        replicas.to_string(),
        "--cluster-yes".into(),
    ]);
    redis_cli_cluster(&args);
    let c = Cluster { nodes };
    c.wait_ok();
    if replicas > 0 {
        wait_for("every replica in sync", || {
            c.nodes.iter().all(|n| {
                ask(n.port, "ROLE\r\n")
                    .is_some_and(|r| r.contains("master") || r.contains("connected"))
            })
        });
    }
    c
}

/// The cluster shared by the tests of one test binary.
pub fn shared_cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(redis_cluster)
}

fn memcached_cmd(port: u16, _dir: &std::path::Path) -> Command {
    memcached_cmd_mb(port, 128)
}

/// 1 GiB of item memory: a million-entry benchmark fits without evictions.
fn memcached_big_cmd(port: u16, _dir: &std::path::Path) -> Command {
    memcached_cmd_mb(port, 1024)
}

fn memcached_cmd_mb(port: u16, mb: u32) -> Command {
    let mut c = Command::new("memcached");
    c.args([
        "-l",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "0",
        "-m",
        &mb.to_string(),
        "-t",
        "2",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // memcached refuses to run as root without -u.
    if unsafe { libc::geteuid() } == 0 {
        c.args(["-u", "root"]);
    }
    c
}

/// `version` answered.
pub fn memcached_ready(port: u16) -> bool {
    ask(port, "version\r\n").is_some_and(|r| r.starts_with("VERSION"))
}

/// One memcached process.
pub fn memcached_server() -> Process {
    Process::start(free_port(false), memcached_cmd, memcached_ready)
}

/// One memcached process with 1 GiB of item memory (benchmarks).
pub fn memcached_big_server() -> Process {
    Process::start(free_port(false), memcached_big_cmd, memcached_ready)
}

/// Two memcached processes shared by the tests of one binary.
pub fn shared_memcached() -> &'static [Process; 2] {
    static M: OnceLock<[Process; 2]> = OnceLock::new();
    M.get_or_init(|| [memcached_server(), memcached_server()])
}

/// A redis-server speaking only TLS, with a throwaway CA made by `openssl`.
/// Returns the server and the CA's PEM path.
pub fn redis_tls_server() -> (Process, std::path::PathBuf) {
    fn tls_cmd(port: u16, dir: &std::path::Path) -> Command {
        let mut c = redis_cmd(0, dir);
        c.args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(dir.join("server.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.crt"))
            .args(["--tls-auth-clients", "no"]);
        c
    }
    fn tls_ready(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl not found: sudo apt-get install -y openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=unicache test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    let port = free_port(false);
    let child = spawn(tls_cmd(port, d));
    let p = Process {
        child: Some(child),
        cmd: Some(tls_cmd),
        port,
        dir,
    };
    wait_for("redis TLS server", || tls_ready(port));
    let ca = p.dir.path().join("ca.crt");
    (p, ca)
}

/// Password of [`redis_auth_server`].
pub const REDIS_PASSWORD: &str = "s3cret-pass";

/// A redis-server that requires [`REDIS_PASSWORD`].
pub fn redis_auth_server() -> Process {
    fn cmd(port: u16, dir: &std::path::Path) -> Command {
        let mut c = redis_cmd(port, dir);
        c.args(["--requirepass", REDIS_PASSWORD]);
        c
    }
    fn ready(port: u16) -> bool {
        ask(port, &format!("AUTH {REDIS_PASSWORD}\r\nPING\r\n"))
            .is_some_and(|r| r.starts_with("+OK"))
    }
    Process::start(free_port(false), cmd, ready)
}
