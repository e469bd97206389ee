//! `read_from=replica|nearest` on `redis+cluster://`, on a real cluster of
//! three masters with one replica each (`servers::redis_cluster_with`):
//! reads served by the replicas (their `INFO commandstats` rise, the
//! masters' do not) and writes by the masters; a replica killed mid-reads,
//! and one stopped (SIGSTOP: one timed-out call, then avoided);
//! a master killed mid-reads and writes (its replica promoted); a reshard
//! (the replicas answer `MOVED`); and the tier's refusal of `l1` over
//! replica reads. Each test has a cluster of its own, one at a time.
//!
//! The shipped conformance suite does not run on `read_from=replica`: its
//! cases read right after writing (set then get, delete then get, clear
//! then count), which a replica may not have yet, and a cluster has no
//! `wait=N` to make an acknowledged write a replicated one. Here reads
//! poll until the replicas caught up (`until_replicated`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::servers::{self, Cluster, calls, redis_cli, wait_for_within};
use unicache::Cache;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The ports of the live masters and of the live replicas.
fn roles(c: &Cluster) -> (Vec<u16>, Vec<u16>) {
    let live = c.nodes.iter().enumerate().filter(|(_, n)| n.alive());
    let (m, r): (Vec<_>, Vec<_>) = live.partition(|(i, _)| c.is_master(*i));
    let ports = |v: Vec<(usize, &servers::Process)>| v.into_iter().map(|(_, n)| n.port).collect();
    (ports(m), ports(r))
}

/// Sum of `cmd` calls over `ports`.
fn total(ports: &[u16], cmd: &str) -> u64 {
    ports.iter().map(|p| calls(*p, cmd)).sum()
}

fn keys_vals(prefix: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let keys = (0..n).map(|i| format!("{prefix}:{i}")).collect();
    let vals = (0..n).map(|i| format!("value {i} of {prefix}")).collect();
    (keys, vals)
}

/// Polls (up to 10 s) until `cache` reads every key with its value: the
/// replicas have caught up with the writes.
async fn until_replicated(cache: &dyn Cache, keys: &[String], vals: &[String]) {
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let t = Instant::now();
    loop {
        let got = cache.get_many(&refs).await.unwrap();
        if got
            .iter()
            .zip(vals)
            .all(|(g, v)| g.as_deref() == Some(v.as_bytes()))
        {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "replicas never caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 20 s) until `cache`'s slot map lists `n` replicas: Redis 7
/// lists a replica in `CLUSTER SLOTS` only once its replication offset, as
/// the node asked heard it by gossip, is not 0 (after a first write).
async fn until_replicas_listed(cache: &dyn Cache, n: u64) {
    let t = Instant::now();
    loop {
        let s = cache.stats().await.unwrap();
        let listed = s.server.as_ref().unwrap()["cluster"]["replicas"]
            .as_u64()
            .unwrap();
        if listed == n {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{listed} replicas listed, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_all(got: &[Option<bytes::Bytes>], vals: &[String], when: &str) {
    for (i, (g, v)) in got.iter().zip(vals).enumerate() {
        assert_eq!(g.as_deref(), Some(v.as_bytes()), "entry {i}, {when}");
    }
}

#[test]
fn replica_reads_go_to_replicas_writes_to_masters_and_l1_is_refused() {
    let _g = serial();
    let c = servers::redis_cluster_with(3, 1);
    let (masters, replicas) = roles(&c);
    assert_eq!((masters.len(), replicas.len()), (3, 3));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("{}?namespace=rr", c.url());
        let w = unicache::open(&base).await.unwrap();
        let (keys, vals) = keys_vals("k", 300);
        w.set_many(&common::entries(&keys, &vals), None)
            .await
            .unwrap();
        w.set("ttl", b"t", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        let r = unicache::open(&format!("{base}&read_from=replica"))
            .await
            .unwrap();
        until_replicas_listed(&*r, 3).await;
        until_replicated(&*r, &keys, &vals).await;
        let cmds = ["get", "exists", "evalsha", "eval", "mget"];
        let before: Vec<(u64, u64)> = cmds
            .iter()
            .map(|c| (total(&masters, c), total(&replicas, c)))
            .collect();
        let per_replica: Vec<u64> = replicas.iter().map(|p| calls(*p, "get")).collect();
        for (k, v) in keys.iter().zip(&vals) {
            assert_eq!(r.get(k).await.unwrap().as_deref(), Some(v.as_bytes()));
            assert!(r.contains(k).await.unwrap());
            let t = r.get_with_ttl(k).await.unwrap().unwrap();
            assert_eq!((t.value.as_ref(), t.ttl), (v.as_bytes(), None));
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_all(&r.get_many(&refs).await.unwrap(), &vals, "get_many");
        let with_ttl = r.get_many_with_ttl(&refs).await.unwrap();
        for (g, v) in with_ttl.iter().zip(&vals) {
            assert_eq!(g.as_ref().unwrap().value.as_ref(), v.as_bytes());
        }
        let t = r.get_with_ttl("ttl").await.unwrap().unwrap();
        let ttl = t.ttl.unwrap();
        assert!(
            ttl > Duration::from_secs(50) && ttl <= Duration::from_secs(60),
            "{ttl:?}"
        );
        assert!(!r.contains("never-written").await.unwrap());
        let after: Vec<(u64, u64)> = cmds
            .iter()
            .map(|c| (total(&masters, c), total(&replicas, c)))
            .collect();
        for ((name, b), a) in cmds.iter().zip(&before).zip(&after) {
            assert_eq!(a.0, b.0, "{name} on the masters: {before:?} -> {after:?}");
        }
        let n = keys.len() as u64;
        // get + get_many, and the GET inside each get_with_ttl's script.
        assert!(after[0].1 - before[0].1 >= 2 * n, "{before:?} -> {after:?}");
        assert_eq!(after[1].1 - before[1].1, n + 1, "exists on the replicas");
        let scripts = (after[2].1 + after[3].1) - (before[2].1 + before[3].1);
        assert!(scripts > 2 * n, "{before:?} -> {after:?}");
        for (p, b) in replicas.iter().zip(&per_replica) {
            assert!(calls(*p, "get") > *b, "every replica serves reads: {p}");
        }
        // Writes and atomic operations on the masters.
        let sets = total(&masters, "set");
        r.set("w", b"x", None).await.unwrap();
        assert_eq!(total(&masters, "set"), sets + 1);
        assert_eq!(r.incr("n", 2).await.unwrap(), 2);
        assert!(r.delete("w").await.unwrap());
        assert!(r.compare_and_set("n", b"2", b"5", None).await.unwrap());
        // nearest: whichever answered fastest; every read right.
        let near = unicache::open(&format!("{base}&read_from=nearest"))
            .await
            .unwrap();
        assert_all(&near.get_many(&refs).await.unwrap(), &vals, "nearest");
        for how in ["replica", "nearest"] {
            let e = unicache::open(&format!("{base}&read_from={how}&l1=100"))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("read_from=master with l1"), "{e}");
        }
    });
}

/// Reads `keys` through `r` in rounds (a `get_many` and ten single `get`s)
/// until `stop` says so; every read must succeed with its value. Returns
/// the rounds and the slowest one.
async fn read_rounds(
    r: &dyn Cache,
    keys: &[String],
    vals: &[String],
    mut stop: impl FnMut(u32) -> bool,
) -> (u32, Duration) {
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (mut rounds, mut slowest) = (0u32, Duration::ZERO);
    while !stop(rounds) {
        let t = Instant::now();
        let got = r
            .get_many(&refs)
            .await
            .unwrap_or_else(|e| panic!("round {rounds}: {e}"));
        assert_all(&got, vals, &format!("round {rounds}"));
        for i in (0..keys.len()).step_by(keys.len() / 10) {
            let v = r
                .get(&keys[i])
                .await
                .unwrap_or_else(|e| panic!("round {rounds}: {e}"));
            assert_eq!(v.as_deref(), Some(vals[i].as_bytes()));
        }
        slowest = slowest.max(t.elapsed());
        rounds += 1;
    }
    (rounds, slowest)
}

#[test]
fn a_replica_killed_mid_reads_costs_the_caller_nothing() {
    let _g = serial();
    let mut c = servers::redis_cluster_with(3, 1);
    let victim = (0..c.nodes.len()).find(|&i| !c.is_master(i)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("{}?namespace=kill", c.url());
        let r = unicache::open(&format!("{base}&read_from=replica"))
            .await
            .unwrap();
        let (keys, vals) = keys_vals("k", 2000);
        r.set_many(&common::entries(&keys, &vals), None)
            .await
            .unwrap();
        until_replicas_listed(&*r, 3).await;
        until_replicated(&*r, &keys, &vals).await;
        let victim_port = c.nodes[victim].port;
        let before = calls(victim_port, "get");
        read_rounds(&*r, &keys, &vals, |n| n == 5).await;
        assert!(
            calls(victim_port, "get") > before,
            "the victim served reads"
        );
        c.nodes[victim].kill();
        let killed = Instant::now();
        // Past the cluster's own failure detection (node timeout 2 s) and
        // several of the cache's checks.
        let (rounds, slowest) = read_rounds(&*r, &keys, &vals, |_| {
            killed.elapsed() > Duration::from_secs(4)
        })
        .await;
        eprintln!("replica killed: {rounds} rounds after, slowest {slowest:?}");
    });
}

#[test]
fn a_master_failover_mid_reads_and_writes_loses_nothing_acknowledged() {
    let _g = serial();
    let mut c = servers::redis_cluster_with(3, 1);
    let victim = (0..c.nodes.len()).find(|&i| c.is_master(i)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("{}?namespace=failover", c.url());
        let r: Arc<dyn Cache> = unicache::open(&format!("{base}&read_from=replica"))
            .await
            .unwrap()
            .into();
        let (keys, vals) = keys_vals("old", 1000);
        r.set_many(&common::entries(&keys, &vals), None).await.unwrap();
        until_replicas_listed(&*r, 3).await;
        until_replicated(&*r, &keys, &vals).await;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Writes one key at a time; what was acknowledged, and what failed.
        let writer = {
            let (r, done) = (r.clone(), done.clone());
            tokio::spawn(async move {
                let (mut acked, mut failed) = (Vec::new(), 0u32);
                let mut i = 0usize;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = format!("new:{i}");
                    match r.set(&k, format!("v{i}").as_bytes(), None).await {
                        Ok(()) => acked.push(i),
                        Err(e) => {
                            eprintln!("write {k} failed: {e}");
                            failed += 1;
                        }
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (acked, failed)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.nodes[victim].kill();
        let killed = Instant::now();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut rounds = 0;
        // Reads of the keys written before: never an error or a wrong value.
        while killed.elapsed() < Duration::from_secs(6) {
            let got = r.get_many(&refs).await.unwrap_or_else(|e| panic!("read: {e}"));
            assert_all(&got, &vals, &format!("read {rounds} after the kill"));
            rounds += 1;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (acked, failed) = writer.await.unwrap();
        c.wait_ok();
        let (masters, _) = roles(&c);
        assert_eq!(masters.len(), 3, "a replica was promoted");
        // Every acknowledged write, on the masters and (once replicated,
        // where a replica is left) through the replica reads.
        let m = unicache::open(&base).await.unwrap();
        let new_keys: Vec<String> = acked.iter().map(|i| format!("new:{i}")).collect();
        let new_vals: Vec<String> = acked.iter().map(|i| format!("v{i}")).collect();
        let refs: Vec<&str> = new_keys.iter().map(String::as_str).collect();
        assert_all(&m.get_many(&refs).await.unwrap(), &new_vals, "on the masters");
        until_replicated(&*r, &new_keys, &new_vals).await;
        eprintln!(
            "master killed: {} writes acknowledged, {failed} failed; {rounds} read rounds of 1000 after",
            acked.len()
        );
    });
}

#[test]
fn replica_reads_follow_a_reshard() {
    let _g = serial();
    let c = servers::redis_cluster_with(3, 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("{}?namespace=reshard", c.url());
        let r = unicache::open(&format!("{base}&read_from=replica"))
            .await
            .unwrap();
        let (keys, vals) = keys_vals("k", 5000);
        r.set_many(&common::entries(&keys, &vals), None)
            .await
            .unwrap();
        until_replicas_listed(&*r, 3).await;
        until_replicated(&*r, &keys, &vals).await;
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (from, to) = {
            let mut m = (0..c.nodes.len()).filter(|&i| c.is_master(i));
            (m.next().unwrap(), m.next().unwrap())
        };
        let mut mover = c.reshard(from, to, 2000);
        let t = Instant::now();
        let (mut rounds, mut missed) = (0u32, 0usize);
        // While slots move, a replica does not know its master's migration
        // (the master would answer ASK for a key already moved): a read may
        // miss a key in transit, never get a wrong value or an error.
        while mover.try_wait().unwrap().is_none() {
            let got = r
                .get_many(&refs)
                .await
                .unwrap_or_else(|e| panic!("round {rounds}: {e}"));
            for (g, v) in got.iter().zip(&vals) {
                match g {
                    Some(g) => assert_eq!(g.as_ref(), v.as_bytes()),
                    None => missed += 1,
                }
            }
            rounds += 1;
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "reshard still running"
            );
        }
        assert!(mover.wait().unwrap().success());
        c.wait_ok();
        let slots = |p: u16| redis_cli(p, &["CLUSTER", "SLOTS"]);
        wait_for_within(
            "every node to agree on the slots",
            Duration::from_secs(20),
            || {
                let (m, rs) = roles(&c);
                let first = slots(m[0]);
                m.iter().chain(&rs).all(|p| slots(*p) == first)
            },
        );
        until_replicated(&*r, &keys, &vals).await;
        assert_all(
            &r.get_many(&refs).await.unwrap(),
            &vals,
            "after the reshard",
        );
        let s = r.stats().await.unwrap();
        let routing = &s.server.as_ref().unwrap()["cluster"];
        eprintln!("reshard: {rounds} rounds, {missed} reads missed in transit; {routing}");
        assert!(routing["moved"].as_u64().unwrap() > 0, "{routing}");
    });
}

#[test]
fn a_stopped_replica_costs_the_reads_sent_to_it_then_is_avoided() {
    let _g = serial();
    let c = servers::redis_cluster_with(3, 1);
    let victim = (0..c.nodes.len()).find(|&i| !c.is_master(i)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!(
            "{}?namespace=stop&read_from=replica&response_timeout=1s",
            c.url()
        );
        let r = unicache::open(&url).await.unwrap();
        let (keys, vals) = keys_vals("k", 2000);
        r.set_many(&common::entries(&keys, &vals), None)
            .await
            .unwrap();
        until_replicas_listed(&*r, 3).await;
        until_replicated(&*r, &keys, &vals).await;
        c.nodes[victim].signal(libc::SIGSTOP);
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        // The first batch has keys on the stopped replica: they time out.
        let t = Instant::now();
        let e = r.get_many(&refs).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // Then the master serves that replica's slots.
        for round in 0..20 {
            let t = Instant::now();
            let got = r.get_many(&refs).await.unwrap();
            assert_all(
                &got,
                &vals,
                &format!("round {round} with a replica stopped"),
            );
            assert!(
                t.elapsed() < Duration::from_millis(900),
                "{:?}",
                t.elapsed()
            );
        }
        c.nodes[victim].signal(libc::SIGCONT);
    });
}
