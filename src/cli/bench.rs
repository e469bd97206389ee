//! `unicache bench`: `bench run` for users (see [`super::bench_run`]), and
//! data generators and raw-driver baselines, so that `scripts/bench_*.sh` can
//! put unicache and the bare driver side by side in one run. Nothing here is
//! used by the other commands.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;

use super::Outcome;
use super::baselines;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Measure caches: throughput and latency percentiles per cache, workload
    /// and concurrency (table, --json, --report FILE.html|.svg).
    Run(super::bench_run::RunArgs),
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
    /// Raw memcached baseline: one connection, `ms key:I SIZE q` + value in
    /// pipelined batches of 1,000, each closed by `mn` and read back to `MN`.
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
    /// (no namespace), against the same keys fetched raw with one `mg`
    /// pipeline per server; prints both latencies (p50 over ROUNDS).
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
    /// unicache's schema, into a fresh file. Prints records/s as JSON.
    SqliteRaw {
        /// Number of records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes of the "v" field.
        #[arg(long, default_value_t = 100, value_parser = value_size)]
        value_size: usize,
        /// Database file (replaced).
        #[arg(long)]
        db: PathBuf,
    },
}

/// `--value-size`: bytes per value, at most 64 MiB (a huge one aborted
/// on allocation).
fn value_size(s: &str) -> Result<usize, String> {
    const MAX: usize = 64 << 20;
    match s.parse::<usize>() {
        Ok(n) if n <= MAX => Ok(n),
        _ => Err(format!("a number of bytes from 0 to {MAX}")),
    }
}

pub(super) fn record(i: u64, pad: &str) -> String {
    format!("{{\"key\":\"key:{i}\",\"v\":\"{pad}\"}}")
}

pub async fn run(cmd: BenchCmd, quiet: bool, dir: &std::path::Path) -> anyhow::Result<Outcome> {
    match cmd {
        BenchCmd::Run(args) => super::bench_run::run(args, quiet, dir).await,
        BenchCmd::GenResp {
            records,
            value_size,
        } => baselines::gen_resp(records, value_size),
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
        } => set_many(&cache, records, value_size).await,
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
                        .block_on(get_latency(cache, requests))
                })
                .join()
                .map_err(|_| anyhow::anyhow!("latency thread panicked"))?;
            }
            get_latency(cache, requests).await
        }
        BenchCmd::Gen {
            records,
            value_size,
            seed,
        } => generate(records, value_size, seed),
        BenchCmd::SqliteRaw {
            records,
            value_size,
            db,
        } => baselines::sqlite_raw(records, value_size, &db),
    }
}

/// `bench set-many`: one `set_many` of `records` entries and a flush, timed.
async fn set_many(cache: &str, records: u64, value_size: usize) -> anyhow::Result<Outcome> {
    let c = unicache::open(cache).await?;
    let keys: Vec<String> = (0..records).map(|i| format!("key:{i}")).collect();
    let value = vec![b'x'; value_size];
    let entries: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|k| (k.as_str(), value.as_slice()))
        .collect();
    let t = Instant::now();
    c.set_many(&entries, None).await?;
    c.flush().await?;
    let secs = t.elapsed().as_secs_f64();
    print_json(&serde_json::json!({
        "backend": c.backend(),
        "records": records,
        "seconds": secs,
        "records_per_second": records as f64 / secs,
    }))?;
    Ok(Outcome::Success)
}

/// `bench gen`: `records` JSON Lines records, or the seed's object with `seed`.
fn generate(records: u64, value_size: usize, seed: bool) -> anyhow::Result<Outcome> {
    let pad = "x".repeat(value_size);
    let out = std::io::stdout().lock();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    if seed {
        writeln!(w, "{{\"records\": [")?;
    }
    for i in 0..records {
        let sep = if seed && i + 1 < records { "," } else { "" };
        writeln!(w, "{}{sep}", record(i, &pad))?;
    }
    if seed {
        writeln!(w, "], \"backends\": [\"sqlite\"]}}")?;
    }
    w.flush()?;
    Ok(Outcome::Success)
}

async fn get_latency(cache: String, requests: u64) -> anyhow::Result<Outcome> {
    let c = unicache::open(&cache).await?;
    c.set("key:latency", &[b'x'; 100], None).await?;
    let mut lat = Vec::with_capacity(requests as usize);
    for _ in 0..requests {
        let t = Instant::now();
        c.get("key:latency").await?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    print_json(&serde_json::json!({
        "backend": c.backend(),
        "requests": requests,
        "p50_us": pct(0.5),
        "p99_us": pct(0.99),
        "mean_us": lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0,
    }))?;
    Ok(Outcome::Success)
}

/// Prints one JSON line; a closed stdout ends the command quietly
/// (`println!` would panic).
pub(super) fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    super::stdout_write(format!("{v}\n").as_bytes())?;
    Ok(())
}
