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
//! (tracing spans and metrics per operation), [`readthrough`]
//! (`get_or_set` with single-flight), [`tiered`] (an in-process L1 over any
//! backend, `l1=N` in any URL), [`error`].
#![warn(missing_docs)]

pub mod backends;
pub mod blocking;
pub mod cache;
pub mod error;
pub mod layer;
pub mod observe;
pub mod readthrough;
pub mod records;
pub mod tiered;
pub mod url;
pub mod writer;

pub use cache::{
    Cache, CacheExt, CacheFuture, CacheOptions, Capabilities, Counters, Entry, EntryStream,
    KeyStream, LockMode, ReadThroughOptions, Stats, ValueTtl,
};
pub use error::{Error, ErrorKind, Result};
pub use layer::Layer;
pub use readthrough::{FactoryError, FailSafeOptions, Fill, Got, Handle, ReadThroughStats};

#[doc(hidden)]
pub use backends::bench_support;

/// Opens a cache from a URL such as `memory://`, `sqlite:data/cache.sqlite3`,
/// `file:data/cache.jsonl`,
/// `redis://127.0.0.1:6379` or `memcached://127.0.0.1:11211`, as a
/// [`Handle`]: the [`Cache`] (through `Deref`) plus read-through
/// ([`Handle::get_or_set`]) with the URL's `lock`, `lease_ttl`,
/// `factory_timeout`, `ttl_jitter` and fail-safe options (`fail_safe`,
/// `fail_safe_max`, `fail_safe_throttle`, `soft_timeout`, `refresh_ahead`:
/// values then go through the [`readthrough::envelope`] layer).
pub async fn open(url: &str) -> Result<Handle> {
    open_with(url, CacheOptions::default()).await
}

/// Like [`open`], with options that override the URL's query string.
/// With [`CacheOptions::observe`] the cache comes wrapped in the
/// [`observe`] layer (spans, and metrics with the `metrics` feature).
pub async fn open_with(url: &str, options: CacheOptions) -> Result<Handle> {
    let parsed = url::parse(url)?;
    let observe = options.observe || parsed.options.observe;
    let namespace = options
        .namespace
        .clone()
        .or_else(|| parsed.options.namespace.clone());
    let default_ttl = options.default_ttl.or(parsed.options.default_ttl);
    let rt = options
        .read_through
        .clone()
        .or(&parsed.options.read_through);
    check_read_through(&rt)?;
    rt.fail_safe.check()?;
    let cache = open_parsed(parsed, options).await?;
    let cache = if observe {
        observe::instrument(cache, namespace.as_deref())
    } else {
        cache
    };
    let config = readthrough::Config::from_options(&rt, default_ttl, cache.capabilities().shared);
    Ok(Handle::with_config(cache, config))
}

/// Opens the cache a parsed URL describes, with its tier when the URL asks
/// for one (`l1=...`); `overrides` win over the URL's options. No observe
/// layer and no [`Handle`]: [`open_with`] adds those.
pub async fn open_parsed(
    parsed: url::ParsedUrl,
    overrides: CacheOptions,
) -> Result<std::sync::Arc<dyn Cache>> {
    let tier = parsed.tier.clone();
    let backend = parsed.backend.clone();
    let options = backends::merged_options(&parsed, overrides.clone());
    let l2 = backends::open_parsed(parsed, overrides).await?;
    match tier {
        None => Ok(l2),
        Some(tier) => tiered::wrap(l2, tier, &backend, &options).await,
    }
}

/// Zero lease or factory limits given in code (the URL parser refuses them
/// itself) would make every lease or factory fail at once.
fn check_read_through(rt: &ReadThroughOptions) -> Result<()> {
    for (name, d) in [
        ("lease_ttl", rt.lease_ttl),
        ("factory_timeout", rt.factory_timeout),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            let msg = format!("{name} must be greater than zero");
            return Err(Error::new(ErrorKind::InvalidInput, msg));
        }
    }
    Ok(())
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
