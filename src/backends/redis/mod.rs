//! `redis://`, `rediss://` and `redis+cluster://`: Redis through redis-rs.
//!
//! Single server: a `ConnectionManager` (multiplexed, reconnects by itself).
//! Cluster: our own slot map and per-node pipelines (see `cluster`), which
//! follow MOVED/ASK/TRYAGAIN and survive resharding and failover, and may
//! send reads to replicas (`read_from`, shared with Sentinel). Keys are
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

mod atomic;
mod cache_impl;
mod cluster;
mod config;
mod direct;
pub(crate) mod invalidation;
pub(crate) mod keys;
mod follow;
mod read_from;
pub(crate) mod sentinel;
mod single;

pub use config::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, RedisConfig};
use config::tls_certs;
use keys::hash_slot;
#[cfg(test)]
use keys::{MAX_PX, crc16};
use invalidation::Msg;
use keys::{check_namespace, glob_escape, px_of};

const BACKEND: &str = "redis";
/// Commands per pipeline chunk; chunks of one batch are sent concurrently.
const CHUNK: usize = 10_000;
/// Pipelines in flight at once for one batch (single server).
const IN_FLIGHT: usize = 8;
/// Pairs per MSET when a batch has no TTL.
const MSET_PAIRS: usize = 1_000;
/// Keys per SCAN step.
const SCAN_COUNT: usize = 1_000;
/// `clear`'s script for one cluster node's SCAN page: every key of the
/// page lives on that node but in many slots, so one multi-key `UNLINK`
/// would be refused (CROSSSLOT); single-key calls inside one script are not.
const UNLINK_EACH: &str = "#!lua flags=allow-cross-slot-keys
for _, k in ipairs(ARGV) do redis.call('UNLINK', k) end";
/// Redis's own bulk string limit (proto-max-bulk-len default).
const MAX_VALUE: u64 = 512 * 1024 * 1024;

#[derive(Clone)]
enum Conn {
    Single(single::SingleConn),
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
    /// The same for `get_with_ttl`, its own so that it never takes `get`'s
    /// (connected on first use).
    direct_ttl: Option<direct::Direct>,
    /// Where writes announce the keys they changed (`publish=1`, the default).
    announce: Option<Announce>,
    /// `wait=N`: replicas that must acknowledge each `set_many` pipeline.
    wait: Option<u32>,
}

/// The invalidation channel and this cache's origin (see [`invalidation`]).
struct Announce {
    channel: String,
    origin: u64,
    verb: &'static str,
    /// The channel had a subscriber at the last count (one server): the
    /// next write's pipeline ends with its message; otherwise with
    /// `PUBSUB NUMSUB` (a few bytes instead of every key), see
    /// [`RedisCache::tail_cmd`].
    listened: std::sync::atomic::AtomicBool,
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

/// `prefix` + `k`, written into `buf` (reused from key to key); `k` itself
/// without a prefix.
fn full_key<'a>(buf: &'a mut String, prefix: &str, k: &'a str) -> &'a str {
    if prefix.is_empty() {
        return k;
    }
    buf.clear();
    buf.push_str(prefix);
    buf.push_str(k);
    buf
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
            publish,
            origin,
            sentinel,
            read_from,
            wait,
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
        let conn = match sentinel {
            Some(spec) => {
                Self::open_sentinel(spec, read_from, &certs, (connect_timeout, response_timeout), &endpoint)
                    .await?
            }
            None => {
                Self::open_conn(
                    &nodes,
                    (cluster, read_from),
                    &certs,
                    (connect_timeout, response_timeout),
                    &endpoint,
                )
                .await?
            }
        };
        // Not on Sentinel: its GETs follow the master (or the replicas).
        let fixed = matches!(conn, Conn::Single(single::SingleConn::Plain(_)));
        let new_direct = || {
            fixed
                .then(|| direct::Direct::new(&nodes[0], connect_timeout, response_timeout))
                .flatten()
        };
        let (direct, direct_ttl) = (new_direct(), new_direct());
        let announce = publish.then(|| Announce {
            channel: invalidation::channel(
                invalidation::db_of(&nodes[0]),
                options.namespace.as_deref(),
            ),
            origin: origin.claim(),
            verb: if cluster { "SPUBLISH" } else { "PUBLISH" },
            listened: std::sync::atomic::AtomicBool::new(false),
        });
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
            direct_ttl,
            announce,
            wait,
        })
    }

    /// The command that announces `msg`, when writes publish.
    fn announce_cmd(&self, msg: &Msg<'_>) -> Option<Cmd> {
        let a = self.announce.as_ref()?;
        let mut c = redis::cmd(a.verb);
        c.arg(&a.channel).arg(invalidation::encode(a.origin, msg));
        Some(c)
    }

    /// Publishes `msg` after a write that could not carry it in its own
    /// round trip (a cluster: the channel has a shard of its own). A
    /// failure is logged, not returned: the write itself succeeded.
    async fn announce(&self, msg: Msg<'_>) {
        let (Some(a), Some(cmd)) = (&self.announce, self.announce_cmd(&msg)) else {
            return;
        };
        if let Err(e) = self.one::<Value>(&a.channel, &a.channel, cmd, false).await {
            tracing::warn!("redis: invalidation not published: {e}");
        }
    }

    /// On one server, the command that ends a write's pipeline (after the
    /// write: sent first, a message could be handled, and the old value
    /// read back into an L1, before the write ran, when a large pipeline
    /// arrives in several reads). When the last count saw a subscriber, the
    /// message naming `keys` (`true`); otherwise `PUBSUB NUMSUB` of the
    /// channel, which costs a few bytes where the message costs every key
    /// again (a bulk load with no L1 listening paid 10% for them).
    fn tail_cmd<'k>(&self, keys: &(dyn Fn() -> Vec<&'k str> + Sync)) -> Option<(Cmd, bool)> {
        let a = self.announce.as_ref()?;
        if a.listened.load(std::sync::atomic::Ordering::Relaxed) {
            return Some((self.announce_cmd(&Msg::Keys(&keys()))?, true));
        }
        let mut c = redis::cmd("PUBSUB");
        c.arg("NUMSUB").arg(&a.channel);
        Some((c, false))
    }

    /// After a pipeline that `tail_cmd` ended: `reply` counts the
    /// subscribers (`PUBLISH`: receivers; `NUMSUB`: `[channel, n]`), taken
    /// after the write ran. Subscribers counted by `NUMSUB` may have
    /// subscribed before the write, so its keys are published now; one
    /// that subscribes after the count subscribed after the write too, and
    /// starts with an empty L1.
    async fn tail_done<'k>(
        &self,
        keys: &(dyn Fn() -> Vec<&'k str> + Sync),
        published: bool,
        reply: &Value,
    ) {
        let Some(a) = &self.announce else { return };
        let n = match reply {
            Value::Int(n) => *n,
            Value::Array(v) => match v.get(1) {
                Some(Value::Int(n)) => *n,
                _ => 1,
            },
            _ => 1,
        };
        a.listened
            .store(n > 0, std::sync::atomic::Ordering::Relaxed);
        if !published && n > 0 {
            self.announce(Msg::Keys(&keys())).await;
        }
    }

    /// One key's write; with publishing on, its announcement (or a count of
    /// the listeners, see `tail_cmd`) goes in the same round trip on one
    /// server (a pipeline), right after on a cluster.
    async fn write_one<T: FromRedisValue>(&self, full: &str, key: &str, cmd: Cmd) -> Result<T> {
        let keys = || vec![key];
        if let (Conn::Single(c), Some((tail, published))) = (&self.conn, self.tail_cmd(&keys)) {
            let mut pipe = redis::pipe();
            pipe.add_command(cmd).add_command(tail);
            let r: Result<(T, Value)> = pipe
                .query_async(&mut c.clone())
                .await
                .map_err(|e| self.err(e));
            let (v, reply) = r.map_err(|e| e.with_context("key", key))?;
            self.tail_done(&keys, published, &reply).await;
            return Ok(v);
        }
        let v = self.one(full, key, cmd, false).await?;
        self.announce(Msg::Keys(&[key])).await;
        Ok(v)
    }

    /// The connection manager, or the cluster with its first slot map;
    /// bounded as a whole (the manager retries its first connection).
    async fn open_conn(
        nodes: &[String],
        (cluster, read_from): (bool, read_from::ReadFrom),
        certs: &Certs,
        (connect_timeout, response_timeout): (Duration, Duration),
        endpoint: &str,
    ) -> Result<Conn> {
        let fail = |e: Error| {
            e.with_context("endpoint", endpoint)
                .with_context("op", "connect")
        };
        // A cluster may have to ask several seeds for its map.
        // Saturating: a huge timeout from the URL must not overflow.
        let deadline = connect_timeout
            .saturating_add(Duration::from_millis(250))
            .saturating_add(if cluster {
                response_timeout
            } else {
                Duration::ZERO
            });
        let connect = async {
            if cluster {
                let c = cluster::Cluster::connect(
                    nodes,
                    #[allow(clippy::clone_on_copy)] // `Certs` is `Option<()>` without `tls`
                    certs.clone(),
                    (connect_timeout, response_timeout),
                    read_from,
                )
                .await
                .map_err(fail)?;
                return Ok(Conn::Cluster(c));
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
            Ok::<_, Error>(Conn::Single(single::SingleConn::Plain(m)))
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
    /// in the cluster (redirects followed, bounded by the response timeout;
    /// a `read` on a replica with `read_from`).
    async fn one<T: FromRedisValue>(&self, full: &str, key: &str, cmd: Cmd, read: bool) -> Result<T> {
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
                    resend: true,
                    read,
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
                .query_async(&mut conn.for_reads())
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

    /// `set_many` on one server: pipelines of `MSET` (no TTL) or `SET PX`,
    /// several in flight. Full keys are written into one reusable buffer
    /// (the command copies them), not allocated one by one.
    async fn set_many_single(&self, entries: &[(&str, &[u8])], px: Option<u64>) -> Result<()> {
        let Conn::Single(conn) = &self.conn else {
            return Err(Error::new(ErrorKind::Backend, "not a single server"));
        };
        // Without a TTL a pipeline is one MSET: ~100 KiB for small values,
        // which the allocator reuses; 10,000 pairs made a 1 MiB buffer
        // that came fresh from the OS (page faults) for every chunk.
        let per_pipeline = if px.is_none() { MSET_PAIRS } else { CHUNK };
        let prefix = self.prefix.as_str();
        // Index ranges, not `chunks`: a future borrowing a chunk of
        // `entries` trips the async closure's lifetime inference.
        let starts = (0..entries.len()).step_by(per_pipeline);
        futures::stream::iter(starts.map(|start| async move {
            let g = &entries[start..(start + per_pipeline).min(entries.len())];
            let mut p = redis::pipe();
            let mut key = String::new();
            match px {
                // Without a TTL, MSET: far less work per key on both sides
                // than a SET each.
                None => {
                    // Sized up front: growing it copied every pair again.
                    let bytes: usize = g
                        .iter()
                        .map(|(k, v)| prefix.len() + k.len() + v.len())
                        .sum();
                    let mut c = redis::Cmd::with_capacity(1 + 2 * g.len(), 4 + bytes);
                    c.arg("MSET");
                    for (k, v) in g {
                        c.arg(full_key(&mut key, prefix, k)).arg(*v);
                    }
                    p.add_command(c).ignore();
                }
                Some(_) => {
                    for (k, v) in g {
                        let c = Self::set_command(full_key(&mut key, prefix, k), v, px);
                        p.add_command(c).ignore();
                    }
                }
            }
            // The writes replicated, when asked (before the message: a
            // reader told of the keys then finds them on the replicas).
            if let Some(n) = self.wait {
                p.add_command(self.wait_cmd(n));
            }
            // After the writes (see `tail_cmd`).
            let keys = || g.iter().map(|(k, _)| *k).collect::<Vec<&str>>();
            let tail = self.tail_cmd(&keys);
            if let Some((t, _)) = &tail {
                p.add_command(t.clone());
            }
            if self.wait.is_none() && tail.is_none() {
                return p
                    .query_async::<()>(&mut conn.clone())
                    .await
                    .map_err(|e| self.err(e));
            }
            let replies: Vec<Value> = p
                .query_async(&mut conn.clone())
                .await
                .map_err(|e| self.err(e))?;
            let mut replies = replies.into_iter();
            if let Some(n) = self.wait {
                self.check_wait(n, replies.next())?;
            }
            if let (Some((_, published)), Some(reply)) = (tail, replies.next()) {
                self.tail_done(&keys, published, &reply).await;
            }
            Ok(())
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
            let keys = || {
                g.iter()
                    .map(|&i| &full[i][self.prefix.len()..])
                    .collect::<Vec<&str>>()
            };
            let Some((tail, published)) = self.tail_cmd(&keys) else {
                return c
                    .query_async::<u64>(&mut conn.clone())
                    .await
                    .map_err(|e| self.err(e));
            };
            let mut p = redis::pipe();
            p.add_command(c).add_command(tail);
            let (n, reply): (u64, Value) = p
                .query_async(&mut conn.clone())
                .await
                .map_err(|e| self.err(e))?;
            self.tail_done(&keys, published, &reply).await;
            Ok(n)
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
                .map_err(|e| redis_err(e).with_context("endpoint", crate::url::redact_credentials(u)))?;
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
        let c = match &self.conn {
            Conn::Cluster(c) => c,
            Conn::Single(single::SingleConn::Sentinel(s)) => return Ok(vec![s.master_url()]),
            Conn::Single(_) => return Ok(vec![self.nodes[0].clone()]),
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
        // The page before's `f`, run while the next page is asked for, so
        // the server never waits for a round trip of ours.
        let mut pending: Option<Fut> = None;
        loop {
            let mut c = redis::cmd("SCAN");
            c.arg(cursor);
            if let Some(p) = self.pattern() {
                c.arg("MATCH").arg(p);
            }
            c.arg("COUNT").arg(SCAN_COUNT);
            let scan = async { c.query_async::<(u64, Vec<Vec<u8>>)>(node).await.map_err(|e| self.err(e)) };
            let (next, keys) = match pending.take() {
                Some(before) => {
                    let (done, page) = futures::future::join(before, scan).await;
                    done?;
                    page?
                }
                None => scan.await?,
            };
            if !keys.is_empty() {
                pending = Some(f(keys, node.clone()));
            }
            if next == 0 {
                return match pending {
                    Some(last) => last.await,
                    None => Ok(()),
                };
            }
            cursor = next;
        }
    }

    /// Deletes one SCAN page of full keys from the node `n` that listed
    /// them, in one command: a multi-key `UNLINK` on a single server; in a
    /// cluster, whose node holds keys of many slots, a script that unlinks
    /// them one by one inside the server (Redis 7's `allow-cross-slot-keys`).
    /// A node that refuses the script (an older server; a slot that moved
    /// away mid-clear) gets the page as one pipeline of single-key UNLINKs.
    pub(super) async fn unlink_page(
        &self,
        keys: Vec<Vec<u8>>,
        mut n: MultiplexedConnection,
    ) -> Result<()> {
        if !matches!(self.conn, Conn::Cluster(_)) {
            let mut c = redis::cmd("UNLINK");
            c.arg(&keys);
            return c.query_async::<()>(&mut n).await.map_err(|e| self.err(e));
        }
        let mut c = redis::cmd("EVAL");
        c.arg(UNLINK_EACH).arg(0).arg(&keys);
        match c.query_async::<()>(&mut n).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_) | redis::ErrorKind::Extension) => {
                tracing::debug!("redis clear: per-key UNLINKs for a page ({e})");
                let mut p = redis::pipe();
                for k in &keys {
                    p.cmd("UNLINK").arg(k).ignore();
                }
                p.query_async::<()>(&mut n).await.map_err(|e| self.err(e))
            }
            Err(e) => Err(self.err(e)),
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
        let r = self
            .on_nodes(|nodes| async move {
                for mut n in nodes {
                    let _: () = redis::cmd("FLUSHDB")
                        .query_async(&mut n)
                        .await
                        .map_err(|e| self.err(e))?;
                }
                Ok(())
            })
            .await;
        // After a failure the outcome is unknown, but the server is failing
        // too: a tier over this cache announces it within its own time bound.
        if r.is_ok() {
            self.announce(Msg::Clear).await;
        }
        r
    }
}

#[cfg(feature = "tls")]
pub(super) fn open_client(
    url: &str,
    certs: &Option<redis::TlsCertificates>,
) -> redis::RedisResult<redis::Client> {
    match certs {
        Some(c) => redis::Client::build_with_tls(url, c.clone()),
        None => redis::Client::open(url),
    }
}

#[cfg(not(feature = "tls"))]
pub(super) fn open_client(url: &str, _certs: &Option<()>) -> redis::RedisResult<redis::Client> {
    redis::Client::open(url)
}

/// Maps a redis-rs error: retryable ones become `Connection`/`Timeout`.
pub(super) fn redis_err(e: RedisError) -> Error {
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
