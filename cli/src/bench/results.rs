//! What one `bench run` measured: the rows that the run fills in and the
//! report and the table show. Imports no sibling.

use serde::Serialize;

/// One workload.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Gets of prefilled keys.
    Get,
    /// Sets.
    Set,
    /// Gets and sets, --read-ratio of them gets.
    Mixed,
}

impl Workload {
    /// The workload's flag name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Get => "get",
            Workload::Set => "set",
            Workload::Mixed => "mixed",
        }
    }
}

/// The figures of one run (cache x workload x concurrency).
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The cache as given (password redacted).
    pub cache: String,
    /// Backend name.
    pub backend: String,
    /// Workload.
    pub op: Workload,
    /// Workers.
    pub concurrency: u64,
    /// Requests completed.
    pub requests: u64,
    /// Requests that failed (counted in the latencies too).
    pub errors: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Requests per second.
    pub ops_per_sec: f64,
    /// Target rate, when one was given.
    pub target_rate: Option<f64>,
    /// Latency percentiles and extremes, microseconds.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest.
    pub max_us: f64,
}

/// The results as an aligned text table.
pub fn table(results: &[RunResult]) -> String {
    let w = results
        .iter()
        .map(|r| r.cache.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<w$}  {:<5}  {:>5}  {:>12}  {:>9}  {:>9}  {:>9}  {:>9}  {:>7}\n",
        "cache", "op", "conc", "ops/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "errors"
    );
    for r in results {
        out.push_str(&format!(
            "{:<w$}  {:<5}  {:>5}  {:>12.0}  {:>9.1}  {:>9.1}  {:>9.1}  {:>9.1}  {:>7}\n",
            r.cache,
            r.op.name(),
            r.concurrency,
            r.ops_per_sec,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.p999_us,
            r.errors
        ));
    }
    out
}
