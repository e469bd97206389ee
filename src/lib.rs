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
//! Modules, from the bottom up: [`error`]; [`cache`] (the trait, options,
//! stats); [`url`] (the URL pieces every backend's parser uses) and
//! [`mod@lock`] (a named lock over any cache);
//! [`backends`] (one module per backend, and the registry); [`layer`] (the
//! forwarding base of layers) and the layers: [`tiered`] (an in-process L1
//! over any backend, `l1=N`), [`readthrough`] (`get_or_set` with
//! single-flight; fail-safe's envelope), [`observe`] (spans and metrics),
//! [`compress`] (value compression, `compress=zstd|zlib`);
//! [`mod@open`] (a whole URL into a stack of layers: [`Stack`]); then
//! [`records`] (streamed input), [`writer`] (bulk fan-out) and
//! [`blocking`] (a sync facade). docs/ARCHITECTURE.md has the table, and
//! `tests/layering.rs` holds the code to it.
// docs.rs (and CI, with `--cfg docsrs`) marks feature-gated items.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
// No unsafe code but the L1's clock reads (src/tiered/l1.rs), each allowed
// where it stands with its SAFETY comment.
#![deny(unsafe_code)]
// Short functions everywhere (clippy.toml: at most 80 lines).
#![warn(clippy::too_many_lines)]

pub mod backends;
pub mod blocking;
pub mod cache;
pub mod compress;
pub mod error;
pub mod layer;
pub mod lock;
pub mod observe;
pub mod open;
pub mod readthrough;
pub mod records;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod tiered;
pub mod url;
pub mod writer;

pub use cache::{
    Bounds, Cache, CacheExt, CacheFuture, CacheOptions, Capabilities, Counters, Entry, EntryStream,
    INTERNAL_PREFIX, KeyStream, Stats, ValueTtl,
};
pub use error::{Error, ErrorKind, Result};
pub use layer::Layer;
pub use lock::Lock;
pub use open::{Stack, open, open_with};
pub use readthrough::{
    FactoryError, FailSafeOptions, Fill, Got, Handle, LockMode, ReadThroughOptions,
    ReadThroughStats,
};

#[doc(hidden)]
pub use backends::bench_support;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
