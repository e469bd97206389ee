//! One module per backend, each behind its cargo feature, and the registry
//! that maps URL schemes to them: each backend parses its own URL options
//! into its own config (`BackendSpec`) and opens from it. Adding a backend
//! is its module, its feature and one line in `registry!`'s invocation
//! below (docs/ARCHITECTURE.md, "Adding a backend").

use std::future::Future;
use std::sync::Arc;

use crate::cache::{Cache, CacheOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::url::{ParsedUrl, Target};

/// What each backend's config provides to the registry.
#[allow(dead_code)] // unused only with every backend compiled out
pub(crate) trait BackendSpec: Sized + Into<BackendConfig> {
    /// Parses the URL (after the scheme) into this config and the options
    /// every backend takes (`namespace`, `ttl`).
    fn from_url(target: &Target<'_>) -> Result<(Self, CacheOptions)>;
    /// Opens the cache this config describes.
    fn open(self, options: CacheOptions) -> impl Future<Output = Result<Arc<dyn Cache>>> + Send;
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
        examples [$($example:literal),+], local: $local:literal; )+) => {
        $( #[cfg(feature = $feature)] pub mod $module; )+

        /// Backend-specific settings from a URL: each backend's own config.
        #[derive(Clone, PartialEq, Eq, Debug)]
        #[non_exhaustive]
        pub enum BackendConfig {
            $(
                #[cfg(feature = $feature)]
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
                #[cfg(feature = $feature)]
                parse: Some(parse_as::<$module::$config>),
                #[cfg(not(feature = $feature))]
                parse: None,
            },
        )+];

        #[allow(unused_variables)]
        async fn open_config(config: BackendConfig, options: CacheOptions) -> Result<Arc<dyn Cache>> {
            match config {
                $( #[cfg(feature = $feature)] BackendConfig::$variant(c) => c.open(options).await, )+
            }
        }
    };
}

registry! {
    memory: Memory(MemoryConfig), "memory", ["memory", "mem"], examples ["memory://"], local: true;
    file: File(FileConfig), "file", ["file"], examples ["file:PATH"], local: true;
    sqlite: Sqlite(SqliteConfig), "sqlite", ["sqlite", "sqlite3"], examples ["sqlite:PATH"], local: true;
    redis: Redis(RedisConfig), "redis",
        ["redis", "rediss", "redis+cluster", "rediss+cluster", "redis-cluster"],
        examples ["redis://host:port", "redis+cluster://h1:p1,h2:p2"], local: false;
    memcached: Memcached(MemcachedConfig), "memcached", ["memcached", "memcache"],
        examples ["memcached://h1:p1"], local: false;
}

#[doc(hidden)]
pub mod bench_support;

/// The backend a scheme (lower case) names, compiled in or not.
pub(crate) fn lookup(scheme: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.schemes.contains(&scheme))
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

/// Opens the backend a parsed URL describes; `overrides` win over the URL's
/// options. The URL's tier (`l1=...`) is not applied here: that is a layer
/// above the backends ([`crate::open_parsed`]).
pub async fn open_parsed(url: ParsedUrl, overrides: CacheOptions) -> Result<Arc<dyn Cache>> {
    let options = merged_options(&url, overrides);
    open_config(url.backend, options).await
}

/// The URL's options with `overrides` applied.
pub(crate) fn merged_options(url: &ParsedUrl, overrides: CacheOptions) -> CacheOptions {
    let mut options = url.options.clone();
    if overrides.namespace.is_some() {
        options.namespace = overrides.namespace;
    }
    if overrides.default_ttl.is_some() {
        options.default_ttl = overrides.default_ttl;
    }
    // Either side asking for an existing store is enough.
    options.must_exist |= overrides.must_exist;
    options
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

#[cfg(test)]
mod tests {
    /// Only meaningful in a build without the sqlite feature (CI runs one).
    #[cfg(not(feature = "sqlite"))]
    #[tokio::test]
    async fn compiled_out_backend_names_its_feature() {
        let e = crate::open("sqlite:x.db").await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::FeatureDisabled);
        assert!(e.to_string().contains("--features sqlite"), "{e}");
    }
}
