//! The `unicache` command: bulk-writes records into several caches and
//! inspects them, over the `unicache` library's public API only (its own
//! crate: the compiler keeps it from reaching into the library). This file
//! holds the argument definitions and dispatch.
//!
//! Exit codes: 0 success; 1 partial (records skipped or failed, `get`,
//! `touch` or `ttl` found nothing, `delete` removed nothing, `set
//! --if-absent` found the key there); 2 fatal (usage, unreadable input,
//! unreachable target, unwritable output). Errors are one line on stderr,
//! `unicache: error: ...`; a closed stdout is not an error.

#![forbid(unsafe_code)]
// Short functions everywhere (clippy.toml: at most 80 lines).
#![warn(clippy::too_many_lines)]

mod bench;
mod files;
mod metrics;
mod ops;
mod transfer;
mod write;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// More log output on stderr (-v info and a line per batch operation,
    /// -vv debug and a line per operation, with backend, op, key length or
    /// batch size and its time).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Where bare names (sqlite, file) keep their stores: DIR/cache.sqlite3,
    /// DIR/cache_file.jsonl. Default: `write`'s --output directory, else `data`.
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
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
        /// Store only when KEY is absent or expired, atomically (exit 1 when
        /// it was there: nothing is written).
        #[arg(long)]
        if_absent: bool,
    },
    /// Add DELTA (default 1, may be negative) to the counter under KEY,
    /// atomically, and print the new value; a missing key starts at 0.
    Incr {
        #[command(flatten)]
        cache: CacheArg,
        /// The key.
        key: String,
        /// What to add (a 64-bit integer).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
    /// Give KEY a new time to live without rewriting its value (exit 1 when
    /// absent).
    Touch {
        #[command(flatten)]
        cache: CacheArg,
        /// The key.
        key: String,
        /// The new time to live (30, 500ms, 5m, 2h, 31d).
        #[arg(long, required = true, value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Print KEY's remaining time to live in milliseconds, or `never`
    /// (exit 1 when absent).
    Ttl {
        #[command(flatten)]
        cache: CacheArg,
        /// The key.
        key: String,
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
    /// Print the cache's statistics as JSON, or as a Prometheus exposition.
    Stats {
        #[command(flatten)]
        cache: CacheArg,
        /// json (the Stats object) or prometheus (text exposition).
        #[arg(long, value_enum, default_value = "json")]
        format: ops::StatsFormat,
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
    Import(transfer::ImportArgs),
    /// Rewrite a store without dead space (file: logs), then print its stats
    /// (nothing with -q).
    Compact {
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Benchmarks: `bench run` measures caches (table, JSON, HTML report);
    /// the rest are data generators and raw-driver baselines for the scripts.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Print a shell completion script (e.g. `unicache completions bash >
    /// ~/.local/share/bash-completion/completions/unicache`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, or write unicache.1 and one
    /// page per command (unicache-write.1, ...) into --dir.
    Man {
        /// Write the pages into this directory instead.
        #[arg(long = "out-dir", value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// The `--cache URL` of single-cache commands.
#[derive(Args, Debug)]
struct CacheArg {
    /// Cache URL (or a bare name: memory, sqlite, file, redis, memcached).
    #[arg(long, short = 'c', value_name = "URL")]
    cache: String,
}

/// The longest `--ttl` taken: 100 years. Longer ones would overflow clocks
/// and protocols (memcached's absolute times end in 2038) for no use.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses a `--ttl` value: more than zero, at most [`MAX_TTL`].
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    match parse_span(s)? {
        d if d.is_zero() => Err("a TTL must be greater than zero".into()),
        d if d > MAX_TTL => Err(format!(
            "a TTL must be at most 100 years ({} s)",
            MAX_TTL.as_secs()
        )),
        d => Ok(d),
    }
}

/// Parses a duration flag (30, 500ms, 5m, 2h, 31d); zero is allowed.
pub fn parse_span(s: &str) -> Result<Duration, String> {
    unicache::url::parse_duration(s).map_err(|e| e.message().to_string())
}

/// Parses a count flag (a non-negative integer that fits 32 bits).
pub fn parse_count(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("expected a whole number from 0 to {}, got {s:?}", u32::MAX))
}

/// Whether output may be coloured: not when `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The `--version` text: the version and what this build can open.
fn version_text() -> String {
    let mut extras = vec!["tls", "prometheus"];
    if cfg!(feature = "otel") {
        extras.push("otel");
    }
    format!(
        "{} (backends: {}; features: {})",
        env!("CARGO_PKG_VERSION"),
        unicache::backends::enabled().join(", "),
        extras.join(", ")
    )
}

/// The command line's definition, as clap, `completions` and `man` see it.
fn command() -> clap::Command {
    let colour = match colour_allowed() {
        true => clap::ColorChoice::Auto,
        false => clap::ColorChoice::Never,
    };
    <Cli as clap::CommandFactory>::command()
        .version(version_text())
        .color(colour)
}

/// Entry point: parses, runs, maps to an exit code.
pub fn main() -> ExitCode {
    let parsed = command()
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e),
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    if cli.verbose > 0 && !cli.quiet {
        observe(true);
    }
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && colour_allowed())
        .event_format(OneLine)
        .init();
    let threads = match &cli.command {
        Command::Bench(bench::BenchCmd::Run(args)) => args.threads as usize,
        _ => 2,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(&anyhow::anyhow!("cannot start runtime: {e}")),
    };
    let res = rt.block_on(dispatch(cli));
    // Do not wait for stuck connections at exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    match res {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Partial) => ExitCode::from(1),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fatal(&e),
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    let quiet = cli.quiet;
    // Bare names mean the same place in every command: `data/` unless --dir.
    let data = cli.dir.clone().unwrap_or_else(|| PathBuf::from("data"));
    let dir = data.as_path();
    match cli.command {
        Command::Write(args) => write::run(args, quiet, cli.dir.as_deref()).await,
        Command::Get { cache, key, raw } => ops::get(&cache.at(dir)?, &key, raw).await,
        Command::Set {
            cache,
            key,
            value,
            ttl,
            if_absent,
        } => ops::set(&cache.at(dir)?, &key, &value, ttl, if_absent).await,
        Command::Incr { cache, key, delta } => ops::incr(&cache.at(dir)?, &key, delta).await,
        Command::Touch { cache, key, ttl } => ops::touch(&cache.at(dir)?, &key, ttl).await,
        Command::Ttl { cache, key } => ops::ttl(&cache.at(dir)?, &key).await,
        Command::Delete { cache, keys } => ops::delete(&cache.at(dir)?, &keys).await,
        Command::Clear { cache, all } => ops::clear(&cache.at(dir)?, all).await,
        Command::Stats { cache, format } => ops::stats(&cache.at(dir)?, format).await,
        Command::Bench(cmd) => bench::run(cmd, quiet, dir).await,
        Command::Export {
            cache,
            output,
            format,
        } => transfer::export(&cache.at(dir)?, &output, format, quiet).await,
        Command::Import(args) => transfer::import(args, quiet, dir).await,
        Command::Compact { cache } => ops::compact(&cache.at(dir)?, quiet).await,
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command(), "unicache", &mut out);
            stdout_write(&out)?;
            Ok(Outcome::Success)
        }
        Command::Man { out_dir } => man(out_dir.as_deref()),
    }
}

/// `unicache man`: the page of the whole command on stdout, or a page per
/// command into `dir` (unicache.1, unicache-write.1, ...).
fn man(dir: Option<&Path>) -> anyhow::Result<Outcome> {
    let cmd = command();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        stdout_write(&out)?;
        return Ok(Outcome::Success);
    };
    let write = |name: &str, page: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(&path, out)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("unicache-{}", sub.get_name());
        write(&name, sub.clone().name(&name))?;
    }
    write("unicache", cmd)?;
    Ok(Outcome::Success)
}

impl CacheArg {
    /// The cache's URL, bare names resolved under `dir`.
    fn at(&self, dir: &Path) -> anyhow::Result<String> {
        Ok(unicache::open::resolve_name(&self.cache, dir)?)
    }
}

/// A usage error as one line, `unicache: error: ...` (clap's own text runs
/// over several lines: the message, the arguments it is about, usage).
fn usage_error(e: &clap::Error) -> ExitCode {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let names: Vec<String> = command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        let _ = writeln!(
            std::io::stderr(),
            "unicache: error: a command is required: {} (see unicache --help)",
            names.join(", ")
        );
        return ExitCode::from(FATAL);
    }
    let text = e.render().to_string();
    let msg: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let msg = msg.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    let _ = writeln!(
        std::io::stderr(),
        "unicache: error: {msg} (see unicache --help)"
    );
    ExitCode::from(FATAL)
}

/// Log lines as `unicache: warning: ...`, like the errors.
struct OneLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for OneLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            _ => "debug",
        };
        write!(w, "unicache: {level}: ")?;
        // Spans (the observe layer's `cache{backend op ...}`) in front.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(w, "{}", span.name())?;
                let ext = span.extensions();
                if let Some(f) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    && !f.is_empty()
                {
                    write!(w, "{{{f}}}")?;
                }
                write!(w, ": ")?;
            }
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// A write to a closed stdout (`| head -c1`): not an error (ripgrep's rule).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
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

/// Whether [`open_url`] wraps caches in the observe layer (spans, metrics).
static OBSERVE: AtomicBool = AtomicBool::new(false);

/// Turns the observe layer on for caches opened from now on (`-v`,
/// `--metrics-addr`, `stats --format prometheus`).
pub fn observe(on: bool) {
    OBSERVE.store(on, Ordering::Relaxed);
}

/// Opens a cache URL (bare names already resolved). With `must_exist`
/// (every command but `write`, `set` and `import`) a local store that is not
/// there is an error naming it, and nothing is created.
pub async fn open_url(url: &str, must_exist: bool) -> anyhow::Result<Arc<dyn unicache::Cache>> {
    let mut parsed = unicache::open::parse(url)?;
    let store = files::store_file(&parsed.backend);
    let redacted = parsed.redacted.clone();
    let missing = |p: &Path| {
        anyhow::anyhow!(
            "no cache at {} ({redacted}): it does not exist; nothing was created",
            p.display()
        )
    };
    if must_exist {
        if let Some(p) = &store
            && !p.exists()
        {
            return Err(missing(p));
        }
        parsed.options.must_exist = true;
    }
    let stack = unicache::Stack::new(parsed).observe(OBSERVE.load(Ordering::Relaxed));
    match stack.open_cache().await {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == unicache::ErrorKind::NotFound => match &store {
            Some(p) if !p.exists() => Err(missing(p)),
            // There, but not a store yet (an empty file): the backend says so.
            _ => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Writes one line to stderr; a closed stderr is ignored (`eprintln!` would panic).
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "unicache: {line}");
}

/// Writes bytes to stdout, flushing. A closed stdout is not an error: the
/// command's outcome (exit code) stays what its work came to.
pub fn stdout_write(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
