//! The tier's settings: from a URL's `l1*` options or built in code.

use std::time::Duration;

use crate::error::Result;
use crate::url::{parse_duration, url_err};

/// Default L1 capacity when built in code ([`TierConfig::default`]).
pub const DEFAULT_L1_CAPACITY: u64 = 10_000;
/// Default cap on how long L1 keeps an entry.
pub const DEFAULT_L1_TTL: Duration = Duration::from_secs(30);

/// How other processes' writes reach this process's L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// None: another process's write is seen once the L1 entry expires, so
    /// staleness is bounded by the L1 TTL cap. The only form for memcached,
    /// SQLite and file L2s.
    None,
    /// Redis pub/sub (sharded pub/sub on a cluster): every write publishes
    /// the keys it changed; receivers evict them. Default on Redis.
    PubSub,
    /// [`Invalidation::PubSub`] plus Redis 6+ client-side caching
    /// (`CLIENT TRACKING ON BCAST PREFIX ns:` over RESP3), so writes by any
    /// client (`redis-cli`, other languages) evict too. On a Redis Cluster,
    /// one tracking connection per master (followed through failovers and
    /// added nodes).
    Tracking,
}

impl Invalidation {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Invalidation::None),
            "pubsub" => Some(Invalidation::PubSub),
            "tracking" => Some(Invalidation::Tracking),
            _ => None,
        }
    }
}

/// The L1 of a tiered cache: an in-process memory cache in front of any
/// backend (see [`crate::tiered`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierConfig {
    /// Most entries L1 holds.
    pub capacity: u64,
    /// Most bytes (keys + values) L1 holds, if bounded.
    pub max_bytes: Option<u64>,
    /// Longest L1 keeps an entry; never longer than L2 keeps it.
    pub l1_ttl: Duration,
    /// `None`: the L2's default (pub/sub on Redis, none elsewhere).
    pub invalidation: Option<Invalidation>,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig::new(DEFAULT_L1_CAPACITY)
    }
}

impl TierConfig {
    /// An L1 of `capacity` entries with the default TTL cap (30 s).
    pub fn new(capacity: u64) -> Self {
        TierConfig {
            capacity,
            max_bytes: None,
            l1_ttl: DEFAULT_L1_TTL,
            invalidation: None,
        }
    }

    /// Caps how long L1 keeps an entry (at least 1 ms).
    pub fn l1_ttl(mut self, d: Duration) -> Self {
        self.l1_ttl = d.max(Duration::from_millis(1));
        self
    }

    /// Bounds L1's bytes too.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }

    /// Chooses how other processes' writes reach L1.
    pub fn invalidation(mut self, i: Invalidation) -> Self {
        self.invalidation = Some(i);
        self
    }
}

/// The tier's URL options.
pub(crate) const URL_OPTIONS: [&str; 4] = ["l1", "l1_ttl", "l1_max_bytes", "l1_invalidation"];

/// Whether a URL option is the tier's (`l1` and `l1_*`).
pub(crate) fn claims(name: &str) -> bool {
    name == "l1" || name.starts_with("l1_")
}

/// The tier the URL's `l1*` options describe (raw `k=v` parts, as
/// [`crate::url::take_query_parts`] took them), `None` without any.
pub(crate) fn from_url_parts(parts: &[String], shown: &str) -> Result<Option<TierConfig>> {
    if parts.is_empty() {
        return Ok(None);
    }
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    parse_tier(&parts, shown).map(Some)
}

fn parse_tier(parts: &[&str], shown: &str) -> Result<TierConfig> {
    let bad = |k: &str, v: &str, want: &str| url_err(format!("{shown}: {k}={v:?} {want}"));
    let mut cfg = TierConfig::new(0);
    let mut capacity = None;
    for part in parts {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "l1" => {
                let n = v.parse::<u64>().ok().filter(|n| *n > 0);
                capacity = Some(n.ok_or_else(|| bad(k, v, "is not a whole number above 0"))?);
            }
            "l1_max_bytes" => {
                let n = v.parse::<u64>().ok().filter(|n| *n > 0);
                cfg.max_bytes = Some(n.ok_or_else(|| bad(k, v, "is not a whole number above 0"))?);
            }
            "l1_ttl" => {
                let d = parse_duration(v).ok().filter(|d| !d.is_zero());
                cfg = cfg.l1_ttl(d.ok_or_else(|| bad(k, v, "is not a duration above 0"))?);
            }
            "l1_invalidation" => {
                let i = Invalidation::parse(v);
                cfg.invalidation = Some(i.ok_or_else(|| bad(k, v, "is not pubsub|tracking|none"))?);
            }
            _ => {
                return Err(url_err(format!(
                    "{shown}: unknown tier option {k:?} (known: {})",
                    URL_OPTIONS.join(", ")
                )));
            }
        }
    }
    cfg.capacity = capacity.ok_or_else(|| {
        url_err(format!(
            "{shown}: tier options need l1=<entries> to turn the L1 on"
        ))
    })?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_tier(rest: &str, shown: &str) -> Result<(String, Option<TierConfig>)> {
        let (body, parts) = crate::url::take_query_parts(rest, claims);
        Ok((body, from_url_parts(&parts, shown)?))
    }

    #[test]
    fn tier_options_come_out_of_the_query() {
        let (body, t) = split_tier("//h:1?namespace=a&l1=500&l1_ttl=2s&ttl=5m", "u").unwrap();
        assert_eq!(body, "//h:1?namespace=a&ttl=5m");
        let t = t.unwrap();
        assert_eq!((t.capacity, t.l1_ttl), (500, Duration::from_secs(2)));
        assert_eq!(t.invalidation, None);
        let (body, t) = split_tier("//h:1?l1=5&l1_invalidation=tracking", "u").unwrap();
        assert_eq!(body, "//h:1");
        assert_eq!(t.unwrap().invalidation, Some(Invalidation::Tracking));
        // A password holding `?` and `l1=` is not a query.
        let (body, t) = split_tier("//u:p?l1=9@h:1", "u").unwrap();
        assert_eq!((body.as_str(), t), ("//u:p?l1=9@h:1", None));
        assert_eq!(split_tier("data/x.db", "u").unwrap().1, None);
    }

    #[test]
    fn bad_tier_options_are_url_errors() {
        for q in [
            "l1=0",
            "l1=x",
            "l1_ttl=5s",
            "l1=5&l1_ttl=0",
            "l1=5&l1_invalidation=gossip",
            "l1=5&l1_bogus=1",
            "l1=5&l1_max_bytes=-1",
        ] {
            let e = split_tier(&format!("//h:1?{q}"), "shown").unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidUrl, "{q}");
            assert!(e.to_string().contains("shown"), "{e}");
        }
    }
}
