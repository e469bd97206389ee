//! `unicache bench`: data generators and raw-driver baselines, so that
//! `scripts/bench_*.sh` can put unicache and the bare driver side by side in
//! one run. Nothing here is used by the other commands.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;

use super::Outcome;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Print N JSON Lines records {"key":"key:I","v":"xxx..."} to stdout.
    Gen {
        /// Number of records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes of the "v" field.
        #[arg(long, default_value_t = 100)]
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
        #[arg(long, default_value_t = 100)]
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
        #[arg(long, default_value_t = 100)]
        value_size: usize,
    },
    /// Sequential single-key gets on one connection; prints p50/p99 latency.
    GetLatency {
        /// Cache URL.
        #[arg(long)]
        cache: String,
        /// Number of gets.
        #[arg(long, default_value_t = 100_000)]
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
        #[arg(long, default_value_t = 100)]
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
    /// Crash-test writer: set_many batches of 100 entries `RUN:I` ->
    /// `value-RUN-I-...` and print `ack N` after each returns (N acknowledged
    /// so far). Used by the SIGKILL test; runs until killed or BATCHES done.
    CrashWriter {
        /// Cache URL.
        #[arg(long)]
        cache: String,
        /// Key prefix of this run.
        #[arg(long)]
        run: String,
        /// Batches to write.
        #[arg(long, default_value_t = 1_000_000)]
        batches: u64,
    },
    /// Raw rusqlite baseline: INSERT OR REPLACE of N records (keys key:I,
    /// the same compact JSON values `gen` makes) in one transaction, on
    /// unicache's schema, into a fresh file. Prints records/s as JSON.
    SqliteRaw {
        /// Number of records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes of the "v" field.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Database file (replaced).
        #[arg(long)]
        db: PathBuf,
    },
}

fn record(i: u64, pad: &str) -> String {
    format!("{{\"key\":\"key:{i}\",\"v\":\"{pad}\"}}")
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<Outcome> {
    match cmd {
        BenchCmd::GenResp {
            records,
            value_size,
        } => {
            let value = "x".repeat(value_size);
            let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            for i in 0..records {
                let k = format!("key:{i}");
                write!(
                    w,
                    "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{value}\r\n",
                    k.len(),
                    value.len()
                )?;
            }
            w.flush()?;
            Ok(Outcome::Success)
        }
        BenchCmd::MemcachedRaw {
            server,
            records,
            value_size,
        } => {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
            let value = vec![b'x'; value_size];
            let stream = tokio::net::TcpStream::connect(&server).await?;
            stream.set_nodelay(true)?;
            let (r, mut w) = stream.into_split();
            let mut r = tokio::io::BufReader::new(r);
            let t = Instant::now();
            let mut req = Vec::with_capacity(1000 * (value_size + 40));
            let mut line = String::new();
            let mut i = 0u64;
            while i < records {
                req.clear();
                let end = (i + 1000).min(records);
                for k in i..end {
                    req.extend_from_slice(format!("ms key:{k} {value_size} q\r\n").as_bytes());
                    req.extend_from_slice(&value);
                    req.extend_from_slice(b"\r\n");
                }
                req.extend_from_slice(b"mn\r\n");
                w.write_all(&req).await?;
                // Quiet mode: the only reply of a clean batch is `MN`.
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    anyhow::bail!("{server} closed the connection");
                }
                if !line.starts_with("MN") {
                    anyhow::bail!("{server}: unexpected {line:?}");
                }
                i = end;
            }
            let secs = t.elapsed().as_secs_f64();
            print_json(
                &serde_json::json!({"records": records, "seconds": secs, "records_per_second": records as f64 / secs}),
            )?;
            Ok(Outcome::Success)
        }
        BenchCmd::MemcachedGetMany {
            cache,
            keys,
            rounds,
        } => memcached_get_many(&cache, keys, rounds).await,
        BenchCmd::CrashWriter {
            cache,
            run,
            batches,
        } => {
            let c = unicache::open(&cache).await?;
            let mut out = std::io::stdout().lock();
            for b in 0..batches {
                let keys: Vec<String> = (b * 100..b * 100 + 100)
                    .map(|i| format!("{run}:{i}"))
                    .collect();
                let vals: Vec<String> = keys.iter().map(|k| crash_value(k)).collect();
                let entries: Vec<(&str, &[u8])> = keys
                    .iter()
                    .zip(&vals)
                    .map(|(k, v)| (k.as_str(), v.as_bytes()))
                    .collect();
                c.set_many(&entries, None).await?;
                writeln!(out, "ack {}", (b + 1) * 100)?;
                out.flush()?;
            }
            Ok(Outcome::Success)
        }
        BenchCmd::SetMany {
            cache,
            records,
            value_size,
        } => {
            let c = unicache::open(&cache).await?;
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
        } => {
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
        BenchCmd::SqliteRaw {
            records,
            value_size,
            db,
        } => {
            let _ = std::fs::remove_file(&db);
            let pad = "x".repeat(value_size);
            // Values prepared up front: the baseline times only the inserts.
            let rows: Vec<(String, String)> = (0..records)
                .map(|i| (format!("key:{i}"), record(i, &pad)))
                .collect();
            let t = Instant::now();
            let mut conn = rusqlite::Connection::open(&db)
                .with_context(|| format!("opening {}", db.display()))?;
            conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(unicache::bench_support::sqlite::SCHEMA)?;
            let tx = conn.transaction()?;
            {
                let mut st = tx.prepare(unicache::bench_support::sqlite::INSERT)?;
                for (k, v) in &rows {
                    st.execute(rusqlite::params!["", k, v.as_bytes(), None::<i64>])?;
                }
            }
            tx.commit()?;
            drop(conn);
            let secs = t.elapsed().as_secs_f64();
            print_json(&serde_json::json!({
                "records": records,
                "seconds": secs,
                "records_per_second": records as f64 / secs,
            }))?;
            Ok(Outcome::Success)
        }
    }
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

async fn memcached_get_many(url: &str, nkeys: usize, rounds: usize) -> anyhow::Result<Outcome> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let parsed = unicache::url::parse(url)?;
    let unicache::url::BackendConfig::Memcached(config) = parsed.backend.clone() else {
        anyhow::bail!("--cache must be a memcached:// URL");
    };
    let servers = config.servers.clone();
    let c = unicache::backends::memcached::MemcachedCache::connect(
        config
            .connect_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5)),
        Default::default(),
    )
    .await?;
    let keys: Vec<String> = (0..nkeys).map(|i| format!("gm:{i}")).collect();
    let value = vec![b'x'; 100];
    let entries: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|k| (k.as_str(), value.as_slice()))
        .collect();
    unicache::Cache::set_many(&c, &entries, None).await?;
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();

    // Raw: one connection per server, one `mg ... v q` pipeline + `mn` each, concurrently.
    let mut conns = Vec::new();
    let mut owned: Vec<Vec<u8>> = Vec::new();
    for s in &servers {
        let st = tokio::net::TcpStream::connect(s).await?;
        st.set_nodelay(true)?;
        let (r, w) = st.into_split();
        conns.push((tokio::io::BufReader::new(r), w));
        let mut req = Vec::new();
        for k in &keys {
            if unicache::bench_support::memcached::server_addr(&c, k) == s {
                req.extend_from_slice(format!("mg {k} v q\r\n").as_bytes());
            }
        }
        req.extend_from_slice(b"mn\r\n");
        owned.push(req);
    }
    let mut raw = Vec::with_capacity(rounds);
    let mut ours = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let jobs = conns
            .iter_mut()
            .zip(&owned)
            .map(|((r, w), req)| async move {
                w.write_all(req).await?;
                let mut line = String::new();
                let mut hits = 0usize;
                loop {
                    line.clear();
                    r.read_line(&mut line).await?;
                    if line.starts_with("MN") {
                        return Ok::<usize, std::io::Error>(hits);
                    }
                    let n: usize = line
                        .split(' ')
                        .nth(1)
                        .and_then(|x| x.trim().parse().ok())
                        .unwrap_or(0);
                    let mut buf = vec![0u8; n + 2];
                    r.read_exact(&mut buf).await?;
                    hits += 1;
                }
            });
        let hits: usize = futures::future::try_join_all(jobs).await?.into_iter().sum();
        raw.push(t.elapsed().as_nanos() as u64);
        anyhow::ensure!(hits == nkeys, "raw pipeline found {hits} of {nkeys}");
        let t = Instant::now();
        let got = unicache::Cache::get_many(&c, &refs).await?;
        ours.push(t.elapsed().as_nanos() as u64);
        anyhow::ensure!(got.iter().all(|v| v.is_some()), "get_many missed keys");
    }
    raw.sort_unstable();
    ours.sort_unstable();
    let p50 = |v: &[u64]| v[v.len() / 2] as f64 / 1000.0;
    print_json(&serde_json::json!({
        "keys": nkeys,
        "servers": servers.len(),
        "raw_mg_pipeline_p50_us": p50(&raw),
        "unicache_get_many_p50_us": p50(&ours),
        "ratio": p50(&ours) / p50(&raw),
    }))?;
    Ok(Outcome::Success)
}

/// The value the crash writer stores under `key` (the test recomputes it).
pub fn crash_value(key: &str) -> String {
    format!("value-{key}-{}", "z".repeat(key.len() % 50))
}

/// Prints one JSON line; a closed stdout ends the command quietly
/// (`println!` would panic).
fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    super::stdout_write(format!("{v}\n").as_bytes())?;
    Ok(())
}
