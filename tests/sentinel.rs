//! Redis Sentinel: the conformance suite on a `redis+sentinel://` URL, and
//! failovers (master SIGKILLed mid-write, `SENTINEL FAILOVER`, a sentinel
//! killed, the master SIGSTOPped past `down-after-milliseconds`), each
//! checking every record and reading back through the new master. Each
//! failover test has a set-up of its own (a master, two replicas, three
//! sentinels: `common::sentinel`).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sentinel::{DOWN_AFTER_MS, SentinelSet, cli};
use unicache::Cache;

use common::sentinel::shared;

// The conformance suite on a Sentinel URL under every stack of layers
// (plain, observed, enveloped, tiered with its backplane, ...).
stack_suite!(sentinel_conformance, Sentinel, 8);

/// Failover tests one at a time: each runs six servers, and failover
/// timing must not depend on the others' load.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records of `unicache write`'s input: `key:i` with a padded value.
fn line(i: usize) -> String {
    format!(
        "{{\"key\":\"key:{i}\",\"n\":{i},\"pad\":\"{}\"}}",
        "x".repeat(60)
    )
}

/// Checks that every key `key:0..n` is readable through `url` with its
/// value, except those in `skip`; returns the keys missing.
async fn missing(url: &str, n: usize, skip: &HashSet<String>) -> Vec<usize> {
    let cache = unicache::open(url).await.unwrap();
    let mut out = Vec::new();
    for start in (0..n).step_by(5_000) {
        let keys: Vec<String> = (start..(start + 5_000).min(n))
            .map(|i| format!("key:{i}"))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let vals = cache.get_many(&refs).await.unwrap();
        for (j, v) in vals.into_iter().enumerate() {
            let i = start + j;
            if skip.contains(&keys[j]) {
                continue;
            }
            match v {
                Some(v) => assert_eq!(v, line(i).as_bytes(), "key:{i}"),
                None => out.push(i),
            }
        }
    }
    out
}

fn rejected_keys(path: &std::path::Path) -> HashSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["record"]["key"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Records in the master's database now (0 when it does not answer).
fn dbsize(port: u16) -> u64 {
    cli(port, &["DBSIZE"]).parse().unwrap_or(0)
}

/// A bulk write of `n` records to `url` with the master SIGKILLed once
/// `kill_at` keys are in: every record is written or failed and named in
/// the rejects, and read back through the new master. Returns the keys
/// acknowledged but not found (lost with the master).
fn write_with_master_killed(url_opts: &str, n: usize, kill_at: u64) -> Vec<usize> {
    let mut set = SentinelSet::start(2);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let body: String = (0..n).map(|i| line(i) + "\n").collect();
    std::fs::write(&input, body).unwrap();
    let url = format!("{}?namespace=kill{url_opts}", set.url());
    let (summary, rejects) = (dir.path().join("s.json"), dir.path().join("r.jsonl"));
    let mut child = common::unicache_std()
        .args([
            "write",
            "-q",
            "--batch-size",
            "500",
            "--retries",
            "12",
            "--input",
        ])
        .arg(&input)
        .args(["--cache", &url, "--output"])
        .arg(&summary)
        .arg("--rejects")
        .arg(&rejects)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let old = set.master_port().unwrap();
    let t = Instant::now();
    while dbsize(old) < kill_at && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let at_kill = dbsize(old);
    set.node(old).kill();
    let killed = Instant::now();
    let new = set.wait_new_master(old, Duration::from_secs(30));
    let failover = killed.elapsed();
    let out = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "write still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let get = |k: &str| s[k].as_u64().unwrap();
    let (written, failed) = (get("records_written"), get("records_failed"));
    assert_eq!(get("records_read"), n as u64, "{s}");
    assert_eq!(written + failed, n as u64, "{s}");
    assert_eq!(out.code(), Some(if failed == 0 { 0 } else { 1 }), "{err}");
    let rejected = rejected_keys(&rejects);
    assert_eq!(rejected.len() as u64, failed, "{s}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lost = rt.block_on(missing(&url, n, &rejected));
    eprintln!(
        "master :{old} killed at {at_kill} keys; :{new} master after {failover:?}; \
         written {written}, failed {failed}, acknowledged and lost {}, took {:?}",
        lost.len(),
        t.elapsed()
    );
    lost
}

const KILL_RECORDS: usize = if cfg!(debug_assertions) {
    50_000
} else {
    1_000_000
};

#[test]
fn master_killed_mid_write_every_record_is_accounted_for() {
    let _g = serial();
    // Without `wait`, what the master acknowledged in its last moments may
    // not have reached a replica: counted, not failed on.
    let lost = write_with_master_killed("", KILL_RECORDS, KILL_RECORDS as u64 / 5);
    assert!(lost.len() < KILL_RECORDS / 10, "lost {}", lost.len());
}

#[test]
fn master_killed_mid_write_with_wait_loses_nothing_acknowledged() {
    let _g = serial();
    let lost = write_with_master_killed("&wait=1", KILL_RECORDS, KILL_RECORDS as u64 / 5);
    assert!(
        lost.is_empty(),
        "acknowledged and lost: {:?}",
        &lost[..lost.len().min(10)]
    );
}

/// Writes `key:i` one by one through `cache` (each retried until stored,
/// at most 30 s) while `disrupt` runs; returns the time from `disrupt`'s
/// signal (the instant it returns) to the first write stored after it.
async fn writes_across(
    cache: &Arc<dyn Cache>,
    disrupt: impl FnOnce() + Send + 'static,
    n: usize,
) -> (usize, Option<Duration>) {
    let done = Arc::new(Mutex::new(None::<Instant>));
    let d2 = done.clone();
    let job = tokio::task::spawn_blocking(move || {
        disrupt();
        *d2.lock().unwrap() = Some(Instant::now());
    });
    let mut first_after = None;
    let mut after = 0;
    let t = Instant::now();
    for i in 0..n {
        let v = line(i);
        loop {
            assert!(
                t.elapsed() < Duration::from_secs(45),
                "no write for too long"
            );
            match cache.set(&format!("key:{i}"), v.as_bytes(), None).await {
                Ok(()) => break,
                Err(e) => {
                    assert!(e.is_transient(), "{e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        if first_after.is_none()
            && let Some(at) = *done.lock().unwrap()
        {
            first_after = Some(at.elapsed());
        }
        if first_after.is_some() {
            after += 1;
        }
        // 200 writes through the new master.
        if job.is_finished() && after > 200 {
            return (i + 1, first_after);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    job.await.unwrap();
    (n, first_after)
}

/// Opens `url`, writes across `disrupt`, then checks every acknowledged
/// write is readable through the new master.
fn failover_case(
    set: &SentinelSet,
    url: &str,
    disrupt: impl FnOnce() + Send + 'static,
) -> Duration {
    let old = set.master_port().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (n, first) = rt.block_on(async {
        let cache: Arc<dyn Cache> = unicache::open(url).await.unwrap().into();
        writes_across(&cache, disrupt, 1_000_000).await
    });
    let new = set.wait_new_master(old, Duration::from_secs(30));
    let lost = rt.block_on(missing(url, n, &HashSet::new()));
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let took = first.unwrap();
    eprintln!(
        "master :{old} -> :{new}; {n} writes; first write stored {took:?} after the disruption"
    );
    took
}

#[test]
fn manual_failover_is_followed_and_nothing_acknowledged_is_lost() {
    let _g = serial();
    let set = SentinelSet::start(2);
    let url = format!("{}?namespace=manual&response_timeout=2s", set.url());
    let s = set.sentinels[1].port;
    failover_case(&set, &url, move || {
        std::thread::sleep(Duration::from_millis(300));
        let name = common::sentinel::MASTER;
        let named = || cli(s, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name]);
        let before = named();
        assert_eq!(cli(s, &["SENTINEL", "FAILOVER", name]), "OK");
        // Returns once the sentinels name the new master.
        let t = Instant::now();
        while named() == before {
            assert!(t.elapsed() < Duration::from_secs(20), "no failover");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// The process id of the redis-server on `port`.
fn pid_of(port: u16) -> i32 {
    cli(port, &["INFO", "server"])
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_dead_sentinel_is_skipped_and_the_master_kill_followed() {
    let _g = serial();
    let mut set = SentinelSet::start(2);
    // The first sentinel of the URL is gone before the open.
    set.sentinels[0].kill();
    let url = format!("{}?namespace=deadsentinel&response_timeout=2s", set.url());
    let pid = pid_of(set.master_port().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old = set.master_port().unwrap();
    let (n, first) = rt.block_on(async {
        let cache: Arc<dyn Cache> = unicache::open(&url).await.unwrap().into();
        let kill = move || {
            std::thread::sleep(Duration::from_millis(300));
            unsafe { libc::kill(pid, libc::SIGKILL) };
        };
        writes_across(&cache, kill, 1_000_000).await
    });
    let new = set.wait_new_master(old, Duration::from_secs(30));
    let lost = rt.block_on(missing(&url, n, &HashSet::new()));
    // A SIGKILL may take what the master acknowledged last with it.
    assert!(lost.len() <= 5, "lost {lost:?}");
    eprintln!(
        "master :{old} -> :{new}; {n} writes; lost {}; first write stored {:?} after the master's death",
        lost.len(),
        first.unwrap()
    );
}

#[test]
fn stopped_master_is_replaced_and_nothing_acknowledged_is_lost() {
    let _g = serial();
    let set = SentinelSet::start(2);
    let url = format!("{}?namespace=stopped&response_timeout=500ms", set.url());
    let old = set.master_port().unwrap();
    let pid = pid_of(old);
    failover_case(&set, &url, move || {
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(DOWN_AFTER_MS * 3));
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    // The old master comes back as a replica of the new one.
    let t = Instant::now();
    while cli(old, &["ROLE"]).lines().next() != Some("slave") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "old master not demoted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `cmdstat_NAME` calls on the node at `port`.
fn calls(port: u16, name: &str) -> u64 {
    cli(port, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|r| r.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn read_from_replica_reads_on_the_replicas_and_l1_refuses_it() {
    let set = shared();
    let master = set.master_port().unwrap();
    let replicas: Vec<u16> = set
        .nodes
        .iter()
        .map(|n| n.port)
        .filter(|p| *p != master)
        .collect();
    let base = format!("{}?namespace=readfrom", set.url());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // wait=2: both replicas have the batch when it is acknowledged.
        let w = unicache::open(&format!("{base}&wait=2")).await.unwrap();
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let vals: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
        w.set_many(&common::entries(&keys, &vals), None)
            .await
            .unwrap();
        let before: Vec<u64> = replicas.iter().map(|p| calls(*p, "get")).collect();
        let before_m = calls(master, "get");
        let r = unicache::open(&format!("{base}&read_from=replica"))
            .await
            .unwrap();
        for (k, v) in keys.iter().zip(&vals) {
            assert_eq!(r.get(k).await.unwrap().as_deref(), Some(v.as_bytes()));
            assert!(r.contains(k).await.unwrap());
            let t = r.get_with_ttl(k).await.unwrap().unwrap();
            assert_eq!(t.value.as_ref(), v.as_bytes());
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let got = r.get_many(&refs).await.unwrap();
        assert!(
            got.iter()
                .zip(&vals)
                .all(|(g, v)| g.as_deref() == Some(v.as_bytes()))
        );
        // Writes still go to the master.
        r.set("w", b"x", None).await.unwrap();
        let after: Vec<u64> = replicas.iter().map(|p| calls(*p, "get")).collect();
        for (b, a) in before.iter().zip(&after) {
            assert!(
                a - b >= 50,
                "reads spread over both replicas: {before:?} -> {after:?}"
            );
        }
        assert_eq!(calls(master, "get"), before_m, "no GET on the master");
        let e = unicache::open(&format!("{base}&read_from=replica&l1=100"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("read_from=master with l1"), "{e}");
        let n = unicache::open(&format!("{base}&read_from=nearest"))
            .await
            .unwrap();
        assert_eq!(n.get("k1").await.unwrap().as_deref(), Some(&b"v1"[..]));
    });
}

#[test]
fn tier_backplane_moves_to_the_new_master() {
    let _g = serial();
    let set = SentinelSet::start(2);
    let base = format!("{}?namespace=tier&response_timeout=2s", set.url());
    let s = set.sentinels[2].port;
    let old = set.master_port().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = unicache::open(&format!("{base}&l1=1000&l1_ttl=1h"))
            .await
            .unwrap();
        let b = unicache::open(&base).await.unwrap();
        // `a` serves from L1 until `b`'s write reaches it.
        let sees = |want: &'static [u8]| {
            let a = &a;
            async move {
                let t = Instant::now();
                while a.get("k").await.ok().flatten().as_deref() != Some(want) {
                    assert!(t.elapsed() < Duration::from_secs(10), "never saw {want:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                t.elapsed()
            }
        };
        a.set("k", b"v1", None).await.unwrap();
        sees(b"v1").await;
        b.set("k", b"v2", None).await.unwrap();
        assert!(sees(b"v2").await < Duration::from_secs(1));
        tokio::task::spawn_blocking(move || {
            let name = common::sentinel::MASTER;
            assert_eq!(cli(s, &["SENTINEL", "FAILOVER", name]), "OK");
        })
        .await
        .unwrap();
        set.wait_new_master(old, Duration::from_secs(20));
        // Through the failover: `b`'s writes retried until stored.
        for v in [&b"v3"[..], b"v4", b"v5"] {
            let t = Instant::now();
            while b.set("k", v, None).await.is_err() {
                assert!(t.elapsed() < Duration::from_secs(20));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let v: &'static [u8] = Box::leak(v.to_vec().into_boxed_slice());
            let took = sees(v).await;
            eprintln!(
                "{:?} seen through L1 after {took:?}",
                String::from_utf8_lossy(v)
            );
            // The subscription is on the new master by the time a write
            // lands there (before: 0.36-10 s, from the old master's L1).
            assert!(took < Duration::from_millis(100));
        }
    });
}

/// Seconds since the Unix epoch, as a float (comparable with Python's
/// `time.time()`).
fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Measurement, not a check (ignored; needs redis-py: `python3 -m venv
/// target/pyvenv && target/pyvenv/bin/pip install redis`, or set
/// `UNICACHE_PY`): three times, a master SIGKILLed while unicache and
/// redis-py's Sentinel client both write to it in a loop (2 ms between
/// writes, 10 ms between retries); prints each one's time from the kill
/// to its first successful write.
#[test]
#[ignore]
fn failover_time_vs_redis_py() {
    let _g = serial();
    let py = std::env::var("UNICACHE_PY")
        .unwrap_or_else(|_| format!("{}/target/pyvenv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let script = format!(
        "{}/scripts/sentinel_failover_redis_py.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut ratios = Vec::new();
    for run in 0..3 {
        let set = SentinelSet::start(2);
        let ports: Vec<String> = set.sentinels.iter().map(|s| s.port.to_string()).collect();
        let mut child = std::process::Command::new(&py)
            .arg(&script)
            .arg(common::sentinel::MASTER)
            .args(&ports)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        std::io::BufRead::read_line(&mut out, &mut l).unwrap();
        assert_eq!(l.trim(), "ready");
        let url = format!(
            "{}?namespace=race&response_timeout=500ms&connect_timeout=500ms",
            set.url()
        );
        let pid = pid_of(set.master_port().unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (killed, ours) = rt.block_on(async {
            let cache = unicache::open(&url).await.unwrap();
            let writer = async {
                let mut failed = false;
                let mut i = 0u64;
                loop {
                    match cache.set(&format!("race:{i}"), b"x", None).await {
                        Ok(()) if failed => return now_unix(),
                        Ok(()) => {
                            i += 1;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Err(_) => {
                            failed = true;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            };
            let kill = async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let t = now_unix();
                unsafe { libc::kill(pid, libc::SIGKILL) };
                t
            };
            let (ours, killed) =
                tokio::join!(tokio::time::timeout(Duration::from_secs(60), writer), kill);
            (killed, ours.expect("unicache never wrote again"))
        });
        l.clear();
        std::io::BufRead::read_line(&mut out, &mut l).unwrap();
        let theirs: f64 = l
            .trim()
            .strip_prefix("first_success_after_failure ")
            .unwrap_or_else(|| panic!("redis-py: {l:?}"))
            .parse()
            .unwrap();
        let _ = child.wait();
        let (u, p) = (ours - killed, theirs - killed);
        ratios.push(u / p);
        eprintln!(
            "run {run}: unicache {u:.3} s, redis-py {p:.3} s, ratio {:.2}",
            u / p
        );
    }
    eprintln!("ratios {ratios:.2?}");
}

/// What the staleness checker (tests/staleness.rs) asks, in one process
/// across a `SENTINEL FAILOVER` and then a master SIGKILL: a reader through
/// an L1 never returns a version older than one whose write returned more
/// than 50 ms before the read began.
#[test]
fn tier_reads_stay_fresh_across_failovers() {
    let _g = serial();
    let set = SentinelSet::start(2);
    let base = format!("{}?namespace=fresh&response_timeout=1s", set.url());
    let s = set.sentinels[0].port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (writes, reads) = rt.block_on(async {
        let a = unicache::open(&format!("{base}&l1=1000&l1_ttl=1h"))
            .await
            .unwrap();
        let b = unicache::open(&base).await.unwrap();
        let st = stop.clone();
        let writer = tokio::spawn(async move {
            let mut log = Vec::new();
            let mut v = 0u64;
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                v += 1;
                if b.set("s", v.to_string().as_bytes(), None).await.is_ok() {
                    log.push((v, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            log
        });
        let st = stop.clone();
        let reader = tokio::spawn(async move {
            let mut log = Vec::new();
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = Instant::now();
                if let Ok(Some(v)) = a.get("s").await {
                    log.push((t0, String::from_utf8_lossy(&v).parse::<u64>().unwrap()));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            log
        });
        let old = set.master_port().unwrap();
        let name = common::sentinel::MASTER;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(cli(s, &["SENTINEL", "FAILOVER", name]), "OK");
        let new = set.wait_new_master(old, Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        unsafe { libc::kill(pid_of(new), libc::SIGKILL) };
        set.wait_new_master(new, Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (writer.await.unwrap(), reader.await.unwrap())
    });
    let grace = Duration::from_millis(50);
    let mut stale = Vec::new();
    for (t0, got) in &reads {
        // The newest version whose write returned before t0 - grace.
        let due = writes
            .iter()
            .take_while(|(_, at)| *at + grace < *t0)
            .map(|(v, _)| *v)
            .max()
            .unwrap_or(0);
        if *got < due {
            stale.push((*got, due));
        }
    }
    eprintln!(
        "{} writes, {} reads, {} stale",
        writes.len(),
        reads.len(),
        stale.len()
    );
    assert!(
        stale.is_empty(),
        "stale reads (got, due): {:?}",
        &stale[..stale.len().min(10)]
    );
}
