//! The `Cache` trait over the log, and the reads that walk many lines
//! (keys, entries, counts).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::codec::line_fields;
use super::bounds;
use super::compact::Omit;
use super::index::NS_OVERFLOW;
use super::store::State;
use super::{BACKEND, FileCache, Op, decode_line, ferr};
use crate::cache::{
    Cache, CacheFuture, Capabilities, Entry, EntryStream, KeyStream, Stats, ValueTtl, now_millis,
};
use crate::error::Result;

/// Entries read per step of [`Cache::entries`].
const ENTRY_BATCH: usize = 1000;
/// Nearby lines are read together, up to this many bytes at a time.
const READ_SPAN: u64 = 1 << 20;

/// Calls `f` with each line (without its newline) at `locs` (sorted by
/// offset), reading neighbouring lines in one go.
fn read_lines(
    file: &File,
    locs: &[(u64, u32)],
    path: &Path,
    mut f: impl FnMut(&[u8]),
) -> Result<()> {
    let mut buf = Vec::new();
    let mut i = 0;
    while i < locs.len() {
        let start = locs[i].0;
        let mut j = i + 1;
        while j < locs.len() && locs[j].0 + u64::from(locs[j].1) - start <= READ_SPAN {
            j += 1;
        }
        let end = locs[j - 1].0 + u64::from(locs[j - 1].1);
        buf.resize((end - start) as usize, 0);
        file.read_exact_at(&mut buf, start)
            .map_err(|e| ferr(path, "read", e))?;
        for &(off, len) in &locs[i..j] {
            let at = (off - start) as usize;
            let line = &buf[at..at + len as usize];
            f(line.strip_suffix(b"\n").unwrap_or(line));
        }
        i = j;
    }
    Ok(())
}

/// The live entries of namespace `ns` among the lines at `locs`.
fn decode_entries(file: &File, locs: &[(u64, u32)], ns: &str, path: &Path) -> Result<Vec<Entry>> {
    let now = now_millis();
    let mut out = Vec::with_capacity(locs.len());
    read_lines(file, locs, path, |line| {
        if let Ok(Op::Set {
            ns: n,
            key,
            value,
            expires,
        }) = decode_line(line)
        {
            let ttl = match expires {
                Some(x) if x <= now => return,
                Some(x) => Some(Duration::from_millis(x - now)),
                None => None,
            };
            if n == ns {
                out.push(Entry::new(key, Bytes::from(value), ttl));
            }
        }
    })?;
    Ok(out)
}

impl FileCache {
    /// The lines (offset, length) of this namespace's live entries, in log
    /// order. Past 65,535 namespaces other namespaces' lines may be among
    /// them: readers check each line's namespace.
    fn live_lines(&self, st: &State, now: u64) -> Vec<(u64, u32)> {
        let Some(id) = st.ix.index.ns_id(&self.ns) else {
            return Vec::new();
        };
        let mut v: Vec<(u64, u32)> = st
            .ix
            .index
            .iter()
            .filter(|(_, n, l)| *n == id && l.expires.is_none_or(|x| x > now))
            .map(|(_, _, l)| (l.offset, l.len))
            .collect();
        v.sort_unstable();
        v
    }

    /// This namespace's live keys, in log order.
    fn live_keys(&self, st: &State, now: u64) -> Result<Vec<String>> {
        let locs = self.live_lines(st, now);
        let mut keys = Vec::with_capacity(locs.len());
        read_lines(&st.file, &locs, &self.real, |line| {
            if let Some(f) = line_fields(line)
                && f.set
                && f.ns == self.ns
            {
                keys.push(f.key.into_owned());
            }
        })?;
        Ok(keys)
    }

    /// How many live entries this namespace has.
    fn count_live(&self, st: &State, now: u64) -> Result<u64> {
        match st.ix.index.ns_id(&self.ns) {
            None => Ok(0),
            Some(NS_OVERFLOW) => Ok(self.live_keys(st, now)?.len() as u64),
            Some(id) => Ok(st
                .ix
                .index
                .iter()
                .filter(|(_, n, l)| *n == id && l.expires.is_none_or(|x| x > now))
                .count() as u64),
        }
    }
}

#[async_trait]
impl Cache for FileCache {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn endpoint(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            ttl: true,
            read_ttl: true,
            list_keys: true,
            count: true,
            persistent: true,
            shared: true,
            evicts: self.bounded.load(std::sync::atomic::Ordering::Relaxed),
            max_value_bytes: Some(u32::MAX as u64 / 2),
            batch_concurrency: 1,
            inline: true,
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        let r = self.with_state(|st| {
            self.refresh(st, false)?;
            self.lookup(st, key, now_millis())
        });
        let r = r.map(Self::bytes);
        if let Ok(v) = &r {
            self.counters.read(std::slice::from_ref(v));
        }
        CacheFuture::ready(r)
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> CacheFuture<'a, ()> {
        CacheFuture::ready(self.expiry(ttl).and_then(|x| {
            self.with_state(|st| self.append(st, &[(key, Some(value))], x))?;
            self.counters.set(1);
            Ok(())
        }))
    }

    fn delete<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::ready(self.delete_now(&[key]).map(|n| n > 0))
    }

    fn contains<'a>(&'a self, key: &'a str) -> CacheFuture<'a, bool> {
        CacheFuture::ready(self.with_state(|st| {
            self.refresh(st, false)?;
            let found = self.find(st, key, Some(now_millis()), None)?;
            if let Some((_, loc)) = found {
                self.mark_read(st, loc.offset);
            }
            Ok(found.is_some())
        }))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let out = self.with_state(|st| {
            self.refresh(st, false)?;
            let now = now_millis();
            keys.iter()
                .map(|k| self.lookup(st, k, now).map(Self::bytes))
                .collect::<Result<Vec<_>>>()
        })?;
        self.counters.read(&out);
        Ok(out)
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let x = self.counters.track(self.expiry(ttl))?;
        let e: Vec<(&str, Option<&[u8]>)> = entries.iter().map(|(k, v)| (*k, Some(*v))).collect();
        self.with_state(|st| self.append(st, &e, x))?;
        self.counters.set(entries.len() as u64);
        Ok(())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.delete_now(keys)
    }

    async fn clear(&self) -> Result<()> {
        // Rewriting without the namespace's entries leaves a valid store.
        self.rewrite(Omit::Namespace(&self.ns))
    }

    async fn clear_all(&self) -> Result<()> {
        self.rewrite(Omit::All)
    }

    async fn len(&self) -> Result<u64> {
        self.with_state(|st| {
            self.refresh(st, false)?;
            self.count_live(st, now_millis())
        })
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        self.with_state(|st| {
            self.refresh(st, false)?;
            let now = now_millis();
            Ok(self.find(st, key, Some(now), None)?.map(|(_, l)| {
                l.expires
                    .map(|x| Duration::from_millis(x.saturating_sub(now)))
            }))
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
        let r = self.with_state(|st| {
            self.refresh(st, false)?;
            self.lookup_with_ttl(st, key, now_millis())
        });
        if let Ok(v) = &r {
            self.counters.read(std::slice::from_ref(v));
        }
        CacheFuture::ready(r)
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        let out = self.with_state(|st| {
            self.refresh(st, false)?;
            let now = now_millis();
            keys.iter()
                .map(|k| self.lookup_with_ttl(st, k, now))
                .collect::<Result<Vec<_>>>()
        })?;
        self.counters.read(&out);
        Ok(out)
    }

    async fn keys(&self) -> Result<KeyStream> {
        let mut keys = self.with_state(|st| {
            self.refresh(st, false)?;
            self.live_keys(st, now_millis())
        })?;
        keys.sort_unstable();
        Ok(Box::pin(futures::stream::iter(keys.into_iter().map(Ok))))
    }

    /// One pass over the live lines in log order (a snapshot as of the
    /// call: a compaction meanwhile does not disturb it), no get per key.
    async fn entries(&self) -> Result<EntryStream<'_>> {
        let (file, locs) = self.with_state(|st| {
            self.refresh(st, false)?;
            let file = st
                .file
                .try_clone()
                .map_err(|e| ferr(&self.real, "dup", e))?;
            Ok((file, self.live_lines(st, now_millis())))
        })?;
        let starts = (0..locs.len()).step_by(ENTRY_BATCH);
        let batches = futures::stream::iter(starts).map(move |i| {
            let part = &locs[i..(i + ENTRY_BATCH).min(locs.len())];
            super::super::run_blocking(|| decode_entries(&file, part, &self.ns, &self.real))
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
        let (entries, server) = self.with_state(|st| {
            self.refresh(st, false)?;
            let n = self.count_live(st, now_millis())?;
            Ok((
                n,
                serde_json::json!({
                    "path": self.path.display().to_string(),
                    "namespace": self.ns,
                    "file_bytes": st.seen_len,
                    "live_bytes": st.ix.live_bytes,
                    "dead_bytes": st.end.saturating_sub(st.ix.live_bytes),
                    "torn_tail_bytes": st.seen_len.saturating_sub(st.end),
                    "corrupt_records": st.ix.corrupt,
                    "keys_all_namespaces": st.ix.index.len(),
                    "bounds": bounds::to_json(st.ix.bounds.as_ref()),
                    "used_bytes": st.ix.used_bytes(),
                    "used_entries": st.ix.index.len(),
                    "evictions": s.evictions,
                    "evict_policy": format!("{:?}", self.policy).to_lowercase(),
                }),
            ))
        })?;
        s.entries = Some(entries);
        s.server = Some(server);
        Ok(s)
    }

    async fn flush(&self) -> Result<()> {
        self.with_state(|st| {
            st.file
                .sync_data()
                .map_err(|e| ferr(&self.real, "fsync", e))
        })
    }

    async fn compact(&self) -> Result<()> {
        self.compact_now()
    }
}
