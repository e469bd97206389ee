//! What several `bench` subcommands use: the generated record, the
//! `--value-size` flag, one JSON line on stdout. Imports no sibling.

/// `--value-size`: bytes per value, at most 64 MiB (a huge one aborted
/// on allocation).
pub fn value_size(s: &str) -> Result<usize, String> {
    const MAX: usize = 64 << 20;
    match s.parse::<usize>() {
        Ok(n) if n <= MAX => Ok(n),
        _ => Err(format!("a number of bytes from 0 to {MAX}")),
    }
}

/// The record `bench gen` prints for index `i`: `{"key":"key:I","v":PAD}`.
pub fn record(i: u64, pad: &str) -> String {
    format!("{{\"key\":\"key:{i}\",\"v\":\"{pad}\"}}")
}

/// Prints one JSON line; a closed stdout ends the command quietly
/// (`println!` would panic).
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    crate::stdout_write(format!("{v}\n").as_bytes())?;
    Ok(())
}
