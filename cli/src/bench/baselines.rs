//! The baselines of `unicache bench`: what unicache is measured against
//! (rusqlite, a pipelined memcached meta-protocol writer and `mg` reader),
//! and the library's side of those comparisons (`set-many`, `get-latency`).
//! Kept apart from the command code and from the library's API.
//!
//! What they write into a user's server goes into a namespace (or, raw, a
//! key prefix) of their own, and is deleted at the end, also after an error
//! or Ctrl-C (see [`super::scratch`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::scratch::{self, Scratch};
use super::shared::{print_json, record};
use crate::Outcome;

/// Runs `body` on `url` opened in a fresh namespace, found empty; deletes
/// `keys` (all that `body` writes) afterwards, whatever happened. Ctrl-C
/// stops `body` and still cleans up.
async fn in_scratch<F>(url: &str, keys: &[String], body: F) -> anyhow::Result<Outcome>
where
    F: AsyncFnOnce(&unicache::Handle) -> anyhow::Result<Outcome>,
{
    scratch::catch_interrupts();
    let place = Scratch::new(url, None)?;
    let c = match unicache::open(&place.url).await {
        Ok(c) => c,
        Err(e) => {
            place.remove_created_files();
            return Err(e.into());
        }
    };
    let (ran, removed) = match place.ensure_empty(&*c, keys).await {
        Ok(()) => {
            let ran = tokio::select! {
                r = body(&c) => r,
                () = scratch::until_interrupted() => Err(scratch::interrupted_error()),
            };
            (ran, place.remove(&*c, keys).await)
        }
        Err(e) => (Err(e), Ok(())),
    };
    let _ = c.close().await;
    place.remove_created_files();
    let out = ran?;
    removed.context("deleting the bench's keys")?;
    Ok(out)
}

/// `bench set-many`: one `set_many` of `records` entries and a flush, timed.
pub async fn set_many(cache: &str, records: u64, value_size: usize) -> anyhow::Result<Outcome> {
    let keys: Vec<String> = (0..records).map(|i| format!("key:{i}")).collect();
    in_scratch(cache, &keys, async |c| {
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
    })
    .await
}

/// `bench get-latency`: sequential gets of one key, p50/p99/mean.
pub async fn get_latency(cache: String, requests: u64) -> anyhow::Result<Outcome> {
    const KEY: &str = "key:latency";
    in_scratch(&cache, &[KEY.to_string()], async |c| {
        c.set(KEY, &[b'x'; 100], None).await?;
        let mut lat = Vec::with_capacity(requests as usize);
        for _ in 0..requests {
            let t = Instant::now();
            c.get(KEY).await?;
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
    })
    .await
}

/// One connection, `ms PREFIX:key:I SIZE q` + value in pipelined batches
/// of 1,000, each closed by `mn` and read back to `MN`; prints records/s.
/// PREFIX is fresh (`unicache-bench-<pid>-<random>`), and every key sent is
/// deleted afterwards (`md`), also after an error or Ctrl-C.
pub async fn memcached_raw(
    server: &str,
    records: u64,
    value_size: usize,
) -> anyhow::Result<Outcome> {
    scratch::catch_interrupts();
    let prefix = scratch::fresh_namespace();
    let mut sent = 0u64;
    let ran = raw_sets(server, &prefix, records, value_size, &mut sent).await;
    let removed = raw_deletes(server, &prefix, sent).await;
    let secs = ran?;
    removed.context("deleting the bench's keys")?;
    if scratch::interrupted() {
        return Err(scratch::interrupted_error());
    }
    print_json(
        &serde_json::json!({"records": records, "seconds": secs, "records_per_second": records as f64 / secs}),
    )?;
    Ok(Outcome::Success)
}

/// The timed part of [`memcached_raw`]; `sent` counts the keys sent so far
/// (what cleanup must delete). Returns the seconds it took.
async fn raw_sets(
    server: &str,
    prefix: &str,
    records: u64,
    value_size: usize,
    sent: &mut u64,
) -> anyhow::Result<f64> {
    let value = vec![b'x'; value_size];
    let (mut r, mut w) = raw_connect(server).await?;
    let t = Instant::now();
    let mut req = Vec::with_capacity(1000 * (value_size + 70));
    let mut i = 0u64;
    while i < records && !scratch::interrupted() {
        req.clear();
        let end = (i + 1000).min(records);
        for k in i..end {
            req.extend_from_slice(format!("ms {prefix}:key:{k} {value_size} q\r\n").as_bytes());
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
        }
        *sent = end;
        raw_batch(server, &mut r, &mut w, &req).await?;
        i = end;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Deletes `PREFIX:key:0` .. `PREFIX:key:N-1` on a connection of its own
/// (the writer's may be broken), in quiet pipelined batches.
async fn raw_deletes(server: &str, prefix: &str, n: u64) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (mut r, mut w) = raw_connect(server).await?;
    let mut req = Vec::new();
    let mut i = 0u64;
    while i < n {
        req.clear();
        let end = (i + 1000).min(n);
        for k in i..end {
            req.extend_from_slice(format!("md {prefix}:key:{k} q\r\n").as_bytes());
        }
        raw_batch(server, &mut r, &mut w, &req).await?;
        i = end;
    }
    Ok(())
}

async fn raw_connect(server: &str) -> anyhow::Result<Conn> {
    let stream = tokio::net::TcpStream::connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    Ok((tokio::io::BufReader::new(r), w))
}

/// Sends quiet-mode requests closed by `mn` and reads back to `MN` (the
/// only reply of a clean batch: `md` of a missing key is quiet too).
async fn raw_batch(
    server: &str,
    r: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    req: &[u8],
) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    w.write_all(req).await?;
    w.write_all(b"mn\r\n").await?;
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        bail!("{server} closed the connection");
    }
    if !line.starts_with("MN") {
        bail!("{server}: unexpected {line:?}");
    }
    Ok(())
}

/// INSERT OR REPLACE of RECORDS records in one transaction, on unicache's
/// schema, into `db`, a file that must not exist (it is the bench's, and
/// removed at the end with its `-wal`/`-shm`); prints records/s.
pub fn sqlite_raw(records: u64, value_size: usize, db: &Path) -> anyhow::Result<Outcome> {
    if std::fs::symlink_metadata(db).is_ok() {
        bail!(
            "--db {} exists; refusing to replace it: sqlite-raw writes a fresh file and \
             removes it afterwards (give a path that does not exist)",
            db.display()
        );
    }
    let timed = sqlite_raw_inserts(records, value_size, db);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let secs = timed?;
    print_json(&serde_json::json!({
        "records": records,
        "seconds": secs,
        "records_per_second": records as f64 / secs,
    }))?;
    Ok(Outcome::Success)
}

/// The timed part of [`sqlite_raw`]: creates `db` and inserts; returns the
/// seconds it took.
fn sqlite_raw_inserts(records: u64, value_size: usize, db: &Path) -> anyhow::Result<f64> {
    let pad = "x".repeat(value_size);
    // Values prepared up front: the baseline times only the inserts.
    let rows: Vec<(String, String)> = (0..records)
        .map(|i| (format!("key:{i}"), record(i, &pad)))
        .collect();
    let t = Instant::now();
    let mut conn =
        rusqlite::Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
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
    Ok(t.elapsed().as_secs_f64())
}

/// get_many through unicache against the same keys fetched raw with one
/// `mg` pipeline per server; prints both p50 latencies. The keys
/// (`PREFIX:gm:I`, PREFIX fresh) are deleted afterwards, also after an error
/// or Ctrl-C.
pub async fn memcached_get_many(url: &str, nkeys: usize, rounds: usize) -> anyhow::Result<Outcome> {
    let parsed = unicache::open::parse(url)?;
    let unicache::backends::BackendConfig::Memcached(config) = parsed.backend.clone() else {
        bail!("--cache must be a memcached:// URL");
    };
    scratch::catch_interrupts();
    let servers = config.servers.clone();
    let c = unicache::backends::memcached::MemcachedCache::connect(
        config
            .connect_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5)),
        Default::default(),
    )
    .await?;
    let prefix = scratch::fresh_namespace();
    let keys: Vec<String> = (0..nkeys).map(|i| format!("{prefix}:gm:{i}")).collect();
    let ran = tokio::select! {
        r = get_many_rounds(&c, &servers, &keys, rounds) => r,
        () = scratch::until_interrupted() => Err(scratch::interrupted_error()),
    };
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let removed = unicache::Cache::delete_many(&c, &refs).await;
    let figures = ran?;
    removed.context("deleting the bench's keys")?;
    print_json(&figures)?;
    Ok(Outcome::Success)
}

/// The measured part of [`memcached_get_many`]: stores `keys`, then
/// `rounds` of raw pipelines and get_many.
async fn get_many_rounds(
    c: &unicache::backends::memcached::MemcachedCache,
    servers: &[String],
    keys: &[String],
    rounds: usize,
) -> anyhow::Result<serde_json::Value> {
    let nkeys = keys.len();
    let value = vec![b'x'; 100];
    let entries: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|k| (k.as_str(), value.as_slice()))
        .collect();
    unicache::Cache::set_many(c, &entries, None).await?;
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();

    // Raw: one connection per server, one `mg ... v q` pipeline + `mn` each, concurrently.
    let mut conns = Vec::new();
    let mut owned: Vec<Vec<u8>> = Vec::new();
    for s in servers {
        conns.push(raw_connect(s).await?);
        let mut req = Vec::new();
        for k in keys {
            if unicache::bench_support::memcached::server_addr(c, k) == s {
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
        let hits = raw_mg_round(&mut conns, &owned).await?;
        raw.push(t.elapsed().as_nanos() as u64);
        anyhow::ensure!(hits == nkeys, "raw pipeline found {hits} of {nkeys}");
        let t = Instant::now();
        let got = unicache::Cache::get_many(c, &refs).await?;
        ours.push(t.elapsed().as_nanos() as u64);
        anyhow::ensure!(got.iter().all(|v| v.is_some()), "get_many missed keys");
    }
    raw.sort_unstable();
    ours.sort_unstable();
    let p50 = |v: &[u64]| v[v.len() / 2] as f64 / 1000.0;
    Ok(serde_json::json!({
        "keys": nkeys,
        "servers": servers.len(),
        "raw_mg_pipeline_p50_us": p50(&raw),
        "unicache_get_many_p50_us": p50(&ours),
        "ratio": p50(&ours) / p50(&raw),
    }))
}

/// One connection's halves, as the raw pipeline uses them.
type Conn = (
    tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
);

/// Sends each server its `mg ... v q` pipeline + `mn`, concurrently, and
/// reads the replies up to `MN`; returns the hits.
async fn raw_mg_round(conns: &mut [Conn], requests: &[Vec<u8>]) -> anyhow::Result<usize> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let jobs = conns
        .iter_mut()
        .zip(requests)
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
    Ok(futures::future::try_join_all(jobs).await?.into_iter().sum())
}
