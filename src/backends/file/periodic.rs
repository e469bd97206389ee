//! `sync=periodic` (the default): writes reach the OS before they return,
//! and one background thread per process fsyncs every log written since
//! its last round, once a second (Redis's `appendfsync everysec`). A power
//! loss costs about a second of writes (plus the time the round's fsyncs
//! take); a killed process nothing. `flush`/`close` and dropping the cache
//! fsync at once. The thread syncs through a descriptor of the file last
//! written (taken again when a compaction or reload replaced it), never by
//! path: a log deleted, or a relative path after `chdir`, cannot send the
//! fsync elsewhere.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often the thread looks for logs to fsync.
pub(super) const PERIOD: Duration = Duration::from_secs(1);

/// A log file written to: its (device, inode) and a descriptor of it.
type Written = ((u64, u64), Arc<File>);

/// One log's "written since the last fsync" flag, and the file written.
#[derive(Debug)]
pub(super) struct Dirty {
    flag: AtomicBool,
    /// For messages.
    path: PathBuf,
    /// The file last written, by its (device, inode).
    file: Mutex<Option<Written>>,
}

/// fsyncs done by the background thread (for tests and stats).
pub(super) static BACKGROUND_SYNCS: AtomicU64 = AtomicU64::new(0);

/// The logs the thread watches; `None` when the thread could not start
/// (then nothing is registered: writes still reach the OS, and
/// flush/close/drop still fsync).
fn registry() -> Option<&'static Mutex<Vec<Weak<Dirty>>>> {
    static LOGS: OnceLock<Option<Mutex<Vec<Weak<Dirty>>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        match std::thread::Builder::new()
            .name("unicache-fsync".into())
            .spawn(run)
        {
            Ok(_) => Some(Mutex::new(Vec::new())),
            Err(e) => {
                tracing::warn!("file log: no periodic fsync thread: {e}");
                None
            }
        }
    })
    .as_ref()
}

impl Dirty {
    /// A flag for the log at `path`, watched by the background thread.
    pub(super) fn register(path: PathBuf) -> Arc<Dirty> {
        let d = Arc::new(Dirty {
            flag: AtomicBool::new(false),
            path,
            file: Mutex::new(None),
        });
        if let Some(logs) = registry() {
            logs.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::downgrade(&d));
        }
        d
    }

    /// After a write to `file` (identified by `id`) reached the OS.
    pub(super) fn mark(&self, file: &File, id: (u64, u64)) {
        let mut cur = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().is_none_or(|(i, _)| *i != id)
            && let Ok(f) = file.try_clone()
        {
            *cur = Some((id, Arc::new(f)));
        }
        drop(cur);
        self.flag.store(true, Ordering::Release);
    }

    /// Clears the flag, saying whether it was set.
    pub(super) fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }

    /// fsyncs the file last written (outside the lock: writers go on).
    fn sync(&self) -> std::io::Result<()> {
        let f = self.file.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, f)| f.clone());
        f.map_or(Ok(()), |f| f.sync_data())
    }
}

fn run() {
    let Some(logs) = registry() else { return };
    loop {
        let started = Instant::now();
        let due: Vec<Arc<Dirty>> = {
            let mut logs = logs.lock().unwrap_or_else(|p| p.into_inner());
            logs.retain(|w| w.strong_count() > 0);
            logs.iter().filter_map(Weak::upgrade).collect()
        };
        for d in due.iter().filter(|d| d.take()) {
            match d.sync() {
                Ok(()) => {
                    BACKGROUND_SYNCS.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // Tried again next round; flush/close report it.
                    d.flag.store(true, Ordering::Release);
                    tracing::warn!("file log {}: periodic fsync: {e}", d.path.display());
                }
            }
        }
        drop(due);
        std::thread::sleep(PERIOD.saturating_sub(started.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FileCache, FileConfig, SyncPolicy};
    use super::*;
    use crate::cache::{Cache, CacheOptions};
    use futures::FutureExt;

    #[test]
    fn a_write_is_synced_by_the_background_thread_within_a_period_or_two() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str, sync| {
            FileCache::open(FileConfig::new(dir.path().join(name)).sync(sync), CacheOptions::new())
                .unwrap()
        };
        let c = open("p.log", SyncPolicy::default());
        assert_eq!(c.sync, SyncPolicy::Periodic, "the default");
        let d = c.dirty.clone().unwrap();
        c.set("k", b"v", None).now_or_never().unwrap().unwrap();
        assert!(d.flag.load(Ordering::Acquire), "marked by the write");
        let t = std::time::Instant::now();
        // The thread clears the flag before its fsync and counts after it:
        // wait for both.
        while d.flag.load(Ordering::Acquire) || BACKGROUND_SYNCS.load(Ordering::Relaxed) == 0 {
            assert!(t.elapsed() < PERIOD * 3, "not synced within {:?}", PERIOD * 3);
            std::thread::sleep(Duration::from_millis(20));
        }
        // The other policies have no flag; a dropped cache leaves the registry.
        assert!(open("b.log", SyncPolicy::Batch).dirty.is_none());
        drop(c);
        assert_eq!(Arc::strong_count(&d), 1, "only this test holds it");
    }
}
