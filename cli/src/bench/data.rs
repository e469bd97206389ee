//! The data generators of `unicache bench`: JSON Lines records (or the
//! seed's object) and RESP SET commands for `redis-cli --pipe`.

use std::io::Write;

use super::shared::record;
use crate::Outcome;

/// `bench gen`: `records` JSON Lines records, or the seed's object with `seed`.
pub fn generate(records: u64, value_size: usize, seed: bool) -> anyhow::Result<Outcome> {
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
