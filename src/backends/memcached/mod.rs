//! `memcached://h1:p1,h2:p2`: memcached through a small client of our own on
//! the meta protocol (`ms`/`md`/`mg`/`ma`/`mn`; `get_many` uses the ASCII many-key
//! `get`, which the server answers about twice as fast per key), over several
//! servers with consistent hashing.
//!
//! Why our own: the meta protocol is a few line formats, and owning the
//! client lets batches be one pipelined write per server (quiet mode with
//! opaque tokens, so failures are still known per key) without an extra
//! dependency marked experimental. Every key is mapped to a legal memcached
//! key (see `keys::map_key`); a namespace is a version token folded into every
//! key, so `clear` invalidates only this namespace and never flushes a
//! server; every server keeps a copy of the token and the newest one wins,
//! so no single server holds the whole namespace. A server that is
//! unreachable or leaves a request unanswered for the response timeout is
//! marked down (at open too: open needs one server that answers): its reads
//! are misses (counted as errors), its writes fail per key at once, and it is
//! probed again at most once a second. A reply outside the protocol is an
//! error naming the server, and its connection is closed.

mod atomic;
mod cache_impl;
mod config;
mod keys;
mod pipeline;
mod proto;
mod request;
mod ring;
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

pub use config::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, MemcachedConfig};
use keys::*;
use request::*;
use ring::*;
const BACKEND: &str = "memcached";
/// Commands per pipelined write.
const CHUNK: usize = 1_000;
/// Keys per ASCII `get` line.
const GET_KEYS: usize = 100;
/// Bytes memcached needs per item besides key and value (header, CAS, suffix).
const ITEM_OVERHEAD: usize = 64;
/// How long another process's `clear` may take to be seen by this one.
const NS_REFRESH: Duration = Duration::from_secs(1);
/// Rounds of reading and moving servers forward before a namespace token
/// is taken without every server agreeing (see `agreed_version`).
const AGREE_ROUNDS: usize = 8;

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

fn now_unix() -> u64 {
    crate::cache::now_millis() / 1000
}

impl MemcachedCache {
    /// Connects to every server once, all at once (to learn their item size
    /// limit). Servers that are unreachable or do not answer within the
    /// response timeout are marked down (see the module doc) and open still
    /// succeeds; with none answering, open fails naming the first server's
    /// problem. A server answering outside the protocol fails the open.
    pub async fn connect(config: MemcachedConfig, options: CacheOptions) -> Result<Self> {
        let MemcachedConfig {
            servers,
            endpoint,
            connect_timeout,
            response_timeout,
        } = config;
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
        let item_size_max = item_size_max(&servers, timeouts).await?;
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
        req: impl Into<Bytes>,
        last: Option<&'static str>,
        count: usize,
    ) -> Result<Vec<Reply>> {
        server.exchange(req.into(), last, count, self.timeouts).await
    }

    fn server_of(&self, key: &[u8]) -> usize {
        if self.servers.len() == 1 {
            return 0;
        }
        ring_lookup(&self.ring, key)
    }

    /// `host:port` of the server that owns a server-side key (see
    /// [`MemcachedCache::server_key`]).
    pub(crate) fn server_addr(&self, server_key: &str) -> &str {
        &self.servers[self.server_of(server_key.as_bytes())].addr
    }

    /// The largest value this cache accepts (the smallest server's item
    /// size limit, less key and item overhead).
    pub(crate) fn max_value(&self, key_len: usize) -> usize {
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
        let v = self.agreed_version(&vk).await?;
        *self.ns_version.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((v.clone(), Instant::now()));
        Ok(v)
    }

    /// The servers a namespace-wide call goes to: those not marked down (a
    /// down one would hold every such call for a probe's timeout), or all
    /// when every one is down (so one of them is probed).
    fn reachable(&self) -> Vec<&Server> {
        let up: Vec<&Server> = self.servers.iter().filter(|s| !s.is_down()).collect();
        if up.is_empty() {
            self.servers.iter().collect()
        } else {
            up
        }
    }

    /// The namespace's token, agreed by every reachable server: each keeps
    /// a copy under `vk`, and the newest (tokens start with their creation
    /// time) wins, so a server that is down, restarted or missed a `clear`
    /// neither hides the namespace nor brings back cleared entries while one
    /// that saw the latest `clear` answers. Missing everywhere (first use,
    /// evicted, restarted): a fresh token.
    ///
    /// A token is returned only once every reachable server holds it. Servers
    /// holding none are given it with an add, those holding an older one
    /// with a compare-and-set, so a server's token only ever moves forward,
    /// and the servers are read again. (Settling on the newest token read
    /// in one pass let two handles that first used a namespace together
    /// each keep a different token for a second, and the writes of one were
    /// lost to the other.) Fails only when no server answers.
    async fn agreed_version(&self, vk: &str) -> Result<String> {
        let req = format!("mg {vk} v c\r\n");
        let mut fresh: Option<String> = None;
        let mut newest_seen = None;
        for _ in 0..AGREE_ROUNDS {
            let targets = self.reachable();
            let read = futures::future::join_all(
                targets
                    .iter()
                    .map(|s| self.call(s, Bytes::from(req.clone()), None, 1)),
            )
            .await;
            // Each answering server's token, and its item's CAS value when
            // it holds one (a token, or bytes that are not one of ours).
            let mut held: Vec<(&Server, Option<String>, Option<u64>)> = Vec::new();
            let mut first_err = None;
            for (s, r) in targets.iter().zip(read) {
                match r {
                    Ok(replies) => {
                        let r = replies.first();
                        held.push((s, r.and_then(token_of), r.and_then(|r| r.cas)));
                    }
                    Err(e) if is_protocol_error(&e) => return Err(e),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err.filter(|_| held.is_empty()) {
                return Err(e);
            }
            let newest = held
                .iter()
                .filter_map(|(_, t, _)| t.as_ref())
                .max_by(|a, b| token_order(a).cmp(&token_order(b)))
                .cloned();
            let v = newest.unwrap_or_else(|| fresh.get_or_insert_with(fresh_token).clone());
            let behind: Vec<_> = held
                .iter()
                .filter(|(_, t, _)| t.as_ref() != Some(&v))
                .collect();
            if behind.is_empty() {
                return Ok(v);
            }
            let moves = behind.iter().map(|(s, _, cas)| {
                let mode = match cas {
                    None => " ME".to_string(),
                    Some(cas) => format!(" C{cas}"),
                };
                let v = &v;
                async move { self.new_version(s, vk, &mode, v).await }
            });
            // Whether each move won or lost, the next round reads again.
            futures::future::join_all(moves).await;
            newest_seen = Some(v);
        }
        // Still moving after every round (servers restarting, clears in a
        // loop): the newest token seen; the next refresh tries again.
        Ok(newest_seen.unwrap_or_else(fresh_token))
    }

    /// Stores `token` under `vk` on `s` (`mode`: "" sets, " ME" adds,
    /// " C<cas>" compares and sets) and
    /// returns the one `s` then holds.
    async fn new_version(&self, s: &Server, vk: &str, mode: &str, token: &str) -> Result<String> {
        let req = format!(
            "ms {vk} {}{mode}\r\n{token}\r\nmg {vk} v\r\n",
            token.len()
        );
        let replies = self.call(s, req, None, 2).await?;
        Ok(replies
            .get(1)
            .and_then(token_of)
            .unwrap_or_else(|| token.to_string()))
    }

    /// The key sent to memcached for `key` under `version`: see [`map_key`].
    pub(crate) fn server_key(&self, version: &str, key: &str) -> String {
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
                        .call(server, req, last, count)
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

    /// The namespace version for a read of `n` keys: `None` (the `n` keys
    /// counted as misses and the failure as an error) when the namespace's
    /// server is down, so everything reads as a miss; a reply outside the
    /// protocol is an error.
    async fn read_version(&self, n: usize) -> Result<Option<String>> {
        match self.version().await {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_protocol_error(&e) => {
                self.counters.error();
                Err(e)
            }
            Err(e) => {
                self.counters.error();
                tracing::debug!("{e}");
                self.counters.miss(n as u64);
                Ok(None)
            }
        }
    }

    /// What a read's failed chunks mean: a server that answers outside the
    /// protocol is an error, never a miss (the caller would take absence
    /// for an answer); an unreachable server's keys read as misses
    /// (documented), each failure counted as an error.
    fn read_failures(&self, failed: Vec<(Vec<usize>, Error)>) -> Result<()> {
        if let Some((_, e)) = failed.iter().find(|(_, e)| is_protocol_error(e)) {
            self.counters.error();
            return Err(e.clone());
        }
        for (_, e) in &failed {
            self.counters.error();
            tracing::debug!("{e}");
        }
        Ok(())
    }

    async fn get_all(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let Some(version) = self.read_version(keys.len()).await? else {
            return Ok(vec![None; keys.len()]);
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
        self.read_failures(failed)?;
        let out = out.into_inner().unwrap_or_else(|p| p.into_inner());
        self.counters.read(&out);
        Ok(out)
    }
}

/// Asks every server for its settings at once: the smallest `item_size_max`
/// of those that answer (1 MiB, memcached's default, when none says). Those
/// that do not answer are marked down by the call itself; an error only when
/// none answers, or one answers outside the protocol.
async fn item_size_max(servers: &[Server], timeouts: Timeouts) -> Result<usize> {
    let asked = futures::future::join_all(
        servers
            .iter()
            .map(|s| s.exchange(Bytes::from_static(b"stats settings\r\n"), Some("END"), 0, timeouts)),
    )
    .await;
    let mut limit: Option<usize> = None;
    let mut first_err = None;
    let mut answered = false;
    for (s, r) in servers.iter().zip(asked) {
        match r {
            Ok(replies) => {
                answered = true;
                for r in &replies {
                    if let Some(v) = r.line.strip_prefix("STAT item_size_max ") {
                        let n = v.trim().parse().unwrap_or(1024 * 1024);
                        limit = Some(limit.map_or(n, |l| l.min(n)));
                    }
                }
            }
            Err(e) if is_protocol_error(&e) => return Err(e.with_context("op", "connect")),
            Err(e) => {
                tracing::warn!("memcached server {} is down at open: {e}", s.addr);
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) if !answered => Err(e.with_context("op", "connect")),
        _ => Ok(limit.unwrap_or(1024 * 1024)),
    }
}

/// The version token in a reply, if it holds one of ours.
fn token_of(r: &Reply) -> Option<String> {
    r.value
        .as_deref()
        .filter(|v| is_token(v))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// How tokens are ordered, oldest first: by their leading creation time
/// (nanoseconds, hex), then as text.
fn token_order(t: &str) -> (u128, &str) {
    let time = t.split('.').next().unwrap_or("");
    (u128::from_str_radix(time, 16).unwrap_or(0), t)
}

/// A reply outside memcached's protocol (see `request::unexpected`), as
/// opposed to a server that is down or unreachable.
fn is_protocol_error(e: &Error) -> bool {
    e.kind() == ErrorKind::Backend && e.message().starts_with("unexpected reply from ")
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
