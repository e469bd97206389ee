//! `redis://`, `rediss://` and `redis+cluster://`: Redis through redis-rs.
//!
//! Single server: a `ConnectionManager` (multiplexed, reconnects by itself).
//! Cluster: our own slot map and per-node pipelines (see `cluster`), which
//! follow MOVED/ASK/TRYAGAIN and survive resharding and failover. Keys are
//! `namespace:key` (exactly `key` without a namespace) and values raw bytes,
//! so `redis-cli GET` reads what we wrote. `clear` only ever deletes keys
//! under the namespace (SCAN MATCH + UNLINK on every master); flushing a
//! database is `clear_all`, asked for by name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, RedisError, RetryMethod, Value};

use crate::cache::{Cache, CacheFuture, CacheOptions, Capabilities, Counters, KeyStream, Stats};
use crate::error::{Error, ErrorKind, Result};

mod cluster;

const BACKEND: &str = "redis";
/// Commands per pipeline chunk; chunks of one batch are sent concurrently.
const CHUNK: usize = 10_000;
/// Pipelines in flight at once for one batch (single server).
const IN_FLIGHT: usize = 8;
/// Pairs per MSET when a batch has no TTL.
const MSET_PAIRS: usize = 1_000;
/// Keys per SCAN step.
const SCAN_COUNT: usize = 1_000;
/// Redis's own bulk string limit (proto-max-bulk-len default).
const MAX_VALUE: u64 = 512 * 1024 * 1024;
/// The largest `PX` sent. Redis refuses a PX whose expiry (now + PX, in ms)
/// overflows an i64 ("invalid expire time"); half of i64::MAX (about 146
/// million years) always fits, so longer TTLs are clamped to it.
const MAX_PX: u64 = (i64::MAX / 2) as u64;

/// Milliseconds for `PX`: at least 1, at most [`MAX_PX`].
fn px_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_PX)
}

/// Refuses a namespace that could share keys with another: keys are
/// `NS:KEY`, so `app` and `app:v2` would overlap (`v2:x` in one is `x` in
/// the other), and `clear` of `app` would delete `app:v2`'s keys.
fn check_namespace(ns: Option<&str>) -> Result<()> {
    match ns {
        Some(ns) if ns.contains(':') => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "Redis namespace {ns:?} contains ':': keys are stored as NAMESPACE:KEY, so it \
                 would share keys with namespace {:?}; use another separator ('-', '.', '/')",
                ns.split(':').next().unwrap_or("")
            ),
        )
        .with_backend(BACKEND)),
        _ => Ok(()),
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<cluster::Cluster>),
}

#[cfg(feature = "tls")]
type Certs = Option<redis::TlsCertificates>;
#[cfg(not(feature = "tls"))]
type Certs = Option<()>;

/// A Redis server or cluster.
pub struct RedisCache {
    conn: Conn,
    /// Node URLs as given (may hold credentials; never printed).
    nodes: Vec<String>,
    endpoint: String,
    prefix: String,
    namespace: Option<String>,
    options: CacheOptions,
    counters: Counters,
    connect_timeout: Duration,
    response_timeout: Duration,
    certs: Certs,
    /// Direct connections to each master (by URL) for the commands that go
    /// to every node (SCAN, DBSIZE, INFO, FLUSHDB), kept between calls and
    /// dropped after any connection error.
    node_cache: NodeCache,
    /// Single plain-TCP server: the connection single GETs try first.
    direct: Option<direct::Direct>,
}

type NodeCache = Arc<std::sync::Mutex<HashMap<String, MultiplexedConnection>>>;

/// Forgets the cached node connections when `e` says a connection failed.
fn forget_on_failure(cache: &NodeCache, e: &RedisError) {
    // Not on a timeout: the connection is still good (a late reply is
    // matched and dropped), and a new one would wait connect_timeout again.
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("endpoint", &self.endpoint)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Hash slot of a key (CRC16/XMODEM of the key or its `{hash tag}`, mod 16384).
pub fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Escapes glob characters so SCAN MATCH treats the namespace literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How to reach a Redis server or cluster (from a parsed URL).
#[derive(Clone)]
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
}

#[cfg(feature = "tls")]
fn tls_certs(ca: &Option<std::path::PathBuf>) -> Result<Option<redis::TlsCertificates>> {
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
fn tls_certs(ca: &Option<std::path::PathBuf>) -> Result<Option<()>> {
    if ca.is_some() {
        return Err(Error::new(
            ErrorKind::FeatureDisabled,
            "TLS was compiled out; rebuild with `--features tls`",
        )
        .with_backend(BACKEND));
    }
    Ok(None)
}

impl RedisCache {
    /// Connects to the node(s) of `cfg`.
    pub async fn connect(cfg: RedisConfig, options: CacheOptions) -> Result<Self> {
        let RedisConfig {
            nodes,
            cluster,
            endpoint,
            connect_timeout,
            response_timeout,
            tls_ca,
        } = cfg;
        #[cfg(not(feature = "tls"))]
        if nodes.iter().any(|n| n.starts_with("rediss:")) {
            return Err(Error::new(
                ErrorKind::FeatureDisabled,
                "rediss:// needs TLS, which was compiled out; rebuild with `--features tls`",
            )
            .with_backend(BACKEND));
        }
        check_namespace(options.namespace.as_deref())?;
        let certs = tls_certs(&tls_ca)?;
        let conn = Self::open_conn(
            &nodes,
            cluster,
            &certs,
            (connect_timeout, response_timeout),
            &endpoint,
        )
        .await?;
        let direct = if cluster {
            None
        } else {
            direct::Direct::new(&nodes[0], connect_timeout, response_timeout)
        };
        let prefix = options
            .namespace
            .as_ref()
            .map(|ns| format!("{ns}:"))
            .unwrap_or_default();
        Ok(RedisCache {
            conn,
            nodes,
            endpoint,
            prefix,
            namespace: options.namespace.clone(),
            options,
            counters: Counters::default(),
            connect_timeout,
            response_timeout,
            certs,
            node_cache: NodeCache::default(),
            direct,
        })
    }

    /// The connection manager, or the cluster with its first slot map;
    /// bounded as a whole (the manager retries its first connection).
    async fn open_conn(
        nodes: &[String],
        cluster: bool,
        certs: &Certs,
        (connect_timeout, response_timeout): (Duration, Duration),
        endpoint: &str,
    ) -> Result<Conn> {
        let fail = |e: Error| {
            e.with_context("endpoint", endpoint)
                .with_context("op", "connect")
        };
        // A cluster may have to ask several seeds for its map.
        let deadline = connect_timeout
            + Duration::from_millis(250)
            + if cluster {
                response_timeout
            } else {
                Duration::ZERO
            };
        let connect = async {
            if cluster {
                let c = cluster::Cluster::connect(
                    nodes,
                    certs.clone(),
                    connect_timeout,
                    response_timeout,
                )
                .await
                .map_err(fail)?;
                return Ok(Conn::Cluster(Arc::new(c)));
            }
            let client = open_client(&nodes[0], certs).map_err(|e| fail(redis_err(e)))?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let m = ConnectionManager::new_with_config(client, cfg)
                .await
                .map_err(|e| fail(redis_err(e)))?;
            Ok::<_, Error>(Conn::Single(m))
        };
        match tokio::time::timeout(deadline, connect).await {
            Ok(r) => r,
            Err(_) => Err(fail(
                Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {connect_timeout:?}"),
                )
                .with_backend(BACKEND),
            )),
        }
    }

    /// Runs one key's command: through the connection manager, or routed
    /// in the cluster (redirects followed, bounded by the response timeout).
    async fn one<T: FromRedisValue>(&self, full: &str, key: &str, cmd: Cmd) -> Result<T> {
        let v = match &self.conn {
            Conn::Single(c) => cmd
                .query_async(&mut c.clone())
                .await
                .map_err(|e| self.err(e)),
            Conn::Cluster(c) => {
                let keys = [full.to_string()];
                let single = |_| cmd.clone();
                let b = cluster::Batch {
                    keys: &keys,
                    single: &single,
                    multi: None,
                };
                let mut r = c.run(&b).await;
                r.pop()
                    .unwrap_or_else(|| Err(Error::new(ErrorKind::Backend, "no reply")))
                    .map_err(|e| e.with_context("endpoint", &self.endpoint))
                    .and_then(|v| T::from_redis_value(v).map_err(parse_err))
            }
        };
        v.map_err(|e| e.with_context("key", key))
    }

    /// Cluster batch: one result per key, errors carrying the endpoint.
    async fn cluster_run(
        c: &cluster::Cluster,
        endpoint: &str,
        b: &cluster::Batch<'_>,
    ) -> Vec<Result<Value>> {
        c.run(b)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| e.with_context("endpoint", endpoint)))
            .collect()
    }

    async fn get_many_single(&self, full: &[String]) -> Result<Vec<Option<Bytes>>> {
        let Conn::Single(conn) = &self.conn else {
            return Err(Error::new(ErrorKind::Backend, "not a single server"));
        };
        let mut out = vec![None; full.len()];
        let results = futures::stream::iter(Self::groups(full).into_iter().map(|g| async move {
            let mut c = redis::cmd("MGET");
            for &i in &g {
                c.arg(&full[i]);
            }
            let vals: Vec<Value> = c
                .query_async(&mut conn.clone())
                .await
                .map_err(|e| self.err(e))?;
            Ok::<_, Error>((g, vals))
        }))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
        for (g, vals) in results {
            for (i, v) in g.into_iter().zip(vals) {
                out[i] = bytes_of(v);
            }
        }
        Ok(out)
    }

    async fn set_many_single(
        &self,
        full: &[String],
        entries: &[(&str, &[u8])],
        px: Option<u64>,
    ) -> Result<()> {
        let Conn::Single(conn) = &self.conn else {
            return Err(Error::new(ErrorKind::Backend, "not a single server"));
        };
        futures::stream::iter(Self::groups(full).into_iter().map(|g| async move {
            let mut p = redis::pipe();
            match px {
                // Without a TTL, MSET: one command per 1,000 pairs, far
                // less work per key on both sides than a SET each.
                None => {
                    for part in g.chunks(MSET_PAIRS) {
                        let c = p.cmd("MSET");
                        for &i in part {
                            c.arg(&full[i]).arg(entries[i].1);
                        }
                        c.ignore();
                    }
                }
                Some(_) => {
                    for &i in &g {
                        p.add_command(Self::set_command(&full[i], entries[i].1, px))
                            .ignore();
                    }
                }
            }
            p.query_async::<()>(&mut conn.clone())
                .await
                .map_err(|e| self.err(e))
        }))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
    }

    async fn delete_many_single(&self, full: &[String]) -> Result<u64> {
        let Conn::Single(conn) = &self.conn else {
            return Err(Error::new(ErrorKind::Backend, "not a single server"));
        };
        let counts = futures::stream::iter(Self::groups(full).into_iter().map(|g| async move {
            let mut c = redis::cmd("UNLINK");
            for &i in &g {
                c.arg(&full[i]);
            }
            c.query_async::<u64>(&mut conn.clone())
                .await
                .map_err(|e| self.err(e))
        }))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<u64>>()
        .await?;
        Ok(counts.into_iter().sum())
    }

    fn key(&self, k: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + k.len());
        s.push_str(&self.prefix);
        s.push_str(k);
        s
    }

    fn err(&self, e: RedisError) -> Error {
        forget_on_failure(&self.node_cache, &e);
        redis_err(e).with_context("endpoint", &self.endpoint)
    }

    /// `SET key value`, with `PX ms` when there is a TTL.
    fn set_command(key: &str, value: &[u8], px: Option<u64>) -> Cmd {
        let mut c = redis::cmd("SET");
        c.arg(key).arg(value);
        if let Some(ms) = px {
            c.arg("PX").arg(ms);
        }
        c
    }

    fn px(&self, ttl: Option<Duration>) -> Result<Option<u64>> {
        Ok(self.options.effective_ttl(ttl)?.map(px_of))
    }

    /// Indices of `keys` in pipeline-sized groups (single server).
    fn groups(keys: &[String]) -> Vec<Vec<usize>> {
        (0..keys.len())
            .collect::<Vec<_>>()
            .chunks(CHUNK)
            .map(|c| c.to_vec())
            .collect()
    }

    /// Direct connections to every master (the one server in single mode),
    /// opened on first use and reused until a connection error.
    async fn node_conns(&self) -> Result<Vec<MultiplexedConnection>> {
        let urls = self.master_urls().await?;
        let cached = |u: &String| {
            let cache = self.node_cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(u).cloned()
        };
        let mut out = Vec::with_capacity(urls.len());
        for u in &urls {
            if let Some(c) = cached(u) {
                out.push(c);
                continue;
            }
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(Some(self.response_timeout));
            let c = open_client(u, &self.certs)
                .map_err(|e| self.err(e))?
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map_err(|e| redis_err(e).with_context("endpoint", crate::url::redact(u)))?;
            self.node_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(u.clone(), c.clone());
            out.push(c);
        }
        // Masters that left the cluster are not kept.
        self.node_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|u, _| urls.contains(u));
        Ok(out)
    }

    /// Runs `f` over the connections to every master. When a kept connection
    /// turned out dropped (the server restarted since), `f` runs once more on
    /// fresh ones: `f` must be safe to repeat (reads, SCAN+UNLINK, FLUSHDB).
    async fn on_nodes<T, Fut>(&self, f: impl Fn(Vec<MultiplexedConnection>) -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let reused = !self
            .node_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        match f(self.node_conns().await?).await {
            // Not on a timeout: the server is slow, not restarted, and a
            // second try would double the wait.
            Err(e) if reused && e.is_connection() => f(self.node_conns().await?).await,
            r => r,
        }
    }

    /// URLs of the cluster's masters (from a slot map at most 1 s old),
    /// with the configured credentials.
    async fn master_urls(&self) -> Result<Vec<String>> {
        let Conn::Cluster(c) = &self.conn else {
            return Ok(vec![self.nodes[0].clone()]);
        };
        c.refresh(Duration::from_secs(1))
            .await
            .map_err(|e| e.with_context("endpoint", &self.endpoint))?;
        let urls: Vec<String> = c.masters().iter().filter_map(|a| c.node_url(a)).collect();
        if urls.is_empty() {
            return Err(
                Error::new(ErrorKind::Connection, "the cluster lists no master")
                    .with_backend(BACKEND)
                    .with_context("endpoint", &self.endpoint),
            );
        }
        Ok(urls)
    }

    fn pattern(&self) -> Option<String> {
        self.namespace
            .as_ref()
            .map(|ns| format!("{}:*", glob_escape(ns)))
    }

    /// Runs SCAN over one node, calling `f` with each page of full keys.
    async fn scan_node<F, Fut>(&self, node: &mut MultiplexedConnection, mut f: F) -> Result<()>
    where
        F: FnMut(Vec<Vec<u8>>, MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut cursor: u64 = 0;
        loop {
            let mut c = redis::cmd("SCAN");
            c.arg(cursor);
            if let Some(p) = self.pattern() {
                c.arg("MATCH").arg(p);
            }
            c.arg("COUNT").arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<Vec<u8>>) =
                c.query_async(node).await.map_err(|e| self.err(e))?;
            if !keys.is_empty() {
                f(keys, node.clone()).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn info(&self) -> Result<Vec<String>> {
        self.on_nodes(|nodes| async move {
            let mut out = Vec::new();
            for mut n in nodes {
                let s: String = redis::cmd("INFO")
                    .query_async(&mut n)
                    .await
                    .map_err(|e| self.err(e))?;
                out.push(s);
            }
            Ok(out)
        })
        .await
    }

    /// Flushes the whole database (every master in a cluster), other
    /// applications' keys included. Asked for by name: `clear` never does it.
    pub async fn flush_database(&self) -> Result<()> {
        self.on_nodes(|nodes| async move {
            for mut n in nodes {
                let _: () = redis::cmd("FLUSHDB")
                    .query_async(&mut n)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(feature = "tls")]
fn open_client(
    url: &str,
    certs: &Option<redis::TlsCertificates>,
) -> redis::RedisResult<redis::Client> {
    match certs {
        Some(c) => redis::Client::build_with_tls(url, c.clone()),
        None => redis::Client::open(url),
    }
}

#[cfg(not(feature = "tls"))]
fn open_client(url: &str, _certs: &Option<()>) -> redis::RedisResult<redis::Client> {
    redis::Client::open(url)
}

/// Maps a redis-rs error: retryable ones become `Connection`/`Timeout`.
fn redis_err(e: RedisError) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        ErrorKind::Connection
    } else {
        match e.retry_method() {
            RetryMethod::NoRetry => ErrorKind::Backend,
            _ => ErrorKind::Connection,
        }
    };
    // redis-rs error texts never contain the URL, so the source is safe to show.
    Error::new(kind, "").with_backend(BACKEND).set_source(e)
}

/// A reply of an unexpected type.
fn parse_err(e: redis::ParsingError) -> Error {
    Error::new(ErrorKind::Backend, "unexpected reply")
        .with_backend(BACKEND)
        .set_source(e)
}

fn bytes_of(v: Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::from(b)),
        Value::SimpleString(s) => Some(Bytes::from(s.into_bytes())),
        _ => None,
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            read_ttl: true,
            list_keys: true,
            count: true,
            persistent: false,
            shared: true,
            evicts: true,
            max_value_bytes: Some(MAX_VALUE),
            batch_concurrency: 4,
            inline: false,
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        CacheFuture::boxed(async move {
            let full = self.key(key);
            if let Some(d) = &self.direct {
                match d.get(full.as_bytes()).await {
                    direct::Got::Value(v) => {
                        let v = v.map(Bytes::from);
                        self.counters.read(std::slice::from_ref(&v));
                        return Ok(v);
                    }
                    // The time is spent: trying the other connection would
                    // double it.
                    direct::Got::TimedOut => {
                        let e = Error::new(
                            ErrorKind::Timeout,
                            format!("no answer within {:?}", self.response_timeout),
                        )
                        .with_backend(BACKEND)
                        .with_context("endpoint", &self.endpoint)
                        .with_context("key", key);
                        return self.counters.track(Err(e));
                    }
                    direct::Got::Elsewhere => {}
                }
            }
            let r: Result<Option<Vec<u8>>> = self
                .one(&full, key, redis::cmd("GET").arg(&full).clone())
                .await;
            let v = self.counters.track(r)?.map(Bytes::from);
            self.counters.read(std::slice::from_ref(&v));
            Ok(v)
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        CacheFuture::boxed(async move {
            let px = self.counters.track(self.px(ttl))?;
            let full = self.key(key);
            let r: Result<()> = self
                .one(&full, key, Self::set_command(&full, value, px))
                .await;
            self.counters.track(r)?;
            self.counters.set(1);
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::boxed(async move {
            let full = self.key(key);
            let r: Result<u64> = self
                .one(&full, key, redis::cmd("DEL").arg(&full).clone())
                .await;
            let n = self.counters.track(r)?;
            self.counters.delete(n);
            Ok(n > 0)
        })
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::boxed(async move {
            let full = self.key(key);
            let r: Result<u64> = self
                .one(&full, key, redis::cmd("EXISTS").arg(&full).clone())
                .await;
            Ok(self.counters.track(r)? > 0)
        })
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let out = match &self.conn {
            Conn::Cluster(c) => {
                let single = |i: usize| redis::cmd("GET").arg(&full[i]).clone();
                let b = cluster::Batch {
                    keys: &full,
                    single: &single,
                    multi: None,
                };
                let r: Result<Vec<Option<Bytes>>> = Self::cluster_run(c, &self.endpoint, &b)
                    .await
                    .into_iter()
                    .map(|r| r.map(bytes_of))
                    .collect();
                self.counters.track(r)?
            }
            Conn::Single(_) => self.counters.track(self.get_many_single(&full).await)?,
        };
        self.counters.read(&out);
        Ok(out)
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let px = self.counters.track(self.px(ttl))?;
        let full: Vec<String> = entries.iter().map(|(k, _)| self.key(k)).collect();
        let Conn::Cluster(c) = &self.conn else {
            self.counters
                .track(self.set_many_single(&full, entries, px).await)?;
            self.counters.set(entries.len() as u64);
            return Ok(());
        };
        let single = |i: usize| Self::set_command(&full[i], entries[i].1, px);
        // Without a TTL, one MSET per slot group: far less work per key.
        let mset = |idx: &[usize]| {
            let mut c = redis::cmd("MSET");
            for &i in idx {
                c.arg(&full[i]).arg(entries[i].1);
            }
            c
        };
        let b = cluster::Batch {
            keys: &full,
            single: &single,
            multi: if px.is_none() { Some(&mset) } else { None },
        };
        let failures: Vec<(usize, Error)> = Self::cluster_run(c, &self.endpoint, &b)
            .await
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.err().map(|e| (i, e.with_context("key", entries[i].0))))
            .collect();
        self.counters.set((entries.len() - failures.len()) as u64);
        if failures.is_empty() {
            return Ok(());
        }
        self.counters.track::<()>(Err(Error::partial(failures)))
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        // UNLINK counts a key given twice once; so do we.
        full.sort();
        full.dedup();
        let r = match &self.conn {
            Conn::Cluster(c) => {
                let single = |i: usize| redis::cmd("UNLINK").arg(&full[i]).clone();
                let b = cluster::Batch {
                    keys: &full,
                    single: &single,
                    multi: None,
                };
                Self::cluster_run(c, &self.endpoint, &b)
                    .await
                    .into_iter()
                    .map(|r| r.and_then(|v| u64::from_redis_value(v).map_err(parse_err)))
                    .sum::<Result<u64>>()
            }
            Conn::Single(_) => self.delete_many_single(&full).await,
        };
        let n = self.counters.track(r)?;
        self.counters.delete(n);
        Ok(n)
    }

    async fn clear(&self) -> Result<()> {
        if self.namespace.is_none() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "refusing to clear a Redis database without a namespace: that would delete \
                 other applications' keys; set ?namespace=NAME, or flush the whole database \
                 explicitly (CLI: `clear --all`, library: clear_all())",
            )
            .with_backend(BACKEND)
            .with_context("endpoint", &self.endpoint));
        }
        self.on_nodes(|nodes| async move {
            for mut node in nodes {
                self.scan_node(&mut node, |keys, mut n| async move {
                    // One UNLINK per key: in a cluster, keys of one node span slots.
                    let mut p = redis::pipe();
                    for k in &keys {
                        p.cmd("UNLINK").arg(k).ignore();
                    }
                    p.query_async::<()>(&mut n).await.map_err(|e| self.err(e))
                })
                .await?;
            }
            Ok(())
        })
        .await
    }

    async fn flush(&self) -> Result<()> {
        // Nothing to flush (every write was acknowledged); say what the
        // cluster routing went through, for `unicache write -v`.
        if let Conn::Cluster(c) = &self.conn {
            tracing::info!("redis cluster {}: {}", self.endpoint, c.summary());
        }
        Ok(())
    }

    async fn clear_all(&self) -> Result<()> {
        self.flush_database().await
    }

    async fn len(&self) -> Result<u64> {
        self.on_nodes(|nodes| async move {
            let mut total = 0u64;
            for mut node in nodes {
                if self.namespace.is_none() {
                    let n: u64 = redis::cmd("DBSIZE")
                        .query_async(&mut node)
                        .await
                        .map_err(|e| self.err(e))?;
                    total += n;
                } else {
                    let mut count = 0u64;
                    self.scan_node(&mut node, |keys, _| {
                        count += keys.len() as u64;
                        async { Ok(()) }
                    })
                    .await?;
                    total += count;
                }
            }
            Ok(total)
        })
        .await
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let full = self.key(key);
        let r: Result<i64> = self
            .one(&full, key, redis::cmd("PTTL").arg(&full).clone())
            .await;
        Ok(match self.counters.track(r)? {
            -2 => None,
            -1 => Some(None),
            ms if ms >= 0 => Some(Some(Duration::from_millis(ms as u64))),
            _ => None,
        })
    }

    async fn keys(&self) -> Result<KeyStream> {
        // Pages are fetched lazily, node after node; memory stays at one page.
        // A PING through each connection first, so that a kept connection
        // the server dropped since is replaced before the lazy stream starts.
        let nodes = self
            .on_nodes(|mut nodes| async move {
                for n in &mut nodes {
                    let _: String = redis::cmd("PING")
                        .query_async(n)
                        .await
                        .map_err(|e| self.err(e))?;
                }
                Ok(nodes)
            })
            .await?;
        let pattern = self.pattern();
        let prefix_len = self.prefix.len();
        let endpoint = self.endpoint.clone();
        let node_cache = self.node_cache.clone();
        struct St {
            nodes: Vec<MultiplexedConnection>,
            node: usize,
            cursor: u64,
            started: bool,
            buf: std::vec::IntoIter<Vec<u8>>,
        }
        let st = St {
            nodes,
            node: 0,
            cursor: 0,
            started: false,
            buf: Vec::new().into_iter(),
        };
        let s = futures::stream::unfold(st, move |mut st| {
            let pattern = pattern.clone();
            let endpoint = endpoint.clone();
            let node_cache = node_cache.clone();
            async move {
                loop {
                    if let Some(k) = st.buf.next() {
                        let k = String::from_utf8_lossy(&k[prefix_len.min(k.len())..]).into_owned();
                        return Some((Ok(k), st));
                    }
                    if st.started && st.cursor == 0 {
                        st.node += 1;
                        st.started = false;
                    }
                    let conn = st.nodes.get_mut(st.node)?;
                    let mut c = redis::cmd("SCAN");
                    c.arg(st.cursor);
                    if let Some(p) = &pattern {
                        c.arg("MATCH").arg(p);
                    }
                    c.arg("COUNT").arg(SCAN_COUNT);
                    match c.query_async::<(u64, Vec<Vec<u8>>)>(conn).await {
                        Ok((next, keys)) => {
                            st.cursor = next;
                            st.started = true;
                            st.buf = keys.into_iter();
                        }
                        Err(e) => {
                            st.node = usize::MAX;
                            forget_on_failure(&node_cache, &e);
                            return Some((
                                Err(redis_err(e).with_context("endpoint", &endpoint)),
                                st,
                            ));
                        }
                    }
                }
            }
        });
        Ok(Box::pin(s))
    }

    async fn stats(&self) -> Result<Stats> {
        let mut s = self.counters.snapshot(BACKEND, self.endpoint());
        s.entries = Some(self.len().await?);
        let mut sums: HashMap<&str, u64> = HashMap::new();
        let infos = self.info().await?;
        let mut version = String::new();
        for info in &infos {
            for line in info.lines() {
                let Some((k, v)) = line.trim_end().split_once(':') else {
                    continue;
                };
                if k == "redis_version" {
                    version = v.to_string();
                }
                for name in [
                    "keyspace_hits",
                    "keyspace_misses",
                    "used_memory",
                    "evicted_keys",
                    "expired_keys",
                ] {
                    if k == name {
                        *sums.entry(name).or_default() += v.parse::<u64>().unwrap_or(0);
                    }
                }
                if k.starts_with("db")
                    && let Some(keys) = v.split(',').find_map(|p| p.strip_prefix("keys="))
                {
                    *sums.entry("db_keys").or_default() += keys.parse::<u64>().unwrap_or(0);
                }
            }
        }
        s.server = Some(serde_json::json!({
            "redis_version": version,
            "nodes": infos.len(),
            "namespace": self.namespace,
            "keyspace_hits": sums.get("keyspace_hits"),
            "keyspace_misses": sums.get("keyspace_misses"),
            "used_memory": sums.get("used_memory"),
            "evicted_keys": sums.get("evicted_keys"),
            "expired_keys": sums.get("expired_keys"),
            "db_keys": sums.get("db_keys").copied().unwrap_or(0),
        }));
        if let (Conn::Cluster(c), Some(serde_json::Value::Object(o))) = (&self.conn, &mut s.server)
        {
            o.insert("cluster".into(), c.stats());
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        assert_eq!(hash_slot(b"foo{}{bar}"), hash_slot(b"foo{}{bar}"));
        assert_eq!(hash_slot(b"foo{{bar}}zap"), hash_slot(b"{bar"));
    }

    #[test]
    fn glob_is_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn px_is_clamped_to_what_redis_accepts() {
        assert_eq!(px_of(Duration::MAX), MAX_PX);
        assert_eq!(px_of(Duration::from_secs(u64::MAX)), MAX_PX);
        assert_eq!(px_of(Duration::from_micros(10)), 1);
        assert_eq!(px_of(Duration::from_millis(1500)), 1500);
    }

    #[test]
    fn namespaces_with_colons_are_refused() {
        let e = check_namespace(Some("app:v2")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("\"app\""), "{e}");
        assert!(check_namespace(Some("{app}.v2")).is_ok());
        assert!(check_namespace(None).is_ok());
    }
}

/// A plain connection of our own for single-key GETs on one non-TLS server.
///
/// With redis-rs's multiplexed connection a GET goes from the caller's task
/// through a channel to the connection's driver task and its reply back
/// through another; here the calling task writes the GET and reads the reply
/// itself. It is used only when free (a concurrent GET takes the multiplexed
/// connection instead) and only for what it understands: on anything else
/// (error reply, timeout, I/O error) it steps aside, the call goes through
/// the connection manager, which reports the error, and it reconnects at
/// most once a second.
mod direct {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Where and how to connect, from the URL.
    pub(super) struct Direct {
        host: String,
        port: u16,
        /// `AUTH [user] password` and `SELECT db` to send after connecting.
        handshake: Vec<u8>,
        handshake_replies: usize,
        connect_timeout: Duration,
        response_timeout: Duration,
        state: tokio::sync::Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        conn: Option<Conn>,
        failed_at: Option<Instant>,
    }

    struct Conn {
        stream: TcpStream,
        buf: Vec<u8>,
        /// Set while a request is out: still set at the next call means the
        /// last caller was cancelled mid-exchange and a reply may be in
        /// flight, so the connection is not trusted again.
        busy: bool,
    }

    /// What a direct GET came to.
    pub(super) enum Got {
        /// The value, or `None` when the key is absent.
        Value(Option<Vec<u8>>),
        /// No answer within the response timeout.
        TimedOut,
        /// Not answered here: use the other connection.
        Elsewhere,
    }

    /// A reply we act on.
    #[derive(Debug, PartialEq)]
    pub(super) enum Reply {
        Ok,
        Nil,
        Bulk(Vec<u8>),
        /// An error or any other type: not for us to interpret.
        Other,
    }

    /// Parses one reply from the front of `b`: `None` until complete.
    pub(super) fn parse(b: &[u8]) -> Option<(Reply, usize)> {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let line = &b[..nl];
        let after = nl + 2;
        match line.first()? {
            b'+' => Some((
                if line == b"+OK" {
                    Reply::Ok
                } else {
                    Reply::Other
                },
                after,
            )),
            b'$' => {
                let Some(n) = std::str::from_utf8(&line[1..])
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                else {
                    return Some((Reply::Other, b.len()));
                };
                if n < 0 {
                    return Some((Reply::Nil, after));
                }
                let end = after + n as usize;
                if b.len() < end + 2 {
                    return None;
                }
                Some((Reply::Bulk(b[after..end].to_vec()), end + 2))
            }
            b'-' | b':' => Some((Reply::Other, after)),
            // Aggregates are never the answer to GET/AUTH/SELECT.
            _ => Some((Reply::Other, b.len())),
        }
    }

    impl Conn {
        async fn exchange(&mut self, req: &[u8], replies: usize) -> std::io::Result<Vec<Reply>> {
            self.stream.write_all(req).await?;
            let mut out = Vec::with_capacity(replies);
            let mut pos = 0;
            loop {
                while out.len() < replies {
                    match parse(&self.buf[pos..]) {
                        Some((r, used)) => {
                            pos += used;
                            out.push(r);
                        }
                        None => break,
                    }
                }
                if out.len() == replies {
                    self.buf.drain(..pos);
                    if !self.buf.is_empty() {
                        // More than was asked for: the stream is out of step.
                        return Err(std::io::Error::other("unexpected bytes after the reply"));
                    }
                    return Ok(out);
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }

    impl Direct {
        /// `None` when the URL is not a plain TCP one (TLS, Unix socket).
        pub(super) fn new(
            url: &str,
            connect_timeout: Duration,
            response_timeout: Duration,
        ) -> Option<Direct> {
            let info = redis::IntoConnectionInfo::into_connection_info(url).ok()?;
            let redis::ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
                return None;
            };
            let s = info.redis_settings();
            let mut handshake = Vec::new();
            let mut handshake_replies = 0;
            if let Some(pass) = s.password() {
                let mut auth = redis::cmd("AUTH");
                if let Some(user) = s.username() {
                    auth.arg(user);
                }
                handshake.extend(auth.arg(pass).get_packed_command());
                handshake_replies += 1;
            }
            if s.db() != 0 {
                handshake.extend(redis::cmd("SELECT").arg(s.db()).get_packed_command());
                handshake_replies += 1;
            }
            Some(Direct {
                host,
                port,
                handshake,
                handshake_replies,
                connect_timeout,
                response_timeout,
                state: tokio::sync::Mutex::new(State::default()),
            })
        }

        /// A connection, or `Err(true)` when the server did not answer in
        /// time (`Err(false)`: refused or not understood).
        async fn connect(&self) -> Result<Conn, bool> {
            let stream = match tokio::time::timeout(
                self.connect_timeout,
                TcpStream::connect((self.host.as_str(), self.port)),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(_)) => return Err(false),
                Err(_) => return Err(true),
            };
            let _ = stream.set_nodelay(true);
            let mut c = Conn {
                stream,
                buf: Vec::with_capacity(4096),
                busy: false,
            };
            if self.handshake_replies > 0 {
                let replies = tokio::time::timeout(
                    self.response_timeout,
                    c.exchange(&self.handshake, self.handshake_replies),
                )
                .await
                .map_err(|_| true)?
                .map_err(|_| false)?;
                if replies.iter().any(|r| *r != Reply::Ok) {
                    return Err(false);
                }
            }
            Ok(c)
        }

        /// GET `key` (see [`Got`]).
        pub(super) async fn get(&self, key: &[u8]) -> Got {
            match self.try_get(key).await {
                Some(Ok(v)) => Got::Value(v),
                Some(Err(())) => Got::TimedOut,
                None => Got::Elsewhere,
            }
        }

        /// `Some(Ok(value or None))`, `Some(Err(()))` when the server did
        /// not answer in time, `None` when the caller must use its other
        /// connection (busy, down, or a reply not understood).
        async fn try_get(&self, key: &[u8]) -> Option<std::result::Result<Option<Vec<u8>>, ()>> {
            let mut st = self.state.try_lock().ok()?;
            if st.conn.as_ref().is_some_and(|c| c.busy) {
                st.conn = None;
            }
            if st.conn.is_none() {
                if st
                    .failed_at
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
                {
                    return None;
                }
                match self.connect().await {
                    Ok(c) => st.conn = Some(c),
                    Err(timed_out) => {
                        st.failed_at = Some(Instant::now());
                        // The time is spent; the other connection would
                        // wait as long again.
                        return timed_out.then_some(Err(()));
                    }
                }
            }
            let conn = st.conn.as_mut()?;
            let req = redis::cmd("GET").arg(key).get_packed_command();
            conn.busy = true;
            let r = tokio::time::timeout(self.response_timeout, conn.exchange(&req, 1)).await;
            conn.busy = false;
            match r {
                Ok(Ok(mut r)) => match r.pop() {
                    Some(Reply::Bulk(v)) => Some(Ok(Some(v))),
                    Some(Reply::Nil) => Some(Ok(None)),
                    // An error reply (or anything else): the other connection
                    // will report it; this one is not trusted further.
                    _ => {
                        st.conn = None;
                        None
                    }
                },
                Err(_) => {
                    st.conn = None;
                    st.failed_at = Some(Instant::now());
                    Some(Err(()))
                }
                Ok(Err(_)) => {
                    st.conn = None;
                    st.failed_at = Some(Instant::now());
                    None
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn replies() {
            assert_eq!(
                parse(b"$3\r\nabc\r\n"),
                Some((Reply::Bulk(b"abc".to_vec()), 9))
            );
            assert_eq!(parse(b"$-1\r\n"), Some((Reply::Nil, 5)));
            assert_eq!(parse(b"+OK\r\n"), Some((Reply::Ok, 5)));
            assert_eq!(parse(b"-ERR wrong type\r\n"), Some((Reply::Other, 17)));
            assert_eq!(parse(b"$3\r\nab"), None);
            assert_eq!(parse(b"$3"), None);
            assert_eq!(parse(b"$x\r\n"), Some((Reply::Other, 4)));
            assert_eq!(parse(b"$0\r\n\r\n"), Some((Reply::Bulk(Vec::new()), 6)));
            // What goes out for a GET (redis-rs encodes it).
            assert_eq!(
                redis::cmd("GET").arg(&b"k y"[..]).get_packed_command(),
                b"*2\r\n$3\r\nGET\r\n$3\r\nk y\r\n".to_vec()
            );
        }
    }
}
