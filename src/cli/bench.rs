//! `unicache bench`: data generators and raw-driver baselines, so that
//! `scripts/bench_*.sh` can put unicache and the bare driver side by side in
//! one run. Nothing here is used by the other commands.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

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

pub fn run(cmd: BenchCmd) -> anyhow::Result<Outcome> {
    match cmd {
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
            conn.execute_batch(
                "CREATE TABLE cache (namespace TEXT NOT NULL DEFAULT '', key TEXT NOT NULL, \
                 value BLOB NOT NULL, expires_at INTEGER, PRIMARY KEY (namespace, key)) WITHOUT ROWID;",
            )?;
            let tx = conn.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT OR REPLACE INTO cache (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (k, v) in &rows {
                    st.execute(rusqlite::params!["", k, v.as_bytes(), None::<i64>])?;
                }
            }
            tx.commit()?;
            drop(conn);
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "records": records,
                    "seconds": secs,
                    "records_per_second": records as f64 / secs,
                })
            );
            Ok(Outcome::Success)
        }
    }
}
