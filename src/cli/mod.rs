//! Command-line interface: argument definitions and dispatch.
//!
//! Exit codes: 0 success; 1 partial (records skipped or failed, `get` found
//! nothing, `delete` removed nothing); 2 fatal (usage, unreadable input,
//! unreachable target, unwritable output). Errors are one line on stderr.

mod bench;
mod ops;
mod transfer;
mod write;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Outcome of a command, mapped to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked.
    Success,
    /// Worked in part, or found nothing.
    Partial,
}

/// Exit code for fatal errors.
const FATAL: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "unicache",
    version,
    about = "One cache interface over many backends: bulk-write records into several caches and inspect them",
    after_help = "Cache URLs: memory://?capacity=N, sqlite:PATH, file:PATH, redis://host:port/db, \
redis+cluster://h1:p1,h2:p2, memcached://h1:p1,h2:p2\n\
Exit codes: 0 success, 1 partial (records skipped/failed, key not found), 2 fatal"
)]
struct Cli {
    /// Print nothing but errors (and the summary/values asked for).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write records from a JSON/JSONL input into one or more caches and print a summary.
    Write(write::WriteArgs),
    /// Print the value stored under KEY (exit 1 when absent).
    Get {
        #[command(flatten)]
        cache: CacheArg,
        /// The key.
        key: String,
        /// Do not add a newline after the value.
        #[arg(long)]
        raw: bool,
    },
    /// Store VALUE (or stdin with `-`) under KEY.
    Set {
        #[command(flatten)]
        cache: CacheArg,
        /// The key.
        key: String,
        /// The value; `-` reads it from stdin.
        value: String,
        /// Time to live (30, 500ms, 5m, 2h, 31d).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
    },
    /// Delete KEYs; prints how many existed (exit 1 when none did).
    Delete {
        #[command(flatten)]
        cache: CacheArg,
        /// Keys to delete.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Remove every entry in the cache's namespace (nothing else).
    Clear {
        #[command(flatten)]
        cache: CacheArg,
        /// Flush the whole database/servers, other applications' keys included.
        #[arg(long)]
        all: bool,
    },
    /// Print the cache's statistics as JSON.
    Stats {
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Stream every live entry out, as the seed's cache file (json) or JSON Lines.
    Export {
        #[command(flatten)]
        cache: CacheArg,
        /// Where to write (`-`: stdout).
        #[arg(long, short, default_value = "-")]
        output: String,
        /// json: {"key": "value", ...}; jsonl: {"key":..,"value":..[,"ttl_ms":..]} per line.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: transfer::Format,
    },
    /// Read entries written by `export` (or a seed cache file) into a cache.
    Import {
        #[command(flatten)]
        cache: CacheArg,
        /// File to read (`-`: stdin).
        input: String,
        /// Input layout; auto tells JSON Lines from the seed's object.
        #[arg(long, value_enum, default_value = "auto")]
        format: transfer::Format,
    },
    /// Rewrite a store without dead space (file: logs).
    Compact {
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Benchmark helpers: data generators and raw-driver baselines.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// The `--cache URL` of single-cache commands.
#[derive(Args, Debug)]
struct CacheArg {
    /// Cache URL (or a bare name: memory, sqlite, file, redis, memcached).
    #[arg(long, short = 'c', value_name = "URL")]
    cache: String,
}

/// Parses a `--ttl` value.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    match unicache::url::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("a TTL must be greater than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.message().to_string()),
    }
}

/// Entry point: parses, runs, maps to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { FATAL } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(&anyhow::anyhow!("cannot start runtime: {e}")),
    };
    let quiet = cli.quiet;
    let res = rt.block_on(async move {
        match cli.command {
            Command::Write(args) => write::run(args, quiet).await,
            Command::Get { cache, key, raw } => ops::get(&cache.cache, &key, raw).await,
            Command::Set {
                cache,
                key,
                value,
                ttl,
            } => ops::set(&cache.cache, &key, &value, ttl).await,
            Command::Delete { cache, keys } => ops::delete(&cache.cache, &keys).await,
            Command::Clear { cache, all } => ops::clear(&cache.cache, all).await,
            Command::Stats { cache } => ops::stats(&cache.cache).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Export {
                cache,
                output,
                format,
            } => transfer::export(&cache.cache, &output, format, quiet).await,
            Command::Import {
                cache,
                input,
                format,
            } => transfer::import(&cache.cache, &input, format).await,
            Command::Compact { cache } => ops::compact(&cache.cache).await,
        }
    });
    // Do not wait for stuck connections at exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    match res {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Partial) => ExitCode::from(1),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fatal(&e),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn fatal(e: &anyhow::Error) -> ExitCode {
    // One line: the context chain joined, skipping causes that the message
    // already shows (library errors print their source themselves).
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace(['\n', '\r'], " ");
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    let _ = writeln!(std::io::stderr(), "unicache: error: {msg}");
    ExitCode::from(FATAL)
}

/// Opens a cache from a URL or bare name (bare names resolve under `dir`).
pub async fn open_cache(
    name: &str,
    dir: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn unicache::Cache>> {
    let url = unicache::url::resolve_name(name, dir)?;
    Ok(unicache::open(&url).await?)
}

/// Writes bytes to stdout, flushing.
pub fn stdout_write(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}
