//! The `Cache` implementation of [`RedisCache`].

use super::*;
use crate::cache::ValueTtl;

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
                .one_read(&full, key, redis::cmd("GET").arg(&full).clone())
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
                .write_one(&full, key, Self::set_command(&full, value, px))
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
                .write_one(&full, key, redis::cmd("DEL").arg(&full).clone())
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
                .one_read(&full, key, redis::cmd("EXISTS").arg(&full).clone())
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
                    resend: true,
                    read: true,
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
        let Conn::Cluster(c) = &self.conn else {
            self.counters
                .track(self.set_many_single(entries, px).await)?;
            self.counters.set(entries.len() as u64);
            return Ok(());
        };
        let full: Vec<String> = entries.iter().map(|(k, _)| self.key(k)).collect();
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
            resend: true,
            read: false,
        };
        let failures: Vec<(usize, Error)> = Self::cluster_run(c, &self.endpoint, &b)
            .await
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.err().map(|e| (i, e.with_context("key", entries[i].0))))
            .collect();
        // Only after a success: a failed batch is failing at a node that
        // may hold the channel too (a tier over this cache announces it
        // within its own time bound).
        if failures.is_empty() && self.announce.is_some() {
            let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
            self.announce(Msg::Keys(&keys)).await;
        }
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
                let announced = async {
                    self.announce(Msg::Keys(keys)).await;
                };
                let b = cluster::Batch {
                    keys: &full,
                    single: &single,
                    multi: None,
                    resend: true,
                    read: false,
                };
                let n = Self::cluster_run(c, &self.endpoint, &b)
                    .await
                    .into_iter()
                    .map(|r| r.and_then(|v| u64::from_redis_value(v).map_err(parse_err)))
                    .sum::<Result<u64>>();
                if n.is_ok() {
                    announced.await;
                }
                n
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
        let r = self
            .on_nodes(|nodes| async move {
                for mut node in nodes {
                    self.scan_node(&mut node, |keys, n| self.unlink_page(keys, n))
                        .await?;
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
            .one(&full, key, redis::cmd("PTTL").arg(&full).clone(), false)
            .await;
        Ok(match self.counters.track(r)? {
            -2 => None,
            -1 => Some(None),
            ms if ms >= 0 => Some(Some(Duration::from_millis(ms as u64))),
            _ => None,
        })
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let r = self.add_impl(key, value, ttl).await;
        if matches!(r, Ok(true)) {
            self.announce(Msg::Keys(&[key])).await;
        }
        self.counters.track(r)
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        let r = self.incr_impl(key, delta).await;
        if r.is_ok() {
            self.announce(Msg::Keys(&[key])).await;
        }
        self.counters.track(r)
    }

    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let r = self.touch_impl(key, ttl).await;
        if matches!(r, Ok(true)) {
            self.announce(Msg::Keys(&[key])).await;
        }
        self.counters.track(r)
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        let r = self.persist_impl(key).await;
        if matches!(r, Ok(true)) {
            self.announce(Msg::Keys(&[key])).await;
        }
        self.counters.track(r)
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let r = self.compare_and_set_impl(key, expected, new, ttl).await;
        // Like every other write: a tier over this cache (which leaves the
        // publishing to it) and other processes' L1s must drop the key.
        if matches!(r, Ok(true)) {
            self.announce(Msg::Keys(&[key])).await;
        }
        self.counters.track(r)
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        CacheFuture::boxed(async move {
            let r = self.get_with_ttl_impl(key).await;
            self.counters.track(r)
        })
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let r = self.get_many_with_ttl_impl(keys).await;
        self.counters.track(r)
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
