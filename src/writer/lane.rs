//! One lane per target: batches from a bounded queue, written with
//! `set_many`, retried while transient, until the target is treated as down.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::batch::Packed;
use super::{Batch, Progress, Target, TargetReport, WriteOptions, rejects::Rejects};
use crate::cache::Cache;
use crate::error::Error;
use crate::records::Rejected;

pub(super) type Lane = tokio::task::JoinHandle<(TargetReport, Vec<u64>)>;

/// One lane per target, each fed by a bounded queue.
pub(super) fn spawn_lanes(
    targets: &[Target],
    options: &WriteOptions,
    rejects: &Arc<Mutex<Rejects>>,
    progress: &Arc<Progress>,
) -> (Vec<mpsc::Sender<Batch>>, Vec<Lane>) {
    let mut senders = Vec::new();
    let mut lanes = Vec::new();
    for t in targets {
        let (tx, rx) = mpsc::channel::<Batch>(options.queue_depth.max(1));
        senders.push(tx);
        lanes.push(tokio::spawn(run_lane(
            t.clone(),
            rx,
            options.clone(),
            rejects.clone(),
            progress.clone(),
        )));
    }
    (senders, lanes)
}

/// What one batch came to on one target.
struct BatchOutcome {
    batch: Batch,
    written: u64,
    retries: u64,
    /// Entry index and the error's one-line text.
    failed: Vec<(usize, String)>,
}

/// A lane's view of its target, shared by the batches it has in flight.
#[derive(Default)]
struct Health {
    /// Start of the first failed attempt since the last success.
    failing_since: Mutex<Option<Instant>>,
    /// Why the target is treated as down, once it is.
    down: Mutex<Option<String>>,
}

impl Health {
    fn succeeded(&self) {
        *self.failing_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records an attempt that started at `start` and stored nothing; true
    /// when the target has now failed for `give_up` and is treated as down.
    fn failed(&self, start: Instant, err: &str, give_up: Duration) -> bool {
        let mut since = self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        let first = *since.get_or_insert(start);
        if first.elapsed() < give_up {
            return false;
        }
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.get_or_insert_with(|| {
            format!(
                "target down: no batch succeeded for {:.1}s (give-up-after {:?}); last error: {err}",
                first.elapsed().as_secs_f64(),
                give_up
            )
        });
        true
    }

    fn down(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One attempt at the `pending` records of `batch`: one `set_many` call,
/// or, when records carry their own TTLs (import), one per run of
/// consecutive records with the same TTL (order kept). Failures are indexed
/// into `pending`, as one `set_many` call's would be.
async fn attempt(
    cache: &dyn Cache,
    batch: &Packed,
    pending: &[usize],
    options: &WriteOptions,
) -> Result<(), Error> {
    let entries: Vec<(&str, &[u8])> = pending
        .iter()
        .map(|&i| {
            let r = batch.get(i);
            (r.key, r.value)
        })
        .collect();
    if pending.iter().all(|&i| batch.get(i).ttl.is_none()) {
        return set_many(cache, &entries, options.ttl, options).await;
    }
    let ttl = |j: usize| batch.get(pending[j]).ttl.or(options.ttl);
    let (mut failures, mut start) = (Vec::new(), 0);
    while start < entries.len() {
        let end = (start..entries.len())
            .find(|&j| ttl(j) != ttl(start))
            .unwrap_or(entries.len());
        match set_many(cache, &entries[start..end], ttl(start), options).await {
            Ok(()) => {}
            Err(e) if e.kind() == crate::ErrorKind::PartialBatch => {
                failures.extend(e.failures().iter().map(|(j, err)| (start + j, err.clone())))
            }
            Err(e) => failures.extend((start..end).map(|j| (j, e.clone()))),
        }
        start = end;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::partial(failures))
    }
}

/// One `set_many` call, bounded by `op_timeout`; a panicking backend is
/// an error for this batch, not a crashed run.
async fn set_many(
    cache: &dyn Cache,
    entries: &[(&str, &[u8])],
    ttl: Option<Duration>,
    options: &WriteOptions,
) -> Result<(), Error> {
    use futures::FutureExt;
    let call = std::panic::AssertUnwindSafe(cache.set_many(entries, ttl)).catch_unwind();
    match tokio::time::timeout(options.op_timeout, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::new(crate::ErrorKind::Backend, "set_many panicked")
            .with_backend(cache.backend())),
        Err(_) => Err(Error::new(
            crate::ErrorKind::Timeout,
            format!("set_many took over {:?}", options.op_timeout),
        )
        .with_backend(cache.backend())),
    }
}

/// [`attempt`], on a thread of its own for a backend that does its work
/// when called (SQLite, the file log, `memory://`: [`Capabilities::inline`]):
/// on a runtime worker it would hold that worker for the whole batch, and
/// the other lanes' network replies and sends would wait for it (two
/// workers, two such lanes: every network lane stalled). A backend that
/// awaits the network runs on the workers as before.
///
/// [`Capabilities::inline`]: crate::cache::Capabilities::inline
async fn attempt_on_lane(
    cache: &Arc<dyn Cache>,
    inline: bool,
    batch: &Batch,
    pending: &[usize],
    options: &Arc<WriteOptions>,
) -> Result<(), Error> {
    if !inline {
        return attempt(&**cache, batch, pending, options).await;
    }
    let (cache, batch, options) = (cache.clone(), batch.clone(), options.clone());
    let pending = pending.to_vec();
    let rt = tokio::runtime::Handle::current();
    let work = move || rt.block_on(attempt(&*cache, &batch, &pending, &options));
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) => Err(Error::new(
            crate::ErrorKind::Backend,
            format!("set_many did not finish: {e}"),
        )),
    }
}

/// Writes one batch, retrying transient failures (whole batch or the failed
/// entries of a partial one) with exponential backoff, until the target is
/// down (see [`WriteOptions::give_up_after`]).
async fn write_batch(
    cache: &Arc<dyn Cache>,
    inline: bool,
    batch: Batch,
    options: &Arc<WriteOptions>,
    health: &Health,
) -> BatchOutcome {
    let mut out = BatchOutcome {
        batch: batch.clone(),
        written: 0,
        retries: 0,
        failed: Vec::new(),
    };
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let mut attempts = 0u32;
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some(reason) = health.down() {
            out.failed
                .extend(pending.iter().map(|&i| (i, reason.clone())));
            return out;
        }
        let start = Instant::now();
        let r = attempt_on_lane(cache, inline, &batch, &pending, options).await;
        let can_retry = attempts < options.retries;
        let failed_before = out.failed.len();
        let mut retry = Vec::new();
        // The last error, retried or not, of whatever kind: an attempt that
        // stores nothing counts toward give-up (a server the backend itself
        // marked down fails fast and permanently, batch after batch).
        let mut last_error = None;
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == crate::ErrorKind::PartialBatch => {
                for (j, err) in e.failures() {
                    let Some(&i) = pending.get(*j) else { continue };
                    last_error = Some(err.to_string());
                    if err.is_transient() && can_retry {
                        retry.push(i);
                    } else {
                        out.failed.push((i, err.to_string()));
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                last_error = Some(msg.clone());
                if e.is_transient() && can_retry {
                    retry = pending.clone();
                } else {
                    out.failed.extend(pending.iter().map(|&i| (i, msg.clone())));
                }
            }
        }
        let failed_now = out.failed.len() - failed_before;
        let stored = (pending.len() - retry.len() - failed_now) as u64;
        out.written += stored;
        if stored > 0 {
            health.succeeded();
        }
        let down = stored == 0
            && last_error.is_some_and(|t| health.failed(start, &t, options.give_up_after));
        if retry.is_empty() {
            return out;
        }
        if down {
            pending = retry;
            continue; // fails them with the reason at the top
        }
        attempts += 1;
        out.retries += 1;
        tracing::warn!(
            backend = cache.backend(),
            attempt = attempts,
            "retrying {} records",
            retry.len()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        pending = retry;
    }
}

async fn run_lane(
    target: Target,
    rx: mpsc::Receiver<Batch>,
    options: WriteOptions,
    rejects: Arc<Mutex<Rejects>>,
    progress: Arc<Progress>,
) -> (TargetReport, Vec<u64>) {
    use futures::StreamExt;
    let started = Instant::now();
    let cache = target.cache.clone();
    let mut report = TargetReport {
        name: target.name.clone(),
        backend: cache.backend().to_string(),
        url: cache.endpoint(),
        ..TargetReport::default()
    };
    let mut failed_positions = Vec::new();
    let note_error = |report: &mut TargetReport, s: &str| {
        if report.errors.len() < 5 && !report.errors.iter().any(|e| e == s) {
            report.errors.push(s.to_string());
        }
    };
    // Network backends keep several batches in flight; `buffered` still
    // hands results back in batch order, and one connection keeps the
    // server-side order too.
    let capabilities = cache.capabilities();
    let concurrency = capabilities.batch_concurrency.max(1);
    let options = Arc::new(options);
    let health = Health::default();
    let meters = crate::observe::writer::TargetMeters::new(&target.name, cache.backend());
    let batches =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut outcomes = std::pin::pin!(
        batches
            .map(|b| {
                meters.batch_started();
                write_batch(&cache, capabilities.inline, b, &options, &health)
            })
            .buffered(concurrency)
    );
    while let Some(o) = outcomes.next().await {
        report.written += o.written;
        report.retries += o.retries;
        let secs = started.elapsed().as_secs_f64();
        let failed = o.failed.len() as u64;
        meters.batch_done(o.written, failed, o.retries, report.written, secs);
        progress.stored.fetch_add(o.written, Ordering::Relaxed);
        if !o.failed.is_empty() {
            report.failed += o.failed.len() as u64;
            let mut rj = rejects.lock().unwrap_or_else(|p| p.into_inner());
            for (i, err) in o.failed {
                note_error(&mut report, &err);
                let rec = o.batch.get(i);
                failed_positions.push(rec.position.record);
                rj.push(
                    Rejected {
                        position: rec.position,
                        reason: format!("{}: {err}", target.name),
                        raw: String::from_utf8_lossy(rec.value).into_owned(),
                    },
                    Some(&target.name),
                );
            }
        }
    }
    if let Err(e) = cache.flush().await {
        note_error(&mut report, &e.to_string());
    }
    report.duration_seconds = started.elapsed().as_secs_f64();
    (report, failed_positions)
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;

    use crate::backends::memory::{MemoryCache, MemoryConfig};
    use crate::cache::{Cache, CacheFuture, CacheOptions, Capabilities, Stats};
    use crate::error::{Error, ErrorKind, Result};
    use crate::writer::{Progress, Target, WriteOptions, write_records};

    /// Every write fails at once with a permanent error, as a memcached
    /// server the backend marked down does.
    #[derive(Debug)]
    struct Refusing(MemoryCache);

    #[async_trait]
    impl Cache for Refusing {
        fn backend(&self) -> &'static str {
            "refusing"
        }
        fn endpoint(&self) -> String {
            "refusing".into()
        }
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }
        fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
            self.0.get(key)
        }
        fn set<'a>(&'a self, k: &'a str, v: &'a [u8], t: Option<Duration>) -> CacheFuture<'a, ()> {
            self.0.set(k, v, t)
        }
        fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
            self.0.delete(key)
        }
        fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
            self.0.contains(key)
        }
        async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
            self.0.get_many(keys).await
        }
        async fn set_many(&self, _: &[(&str, &[u8])], _: Option<Duration>) -> Result<()> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Err(Error::new(ErrorKind::Backend, "server marked down"))
        }
        async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
            self.0.delete_many(keys).await
        }
        async fn clear(&self) -> Result<()> {
            self.0.clear().await
        }
        async fn len(&self) -> Result<u64> {
            self.0.len().await
        }
        async fn stats(&self) -> Result<Stats> {
            self.0.stats().await
        }
    }

    /// A target whose every batch fails, even permanently and fast, is
    /// given up on after `give_up_after` (it went on through the whole
    /// input before, one failing call per batch).
    #[tokio::test]
    async fn permanent_fast_failures_count_toward_give_up() {
        let input: String = (0..3000)
            .map(|i| format!("{{\"key\":\"k{i}\"}}\n"))
            .collect();
        let cache = Arc::new(Refusing(MemoryCache::open(
            MemoryConfig::default(),
            CacheOptions::new(),
        )));
        let targets = [Target {
            name: "refusing".into(),
            cache,
        }];
        let options = WriteOptions {
            batch_size: 1,
            retries: 0,
            give_up_after: Duration::from_millis(200),
            ..WriteOptions::default()
        };
        let started = std::time::Instant::now();
        let report = write_records(
            Box::new(std::io::Cursor::new(input.into_bytes())),
            "test",
            &targets,
            &options,
            Arc::new(Progress::default()),
        )
        .await
        .unwrap();
        let t = &report.targets[0];
        assert_eq!(t.failed, 3000, "{t:?}");
        assert!(
            t.errors.iter().any(|e| e.contains("target down")),
            "{:?} after {:?}",
            t.errors,
            started.elapsed()
        );
    }
}
