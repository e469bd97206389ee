//! Redis Cluster routing of our own: a slot map from `CLUSTER SLOTS`, one
//! multiplexed connection per node, and batches sent as one pipeline per
//! node whose replies are read one by one: `MOVED` re-routes (and patches the
//! map), `ASK` resends with `ASKING` to the node named, `TRYAGAIN` and
//! `CLUSTERDOWN` retry after a pause, a dead node makes the map be fetched
//! again from any live node. Every call is bounded by the response timeout:
//! what is still pending then fails, per entry, with the last reason.
//! Reads may go to the slot's replicas instead (`read_from`, see `reads`;
//! `READONLY` is sent on every connection then).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, Value};

use super::read_from::ReadFrom;
use super::{BACKEND, Certs, hash_slot, open_client, redis_err};
use crate::error::{Error, ErrorKind, Result};
use map::{NO_OWNER, SlotMap, redirect};

mod map;
mod reads;

/// Commands per node pipeline.
const CHUNK: usize = 10_000;
/// Node pipelines in flight at once for one call.
const IN_FLIGHT: usize = 32;
/// Pairs per MSET.
const MSET_PAIRS: usize = 1_000;
/// A MOVED alone (the map is patched from it) refreshes at most this often.
const MOVED_REFRESH: Duration = Duration::from_secs(1);
/// Other reasons (dead node, CLUSTERDOWN, unowned slot) at most this often.
const FAULT_REFRESH: Duration = Duration::from_millis(200);

/// Redirects, retries and refreshes seen, for `stats()`.
#[derive(Default)]
struct Counters {
    moved: AtomicU64,
    ask: AtomicU64,
    tryagain: AtomicU64,
    clusterdown: AtomicU64,
    refreshes: AtomicU64,
}

/// A cluster: its map, its connections and its counters.
pub(super) struct Cluster {
    base: url::Url,
    seeds: Vec<String>,
    certs: Certs,
    connect_timeout: Duration,
    response_timeout: Duration,
    map: RwLock<SlotMap>,
    refreshed: Mutex<Option<Instant>>,
    refresh_lock: tokio::sync::Mutex<()>,
    conns: Mutex<HashMap<String, MultiplexedConnection>>,
    counters: Counters,
    readers: reads::Readers,
    /// The check of `reads` (with `read_from` other than master).
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = self.watcher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

/// One command of a node pipeline: the entries it carries, and whether it
/// goes after an `ASKING`.
struct Sent {
    idx: Vec<usize>,
    asking: bool,
}

/// Builds one command for several entries of one slot.
pub(super) type MultiCmd<'a> = &'a (dyn Fn(&[usize]) -> Cmd + Sync);

/// What a batch asks: one command per entry, and optionally one command for
/// several entries of one slot (MSET).
pub(super) struct Batch<'a> {
    pub keys: &'a [String],
    pub single: &'a (dyn Fn(usize) -> Cmd + Sync),
    pub multi: Option<MultiCmd<'a>>,
    /// Whether a command that may have run (its connection failed or timed
    /// out after sending) is sent again: only for commands that may run
    /// twice (not `incr` or `add`: a lost reply must not count twice).
    pub resend: bool,
    /// A read, which `read_from` may send to a replica.
    pub read: bool,
}

/// Per-call state: what is pending, where, and why it last failed.
struct Round {
    /// Entries still to do, with the node an ASK sent them to.
    pending: Vec<(usize, Option<String>)>,
    /// Entries that must go alone (their MSET got TRYAGAIN or ASK).
    alone: Vec<bool>,
    out: Vec<Option<std::result::Result<Value, Error>>>,
    last: Vec<Option<Error>>,
    refresh: Option<Duration>,
    pause: bool,
}

fn node_error(kind: ErrorKind, msg: String, node: &str) -> Error {
    Error::new(kind, msg)
        .with_backend(BACKEND)
        .with_context("node", node)
}

impl Cluster {
    /// Connects to the first seed that answers `CLUSTER SLOTS` (and, to
    /// read from replicas, starts the check that times every node).
    pub(super) async fn connect(
        seeds: &[String],
        certs: Certs,
        (connect_timeout, response_timeout): (Duration, Duration),
        read_from: ReadFrom,
    ) -> Result<Arc<Cluster>> {
        let base = url::Url::parse(&seeds[0]).map_err(|e| {
            Error::new(ErrorKind::InvalidUrl, "bad node URL")
                .with_backend(BACKEND)
                .set_source(e)
        })?;
        let seeds = seeds
            .iter()
            .filter_map(|s| {
                let u = url::Url::parse(s).ok()?;
                Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(6379)))
            })
            .collect();
        let c = Cluster {
            base,
            seeds,
            certs,
            connect_timeout,
            response_timeout,
            map: RwLock::new(SlotMap::empty()),
            refreshed: Mutex::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
            conns: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            readers: reads::Readers::new(read_from),
            watcher: Mutex::new(None),
        };
        c.refresh(Duration::ZERO).await?;
        let c = Arc::new(c);
        reads::start(&c);
        Ok(c)
    }

    /// The URL of node `addr`, with the seed URL's credentials and options.
    pub(super) fn node_url(&self, addr: &str) -> Option<String> {
        let (host, port) = addr.rsplit_once(':')?;
        let mut u = self.base.clone();
        u.set_host(Some(host)).ok()?;
        u.set_port(Some(port.parse().ok()?)).ok()?;
        Some(u.to_string())
    }

    /// `host:port` of every master in the current map.
    pub(super) fn masters(&self) -> Vec<String> {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut used: Vec<bool> = vec![false; m.masters.len()];
        for &o in &m.owner {
            if let Some(u) = used.get_mut(o as usize) {
                *u = true;
            }
        }
        m.masters
            .iter()
            .zip(used)
            .filter(|(_, u)| *u)
            .map(|(a, _)| a.clone())
            .collect()
    }

    async fn conn(&self, addr: &str) -> Result<MultiplexedConnection> {
        if let Some(c) = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
        {
            return Ok(c.clone());
        }
        let url = self
            .node_url(addr)
            .ok_or_else(|| node_error(ErrorKind::Backend, "bad node address".into(), addr))?;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let fail = |e| redis_err(e).with_context("node", addr);
        let mut c = open_client(&url, &self.certs)
            .map_err(fail)?
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(fail)?;
        // A replica serves its master's slots to a READONLY connection
        // (and still redirects writes); a master ignores it.
        if self.readers.read_from != ReadFrom::Master {
            let _: () = redis::cmd("READONLY").query_async(&mut c).await.map_err(fail)?;
        }
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn forget(&self, addr: &str) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }

    /// How many replicas the current map lists (for the masters in use).
    fn replicas(&self) -> usize {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        let used: std::collections::HashSet<u16> = m.owner.iter().copied().collect();
        m.replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| used.contains(&(*i as u16)))
            .map(|(_, r)| r.len())
            .sum()
    }

    /// The counters as the `cluster` section of `stats()`.
    pub(super) fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "moved": n(&c.moved),
            "ask": n(&c.ask),
            "tryagain": n(&c.tryagain),
            "clusterdown": n(&c.clusterdown),
            "slot_map_refreshes": n(&c.refreshes),
            "masters": self.masters().len(),
            "replicas": self.replicas(),
        })
    }

    /// One line for the log: what this cluster connection has seen.
    pub(super) fn summary(&self) -> String {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "moved={} ask={} tryagain={} clusterdown={} slot_map_refreshes={}",
            n(&c.moved),
            n(&c.ask),
            n(&c.tryagain),
            n(&c.clusterdown),
            n(&c.refreshes)
        )
    }

    /// Fetches the map again (from any node that answers), unless another
    /// call did so within `min_age`.
    pub(super) async fn refresh(&self, min_age: Duration) -> Result<()> {
        let recent = || {
            self.refreshed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t.elapsed() < min_age)
        };
        if !min_age.is_zero() && recent() {
            return Ok(());
        }
        let _g = self.refresh_lock.lock().await;
        if !min_age.is_zero() && recent() {
            return Ok(());
        }
        let mut candidates = self.masters();
        {
            let m = self.map.read().unwrap_or_else(|p| p.into_inner());
            candidates.extend(m.nodes.iter().cloned());
        }
        candidates.extend(self.seeds.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|a| seen.insert(a.clone()));
        // All at once, first answer wins: a dead or stopped node must not
        // hold the refresh up.
        let mut asks: futures::stream::FuturesUnordered<_> = candidates
            .into_iter()
            .map(|addr| async move {
                let r = self.fetch_map(&addr).await;
                (addr, r)
            })
            .collect();
        let mut last = None;
        while let Some((addr, r)) = asks.next().await {
            match r {
                Ok(m) => {
                    *self.map.write().unwrap_or_else(|p| p.into_inner()) = m;
                    *self.refreshed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now());
                    self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("redis cluster: slot map refreshed from {addr}");
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::new(ErrorKind::Connection, "no cluster node to ask").with_backend(BACKEND)
        }))
    }

    async fn fetch_map(&self, addr: &str) -> Result<SlotMap> {
        let mut c = self.conn(addr).await?;
        let v: Value = match redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await {
            Ok(v) => v,
            Err(e) => {
                let e = redis_err(e).with_context("node", addr);
                if e.is_connection() {
                    self.forget(addr);
                }
                return Err(e);
            }
        };
        SlotMap::parse(v, addr)
    }

    /// Runs a batch: one result per key, in order. Never longer than about
    /// the response timeout.
    pub(super) async fn run(&self, b: &Batch<'_>) -> Vec<std::result::Result<Value, Error>> {
        let n = b.keys.len();
        // A huge response_timeout means "no deadline", not an overflow.
        let now = Instant::now();
        let deadline = crate::backends::timer_deadline(self.response_timeout)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
        let mut r = Round {
            pending: (0..n).map(|i| (i, None)).collect(),
            alone: vec![b.multi.is_none(); n],
            out: (0..n).map(|_| None).collect(),
            last: vec![None; n],
            refresh: None,
            pause: false,
        };
        let mut pause = Duration::from_millis(20);
        loop {
            self.round(b, &mut r, deadline).await;
            if r.pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            if r.pause {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            if let Some(min_age) = r.refresh.take() {
                // A failed refresh leaves the old map; the next round says
                // why. A node that stopped answering must not stall it.
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(left, self.refresh(min_age)).await;
            }
            r.pause = false;
        }
        for (i, _) in std::mem::take(&mut r.pending) {
            let e = r.last[i].take().unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {:?}", self.response_timeout),
                )
                .with_backend(BACKEND)
            });
            r.out[i] = Some(Err(e));
        }
        r.out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::new(ErrorKind::Backend, "no reply"))))
            .collect()
    }

    /// Groups the pending entries by node into pipelines of commands.
    fn plan(&self, b: &Batch<'_>, r: &mut Round) -> Vec<(String, Pipeline, Vec<Sent>)> {
        let mut per_node: HashMap<String, Vec<Sent>> = HashMap::new();
        let mut by_slot: HashMap<(u16, u16), Vec<usize>> = HashMap::new();
        {
            let m = self.map.read().unwrap_or_else(|p| p.into_inner());
            for (i, ask) in std::mem::take(&mut r.pending) {
                if let Some(node) = ask {
                    let s = Sent {
                        idx: vec![i],
                        asking: true,
                    };
                    per_node.entry(node).or_default().push(s);
                    continue;
                }
                let slot = hash_slot(b.keys[i].as_bytes());
                match m.owner[slot as usize] {
                    NO_OWNER => {
                        r.last[i] = Some(
                            Error::new(
                                ErrorKind::Connection,
                                format!("slot {slot} has no master (cluster down or changing)"),
                            )
                            .with_backend(BACKEND),
                        );
                        r.pending.push((i, None));
                        r.refresh = Some(FAULT_REFRESH);
                        r.pause = true;
                    }
                    o => by_slot.entry((o, slot)).or_default().push(i),
                }
            }
            for ((o, _), idx) in by_slot {
                let to = if b.read {
                    self.readers.node(&m, o)
                } else {
                    m.masters[o as usize].clone()
                };
                let node = per_node.entry(to).or_default();
                let (alone, multi): (Vec<usize>, Vec<usize>) =
                    idx.into_iter().partition(|&i| r.alone[i]);
                for i in alone {
                    node.push(Sent {
                        idx: vec![i],
                        asking: false,
                    });
                }
                for part in multi.chunks(MSET_PAIRS) {
                    node.push(Sent {
                        idx: part.to_vec(),
                        asking: false,
                    });
                }
            }
        }
        Self::pipelines(b, per_node)
    }

    /// Node pipelines of at most `CHUNK` commands, `ASKING` before each
    /// command that follows an ASK.
    fn pipelines(
        b: &Batch<'_>,
        per_node: HashMap<String, Vec<Sent>>,
    ) -> Vec<(String, Pipeline, Vec<Sent>)> {
        let mut out = Vec::new();
        for (node, sent) in per_node {
            let mut sent = sent.into_iter().peekable();
            while sent.peek().is_some() {
                let part: Vec<Sent> = sent.by_ref().take(CHUNK).collect();
                let mut p = redis::pipe();
                for s in &part {
                    if s.asking {
                        p.cmd("ASKING");
                    }
                    // Several entries only ever share a command when there
                    // is a multi command (`alone` is all true otherwise).
                    match (s.idx.as_slice(), b.multi) {
                        (idx, Some(multi)) if idx.len() > 1 => p.add_command(multi(idx)),
                        (idx, _) => p.add_command((b.single)(idx[0])),
                    };
                }
                out.push((node.clone(), p, part));
            }
        }
        out
    }

    /// Sends one round of pipelines and files their replies.
    async fn round(&self, b: &Batch<'_>, r: &mut Round, deadline: Instant) {
        let plan = self.plan(b, r);
        let sends = plan.into_iter().map(|(node, p, sent)| async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = match tokio::time::timeout(left, self.send(&node, &p)).await {
                Ok(x) => x,
                Err(_) => Err((
                    node_error(
                        ErrorKind::Timeout,
                        format!("no answer within {:?}", self.response_timeout),
                        &node,
                    ),
                    true,
                )),
            };
            (node, sent, reply)
        });
        let mut replies = futures::stream::iter(sends).buffer_unordered(IN_FLIGHT);
        while let Some((node, sent, reply)) = replies.next().await {
            match reply {
                Ok(vals) => self.file(r, &node, sent, vals),
                Err((e, maybe_ran)) => {
                    if e.is_connection() {
                        self.forget(&node);
                    }
                    if e.is_transient() {
                        // No reads there until a check finds it answering.
                        self.readers.failed(&node);
                    }
                    let again = e.is_transient() && (b.resend || !maybe_ran);
                    if e.is_transient() {
                        r.refresh = Some(FAULT_REFRESH);
                        r.pause = true;
                    }
                    for s in sent {
                        for i in s.idx {
                            r.last[i] = Some(e.clone());
                            if again {
                                r.pending.push((i, None));
                            } else {
                                r.out[i] = Some(Err(e.clone()));
                            }
                        }
                    }
                }
            }
        }
    }

    /// The pipeline's replies; on failure, the error and whether the
    /// commands may have reached the server.
    async fn send(&self, node: &str, p: &Pipeline) -> std::result::Result<Vec<Value>, (Error, bool)> {
        let mut c = self.conn(node).await.map_err(|e| (e, false))?;
        let n = p.len();
        match redis::aio::ConnectionLike::req_packed_commands(&mut c, p, 0, n).await {
            Ok(v) if v.len() == n => Ok(v),
            Ok(_) => Err((
                node_error(ErrorKind::Connection, "short pipeline reply".into(), node),
                true,
            )),
            Err(e) => Err((redis_err(e).with_context("node", node), true)),
        }
    }

    /// Files the replies of one node pipeline.
    fn file(&self, r: &mut Round, node: &str, sent: Vec<Sent>, vals: Vec<Value>) {
        let mut vals = vals.into_iter();
        for s in sent {
            if s.asking {
                vals.next();
            }
            let v = vals.next().unwrap_or(Value::Nil);
            self.file_one(r, node, s, v);
        }
    }

    fn file_one(&self, r: &mut Round, node: &str, s: Sent, v: Value) {
        let Value::ServerError(e) = &v else {
            for &i in &s.idx {
                r.out[i] = Some(Ok(v.clone()));
            }
            return;
        };
        let code = e.code().to_string();
        let c = &self.counters;
        let again = |r: &mut Round, ask: Option<String>, alone: bool| {
            for &i in &s.idx {
                r.alone[i] |= alone;
                r.last[i] = Some(node_error(
                    ErrorKind::Connection,
                    format!("{code} {}", e.details().unwrap_or("")),
                    node,
                ));
                r.pending.push((i, ask.clone()));
            }
        };
        match code.as_str() {
            "MOVED" => {
                c.moved.fetch_add(1, Ordering::Relaxed);
                if let Some((slot, addr)) = redirect(e.details(), node) {
                    let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
                    let idx = m.index_of(&addr);
                    m.owner[slot as usize] = idx;
                }
                r.refresh.get_or_insert(MOVED_REFRESH);
                again(r, None, false);
            }
            "ASK" => {
                c.ask.fetch_add(1, Ordering::Relaxed);
                let to = redirect(e.details(), node).map(|(_, a)| a);
                again(r, to, true);
            }
            "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "LOADING" | "READONLY" => {
                let counter = if code == "TRYAGAIN" {
                    &c.tryagain
                } else {
                    &c.clusterdown
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if code != "TRYAGAIN" {
                    r.refresh = Some(FAULT_REFRESH);
                }
                r.pause = true;
                again(r, None, true);
            }
            _ => {
                let err = node_error(
                    ErrorKind::Backend,
                    format!("{code} {}", e.details().unwrap_or("")),
                    node,
                );
                for &i in &s.idx {
                    r.out[i] = Some(Err(err.clone()));
                }
            }
        }
    }
}
