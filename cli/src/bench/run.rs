//! `unicache bench run`: a load generator for users comparing backends on
//! their own machine. Per cache, workload and concurrency it runs workers
//! for a duration (or a number of requests), records every latency in an HDR
//! histogram and prints throughput and p50/p90/p99/p99.9 as a table, as JSON
//! (`--json`), and as an HTML or SVG report with plots (`--report`).
//!
//! With `--rate R` each worker sends on a fixed schedule (R/concurrency per
//! second) and a request's latency runs from when it was due, not from when
//! it was sent (wrk2's and memtier_benchmark's answer to coordinated
//! omission): a stall counts against every request it delayed.
//!
//! It writes only in a namespace of its own ([`super::scratch`]), found
//! empty first, with a TTL as a safety net, and deletes its keys at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;

use super::report;
use super::results::{RunResult, Workload, table};
use super::scratch::{self, Scratch};
use crate::files::{refuse_overlaps, store_files};
use crate::{MAX_TTL, Outcome, open_url, parse_span};

/// What `bench run` measures.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Cache URL or bare name to measure; repeatable.
    #[arg(long = "cache", short = 'c', value_name = "URL", required = true)]
    caches: Vec<String>,
    /// Workloads, comma-separated: get (prefilled keys), set, mixed (--read-ratio gets).
    #[arg(long, value_delimiter = ',', default_value = "get")]
    ops: Vec<Workload>,
    /// Share of gets in the mixed workload, 0 to 1.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Distinct keys (bench:0 .. bench:N-1 in the bench's namespace, at most
    /// 10 million), chosen uniformly at random.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=64 << 20))]
    value_size: u64,
    /// Concurrent workers, comma-separated: one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: Vec<u64>,
    /// How long each run lasts (ignored with --requests).
    #[arg(long, default_value = "5s", value_parser = parse_span)]
    duration: Duration,
    /// Requests per run instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Target rate in requests per second (all workers together); latency
    /// is then measured from each request's scheduled start (or its send,
    /// when the timer let it go out up to 1 ms early).
    #[arg(long)]
    rate: Option<f64>,
    /// Open the cache once per worker (own connections, as redis-benchmark's
    /// clients), instead of sharing one instance as a program would.
    #[arg(long)]
    connection_per_worker: bool,
    /// Threads that run the workers (the runtime's; redis-benchmark runs
    /// its clients on 1).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write an HTML (or, for a .svg name, SVG) report with plots; mode 0600.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The namespace to write in (default: the URL's `namespace=`, else a
    /// fresh `unicache-bench-<pid>-<random>`); it must be empty.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
}

/// Settings every worker of a run shares.
struct Plan {
    op: Workload,
    read_ratio: f64,
    keys: Arc<Vec<String>>,
    value: Vec<u8>,
    /// The TTL of every write: the safety net should cleanup not happen.
    ttl: Duration,
    deadline: Option<Instant>,
    budget: Option<u64>,
    /// Time between one worker's requests, with --rate.
    interval: Option<Duration>,
    issued: AtomicU64,
}

/// Runs the benchmark; bare names (sqlite, file) resolve under `dir`.
pub async fn run(args: RunArgs, quiet: bool, dir: &std::path::Path) -> anyhow::Result<Outcome> {
    check(&args)?;
    let urls = args
        .caches
        .iter()
        .map(|name| unicache::open::resolve_name(name, dir))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(p) = &args.report {
        refuse_report_in_stores(p, &urls)?;
        // An unwritable report fails now, not after the whole run.
        drop(
            unicache::writer::OutputFile::create(p)
                .map_err(|e| anyhow::anyhow!("cannot write report to {e}"))?,
        );
    }
    scratch::catch_interrupts();
    let keys = Arc::new((0..args.keys).map(|k| format!("bench:{k}")).collect());
    let steps = (args.caches.len() * args.ops.len() * args.concurrency.len()) as u64;
    let bar = progress(quiet, steps);
    let mut results = Vec::new();
    for (name, url) in args.caches.iter().zip(&urls) {
        let shown = unicache::open::redact(name);
        let place = Scratch::new(url, args.namespace.as_deref())
            .with_context(|| format!("cache {shown}"))?;
        let run = bench_cache(&place, &args, &keys, bar.as_ref(), &shown).await;
        place.remove_created_files();
        results.extend(run.with_context(|| format!("cache {shown}"))?);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    output(&args, &results)?;
    Ok(Outcome::Success)
}

/// One cache: opened in the bench's namespace, checked empty, prefilled,
/// measured, and its keys deleted whatever happened after the check.
async fn bench_cache(
    place: &Scratch,
    args: &RunArgs,
    keys: &Arc<Vec<String>>,
    bar: Option<&indicatif::ProgressBar>,
    shown: &str,
) -> anyhow::Result<Vec<RunResult>> {
    let cache = open_url(&place.url, false).await?;
    if let Err(e) = place.ensure_empty(&*cache, keys).await {
        let _ = cache.close().await;
        return Err(e);
    }
    let measured = measure_all(&cache, place, args, keys, bar, shown).await;
    let removed = place.remove(&*cache, keys).await;
    let _ = cache.close().await;
    let results = measured?;
    removed.context("deleting the bench's keys")?;
    if scratch::interrupted() {
        return Err(scratch::interrupted_error());
    }
    Ok(results)
}

/// Every workload and concurrency on one cache; stops early when interrupted.
async fn measure_all(
    cache: &Arc<dyn unicache::Cache>,
    place: &Scratch,
    args: &RunArgs,
    keys: &Arc<Vec<String>>,
    bar: Option<&indicatif::ProgressBar>,
    shown: &str,
) -> anyhow::Result<Vec<RunResult>> {
    let ttl = safety_ttl(args);
    prefill(&**cache, args, keys, ttl).await?;
    let mut results = Vec::new();
    for &op in &args.ops {
        for &c in &args.concurrency {
            if scratch::interrupted() {
                return Ok(results);
            }
            if let Some(b) = bar {
                b.set_message(format!("{shown} {} x{c}", op.name()));
            }
            let caches = workers_caches(cache, &place.url, args, c).await?;
            let mut r = measure(caches, plan(args, op, c, keys, ttl), c).await;
            r.cache = shown.to_string();
            results.push(r);
            if let Some(b) = bar {
                b.inc(1);
            }
        }
    }
    Ok(results)
}

/// The TTL of what the bench writes, a safety net for keys that cleanup
/// could not delete (a killed process): an hour plus twice the planned
/// time of one cache's runs, or a day with --requests (no planned time).
fn safety_ttl(args: &RunArgs) -> Duration {
    let runs = (args.ops.len() * args.concurrency.len()) as u32;
    let ttl = match args.requests {
        Some(_) => Duration::from_secs(24 * 3600),
        None => Duration::from_secs(3600).saturating_add(args.duration.saturating_mul(2 * runs)),
    };
    ttl.min(MAX_TTL)
}

/// Refuses a report path that is one of the caches' store files (the run
/// would replace a SQLite file or log with its HTML).
fn refuse_report_in_stores(report: &std::path::Path, urls: &[String]) -> anyhow::Result<()> {
    let mut stores = Vec::new();
    for url in urls {
        // A URL that does not parse fails when it is opened, with its own message.
        if let Ok(parsed) = unicache::open::parse(url) {
            for p in store_files(&parsed.backend) {
                stores.push((format!("a file of the cache {}", parsed.redacted), p));
            }
        }
    }
    refuse_overlaps(&[("--report", report)], &stores)
}

fn check(args: &RunArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate must be a positive number of requests per second");
    }
    if args.requests.is_none() && args.duration.is_zero() {
        bail!("--duration must be more than zero (or give --requests)");
    }
    Ok(())
}

fn progress(quiet: bool, steps: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    (!quiet && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(steps);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    })
}

/// Stores every key once, so gets hit.
async fn prefill(
    cache: &dyn unicache::Cache,
    args: &RunArgs,
    keys: &[String],
    ttl: Duration,
) -> anyhow::Result<()> {
    if !args.ops.iter().any(|o| *o != Workload::Set) {
        return Ok(());
    }
    let value = vec![b'x'; args.value_size as usize];
    for chunk in keys.chunks(1000) {
        if scratch::interrupted() {
            break;
        }
        let entries: Vec<(&str, &[u8])> = chunk.iter().map(|k| (k.as_str(), &value[..])).collect();
        cache
            .set_many(&entries, Some(ttl))
            .await
            .context("prefilling the keys")?;
    }
    Ok(())
}

/// The instance each worker uses: the shared one, or one opened per worker.
async fn workers_caches(
    shared: &Arc<dyn unicache::Cache>,
    url: &str,
    args: &RunArgs,
    n: u64,
) -> anyhow::Result<Vec<Arc<dyn unicache::Cache>>> {
    if !args.connection_per_worker {
        return Ok((0..n).map(|_| shared.clone()).collect());
    }
    if shared.backend() == "memory" {
        bail!("--connection-per-worker: each memory:// open is a separate, empty cache");
    }
    let opened = futures::future::join_all((0..n).map(|_| open_url(url, false))).await;
    opened.into_iter().collect()
}

fn plan(
    args: &RunArgs,
    op: Workload,
    concurrency: u64,
    keys: &Arc<Vec<String>>,
    ttl: Duration,
) -> Arc<Plan> {
    let now = Instant::now();
    Arc::new(Plan {
        op,
        read_ratio: args.read_ratio,
        keys: keys.clone(),
        value: vec![b'x'; args.value_size as usize],
        ttl,
        deadline: args.requests.is_none().then(|| now + args.duration),
        budget: args.requests,
        interval: args
            .rate
            .map(|r| Duration::from_secs_f64(concurrency as f64 / r)),
        issued: AtomicU64::new(0),
    })
}

/// Runs `caches.len()` workers to the plan's end and merges their figures.
async fn measure(caches: Vec<Arc<dyn unicache::Cache>>, plan: Arc<Plan>, c: u64) -> RunResult {
    let backend = caches[0].backend().to_string();
    let start = Instant::now();
    let tasks: Vec<_> = caches
        .into_iter()
        .enumerate()
        .map(|(w, cache)| {
            // With --rate, worker w's schedule is shifted by w/c of an
            // interval, so requests arrive evenly instead of c at a time.
            let phase = plan
                .interval
                .map_or(Duration::ZERO, |iv| iv.mul_f64(w as f64 / c as f64));
            tokio::spawn(worker(cache, plan.clone(), w as u64, start + phase))
        })
        .collect();
    let mut hist = new_histogram();
    let (mut requests, mut errors) = (0, 0);
    for t in tasks {
        // A worker that panicked contributes nothing (its figures are lost).
        if let Ok((h, n, e)) = t.await {
            let _ = hist.add(&h);
            requests += n;
            errors += e;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    RunResult {
        cache: String::new(),
        backend,
        op: plan.op,
        concurrency: c,
        requests,
        errors,
        seconds,
        ops_per_sec: requests as f64 / seconds.max(1e-9),
        target_rate: plan.interval.map(|i| c as f64 / i.as_secs_f64()),
        mean_us: hist.mean() / 1000.0,
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: hist.max() as f64 / 1000.0,
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 100 s at 3 significant digits; the bounds are valid constants.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

/// One worker: requests until the deadline or the shared budget runs out.
/// Returns its latencies (ns), requests and errors.
async fn worker(
    cache: Arc<dyn unicache::Cache>,
    plan: Arc<Plan>,
    seed: u64,
    start: Instant,
) -> (Histogram<u64>, u64, u64) {
    let mut hist = new_histogram();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (mut n, mut errors) = (0u64, 0u64);
    loop {
        if scratch::interrupted() {
            break;
        }
        if let Some(b) = plan.budget
            && plan.issued.fetch_add(1, Ordering::Relaxed) >= b
        {
            break;
        }
        let due = match plan.interval {
            Some(iv) => {
                let due = start + iv.mul_f64(n as f64);
                wait_for(due).await;
                due.min(Instant::now())
            }
            None => Instant::now(),
        };
        if plan.deadline.is_some_and(|d| due >= d) {
            break;
        }
        let key = &plan.keys[(rng.next() % plan.keys.len() as u64) as usize];
        let read = match plan.op {
            Workload::Get => true,
            Workload::Set => false,
            Workload::Mixed => rng.unit() < plan.read_ratio,
        };
        let ok = if read {
            cache.get(key).await.is_ok()
        } else {
            cache.set(key, &plan.value, Some(plan.ttl)).await.is_ok()
        };
        hist.saturating_record((due.elapsed().as_nanos() as u64).max(1));
        n += 1;
        errors += u64::from(!ok);
    }
    (hist, n, errors)
}

/// Waits for `due` on tokio's timer, which wakes on whole milliseconds
/// (up to 1 ms late, which --rate would count as latency): it aims 1 ms
/// early, so a request goes out within about a millisecond before its time,
/// and [`worker`] times an early one from when it was sent.
async fn wait_for(due: Instant) {
    const TIMER: Duration = Duration::from_millis(1);
    if due
        .checked_duration_since(Instant::now())
        .is_some_and(|a| a > TIMER)
    {
        tokio::select! {
            () = tokio::time::sleep_until((due - TIMER).into()) => {}
            () = scratch::until_interrupted() => {}
        }
    }
}

/// xorshift64*: fast, and good enough to pick keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Table or JSON on stdout, and the report file.
fn output(args: &RunArgs, results: &[RunResult]) -> anyhow::Result<()> {
    if args.json {
        crate::stdout_write(format!("{}\n", serde_json::to_string_pretty(results)?).as_bytes())?;
    } else {
        crate::stdout_write(table(results).as_bytes())?;
    }
    if let Some(path) = &args.report {
        let svg = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        let text = if svg {
            report::svg(results)
        } else {
            report::html(results)
        };
        let mut f = unicache::writer::OutputFile::create(path)
            .map_err(|e| anyhow::anyhow!("cannot write report to {e}"))?;
        std::io::Write::write_all(&mut f, text.as_bytes())
            .and_then(|_| f.commit())
            .map_err(|e| anyhow::anyhow!("cannot write report to {e}"))?;
    }
    Ok(())
}
