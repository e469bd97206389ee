//! One module per backend, each behind its cargo feature, and the registry
//! that maps URL schemes and bare names to them: each backend parses its
//! own URL options into its own config (`BackendSpec`), names its local
//! files, and opens from it. Adding a backend is its module, its feature
//! and one line in `registry!`'s invocation below (docs/ARCHITECTURE.md,
//! "Adding a backend"). The layers above and whole-URL parsing
//! ([`mod@crate::open`]) are not known here.

use std::future::Future;
use std::sync::Arc;

use crate::cache::{Cache, CacheOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::url::Target;

/// What each backend's config provides to the registry.
#[allow(dead_code)] // unused only with every backend compiled out
pub(crate) trait BackendSpec: Sized + Into<BackendConfig> {
    /// Parses the URL (after the scheme) into this config and the options
    /// every backend takes (`namespace`, `ttl`).
    fn from_url(target: &Target<'_>) -> Result<(Self, CacheOptions)>;
    /// Opens the cache this config describes.
    fn open(self, options: CacheOptions) -> impl Future<Output = Result<Arc<dyn Cache>>> + Send;
    /// The files a local store keeps (the store first); none for servers.
    fn local_files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
}

/// What a backend's bare name (`"sqlite"` in the seed's config) opens.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bare {
    /// This URL.
    Url(&'static str),
    /// A store in the caller's directory: the scheme and the file name.
    File(&'static str, &'static str),
}

type ParseFn = fn(&Target<'_>) -> Result<(BackendConfig, CacheOptions)>;

// With every backend compiled out `BackendConfig` is empty and this is unused.
#[allow(dead_code, unreachable_code, unused_variables)]
fn parse_as<C: BackendSpec>(target: &Target<'_>) -> Result<(BackendConfig, CacheOptions)> {
    let (config, options) = C::from_url(target)?;
    Ok((config.into(), options))
}

/// One backend in the registry.
pub(crate) struct Entry {
    /// Its name, which is also its cargo feature.
    pub name: &'static str,
    /// The URL schemes it answers to (lower case).
    pub schemes: &'static [&'static str],
    /// URL forms shown when a scheme is unknown.
    pub examples: &'static [&'static str],
    /// A local store: its URLs never carry credentials.
    pub local: bool,
    /// What the backend's bare name opens.
    pub bare: Bare,
    /// `None` when the backend was compiled out.
    parse: Option<ParseFn>,
}

impl Entry {
    /// Parses a URL of this backend, or says which feature to enable.
    pub fn parse(&self, target: &Target<'_>) -> Result<(BackendConfig, CacheOptions)> {
        match self.parse {
            Some(f) => f(target),
            None => Err(disabled(self.name, self.name)),
        }
    }
}

/// Declares the backend modules, [`BackendConfig`], the scheme registry and
/// the dispatch to each backend's `open`: one line per backend.
macro_rules! registry {
    ($( $module:ident: $variant:ident($config:ident), $feature:literal, [$($scheme:literal),+],
        examples [$($example:literal),+], local: $local:literal, bare: $bare:expr; )+) => {
        $(
            #[cfg(feature = $feature)]
            #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
            pub mod $module;
        )+

        /// Backend-specific settings from a URL: each backend's own config.
        #[derive(Clone, PartialEq, Eq, Debug)]
        #[non_exhaustive]
        pub enum BackendConfig {
            $(
                #[cfg(feature = $feature)]
                #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
                #[doc = concat!("The `", $feature, "` backend's settings.")]
                $variant($module::$config),
            )+
        }

        $(
            #[cfg(feature = $feature)]
            impl From<$module::$config> for BackendConfig {
                fn from(c: $module::$config) -> Self {
                    BackendConfig::$variant(c)
                }
            }
        )+

        const REGISTRY: &[Entry] = &[$(
            Entry {
                name: $feature,
                schemes: &[$($scheme),+],
                examples: &[$($example),+],
                local: $local,
                bare: $bare,
                #[cfg(feature = $feature)]
                parse: Some(parse_as::<$module::$config>),
                #[cfg(not(feature = $feature))]
                parse: None,
            },
        )+];

        /// Opens the backend `config` describes, with `options`. The layers
        /// above it are [`mod@crate::open`]'s.
        #[allow(unused_variables)]
        pub async fn open(config: BackendConfig, options: CacheOptions) -> Result<Arc<dyn Cache>> {
            match config {
                $( #[cfg(feature = $feature)] BackendConfig::$variant(c) => c.open(options).await, )+
            }
        }

        impl BackendConfig {
            /// The files a local store keeps, the store itself first
            /// (SQLite: its `-wal`, `-shm`, `-journal`; the file log: its `.lock`
            /// and `.hint`); empty for servers.
            #[allow(unreachable_code)]
            pub fn local_files(&self) -> Vec<std::path::PathBuf> {
                match self {
                    $( #[cfg(feature = $feature)] BackendConfig::$variant(c) => c.local_files(), )+
                }
            }
        }
    };
}

registry! {
    memory: Memory(MemoryConfig), "memory", ["memory", "mem"], examples ["memory://"],
        local: true, bare: Bare::Url("memory://");
    file: File(FileConfig), "file", ["file"], examples ["file:PATH"],
        local: true, bare: Bare::File("file", "cache_file.jsonl");
    sqlite: Sqlite(SqliteConfig), "sqlite", ["sqlite", "sqlite3"], examples ["sqlite:PATH"],
        local: true, bare: Bare::File("sqlite", "cache.sqlite3");
    redis: Redis(RedisConfig), "redis",
        ["redis", "rediss", "redis+cluster", "rediss+cluster", "redis-cluster",
            "redis+sentinel", "rediss+sentinel"],
        examples ["redis://host:port", "redis+cluster://h1:p1,h2:p2",
            "redis+sentinel://s1:p1,s2:p2/MASTER"],
        local: false, bare: Bare::Url("redis://127.0.0.1:6379");
    memcached: Memcached(MemcachedConfig), "memcached", ["memcached", "memcache"],
        examples ["memcached://h1:p1"], local: false, bare: Bare::Url("memcached://127.0.0.1:11211");
}

#[doc(hidden)]
pub mod bench_support;

/// The backend a scheme (lower case) names, compiled in or not.
pub(crate) fn lookup(scheme: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.schemes.contains(&scheme))
}

/// The backend a bare name (its registry name, any case) names.
pub(crate) fn lookup_name(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

/// Every backend's bare name, for messages.
pub(crate) fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// The backends compiled into this build (their names, which are also
/// their cargo features), in the registry's order: what `unicache
/// --version` lists.
pub fn enabled() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|e| e.parse.is_some())
        .map(|e| e.name)
        .collect()
}

/// Every backend's URL forms, for messages.
pub(crate) fn examples() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .flat_map(|e| e.examples.iter().copied())
        .collect()
}

/// Runs synchronous local I/O (SQLite, the file log) from async code: on a
/// multi-threaded tokio runtime the worker is handed off first
/// (`block_in_place`) so other tasks go on; anywhere else it runs inline.
#[allow(dead_code)]
pub(crate) fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[allow(dead_code)]
fn disabled(backend: &str, feature: &str) -> Error {
    Error::new(
        ErrorKind::FeatureDisabled,
        format!("the {backend} backend was compiled out; rebuild with `--features {feature}`"),
    )
}

/// `path` with each suffix appended (`""`: the path itself).
#[allow(dead_code)] // only the local backends use it
pub(crate) fn with_suffixes(path: &std::path::Path, suffixes: &[&str]) -> Vec<std::path::PathBuf> {
    suffixes
        .iter()
        .map(|suffix| {
            let mut s = path.as_os_str().to_os_string();
            s.push(suffix);
            std::path::PathBuf::from(s)
        })
        .collect()
}

/// Runs `open` (files, schema) off the async workers.
#[allow(dead_code)]
pub(crate) async fn open_blocking<C: Cache + 'static>(
    open: impl FnOnce() -> Result<C> + Send + 'static,
) -> Result<Arc<dyn Cache>> {
    let c = tokio::task::spawn_blocking(open)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, "open task failed").set_source(e))??;
    Ok(Arc::new(c))
}

/// `after` from now, or `None` (no deadline) when that is so far off that
/// the timer would overflow the clock: tokio rounds a deadline up to its
/// next millisecond, so one within a millisecond of `Instant`'s limit
/// panicked ("overflow when adding duration to instant"); a second of room
/// covers it.
#[cfg(any(feature = "memcached", feature = "redis"))]
pub(crate) fn timer_deadline(after: std::time::Duration) -> Option<std::time::Instant> {
    let now = std::time::Instant::now();
    now.checked_add(after.saturating_add(std::time::Duration::from_secs(1)))?;
    now.checked_add(after)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(any(feature = "memcached", feature = "redis"))]
    fn deadlines_within_a_second_of_the_clocks_limit_are_none() {
        use super::timer_deadline;
        use std::time::Duration;
        assert!(timer_deadline(Duration::from_secs(5)).is_some());
        assert_eq!(timer_deadline(Duration::MAX), None);
        // The furthest `after` the clock takes from now, less half a
        // second: it fits, but tokio's rounding up might not. Whole
        // seconds first.
        let now = std::time::Instant::now();
        let (mut lo, mut hi) = (0u64, u64::MAX);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if now.checked_add(Duration::from_secs(mid)).is_some() {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        // Then the nanoseconds left below the limit's last second.
        let (mut nlo, mut nhi) = (0u32, 999_999_999u32);
        while nlo < nhi {
            let mid = nlo + (nhi - nlo).div_ceil(2);
            if now.checked_add(Duration::new(lo, mid)).is_some() {
                nlo = mid;
            } else {
                nhi = mid - 1;
            }
        }
        let edge = Duration::new(lo, nlo).saturating_sub(Duration::from_millis(500));
        assert!(now.checked_add(edge).is_some());
        assert_eq!(timer_deadline(edge), None, "half a second from the limit");
    }

    /// Only meaningful in a build without the sqlite feature (CI runs one).
    #[cfg(not(feature = "sqlite"))]
    #[tokio::test]
    async fn compiled_out_backend_names_its_feature() {
        let e = crate::open("sqlite:x.db").await.unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::FeatureDisabled);
        assert!(e.to_string().contains("--features sqlite"), "{e}");
    }
}
