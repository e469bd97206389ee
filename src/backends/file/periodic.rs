//! `sync=periodic` (the default): writes reach the OS before they return,
//! and one background thread per process fsyncs every log written since
//! its last round, once a second (Redis's `appendfsync everysec`). A power
//! loss costs at most about a second of writes; a killed process nothing.
//! `flush`/`close` and dropping the cache fsync at once.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

/// How often the thread looks for logs to fsync.
pub(super) const PERIOD: Duration = Duration::from_secs(1);

/// One log's "written since the last fsync" flag.
#[derive(Debug)]
pub(super) struct Dirty {
    flag: AtomicBool,
    /// The real file (after a compaction's rename: the new one, which is
    /// the one whose pages are not yet on disk).
    path: PathBuf,
}

/// fsyncs done by the background thread (for tests and stats).
pub(super) static BACKGROUND_SYNCS: AtomicU64 = AtomicU64::new(0);

fn registry() -> &'static Mutex<Vec<Weak<Dirty>>> {
    static LOGS: OnceLock<Mutex<Vec<Weak<Dirty>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("unicache-fsync".into())
            .spawn(run);
        if let Err(e) = spawned {
            // Writes still reach the OS; flush/close still fsync.
            tracing::warn!("file log: no periodic fsync thread: {e}");
        }
        Mutex::new(Vec::new())
    })
}

impl Dirty {
    /// A flag for the log at `path`, watched by the background thread.
    pub(super) fn register(path: PathBuf) -> Arc<Dirty> {
        let d = Arc::new(Dirty {
            flag: AtomicBool::new(false),
            path,
        });
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&d));
        d
    }

    /// After a write reached the OS.
    pub(super) fn mark(&self) {
        self.flag.store(true, Ordering::Release);
    }

    /// Clears the flag, saying whether it was set.
    pub(super) fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }
}

fn run() {
    loop {
        std::thread::sleep(PERIOD);
        let due: Vec<Arc<Dirty>> = {
            let mut logs = registry().lock().unwrap_or_else(|p| p.into_inner());
            logs.retain(|w| w.strong_count() > 0);
            logs.iter().filter_map(Weak::upgrade).collect()
        };
        for d in due.iter().filter(|d| d.take()) {
            // Any descriptor of the file syncs its pages.
            match File::open(&d.path).and_then(|f| f.sync_data()) {
                Ok(()) => {
                    BACKGROUND_SYNCS.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // Tried again next round; flush/close report it.
                    d.mark();
                    tracing::warn!("file log {}: periodic fsync: {e}", d.path.display());
                }
            }
        }
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
        while d.flag.load(Ordering::Acquire) {
            assert!(t.elapsed() < PERIOD * 3, "not synced within {:?}", PERIOD * 3);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(BACKGROUND_SYNCS.load(Ordering::Relaxed) >= 1);
        // The other policies have no flag; a dropped cache leaves the registry.
        assert!(open("b.log", SyncPolicy::Batch).dirty.is_none());
        drop(c);
        assert_eq!(Arc::strong_count(&d), 1, "only this test holds it");
    }
}
