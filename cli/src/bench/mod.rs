//! `unicache bench`: `bench run` for users ([`mod@run`], its report in
//! [`report`]), and data generators ([`data`]) and raw-driver baselines
//! ([`baselines`]), so that `scripts/bench_*.sh` can put unicache and the
//! bare driver side by side in one run. Nothing here is used by the other
//! commands.
//!
//! Imports go one way: this file dispatches to the others; `shared` and
//! `results` are what several of them use, and import none of them.

mod baselines;
mod data;
mod report;
mod results;
mod run;
mod scratch;
mod shared;

use std::path::PathBuf;

use clap::Subcommand;

use super::Outcome;
use shared::value_size;

pub use run::RunArgs;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Measure caches: throughput and latency percentiles per cache, workload
    /// and concurrency (table, --json, --report FILE.html|.svg).
    Run(RunArgs),
    /// Print N JSON Lines records {"key":"key:I","v":"xxx..."} to stdout.
    Gen {
        /// Number of records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes of the "v" field.
        #[arg(long, default_value_t = 100, value_parser = value_size)]
        value_size: usize,
        /// Emit the seed's {"records": [...], "backends": [...]} object instead.
        #[arg(long)]
        seed: bool,
    },
    /// Print N Redis SET commands (keys key:I, VALUE_SIZE-byte values) in RESP, for `redis-cli --pipe`.
    GenResp {
        /// Number of records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100, value_parser = value_size)]
        value_size: usize,
    },
    /// Library `set_many` of N entries (keys key:I, VALUE_SIZE-byte values) in one call; prints keys/s.
    /// Writes in a fresh namespace, deleted afterwards.
    SetMany {
        /// Cache URL.
        #[arg(long)]
        cache: String,
        /// Number of entries.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100, value_parser = value_size)]
        value_size: usize,
    },
    /// Sequential single-key gets on one connection; prints p50/p99 latency.
    /// Writes its key in a fresh namespace, deleted afterwards.
    GetLatency {
        /// Cache URL.
        #[arg(long)]
        cache: String,
        /// Number of gets.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
        requests: u64,
        /// Run on the CLI's 2-worker runtime instead of a current-thread one.
        #[arg(long)]
        multi_thread: bool,
    },
    /// Raw memcached baseline: one connection, `ms PREFIX:key:I SIZE q` +
    /// value in pipelined batches of 1,000, each closed by `mn` and read back
    /// to `MN` (PREFIX fresh; the keys are deleted afterwards).
    MemcachedRaw {
        /// host:port
        #[arg(long)]
        server: String,
        /// Number of records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100, value_parser = value_size)]
        value_size: usize,
    },
    /// get_many of KEYS keys across the servers of a memcached:// URL
    /// (keys PREFIX:gm:I, no namespace, PREFIX fresh; deleted afterwards),
    /// against the same keys fetched raw with one `mg` pipeline per server;
    /// prints both latencies (p50 over ROUNDS).
    MemcachedGetMany {
        /// memcached://h1:p1,h2:p2
        #[arg(long)]
        cache: String,
        /// Keys per get_many.
        #[arg(long, default_value_t = 1000)]
        keys: usize,
        /// Repetitions.
        #[arg(long, default_value_t = 300)]
        rounds: usize,
    },
    /// Raw rusqlite baseline: INSERT OR REPLACE of N records (keys key:I,
    /// the same compact JSON values `gen` makes) in one transaction, on
    /// unicache's schema, into a fresh file, removed afterwards. Prints
    /// records/s as JSON.
    SqliteRaw {
        /// Number of records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes of the "v" field.
        #[arg(long, default_value_t = 100, value_parser = value_size)]
        value_size: usize,
        /// Database file: must not exist (removed at the end).
        #[arg(long)]
        db: PathBuf,
    },
}

pub async fn run(cmd: BenchCmd, quiet: bool, dir: &std::path::Path) -> anyhow::Result<Outcome> {
    match cmd {
        BenchCmd::Run(args) => run::run(args, quiet, dir).await,
        BenchCmd::GenResp {
            records,
            value_size,
        } => data::gen_resp(records, value_size),
        BenchCmd::MemcachedRaw {
            server,
            records,
            value_size,
        } => baselines::memcached_raw(&server, records, value_size).await,
        BenchCmd::MemcachedGetMany {
            cache,
            keys,
            rounds,
        } => baselines::memcached_get_many(&cache, keys, rounds).await,
        BenchCmd::SetMany {
            cache,
            records,
            value_size,
        } => baselines::set_many(&cache, records, value_size).await,
        BenchCmd::GetLatency {
            cache,
            requests,
            multi_thread,
        } => {
            if !multi_thread {
                // A current-thread runtime of its own, as a single-threaded
                // client would have: no cross-thread wake-ups per reply.
                return std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(baselines::get_latency(cache, requests))
                })
                .join()
                .map_err(|_| anyhow::anyhow!("latency thread panicked"))?;
            }
            baselines::get_latency(cache, requests).await
        }
        BenchCmd::Gen {
            records,
            value_size,
            seed,
        } => data::generate(records, value_size, seed),
        BenchCmd::SqliteRaw {
            records,
            value_size,
            db,
        } => baselines::sqlite_raw(records, value_size, &db),
    }
}
