//! The settings of a `sqlite:PATH?busy_timeout=10s` cache, from its URL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::SqliteCache;
use crate::backends::{BackendSpec, open_blocking};
use crate::cache::{Cache, CacheOptions};
use crate::error::Result;
use crate::url::{Query, Target, local_path, split_query};

/// Default wait for another process's lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a `sqlite:PATH` cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// Database file.
    pub path: PathBuf,
    /// How long to wait for another process's lock (clamped to
    /// [`super::MAX_BUSY_TIMEOUT`]).
    pub busy_timeout: Duration,
}

impl SqliteConfig {
    /// The file at `path`, with the default busy timeout.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }

    /// Waits up to `d` for another process's lock.
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }
}

impl BackendSpec for SqliteConfig {
    fn from_url(t: &Target<'_>) -> Result<(Self, CacheOptions)> {
        let (body, q) = split_query(t.rest);
        let path = local_path("sqlite", body)?;
        let mut q = Query::parse("sqlite", q)?;
        let mut options = q.common()?;
        options.bounds = q.bounds()?;
        let busy_timeout = q
            .take_duration("busy_timeout")?
            .unwrap_or(DEFAULT_BUSY_TIMEOUT);
        let [b0, b1, b2] = crate::url::BOUND_OPTIONS;
        q.finish(&["busy_timeout", b0, b1, b2], t)?;
        Ok((SqliteConfig { path, busy_timeout }, options))
    }

    fn local_files(&self) -> Vec<std::path::PathBuf> {
        crate::backends::with_suffixes(&self.path, &["", "-wal", "-shm", "-journal"])
    }

    async fn open(self, options: CacheOptions) -> Result<Arc<dyn Cache>> {
        // Opening may create files and run the schema: off the async workers.
        open_blocking(move || SqliteCache::open(self, options)).await
    }
}
