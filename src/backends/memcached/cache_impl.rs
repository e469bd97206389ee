//! The `Cache` implementation of [`MemcachedCache`].

use super::*;
use crate::cache::ValueTtl;

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
            read_ttl: true,
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
        CacheFuture::boxed(async move {
            match self.delete_many(&[key]).await {
                Ok(n) => Ok(n > 0),
                Err(e) if e.kind() == ErrorKind::PartialBatch => match e.failures().first() {
                    Some((_, first)) => Err(first.clone()),
                    None => Err(e),
                },
                Err(e) => Err(e),
            }
        })
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::boxed(async move {
            let version = self.version().await?;
            let k = self.server_key(&version, key);
            let s = &self.servers[self.server_of(k.as_bytes())];
            let req = format!("mg {k}\r\n");
            let r = self.call(s, req, None, 1).await;
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
                    let value = |j: usize| entries[send[j]].1;
                    let req = set_request(&send_keys, value, chunk, &ttl_flag);
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
        let mapped: Vec<String> = keys.iter().map(|k| self.server_key(&version, k)).collect();
        let mut full = mapped.clone();
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
        let n = deleted.into_inner() as u64;
        self.counters.delete(n);
        if failed.is_empty() {
            return Ok(n);
        }
        // The other servers' deletes are done: only the failed servers'
        // keys are failures (by index into `keys`), with the count deleted.
        self.counters.error();
        let full = &full;
        let why: HashMap<&str, &Error> = failed
            .iter()
            .flat_map(|(idx, e)| idx.iter().map(move |&j| (full[j].as_str(), e)))
            .collect();
        let failures = mapped
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let e = why.get(m.as_str())?;
                Some((i, (*e).clone().with_context("key", keys[i])))
            })
            .collect();
        Err(Error::partial(failures).with_context("deleted", n))
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        self.counters.track(self.ttl_one(key).await)
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.counters.track(self.add_one(key, value, ttl).await)
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.counters.track(self.incr_one(key, delta).await)
    }

    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.counters.track(self.touch_one(key, ttl).await)
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        self.counters.track(self.expire_one(key, None).await)
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        self.counters
            .track(self.compare_and_set_one(key, expected, new, ttl).await)
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        CacheFuture::boxed(self.get_ttl_one(key))
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.get_ttl_all(keys).await
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
        // (and ages out of memcached's LRU); nothing else is touched. Every
        // reachable server gets a copy; the newest token wins on reading, so
        // the clear stands as soon as one server took it.
        let fresh = fresh_token();
        let req = format!("ms {vk} {}\r\n{fresh}\r\n", fresh.len());
        let targets = self.reachable();
        let sent = futures::future::join_all(
            targets
                .iter()
                .map(|s| self.call(s, Bytes::from(req.clone()), None, 1)),
        )
        .await;
        let mut first_err = None;
        let mut stored = false;
        for (s, r) in targets.iter().zip(sent) {
            let r = r.and_then(|replies| match replies.first() {
                Some(r) if r.code == "HD" => Ok(()),
                Some(r) => Err(unexpected(&s.addr, r).with_context("op", "clear")),
                None => Err(proto_err(&s.addr, "clear: no reply".into())),
            });
            match r {
                Ok(()) => stored = true,
                Err(e) => {
                    self.counters.error();
                    tracing::warn!("clear: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if !stored => Err(e),
            _ => {
                *self.ns_version.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((fresh, Instant::now()));
                Ok(())
            }
        }
    }

    /// `flush_all` on every server, each tried even when another fails; an
    /// error naming the servers that were not flushed.
    async fn clear_all(&self) -> Result<()> {
        let flushed = futures::future::join_all(
            self.servers
                .iter()
                .map(|s| self.call(s, &b"flush_all\r\n"[..], None, 1)),
        )
        .await;
        *self.ns_version.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut failed: Vec<String> = Vec::new();
        let mut first_err = None;
        for (s, r) in self.servers.iter().zip(flushed) {
            let r = r.and_then(|replies| match replies.first() {
                Some(r) if r.code == "OK" => Ok(()),
                _ => Err(proto_err(&s.addr, "flush_all was refused".into())),
            });
            if let Err(e) = r {
                failed.push(s.addr.clone());
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(Error::new(
                e.kind(),
                format!(
                    "flush_all failed on {} of {} servers ({}); the others were flushed",
                    failed.len(),
                    self.servers.len(),
                    failed.join(", ")
                ),
            )
            .with_backend(BACKEND)
            .set_source(e)),
        }
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
            let r = self.call(srv, &b"stats\r\n"[..], Some("END"), 0).await;
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
