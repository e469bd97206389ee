//! A tier shared by two processes: each keeps an L1 in its own memory over
//! one Redis (`l1=N` in the URL), and a write in one evicts the key from the
//! other's L1 (Redis pub/sub; `l1_invalidation=tracking` for client-side
//! caching). This process writes; a second copy of itself, started as a
//! child, reads, and reports how soon it saw each new value.
//!
//! ```sh
//! redis-server --port 6379 &     # or any Redis you may write a namespace into
//! cargo run --example tier_two_processes -- redis://127.0.0.1:6379
//! ```
//!
//! It works in a namespace of its own (`tier-example-PID`), checks it is
//! empty, and clears it at the end.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: u32 = 20;

fn tier_url(redis: &str, namespace: &str) -> String {
    let sep = if redis.contains('?') { '&' } else { '?' };
    format!("{redis}{sep}namespace={namespace}&l1=10000&l1_ttl=30s")
}

/// The reader: fills its L1, then waits for each new version the writer
/// announces on stdin and says how long it took to see it.
async fn reader(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let cache = unicache::open(url).await?;
    println!("ready");
    for line in BufReader::new(std::io::stdin()).lines() {
        let want = line?;
        let started = Instant::now();
        loop {
            let got = cache.get("greeting").await?;
            if got.as_deref() == Some(want.as_bytes()) {
                break;
            }
            if started.elapsed() > Duration::from_secs(5) {
                return Err(format!("never saw {want:?}: the L1 kept {got:?}").into());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        println!("saw {want} after {} us", started.elapsed().as_micros());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--reader") {
        return reader(&args[2]).await;
    }
    let redis = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let url = tier_url(&redis, &format!("tier-example-{}", std::process::id()));
    let cache = unicache::open(&url).await?;
    if !cache.is_empty().await? {
        return Err("the example's namespace is not empty: refusing to touch it".into());
    }
    let run = race_the_reader(&cache, &url).await;
    // Whatever happened, the namespace goes.
    cache.clear().await?;
    run
}

/// Writes ROUNDS versions; the child reads each.
async fn race_the_reader(
    cache: &unicache::Handle,
    url: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    cache.set("greeting", b"v0", None).await?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--reader", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_child = child.stdin.take().ok_or("no stdin")?;
    let mut from_child = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut expect = |what: &str| -> Result<String, Box<dyn std::error::Error>> {
        let line = from_child.next().ok_or("the reader stopped")??;
        if !line.starts_with(what) {
            return Err(format!("the reader said {line:?}").into());
        }
        Ok(line)
    };
    expect("ready")?;
    // The reader's first read fills its L1 with v0; each later write must
    // evict it there, or the reader would keep seeing v0.
    writeln!(to_child, "v0")?;
    expect("saw v0")?;
    let mut waits = Vec::new();
    for i in 1..=ROUNDS {
        let v = format!("v{i}");
        cache.set("greeting", v.as_bytes(), None).await?;
        writeln!(to_child, "{v}")?;
        let line = expect(&format!("saw {v} "))?;
        let us: u64 = line
            .split_whitespace()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        waits.push(us);
    }
    drop(to_child);
    child.wait()?;
    waits.sort_unstable();
    println!(
        "{ROUNDS} writes seen by the other process: median {} us, max {} us after the write returned",
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
    let stats = cache.cache().stats().await?;
    if let Some(tier) = &stats.tier {
        println!("writer's tier: {tier}");
    }
    Ok(())
}
