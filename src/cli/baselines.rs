//! The raw-driver baselines of `unicache bench`: what unicache is measured
//! against (rusqlite, a pipelined memcached meta-protocol writer and `mg`
//! reader, RESP for `redis-cli --pipe`). Kept apart from the command code
//! and from the library's API.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Outcome;
use super::bench::{print_json, record};

/// Prints RECORDS Redis SET commands in RESP, for `redis-cli --pipe`.
pub fn gen_resp(records: u64, value_size: usize) -> anyhow::Result<Outcome> {
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

/// One connection, `ms key:I SIZE q` + value in pipelined batches of 1,000,
/// each closed by `mn` and read back to `MN`; prints records/s.
pub async fn memcached_raw(
    server: &str,
    records: u64,
    value_size: usize,
) -> anyhow::Result<Outcome> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let value = vec![b'x'; value_size];
    let stream = tokio::net::TcpStream::connect(server).await?;
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

/// INSERT OR REPLACE of RECORDS records in one transaction, on unicache's
/// schema, into a fresh file `db`; prints records/s.
pub fn sqlite_raw(records: u64, value_size: usize, db: &Path) -> anyhow::Result<Outcome> {
    let _ = std::fs::remove_file(db);
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
    let secs = t.elapsed().as_secs_f64();
    print_json(&serde_json::json!({
        "records": records,
        "seconds": secs,
        "records_per_second": records as f64 / secs,
    }))?;
    Ok(Outcome::Success)
}

/// get_many through unicache against the same keys fetched raw with one
/// `mg` pipeline per server; prints both p50 latencies.
pub async fn memcached_get_many(url: &str, nkeys: usize, rounds: usize) -> anyhow::Result<Outcome> {
    let parsed = unicache::open::parse(url)?;
    let unicache::backends::BackendConfig::Memcached(config) = parsed.backend.clone() else {
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
        let hits = raw_mg_round(&mut conns, &owned).await?;
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
