//! One module per backend, each behind its cargo feature, and [`open_parsed`], the
//! factory that turns a parsed URL into an `Arc<dyn Cache>`.

#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "memcached")]
pub mod memcached;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::Arc;

use crate::cache::{Cache, CacheOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::url::{BackendConfig, ParsedUrl};

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

/// Opens the cache a parsed URL describes; `overrides` win over the URL's options.
pub async fn open_parsed(url: ParsedUrl, overrides: CacheOptions) -> Result<Arc<dyn Cache>> {
    let mut options = url.options.clone();
    if overrides.namespace.is_some() {
        options.namespace = overrides.namespace;
    }
    if overrides.default_ttl.is_some() {
        options.default_ttl = overrides.default_ttl;
    }
    // Either side asking for an existing store is enough.
    options.must_exist |= overrides.must_exist;
    match url.backend {
        #[cfg(feature = "memory")]
        BackendConfig::Memory {
            capacity,
            max_bytes,
        } => Ok(Arc::new(memory::MemoryCache::new(
            capacity, max_bytes, options,
        ))),
        #[cfg(not(feature = "memory"))]
        BackendConfig::Memory { .. } => Err(disabled("memory", "memory")),

        #[cfg(feature = "sqlite")]
        BackendConfig::Sqlite { path, busy_timeout } => {
            // Opening may create files and run the schema: keep it off the async workers.
            let c = tokio::task::spawn_blocking(move || {
                sqlite::SqliteCache::open(&path, busy_timeout, options)
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, "open task failed").set_source(e))??;
            Ok(Arc::new(c))
        }
        #[cfg(not(feature = "sqlite"))]
        BackendConfig::Sqlite { .. } => Err(disabled("sqlite", "sqlite")),

        #[cfg(feature = "file")]
        BackendConfig::File {
            path,
            sync,
            compact_ratio,
        } => {
            let c = tokio::task::spawn_blocking(move || {
                file::FileCache::open(&path, sync, compact_ratio, options)
            })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, "open task failed").set_source(e))??;
            Ok(Arc::new(c))
        }
        #[cfg(not(feature = "file"))]
        BackendConfig::File { .. } => Err(disabled("file", "file")),

        #[cfg(feature = "redis")]
        BackendConfig::Redis {
            nodes,
            cluster,
            connect_timeout,
            response_timeout,
            tls_ca,
        } => Ok(Arc::new(
            self::redis::RedisCache::connect(
                self::redis::RedisConfig {
                    nodes,
                    cluster,
                    endpoint: url.redacted.clone(),
                    connect_timeout,
                    response_timeout,
                    tls_ca,
                },
                options,
            )
            .await?,
        )),
        #[cfg(not(feature = "redis"))]
        BackendConfig::Redis { .. } => Err(disabled("redis", "redis")),

        #[cfg(feature = "memcached")]
        BackendConfig::Memcached {
            servers,
            connect_timeout,
            response_timeout,
        } => Ok(Arc::new(
            memcached::MemcachedCache::connect(
                servers,
                url.redacted.clone(),
                connect_timeout,
                response_timeout,
                options,
            )
            .await?,
        )),
        #[cfg(not(feature = "memcached"))]
        BackendConfig::Memcached { .. } => Err(disabled("memcached", "memcached")),
    }
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
