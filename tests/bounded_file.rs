//! The bounded file log (`file:PATH?max_bytes=..&max_entries=..&max_age=..`):
//! bounds that hold after every write, the eviction order, the bound as a
//! property of the file shared by several processes, accounting after a
//! SIGKILL, the disk-usage formula, and a full disk (a real tmpfs).

mod common;

use common::tmpfs::{Tmpfs, fill_leaving};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use unicache::backends::file::{FileCache, FileConfig, SyncPolicy};
use unicache::{Cache, CacheOptions};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A small xorshift generator: reproducible runs without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn open(path: &Path, query: &str) -> Arc<dyn Cache> {
    unicache::open(&format!("file:{}?{query}", path.display()))
        .await
        .unwrap()
        .into()
}

/// The backend's own figures (`stats().server`).
async fn server(c: &dyn Cache) -> serde_json::Value {
    c.stats().await.unwrap().server.unwrap()
}

/// The namespace's keys, sorted.
async fn sorted_keys(c: &dyn Cache) -> Vec<String> {
    let mut keys: Vec<String> = c.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    keys.sort();
    keys
}

/// `set` of `k{i}` = "v" for each `i`.
async fn set_each(c: &dyn Cache, keys: std::ops::Range<u32>) {
    for i in keys {
        c.set(&format!("k{i}"), b"v", None).await.unwrap();
    }
}

/// `n` values of 1..=`max` random bytes.
fn values(rng: &mut Rng, n: usize, max: u64) -> Vec<Vec<u8>> {
    let mut one = || vec![b'a' + rng.below(26) as u8; 1 + rng.below(max) as usize];
    (0..n).map(|_| one()).collect()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The bound on the file's size after every write (the `bounds` module
/// doc): `(max_bytes + header) * 100 / (100 - compact_ratio)`.
fn disk_formula(max_bytes: u64, compact_ratio: u64) -> u64 {
    (max_bytes + 36) * 100 / (100 - compact_ratio)
}

/// Live (namespace, key) -> line length, recounted from the raw log as a
/// plain JSON-lines reader sees it (complete lines only: a torn tail is no
/// line), independent of the library's index.
fn recount(path: &Path) -> HashMap<(String, String), u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut live = HashMap::new();
    let mut lines = bytes.split_inclusive(|&b| b == b'\n');
    lines.next(); // header
    for line in lines.filter(|l| l.ends_with(b"\n")) {
        let j: serde_json::Value = serde_json::from_slice(line).unwrap();
        let ns = j["n"].as_str().unwrap_or("").to_string();
        let key = (ns, j["k"].as_str().unwrap().to_string());
        match j["op"].as_str().unwrap() {
            "set" => live.insert(key, line.len() as u64),
            _ => live.remove(&key),
        };
    }
    live
}

/// Random writes (sizes, overwrites, deletes) with `max_bytes` and
/// `max_entries`: after every write the live bytes and entries are within
/// their bounds and the stats say so.
#[test]
fn bounds_hold_after_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.log");
    rt().block_on(async {
        let c = open(&path, "max_bytes=60000&max_entries=150&sync=never").await;
        assert!(c.capabilities().evicts);
        let mut rng = Rng(0x2545f4914f6cdd1d);
        let mut deleted = 0;
        for step in 0..600 {
            let n = 1 + rng.below(12) as usize;
            let keys: Vec<String> = (0..n).map(|_| format!("k{}", rng.below(700))).collect();
            if rng.below(10) == 0 {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                deleted += c.delete_many(&refs).await.unwrap();
            } else {
                let vals = values(&mut rng, n, 1500);
                c.set_many(&common::entries(&keys, &vals), None)
                    .await
                    .unwrap();
            }
            let s = server(&*c).await;
            let (bytes, entries) = (
                s["used_bytes"].as_u64().unwrap(),
                s["used_entries"].as_u64().unwrap(),
            );
            assert!(bytes <= 60_000, "step {step}: {bytes} live bytes");
            assert!(entries <= 150, "step {step}: {entries} entries");
            assert!(c.len().await.unwrap() <= 150);
        }
        let st = c.stats().await.unwrap();
        let s = st.server.clone().unwrap();
        assert!(st.evictions > 100, "{st:?}");
        assert_eq!(s["evictions"], st.evictions);
        assert_eq!(s["bounds"]["max_bytes"], 60_000);
        assert_eq!(s["bounds"]["max_entries"], 150);
        assert_eq!(s["evict_policy"], "clock");
        assert!(deleted > 0);
    });
}

/// Plain FIFO (and CLOCK with nothing read) evicts the oldest lines first:
/// an overwritten key's line is young again.
#[test]
fn fifo_evicts_the_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        for policy in ["evict=fifo", "evict=clock"] {
            let path = dir.path().join(format!("{policy}.log"));
            let c = open(&path, &format!("max_entries=10&{policy}")).await;
            set_each(&*c, 0..25).await;
            assert_eq!(c.stats().await.unwrap().evictions, 15, "{policy}");
            // k20's line is now younger than k21..k24's.
            c.set("k20", b"again", None).await.unwrap();
            set_each(&*c, 25..31).await;
            let want = [
                "k20", "k22", "k23", "k24", "k25", "k26", "k27", "k28", "k29", "k30",
            ];
            let mut want = want.map(String::from).to_vec();
            want.sort();
            assert_eq!(sorted_keys(&*c).await, want, "{policy}");
            assert_eq!(c.get("k20").await.unwrap().as_deref(), Some(&b"again"[..]));
            assert_eq!(c.stats().await.unwrap().evictions, 21, "{policy}");
        }
    });
}

/// CLOCK: an entry read since its line was written is moved to the tail
/// once instead of being evicted (the next entry goes); unread again, it
/// goes in its turn. FIFO evicts it at once.
#[test]
fn second_chance_keeps_a_read_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        for policy in ["clock", "fifo"] {
            let path = dir.path().join(format!("{policy}.log"));
            let c = open(&path, &format!("max_entries=5&evict={policy}")).await;
            set_each(&*c, 0..5).await;
            assert!(c.get("k0").await.unwrap().is_some());
            c.set("k5", b"v", None).await.unwrap();
            // `contains` reads no value but is a read too: check with it
            // only where the bit no longer matters.
            let (k0, k1) = (
                c.contains("k0").await.unwrap(),
                c.contains("k1").await.unwrap(),
            );
            if policy == "fifo" {
                assert_eq!((k0, k1), (false, true), "fifo: the oldest goes");
                continue;
            }
            assert_eq!((k0, k1), (true, false), "clock: k0 spared, k1 goes instead");
            // Queue now k2 k3 k4 k5 k0 (k0's bit set again by `contains`):
            // four writes take k2..k5, the fifth spares k0 once more and
            // takes k6, and with no read since, k0 goes next.
            set_each(&*c, 6..11).await;
            let keys = sorted_keys(&*c).await;
            assert_eq!(keys, ["k0", "k10", "k7", "k8", "k9"], "clock");
            // k0 is at the tail, unread since: five writes take k7..k10
            // and then k0 in its turn.
            set_each(&*c, 11..16).await;
            let keys = sorted_keys(&*c).await;
            assert_eq!(keys, ["k11", "k12", "k13", "k14", "k15"], "no third chance");
            assert_eq!(c.len().await.unwrap(), 5);
        }
    });
}

/// `max_age`: an entry written longer ago is a miss at once and goes from
/// the log (a tombstone) at the next write; new lines carry their write
/// time; a process without bounds follows the file's age; a line written
/// before the bound was set (no write time) does not age.
#[test]
fn max_age_expires_old_entries_and_evicts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("age.log");
    rt().block_on(async {
        let c = open(&path, "max_age=400ms").await;
        c.set("old", b"v", None).await.unwrap();
        c.set("ttl", b"v", Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        let ttl = c.ttl("ttl").await.unwrap().unwrap().unwrap();
        assert!(
            ttl <= Duration::from_millis(400),
            "the age bound is the nearer expiry: {ttl:?}"
        );
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(c.get("old").await.unwrap(), None);
        c.set("new", b"v", None).await.unwrap();
        assert_eq!(c.get("ttl").await.unwrap(), None);
        assert!(c.get("new").await.unwrap().is_some());
        assert_eq!(c.len().await.unwrap(), 1);
        // Both went as tombstones at that write (every process sees them).
        assert_eq!(c.stats().await.unwrap().evictions, 2);
        let live = recount(&path);
        assert_eq!(live.len(), 1, "{live:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        let new_line = text.lines().find(|l| l.contains("\"k\":\"new\"")).unwrap();
        assert!(new_line.contains(",\"t\":"), "{new_line}");
        // A process that opens without bounds follows the file's max_age.
        let again = open(&path, "").await;
        assert!(again.get("new").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(again.get("new").await.unwrap(), None);

        let undated = dir.path().join("undated.log");
        set_each(&*open(&undated, "").await, 0..1).await;
        let c = open(&undated, "max_age=100ms").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.set("dated", b"v", None).await.unwrap();
        assert!(
            c.contains("k0").await.unwrap(),
            "no write time: does not age"
        );
    });
}

const CHILD_PATH: &str = "UNICACHE_TEST_BOUNDED_PATH";
const CHILD_ID: &str = "UNICACHE_TEST_BOUNDED_ID";

/// Child of `a_process_without_bounds_uses_the_files`: writes 200 keys
/// without any bound of its own, prints its evictions.
#[test]
#[ignore]
fn unbounded_writer_child() {
    let Ok(path) = std::env::var(CHILD_PATH) else {
        return;
    };
    rt().block_on(async {
        let c = open(Path::new(&path), "").await;
        set_each(&*c, 0..200).await;
        println!("evictions {}", c.stats().await.unwrap().evictions);
    });
}

/// The bound is the file's: a process that gives none uses it (also after
/// a compaction), one that gives others replaces it for everyone.
#[test]
fn a_process_without_bounds_uses_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.log");
    rt().block_on(async {
        let first = open(&path, "max_entries=50").await;
        first.set("first", b"v", None).await.unwrap();
        first.compact().await.unwrap();
        let out = common::spawn_self(
            "unbounded_writer_child",
            &[(CHILD_PATH, path.display().to_string())],
        )
        .wait_with_output()
        .unwrap();
        common::assert_exit(&out, 0);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("evictions 151"), "{stdout}");
        assert_eq!(first.len().await.unwrap(), 50);
        assert_eq!(first.get("k149").await.unwrap(), None);
        assert!(first.get("k150").await.unwrap().is_some());
        // Another process (here a second handle: its own index) replaces
        // the bound; the first handle follows on its next write.
        let wider = open(&path, "max_entries=80").await;
        assert_eq!(server(&*wider).await["bounds"]["max_entries"], 80);
        for i in 0..100 {
            first.set(&format!("f:{i}"), b"v", None).await.unwrap();
        }
        assert_eq!(first.len().await.unwrap(), 80);
        assert_eq!(server(&*first).await["bounds"]["max_entries"], 80);
        let plain = open(&path, "").await;
        assert_eq!(server(&*plain).await["bounds"]["max_entries"], 80);
        assert!(plain.capabilities().evicts);
    });
}

/// The value child `p` writes for key `i`, first or second version.
fn four_value(p: u64, i: u64, second: bool) -> Vec<u8> {
    let len = 150 + (i * 37 + p * 11) % 250;
    let fill = if second { b'B' } else { b'A' };
    let mut v = format!("{p}:{i}:").into_bytes();
    v.resize(len as usize, fill);
    v
}

/// Per batch of 20 keys: all set, the even ones overwritten, the one at 7
/// deleted. What child `p` wrote last for key `i` (None: deleted) and the
/// order of its last line (child-local).
fn four_expected(p: u64, i: u64) -> (Option<Vec<u8>>, u64) {
    let (b, j) = (i / 20, i % 20);
    match j {
        7 => (None, u64::MAX),
        j if j % 2 == 0 => (Some(four_value(p, i, true)), b * 100 + 40 + j),
        j => (Some(four_value(p, i, false)), b * 100 + j),
    }
}

const FOUR_KEYS: u64 = 2400;

/// Child of `four_processes_keep_one_bound`: writes its keys as
/// `four_expected` says, prints its evictions and how many live keys its
/// deletes removed.
#[test]
#[ignore]
fn four_writer_child() {
    let (Ok(url), Ok(p)) = (std::env::var(CHILD_PATH), std::env::var(CHILD_ID)) else {
        return;
    };
    let p: u64 = p.parse().unwrap();
    rt().block_on(async {
        let c = unicache::open(&url).await.unwrap();
        let mut deleted = 0;
        for b in 0..FOUR_KEYS / 20 {
            let ids: Vec<u64> = (b * 20..b * 20 + 20).collect();
            let keys: Vec<String> = ids.iter().map(|i| format!("p{p}:{i}")).collect();
            let first: Vec<Vec<u8>> = ids.iter().map(|&i| four_value(p, i, false)).collect();
            let second: Vec<Vec<u8>> = ids.iter().map(|&i| four_value(p, i, true)).collect();
            c.set_many(&common::entries(&keys, &first), None)
                .await
                .unwrap();
            let evens: Vec<_> = common::entries(&keys, &second)
                .into_iter()
                .step_by(2)
                .collect();
            c.set_many(&evens, None).await.unwrap();
            deleted += c.delete_many(&[keys[7].as_str()]).await.unwrap();
        }
        println!(
            "evictions {} deleted {deleted}",
            c.stats().await.unwrap().evictions
        );
    });
}

/// Four processes write 10x the bound at once: the file ends within the
/// formula, and every key is readable with its latest value or was
/// counted: evicted (in log order: never a key younger than one kept) or
/// deleted. Nothing goes missing silently.
#[test]
fn four_processes_keep_one_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("four.log");
    let max_bytes = 250_000u64;
    let url = format!("file:{}?max_bytes={max_bytes}&sync=never", path.display());
    rt().block_on(async { open(&path, &format!("max_bytes={max_bytes}")).await });
    let children: Vec<_> = (0..4)
        .map(|p| {
            common::spawn_self(
                "four_writer_child",
                &[(CHILD_PATH, url.clone()), (CHILD_ID, p.to_string())],
            )
        })
        .collect();
    let (mut evicted, mut deleted) = (0u64, 0u64);
    for c in children {
        let out = c.wait_with_output().unwrap();
        common::assert_exit(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        let figure = |name: &str| -> u64 {
            let mut words = text.split_whitespace().skip_while(|w| *w != name);
            let n = words.nth(1).and_then(|w| w.parse().ok());
            n.unwrap_or_else(|| panic!("no {name} in: {text}"))
        };
        evicted += figure("evictions");
        deleted += figure("deleted");
    }
    let written: u64 = (0..4u64)
        .flat_map(|p| (0..FOUR_KEYS).map(move |i| four_value(p, i, false).len() as u64))
        .sum();
    assert!(written > 10 * max_bytes, "wrote {written} bytes");
    rt().block_on(async {
        let c = open(&path, "").await;
        let s = server(&*c).await;
        assert!(s["used_bytes"].as_u64().unwrap() <= max_bytes, "{s}");
        let size = file_len(&path);
        assert!(size <= disk_formula(max_bytes, 50), "{size} bytes on disk");
        let mut present = 0u64;
        for p in 0..4 {
            let keys: Vec<String> = (0..FOUR_KEYS).map(|i| format!("p{p}:{i}")).collect();
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let got = c.get_many(&refs).await.unwrap();
            // The youngest missing key is older than the oldest kept one.
            let (mut youngest_gone, mut oldest_kept) = (None, u64::MAX);
            for (i, v) in got.iter().enumerate() {
                let (want, order) = four_expected(p, i as u64);
                match (v, want) {
                    (Some(v), Some(w)) => {
                        assert_eq!(&v[..], &w[..], "p{p}:{i} holds a stale value");
                        present += 1;
                        oldest_kept = oldest_kept.min(order);
                    }
                    (Some(_), None) => panic!("p{p}:{i} was deleted"),
                    (None, Some(_)) => youngest_gone = youngest_gone.max(Some(order)),
                    (None, None) => {}
                }
            }
            assert!(
                youngest_gone.is_none_or(|y| y < oldest_kept),
                "p{p}: not in log order"
            );
        }
        assert_eq!(
            present + evicted + deleted,
            4 * FOUR_KEYS,
            "present {present}, evicted {evicted}, deleted {deleted}"
        );
        assert!(evicted > 0 && present > 0);
        eprintln!(
            "four processes: {present} kept, {evicted} evicted, {deleted} deleted, file {} bytes",
            file_len(&path)
        );
    });
}

/// Child of `accounting_survives_sigkill_mid_eviction`: `set_many` batches
/// into a small bound (each one evicts) until killed or 20 s pass.
#[test]
#[ignore]
fn kill_writer_child() {
    let (Ok(path), Ok(run)) = (std::env::var(CHILD_PATH), std::env::var(CHILD_ID)) else {
        return;
    };
    let end = Instant::now() + Duration::from_secs(20);
    rt().block_on(async {
        let c = open(Path::new(&path), "max_bytes=200000&sync=never").await;
        let mut rng = Rng(0x9e3779b97f4a7c15 ^ run.parse::<u64>().unwrap());
        let mut out = std::io::stdout().lock();
        for b in 0u64.. {
            let keys: Vec<String> = (0..50).map(|_| format!("k{}", rng.below(3000))).collect();
            let vals = values(&mut rng, keys.len(), 2000);
            c.set_many(&common::entries(&keys, &vals), None)
                .await
                .unwrap();
            writeln!(out, "batch {b}").unwrap();
            out.flush().unwrap();
            if Instant::now() > end {
                break;
            }
        }
    });
}

/// SIGKILL a bounded writer at random times (mostly mid-write, where each
/// write evicts): after reopening, the bytes and entries in `stats` equal a
/// recount of the raw log and of `entries()`, and stay within the bound.
#[test]
fn accounting_survives_sigkill_mid_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill.log");
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut batches = 0;
    for run in 0..12 {
        let mut child = common::spawn_self(
            "kill_writer_child",
            &[
                (CHILD_PATH, path.display().to_string()),
                (CHILD_ID, run.to_string()),
            ],
        );
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || BufReader::new(stdout).lines().count());
        std::thread::sleep(Duration::from_millis(80 + rng.below(400)));
        child.kill().unwrap();
        child.wait().unwrap();
        batches += reader.join().unwrap();
        rt().block_on(async {
            let c = open(&path, "").await;
            let s = server(&*c).await;
            let live = recount(&path);
            let bytes: u64 = live.values().sum();
            let entries: Vec<_> = c
                .entries()
                .await
                .unwrap()
                .map(|e| e.unwrap())
                .collect()
                .await;
            assert_eq!(s["used_bytes"].as_u64().unwrap(), bytes, "run {run}: {s}");
            assert_eq!(
                s["used_entries"].as_u64().unwrap(),
                live.len() as u64,
                "run {run}"
            );
            assert_eq!(entries.len(), live.len(), "run {run}");
            assert_eq!(c.stats().await.unwrap().entries, Some(live.len() as u64));
            for e in &entries {
                assert!(live.contains_key(&(String::new(), e.key.clone())));
            }
            assert_eq!(s["corrupt_records"], 0);
            // Killed mid-write, the log may be one chunk over; never more.
            assert!(bytes <= 200_000 + 50 * 2100, "run {run}: {bytes}");
        });
    }
    assert!(batches > 20, "the writers hardly wrote: {batches} batches");
}

/// A long random write (values of random sizes, overwrites, deletes) into
/// a small bound: the file's size, sampled after every write, never passes
/// `(max_bytes + 36) * 100 / (100 - compact_ratio)`.
#[test]
fn disk_usage_stays_within_the_formula() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        for ratio in [50u64, 80] {
            let path = dir.path().join(format!("d{ratio}.log"));
            let max_bytes = 300_000u64;
            let c = open(
                &path,
                &format!("max_bytes={max_bytes}&compact_ratio={ratio}&sync=never"),
            )
            .await;
            let bound = disk_formula(max_bytes, ratio);
            let mut rng = Rng(0xdead_beef_cafe_f00d ^ ratio);
            let (mut worst, mut written) = (0u64, 0u64);
            for _ in 0..3000 {
                let n = 1 + rng.below(20) as usize;
                let keys: Vec<String> = (0..n).map(|_| format!("k{}", rng.below(5000))).collect();
                if rng.below(8) == 0 {
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    c.delete_many(&refs).await.unwrap();
                } else {
                    let vals: Vec<Vec<u8>> = keys
                        .iter()
                        .map(|_| vec![b'r'; 1 + (rng.below(64) * rng.below(64)) as usize])
                        .collect();
                    written += vals.iter().map(|v| v.len() as u64).sum::<u64>();
                    c.set_many(&common::entries(&keys, &vals), None)
                        .await
                        .unwrap();
                }
                let size = file_len(&path);
                worst = worst.max(size);
                assert!(size <= bound, "{size} bytes on disk, formula {bound}");
            }
            assert!(written > 20 * max_bytes, "{written}");
            eprintln!(
                "compact_ratio={ratio}: max_bytes {max_bytes}, wrote {written} value bytes, \
                 worst file size {worst} of {bound} allowed ({:.1}%)",
                worst as f64 * 100.0 / bound as f64
            );
        }
    });
}

/// A write that finds the disk full evicts room for itself, compacts (the
/// old file's dead bytes are freed) and succeeds on its one retry. With no
/// room to gain it fails with "disk full", the log intact.
#[test]
fn a_full_disk_evicts_compacts_and_retries_once() {
    let Some(fs) = Tmpfs::mount("6m") else {
        return;
    };
    let path = fs.path().join("c.log");
    rt().block_on(async {
        let c = FileCache::open(
            FileConfig::new(&path)
                .sync(SyncPolicy::Batch)
                .compact_ratio(90),
            CacheOptions::new().max_bytes(2_000_000),
        )
        .unwrap();
        // 1.8 MB live, then 1.2 MB of it overwritten: 3 MB on disk, 40% dead.
        let keys: Vec<String> = (0..1800).map(|i| format!("k{i:04}")).collect();
        let small = vec![b's'; 960];
        let rows: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &small[..])).collect();
        c.set_many(&rows, None).await.unwrap();
        c.set_many(&rows[600..], None).await.unwrap();
        let before = file_len(&path);
        assert!(before > 2_900_000, "{before}");
        let filler = fill_leaving(fs.path(), 1_000_000);
        // 1.5 MB does not fit in the 1 MB left; evicting to 0.5 MB live and
        // compacting (the copy fits) frees the old 3 MB.
        let big = vec![b'b'; 1_500_000];
        c.set("big", &big, None).await.unwrap();
        assert_eq!(c.get("big").await.unwrap().as_deref(), Some(&big[..]));
        let s = server(&c).await;
        assert!(s["used_bytes"].as_u64().unwrap() <= 2_000_000, "{s}");
        assert!(file_len(&path) < before, "compacted");
        assert!(c.stats().await.unwrap().evictions >= 1000);
        assert!(c.get("k1799").await.unwrap().is_some(), "the youngest stay");
        // Now nothing can be gained: the disk is full and the new write is
        // bigger than anything eviction and compaction could free.
        std::fs::remove_file(filler).unwrap();
        let _filler = fill_leaving(fs.path(), 0);
        let n = c.len().await.unwrap();
        let err = c
            .set("huge", &vec![b'h'; 1_900_000], None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(c.get("huge").await.unwrap(), None);
        let again = FileCache::open(FileConfig::new(&path), CacheOptions::new()).unwrap();
        assert!(again.get("big").await.unwrap().is_some());
        assert!(again.len().await.unwrap() <= n);
        assert_eq!(server(&again).await["corrupt_records"], 0);
    });
}
