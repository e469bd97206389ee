//! Following a Sentinel-managed master (found by `sentinel`).
//!
//! The connection to the master ([`SentinelConn`]) is rediscovered when a
//! command fails for a connection reason or gets a `READONLY` reply (the
//! old master came back as a replica), when a sentinel announces
//! `+switch-master`, or when the once-a-second check finds the sentinels
//! naming another node. A failed command is not sent again here: its error
//! is transient, and the caller (the writer's retries) decides.
//!
//! `read_from=replica|nearest` sends reads (GET, MGET, EXISTS, GET+PTTL) to
//! the replicas the sentinels list as up and linked to their master
//! (`SENTINEL REPLICAS`), refreshed by the same check; with none, reads go
//! to the master. A replica may not have a write the master acknowledged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::sentinel::{
    Messages, Reach, SentinelSpec, ask_sentinel, concerns, find_master, list_replicas,
    node_url, subscribe_events,
};
use super::BACKEND;
use super::read_from::{ReadFrom, ping_rtt};
use crate::error::{Error, ErrorKind, Result};

/// How often the sentinels are asked whether the master moved (besides
/// the `+switch-master` messages and failed commands).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// After a failed rediscovery, callers within this long get its error at
/// once instead of asking the sentinels again.
const RETRY_GAP: Duration = Duration::from_millis(50);
/// How long a failover a sentinel announced (`+selected-slave`) keeps
/// writes off the old master while the sentinels still name it.
const PAUSE_MAX: Duration = Duration::from_secs(10);

struct Current {
    /// Bumped at every new master connection.
    generation: u64,
    url: String,
    conn: MultiplexedConnection,
    /// A command failed on `conn`: the next one rediscovers first.
    stale: bool,
}

/// A reader: its URL, connection and last PING time.
struct Reader {
    url: String,
    conn: MultiplexedConnection,
    rtt: Duration,
}

struct Inner {
    spec: SentinelSpec,
    reach: Reach,
    read_from: ReadFrom,
    current: RwLock<Current>,
    /// One rediscovery at a time; holds when the last one failed and why.
    refresh: tokio::sync::Mutex<Option<(Instant, Error)>>,
    /// The sentinel that answered last.
    preferred: AtomicUsize,
    readers: RwLock<Vec<Reader>>,
    next_reader: AtomicUsize,
    /// A failover of this master began (a sentinel selected the replica
    /// to promote): the old master's URL and when. Until the sentinels name
    /// another master (or [`PAUSE_MAX`]), it is not used again: what it
    /// acknowledged after the replica's promotion would be lost.
    paused: Mutex<Option<(String, Instant)>>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.watcher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

/// The connection to a Sentinel-managed master, following its failovers.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    inner: Arc<Inner>,
    /// The generation of the master connection this handle last used.
    seen: u64,
}

/// Whether `e` means the node should be found again.
fn lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code() == Some("READONLY")
        || e.code() == Some("MASTERDOWN")
}

fn readonly_in(values: &[Value]) -> bool {
    values.iter().any(|v| match v {
        Value::ServerError(e) => e.code() == "READONLY",
        Value::Array(a) => readonly_in(a),
        _ => false,
    })
}

impl SentinelConn {
    /// Finds the master (within the connect and response timeouts) and
    /// starts the watcher that follows it.
    pub(crate) async fn connect(spec: SentinelSpec, reach: Reach, read_from: ReadFrom) -> Result<Self> {
        let (i, url, conn) = find_master(&spec, &reach, 0).await?;
        let inner = Arc::new(Inner {
            preferred: AtomicUsize::new(i),
            spec,
            reach,
            read_from,
            current: RwLock::new(Current {
                generation: 1,
                url,
                conn,
                stale: false,
            }),
            refresh: tokio::sync::Mutex::new(None),
            readers: RwLock::new(Vec::new()),
            next_reader: AtomicUsize::new(0),
            paused: Mutex::new(None),
            watcher: Mutex::new(None),
        });
        if read_from != ReadFrom::Master {
            refresh_readers(&inner).await;
        }
        let task = tokio::spawn(watch(Arc::downgrade(&inner)));
        *inner.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(SentinelConn { inner, seen: 1 })
    }

    /// The current master's URL (with the data credentials).
    pub(crate) fn master_url(&self) -> String {
        self.inner.current.read().unwrap_or_else(|p| p.into_inner()).url.clone()
    }

    /// The master connection, found again first when the last one failed.
    async fn master(&mut self) -> redis::RedisResult<MultiplexedConnection> {
        {
            let cur = self.inner.current.read().unwrap_or_else(|p| p.into_inner());
            if !cur.stale {
                self.seen = cur.generation;
                return Ok(cur.conn.clone());
            }
        }
        let (generation, conn) = rediscover(&self.inner).await.map_err(to_redis)?;
        self.seen = generation;
        Ok(conn)
    }

    fn failed(&self, e: &RedisError) {
        if lost(e) {
            mark_stale(&self.inner, self.seen);
        }
    }

    /// The connection reads go to: a replica's (`read_from`), or `None`
    /// for the master's.
    pub(crate) fn reader(&self) -> Option<ReaderConn> {
        let inner = &self.inner;
        if inner.read_from == ReadFrom::Master {
            return None;
        }
        let readers = inner.readers.read().unwrap_or_else(|p| p.into_inner());
        // The master is listed (for `nearest`) with an empty URL.
        let replicas: Vec<&Reader> = readers.iter().filter(|r| !r.url.is_empty()).collect();
        let rtts: Vec<Duration> = replicas.iter().map(|r| r.rtt).collect();
        let master = readers
            .iter()
            .find(|r| r.url.is_empty())
            .map_or(Duration::MAX, |r| r.rtt);
        let turn = inner.next_reader.fetch_add(1, Ordering::Relaxed);
        let pick = replicas[inner.read_from.pick(master, &rtts, turn)?];
        Some(ReaderConn {
            conn: pick.conn.clone(),
            inner: Arc::downgrade(inner),
            url: pick.url.clone(),
        })
    }
}

/// A replica's connection for reads; a connection error drops it from the
/// readers until the next check.
#[derive(Clone)]
pub(crate) struct ReaderConn {
    conn: MultiplexedConnection,
    inner: Weak<Inner>,
    url: String,
}

impl ReaderConn {
    fn failed(&self, e: &RedisError) {
        if !lost(e) {
            return;
        }
        if let Some(inner) = self.inner.upgrade() {
            inner
                .readers
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|r| r.url != self.url);
        }
    }
}

impl ConnectionLike for ReaderConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.conn.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.failed(e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r {
                self.failed(e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut c = self.master().await?;
            let r = c.req_packed_command(cmd).await;
            match &r {
                Err(e) => self.failed(e),
                Ok(Value::ServerError(e)) if e.code() == "READONLY" => {
                    mark_stale(&self.inner, self.seen)
                }
                _ => {}
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut c = self.master().await?;
            let r = c.req_packed_commands(pipeline, offset, count).await;
            match &r {
                Err(e) => self.failed(e),
                Ok(v) if readonly_in(v) => mark_stale(&self.inner, self.seen),
                _ => {}
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.current.read().unwrap_or_else(|p| p.into_inner()).conn.get_db()
    }
}

fn mark_stale(inner: &Inner, generation: u64) {
    let mut cur = inner.current.write().unwrap_or_else(|p| p.into_inner());
    if cur.generation == generation {
        cur.stale = true;
    }
}

/// Our error as redis-rs's (a connection error, so that it stays transient).
fn to_redis(e: Error) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        e.to_string(),
    ))
}

/// Finds the master again (one caller at a time; the others take its
/// result). Returns the new generation and connection.
async fn rediscover(inner: &Inner) -> Result<(u64, MultiplexedConnection)> {
    let mut last = inner.refresh.lock().await;
    {
        let cur = inner.current.read().unwrap_or_else(|p| p.into_inner());
        if !cur.stale {
            return Ok((cur.generation, cur.conn.clone()));
        }
    }
    if let Some((at, e)) = last.as_ref()
        && at.elapsed() < RETRY_GAP
    {
        return Err(e.clone());
    }
    let first = inner.preferred.load(Ordering::Relaxed);
    let found = find_master(&inner.spec, &inner.reach, first).await.and_then(|f| {
        let mut paused = inner.paused.lock().unwrap_or_else(|p| p.into_inner());
        match paused.as_ref() {
            Some((old, at)) if *old == f.1 && at.elapsed() < PAUSE_MAX => Err(Error::new(
                ErrorKind::Connection,
                format!("failover of {:?} in progress", inner.spec.master),
            )
            .with_backend(BACKEND)),
            _ => {
                *paused = None;
                Ok(f)
            }
        }
    });
    match found {
        Ok((i, url, conn)) => {
            inner.preferred.store(i, Ordering::Relaxed);
            *last = None;
            let mut cur = inner.current.write().unwrap_or_else(|p| p.into_inner());
            if cur.url != url {
                tracing::info!(
                    "redis sentinel {:?}: master moved to {}",
                    inner.spec.master,
                    crate::url::redact_credentials(&url)
                );
            }
            cur.generation += 1;
            cur.url = url;
            cur.conn = conn.clone();
            cur.stale = false;
            Ok((cur.generation, conn))
        }
        Err(e) => {
            *last = Some((Instant::now(), e.clone()));
            Err(e)
        }
    }
}

/// Rebuilds the readers: the replicas the sentinels list (and, for
/// `nearest`, the master, with an empty URL), each with its PING time.
async fn refresh_readers(inner: &Inner) {
    let first = inner.preferred.load(Ordering::Relaxed);
    let n = inner.spec.sentinels.len();
    let mut urls = None;
    for i in (0..n).map(|k| (first + k) % n) {
        if let Some(u) = list_replicas(&inner.reach, &inner.spec.sentinels[i], &inner.spec).await {
            urls = Some(u);
            break;
        }
    }
    let Some(urls) = urls else { return };
    let mut out = Vec::new();
    let old: Vec<(String, MultiplexedConnection)> = inner
        .readers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|r| (r.url.clone(), r.conn.clone()))
        .collect();
    for url in urls {
        let conn = match old.iter().find(|(u, _)| *u == url) {
            Some((_, c)) => c.clone(),
            None => match inner.reach.connect(&url).await {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        out.push(Reader { url, conn, rtt: Duration::ZERO });
    }
    if inner.read_from == ReadFrom::Nearest {
        let master = inner.current.read().unwrap_or_else(|p| p.into_inner()).conn.clone();
        out.push(Reader {
            url: String::new(),
            conn: master,
            rtt: Duration::ZERO,
        });
        for r in &mut out {
            r.rtt = ping_rtt(&mut r.conn, inner.reach.response_timeout).await;
        }
    }
    *inner.readers.write().unwrap_or_else(|p| p.into_inner()) = out;
}

/// Follows the master: listens for `+switch-master` on one sentinel and
/// asks the sentinels every [`CHECK_EVERY`]; ends with the connection.
async fn watch(inner: Weak<Inner>) {
    let mut messages = None;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(strong) = inner.upgrade() else { return };
        if messages.is_none() {
            messages = subscribe(&strong).await;
        }
        let (reach, spec) = (strong.reach.clone(), strong.spec.clone());
        drop(strong);
        let switched = async {
            match messages.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        let check = tokio::select! {
            m = switched => match m {
                Some((channel, payload)) => {
                    let Some(strong) = inner.upgrade() else { return };
                    event(&strong, &channel, &payload)
                }
                // The subscription ended: open another at the next round.
                None => {
                    messages = None;
                    false
                }
            },
            _ = tick.tick() => false,
        };
        let Some(strong) = inner.upgrade() else { return };
        let moved = if check {
            true
        } else {
            let first = strong.preferred.load(Ordering::Relaxed);
            let url = strong.spec.sentinels[first % spec.sentinels.len()].clone();
            match ask_sentinel(&reach, &url, &spec.master).await {
                Ok((h, p)) => node_url(&spec.template, &h, p)
                    .is_some_and(|u| u != strong.current.read().unwrap_or_else(|p| p.into_inner()).url),
                Err(_) => {
                    // That sentinel is gone: the next one, from now on.
                    strong.preferred.store(first + 1, Ordering::Relaxed);
                    false
                }
            }
        };
        if moved {
            let generation = strong.current.read().unwrap_or_else(|p| p.into_inner()).generation;
            mark_stale(&strong, generation);
            let _ = rediscover(&strong).await;
        }
        if strong.read_from != ReadFrom::Master {
            refresh_readers(&strong).await;
        }
    }
}

/// What a sentinel's message means for us: `true` when the master moved
/// (`+switch-master`). `+selected-slave` (the leader chose the replica it
/// is about to promote) pauses writes to the old master (see `paused`).
fn event(inner: &Inner, channel: &str, payload: &str) -> bool {
    let ours = concerns(&inner.spec.master, channel, payload);
    match channel {
        "+switch-master" => ours,
        "+selected-slave" => {
            if ours {
                let mut cur = inner.current.write().unwrap_or_else(|p| p.into_inner());
                *inner.paused.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((cur.url.clone(), Instant::now()));
                cur.stale = true;
            }
            false
        }
        _ => false,
    }
}


async fn subscribe(inner: &Inner) -> Option<Messages> {
    subscribe_events(&inner.spec, &inner.reach).await
}

