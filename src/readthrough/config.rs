//! The read-through settings of one handle, resolved from
//! [`ReadThroughOptions`] and the cache's default TTL.

use std::time::Duration;

use super::failsafe::FailSafe;
use crate::cache::{LockMode, ReadThroughOptions};
use crate::error::Result;

/// How long a cross-process lease lives when `lease_ttl` is not set.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Resolved read-through settings of a [`crate::Handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Take a cross-process lease on a miss (`lock=lease` on a shared cache).
    pub lease: bool,
    /// Lifetime of a lease.
    pub lease_ttl: Duration,
    /// Hard limit on one factory run.
    pub factory_timeout: Option<Duration>,
    /// Bound of the random extra added to stored TTLs.
    pub ttl_jitter: Option<Duration>,
    /// The cache's default TTL, for calls with `ttl: None` (jitter is added
    /// to it too).
    pub default_ttl: Option<Duration>,
    /// Fail-safe, soft timeout and refresh-ahead.
    pub fail_safe: FailSafe,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease: false,
            lease_ttl: DEFAULT_LEASE_TTL,
            factory_timeout: None,
            ttl_jitter: None,
            default_ttl: None,
            fail_safe: FailSafe::default(),
        }
    }
}

impl Config {
    /// Settings from options; `shared` is whether several processes can use
    /// the cache ([`crate::Capabilities::shared`]): a lease on a cache only
    /// this process sees would add round trips and protect nothing.
    pub fn from_options(
        rt: &ReadThroughOptions,
        default_ttl: Option<Duration>,
        shared: bool,
    ) -> Self {
        Config {
            lease: shared && rt.lock == Some(LockMode::Lease),
            lease_ttl: rt.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL),
            factory_timeout: rt.factory_timeout,
            ttl_jitter: rt.ttl_jitter.filter(|d| !d.is_zero()),
            default_ttl,
            fail_safe: FailSafe::from_options(&rt.fail_safe),
        }
    }

    /// The TTL to store a fresh value with: the call's (or the default),
    /// plus the jitter. Zero is refused before any factory runs.
    pub(crate) fn store_ttl(&self, ttl: Option<Duration>) -> Result<Option<Duration>> {
        let ttl = crate::cache::resolve_ttl(ttl, self.default_ttl)?;
        Ok(match (ttl, self.ttl_jitter) {
            (Some(t), Some(bound)) => Some(t.saturating_add(random_upto(bound))),
            (t, _) => t,
        })
    }
}

/// A uniformly random duration in `[0, bound]`, at millisecond resolution
/// for bounds over a millisecond.
pub(crate) fn random_upto(bound: Duration) -> Duration {
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn store_ttl_refuses_zero_and_jitters_within_bound() {
        let mut c = Config::default();
        let zero = c.store_ttl(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(zero.kind(), ErrorKind::InvalidInput);
        assert_eq!(c.store_ttl(None).unwrap(), None);
        c.ttl_jitter = Some(Duration::from_secs(2));
        let base = Duration::from_secs(60);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let t = c.store_ttl(Some(base)).unwrap().unwrap();
            assert!(t >= base && t <= base + Duration::from_secs(2), "{t:?}");
            seen.insert(t);
        }
        assert!(seen.len() > 100, "jitter is not random: {seen:?}");
        // No TTL (never expires) stays so: jitter only lengthens real TTLs.
        assert_eq!(c.store_ttl(None).unwrap(), None);
    }

    #[test]
    fn lease_only_on_shared_caches() {
        let o = ReadThroughOptions::new().lock(LockMode::Lease);
        assert!(Config::from_options(&o, None, true).lease);
        assert!(!Config::from_options(&o, None, false).lease);
        assert!(!Config::from_options(&ReadThroughOptions::new(), None, true).lease);
    }
}
