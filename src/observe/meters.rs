//! The layer's handles on the `metrics` facade.

use std::sync::Arc;
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, Label};

use super::Op;
use super::local::{self, BYTES_READ, BYTES_WRITTEN, GET_ERRORS, HITS, Local, MISSES, SET, TICK};
use crate::cache::Stats;
use crate::error::Result;

/// In-process backends answer in tens of nanoseconds, and a clock read
/// (`lfence; rdtsc`) waits for every load in flight, so the CPU stops
/// overlapping the cache misses of successive gets: they time one call in
/// this many (per thread). Counters count every call.
pub const INLINE_SAMPLE_EVERY: u32 = 128;

/// In-process caches hand their single-key counts to the facade every
/// this many calls (per thread), once a second, and on `stats`, `flush`,
/// `close` and drop.
pub const INLINE_PUBLISH_EVERY: u32 = 1024;

struct OpMeter {
    labels: Vec<Label>,
    calls: Counter,
    /// Batch and whole-cache operations only.
    keys: Option<Counter>,
    duration: Histogram,
}

/// The reads that count hits and misses, in index order.
const READS: [Op; 4] = [Op::Get, Op::GetMany, Op::GetWithTtl, Op::GetManyWithTtl];
/// The writes that count bytes, in index order.
const WRITES: [Op; 3] = [Op::Set, Op::SetMany, Op::Add];

fn read_index(op: Op) -> usize {
    READS.iter().position(|&r| r == op).unwrap_or(0)
}

/// Handles registered once, when the layer is built: a call pays an
/// atomic add per counter, no lookup.
pub(super) struct Meters {
    ops: Vec<OpMeter>,
    hits: [Counter; 4],
    misses: [Counter; 4],
    bytes_read: [Counter; 4],
    bytes_written: [Counter; 3],
    evictions: Counter,
    entries: Gauge,
    inline: bool,
    /// Per-thread single-key counts, for in-process caches.
    local: Option<Arc<Local>>,
}

/// Where an in-process cache's per-thread counts go when folded.
struct LocalSink {
    get_calls: Counter,
    hits: Counter,
    misses: Counter,
    bytes_read: Counter,
    bytes_written: Counter,
    /// set, delete, contains.
    calls: [Counter; 3],
}

impl local::Sink for LocalSink {
    fn add(&self, d: &[u64; local::FIELDS]) {
        let get_calls = d[HITS] + d[MISSES] + d[GET_ERRORS];
        for (c, n) in [
            (&self.get_calls, get_calls),
            (&self.hits, d[HITS]),
            (&self.misses, d[MISSES]),
            (&self.bytes_read, d[BYTES_READ]),
            (&self.bytes_written, d[BYTES_WRITTEN]),
            (&self.calls[0], d[SET]),
            (&self.calls[1], d[SET + 1]),
            (&self.calls[2], d[SET + 2]),
        ] {
            if n > 0 {
                c.increment(n);
            }
        }
    }
}

fn counters<const N: usize>(name: &'static str, ops: &[OpMeter], which: [Op; N]) -> [Counter; N] {
    which.map(|op| metrics::counter!(name, ops[op as usize].labels.clone()))
}

/// The local field of a single-key call other than get.
fn call_field(op: Op) -> Option<usize> {
    match op {
        Op::Set => Some(SET),
        Op::Delete => Some(SET + 1),
        Op::Contains => Some(SET + 2),
        _ => None,
    }
}

impl Meters {
    pub(super) fn new(backend: &'static str, namespace: &str, inline: bool) -> Self {
        let base = vec![
            Label::new("backend", backend),
            Label::new("namespace", namespace.to_string()),
        ];
        let ops: Vec<OpMeter> = Op::ALL
            .iter()
            .map(|op| {
                let mut labels = base.clone();
                labels.push(Label::new("operation", op.as_str()));
                OpMeter {
                    calls: metrics::counter!("unicache_operations_total", labels.clone()),
                    keys: (!op.is_single())
                        .then(|| metrics::counter!("unicache_keys_total", labels.clone())),
                    duration: metrics::histogram!(
                        "unicache_operation_duration_seconds",
                        labels.clone()
                    ),
                    labels,
                }
            })
            .collect();
        let m = Meters {
            hits: counters("unicache_hits_total", &ops, READS),
            misses: counters("unicache_misses_total", &ops, READS),
            bytes_read: counters("unicache_bytes_read_total", &ops, READS),
            bytes_written: counters("unicache_bytes_written_total", &ops, WRITES),
            evictions: metrics::counter!("unicache_evictions_total", base.clone()),
            entries: metrics::gauge!("unicache_entries", base),
            ops,
            inline,
            local: None,
        };
        let local = inline.then(|| {
            Local::new(Box::new(LocalSink {
                get_calls: m.ops[Op::Get as usize].calls.clone(),
                hits: m.hits[0].clone(),
                misses: m.misses[0].clone(),
                bytes_read: m.bytes_read[0].clone(),
                bytes_written: m.bytes_written[0].clone(),
                calls: [Op::Set, Op::Delete, Op::Contains]
                    .map(|op| m.ops[op as usize].calls.clone()),
            }))
        });
        Meters { local, ..m }
    }

    /// The start of a single-key call: always for network backends, one
    /// call in [`INLINE_SAMPLE_EVERY`] for in-process ones.
    #[inline]
    pub(super) fn clock_single(&self) -> Option<Instant> {
        if !self.inline {
            return Some(Instant::now());
        }
        let n = local::tick();
        if n.is_multiple_of(INLINE_PUBLISH_EVERY) {
            self.fold(false);
        }
        n.is_multiple_of(INLINE_SAMPLE_EVERY).then(Instant::now)
    }

    pub(super) fn clock_always(&self) -> Option<Instant> {
        Some(Instant::now())
    }

    /// Whether a get may take the fast path: an in-process cache, a thread
    /// with a slot, no DEBUG spans wanted, and not the call in
    /// [`INLINE_SAMPLE_EVERY`] that is timed.
    #[inline]
    pub(super) fn fast_get(&self) -> super::FastGet<'_, local::Slot> {
        let Some(l) = &self.local else {
            return super::FastGet::Full(self.clock_single());
        };
        let i = local::thread_slot();
        if i >= local::SLOTS || tracing::level_enabled!(tracing::Level::DEBUG) {
            return super::FastGet::Full(self.clock_single());
        }
        let slot = l.own_slot(i);
        let n = slot.bump(TICK, 1);
        if n.is_multiple_of(INLINE_SAMPLE_EVERY as u64) {
            if n.is_multiple_of(INLINE_PUBLISH_EVERY as u64) {
                l.fold(false);
            }
            return super::FastGet::Full(Some(Instant::now()));
        }
        super::FastGet::Go(slot)
    }

    /// Counts a get that took the fast path on this thread's `slot`.
    #[inline]
    pub(super) fn fast_done(&self, slot: &local::Slot, r: &Result<Option<bytes::Bytes>>) {
        match r {
            Ok(Some(v)) => {
                slot.bump(HITS, 1);
                slot.bump(BYTES_READ, v.len() as u64);
            }
            Ok(None) => {
                slot.bump(MISSES, 1);
            }
            Err(_) => self.done(super::Op::Get, r, None, None),
        }
    }

    #[inline]
    pub(super) fn done<T>(&self, op: Op, r: &Result<T>, clock: Option<Instant>, keys: Option<u64>) {
        let m = &self.ops[op as usize];
        match (&self.local, op) {
            // A get's calls are its hits + misses + errors.
            (Some(l), Op::Get) => {
                if r.is_err() {
                    l.add(GET_ERRORS, 1);
                }
            }
            (Some(l), op) if call_field(op).is_some() => {
                l.add(call_field(op).unwrap_or(SET), 1);
            }
            _ => m.calls.increment(1),
        }
        if let (Some(n), Some(c)) = (keys, &m.keys) {
            c.increment(n);
        }
        if let Some(t) = clock {
            m.duration.record(t.elapsed().as_secs_f64());
        }
        if let Err(e) = r {
            let mut labels = m.labels.clone();
            labels.push(Label::new("kind", format!("{:?}", e.kind())));
            metrics::counter!("unicache_errors_total", labels).increment(1);
        }
    }

    /// A read of `op` came back with `hits` values (`bytes` in all) and
    /// `misses` absent keys.
    #[inline]
    pub(super) fn read(&self, op: Op, hits: u64, misses: u64, bytes: u64) {
        if let (Some(l), Op::Get) = (&self.local, op) {
            if hits > 0 {
                l.add2(HITS, hits, BYTES_READ, bytes);
            } else {
                l.add(MISSES, misses);
            }
            return;
        }
        let i = read_index(op);
        if hits > 0 {
            self.hits[i].increment(hits);
            self.bytes_read[i].increment(bytes);
        }
        if misses > 0 {
            self.misses[i].increment(misses);
        }
    }

    /// `op` stored `bytes` of values.
    #[inline]
    pub(super) fn written(&self, op: Op, bytes: u64) {
        if let (Some(l), Op::Set) = (&self.local, op) {
            l.add(BYTES_WRITTEN, bytes);
            return;
        }
        let i = WRITES.iter().position(|&w| w == op).unwrap_or(0);
        self.bytes_written[i].increment(bytes);
    }

    /// Hands an in-process cache's per-thread counts to the facade.
    fn fold(&self, wait: bool) {
        if let Some(l) = &self.local {
            l.fold(wait);
        }
    }

    pub(super) fn flush_local(&self) {
        self.fold(true);
    }

    pub(super) fn publish(&self, s: &Stats) {
        self.fold(true);
        self.evictions.absolute(s.evictions);
        if let Some(n) = s.entries {
            self.entries.set(n as f64);
        }
    }
}
