//! unicache's hybrid cache (a memory L1 over a bounded disk cache:
//! `file:PATH?max_bytes=..&l1=N`, `sqlite:PATH?max_bytes=..&l1=N`) against
//! foyer's `HybridCache`, on the eviction simulator's Zipf traces, in one
//! run on one machine.
//!
//! Workload: the simulator's traces (benches/eviction_sim/trace.rs, same
//! seeds): Zipf 0.8 and Zipf 0.99 over 100,000 keys, 2,000,000 requests
//! each. Keys are `key:NNNNNN` (10 bytes); values `HVF_VALUE` bytes (1,024 by
//! default) of ASCII, starting with the key (checked on every hit). Each
//! request is read-through: `get`, and on a miss `insert` of the value. One
//! task issues the requests (`HVF_TASKS` for more, each taking every n-th
//! request) on a 2-worker tokio runtime. Hit ratios count the whole trace,
//! cold misses included, as the simulator's do.
//!
//! Budgets, the same for every cache: the disk holds `HVF_DISK` percent of
//! the data (10 and 1 by default; data = 100,000 x value bytes), the memory a
//! tenth of that many entries. unicache's L1 is bounded in entries (`l1=N`),
//! foyer's memory in weight: its weighter counts key + value bytes and its
//! capacity is N x (key + value), so with fixed-size keys and values both
//! hold N entries. unicache's `max_bytes` and foyer's device capacity are
//! the same number of bytes (each counts its own way: see the README).
//!
//! Caches (`HVF_CACHES`, all by default): `file` and `sqlite` (unicache,
//! `max_bytes` = the budget), `file-half` (the file log with `max_bytes` at
//! half the budget, so that the log with its dead lines stays within it on
//! disk), `foyer` (HybridCache, defaults but for the block size: the device
//! in 64 blocks, at least 64 KiB) and `foyer-lean` (the same with its flush
//! buffer and queue cut from 16 MiB each to one block: entries on their way
//! to the disk are memory too, and foyer serves gets from them).
//!
//! ```sh
//! cargo run --release --manifest-path benches/hybrid_vs_foyer/Cargo.toml
//! HVF_RUNS=3 HVF_VALUE=4000 HVF_CACHES=file,foyer cargo run --release \
//!     --manifest-path benches/hybrid_vs_foyer/Cargo.toml
//! ```
//!
//! Environment: `HVF_REQUESTS` (2000000), `HVF_VALUE` (1024), `HVF_DISK`
//! (`10,1`), `HVF_CACHES`, `HVF_RUNS` (1; medians over the runs),
//! `HVF_TASKS` (1), `HVF_DIR` (where the temporary directory goes; the
//! system's temp dir by default), `HVF_DEBUG` (prints each cache's files and
//! unicache's tier stats after each run). The table goes to stdout, the
//! progress to stderr.

#[allow(dead_code)] // the simulator's other traces are not used here
#[path = "../../eviction_sim/trace.rs"]
mod trace;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, Source,
};
use unicache::Cache;

type Foyer = HybridCache<String, Vec<u8>>;

/// Key length: `key:` and six digits.
const KEY_LEN: usize = 10;
/// The caches this program knows (`HVF_CACHES`).
const KINDS: [&str; 5] = ["file", "file-half", "sqlite", "foyer", "foyer-lean"];
/// Memory holds this fraction of the disk's entries.
const MEMORY_SHARE: usize = 10;

/// The run's settings, from the environment.
struct Settings {
    requests: usize,
    value: usize,
    disk_pcts: Vec<f64>,
    caches: Vec<String>,
    runs: usize,
    tasks: usize,
    dir: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not valid");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default.to_string())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let s = Settings {
            requests: env_or("HVF_REQUESTS", 2_000_000),
            value: env_or("HVF_VALUE", 1024),
            disk_pcts: list("HVF_DISK", "10,1")
                .iter()
                .map(|p| p.parse().expect("HVF_DISK: percentages"))
                .collect(),
            caches: list("HVF_CACHES", "file,file-half,sqlite,foyer,foyer-lean"),
            runs: env_or("HVF_RUNS", 1).max(1),
            tasks: env_or("HVF_TASKS", 1).max(1),
            dir: std::env::var_os("HVF_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        };
        assert!(s.value >= KEY_LEN, "HVF_VALUE: at least {KEY_LEN} bytes");
        for c in &s.caches {
            assert!(KINDS.contains(&c.as_str()), "HVF_CACHES: some of {KINDS:?}");
        }
        s
    }
}

/// The budgets of one cache size.
#[derive(Clone, Copy)]
struct Budget {
    disk_bytes: u64,
    memory_entries: usize,
}

impl Budget {
    fn new(disk_pct: f64, value: usize) -> Budget {
        let data = (trace::HOT_KEYS * value) as f64;
        let disk_entries = (trace::HOT_KEYS as f64 * disk_pct / 100.0).round() as usize;
        Budget {
            disk_bytes: (data * disk_pct / 100.0).round() as u64,
            memory_entries: (disk_entries / MEMORY_SHARE).max(1),
        }
    }

    fn memory_bytes(&self, value: usize) -> usize {
        self.memory_entries * (KEY_LEN + value)
    }

    /// foyer's block (its unit of eviction): the device split in 64 blocks,
    /// at least 64 KiB (entries are 4 KiB-aligned), 4 KiB-aligned. foyer's
    /// default (16 MiB) is larger than these devices.
    fn foyer_block(&self) -> usize {
        let b = (self.disk_bytes as usize / 64).max(64 * 1024);
        b.div_ceil(4096) * 4096
    }

    fn foyer_device(&self) -> usize {
        let b = self.foyer_block();
        (self.disk_bytes as usize / b) * b
    }
}

/// A cache under test.
enum Subject {
    Unicache(Arc<dyn Cache>),
    Foyer(Foyer),
}

/// Where a get was served from.
#[derive(Clone, Copy, PartialEq)]
enum Served {
    Memory,
    Disk,
    /// A hit whose tier the cache does not tell per call (unicache: from
    /// its stats afterwards).
    Hit,
    Miss,
}

impl Subject {
    async fn open(kind: &str, dir: &Path, b: &Budget, value: usize) -> Subject {
        match kind {
            "file" | "file-half" | "sqlite" => {
                let (scheme, name) = if kind == "sqlite" {
                    ("sqlite", "cache.sqlite3")
                } else {
                    ("file", "cache.jsonl")
                };
                // file-half: max_bytes at half the budget, so that the log
                // with its dead lines (up to max_bytes x 2 at the default
                // compact_ratio=50) stays within the budget on disk too.
                let max_bytes = if kind == "file-half" {
                    b.disk_bytes / 2
                } else {
                    b.disk_bytes
                };
                // l1_ttl: the L1 keeps entries for 30 s by default (other
                // processes' writes reach it no sooner); foyer has no such
                // cap, and a run is longer than that.
                let url = format!(
                    "{scheme}:{}?max_bytes={max_bytes}&l1={}&l1_ttl=1h",
                    dir.join(name).display(),
                    b.memory_entries
                );
                let cache = unicache::Stack::from_url(&url)
                    .expect("unicache URL")
                    .open_cache()
                    .await
                    .expect("open unicache");
                Subject::Unicache(cache)
            }
            _ => {
                let device = FsDeviceBuilder::new(dir)
                    .with_capacity(b.foyer_device())
                    .build()
                    .expect("foyer device");
                let mut engine = BlockEngineConfig::new(device).with_block_size(b.foyer_block());
                if kind == "foyer-lean" {
                    // The flush pipeline keeps entries on their way to the
                    // disk in memory (and serves gets from them): 16 MiB of
                    // buffer and 16 MiB of queue by default, more than the
                    // memory budget. Here one block of each.
                    engine = engine
                        .with_buffer_pool_size(b.foyer_block())
                        .with_submit_queue_size_threshold(b.foyer_block());
                }
                let cache: Foyer = HybridCacheBuilder::new()
                    .memory(b.memory_bytes(value))
                    .with_weighter(|k: &String, v: &Vec<u8>| k.len() + v.len())
                    .storage()
                    .with_engine_config(engine)
                    .build()
                    .await
                    .expect("open foyer");
                Subject::Foyer(cache)
            }
        }
    }

    async fn get(&self, key: &str) -> Served {
        match self {
            Subject::Unicache(c) => match c.get(key).await.expect("unicache get") {
                Some(v) => {
                    assert!(v.starts_with(key.as_bytes()), "wrong value for {key}");
                    Served::Hit
                }
                None => Served::Miss,
            },
            Subject::Foyer(c) => match c.get(key).await.expect("foyer get") {
                Some(e) => {
                    assert!(
                        e.value().starts_with(key.as_bytes()),
                        "wrong value for {key}"
                    );
                    if e.source() == Source::Disk {
                        Served::Disk
                    } else {
                        Served::Memory
                    }
                }
                None => Served::Miss,
            },
        }
    }

    async fn insert(&self, key: &str, value: Vec<u8>) {
        match self {
            Subject::Unicache(c) => c.set(key, &value, None).await.expect("unicache set"),
            Subject::Foyer(c) => {
                c.insert(key.to_string(), value);
            }
        }
    }

    /// unicache's per-tier hits (L1, L2) from its stats.
    async fn tier_hits(&self) -> Option<(u64, u64)> {
        let Subject::Unicache(c) = self else {
            return None;
        };
        let tier = c.stats().await.expect("stats").tier?;
        Some((tier["l1_hits"].as_u64()?, tier["l2_hits"].as_u64()?))
    }

    async fn close(self) {
        match self {
            Subject::Unicache(c) => c.close().await.expect("close unicache"),
            Subject::Foyer(c) => c.close().await.expect("close foyer"),
        }
    }
}

/// What one task measured.
#[derive(Default, Clone, Copy)]
struct Tally {
    memory_hits: u64,
    disk_hits: u64,
    hits: u64,
    misses: u64,
    get_time: Duration,
    insert_time: Duration,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.memory_hits += o.memory_hits;
        self.disk_hits += o.disk_hits;
        self.hits += o.hits;
        self.misses += o.misses;
        self.get_time += o.get_time;
        self.insert_time += o.insert_time;
    }
}

fn key_of(id: u32) -> String {
    format!("key:{id:06}")
}

fn value_of(key: &str, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(key.as_bytes());
    v.resize(len, b'v');
    v
}

/// Replays `requests[task], requests[task + tasks], ...` read-through.
async fn replay(
    cache: Arc<Subject>,
    requests: Arc<Vec<u32>>,
    task: usize,
    tasks: usize,
    value: usize,
) -> Tally {
    let mut t = Tally::default();
    for &id in requests.iter().skip(task).step_by(tasks) {
        let key = key_of(id);
        let start = Instant::now();
        let served = cache.get(&key).await;
        t.get_time += start.elapsed();
        match served {
            Served::Memory => t.memory_hits += 1,
            Served::Disk => t.disk_hits += 1,
            Served::Hit => t.hits += 1,
            Served::Miss => {
                t.misses += 1;
                let v = value_of(&key, value);
                let start = Instant::now();
                cache.insert(&key, v).await;
                t.insert_time += start.elapsed();
            }
        }
    }
    t
}

/// One cache's figures on one trace and budget.
#[derive(Clone, Copy)]
struct Measured {
    hit_pct: f64,
    memory_hit_pct: f64,
    disk_hit_pct: f64,
    get_ops: f64,
    insert_ops: f64,
    requests_per_s: f64,
    disk_used: u64,
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn measure(
    kind: &str,
    trace: &Arc<Vec<u32>>,
    b: &Budget,
    s: &Settings,
    dir: &Path,
) -> Measured {
    let cache = Arc::new(Subject::open(kind, dir, b, s.value).await);
    let wall = Instant::now();
    let handles: Vec<_> = (0..s.tasks)
        .map(|task| tokio::spawn(replay(cache.clone(), trace.clone(), task, s.tasks, s.value)))
        .collect();
    let mut t = Tally::default();
    for h in handles {
        t.add(&h.await.expect("replay task"));
    }
    let wall = wall.elapsed();
    if let Some((l1, l2)) = cache.tier_hits().await {
        assert_eq!(l1 + l2, t.hits, "unicache's tier counters");
        (t.memory_hits, t.disk_hits) = (l1, l2);
    } else {
        t.hits = t.memory_hits + t.disk_hits;
    }
    let disk_used = dir_bytes(dir);
    if std::env::var_os("HVF_DEBUG").is_some() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            eprintln!("    {:?} {}", e.file_name(), e.metadata().unwrap().len());
        }
        match &*cache {
            Subject::Unicache(c) => eprintln!("    {:?}", c.stats().await.unwrap().tier),
            Subject::Foyer(c) => eprintln!(
                "    foyer memory usage {} of {}",
                c.memory().usage(),
                c.memory().capacity()
            ),
        }
    }
    Arc::into_inner(cache)
        .expect("tasks are done")
        .close()
        .await;
    let n = trace.len() as f64;
    let pct = |x: u64| 100.0 * x as f64 / n;
    // With several tasks, time summed over tasks / tasks is the busy time.
    let per_s =
        |count: u64, time: Duration| count as f64 / (time.as_secs_f64() / s.tasks as f64).max(1e-9);
    Measured {
        hit_pct: pct(t.hits),
        memory_hit_pct: pct(t.memory_hits),
        disk_hit_pct: pct(t.disk_hits),
        get_ops: per_s(t.hits + t.misses, t.get_time),
        insert_ops: per_s(t.misses, t.insert_time),
        requests_per_s: n / wall.as_secs_f64(),
        disk_used,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn label(kind: &str) -> &'static str {
    match kind {
        "file" => "unicache file",
        "file-half" => "unicache file, max_bytes / 2",
        "sqlite" => "unicache sqlite",
        "foyer" => "foyer",
        _ => "foyer, lean",
    }
}

fn main() {
    let s = Settings::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(s));
}

async fn run(s: Settings) {
    let traces = [
        (
            "zipf0.8",
            Arc::new(trace::zipf("zipf0.8", 0.8, s.requests, 1).keys),
        ),
        (
            "zipf0.99",
            Arc::new(trace::zipf("zipf0.99", 0.99, s.requests, 2).keys),
        ),
    ];
    let root = s
        .dir
        .join(format!("hybrid_vs_foyer-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("temp dir");
    eprintln!(
        "{} requests per trace over {} keys, values {} B, {} task(s), {} run(s), files under {}",
        s.requests,
        trace::HOT_KEYS,
        s.value,
        s.tasks,
        s.runs,
        root.display()
    );
    let mut rows = Vec::new();
    for &pct in &s.disk_pcts {
        let b = Budget::new(pct, s.value);
        eprintln!(
            "disk {pct}%: {} bytes (foyer: device {} bytes in blocks of {}), memory {} entries ({} bytes)",
            b.disk_bytes,
            b.foyer_device(),
            b.foyer_block(),
            b.memory_entries,
            b.memory_bytes(s.value)
        );
        for (name, trace) in &traces {
            for kind in &s.caches {
                let mut runs = Vec::new();
                for run in 0..s.runs {
                    let dir = root.join(format!("{kind}-{name}-{pct}-{run}"));
                    std::fs::create_dir_all(&dir).expect("cache dir");
                    let m = measure(kind, trace, &b, &s, &dir).await;
                    std::fs::remove_dir_all(&dir).expect("remove cache dir");
                    eprintln!(
                        "  {name} disk {pct}% {kind} run {run}: hits {:.2}% (memory {:.2}, disk {:.2}), get {:.0}/s, insert {:.0}/s, {:.0} req/s, disk used {} B",
                        m.hit_pct,
                        m.memory_hit_pct,
                        m.disk_hit_pct,
                        m.get_ops,
                        m.insert_ops,
                        m.requests_per_s,
                        m.disk_used
                    );
                    runs.push(m);
                }
                let med = |f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
                rows.push(format!(
                    "| {name} | {pct}% | {} | {:.2} | {:.2} / {:.2} | {:.0}k | {:.0}k | {:.0}k | {:.1} |",
                    label(kind),
                    med(|m| m.hit_pct),
                    med(|m| m.memory_hit_pct),
                    med(|m| m.disk_hit_pct),
                    med(|m| m.get_ops) / 1e3,
                    med(|m| m.insert_ops) / 1e3,
                    med(|m| m.requests_per_s) / 1e3,
                    med(|m| m.disk_used as f64) / 1e6,
                ));
            }
        }
    }
    std::fs::remove_dir_all(&root).expect("remove temp dir");
    println!(
        "| trace | disk | cache | hit % | memory / disk hit % | get ops/s | insert ops/s | requests/s | disk used at end (MB) |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}
