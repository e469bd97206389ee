//! # unicache
//!
//! One cache interface over many backends: an in-process memory cache, SQLite
//! files, an append-only JSON-lines file log, Redis (single server and
//! cluster) and memcached, all behind the object-safe [`Cache`] trait and
//! chosen at run time from a URL.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> unicache::Result<()> {
//! use unicache::CacheExt;
//!
//! let cache = unicache::open("memory://?capacity=1000").await?;
//! cache.set("user:1", br#"{"name":"Ada"}"#, None).await?;
//! let name: Option<serde_json::Value> = cache.get_json("user:1").await?;
//! assert_eq!(name.unwrap()["name"], "Ada");
//! # Ok(()) }
//! ```
//!
//! Modules: [`cache`] (the trait, options, stats), [`url`] (URL parsing),
//! [`backends`] (one module per backend), [`records`] (streamed input),
//! [`writer`] (bulk fan-out), [`blocking`] (a sync facade), [`observe`]
//! (tracing spans and metrics per operation), [`tiered`] (an in-process L1
//! over any backend, `l1=N` in any URL), [`error`].
#![warn(missing_docs)]

pub mod backends;
pub mod blocking;
pub mod cache;
pub mod error;
pub mod observe;
pub mod records;
pub mod tiered;
pub mod url;
pub mod writer;

use std::sync::Arc;

pub use cache::{
    Cache, CacheExt, CacheFuture, CacheOptions, Capabilities, Counters, Entry, EntryStream,
    KeyStream, Stats, ValueTtl,
};
pub use error::{Error, ErrorKind, Result};

#[doc(hidden)]
pub use backends::bench_support;

/// Opens a cache from a URL such as `memory://`, `sqlite:data/cache.sqlite3`,
/// `file:data/cache.jsonl`,
/// `redis://127.0.0.1:6379` or `memcached://127.0.0.1:11211`.
pub async fn open(url: &str) -> Result<Arc<dyn Cache>> {
    open_with(url, CacheOptions::default()).await
}

/// Like [`open`], with options that override the URL's query string.
/// With [`CacheOptions::observe`] the cache comes wrapped in the
/// [`observe`] layer (spans, and metrics with the `metrics` feature).
pub async fn open_with(url: &str, options: CacheOptions) -> Result<Arc<dyn Cache>> {
    let parsed = url::parse(url)?;
    let observe = options.observe || parsed.options.observe;
    let namespace = options
        .namespace
        .clone()
        .or_else(|| parsed.options.namespace.clone());
    let cache = backends::open_parsed(parsed, options).await?;
    Ok(if observe {
        observe::instrument(cache, namespace.as_deref())
    } else {
        cache
    })
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
