//! Fail-safe, soft factory timeout and refresh-ahead: their options and
//! what a factory failure does when a stale value is kept.
//!
//! Semantics follow FusionCache's: with fail-safe on, entries are kept
//! physically `fail_safe_max` past their logical expiry (see
//! [`super::envelope`]); when the factory fails or times out and such a
//! stale value is there, it is returned (flagged by
//! [`super::Got::stale`] and counted in
//! [`super::ReadThroughStats::fail_safe_served`]) and stored again for
//! `fail_safe_throttle`, so the factory is not tried again before then.

use std::time::Duration;

use super::{Got, Handle, bump};
use crate::cache::now_millis;
use crate::error::{Error, ErrorKind, Result};

/// How long entries are kept past their logical expiry by default (as in
/// FusionCache).
pub const DEFAULT_FAIL_SAFE_MAX: Duration = Duration::from_secs(24 * 3600);
/// How long a stale value served by fail-safe is kept before the factory
/// is tried again, by default (as in FusionCache).
pub const DEFAULT_FAIL_SAFE_THROTTLE: Duration = Duration::from_secs(30);

/// URL options read here.
pub(crate) const URL_OPTIONS: [&str; 5] = [
    "fail_safe",
    "fail_safe_max",
    "fail_safe_throttle",
    "soft_timeout",
    "refresh_ahead",
];

/// Fail-safe, soft-timeout and refresh-ahead options (part of
/// [`crate::ReadThroughOptions`]); `None` fields take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailSafeOptions {
    /// `fail_safe=1|0`: serve a kept stale value when the factory fails.
    pub enabled: Option<bool>,
    /// `fail_safe_max=DUR`: how long entries are kept past their logical
    /// expiry (default 1 day).
    pub max: Option<Duration>,
    /// `fail_safe_throttle=DUR`: how long a served stale value is kept
    /// before the factory is tried again (default 30 s).
    pub throttle: Option<Duration>,
    /// `soft_timeout=DUR`: with a stale value, return it once the factory
    /// has run this long; the factory finishes in the background.
    pub soft_timeout: Option<Duration>,
    /// `refresh_ahead=0.8`, in thousandths (800): a hit after this share of
    /// its TTL is refreshed in the background.
    pub refresh_ahead_permille: Option<u16>,
}

impl FailSafeOptions {
    /// Options with nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns fail-safe on or off.
    pub fn enabled(mut self, yes: bool) -> Self {
        self.enabled = Some(yes);
        self
    }

    /// Sets how long entries are kept past their logical expiry.
    pub fn max(mut self, d: Duration) -> Self {
        self.max = Some(d);
        self
    }

    /// Sets the throttle after a stale value was served.
    pub fn throttle(mut self, d: Duration) -> Self {
        self.throttle = Some(d);
        self
    }

    /// Sets the soft factory timeout.
    pub fn soft_timeout(mut self, d: Duration) -> Self {
        self.soft_timeout = Some(d);
        self
    }

    /// Sets refresh-ahead to `fraction` of the TTL (clamped to 0.0..=1.0;
    /// `NaN` turns it off).
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.refresh_ahead_permille =
            (!fraction.is_nan()).then(|| (fraction.clamp(0.0, 1.0) * 1000.0).round() as u16);
        self
    }

    /// These options, each unset field taken from `base`.
    pub fn or(self, base: &FailSafeOptions) -> Self {
        FailSafeOptions {
            enabled: self.enabled.or(base.enabled),
            max: self.max.or(base.max),
            throttle: self.throttle.or(base.throttle),
            soft_timeout: self.soft_timeout.or(base.soft_timeout),
            refresh_ahead_permille: self.refresh_ahead_permille.or(base.refresh_ahead_permille),
        }
    }

    /// Reads this module's URL options.
    pub(crate) fn from_url(q: &mut crate::url::Query) -> Result<Self> {
        let scheme = q.scheme;
        let bad = |msg: String| crate::url::url_err(format!("{scheme}: {msg}"));
        let mut o = FailSafeOptions::new();
        o.enabled = match q.take("fail_safe").as_deref() {
            None => None,
            Some("1" | "true" | "yes" | "on") => Some(true),
            Some("0" | "false" | "no" | "off") => Some(false),
            Some(v) => return Err(bad(format!("fail_safe={v:?} (use 1 or 0)"))),
        };
        o.max = q.take_duration("fail_safe_max")?;
        o.throttle = q.take_duration("fail_safe_throttle")?;
        o.soft_timeout = q.take_duration("soft_timeout")?;
        o.refresh_ahead_permille = match q.take("refresh_ahead") {
            None => None,
            Some(v) => match v.parse::<f64>() {
                Ok(f) if f > 0.0 && f < 1.0 => Some((f * 1000.0).round() as u16),
                _ => return Err(bad(format!("refresh_ahead={v:?} (a fraction, 0 < f < 1)"))),
            },
        };
        o.check().map_err(|e| bad(e.message().to_string()))?;
        Ok(o)
    }

    /// Zero durations would keep nothing or throttle nothing.
    pub(crate) fn check(&self) -> Result<()> {
        for (name, d) in [
            ("fail_safe_max", self.max),
            ("fail_safe_throttle", self.throttle),
            ("soft_timeout", self.soft_timeout),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                let msg = format!("{name} must be greater than zero");
                return Err(Error::new(ErrorKind::InvalidInput, msg));
            }
        }
        Ok(())
    }
}

/// Resolved fail-safe settings of a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailSafe {
    /// Serve a kept stale value when the factory fails or times out.
    pub enabled: bool,
    /// How long entries are kept past their logical expiry.
    pub max: Duration,
    /// How long a served stale value is kept before the factory runs again.
    pub throttle: Duration,
    /// Soft factory timeout (only with fail-safe and a stale value).
    pub soft_timeout: Option<Duration>,
    /// Refresh a hit after this many thousandths of its TTL.
    pub refresh_ahead_permille: Option<u16>,
}

impl Default for FailSafe {
    fn default() -> Self {
        FailSafe {
            enabled: false,
            max: DEFAULT_FAIL_SAFE_MAX,
            throttle: DEFAULT_FAIL_SAFE_THROTTLE,
            soft_timeout: None,
            refresh_ahead_permille: None,
        }
    }
}

impl FailSafe {
    /// Settings from options.
    pub fn from_options(o: &FailSafeOptions) -> Self {
        let enabled = o.enabled.unwrap_or(false);
        FailSafe {
            enabled,
            max: o.max.unwrap_or(DEFAULT_FAIL_SAFE_MAX),
            throttle: o.throttle.unwrap_or(DEFAULT_FAIL_SAFE_THROTTLE),
            soft_timeout: o.soft_timeout.filter(|_| enabled),
            refresh_ahead_permille: o.refresh_ahead_permille.filter(|&p| p > 0 && p < 1000),
        }
    }

    /// Whether values need the envelope (a logical expiry stored with them).
    pub fn needs_envelope(&self) -> bool {
        self.enabled || self.refresh_ahead_permille.is_some()
    }

    /// How long entries are kept physically past their logical expiry:
    /// nothing without fail-safe (refresh-ahead alone needs no stale value).
    pub fn keep(&self) -> Duration {
        if self.enabled {
            self.max
        } else {
            Duration::ZERO
        }
    }
}

impl Handle {
    /// After a failed or timed-out factory: the stale value of `key` when
    /// fail-safe keeps one (stored again for the throttle period, flagged
    /// [`Got::stale`]), or the error. A fresh value stored meanwhile (by
    /// another process) is returned as it is.
    pub(super) async fn fail_safe(&self, key: &str, err: Error) -> Result<Got> {
        let fs = &self.shared.config.fail_safe;
        let Some(env) = self.shared.envelope.as_ref().filter(|_| fs.enabled) else {
            return Err(err);
        };
        if !matches!(err.kind(), ErrorKind::Factory | ErrorKind::Timeout) {
            return Err(err);
        }
        let stale = match env.raw(key).await {
            Ok(Some(s)) if !s.is_stale(now_millis()) => return Ok(Got::fresh(s.value)),
            Ok(Some(s)) => s.value,
            Ok(None) => return Err(err),
            Err(read) => {
                tracing::warn!("get_or_set: fail-safe read of {key:?} failed: {read}");
                return Err(err);
            }
        };
        tracing::warn!("get_or_set: serving stale {key:?} (fail-safe): {err}");
        bump(&self.shared.counters.fail_safe_served);
        if let Err(e) = env.store(key, &stale, Some(fs.throttle)).await {
            tracing::warn!("get_or_set: keeping stale {key:?} for the throttle: {e}");
        }
        Ok(Got {
            value: stale,
            stale: true,
        })
    }
}
