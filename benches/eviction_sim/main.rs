//! Trace-driven eviction simulator: which eviction policy should a bounded
//! disk cache (SQLite, or the append-only file log that several processes
//! share) use?
//!
//! Replays synthetic traces through simulated read-through caches of
//! unit-size objects (a request is a get; a miss inserts the key) and prints
//! a Markdown table of hit ratios: one row per policy, one column per trace
//! and capacity. No I/O: the policies' data lives in memory, and what a disk
//! cache would only write later (batched access times or counters) or keep
//! per process is modelled explicitly.
//!
//! Traces (2,000,000 requests each, 200,000 with `--quick`; fixed seeds):
//! Zipf 0.8 and Zipf 0.99 over 100,000 keys (ids shuffled); `loop+scan`,
//! 70% Zipf 0.9 over 100,000 keys interleaved with 30% from sequential scans
//! that sweep another 50,000 keys in order, again and again; `one-hit`,
//! Zipf 0.99 with 40% of the requests to keys never seen again.
//! Capacities: 1% and 10% of the 100,000 Zipf keys (1,000 and 10,000
//! objects) on every trace. Hit ratios count the whole trace (cold misses
//! included).
//!
//! Policies: FIFO; exact LRU; sampled LRU (K = 5 or 16 random samples,
//! access times written every 1,000 requests); CLOCK; S3-FIFO, moving keys
//! from small to main above frequency 1 or above 0, with its counters
//! exact, written every 1,000 requests, or private to each of 4 processes.
//! FIFO, LRU and CLOCK give the same hit ratios as libCacheSim's (checked
//! with its Python package on the `--quick` traces).
//!
//! ```sh
//! cargo bench --bench eviction_sim              # the full run
//! cargo bench --bench eviction_sim -- --quick   # 10x shorter traces
//! ```

#![warn(clippy::too_many_lines)]

mod policies;
mod s3fifo;
mod trace;

use std::time::{Duration, Instant};

use policies::{Clock, Fifo, Lru, Policy, Reinsert, SampledLru};
use s3fifo::{FreqModel, S3Fifo};
use trace::Trace;

const FULL_LEN: usize = 2_000_000;
const QUICK_LEN: usize = 200_000;
/// Requests between two writes of batched access times or counters.
const BATCH: u64 = 1_000;
/// Processes sharing one cache in the per-process counter model.
const PROCESSES: usize = 4;
/// Cache sizes: column label and capacity in objects.
const CAPACITIES: [(&str, usize); 2] =
    [("1%", trace::HOT_KEYS / 100), ("10%", trace::HOT_KEYS / 10)];

/// One simulated policy and its parameters.
#[derive(Clone, Copy)]
enum Kind {
    Fifo,
    Lru,
    SampledLru {
        samples: usize,
        batch: u64,
    },
    Clock,
    S3Fifo {
        move_above: u8,
        freq: FreqModel,
    },
    /// What the bounded SQLite store does (src/backends/sqlite/bounds.rs).
    Reinsert {
        processes: usize,
    },
}

impl Kind {
    fn all() -> Vec<Kind> {
        let mut kinds = vec![
            Kind::Fifo,
            Kind::Lru,
            Kind::SampledLru {
                samples: 5,
                batch: BATCH,
            },
            Kind::SampledLru {
                samples: 16,
                batch: BATCH,
            },
            Kind::SampledLru {
                samples: 5,
                batch: 1,
            },
            Kind::Clock,
            Kind::Reinsert { processes: 1 },
            Kind::Reinsert {
                processes: PROCESSES,
            },
        ];
        for freq in [
            FreqModel::Exact,
            FreqModel::Batched(BATCH),
            FreqModel::Processes(PROCESSES),
        ] {
            for move_above in [1, 0] {
                kinds.push(Kind::S3Fifo { move_above, freq });
            }
        }
        kinds
    }

    fn label(&self) -> String {
        match *self {
            Kind::Fifo => "FIFO".into(),
            Kind::Lru => "LRU (exact)".into(),
            Kind::SampledLru { samples, batch: 1 } => format!("sampled LRU K={samples}, unbatched"),
            Kind::SampledLru { samples, batch } => format!("sampled LRU K={samples}, B={batch}"),
            Kind::Clock => "CLOCK".into(),
            Kind::Reinsert { processes: 1 } => {
                "FIFO + 2-bit second chance, hits flushed at the next write (SQLite's)".into()
            }
            Kind::Reinsert { processes } => {
                format!(
                    "FIFO + 2-bit second chance, hits flushed at the next write, {processes} processes"
                )
            }
            Kind::S3Fifo { move_above, freq } => {
                let counters = match freq {
                    FreqModel::Exact => String::new(),
                    FreqModel::Batched(b) => format!(", batched B={b}"),
                    FreqModel::Processes(n) => format!(", {n} processes"),
                };
                format!("S3-FIFO freq>{move_above}{counters}")
            }
        }
    }

    fn build(&self, capacity: usize, universe: usize, seed: u64) -> Box<dyn Policy> {
        match *self {
            Kind::Fifo => Box::new(Fifo::new(capacity, universe)),
            Kind::Lru => Box::new(Lru::new(capacity, universe)),
            Kind::SampledLru { samples, batch } => {
                Box::new(SampledLru::new(capacity, universe, samples, batch, seed))
            }
            Kind::Clock => Box::new(Clock::new(capacity, universe)),
            Kind::Reinsert { processes } => {
                Box::new(Reinsert::new(capacity, universe, processes, seed))
            }
            Kind::S3Fifo { move_above, freq } => {
                Box::new(S3Fifo::new(capacity, universe, move_above, freq, seed))
            }
        }
    }
}

/// The hits of one policy over one trace.
fn simulate(policy: &mut dyn Policy, keys: &[u32]) -> u64 {
    let mut hits = 0;
    for (now, &key) in keys.iter().enumerate() {
        hits += u64::from(policy.access(key, now as u64));
    }
    hits
}

/// A table column: one trace at one capacity.
struct Column {
    name: String,
    zipf: bool,
    requests: u64,
}

/// Hits per policy (rows, in `Kind::all()` order) and column.
struct Results {
    kinds: Vec<Kind>,
    columns: Vec<Column>,
    hits: Vec<Vec<u64>>,
}

impl Results {
    fn ratio(&self, row: usize, col: usize) -> f64 {
        self.hits[row][col] as f64 / self.columns[col].requests as f64
    }

    fn lru_row(&self) -> usize {
        self.kinds
            .iter()
            .position(|k| matches!(k, Kind::Lru))
            .expect("LRU is simulated")
    }
}

fn traces(len: usize) -> Vec<Trace> {
    vec![
        trace::zipf("zipf0.8", 0.8, len, 1),
        trace::zipf("zipf0.99", 0.99, len, 2),
        trace::loop_scan(len, 3),
        trace::one_hit_wonders(len, 4),
    ]
}

/// Every policy over every trace at every capacity.
fn run_all(traces: &[Trace]) -> Results {
    let kinds = Kind::all();
    let mut columns = Vec::new();
    let mut hits = vec![Vec::new(); kinds.len()];
    for trace in traces {
        for (label, capacity) in CAPACITIES {
            columns.push(Column {
                name: format!("{} {label}", trace.name),
                zipf: trace.name.starts_with("zipf"),
                requests: trace.keys.len() as u64,
            });
            for (row, kind) in kinds.iter().enumerate() {
                let seed = 1_000 + row as u64;
                let mut policy = kind.build(capacity, trace.universe, seed);
                hits[row].push(simulate(policy.as_mut(), &trace.keys));
            }
        }
    }
    Results {
        kinds,
        columns,
        hits,
    }
}

/// "yes"/"no": at least exact LRU's hits on every Zipf column, with the
/// smallest difference in percentage points.
fn zipf_verdict(results: &Results, row: usize) -> String {
    let lru = results.lru_row();
    let zipf: Vec<usize> = (0..results.columns.len())
        .filter(|&c| results.columns[c].zipf)
        .collect();
    let at_least = zipf
        .iter()
        .all(|&c| results.hits[row][c] >= results.hits[lru][c]);
    let worst = zipf
        .iter()
        .map(|&c| 100.0 * (results.ratio(row, c) - results.ratio(lru, c)))
        .fold(f64::INFINITY, f64::min);
    format!("{} ({worst:+.2})", if at_least { "yes" } else { "no" })
}

fn print_table(results: &Results) {
    let names: Vec<&str> = results.columns.iter().map(|c| c.name.as_str()).collect();
    println!(
        "| policy | {} | >= LRU on zipf (min pts) |",
        names.join(" | ")
    );
    println!("|---|{}---|", "---:|".repeat(names.len()));
    for (row, kind) in results.kinds.iter().enumerate() {
        let cells: Vec<String> = (0..names.len())
            .map(|col| format!("{:.2}", 100.0 * results.ratio(row, col)))
            .collect();
        println!(
            "| {} | {} | {} |",
            kind.label(),
            cells.join(" | "),
            zipf_verdict(results, row)
        );
    }
}

fn print_summary(results: &Results, generated: Duration, simulated: Duration) {
    let lru = results.lru_row();
    let baseline: Vec<String> = (0..results.columns.len())
        .map(|c| {
            format!(
                "{} {:.2}%",
                results.columns[c].name,
                100.0 * results.ratio(lru, c)
            )
        })
        .collect();
    println!("\nExact-LRU baseline: {}.", baseline.join(", "));
    let label = |row: usize| results.kinds[row].label();
    // `Kind::all()` lists each S3-FIFO freq>1 right before its freq>0 twin.
    let pairs = (0..results.kinds.len())
        .filter(|&r| matches!(results.kinds[r], Kind::S3Fifo { move_above: 1, .. }))
        .map(|r| (r, r + 1));
    for (a, b) in pairs {
        let better = |x: usize, y: usize| {
            (0..results.columns.len())
                .filter(|&c| results.hits[x][c] > results.hits[y][c])
                .count()
        };
        println!(
            "{} beats {} in {} of {} columns ({} the other way).",
            label(a),
            label(b),
            better(a, b),
            results.columns.len(),
            better(b, a),
        );
    }
    let requests: u64 =
        results.columns.iter().map(|c| c.requests).sum::<u64>() * results.kinds.len() as u64;
    println!(
        "\nTraces generated in {:.2} s; {requests} requests simulated in {:.2} s ({:.1} M requests/s).",
        generated.as_secs_f64(),
        simulated.as_secs_f64(),
        requests as f64 / simulated.as_secs_f64() / 1e6,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; only `--quick` means anything here.
    let quick = std::env::args().any(|a| a == "--quick");
    let len = if quick { QUICK_LEN } else { FULL_LEN };
    let start = Instant::now();
    let traces = traces(len);
    let generated = start.elapsed();
    let start = Instant::now();
    let results = run_all(&traces);
    let simulated = start.elapsed();
    println!("## Eviction simulation: hit ratio (%), {len} requests per trace\n");
    print_table(&results);
    print_summary(&results, generated, simulated);
}
