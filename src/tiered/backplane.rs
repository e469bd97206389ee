//! The Redis backplane: key-only invalidation messages between processes.
//!
//! One channel per Redis database and namespace, `unicache:l1:<db>:<ns>`
//! (pub/sub is server-wide, so the database is part of the name). A single
//! server uses `PUBLISH`/`SUBSCRIBE`; a cluster uses `SPUBLISH`/`SSUBSCRIBE`
//! on the channel's shard, found by following `MOVED` from any seed, so a
//! message stays within one shard instead of crossing the cluster bus.
//!
//! The channel name and the message format live with the Redis backend
//! (`backends::redis::invalidation`), whose own writes publish them too. A
//! process skips its own origin. A receiver only evicts; it never reads L2.
//!
//! Hits need a lease the supervisor renews every [`TICK`] (see
//! `Subscriber::watch`): a process that was stopped or starved reads L2
//! until it has drained the messages queued meanwhile.
//!
//! The subscriber is one RESP3 connection whose pushes are handled inside
//! the connection's own task (no hop), by [`PushHandler`]. With
//! `l1_invalidation=tracking` it also runs client tracking (`tracking`); on
//! a cluster, tracking is one more connection per master instead
//! (`cluster_tracking`), with the same handler. When any of them drops
//! (the library's disconnection push, an unsolicited unsubscribe, or a
//! heartbeat PING unanswered within 1 s), or a cluster's masters change,
//! L1 is turned off and flushed at once, and stays off (reads go to L2,
//! nothing is filled) until all are re-established; then it is flushed
//! again and turned on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{
    AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};

use super::cluster_tracking::Trackers;
use super::config::Invalidation;
use super::l1::{FRESH, L1, coarse_now};
use super::stats::{add, set};
use super::tracking;
use crate::backends::redis::RedisConfig;
pub(crate) use crate::backends::redis::invalidation::Msg;
use crate::backends::redis::invalidation::{Origin, Received, channel, db_of, decode, encode};
use crate::error::{Error, ErrorKind, Result};

/// How often the subscription is checked with a PING, and how long it may take.
const HEARTBEAT: Duration = Duration::from_millis(500);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the backplane task renews [`FRESH`] (100 wake-ups a second,
/// no network traffic).
const TICK: Duration = Duration::from_millis(10);
/// How long a failover announced by a sentinel keeps the backplane off
/// the old master while the sentinels still name it.
const PAUSE_MAX: Duration = Duration::from_secs(10);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Applies a message from another process (or a Redis cache's write) to L1.
fn apply(l1: &L1, origin: u64, payload: &[u8]) {
    match decode(origin, payload) {
        Some(Received::Keys(keys)) => {
            keys.iter().for_each(|k| l1.evict(k));
            add(&l1.stats.invalidations_received, keys.len() as u64);
        }
        Some(Received::Clear) => {
            l1.flush();
            add(&l1.stats.invalidations_received, 1);
        }
        None => {}
    }
}

/// Where the channel lives: the node last used, the seeds to fall back on.
struct Route {
    seeds: Vec<String>,
    current: Mutex<(String, Option<MultiplexedConnection>)>,
}

impl Route {
    fn node(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn set_node(&self, url: String) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = (url, None);
    }

    /// After a failure at `node`: the next seed.
    fn next_seed(&self, node: &str) {
        let i = self
            .seeds
            .iter()
            .position(|s| s == node)
            .map_or(0, |i| i + 1);
        self.set_node(self.seeds[i % self.seeds.len()].clone());
    }

    /// `node` with its host and port replaced by a `MOVED` target
    /// (`host:port`, as redis-rs's `redirect_node` gives it with the slot).
    fn redirect(&self, node: &str, addr: &str) {
        match with_addr(node, addr) {
            Some(u) => self.set_node(u),
            None => self.next_seed(node),
        }
    }
}

/// The URL `node` (credentials, database, scheme kept) with its host and
/// port replaced by `addr` (`host:port`, an IPv6 host bracketed or not).
pub(super) fn with_addr(node: &str, addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_matches(['[', ']']);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let mut u = url::Url::parse(node).ok()?;
    u.set_host(Some(&host)).ok()?;
    u.set_port(Some(port.parse::<u16>().ok()?)).ok()?;
    Some(u.to_string())
}

/// The settings both connections need.
pub(super) struct Link {
    route: Route,
    /// Sentinel: the configuration to find the master with. The route's
    /// node is then the seed (a template, never connected to) until found,
    /// and again after any failure.
    sentinel: Option<RedisConfig>,
    /// Sentinel: a failover of the master began (`+selected-slave`) while
    /// subscribed to this node: it is not subscribed to again until the
    /// sentinels name another (at most [`PAUSE_MAX`]), since writes to the
    /// promoted replica would publish where this subscriber is not.
    paused: Mutex<Option<(String, std::time::Instant)>>,
    cluster: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
    endpoint: String,
}

impl Link {
    pub(super) fn err(&self, kind: ErrorKind, what: &str, e: impl std::fmt::Display) -> Error {
        Error::new(kind, format!("{what} at {}: {e}", self.endpoint)).with_backend("tiered")
    }

    pub(super) fn client(&self, node: &str, resp3: bool) -> Result<redis::Client> {
        let info = node
            .into_connection_info()
            .map_err(|e| self.err(ErrorKind::InvalidUrl, "backplane", e))?;
        let info = if resp3 {
            let rs = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            info.set_redis_settings(rs)
        } else {
            info
        };
        redis::Client::open(info).map_err(|e| self.err(ErrorKind::InvalidUrl, "backplane", e))
    }

    /// The node to use: the route's, or on Sentinel, the master the
    /// sentinels name when the route is back at its seed.
    async fn node(&self) -> Result<String> {
        let node = self.route.node();
        let Some(cfg) = &self.sentinel else {
            return Ok(node);
        };
        if !self.route.seeds.contains(&node) {
            return Ok(node);
        }
        match crate::backends::redis::sentinel::current_master(cfg).await {
            Some(Ok(url)) => {
                let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((old, at)) = paused.as_ref()
                    && *old == url
                    && at.elapsed() < PAUSE_MAX
                {
                    return Err(self.err(
                        ErrorKind::Connection,
                        "subscribing",
                        "failover in progress",
                    ));
                }
                *paused = None;
                drop(paused);
                self.route.set_node(url.clone());
                Ok(url)
            }
            Some(Err(e)) => Err(self.err(ErrorKind::Connection, "finding the master", e)),
            None => Ok(node),
        }
    }

    pub(super) fn config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
    }
}

/// The L2's Redis as a backplane: a publisher and a supervised subscriber.
pub(crate) struct Backplane {
    publisher: Arc<Publisher>,
    task: tokio::task::JoinHandle<()>,
    mode: Invalidation,
    /// The L2 publishes its own writes as this backplane's origin.
    pub l2_publishes: bool,
}

/// The publishing side, shared with its retry task.
struct Publisher {
    origin: u64,
    channel: String,
    link: Link,
    /// Invalidations not confirmed within their write's call, which the
    /// retry task sends again; given up after `give_up` (L1's TTL cap: by
    /// then every copy they would evict has expired).
    pending: Mutex<Pending>,
    give_up: Duration,
}

#[derive(Default)]
struct Pending {
    keys: std::collections::HashSet<String>,
    clear: bool,
    /// When the oldest entry was queued; `None` when no retry task runs.
    since: Option<std::time::Instant>,
}

/// Keys queued for a retry beyond which a `clear` is sent instead.
const MAX_PENDING: usize = 10_000;
/// Longest wait between two retries of a queued invalidation.
const RETRY_MAX: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backplane")
            .field("channel", &self.publisher.channel)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Drop for Backplane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn link(cfg: &RedisConfig) -> Link {
    Link {
        route: Route {
            seeds: cfg.nodes.clone(),
            current: Mutex::new((cfg.nodes[0].clone(), None)),
        },
        cluster: cfg.cluster,
        sentinel: cfg.is_sentinel().then(|| cfg.clone()),
        paused: Mutex::new(None),
        connect_timeout: cfg.connect_timeout,
        response_timeout: cfg.response_timeout,
        endpoint: cfg.endpoint.clone(),
    }
}

impl Backplane {
    /// Subscribes (waiting up to the connect timeout for the first
    /// subscription) and starts the supervisor that keeps it up.
    pub async fn start(
        cfg: &RedisConfig,
        namespace: Option<&str>,
        mode: Invalidation,
        l1: Arc<L1>,
    ) -> Result<Self> {
        if cfg.nodes.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidUrl,
                "redis: no node to subscribe to",
            ));
        }
        if cfg.tls_ca.is_some() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: the L1 backplane does not take tls_ca yet; use l1_invalidation=none",
                    cfg.endpoint
                ),
            ));
        }
        let channel = channel(db_of(&cfg.nodes[0]), namespace);
        // The one publishing Redis cache opened from this configuration
        // (the L2, when one URL opened both) sends as this origin: the
        // messages of its writes are skipped here too, and it publishes
        // them itself.
        let (origin, l2_publishes) = match cfg.origin.sole_cache() {
            Some(o) => (o, true),
            None => (Origin::fresh(), false),
        };
        let give_up = l1.cap();
        let sub = Arc::new(Subscriber {
            link: link(cfg),
            channel: channel.clone(),
            origin,
            prefix: namespace.map(|n| format!("{n}:")),
            tracking: mode == Invalidation::Tracking,
            l1,
        });
        let first = tokio::time::timeout(cfg.connect_timeout, sub.connect()).await;
        let conn = match first {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(sub.link.err(ErrorKind::Timeout, "subscribing", "no answer"));
            }
        };
        let task = tokio::spawn(sub.clone().supervise(Some(conn)));
        Ok(Backplane {
            publisher: Arc::new(Publisher {
                origin,
                channel,
                link: link(cfg),
                pending: Mutex::default(),
                give_up,
            }),
            task,
            mode,
            l2_publishes,
        })
    }

    /// Publishes `msg` for a write that began at `started`; returns after
    /// Redis accepted it. The write's call as a whole stays within one
    /// response timeout: the message gets what is left of it (at least a
    /// tenth, for a reply already on its way). A message not confirmed by
    /// then is queued and sent again in the background, so the other
    /// processes still hear of the write once Redis answers.
    pub async fn publish(&self, msg: Msg<'_>, started: std::time::Instant) -> Result<()> {
        let p = &self.publisher;
        let rt = p.link.response_timeout;
        let budget = rt.saturating_sub(started.elapsed()).max(rt / 10);
        let payload = encode(p.origin, &msg);
        let e = match tokio::time::timeout(budget, p.try_publish(&payload)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => p.link.err(ErrorKind::Timeout, "publishing", "no answer"),
        };
        Publisher::defer(p, &msg);
        Err(e)
    }
}

impl Publisher {
    /// Queues `msg` for the retry task (started if none runs).
    fn defer(this: &Arc<Self>, msg: &Msg<'_>) {
        let mut p = this.pending.lock().unwrap_or_else(|p| p.into_inner());
        match msg {
            Msg::Clear => p.clear = true,
            Msg::Keys(keys) => p.keys.extend(keys.iter().map(|k| k.to_string())),
        }
        if p.keys.len() > MAX_PENDING {
            // Too many to name: the other processes flush their L1 instead.
            p.clear = true;
            p.keys = Default::default();
        }
        if p.since.is_none() {
            p.since = Some(std::time::Instant::now());
            tokio::spawn(this.clone().retry());
        }
    }

    /// Sends what is queued until it is confirmed or `give_up` has passed.
    async fn retry(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let (keys, clear) = {
                let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let old = p.since.is_some_and(|t| t.elapsed() > self.give_up);
                if old || (p.keys.is_empty() && !p.clear) {
                    if old {
                        tracing::warn!(
                            "tiered cache: invalidations not sent within {:?}, dropped: the \
                             copies they were for have expired",
                            self.give_up
                        );
                    }
                    *p = Pending::default();
                    return;
                }
                (std::mem::take(&mut p.keys), std::mem::take(&mut p.clear))
            };
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let msg = if clear { Msg::Clear } else { Msg::Keys(&refs) };
            let payload = encode(self.origin, &msg);
            let rt = self.link.response_timeout;
            match tokio::time::timeout(rt, self.try_publish(&payload)).await {
                Ok(Ok(())) => {
                    backoff = BACKOFF_MIN;
                    // What was queued meanwhile is timed from now.
                    let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                    p.since = Some(std::time::Instant::now());
                }
                _ => {
                    {
                        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                        p.clear |= clear;
                        p.keys.extend(keys);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn try_publish(&self, payload: &[u8]) -> Result<()> {
        let l = &self.link;
        let verb = if l.cluster { "SPUBLISH" } else { "PUBLISH" };
        let mut last = None;
        for _ in 0..4 {
            let node = match l.node().await {
                Ok(n) => n,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let mut conn = match self.conn(&node).await {
                Ok(c) => c,
                Err(e) => {
                    l.route.next_seed(&node);
                    last = Some(e);
                    continue;
                }
            };
            let mut cmd = redis::cmd(verb);
            cmd.arg(&self.channel).arg(payload);
            // Sentinel: ROLE in the same round trip. A demoted master still
            // takes a PUBLISH, but its subscribers have moved on: the
            // message goes again to the master the sentinels name.
            let sent = if l.sentinel.is_some() {
                let mut p = redis::pipe();
                p.cmd("ROLE").add_command(cmd);
                p.query_async::<(Value, Value)>(&mut conn)
                    .await
                    .map(|(role, _)| is_master(&role))
            } else {
                cmd.query_async::<Value>(&mut conn).await.map(|_| true)
            };
            match sent {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    l.route.next_seed(&node);
                    last = Some(l.err(ErrorKind::Connection, "publishing", "not the master"));
                }
                Err(e) => {
                    if let Some((addr, _slot)) = e.redirect_node() {
                        l.route.redirect(&node, addr);
                    } else {
                        l.route.next_seed(&node);
                    }
                    last = Some(l.err(ErrorKind::Connection, "publishing", e));
                }
            }
        }
        Err(last.unwrap_or_else(|| l.err(ErrorKind::Connection, "publishing", "no node")))
    }

    async fn conn(&self, node: &str) -> Result<MultiplexedConnection> {
        let l = &self.link;
        {
            let cur = l.route.current.lock().unwrap_or_else(|p| p.into_inner());
            if cur.0 == node
                && let Some(c) = &cur.1
            {
                return Ok(c.clone());
            }
        }
        let client = l.client(node, false)?;
        let c = client
            .get_multiplexed_async_connection_with_config(&l.config())
            .await
            .map_err(|e| l.err(ErrorKind::Connection, "backplane connect", e))?;
        let mut cur = l.route.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.0 == node {
            cur.1 = Some(c.clone());
        }
        Ok(c)
    }
}

/// The subscribing side, shared with its supervisor task.
struct Subscriber {
    link: Link,
    channel: String,
    origin: u64,
    /// `ns:` for tracking's BCAST prefix and for stripping invalidated keys.
    prefix: Option<String>,
    tracking: bool,
    l1: Arc<L1>,
}

/// Whether a `ROLE` reply is a master's.
fn is_master(role: &Value) -> bool {
    match role {
        Value::Array(parts) => {
            matches!(
                parts.first(),
                Some(Value::BulkString(b)) if b.as_slice() == b"master"
            ) || matches!(parts.first(), Some(Value::SimpleString(s)) if s == "master")
        }
        _ => false,
    }
}

/// A live subscription: its connection, the tracking connections to every
/// master on a cluster, and the signal that one of them was lost.
struct Live {
    conn: MultiplexedConnection,
    /// Sentinel: the configuration and the node subscribed to. The
    /// heartbeat also asks a sentinel which node is the master: one that
    /// is no longer named counts as lost (its publishers have moved to the
    /// new master; a demoted master says `master` for seconds, until the
    /// sentinels reconfigure it).
    sentinel: Option<(RedisConfig, String)>,
    trackers: Option<Trackers>,
    lost: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Live {
    /// A PING round trip on every connection (no masters check): the
    /// pushes queued before each reply have been handled when it is `true`.
    async fn drain(&self) -> bool {
        let mut conn = self.conn.clone();
        let ping = async move {
            redis::cmd("PING")
                .query_async::<Value>(&mut conn)
                .await
                .is_ok()
        };
        match &self.trackers {
            None => ping.await,
            Some(t) => {
                let (a, b) = tokio::join!(ping, t.drain());
                a && b
            }
        }
    }

    /// Whether every connection answers (and, on a cluster with tracking,
    /// the masters are the same); the caller bounds the time.
    async fn healthy(&self) -> bool {
        let mut conn = self.conn.clone();
        let sentinel = self.sentinel.as_ref();
        let ping = async move {
            if let Some((cfg, node)) = sentinel {
                let named = crate::backends::redis::sentinel::named_master(cfg);
                let cmd = redis::cmd("ROLE");
                let role = cmd.query_async::<Value>(&mut conn);
                let (named, role) = tokio::join!(named, role);
                // No sentinel answering is not a reason to drop a working
                // subscription.
                return role.is_ok_and(|r| is_master(&r)) && named.is_none_or(|n| n == *node);
            }
            redis::cmd("PING")
                .query_async::<Value>(&mut conn)
                .await
                .is_ok()
        };
        match &self.trackers {
            None => ping.await,
            Some(t) => {
                let (a, b) = tokio::join!(ping, t.healthy(&self.conn));
                a && b
            }
        }
    }
}

/// Handles pushes inside the connection's task: evicts at once.
pub(super) struct PushHandler {
    sub: Arc<Subscriber>,
    lost: tokio::sync::mpsc::UnboundedSender<()>,
}

impl AsyncPushSender for PushHandler {
    fn send(&self, info: PushInfo) -> std::result::Result<(), SendError> {
        let s = &self.sub;
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                if let Some(Value::BulkString(p)) = info.data.get(1) {
                    apply(&s.l1, s.origin, p);
                }
            }
            PushKind::Invalidate => tracking::apply(&s.l1, s.prefix.as_deref(), &info.data),
            // Unsolicited unsubscribes come when a cluster slot moves away.
            // A replaced connection's late push finds its receiver gone and
            // must not turn off the L1 its successor serves.
            PushKind::Disconnection | PushKind::SUnsubscribe | PushKind::Unsubscribe
                if self.lost.send(()).is_ok() =>
            {
                s.l1.lose();
            }
            _ => {}
        }
        Ok(())
    }
}

type Lost = tokio::sync::mpsc::UnboundedSender<()>;

impl Subscriber {
    /// Connects, subscribes (following `MOVED` on a cluster), on a cluster
    /// with tracking opens the tracking connections, and turns L1 on.
    async fn connect(self: &Arc<Self>) -> Result<Live> {
        let (mut live, tx) = self.subscribe().await?;
        if self.tracking && self.link.cluster {
            let node = self.link.route.node();
            let link = &self.link;
            let err =
                |e: &dyn std::fmt::Display| link.err(ErrorKind::Connection, "client tracking", e);
            let open = |master: &str| {
                let url = with_addr(&node, master);
                let handler = PushHandler {
                    sub: self.clone(),
                    lost: tx.clone(),
                };
                let config = link.config().set_push_sender(handler);
                let master = master.to_string();
                async move {
                    let url = url.ok_or_else(|| err(&format!("bad master address {master}")))?;
                    link.client(&url, true)?
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map_err(|e| err(&format!("{master}: {e}")))
                }
            };
            let t = Trackers::connect(&mut live.conn, self.prefix.as_deref(), err, open).await?;
            set(&self.l1.stats.tracked_masters, t.len() as u64);
            live.trackers = Some(t);
        }
        // Sentinel: a failover beginning is a lost subscription at once
        // (before the promoted replica takes a write whose message would
        // go to its own subscribers, not to ours on the old master).
        if let Some(cfg) = &self.link.sentinel
            && let Some(mut events) = crate::backends::redis::sentinel::failover_events(cfg).await
        {
            let tx = tx.clone();
            let (sub, node) = (self.clone(), self.link.route.node());
            tokio::spawn(async move {
                use futures::StreamExt;
                tokio::select! {
                    Some(()) = events.next() => {
                        *sub.link.paused.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((node, std::time::Instant::now()));
                        let _ = tx.send(());
                    }
                    _ = tx.closed() => {}
                }
            });
        }
        drop(tx);
        // A connection lost while the others were being opened.
        if live.lost.try_recv().is_ok() {
            return Err(self
                .link
                .err(ErrorKind::Connection, "subscribing", "connection lost"));
        }
        self.l1.go_live();
        Ok(live)
    }

    /// The subscription, with a sender of its loss signal for more connections.
    async fn subscribe(self: &Arc<Self>) -> Result<(Live, Lost)> {
        let mut last = None;
        for _ in 0..4 {
            let node = match self.link.node().await {
                Ok(n) => n,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match self.try_node(&node).await {
                Ok(live) => return Ok(live),
                Err((e, redirect)) => {
                    match redirect {
                        Some(addr) => self.link.route.redirect(&node, &addr),
                        None => self.link.route.next_seed(&node),
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            self.link
                .err(ErrorKind::Connection, "subscribing", "no node")
        }))
    }

    async fn try_node(
        self: &Arc<Self>,
        node: &str,
    ) -> std::result::Result<(Live, Lost), (Error, Option<String>)> {
        let l = &self.link;
        let (tx, lost) = tokio::sync::mpsc::unbounded_channel();
        let handler = PushHandler {
            sub: self.clone(),
            lost: tx.clone(),
        };
        let client = l.client(node, true).map_err(|e| (e, None))?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&l.config().set_push_sender(handler))
            .await
            .map_err(|e| (l.err(ErrorKind::Connection, "subscribing", e), None))?;
        let verb = if l.cluster { "SSUBSCRIBE" } else { "SUBSCRIBE" };
        if let Err(e) = redis::cmd(verb)
            .arg(&self.channel)
            .query_async::<Value>(&mut conn)
            .await
        {
            let to = e.redirect_node().map(|(addr, _slot)| addr.to_string());
            return Err((l.err(ErrorKind::Connection, "subscribing", e), to));
        }
        // On a cluster, each master gets its own tracking connection.
        if self.tracking && !l.cluster {
            tracking::enable(&mut conn, self.prefix.as_deref())
                .await
                .map_err(|e| (l.err(ErrorKind::Backend, "client tracking", e), None))?;
        }
        let live = Live {
            conn,
            sentinel: l.sentinel.clone().map(|c| (c, node.to_string())),
            trackers: None,
            lost,
        };
        Ok((live, tx))
    }

    /// Keeps the subscription up: waits for its loss (or a failed
    /// heartbeat), then resubscribes with backoff.
    async fn supervise(self: Arc<Self>, mut live: Option<Live>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if let Some(l) = live.take() {
                self.watch(l).await;
                self.l1.lose();
                // Sentinel: ask again where the master is.
                if self.link.sentinel.is_some() {
                    self.link.route.set_node(self.link.route.seeds[0].clone());
                }
                backoff = BACKOFF_MIN;
            }
            match self.connect().await {
                Ok(l) => {
                    add(&self.l1.stats.resubscribes, 1);
                    live = Some(l);
                }
                Err(e) => {
                    tracing::warn!("tiered cache: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Returns when the subscription is lost or stops answering.
    ///
    /// Every [`TICK`] it also lets L1 serve hits for [`FRESH`] more: a
    /// hit is then known to come from a process whose backplane task ran
    /// less than `FRESH` ago. When a tick comes later than that (the process
    /// was stopped, or starved of CPU), hits have already stopped and
    /// invalidations may sit unread in the sockets: a PING round trip on
    /// every connection reads everything queued before it (the replies come
    /// in order, after the pushes), and only then are hits served again.
    async fn watch(&self, mut l: Live) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let fresh = FRESH.as_micros() as u64;
        let mut last = coarse_now();
        let mut beat = tokio::time::Instant::now() + HEARTBEAT;
        loop {
            tokio::select! {
                biased;
                _ = l.lost.recv() => return,
                _ = tick.tick() => {
                    let now = coarse_now();
                    let due = tokio::time::Instant::now() >= beat;
                    if due || now.saturating_sub(last) > fresh {
                        let sent = coarse_now();
                        let check = async {
                            if due {
                                l.healthy().await
                            } else {
                                l.drain().await
                            }
                        };
                        if !matches!(tokio::time::timeout(HEARTBEAT_TIMEOUT, check).await, Ok(true)) {
                            return;
                        }
                        if due {
                            beat = tokio::time::Instant::now() + HEARTBEAT;
                        }
                        self.l1.alive_until(sent, FRESH);
                        last = coarse_now();
                    } else {
                        self.l1.alive_until(now, FRESH);
                        last = now;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiered::config::TierConfig;

    #[test]
    fn messages_round_trip_and_own_are_skipped() {
        let l1 = L1::new(&TierConfig::new(10), true, Duration::ZERO);
        for k in ["a", "b", "c\nd"] {
            let t = l1.ticket(k);
            l1.fill(k, &t, b"v", None);
        }
        apply(&l1, 1, &encode(1, &Msg::Keys(&["a"])));
        assert!(l1.get("a").is_some(), "own message applied");
        apply(&l1, 1, &encode(2, &Msg::Keys(&["a"])));
        assert!(l1.get("a").is_none());
        apply(&l1, 1, &encode(2, &Msg::Keys(&["b", "c\nd"])));
        assert!(l1.get("b").is_none() && l1.get("c\nd").is_none());
        let t = l1.ticket("x");
        l1.fill("x", &t, b"v", None);
        apply(&l1, 1, &encode(2, &Msg::Clear));
        assert!(l1.get("x").is_none());
        apply(&l1, 1, b"garbage");
        apply(&l1, 1, b"");
    }

    #[test]
    fn a_node_url_takes_a_new_address_and_keeps_the_rest() {
        let base = "redis://user:pw@127.0.0.1:7000/2";
        assert_eq!(
            with_addr(base, "10.0.0.5:7001").as_deref(),
            Some("redis://user:pw@10.0.0.5:7001/2")
        );
        for v6 in ["::1:7002", "[::1]:7002"] {
            assert_eq!(
                with_addr(base, v6).as_deref(),
                Some("redis://user:pw@[::1]:7002/2")
            );
        }
        for bad in ["nohost", "h:port", "h:70000", ""] {
            assert_eq!(with_addr(base, bad), None, "{bad}");
        }
    }
}
