//! How to reach a Redis server or cluster (parsed from its URL), and its
//! TLS trust.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::BACKEND;
#[cfg(not(feature = "tls"))]
use crate::error::ErrorKind;
use super::RedisCache;
use super::read_from::ReadFrom;
use super::sentinel::{self, SentinelSpec};
use crate::backends::BackendSpec;
use crate::cache::{Cache, CacheOptions};
use crate::error::{Error, Result};
use crate::url::{
    Query, Target, check_host_port, driver_userinfo, redact_credentials, split_query, split_userinfo, url_err,
};

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default per-command response timeout.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach a Redis server or cluster (from a parsed URL).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Node URLs (may carry credentials; never printed).
    pub nodes: Vec<String>,
    /// Cluster mode.
    pub cluster: bool,
    /// The redacted URL shown in errors and stats.
    pub endpoint: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-command response timeout.
    pub response_timeout: Duration,
    /// PEM CA to trust for `rediss://` instead of the system store.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Every write also publishes the keys it changed, so that the L1s of
    /// tiered caches in other processes drop them (URL `publish=0|1`,
    /// default on; see the Redis section of the README).
    pub publish: bool,
    /// Who the messages come from (shared by clones: the cache and the
    /// tier opened from one URL are one sender; see `invalidation::Origin`).
    pub(crate) origin: super::invalidation::Origin,
    /// `redis+sentinel://`: the sentinels and the master's name; `nodes`
    /// then holds one data-node URL template (credentials, database).
    pub(crate) sentinel: Option<SentinelSpec>,
    /// Where reads go (`read_from=`, Sentinel and Cluster).
    pub(crate) read_from: ReadFrom,
    /// `wait=N`: each batch of `set_many` ends with `WAIT N`, and fails
    /// (transiently) unless N replicas acknowledged it.
    pub(crate) wait: Option<u32>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Node URLs may carry passwords: show them redacted.
        f.debug_struct("RedisConfig")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| redact_credentials(n)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("sentinel", &self.sentinel)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// One server (`redis://[user:pass@]host:port[/db]`, or `rediss://`) or,
    /// with `cluster`, the seed nodes of a cluster; default timeouts. The
    /// endpoint shown is the first node's URL, redacted.
    pub fn new(nodes: Vec<String>, cluster: bool) -> Self {
        RedisConfig {
            endpoint: nodes.first().map(|n| redact_credentials(n)).unwrap_or_default(),
            nodes,
            cluster,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            tls_ca: None,
            publish: true,
            origin: Default::default(),
            sentinel: None,
            read_from: ReadFrom::Master,
            wait: None,
        }
    }

    /// Whether reads may go to replicas (`read_from=replica|nearest`).
    pub fn reads_from_replicas(&self) -> bool {
        self.read_from != ReadFrom::Master
    }

    /// Whether this configuration reaches its master through Sentinel.
    pub fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// Whether writes publish invalidations for other processes' L1s.
    pub fn publish(mut self, on: bool) -> Self {
        self.publish = on;
        self
    }

    /// Connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Per-command response timeout.
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    /// A PEM CA file to trust for `rediss://` instead of the system store.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }
}

/// The options of a Redis URL's query.
struct RedisQuery {
    options: CacheOptions,
    connect_timeout: Duration,
    response_timeout: Duration,
    tls_ca: Option<PathBuf>,
    publish: bool,
    read_from: ReadFrom,
    wait: Option<u32>,
}

/// `sentinel`, `cluster`: the URL's kind (one server when neither).
fn parse_query(t: &Target<'_>, mut q: Query, tls: bool, (sentinel, cluster): (bool, bool)) -> Result<RedisQuery> {
    let options = q.common()?;
    let connect_timeout = q
        .take_duration("connect_timeout")?
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let response_timeout = q
        .take_duration("response_timeout")?
        .unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
    let tls_ca = q.take("tls_ca").map(PathBuf::from);
    if tls_ca.is_some() && !tls {
        return Err(url_err("redis: tls_ca needs rediss:// (TLS)"));
    }
    let publish = match q.take("publish").as_deref() {
        None | Some("1" | "true" | "on") => true,
        Some("0" | "false" | "off") => false,
        Some(v) => return Err(url_err(format!("redis: publish must be 0 or 1, not {v:?}"))),
    };
    let read_from = ReadFrom::parse(q.take("read_from").as_deref())?;
    if read_from != ReadFrom::Master && !sentinel && !cluster {
        return Err(url_err(
            "redis: read_from=replica|nearest needs redis+sentinel:// or redis+cluster:// \
             (which find the replicas)",
        ));
    }
    let wait = match q.take_u64("wait")? {
        None | Some(0) => None,
        Some(n) => Some(u32::try_from(n).map_err(|_| url_err("redis: wait is too large"))?),
    };
    let mut known = vec!["connect_timeout", "response_timeout", "tls_ca", "publish", "read_from", "wait"];
    if sentinel {
        known.extend(["sentinel_username", "sentinel_password"]);
    }
    q.finish(&known, t)?;
    Ok(RedisQuery {
        options,
        connect_timeout,
        response_timeout,
        tls_ca,
        publish,
        read_from,
        wait,
    })
}

impl BackendSpec for RedisConfig {
    fn from_url(t: &Target<'_>) -> Result<(Self, CacheOptions)> {
        let scheme = t.scheme;
        let cluster = scheme.contains("cluster");
        let tls = scheme.starts_with("rediss");
        let body_q = t
            .rest
            .strip_prefix("//")
            .ok_or_else(|| url_err(format!("{scheme}: expected {scheme}://host:port")))?;
        let (userinfo, after) = split_userinfo(body_q);
        let (body, q) = split_query(after);
        let mut q = Query::parse("redis", q)?;
        if scheme.contains("sentinel") {
            let spec = sentinel::parse(t, tls, userinfo, body, &mut q)?;
            let q = parse_query(t, q, tls, (true, false))?;
            let config = RedisConfig {
                nodes: vec![spec.template.clone()],
                endpoint: t.redacted.to_string(),
                connect_timeout: q.connect_timeout,
                response_timeout: q.response_timeout,
                tls_ca: q.tls_ca,
                publish: q.publish,
                sentinel: Some(spec),
                read_from: q.read_from,
                wait: q.wait,
                ..RedisConfig::new(Vec::new(), false)
            };
            return Ok((config, q.options));
        }
        let q = parse_query(t, q, tls, (false, cluster))?;
        if cluster && q.wait.is_some() {
            return Err(url_err(
                "redis: wait=N is for one server or Sentinel, not redis+cluster://",
            ));
        }
        let base = if tls { "rediss" } else { "redis" };
        // One userinfo, before the host list, for every node.
        let creds = driver_userinfo("redis", userinfo)?;
        let hosts: Vec<&str> = body.split(',').filter(|n| !n.is_empty()).collect();
        for h in &hosts {
            check_host_port(t.redacted, h)?;
        }
        let nodes: Vec<String> = hosts
            .iter()
            .map(|n| format!("{base}://{creds}{n}"))
            .collect();
        if nodes.is_empty() {
            return Err(url_err(format!("{scheme}: missing host:port")));
        }
        if !cluster && nodes.len() > 1 {
            return Err(url_err(
                "redis: several hosts given; use redis+cluster://h1:p1,h2:p2 for a cluster",
            ));
        }
        let config = RedisConfig {
            nodes,
            cluster,
            endpoint: t.redacted.to_string(),
            connect_timeout: q.connect_timeout,
            response_timeout: q.response_timeout,
            tls_ca: q.tls_ca,
            publish: q.publish,
            origin: Default::default(),
            sentinel: None,
            read_from: q.read_from,
            wait: q.wait,
        };
        Ok((config, q.options))
    }

    async fn open(self, options: CacheOptions) -> Result<Arc<dyn Cache>> {
        let how = "bound the server instead (maxmemory and maxmemory-policy allkeys-lru)";
        options.bounds.refuse("redis", how)?;
        Ok(Arc::new(RedisCache::connect(self, options).await?))
    }
}

#[cfg(feature = "tls")]
pub(super) fn tls_certs(ca: &Option<std::path::PathBuf>) -> Result<Option<redis::TlsCertificates>> {
    let Some(path) = ca else { return Ok(None) };
    let pem = std::fs::read(path).map_err(|e| {
        Error::from(e)
            .with_backend(BACKEND)
            .with_context("tls_ca", path.display())
    })?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

#[cfg(not(feature = "tls"))]
pub(super) fn tls_certs(ca: &Option<std::path::PathBuf>) -> Result<Option<()>> {
    if ca.is_some() {
        return Err(Error::new(
            ErrorKind::FeatureDisabled,
            "TLS was compiled out; rebuild with `--features tls`",
        )
        .with_backend(BACKEND));
    }
    Ok(None)
}
