//! The settings of a `file:PATH?sync=periodic&compact_ratio=50` log, from its URL.

use std::path::PathBuf;
use std::sync::Arc;

use super::{EvictPolicy, FileCache};
use crate::backends::{BackendSpec, open_blocking};
use crate::cache::{Cache, CacheOptions};
use crate::error::Result;
use crate::url::{Query, Target, local_path, split_query, url_err};

/// Default dead-bytes percentage that triggers compaction.
pub const DEFAULT_COMPACT_RATIO: u8 = 50;

/// When the file backend forces its writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// fsync after every write.
    Always,
    /// fsync once per batch (and per single write).
    Batch,
    /// fsync within about a second of a write, by a background thread,
    /// and at `flush`/`close`; the default (a cache's writes need not wait
    /// for the disk: a killed process loses nothing, a power loss at most
    /// about a second).
    #[default]
    Periodic,
    /// Leave it to the OS (writes still reach the OS before returning).
    Never,
}

/// Settings of a `file:PATH` log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileConfig {
    /// Log file.
    pub path: PathBuf,
    /// Durability policy.
    pub sync: SyncPolicy,
    /// Dead-bytes percentage (1..=99) that triggers compaction.
    pub compact_ratio: u8,
    /// Which entries a bounded log evicts (hidden: for measurement).
    pub(crate) evict: EvictPolicy,
    /// Hint files: written when one saves at least this many bytes of
    /// reading at open (`None`: neither read nor written; hidden).
    pub(crate) hint_min: Option<u64>,
}

impl FileConfig {
    /// The log at `path`, with the defaults (`sync=periodic`, `compact_ratio=50`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileConfig {
            path: path.into(),
            sync: SyncPolicy::default(),
            compact_ratio: DEFAULT_COMPACT_RATIO,
            evict: EvictPolicy::default(),
            hint_min: Some(super::hint::DEFAULT_MIN_BYTES),
        }
    }

    /// When writes are forced to disk.
    pub fn sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Compacts when dead bytes pass `percent` of the log (clamped to 1..=99).
    pub fn compact_ratio(mut self, percent: u8) -> Self {
        self.compact_ratio = percent.clamp(1, 99);
        self
    }

    /// Which entries a bounded log evicts (`evict=fifo|clock` in the URL;
    /// clock by default): for measuring the policies, no stability promise.
    #[doc(hidden)]
    pub fn evict_policy(mut self, policy: EvictPolicy) -> Self {
        self.evict = policy;
        self
    }
}

impl FileConfig {
    /// Hint files (`hint=off` or `hint_min_bytes=N` in the URL): with
    /// `Some(n)`, written when one saves at least `n` bytes of reading at
    /// open (4 MiB by default); `None`: neither read nor written (the whole
    /// log is read at open). For tests and measurement, no stability promise.
    #[doc(hidden)]
    pub fn hint_min_bytes(mut self, min: Option<u64>) -> Self {
        self.hint_min = min;
        self
    }
}

impl BackendSpec for FileConfig {
    fn from_url(t: &Target<'_>) -> Result<(Self, CacheOptions)> {
        let (body, q) = split_query(t.rest);
        let path = local_path("file", body)?;
        let mut q = Query::parse("file", q)?;
        let mut options = q.common()?;
        options.bounds = q.bounds()?;
        let sync = match q.take("sync").as_deref() {
            None | Some("periodic") => SyncPolicy::Periodic,
            Some("batch") => SyncPolicy::Batch,
            Some("always") => SyncPolicy::Always,
            Some("never") => SyncPolicy::Never,
            Some(other) => {
                return Err(url_err(format!(
                    "file: sync={other:?} (use periodic, always, batch or never)"
                )));
            }
        };
        let compact_ratio = match q.take_u64("compact_ratio")? {
            None => DEFAULT_COMPACT_RATIO,
            Some(r) if (1..=99).contains(&r) => r as u8,
            Some(r) => return Err(url_err(format!("file: compact_ratio={r} (use 1..99)"))),
        };
        let evict = match q.take("evict").as_deref() {
            None | Some("clock") => EvictPolicy::Clock,
            Some("fifo") => EvictPolicy::Fifo,
            Some(other) => {
                return Err(url_err(format!("file: evict={other:?} (use clock or fifo)")));
            }
        };
        let hint_min = match q.take("hint").as_deref() {
            None | Some("on") => q
                .take_u64("hint_min_bytes")?
                .or(Some(super::hint::DEFAULT_MIN_BYTES)),
            Some("off") => None,
            Some(other) => {
                return Err(url_err(format!("file: hint={other:?} (use on or off)")));
            }
        };
        let [b0, b1, b2] = crate::url::BOUND_OPTIONS;
        let known = ["sync", "compact_ratio", "evict", "hint", "hint_min_bytes", b0, b1, b2];
        q.finish(&known, t)?;
        let config = FileConfig {
            path,
            sync,
            compact_ratio,
            evict,
            hint_min,
        };
        Ok((config, options))
    }

    fn local_files(&self) -> Vec<std::path::PathBuf> {
        crate::backends::with_suffixes(&self.path, &["", ".lock", ".hint"])
    }

    async fn open(self, options: CacheOptions) -> Result<Arc<dyn Cache>> {
        // Opening reads the whole log: off the async workers.
        open_blocking(move || FileCache::open(self, options)).await
    }
}
