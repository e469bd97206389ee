//! `redis+sentinel://` and `rediss+sentinel://`: a master found and followed
//! through Redis Sentinel.
//!
//! The master is whatever a sentinel answers to `SENTINEL
//! GET-MASTER-ADDR-BY-NAME` (the first that answers, starting with the last
//! that did), confirmed with `ROLE` on the node itself: a sentinel that has
//! not yet heard of a failover names a node that now says `slave`, and the
//! next sentinel is asked. The connection to the master ([`SentinelConn`])
//! is rediscovered when a command fails for a connection reason or gets a
//! `READONLY` reply (the old master came back as a replica), when a
//! sentinel announces `+switch-master`, or when the once-a-second check
//! finds the sentinels naming another node. A failed command is not sent
//! again here: its error is transient, and the caller (the writer's
//! retries) decides.
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
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::{BACKEND, Certs, open_client};
use crate::error::{Error, ErrorKind, Result};
use crate::url::{Query, Target, check_host_port, driver_userinfo, url_err};

/// How often the sentinels are asked whether the master moved (besides
/// the `+switch-master` messages and failed commands).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// After a failed rediscovery, callers within this long get its error at
/// once instead of asking the sentinels again.
const RETRY_GAP: Duration = Duration::from_millis(50);
/// How long a failover a sentinel announced (`+selected-slave`) keeps
/// writes off the old master while the sentinels still name it.
const PAUSE_MAX: Duration = Duration::from_secs(10);

/// Where reads go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// Every read on the master (the default).
    #[default]
    Master,
    /// Reads spread over the replicas (the master when none is up).
    Replica,
    /// Reads on the node, master or replica, that answered a PING fastest
    /// at the last check.
    Nearest,
}

impl ReadFrom {
    pub(super) fn parse(v: Option<&str>) -> Result<Self> {
        Ok(match v {
            None | Some("master") => ReadFrom::Master,
            Some("replica") => ReadFrom::Replica,
            Some("nearest") => ReadFrom::Nearest,
            Some(v) => {
                return Err(url_err(format!(
                    "redis: read_from must be master, replica or nearest, not {v:?}"
                )));
            }
        })
    }
}

/// What a Sentinel URL names: the sentinels, the master's name, and how to
/// reach the data nodes they point to.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelSpec {
    /// Sentinel URLs, with the sentinel credentials (never printed).
    pub(crate) sentinels: Vec<String>,
    /// The master's name in the sentinels' configuration.
    pub(crate) master: String,
    /// A data node URL (scheme, data credentials, database) whose host and
    /// port are replaced by the address a sentinel gives.
    pub(crate) template: String,
}

impl std::fmt::Debug for SentinelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSpec")
            .field("sentinels", &self.sentinels.len())
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// The sentinel part of a `redis+sentinel://` URL: from the body after the
/// userinfo (`s1:p1,s2:p2/MASTER[/db]`) and the query's sentinel options.
pub(super) fn parse(
    t: &Target<'_>,
    tls: bool,
    userinfo: Option<&str>,
    body: &str,
    q: &mut Query,
) -> Result<SentinelSpec> {
    let scheme = t.scheme;
    let (hosts, path) = body
        .split_once('/')
        .ok_or_else(|| url_err(format!("{scheme}: expected {scheme}://s1:p1,s2:p2/MASTER_NAME")))?;
    let (master, db) = match path.split_once('/') {
        Some((m, d)) => (m, Some(d)),
        None => (path, None),
    };
    if master.is_empty() {
        return Err(url_err(format!("{scheme}: missing the master's name after the sentinels")));
    }
    let db = match db.filter(|d| !d.is_empty()) {
        None => 0,
        Some(d) => d
            .parse::<u32>()
            .map_err(|_| url_err(format!("{scheme}: the database must be a number, not {d:?}")))?,
    };
    let base = if tls { "rediss" } else { "redis" };
    let data_creds = driver_userinfo("redis", userinfo)?;
    let s_user = q.take("sentinel_username");
    let s_pass = q.take("sentinel_password");
    let s_creds = match (s_user, s_pass) {
        (None, None) => String::new(),
        (u, p) => {
            let raw = match (u, p) {
                (Some(u), Some(p)) => format!("{u}:{p}"),
                (None, Some(p)) => format!(":{p}"),
                (Some(u), None) => u,
                (None, None) => unreachable!(),
            };
            // The query was percent-decoded: escape again for the driver.
            let escaped = raw
                .split_once(':')
                .map(|(u, p)| format!("{}:{}", enc(u), enc(p)))
                .unwrap_or_else(|| enc(&raw));
            driver_userinfo("redis", Some(&escaped))?
        }
    };
    let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
    if hosts.is_empty() {
        return Err(url_err(format!("{scheme}: missing sentinel host:port")));
    }
    for h in &hosts {
        check_host_port(t.redacted, h)?;
        if h.contains('/') {
            return Err(url_err(format!("bad host:port in {:?}", t.redacted)));
        }
    }
    let with_port = |h: &str| {
        if h.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !h.ends_with(']') {
            h.to_string()
        } else {
            format!("{h}:26379")
        }
    };
    Ok(SentinelSpec {
        sentinels: hosts
            .iter()
            .map(|h| format!("{base}://{s_creds}{}", with_port(h)))
            .collect(),
        master: master.to_string(),
        template: format!("{base}://{data_creds}{}/{db}", with_port(hosts[0])),
    })
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `template` with its host and port replaced by `host:port`.
pub(crate) fn node_url(template: &str, host: &str, port: u16) -> Option<String> {
    let mut u = url::Url::parse(template).ok()?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    u.set_host(Some(&host)).ok()?;
    u.set_port(Some(port)).ok()?;
    Some(u.to_string())
}

/// Timeouts and TLS trust for the connections of one Sentinel set-up.
#[derive(Clone)]
pub(crate) struct Reach {
    pub(crate) certs: Certs,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

impl Reach {
    async fn connect(&self, url: &str) -> std::result::Result<MultiplexedConnection, String> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let client = open_client(url, &self.certs).map_err(|e| e.to_string())?;
        let c = client.get_multiplexed_async_connection_with_config(&cfg);
        // The handshake (AUTH, SELECT) is bounded too: a stopped server
        // accepts the TCP connection and never answers.
        match tokio::time::timeout(self.connect_timeout + self.response_timeout, c).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("no answer".into()),
        }
    }
}

/// What the sentinel at `url` says the master of `name` is.
async fn ask_sentinel(reach: &Reach, url: &str, name: &str) -> std::result::Result<(String, u16), String> {
    let mut c = reach.connect(url).await?;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(name)
        .query_async(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    let (host, port) = addr.ok_or_else(|| format!("knows no master named {name:?}"))?;
    let port = port.parse().map_err(|_| format!("gave a bad port {port:?}"))?;
    Ok((host, port))
}

/// The node's `ROLE`: `master`, `slave` or `sentinel`.
async fn role(c: &mut MultiplexedConnection) -> std::result::Result<String, String> {
    let v: Value = redis::cmd("ROLE")
        .query_async(c)
        .await
        .map_err(|e| e.to_string())?;
    match v {
        Value::Array(parts) => match parts.into_iter().next() {
            Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(Value::SimpleString(s)) => Ok(s),
            _ => Err("unexpected ROLE reply".into()),
        },
        _ => Err("unexpected ROLE reply".into()),
    }
}

/// A connection to the current master, checked with `ROLE`: asks the
/// sentinels from `first` on. Returns the sentinel that answered, the
/// master's URL and the connection.
pub(crate) async fn find_master(
    spec: &SentinelSpec,
    reach: &Reach,
    first: usize,
) -> Result<(usize, String, MultiplexedConnection)> {
    let n = spec.sentinels.len();
    let mut why = Vec::new();
    for i in (0..n).map(|k| (first + k) % n) {
        let (host, port) = match ask_sentinel(reach, &spec.sentinels[i], &spec.master).await {
            Ok(a) => a,
            Err(e) => {
                why.push(format!("sentinel {}: {e}", i + 1));
                continue;
            }
        };
        let Some(url) = node_url(&spec.template, &host, port) else {
            why.push(format!("sentinel {}: bad address {host}:{port}", i + 1));
            continue;
        };
        let mut c = match reach.connect(&url).await {
            Ok(c) => c,
            Err(e) => {
                why.push(format!("master {host}:{port} (from sentinel {}): {e}", i + 1));
                continue;
            }
        };
        match role(&mut c).await {
            // Asked again after the check: a master that was stopped while
            // a failover replaced it still says `master` when it resumes,
            // until the sentinels demote it; by then they name another.
            Ok(r) if r == "master" => match ask_sentinel(reach, &spec.sentinels[i], &spec.master).await {
                Ok(again) if again == (host.clone(), port) => return Ok((i, url, c)),
                Ok((h, p)) => why.push(format!("sentinel {} now names {h}:{p}", i + 1)),
                Err(e) => why.push(format!("sentinel {}: {e}", i + 1)),
            },
            Ok(r) => why.push(format!("{host}:{port} (from sentinel {}) is a {r}", i + 1)),
            Err(e) => why.push(format!("{host}:{port}: ROLE: {e}")),
        }
    }
    Err(Error::new(
        ErrorKind::Connection,
        format!("no master {:?} found: {}", spec.master, why.join("; ")),
    )
    .with_backend(BACKEND))
}

/// The URL of the master `cfg` (a Sentinel configuration) names now, for
/// connections of other layers (the tier's backplane). `None` when `cfg`
/// is not a Sentinel one.
pub(crate) async fn current_master(cfg: &super::RedisConfig) -> Option<Result<String>> {
    let spec = cfg.sentinel.as_ref()?;
    let reach = match super::config::tls_certs(&cfg.tls_ca) {
        Ok(certs) => Reach {
            certs,
            connect_timeout: cfg.connect_timeout,
            response_timeout: cfg.response_timeout,
        },
        Err(e) => return Some(Err(e)),
    };
    Some(find_master(spec, &reach, 0).await.map(|(_, url, _)| url))
}

/// The URL of the master the first sentinel that answers names (no
/// `ROLE` check: a cheap "has it moved?"). `None` when `cfg` is not a
/// Sentinel configuration or no sentinel answers.
pub(crate) async fn named_master(cfg: &super::RedisConfig) -> Option<String> {
    let spec = cfg.sentinel.as_ref()?;
    let reach = Reach {
        certs: super::config::tls_certs(&cfg.tls_ca).ok()?,
        connect_timeout: cfg.connect_timeout,
        response_timeout: cfg.response_timeout,
    };
    for url in &spec.sentinels {
        if let Ok((h, p)) = ask_sentinel(&reach, url, &spec.master).await {
            return node_url(&spec.template, &h, p);
        }
    }
    None
}

/// The replicas the sentinel at `url` lists as up and linked to the master.
async fn list_replicas(reach: &Reach, url: &str, spec: &SentinelSpec) -> Option<Vec<String>> {
    let mut c = reach.connect(url).await.ok()?;
    let v: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
        .arg("REPLICAS")
        .arg(&spec.master)
        .query_async(&mut c)
        .await
        .ok()?;
    Some(
        v.into_iter()
            .filter(|r| {
                let flags = r.get("flags").map(String::as_str).unwrap_or("");
                !flags.contains("down") && !flags.contains("disconnected")
                    && r.get("master-link-status").map(String::as_str) == Some("ok")
            })
            .filter_map(|r| {
                let port = r.get("port")?.parse().ok()?;
                node_url(&spec.template, r.get("ip")?, port)
            })
            .collect(),
    )
}

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
        let readers = inner.readers.read().unwrap_or_else(|p| p.into_inner());
        let pick = match inner.read_from {
            ReadFrom::Master => return None,
            ReadFrom::Replica => {
                let n = readers.iter().filter(|r| !r.url.is_empty()).count();
                if n == 0 {
                    return None;
                }
                let k = inner.next_reader.fetch_add(1, Ordering::Relaxed) % n;
                readers.iter().filter(|r| !r.url.is_empty()).nth(k)?
            }
            // The master is listed with an empty URL: reading it is `None`.
            ReadFrom::Nearest => readers.iter().min_by_key(|r| r.rtt)?,
        };
        if pick.url.is_empty() {
            return None;
        }
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
            let t = Instant::now();
            let ok = tokio::time::timeout(
                inner.reach.response_timeout,
                redis::cmd("PING").query_async::<Value>(&mut r.conn),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            r.rtt = if ok { t.elapsed() } else { Duration::MAX };
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

/// Whether a sentinel's message is about the master `name`.
fn concerns(name: &str, channel: &str, payload: &str) -> bool {
    let words: Vec<&str> = payload.split(' ').collect();
    match channel {
        // `NAME old-ip old-port new-ip new-port`
        "+switch-master" => words.first() == Some(&name),
        // `slave ip:port ip port @ NAME master-ip master-port`
        _ => {
            let at = words.iter().position(|w| *w == "@");
            at.and_then(|a| words.get(a + 1)) == Some(&name)
        }
    }
}

/// A stream that yields when any sentinel of `cfg` announces a failover
/// of its master beginning (`+selected-slave`) or done (`+switch-master`);
/// `None` when `cfg` is not a Sentinel configuration or no sentinel takes
/// the subscription. For other layers (the tier's backplane).
pub(crate) async fn failover_events(
    cfg: &super::RedisConfig,
) -> Option<futures::stream::BoxStream<'static, ()>> {
    let spec = cfg.sentinel.as_ref()?;
    let reach = Reach {
        certs: super::config::tls_certs(&cfg.tls_ca).ok()?,
        connect_timeout: cfg.connect_timeout,
        response_timeout: cfg.response_timeout,
    };
    let name = spec.master.clone();
    let s = subscribe_events(spec, &reach).await?;
    Some(
        s.filter_map(move |(c, p)| std::future::ready(concerns(&name, &c, &p).then_some(())))
            .boxed(),
    )
}

type Messages = futures::stream::SelectAll<futures::stream::BoxStream<'static, (String, String)>>;

/// The failover messages of every sentinel that takes the subscription
/// (only the sentinel leading a failover announces its steps).
async fn subscribe(inner: &Inner) -> Option<Messages> {
    subscribe_events(&inner.spec, &inner.reach).await
}

async fn subscribe_events(spec: &SentinelSpec, reach: &Reach) -> Option<Messages> {
    let mut all = futures::stream::SelectAll::new();
    for url in &spec.sentinels {
        let Ok(client) = open_client(url, &reach.certs) else {
            continue;
        };
        let sub = async {
            let mut ps = client.get_async_pubsub().await.ok()?;
            ps.subscribe(&["+switch-master", "+selected-slave"]).await.ok()?;
            Some(ps)
        };
        let Ok(Some(ps)) = tokio::time::timeout(
            reach.connect_timeout + reach.response_timeout,
            sub,
        )
        .await
        else {
            continue;
        };
        let s = ps
            .into_on_message()
            .map(|m| {
                let payload = m.get_payload::<String>().unwrap_or_default();
                (m.get_channel_name().to_string(), payload)
            })
            .boxed();
        all.push(s);
    }
    (!all.is_empty()).then_some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> Result<(SentinelSpec, Query)> {
        let (scheme, rest) = url.split_once(':').unwrap();
        let t = Target {
            scheme,
            rest,
            redacted: url,
            layer_options: &[],
        };
        let body = rest.strip_prefix("//").unwrap();
        let (userinfo, after) = crate::url::split_userinfo(body);
        let (body, q) = crate::url::split_query(after);
        let mut q = Query::parse("redis", q)?;
        let s = parse(&t, scheme.starts_with("rediss"), userinfo, body, &mut q)?;
        Ok((s, q))
    }

    #[test]
    fn urls() {
        let (s, _) = spec("redis+sentinel://u:p%40w@h1:1,h2/mymaster/3?sentinel_password=s%26x").unwrap();
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.sentinels, ["redis://:s%26x@h1:1", "redis://:s%26x@h2:26379"]);
        assert_eq!(s.template, "redis://u:p%40w@h1:1/3");
        assert_eq!(
            node_url(&s.template, "10.0.0.2", 6380).unwrap(),
            "redis://u:p%40w@10.0.0.2:6380/3"
        );
        let (s, _) = spec("rediss+sentinel://h1:1/m?sentinel_username=su&sentinel_password=sp").unwrap();
        assert_eq!(s.sentinels, ["rediss://su:sp@h1:1"]);
        assert_eq!(s.template, "rediss://h1:1/0");
        for bad in [
            "redis+sentinel://h1:1",
            "redis+sentinel://h1:1/",
            "redis+sentinel:///m",
            "redis+sentinel://h1:1/m/x",
            "redis+sentinel://h1:x/m",
        ] {
            assert!(spec(bad).is_err(), "{bad}");
        }
        assert_eq!(ReadFrom::parse(Some("replica")).unwrap(), ReadFrom::Replica);
        assert!(ReadFrom::parse(Some("slave")).is_err());
    }
}
