//! The settings of a `memcached://h1:p1,h2:p2` cache, from its URL.

use std::sync::Arc;
use std::time::Duration;

use super::MemcachedCache;
use crate::backends::BackendSpec;
use crate::cache::{Cache, CacheOptions};
use crate::error::Result;
use crate::url::{Query, Target, check_host_port, split_query, split_userinfo, url_err};

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default per-request response timeout.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a memcached cache over one or more servers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemcachedConfig {
    /// `host:port` of each server.
    pub servers: Vec<String>,
    /// The URL shown in errors and stats.
    pub endpoint: String,
    /// Connect timeout (above zero).
    pub connect_timeout: Duration,
    /// Per-request timeout (above zero).
    pub response_timeout: Duration,
}

impl MemcachedConfig {
    /// The servers `host:port`, with the default timeouts.
    pub fn new(servers: Vec<String>) -> Self {
        MemcachedConfig {
            endpoint: format!("memcached://{}", servers.join(",")),
            servers,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }

    /// Connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Per-request response timeout.
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }
}

impl BackendSpec for MemcachedConfig {
    fn from_url(t: &Target<'_>) -> Result<(Self, CacheOptions)> {
        let redacted = t.redacted;
        let body_q = t
            .rest
            .strip_prefix("//")
            .ok_or_else(|| url_err("memcached: expected memcached://host:port"))?;
        let (userinfo, after) = split_userinfo(body_q);
        if userinfo.is_some() {
            return Err(url_err(format!(
                "memcached: credentials are not supported (the text protocol has none): {redacted:?}"
            )));
        }
        let (body, q) = split_query(after);
        // An empty path (`memcached://h:p/`) is fine; memcached has no
        // databases, so any other path is a mistake.
        let body = match body.split_once('/') {
            Some((hosts, "")) => hosts,
            Some(_) => {
                return Err(url_err(format!(
                    "memcached: a path is not allowed (memcached has no databases): {redacted:?}"
                )));
            }
            None => body,
        };
        let mut q = Query::parse("memcached", q)?;
        let options = q.common()?;
        let connect_timeout = q
            .take_duration("connect_timeout")?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let response_timeout = q
            .take_duration("response_timeout")?
            .unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
        q.finish(&["connect_timeout", "response_timeout"], t)?;
        let servers: Vec<String> = body
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.contains(':') {
                    s.to_string()
                } else {
                    format!("{s}:11211")
                }
            })
            .collect();
        if servers.is_empty() {
            return Err(url_err("memcached: missing host:port"));
        }
        for s in &servers {
            check_host_port(redacted, s)?;
        }
        let config = MemcachedConfig {
            servers,
            endpoint: redacted.to_string(),
            connect_timeout,
            response_timeout,
        };
        Ok((config, options))
    }

    async fn open(self, options: CacheOptions) -> Result<Arc<dyn Cache>> {
        let how = "memcached evicts within its own memory (memcached -m MEGABYTES)";
        options.bounds.refuse("memcached", how)?;
        Ok(Arc::new(MemcachedCache::connect(self, options).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<MemcachedConfig> {
        let rest = url.strip_prefix("memcached:").unwrap();
        let t = Target {
            scheme: "memcached",
            rest,
            redacted: url,
            layer_options: &[],
        };
        MemcachedConfig::from_url(&t).map(|(c, _)| c)
    }

    #[test]
    fn an_empty_path_is_fine_any_other_is_an_invalid_url() {
        let c = parse("memcached://127.0.0.1:11211/").unwrap();
        assert_eq!(c.servers, ["127.0.0.1:11211"]);
        let e = parse("memcached://127.0.0.1:11211/3").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidUrl, "{e}");
    }
}
