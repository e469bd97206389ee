//! The bulk writer's metrics, per target (labels `target`, `backend`):
//! `unicache_writer_records_written_total`, `_failed_total`,
//! `_retries_total`, `unicache_writer_batches_in_flight` and
//! `unicache_writer_records_per_second` (written since the lane started),
//! plus `unicache_writer_records_read_total` and `_skipped_total` for the
//! input. No-ops without the `metrics` feature or a recorder.

#[cfg(feature = "metrics")]
use metrics::{Counter, Gauge};

/// One target's handles.
#[derive(Debug)]
pub struct TargetMeters {
    #[cfg(feature = "metrics")]
    written: Counter,
    #[cfg(feature = "metrics")]
    failed: Counter,
    #[cfg(feature = "metrics")]
    retries: Counter,
    #[cfg(feature = "metrics")]
    in_flight: Gauge,
    #[cfg(feature = "metrics")]
    rate: Gauge,
}

impl TargetMeters {
    /// Registers the target's metrics.
    #[allow(unused_variables)]
    pub fn new(target: &str, backend: &'static str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let l = [
                ("target", target.to_string()),
                ("backend", backend.to_string()),
            ];
            TargetMeters {
                written: metrics::counter!("unicache_writer_records_written_total", &l),
                failed: metrics::counter!("unicache_writer_records_failed_total", &l),
                retries: metrics::counter!("unicache_writer_retries_total", &l),
                in_flight: metrics::gauge!("unicache_writer_batches_in_flight", &l),
                rate: metrics::gauge!("unicache_writer_records_per_second", &l),
            }
        }
        #[cfg(not(feature = "metrics"))]
        TargetMeters {}
    }

    /// A batch went out.
    pub fn batch_started(&self) {
        #[cfg(feature = "metrics")]
        self.in_flight.increment(1.0);
    }

    /// A batch came back: what it wrote, failed and retried; `total`
    /// written so far over `elapsed` gives the throughput gauge.
    #[allow(unused_variables)]
    pub fn batch_done(&self, written: u64, failed: u64, retries: u64, total: u64, secs: f64) {
        #[cfg(feature = "metrics")]
        {
            self.in_flight.decrement(1.0);
            self.written.increment(written);
            self.failed.increment(failed);
            self.retries.increment(retries);
            if secs > 0.0 {
                self.rate.set(total as f64 / secs);
            }
        }
    }
}

/// The input's counters.
#[derive(Debug, Clone)]
pub struct InputMeters {
    #[cfg(feature = "metrics")]
    read: Counter,
    #[cfg(feature = "metrics")]
    skipped: Counter,
}

impl InputMeters {
    /// Registers the input's metrics.
    pub fn new() -> Self {
        InputMeters {
            #[cfg(feature = "metrics")]
            read: metrics::counter!("unicache_writer_records_read_total"),
            #[cfg(feature = "metrics")]
            skipped: metrics::counter!("unicache_writer_records_skipped_total"),
        }
    }

    /// One record read.
    pub fn read(&self) {
        #[cfg(feature = "metrics")]
        self.read.increment(1);
    }

    /// One record skipped while reading.
    pub fn skipped(&self) {
        #[cfg(feature = "metrics")]
        self.skipped.increment(1);
    }
}

impl Default for InputMeters {
    fn default() -> Self {
        Self::new()
    }
}
