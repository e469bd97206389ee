//! A tiered cache: an in-process L1 (the memory backend, bounded, with its
//! own TTL cap) in front of any backend (L2), with invalidation across
//! processes.
//!
//! - **Reads**: an L1 hit returns at once; a miss reads L2 with its
//!   remaining TTL ([`Cache::get_with_ttl`]) and fills L1 for
//!   `min(L1 cap, L2 remaining)`, counted from before the L2 request, so L1
//!   never keeps an entry longer than L2 does. `get_many` sends all L1
//!   misses to L2 in one call.
//! - **Writes** go to L2 first, then update (`set`, `add`) or evict
//!   (`delete`, `incr`, `touch`) L1 and tell the other processes (a Redis
//!   L2 opened from the same URL tells them itself, in the write's round
//!   trip). An L2 error after which the write may have landed (anything but
//!   a refused argument) evicts the keys and tells the other processes; the
//!   whole call stays within about one response timeout.
//! - **Invalidation** ([`Invalidation`]): on Redis, key-only pub/sub messages
//!   (sharded on a cluster) and optionally the servers' client tracking
//!   (one connection per master on a cluster); see `backplane`. Without a
//!   backplane (memcached, SQLite, file) another process's write is seen when the L1 copy expires: staleness is bounded
//!   by the L1 TTL cap (`l1_ttl`, 30 s by default).
//!
//! URL form: any cache URL plus `l1=<entries>` (and optionally
//! `l1_ttl=<dur>`, `l1_max_bytes=<n>`, `l1_invalidation=pubsub|tracking|none`),
//! e.g. `redis://127.0.0.1:6379?namespace=app&l1=10000&l1_ttl=30s`.

mod config;
pub use config::{DEFAULT_L1_CAPACITY, DEFAULT_L1_TTL, Invalidation, TierConfig};
pub(crate) use config::{URL_OPTIONS, claims, from_url_parts};

#[cfg(all(feature = "memory", feature = "redis"))]
mod backplane;
#[cfg(feature = "memory")]
mod cache_impl;
#[cfg(all(feature = "memory", feature = "redis"))]
mod cluster_tracking;
#[cfg(feature = "memory")]
mod l1;
#[cfg(feature = "memory")]
mod stats;
#[cfg(all(feature = "memory", feature = "redis"))]
mod tracking;

use std::sync::Arc;

use crate::backends::BackendConfig;
use crate::cache::{Cache, CacheOptions};
use crate::error::{Error, ErrorKind, Result};

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use imp::{TieredBuilder, TieredCache};

/// How coarsely `l2` counts TTLs: a remaining TTL it reports may be this
/// much longer than the entry really has left, so L1 keeps an entry that
/// much less. memcached counts whole seconds off a clock it advances once
/// a second (a key set for 2 s goes after 1-2 s; a remaining "1" is 0-1 s);
/// Redis counts milliseconds (`PX`/`PTTL`); SQLite and the file log keep
/// exact expiry times, and the memory cache is in process. (Known by the
/// backend's name: `Capabilities` has no field for it yet.)
pub(crate) fn ttl_granularity(l2: &dyn Cache) -> std::time::Duration {
    match l2.backend() {
        "memcached" => std::time::Duration::from_secs(1),
        "redis" => std::time::Duration::from_millis(1),
        _ => std::time::Duration::ZERO,
    }
}

/// Puts the L1 `tier` describes in front of `l2`, opened from `backend`
/// (a Redis L2 gets the backplane).
#[allow(unused_variables)]
pub(crate) async fn wrap(
    l2: Arc<dyn Cache>,
    tier: TierConfig,
    backend: &BackendConfig,
    options: &CacheOptions,
) -> Result<Arc<dyn Cache>> {
    #[cfg(feature = "memory")]
    {
        let b = TieredCache::builder(tier).options(options);
        #[cfg(feature = "redis")]
        let b = match backend {
            BackendConfig::Redis(r) => b.backplane(r.clone()),
            _ => b,
        };
        Ok(Arc::new(b.build(l2).await?))
    }
    #[cfg(not(feature = "memory"))]
    Err(Error::new(
        ErrorKind::FeatureDisabled,
        "a tiered cache's L1 is the memory backend, which was compiled out; rebuild with `--features memory`",
    ))
}

#[cfg(feature = "memory")]
mod imp {
    use super::*;
    use std::time::Duration;

    #[cfg(feature = "redis")]
    use super::backplane::{Backplane, Msg};
    use super::l1::L1;
    #[cfg(feature = "redis")]
    use super::stats::add;

    /// Builds a [`TieredCache`] in code.
    #[derive(Debug, Clone)]
    pub struct TieredBuilder {
        tier: TierConfig,
        options: CacheOptions,
        #[cfg(feature = "redis")]
        redis: Option<crate::backends::redis::RedisConfig>,
    }

    impl TieredBuilder {
        /// The L2's namespace (names the backplane channel and the tracking
        /// prefix) and default TTL (applied to L1 when `set` gets `None`).
        pub fn options(mut self, options: &CacheOptions) -> Self {
            self.options = options.clone();
            self
        }

        /// The Redis (server or cluster) that carries invalidations; the
        /// L2's own server, normally.
        #[cfg(feature = "redis")]
        #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
        pub fn backplane(mut self, cfg: crate::backends::redis::RedisConfig) -> Self {
            self.redis = Some(cfg);
            self
        }

        /// Builds the tier over `l2`; subscribes first when there is a backplane.
        pub async fn build(self, l2: Arc<dyn Cache>) -> Result<TieredCache> {
            // A replica may not have a write whose invalidation this tier
            // has already seen: its read could fill L1 with the old value
            // for good (until l1_ttl). So L1 never fills from replicas.
            #[cfg(feature = "redis")]
            if let Some(r) = &self.redis
                && r.reads_from_replicas()
            {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "l1 over read_from=replica|nearest: a replica read may predate an \
                     invalidation the tier has seen; use read_from=master with l1",
                ));
            }
            let mode = self.mode(&*l2)?;
            let grain = ttl_granularity(&*l2);
            let l1 = Arc::new(L1::new(&self.tier, mode == Invalidation::None, grain));
            #[cfg(feature = "redis")]
            let backplane = match (&self.redis, mode) {
                (Some(r), Invalidation::PubSub | Invalidation::Tracking) => Some(
                    Backplane::start(r, self.options.namespace.as_deref(), mode, l1.clone())
                        .await?,
                ),
                _ => None,
            };
            // A Redis L2 opened from this very configuration publishes its
            // writes itself, as the backplane's origin (see `invalidation`).
            #[cfg(feature = "redis")]
            let l2_publishes = backplane.as_ref().is_some_and(|b| b.l2_publishes);
            Ok(TieredCache {
                l1,
                l2,
                default_ttl: self.options.default_ttl,
                mode,
                #[cfg(feature = "redis")]
                backplane,
                #[cfg(feature = "redis")]
                l2_publishes,
            })
        }

        fn mode(&self, l2: &dyn Cache) -> Result<Invalidation> {
            #[cfg(feature = "redis")]
            let redis = self.redis.is_some();
            #[cfg(not(feature = "redis"))]
            let redis = false;
            match self.tier.invalidation {
                None if redis => Ok(Invalidation::PubSub),
                None | Some(Invalidation::None) => Ok(Invalidation::None),
                Some(i) if redis => Ok(i),
                Some(i) => Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "l1_invalidation={} needs a Redis L2; {} has no backplane: use none \
                         (L1's TTL cap, l1_ttl, bounds staleness)",
                        if i == Invalidation::Tracking {
                            "tracking"
                        } else {
                            "pubsub"
                        },
                        l2.backend()
                    ),
                )),
            }
        }
    }

    /// An L1 memory cache in front of any cache (see [the module](super)).
    pub struct TieredCache {
        pub(super) l1: Arc<L1>,
        pub(super) l2: Arc<dyn Cache>,
        pub(super) default_ttl: Option<Duration>,
        pub(super) mode: Invalidation,
        #[cfg(feature = "redis")]
        pub(super) backplane: Option<Backplane>,
        /// L2 publishes its own writes (in their round trip): a successful
        /// write needs no message of the tier's.
        #[cfg(feature = "redis")]
        pub(super) l2_publishes: bool,
    }

    impl std::fmt::Debug for TieredCache {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TieredCache")
                .field("l2", &self.l2)
                .field("invalidation", &self.mode)
                .finish_non_exhaustive()
        }
    }

    impl TieredCache {
        /// A builder for an L1 described by `tier`.
        pub fn builder(tier: TierConfig) -> TieredBuilder {
            TieredBuilder {
                tier,
                options: CacheOptions::new(),
                #[cfg(feature = "redis")]
                redis: None,
            }
        }

        /// The cache under the L1.
        pub fn l2(&self) -> &Arc<dyn Cache> {
            &self.l2
        }

        /// Whether L1 is serving: no backplane, or its subscription is up.
        pub fn l1_live(&self) -> bool {
            self.l1.is_live()
        }

        /// Tells the other processes that `keys` changed (or, with no
        /// keys, that the namespace was cleared), within what is left of
        /// the response timeout of a write that began at `started`. A
        /// failure is counted and logged, not returned (the write's own
        /// outcome is); the message is sent again in the background.
        pub(super) async fn announce(
            &self,
            keys: &[&str],
            clear: bool,
            started: std::time::Instant,
        ) {
            #[cfg(feature = "redis")]
            if let Some(b) = &self.backplane {
                let msg = if clear { Msg::Clear } else { Msg::Keys(keys) };
                match b.publish(msg, started).await {
                    Ok(()) => add(
                        &self.l1.stats.invalidations_sent,
                        if clear { 1 } else { keys.len() as u64 },
                    ),
                    Err(e) => {
                        add(&self.l1.stats.publish_errors, 1);
                        tracing::warn!("tiered cache: invalidation not sent: {e}");
                    }
                }
            }
            let _ = (keys, clear, started);
        }

        /// After a successful write: [`Self::announce`], unless L2 has
        /// published it already.
        pub(super) async fn announce_ok(
            &self,
            keys: &[&str],
            clear: bool,
            started: std::time::Instant,
        ) {
            #[cfg(feature = "redis")]
            if self.l2_publishes {
                if self.backplane.is_some() {
                    let n = if clear { 1 } else { keys.len() as u64 };
                    add(&self.l1.stats.invalidations_sent, n);
                }
                return;
            }
            self.announce(keys, clear, started).await
        }

        /// The invalidation mode's name, for stats.
        pub(super) fn mode_name(&self) -> &'static str {
            match self.mode {
                Invalidation::None => "none",
                Invalidation::PubSub => "pubsub",
                Invalidation::Tracking => "tracking",
            }
        }
    }
}
