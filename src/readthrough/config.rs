//! The read-through layer's options: [`ReadThroughOptions`] as given (in
//! code or by the URL's `lock`, `lease_ttl`, `factory_timeout`,
//! `ttl_jitter` and fail-safe options, which this module parses), and
//! [`Config`], the settings of one handle resolved from them.

use std::time::Duration;

use super::failsafe::{self, FailSafe, FailSafeOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::url::{Query, url_err};

/// How concurrent `get_or_set` callers of one missing key are coordinated
/// beyond the in-process single-flight every handle does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockMode {
    /// Only callers of one handle (and its clones) share a factory run.
    #[default]
    Local,
    /// Also across processes: a lease key taken with [`crate::Cache::add`]
    /// (`lock=lease` in the URL).
    Lease,
}

/// Read-through options (`get_or_set`); `None` fields take the defaults
/// documented on [`crate::Handle`]. Options given in code win over the URL's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadThroughOptions {
    /// `lock=local|lease`.
    pub lock: Option<LockMode>,
    /// `lease_ttl=DUR`: how long a cross-process lease lives (default 10 s).
    pub lease_ttl: Option<Duration>,
    /// `factory_timeout=DUR`: a factory still running then fails with
    /// [`ErrorKind::Timeout`] for every waiter (default: no limit).
    pub factory_timeout: Option<Duration>,
    /// `ttl_jitter=DUR`: a random extra of up to this much on stored TTLs.
    pub ttl_jitter: Option<Duration>,
    /// `fail_safe`, `fail_safe_max`, `fail_safe_throttle`, `soft_timeout`,
    /// `refresh_ahead`.
    pub fail_safe: FailSafeOptions,
}

impl ReadThroughOptions {
    /// Options with nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the lock mode.
    pub fn lock(mut self, lock: LockMode) -> Self {
        self.lock = Some(lock);
        self
    }

    /// Sets the lease TTL.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// Sets the hard factory timeout.
    pub fn factory_timeout(mut self, timeout: Duration) -> Self {
        self.factory_timeout = Some(timeout);
        self
    }

    /// Sets the TTL jitter bound.
    pub fn ttl_jitter(mut self, bound: Duration) -> Self {
        self.ttl_jitter = Some(bound);
        self
    }

    /// Sets the fail-safe, soft-timeout and refresh-ahead options.
    pub fn fail_safe(mut self, o: FailSafeOptions) -> Self {
        self.fail_safe = o;
        self
    }

    /// These options, each unset field taken from `base`.
    pub fn or(self, base: &ReadThroughOptions) -> Self {
        ReadThroughOptions {
            lock: self.lock.or(base.lock),
            lease_ttl: self.lease_ttl.or(base.lease_ttl),
            factory_timeout: self.factory_timeout.or(base.factory_timeout),
            ttl_jitter: self.ttl_jitter.or(base.ttl_jitter),
            fail_safe: self.fail_safe.or(&base.fail_safe),
        }
    }
}

/// The URL options this layer reads (the envelope's fail-safe ones included).
pub const URL_OPTIONS: [&str; 9] = [
    "lock",
    "lease_ttl",
    "factory_timeout",
    "ttl_jitter",
    failsafe::URL_OPTIONS[0],
    failsafe::URL_OPTIONS[1],
    failsafe::URL_OPTIONS[2],
    failsafe::URL_OPTIONS[3],
    failsafe::URL_OPTIONS[4],
];

impl ReadThroughOptions {
    /// Takes this layer's options out of a URL's query.
    pub(crate) fn from_query(q: &mut Query) -> Result<Self> {
        let mut rt = ReadThroughOptions::new();
        rt.lock = match q.take("lock").as_deref() {
            None => None,
            Some("local") => Some(LockMode::Local),
            Some("lease") => Some(LockMode::Lease),
            Some(v) => {
                let msg = format!("{}: lock={v:?} (use local or lease)", q.scheme);
                return Err(url_err(msg));
            }
        };
        rt.lease_ttl = q.take_duration("lease_ttl")?;
        rt.factory_timeout = q.take_duration("factory_timeout")?;
        rt.ttl_jitter = q.take_duration("ttl_jitter")?;
        rt.fail_safe = FailSafeOptions::from_url(q)?;
        rt.check()
            .map_err(|e| url_err(format!("{}: {}", q.scheme, e.message())))?;
        Ok(rt)
    }

    /// Zero lease or factory limits would make every lease or factory fail
    /// at once; zero fail-safe durations would keep or throttle nothing.
    pub(crate) fn check(&self) -> Result<()> {
        for (name, d) in [
            ("lease_ttl", self.lease_ttl),
            ("factory_timeout", self.factory_timeout),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                let msg = format!("{name} must be greater than zero");
                return Err(Error::new(ErrorKind::InvalidInput, msg));
            }
        }
        self.fail_safe.check()
    }
}

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
