//! `memcached://h1:p1,h2:p2`: memcached through a small client of our own on
//! the meta protocol (`ms`/`md`/`mg`/`mn`; `get_many` uses the ASCII many-key
//! `get`, which the server answers about twice as fast per key), over several
//! servers with consistent hashing.
//!
//! Why our own: the meta protocol is a few line formats, and owning the
//! client lets batches be one pipelined write per server (quiet mode with
//! opaque tokens, so failures are still known per key) without an extra
//! dependency marked experimental. Every key is mapped to a legal memcached
//! key (see [`map_key`]); a namespace is a version token folded into every
//! key, so `clear` invalidates only this namespace and never flushes a
//! server. A server that is unreachable or leaves a request unanswered for
//! the response timeout is marked down: its reads are misses (counted as
//! errors), its writes fail per key at once, and it is probed again at most
//! once a second. A reply outside the protocol is an error naming the
//! server, and its connection is closed.

mod proto;
mod server;

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::cache::{Cache, CacheFuture, CacheOptions, Capabilities, Counters, Stats};
use crate::error::{Error, ErrorKind, Result};
use proto::Reply;
use server::{Server, Timeouts};

const BACKEND: &str = "memcached";
/// Longest key memcached accepts.
pub const MAX_KEY: usize = 250;
/// TTLs above this many seconds are sent as absolute Unix times (memcached's rule).
pub const RELATIVE_TTL_LIMIT: u64 = 30 * 24 * 3600;
/// The latest absolute expiry memcached can represent (2^31-1 s: 2038-01-19
/// 03:14:07 UTC); a later one would be read as already expired.
pub const MAX_EXPTIME: u64 = i32::MAX as u64;
/// Longest namespace, in bytes as given.
pub const MAX_NAMESPACE: usize = 64;
/// Longest namespace once `%` and `:` are escaped (keeps every mapped key,
/// hashed form included, within [`MAX_KEY`]).
const MAX_NAMESPACE_ESCAPED: usize = 160;
/// Longest namespace version token accepted from a server.
const MAX_TOKEN: usize = 48;
/// The version key's second segment: never a version token (those are hex
/// digits and dots), so it cannot equal a user key's prefix.
const VERSION_KEY: &str = "__unicache_ns";
/// Points per server on the hash ring.
const VNODES: usize = 160;
/// Commands per pipelined write.
const CHUNK: usize = 1_000;
/// Keys per ASCII `get` line.
const GET_KEYS: usize = 100;
/// Bytes memcached needs per item besides key and value (header, CAS, suffix).
const ITEM_OVERHEAD: usize = 64;
/// How long another process's `clear` may take to be seen by this one.
const NS_REFRESH: Duration = Duration::from_secs(1);

/// memcached over one or more servers.
pub struct MemcachedCache {
    servers: Vec<Server>,
    ring: Vec<(u64, usize)>,
    endpoint: String,
    namespace: Option<String>,
    /// The namespace as it starts every key: `%` and `:` escaped.
    prefix: Option<String>,
    /// Current namespace version and when it was read.
    ns_version: StdMutex<Option<(String, Instant)>>,
    options: CacheOptions,
    counters: Counters,
    timeouts: Timeouts,
    item_size_max: usize,
}

impl std::fmt::Debug for MemcachedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedCache")
            .field("endpoint", &self.endpoint)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// A key memcached accepts as-is: 1..=250 bytes, no whitespace or control bytes.
pub fn is_legal_key(k: &[u8]) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY && k.iter().all(|&b| b > 0x20 && b != 0x7f)
}

/// Builds a consistent-hash ring: `VNODES` points per server address.
fn build_ring(addrs: &[String]) -> Vec<(u64, usize)> {
    let mut ring: Vec<(u64, usize)> = addrs
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            (0..VNODES).map(move |v| (xxhash_rust::xxh3::xxh3_64(format!("{a}#{v}").as_bytes()), i))
        })
        .collect();
    ring.sort_unstable();
    ring
}

/// The server index owning `key` on `ring`.
fn ring_lookup(ring: &[(u64, usize)], key: &[u8]) -> usize {
    let h = xxhash_rust::xxh3::xxh3_64(key);
    let i = ring.partition_point(|(p, _)| *p < h);
    ring[if i == ring.len() { 0 } else { i }].1
}

/// The exptime memcached expects for a TTL: seconds, or an absolute Unix
/// time past 30 days, clamped to [`MAX_EXPTIME`] (so `Duration::MAX` means
/// "until 2038", not "already expired"). Sub-second TTLs round up to 1 s.
pub fn exptime(ttl: Duration, now_unix: u64) -> u64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1);
    if secs > RELATIVE_TTL_LIMIT {
        now_unix.saturating_add(secs).min(MAX_EXPTIME)
    } else {
        secs
    }
}

/// The namespace as a key prefix: `%` and `:` percent-escaped, so the first
/// `:` of a mapped key always ends the namespace (`app:v2` is `app%3Av2`,
/// never `app` + `v2`).
pub fn escape_namespace(ns: &str) -> String {
    if !ns.contains(['%', ':']) {
        return ns.to_string();
    }
    ns.replace('%', "%25").replace(':', "%3A")
}

/// Checks a namespace: 1-64 bytes that memcached takes in a key, at most
/// 160 once escaped.
fn check_namespace(ns: &str) -> Result<String> {
    let escaped = escape_namespace(ns);
    if ns.len() > MAX_NAMESPACE
        || escaped.len() > MAX_NAMESPACE_ESCAPED
        || !is_legal_key(ns.as_bytes())
    {
        return Err(Error::new(
            ErrorKind::InvalidUrl,
            format!(
                "namespace {ns:?} must be 1-{MAX_NAMESPACE} bytes without spaces or control \
                 characters (at most {MAX_NAMESPACE_ESCAPED} once each '%' and ':' is written as 3)"
            ),
        )
        .with_backend(BACKEND));
    }
    Ok(escaped)
}

/// A namespace version token as [`fresh_token`] makes them: hex digits and dots.
fn is_token(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_TOKEN
        && v.iter()
            .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'.')
}

/// The key sent to memcached for `key`: `prefix:version:key` (or `key`
/// without a namespace) when that is a legal memcached key and `key` does not
/// start with `#h`; otherwise `prefix:version:#h` + the 32 hex digits of the
/// key's xxh3-128 hash. `prefix` has no `:` (see [`escape_namespace`]) and
/// `version` none either, so two (namespace, key) pairs never share a key.
pub fn map_key(prefix: Option<&str>, version: &str, key: &str) -> String {
    // Built in one allocation: this runs once per key of every batch.
    let ns_len = prefix.map_or(0, |p| p.len() + version.len() + 2);
    let mut out = String::with_capacity(ns_len + key.len().max(34));
    if let Some(p) = prefix {
        out.push_str(p);
        out.push(':');
        out.push_str(version);
        out.push(':');
    }
    out.push_str(key);
    if !is_legal_key(out.as_bytes()) || key.starts_with("#h") {
        use std::fmt::Write;
        out.truncate(ns_len);
        let _ = write!(
            out,
            "#h{:032x}",
            xxhash_rust::xxh3::xxh3_128(key.as_bytes())
        );
    }
    out
}

/// ASCII `get k1 k2 ...`, up to [`GET_KEYS`] keys a line, for the keys
/// `full[i]` of `chunk`: the server answers a many-key get far faster than
/// as many `mg` commands (measured: about 2x per key). Replies name their
/// key; misses are simply absent.
fn get_request(full: &[String], chunk: &[usize]) -> (Vec<u8>, Option<&'static str>, usize) {
    let mut req = Vec::with_capacity(chunk.len() * 40);
    let lines = chunk.len().div_ceil(GET_KEYS);
    for part in chunk.chunks(GET_KEYS) {
        req.extend_from_slice(b"get");
        for &i in part {
            req.push(b' ');
            req.extend_from_slice(full[i].as_bytes());
        }
        req.extend_from_slice(b"\r\n");
    }
    (req, Some("END"), lines)
}

/// Puts the values of a [`get_request`]'s replies in `out`.
fn take_values(
    addr: &str,
    full: &[String],
    chunk: &[usize],
    replies: Vec<Reply>,
    out: &mut [Option<Bytes>],
) -> Result<()> {
    // Key -> its first position; a key asked twice gets its value copied
    // afterwards (no list per key).
    let mut first: HashMap<&str, usize, Xxh3DefaultBuilder> =
        HashMap::with_capacity_and_hasher(chunk.len(), Xxh3DefaultBuilder);
    let mut repeated = false;
    for &i in chunk {
        repeated |= *first.entry(full[i].as_str()).or_insert(i) != i;
    }
    for mut r in replies {
        match (r.code.as_ref(), r.value.take()) {
            ("VALUE", Some(v)) => {
                let Some(&i) = first.get(r.line.as_str()) else {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        format!(
                            "unexpected reply from {addr}: a value for key {} not asked for",
                            r.line.as_bytes().escape_ascii()
                        ),
                    )
                    .with_backend(BACKEND));
                };
                out[i] = Some(Bytes::from(v));
            }
            ("END", _) => {}
            _ => return Err(unexpected(addr, &r)),
        }
    }
    if repeated {
        for &i in chunk {
            let f = first[full[i].as_str()];
            if f != i {
                out[i] = out[f].clone();
            }
        }
    }
    Ok(())
}

/// A reply the protocol does not allow at this point.
fn unexpected(addr: &str, r: &Reply) -> Error {
    // Hot replies (VA/HD/...) keep only their code.
    let shown = if r.line.is_empty() {
        r.code.as_ref()
    } else {
        r.line.as_str()
    };
    Error::new(
        ErrorKind::Backend,
        format!(
            "unexpected reply from {addr}: {}",
            shown.as_bytes().escape_ascii()
        ),
    )
    .with_backend(BACKEND)
}

fn proto_err(addr: &str, msg: String) -> Error {
    Error::new(ErrorKind::Backend, msg)
        .with_backend(BACKEND)
        .with_context("server", addr)
}

/// A namespace version never issued before: time in nanoseconds, process id
/// and a per-process counter (two clears in one millisecond must differ).
fn fresh_token() -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:x}.{:x}.{:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Appends `n` in decimal (request building is per key: no formatter).
fn push_num(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn now_unix() -> u64 {
    crate::cache::now_millis() / 1000
}

impl MemcachedCache {
    /// Connects to every server once (to learn its item size limit); an
    /// unreachable server at open is an error naming it.
    pub async fn connect(
        servers: Vec<String>,
        endpoint: String,
        connect_timeout: Duration,
        response_timeout: Duration,
        options: CacheOptions,
    ) -> Result<Self> {
        let prefix = options
            .namespace
            .as_deref()
            .map(check_namespace)
            .transpose()?;
        if connect_timeout.is_zero() || response_timeout.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidUrl,
                "connect_timeout and response_timeout must be greater than zero",
            )
            .with_backend(BACKEND));
        }
        let timeouts = Timeouts {
            connect: connect_timeout,
            response: response_timeout,
        };
        let ring = build_ring(&servers);
        let servers: Vec<Server> = servers.into_iter().map(Server::new).collect();
        let mut item_size_max = usize::MAX;
        for s in &servers {
            let replies = s
                .exchange(b"stats settings\r\n", Some("END"), 0, timeouts)
                .await
                .map_err(|e| e.with_context("op", "connect"))?;
            for r in &replies {
                if let Some(v) = r.line.strip_prefix("STAT item_size_max ") {
                    item_size_max = item_size_max.min(v.trim().parse().unwrap_or(1024 * 1024));
                }
            }
        }
        if item_size_max == usize::MAX {
            item_size_max = 1024 * 1024;
        }
        Ok(MemcachedCache {
            servers,
            ring,
            endpoint,
            namespace: options.namespace.clone(),
            prefix,
            ns_version: StdMutex::new(None),
            options,
            counters: Counters::default(),
            timeouts,
            item_size_max,
        })
    }

    /// One exchange with `server` under this cache's timeouts.
    async fn call(
        &self,
        server: &Server,
        req: &[u8],
        last: Option<&str>,
        count: usize,
    ) -> Result<Vec<Reply>> {
        server.exchange(req, last, count, self.timeouts).await
    }

    fn server_of(&self, key: &[u8]) -> usize {
        if self.servers.len() == 1 {
            return 0;
        }
        ring_lookup(&self.ring, key)
    }

    /// `host:port` of the server that owns a server-side key (see
    /// [`MemcachedCache::server_key`]).
    pub fn server_addr(&self, server_key: &str) -> &str {
        &self.servers[self.server_of(server_key.as_bytes())].addr
    }

    /// The largest value this cache accepts (the smallest server's item
    /// size limit, less key and item overhead).
    pub fn max_value(&self, key_len: usize) -> usize {
        self.item_size_max.saturating_sub(key_len + ITEM_OVERHEAD)
    }

    /// Where the namespace's version token lives: `prefix:__unicache_ns`.
    fn ns_key(&self) -> Option<String> {
        self.prefix.as_ref().map(|p| format!("{p}:{VERSION_KEY}"))
    }

    /// The namespace's current version token, read from memcached (cached
    /// for [`NS_REFRESH`]); created when missing.
    async fn version(&self) -> Result<String> {
        let Some(vk) = self.ns_key() else {
            return Ok(String::new());
        };
        if let Some((v, at)) = self
            .ns_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            && at.elapsed() < NS_REFRESH
        {
            return Ok(v);
        }
        let s = &self.servers[self.server_of(vk.as_bytes())];
        let req = format!("mg {vk} v\r\n");
        let replies = self.call(s, req.as_bytes(), None, 1).await?;
        let v = match replies.first() {
            Some(Reply { value: Some(v), .. }) if is_token(v) => {
                String::from_utf8_lossy(v).into_owned()
            }
            // Not a token of ours (written by something else): replace it,
            // since a version with `:` would make keys ambiguous.
            Some(Reply { value: Some(_), .. }) => self.new_version(s, &vk, "").await?,
            // Missing (first use, evicted, restarted): a fresh token, so
            // entries of an older version can never come back. Add mode
            // (`ME`) loses to a process that created it first.
            _ => self.new_version(s, &vk, " ME").await?,
        };
        *self.ns_version.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((v.clone(), Instant::now()));
        Ok(v)
    }

    /// Stores a fresh version token under `vk` (`mode`: "" sets, " ME" adds)
    /// and returns the one memcached then holds.
    async fn new_version(&self, s: &Server, vk: &str, mode: &str) -> Result<String> {
        let fresh = fresh_token();
        let req = format!("ms {vk} {}{mode}\r\n{fresh}\r\nmg {vk} v\r\n", fresh.len());
        let replies = self.call(s, req.as_bytes(), None, 2).await?;
        Ok(match replies.get(1) {
            Some(Reply { value: Some(v), .. }) if is_token(v) => {
                String::from_utf8_lossy(v).into_owned()
            }
            _ => fresh,
        })
    }

    /// The key sent to memcached for `key` under `version`: see [`map_key`].
    pub fn server_key(&self, version: &str, key: &str) -> String {
        map_key(self.prefix.as_deref(), version, key)
    }

    fn exptime(&self, ttl: Option<Duration>) -> Result<Option<u64>> {
        Ok(self
            .options
            .effective_ttl(ttl)?
            .map(|d| exptime(d, now_unix())))
    }

    /// Groups indices by owning server.
    fn by_server(&self, keys: &[String]) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.servers.len()];
        for (i, k) in keys.iter().enumerate() {
            groups[self.server_of(k.as_bytes())].push(i);
        }
        groups
    }

    /// Sends each server's share of `keys` (servers concurrently, a server's
    /// chunks one after another): `build` makes the request for a chunk of
    /// indices, `handle` consumes its replies (given the server's address).
    /// Failures come back with the indices of their chunk.
    async fn fan_out<B, H>(&self, keys: &[String], build: B, handle: H) -> Vec<(Vec<usize>, Error)>
    where
        B: Fn(&[usize]) -> (Vec<u8>, Option<&'static str>, usize) + Sync,
        H: Fn(&str, &[usize], Vec<Reply>) -> Result<()> + Sync,
    {
        let groups = self.by_server(keys);
        let build = &build;
        let handle = &handle;
        let jobs = groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(s, g)| async move {
                let server = &self.servers[s];
                let mut failed = Vec::new();
                for chunk in g.chunks(CHUNK) {
                    let (req, last, count) = build(chunk);
                    let r = self
                        .call(server, &req, last, count)
                        .await
                        .and_then(|replies| handle(&server.addr, chunk, replies));
                    if let Err(e) = r {
                        failed.push((chunk.to_vec(), e));
                    }
                }
                failed
            });
        futures::future::join_all(jobs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Values over the item size limit fail here, per key, without a round
    /// trip: returns those failures and the indices to send.
    fn split_oversized(
        &self,
        entries: &[(&str, &[u8])],
        full: &[String],
    ) -> (Vec<(usize, Error)>, Vec<usize>) {
        let mut failures: Vec<(usize, Error)> = Vec::new();
        let mut send: Vec<usize> = Vec::with_capacity(entries.len());
        for (i, (k, v)) in entries.iter().enumerate() {
            let limit = self.max_value(full[i].len());
            if v.len() <= limit {
                send.push(i);
                continue;
            }
            let e = Error::new(
                ErrorKind::ValueTooLarge,
                format!(
                    "{} bytes over the servers' item size limit ({limit} bytes for this key; \
                     memcached -I raises it)",
                    v.len()
                ),
            )
            .with_backend(BACKEND)
            .with_context("key", k);
            failures.push((i, e));
        }
        (failures, send)
    }

    async fn get_all(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let version = self.version().await;
        let version = match version {
            Ok(v) => v,
            Err(e) => {
                // The namespace's server is down: everything is a miss.
                self.counters.error();
                tracing::debug!("{e}");
                self.counters.miss(keys.len() as u64);
                return Ok(vec![None; keys.len()]);
            }
        };
        let full: Vec<String> = keys.iter().map(|k| self.server_key(&version, k)).collect();
        let out: StdMutex<Vec<Option<Bytes>>> = StdMutex::new(vec![None; keys.len()]);
        let failed = self
            .fan_out(
                &full,
                |chunk| get_request(&full, chunk),
                |addr, chunk, replies| {
                    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                    take_values(addr, &full, chunk, replies, &mut out)
                },
            )
            .await;
        // Documented: an unreachable server's keys read as misses, counted as errors.
        for (_, e) in &failed {
            self.counters.error();
            tracing::debug!("{e}");
        }
        let out = out.into_inner().unwrap_or_else(|p| p.into_inner());
        self.counters.read(&out);
        Ok(out)
    }
}

#[async_trait]
impl Cache for MemcachedCache {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            read_ttl: false,
            list_keys: false,
            count: false,
            persistent: false,
            shared: true,
            evicts: true,
            max_value_bytes: Some(self.max_value(MAX_KEY) as u64),
            batch_concurrency: 4,
            inline: false,
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        CacheFuture::boxed(async move { Ok(self.get_all(&[key]).await?.pop().flatten()) })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        CacheFuture::boxed(async move {
            match self.set_many(&[(key, value)], ttl).await {
                Err(e) if e.kind() == ErrorKind::PartialBatch => match e.failures().first() {
                    Some((_, first)) => Err(first.clone()),
                    None => Err(e),
                },
                r => r,
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::boxed(async move { Ok(self.delete_many(&[key]).await? > 0) })
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::boxed(async move {
            let version = self.version().await?;
            let k = self.server_key(&version, key);
            let s = &self.servers[self.server_of(k.as_bytes())];
            let req = format!("mg {k}\r\n");
            let r = self.call(s, req.as_bytes(), None, 1).await;
            let replies = self.counters.track(r)?;
            Ok(replies.first().is_some_and(|r| r.code == "HD"))
        })
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.get_all(keys).await
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let exp = self.counters.track(self.exptime(ttl))?;
        let version = self.counters.track(self.version().await)?;
        let mut full: Vec<String> = entries
            .iter()
            .map(|(k, _)| self.server_key(&version, k))
            .collect();
        let (mut failures, send) = self.split_oversized(entries, &full);
        let send_keys: Vec<String> = send.iter().map(|&i| std::mem::take(&mut full[i])).collect();
        let ttl_flag = exp.map(|e| format!(" T{e}")).unwrap_or_default();
        let refused: StdMutex<Vec<(usize, Error)>> = StdMutex::new(Vec::new());
        let net_failed = self
            .fan_out(
                &send_keys,
                |chunk| {
                    let bytes: usize = chunk.iter().map(|&j| entries[send[j]].1.len() + 64).sum();
                    let mut req = Vec::with_capacity(bytes + 8);
                    for (o, &j) in chunk.iter().enumerate() {
                        let v = entries[send[j]].1;
                        req.extend_from_slice(b"ms ");
                        req.extend_from_slice(send_keys[j].as_bytes());
                        req.push(b' ');
                        push_num(&mut req, v.len() as u64);
                        req.extend_from_slice(ttl_flag.as_bytes());
                        req.extend_from_slice(b" q O");
                        push_num(&mut req, o as u64);
                        req.extend_from_slice(b"\r\n");
                        req.extend_from_slice(v);
                        req.extend_from_slice(b"\r\n");
                    }
                    req.extend_from_slice(b"mn\r\n");
                    (req, Some("MN"), 0)
                },
                |addr, chunk, replies| {
                    // Quiet mode: only failures answer, tagged with their opaque.
                    let mut bad = refused.lock().unwrap_or_else(|p| p.into_inner());
                    for r in replies {
                        match (r.code.as_ref(), r.opaque) {
                            ("MN", _) => {}
                            (_, Some(o)) if o < chunk.len() => bad.push((
                                send[chunk[o]],
                                proto_err(addr, format!("server refused the write: {}", r.line)),
                            )),
                            // An error line without a token cannot be pinned on a key.
                            _ => {
                                return Err(unexpected(addr, &r));
                            }
                        }
                    }
                    Ok(())
                },
            )
            .await;
        failures.extend(refused.into_inner().unwrap_or_else(|p| p.into_inner()));
        for (idx, e) in net_failed {
            for j in idx {
                failures.push((send[j], e.clone()));
            }
        }
        self.counters.set((entries.len() - failures.len()) as u64);
        if failures.is_empty() {
            Ok(())
        } else {
            self.counters.error();
            failures.sort_by_key(|(i, _)| *i);
            Err(Error::partial(failures))
        }
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let version = self.counters.track(self.version().await)?;
        let mut full: Vec<String> = keys.iter().map(|k| self.server_key(&version, k)).collect();
        full.sort();
        full.dedup();
        let deleted = AtomicUsize::new(0);
        let failed = self
            .fan_out(
                &full,
                |chunk| {
                    let mut req = Vec::with_capacity(chunk.len() * 40);
                    for &i in chunk {
                        req.extend_from_slice(b"md ");
                        req.extend_from_slice(full[i].as_bytes());
                        req.extend_from_slice(b"\r\n");
                    }
                    (req, None, chunk.len())
                },
                |addr, _, replies| {
                    for r in replies {
                        match r.code.as_ref() {
                            "HD" => {
                                deleted.fetch_add(1, Ordering::Relaxed);
                            }
                            "NF" => {}
                            _ => {
                                return Err(unexpected(addr, &r));
                            }
                        }
                    }
                    Ok(())
                },
            )
            .await;
        if let Some((_, e)) = failed.into_iter().next() {
            self.counters.error();
            return Err(e);
        }
        let n = deleted.into_inner() as u64;
        self.counters.delete(n);
        Ok(n)
    }

    async fn clear(&self) -> Result<()> {
        let Some(vk) = self.ns_key() else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "refusing to clear memcached without a namespace: that would flush every \
                 application's data; set ?namespace=NAME, or flush the servers explicitly \
                 (CLI: `clear --all`, library: clear_all())",
            )
            .with_backend(BACKEND)
            .with_context("endpoint", &self.endpoint));
        };
        // A new version token: every key of the old one becomes unreachable
        // (and ages out of memcached's LRU); nothing else is touched.
        let fresh = fresh_token();
        let s = &self.servers[self.server_of(vk.as_bytes())];
        let req = format!("ms {vk} {}\r\n{fresh}\r\n", fresh.len());
        let replies = self
            .counters
            .track(self.call(s, req.as_bytes(), None, 1).await)?;
        match replies.first() {
            Some(r) if r.code == "HD" => {
                *self.ns_version.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((fresh, Instant::now()));
                Ok(())
            }
            Some(r) => Err(unexpected(&s.addr, r).with_context("op", "clear")),
            None => Err(proto_err(&s.addr, "clear: no reply".into())),
        }
    }

    async fn clear_all(&self) -> Result<()> {
        for s in &self.servers {
            let replies = self.call(s, b"flush_all\r\n", None, 1).await?;
            if replies.first().is_none_or(|r| r.code != "OK") {
                return Err(proto_err(&s.addr, "flush_all was refused".into()));
            }
        }
        *self.ns_version.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    async fn len(&self) -> Result<u64> {
        // memcached cannot list or count one namespace's keys reliably (the
        // LRU crawler's metadump is not a snapshot); say so rather than guess.
        // `stats` reports the servers' curr_items.
        Err(self.unsupported("len (memcached cannot count a namespace's entries)"))
    }

    async fn stats(&self) -> Result<Stats> {
        let mut s = self.counters.snapshot(BACKEND, self.endpoint());
        let mut per = Vec::new();
        let mut sums = std::collections::BTreeMap::<&str, u64>::new();
        for srv in &self.servers {
            let r = self.call(srv, b"stats\r\n", Some("END"), 0).await;
            let mut m = serde_json::Map::new();
            m.insert("server".into(), srv.addr.clone().into());
            match r {
                Ok(replies) => {
                    for r in replies {
                        let Some(rest) = r.line.strip_prefix("STAT ") else {
                            continue;
                        };
                        let Some((k, v)) = rest.split_once(' ') else {
                            continue;
                        };
                        for name in [
                            "get_hits",
                            "get_misses",
                            "curr_items",
                            "evictions",
                            "bytes",
                            "version",
                        ] {
                            if k == name {
                                match v.parse::<u64>() {
                                    Ok(n) => {
                                        *sums.entry(name).or_default() += n;
                                        m.insert(k.into(), n.into());
                                    }
                                    Err(_) => {
                                        m.insert(k.into(), v.into());
                                    }
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    m.insert("error".into(), e.to_string().into());
                }
            }
            per.push(serde_json::Value::Object(m));
        }
        s.server = Some(serde_json::json!({
            "namespace": self.namespace,
            "item_size_max": self.item_size_max,
            "get_hits": sums.get("get_hits"),
            "get_misses": sums.get("get_misses"),
            "curr_items": sums.get("curr_items"),
            "evictions": sums.get("evictions"),
            "servers": per,
        }));
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Two different (namespace, key) pairs never map to one memcached
        /// key, and no user key is a namespace's version key, even with `:`,
        /// `%` and `#h` in namespaces and keys.
        #[test]
        fn key_mapping_is_one_to_one(
            ns1 in "[a:%2]{1,4}", k1 in "[a:%#h2_]{0,6}",
            ns2 in "[a:%2]{1,4}", k2 in "[a:%#h2_]{0,6}",
            bare in proptest::prelude::any::<bool>(),
        ) {
            // One version for both: the worst case (tokens may coincide).
            let (v1, v2) = ("1a.2", "1a.2");
            let p1 = (!bare).then(|| escape_namespace(&ns1));
            let p2 = escape_namespace(&ns2);
            let m1 = map_key(p1.as_deref(), v1, &k1);
            let m2 = map_key(Some(&p2), v2, &k2);
            if p1.is_some() {
                proptest::prop_assert!(m1 != m2 || (ns1 == ns2 && k1 == k2));
            }
            proptest::prop_assert_ne!(&m2, &format!("{p2}:{VERSION_KEY}"));
            proptest::prop_assert_ne!(&m2, &format!("{}:{VERSION_KEY}", escape_namespace(&ns1)));
        }

        /// Any TTL gives an exptime memcached keeps: never 0, never past 2^31-1.
        #[test]
        fn exptime_is_always_in_range(secs in proptest::prelude::any::<u64>(), nanos in 0u32..1_000_000_000) {
            let e = exptime(Duration::new(secs, nanos), 1_800_000_000);
            proptest::prop_assert!((1..=MAX_EXPTIME).contains(&e));
        }
    }

    #[test]
    fn namespaces_with_colons_are_escaped_and_checked() {
        assert_eq!(escape_namespace("app"), "app");
        assert_eq!(escape_namespace("app:v2"), "app%3Av2");
        assert_eq!(escape_namespace("a%3Ab"), "a%253Ab");
        assert_eq!(map_key(Some("app"), "1f", "user:1"), "app:1f:user:1");
        assert_eq!(map_key(None, "", "user:1"), "user:1");
        assert!(check_namespace("app:v2").is_ok());
        assert!(check_namespace(&"a".repeat(64)).is_ok());
        for bad in ["", "a b", "a\nb", &"a".repeat(65), &":".repeat(60)] {
            let e = check_namespace(bad).unwrap_err();
            assert!(e.to_string().contains("namespace"), "{e}");
        }
        // The longest namespace and token still leave room for the hashed form.
        let p = escape_namespace(&":".repeat(53));
        assert!(p.len() <= MAX_NAMESPACE_ESCAPED);
        let k = map_key(Some(&p), &"f".repeat(MAX_TOKEN), &"k".repeat(300));
        assert!(is_legal_key(k.as_bytes()), "{}", k.len());
    }

    #[test]
    fn version_tokens() {
        assert!(is_token(fresh_token().as_bytes()));
        for bad in [&b""[..], b"v2", b"1:2", b"__unicache_ns", &[b'a'; 49]] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn legal_keys() {
        assert!(is_legal_key(b"user:1"));
        assert!(!is_legal_key(b""));
        assert!(!is_legal_key(b"a b"));
        assert!(!is_legal_key(b"a\nb"));
        assert!(!is_legal_key(&[b'k'; 251]));
        assert!(is_legal_key(&[b'k'; 250]));
        assert!(is_legal_key("clé".as_bytes()));
    }

    #[test]
    fn ttl_over_30_days_is_absolute() {
        let now = 1_800_000_000;
        assert_eq!(exptime(Duration::from_secs(60), now), 60);
        assert_eq!(exptime(Duration::from_millis(1), now), 1);
        assert_eq!(
            exptime(Duration::from_secs(RELATIVE_TTL_LIMIT), now),
            RELATIVE_TTL_LIMIT
        );
        assert_eq!(
            exptime(Duration::from_secs(31 * 86400), now),
            now + 31 * 86400
        );
        // Past 2038-01-19 memcached would read the time as already expired: clamp.
        assert_eq!(
            exptime(Duration::from_secs(30 * 365 * 86400), now),
            MAX_EXPTIME
        );
        assert_eq!(exptime(Duration::MAX, now), MAX_EXPTIME);
        assert_eq!(exptime(Duration::MAX, u64::MAX), MAX_EXPTIME);
    }

    #[test]
    fn adding_a_server_moves_about_a_third_of_keys() {
        let two: Vec<String> = vec!["10.0.0.1:11211".into(), "10.0.0.2:11211".into()];
        let mut three = two.clone();
        three.push("10.0.0.3:11211".into());
        let (r2, r3) = (build_ring(&two), build_ring(&three));
        let n = 100_000;
        let moved = (0..n)
            .filter(|i| {
                let k = format!("key:{i}");
                ring_lookup(&r2, k.as_bytes()) != ring_lookup(&r3, k.as_bytes())
            })
            .count();
        let frac = moved as f64 / n as f64;
        // Ideal 1/3: only keys that now belong to the new server move.
        assert!((0.25..0.42).contains(&frac), "moved {frac}");
        // And removing it again moves back exactly those keys.
        let back = (0..n)
            .filter(|i| {
                let k = format!("key:{i}");
                ring_lookup(&r3, k.as_bytes()) == 2
            })
            .count();
        assert_eq!(back, moved);
    }
}
