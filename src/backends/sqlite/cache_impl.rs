//! The `Cache` implementation of [`SqliteCache`].

use super::*;

#[async_trait]
impl Cache for SqliteCache {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn endpoint(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            read_ttl: true,
            list_keys: true,
            count: true,
            persistent: true,
            shared: true,
            max_value_bytes: Some(1_000_000_000),
            inline: true,
            evicts: self.is_bounded(),
            ..Capabilities::default()
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        let r = self.with_conn(|c| self.read(c, key, now_millis() as i64));
        if let Ok(v) = &r {
            self.counters.read(std::slice::from_ref(v));
            self.note_hits(&[key], std::slice::from_ref(v));
        }
        CacheFuture::ready(r)
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        CacheFuture::ready(self.set_now(key, value, ttl))
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::ready(self.delete_many_now(&[key]).map(|n| n > 0))
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::ready(self.with_conn(|c| {
            c.prepare_cached(
                "SELECT 1 FROM cache WHERE namespace = ?1 AND key = ?2 \
                 AND (expires_at IS NULL OR expires_at > ?3)",
            )
            .and_then(|mut s| s.exists(params![self.namespace, key, now_millis() as i64]))
            .map_err(|e| sql_err(&self.path, e).with_context("key", key))
        }))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.read_each(keys, Self::read)
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.set_many_now(entries, ttl)
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.delete_many_now(keys)
    }

    async fn clear(&self) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM cache WHERE namespace = ?1",
                params![self.namespace],
            )
            .map_err(|e| sql_err(&self.path, e))?;
            Ok(())
        })
    }

    async fn clear_all(&self) -> Result<()> {
        self.with_conn(|c| {
            c.execute("DELETE FROM cache", [])
                .map_err(|e| sql_err(&self.path, e))?;
            Ok(())
        })
    }

    async fn len(&self) -> Result<u64> {
        self.with_conn(|c| {
            c.prepare_cached(
                "SELECT count(*) FROM cache WHERE namespace = ?1 \
                 AND (expires_at IS NULL OR expires_at > ?2)",
            )
            .and_then(|mut s| {
                s.query_row(params![self.namespace, now_millis() as i64], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .map(|n| n as u64)
            .map_err(|e| sql_err(&self.path, e))
        })
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let now = now_millis() as i64;
        let row: Option<Option<i64>> = self.with_conn(|c| {
            c.prepare_cached(
                "SELECT CAST(expires_at AS INTEGER) FROM cache WHERE namespace = ?1 AND key = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![self.namespace, key], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| sql_err(&self.path, e).with_context("key", key))
        })?;
        Ok(match row {
            None => None,
            Some(None) => Some(None),
            Some(Some(t)) if t > now => Some(Some(Duration::from_millis((t - now) as u64))),
            Some(Some(_)) => None,
        })
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.add_now(key, value, ttl)
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64> {
        self.incr_now(key, delta)
    }

    async fn touch(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.touch_now(key, ttl)
    }

    async fn persist(&self, key: &str) -> Result<bool> {
        self.expire_at(key, None)
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        self.compare_and_set_now(key, expected, new, ttl)
    }

    fn get_with_ttl<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<ValueTtl>> {
        let r = self.with_conn(|c| self.read_with_ttl(c, key, now_millis() as i64));
        if let Ok(v) = &r {
            self.counters.read(std::slice::from_ref(v));
            self.note_hits(&[key], std::slice::from_ref(v));
        }
        CacheFuture::ready(r)
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        self.read_many_with_ttl(keys)
    }

    async fn keys(&self) -> Result<KeyStream> {
        // Pages by key so memory stays bounded whatever the table size. The
        // stream holds its own connection: it must not block this cache's.
        let conn = self.reader()?;
        let path = self.path.clone();
        let ns = self.namespace.clone();
        let state = (
            conn,
            None::<String>,
            Vec::<String>::new().into_iter(),
            false,
        );
        let s = futures::stream::unfold(state, move |(conn, after, mut buf, done)| {
            let path = path.clone();
            let ns = ns.clone();
            async move {
                if let Some(k) = buf.next() {
                    return Some((Ok(k.clone()), (conn, Some(k), buf, done)));
                }
                if done {
                    return None;
                }
                let page = (|| -> rusqlite::Result<Vec<String>> {
                    let mut st = conn.prepare_cached(
                        "SELECT key FROM cache WHERE namespace = ?1 AND (?2 IS NULL OR key > ?2) \
                         AND (expires_at IS NULL OR expires_at > ?3) ORDER BY key LIMIT ?4",
                    )?;
                    let rows = st.query_map(
                        params![ns, after.as_deref(), now_millis() as i64, KEY_PAGE as i64],
                        |r| r.get::<_, String>(0),
                    )?;
                    rows.collect()
                })();
                match page {
                    Err(e) => Some((Err(sql_err(&path, e)), (conn, after, buf, true))),
                    Ok(p) => {
                        let last_page = p.len() < KEY_PAGE;
                        buf = p.into_iter();
                        let k = buf.next()?;
                        Some((Ok(k.clone()), (conn, Some(k), buf, last_page)))
                    }
                }
            }
        });
        Ok(Box::pin(s))
    }

    /// One streamed query on its own read-only connection (one consistent
    /// snapshot), run on a thread that feeds a bounded channel: memory stays
    /// at a few batches whatever the table size.
    async fn entries(&self) -> Result<EntryStream<'_>> {
        let conn = self.reader()?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<Entry>>>(4);
        let (path, ns) = (self.path.clone(), self.namespace.clone());
        std::thread::Builder::new()
            .name("unicache-sqlite-entries".into())
            .spawn(move || stream_entries(&conn, &path, &ns, &tx))
            .map_err(|e| {
                Error::from(e)
                    .with_backend(BACKEND)
                    .with_context("op", "start export thread")
            })?;
        let batches = futures::stream::unfold(rx, |mut rx| async move {
            let batch = rx.recv().await?;
            Some((batch, rx))
        });
        Ok(batches
            .flat_map(|r| match r {
                Ok(v) => futures::stream::iter(v.into_iter().map(Ok).collect::<Vec<_>>()),
                Err(e) => futures::stream::iter(vec![Err(e)]),
            })
            .boxed())
    }

    async fn stats(&self) -> Result<Stats> {
        let mut s = self.counters.snapshot(BACKEND, self.endpoint());
        s.entries = Some(self.len().await?);
        let (pages, page_size): (i64, i64) = self.with_conn(|c| {
            let p = c
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .map_err(|e| sql_err(&self.path, e))?;
            let ps = c
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(|e| sql_err(&self.path, e))?;
            Ok((p, ps))
        })?;
        let mut server = serde_json::json!({
            "path": self.path.display().to_string(),
            "namespace": self.namespace,
            "file_bytes": pages * page_size,
            "sqlite_version": rusqlite::version(),
        });
        if self.is_bounded() {
            let u = self.with_conn(|c| bounds::usage(c, &self.path))?;
            server["bounded"] = serde_json::json!({
                "max_bytes": u.bounds.max_bytes,
                "max_entries": u.bounds.max_entries,
                "max_age_ms": u.bounds.max_age.map(|a| a.as_millis() as u64),
                "bytes_used": u.bytes,
                "entries": u.entries,
                "evictions": u.evictions,
                "bytes_counted_as": format!(
                    "key + value + {} bytes per entry, every namespace, expired rows until purged",
                    bounds::ENTRY_OVERHEAD
                ),
            });
        }
        s.server = Some(server);
        Ok(s)
    }

    async fn compact(&self) -> Result<()> {
        self.with_conn(|c| {
            self.purge(c)?;
            if self.is_bounded() {
                c.execute_batch(bounds::RECOUNT)
                    .map_err(|e| sql_err(&self.path, e))?;
            }
            c.execute_batch("VACUUM")
                .map_err(|e| sql_err(&self.path, e))
        })
    }

    async fn flush(&self) -> Result<()> {
        self.with_conn(|c| {
            self.purge(c)?;
            // Move the WAL into the main file so `sqlite3` readers see one file.
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(|e| sql_err(&self.path, e))
        })
    }
}
