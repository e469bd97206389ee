//! `file:PATH`: a crash-safe, multi-process, append-only JSON-lines log
//! (Bitcask's design: an in-memory index of where each live key's latest line
//! sits, compaction into a fresh file that atomically replaces the old one).
//!
//! Every line carries a CRC-32 of its own bytes, so a torn tail (a writer
//! killed mid-append) and damaged lines are recognised and never returned.
//! Writers serialise through an exclusive lock on `PATH.lock`; every operation
//! first catches up with lines other processes appended and notices a
//! compaction by another process (the path's inode changed) by reloading.
//! Writers look at the path under the lock; readers of a version-2 log only
//! when the record writers leave in the lock file (`shared`) says the log
//! changed.
//! It must never rewrite a file that is not a unicache log.
//!
//! An open maps the index from the hint file `PATH.hint` when a valid one
//! is there, and reads only the lines after it (`hint` module).
//!
//! A `PATH` that is a symlink is resolved once at open: the lock, compaction's
//! temporary file and its rename all go next to the real file.
//!
//! With `max_bytes`, `max_entries` or `max_age` the log is bounded: how bytes
//! are counted, the eviction policy, the disk-usage formula and the rule
//! between processes are in the `bounds` module's documentation (README,
//! "Bounded file log").

mod atomic;
mod bounds;
pub(crate) mod codec;
mod compact;
mod config;
mod files;
mod hint;
mod index;
mod map;
mod periodic;
mod read;
mod shared;
mod store;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;

#[doc(hidden)]
pub use bounds::Policy as EvictPolicy;
use bounds::Room;
use codec::{Op, decode_line, encode_line, encode_set};
pub use config::{DEFAULT_COMPACT_RATIO, FileConfig, SyncPolicy};

use crate::cache::{CacheOptions, Counters, now_millis};
use crate::error::{Error, ErrorKind, Result};
use compact::Omit;
use index::{Loc, key_hash, ns_seed};
use store::{Lines, State};

const BACKEND: &str = "file";
/// Lines are written in pieces of about this size.
const WRITE_CHUNK: usize = 4 << 20;
/// No compaction below this file size.
const MIN_COMPACT_BYTES: u64 = 1 << 20;

/// The file backend.
pub struct FileCache {
    /// The path as given (shown in errors and `endpoint`).
    path: PathBuf,
    /// The file behind any symlinks: every read, write and rename uses it.
    real: PathBuf,
    lock_path: PathBuf,
    sync: SyncPolicy,
    /// With `sync=periodic`: written since the background thread's last fsync.
    dirty: Option<std::sync::Arc<periodic::Dirty>>,
    compact_ratio: u8,
    ns: String,
    /// Hash seed of `ns`.
    seed: u64,
    options: CacheOptions,
    /// Which entries a bounded log evicts.
    policy: EvictPolicy,
    /// The log had bounds when last read (for `capabilities`).
    bounded: AtomicBool,
    counters: Counters,
    state: Mutex<State>,
    /// The lock file, kept open to read the writers' [`shared::Record`]
    /// (set at open when it exists, else at the first write lock).
    shared: OnceLock<File>,
    /// Hints (`hint` module): read at open, and written when one saves at
    /// least this many bytes of reading (`None`: neither).
    hint_min: Option<u64>,
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache")
            .field("path", &self.path)
            .field("namespace", &self.ns)
            .finish_non_exhaustive()
    }
}

fn ferr(path: &Path, op: &str, e: std::io::Error) -> Error {
    let err = if e.raw_os_error() == Some(28) {
        Error::new(ErrorKind::Io, "disk full")
    } else {
        Error::from(e)
    };
    err.with_backend(BACKEND)
        .with_context("path", path.display())
        .with_context("op", op.to_string())
}

impl Drop for FileCache {
    /// With `sync=periodic`, what the background thread has not synced yet.
    /// and a hint (`hint` module) when one saves enough reading.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if self.dirty.as_ref().is_some_and(|d| d.take()) {
            let _ = st.file.sync_data();
        }
        // A handle that must not create files (read-only commands) leaves
        // hints to the writers.
        if let Some(min) = self.hint_min.filter(|_| !self.options.must_exist) {
            save_hint(&self.real, &self.lock_path, st, min);
        }
    }
}

/// Writes a hint of `st` when it saves at least `min` bytes of reading; a
/// failure is a warning (the next open reads the log).
fn save_hint(real: &Path, lock_path: &Path, st: &State, min: u64) {
    match hint::save(real, lock_path, st, min) {
        Ok(_) => {}
        // A log shared read-only: its writers leave the hints.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::debug!(path = %real.display(), "cannot write the hint file: {e}");
        }
        Err(e) => tracing::warn!(path = %real.display(), "cannot write the hint file: {e}"),
    }
}

/// Holds `PATH.lock` exclusively until dropped.
struct WriteLock(File);

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl FileCache {
    /// Opens the log at `path` (following symlinks to the real file).
    /// Without [`CacheOptions::must_exist`] a missing log is created (mode
    /// 0600), with its missing parent directories; with it, a missing log is
    /// an [`ErrorKind::NotFound`] error and nothing is created.
    pub fn open(config: FileConfig, options: CacheOptions) -> Result<Self> {
        let FileConfig {
            path,
            sync,
            compact_ratio,
            evict: policy,
            hint_min,
        } = config;
        let path = path.as_path();
        let real = files::resolve_links(path).map_err(|e| ferr(path, "resolve symlink", e))?;
        let create = !options.must_exist;
        if !create {
            match std::fs::metadata(&real) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(store::not_found(path));
                }
                Err(e) => return Err(ferr(path, "stat", e)),
                Ok(_) => {}
            }
        } else if let Some(dir) = real.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ferr(path, "create directory", e))?;
        }
        let lock_path = files::with_suffix(&real, ".lock");
        if create {
            files::remove_stale_temps(&real);
        }
        // With bounds of its own, expiries are folded with its max_age from
        // the start: its bounds line is about to be the log's.
        let want = options.bounds;
        let pin = (!want.is_unbounded()).then(|| bounds::age_ms(&want));
        let hints = hint_min.is_some();
        let state = State::load_folding(&real, &lock_path, (false, hints), create, pin)?;
        let ns = options.namespace.clone().unwrap_or_default();
        // Not created here: a read-only command creates nothing.
        let shared_file = files::open_existing_lock(&lock_path);
        let dirty = (sync == SyncPolicy::Periodic).then(|| periodic::Dirty::register(real.clone()));
        let cache = FileCache {
            path: path.to_path_buf(),
            real,
            lock_path,
            sync,
            dirty,
            compact_ratio,
            seed: ns_seed(&ns),
            ns,
            options,
            policy,
            bounded: AtomicBool::new(false),
            counters: Counters::default(),
            state: Mutex::new(state),
            shared: OnceLock::new(),
            hint_min,
        };
        if let Some(f) = shared_file {
            let _ = cache.shared.set(f);
        }
        {
            let mut st = cache.state.lock().unwrap_or_else(|p| p.into_inner());
            if want.is_unbounded() {
                cache.settle(&mut st, false)?;
            } else {
                cache.install_bounds(&mut st, want)?;
            }
        }
        Ok(cache)
    }

    fn lock(&self) -> Result<WriteLock> {
        let f = files::open_lock(&self.lock_path, &self.real)
            .map_err(|e| ferr(&self.lock_path, "open lock", e))?;
        f.lock().map_err(|e| ferr(&self.lock_path, "lock", e))?;
        if self.shared.get().is_none()
            && let Ok(copy) = f.try_clone()
        {
            let _ = self.shared.set(copy);
        }
        Ok(WriteLock(f))
    }

    /// Runs `f` under the write lock, caught up with the file, then leaves
    /// the log's state in the lock file for readers (whatever `f` did, even
    /// when it failed half way).
    fn locked_in<T>(&self, st: &mut State, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let lock = self.lock()?;
        let r = self.refresh(st, true).and_then(|()| f(st));
        self.publish(st);
        drop(lock);
        r
    }

    /// Writes the shared record for the log as `st` has it (under the write
    /// lock, `st` caught up with the path): the generation stays, unless
    /// the record names another file or a compaction that did not finish
    /// (then the next even one: readers check the path). Version-1 logs
    /// get none (an older unicache writing to them would not update it).
    fn publish(&self, st: &State) {
        let Some(f) = self.shared.get().filter(|_| st.v2) else {
            return;
        };
        let cur = shared::read(f);
        let generation = match cur {
            Some(r) if !r.replacing() && r.id == st.ino => r.generation,
            Some(r) => (r.generation | 1) + 1,
            None => 0,
        };
        let r = shared::Record {
            generation,
            id: st.ino,
            len: st.seen_len,
        };
        if cur != Some(r)
            && let Err(e) = shared::write(f, &r)
        {
            tracing::warn!(path = %self.lock_path.display(), "cannot update the lock file: {e}");
        }
    }

    /// Before a compaction renames its file over the log (under the write
    /// lock): an odd generation, so readers check the path until the
    /// record is whole again.
    fn publish_replacing(&self, st: &State) {
        let Some(f) = self.shared.get() else { return };
        let generation = shared::read(f).map_or(1, |r| r.generation | 1);
        let r = shared::Record {
            generation,
            id: st.ino,
            len: st.seen_len,
        };
        if let Err(e) = shared::write(f, &r) {
            tracing::warn!(path = %self.lock_path.display(), "cannot update the lock file: {e}");
        }
    }

    fn load(&self, locked: bool) -> Result<State> {
        State::load(
            &self.real,
            &self.lock_path,
            (locked, self.hint_min.is_some()),
            !self.options.must_exist,
        )
    }

    /// Catches up with other processes: reloads after a compaction (new
    /// inode), applies lines appended since we last looked. A reader of a
    /// version-2 log trusts the writers' shared record when it matches what
    /// it has (see `shared`); writers always look at the path.
    fn refresh(&self, st: &mut State, locked: bool) -> Result<()> {
        if !locked
            && st.v2
            && let Some(r) = self.shared.get().and_then(shared::read)
            && !r.replacing()
            && r.id == st.ino
            && r.len == st.seen_len
        {
            return Ok(());
        }
        self.refresh_by_path(st, locked)
    }

    /// [`FileCache::refresh`] by a `stat` of the path.
    fn refresh_by_path(&self, st: &mut State, locked: bool) -> Result<()> {
        let meta = match std::fs::metadata(&self.real) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted under us: start a new log.
                *st = self.load(locked)?;
                return self.settle(st, locked);
            }
            Err(e) => return Err(ferr(&self.real, "stat", e)),
        };
        if (meta.dev(), meta.ino()) != st.ino {
            let corrupt = st.ix.corrupt;
            *st = self.load(locked)?;
            st.ix.corrupt = st.ix.corrupt.max(corrupt);
            return self.settle(st, locked);
        }
        if meta.len() != st.seen_len {
            st.scan(&self.real, &self.lock_path, locked)?;
            return self.settle(st, locked);
        }
        Ok(())
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let run = || {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut st)
        };
        let r = super::run_blocking(run);
        self.counters.track(r)
    }

    /// Finds `key` in this namespace (the index keeps hashes: a match is
    /// confirmed by reading its line). `live_at`: skip an entry expired then.
    /// `value`: receives the decoded value and the line's own expiry (the
    /// index's may be earlier: `max_age`).
    fn find(
        &self,
        st: &State,
        key: &str,
        live_at: Option<u64>,
        mut value: Option<&mut Option<(Vec<u8>, Option<u64>)>>,
    ) -> Result<Option<(usize, Loc)>> {
        let Some(id) = st.ix.index.ns_id(&self.ns) else {
            return Ok(None);
        };
        let h = key_hash(self.seed, key);
        let mut buf = Vec::new();
        let found = st.ix.index.find(h, id, |loc| {
            if live_at.is_some_and(|now| loc.expires.is_some_and(|x| x <= now)) {
                return Ok(false);
            }
            let Some(out) = value.as_deref_mut() else {
                return Lines::file(&st.file)
                    .is_key(loc, &self.ns, key, &mut buf)
                    .map_err(|e| ferr(&self.real, "read", e));
            };
            buf.resize(loc.len as usize, 0);
            st.file
                .read_exact_at(&mut buf, loc.offset)
                .map_err(|e| ferr(&self.real, "read", e))?;
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            // Never a wrong value: a line that no longer checks out is a miss.
            match decode_line(line) {
                Ok(Op::Set {
                    ns,
                    key: k,
                    value,
                    expires,
                }) if ns == self.ns && k == key => {
                    *out = Some((value, expires));
                    Ok(true)
                }
                _ => Ok(false),
            }
        })?;
        Ok(found.map(|i| (i, st.ix.index.loc(i))))
    }

    /// The live value of `key` (a read: sets its read bit).
    fn lookup(&self, st: &mut State, key: &str, now: u64) -> Result<Option<Vec<u8>>> {
        let mut value = None;
        if let Some((_, loc)) = self.find(st, key, Some(now), Some(&mut value))? {
            self.mark_read(st, loc.offset);
        }
        Ok(value.map(|(v, _)| v))
    }

    /// The expiry (Unix ms) of a write with `ttl`; saturates at `u64::MAX`
    /// (never overflows, whatever the duration).
    fn expiry(&self, ttl: Option<Duration>) -> Result<Option<u64>> {
        Ok(self.options.effective_ttl(ttl)?.map(|d| {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            now_millis().saturating_add(ms)
        }))
    }

    /// Appends lines under the write lock, updating the index.
    fn append(
        &self,
        st: &mut State,
        entries: &[(&str, Option<&[u8]>)],
        expires: Option<u64>,
    ) -> Result<()> {
        self.locked_in(st, |st| self.append_locked(st, entries, expires))
    }

    /// Cuts off a torn last line before appending after it.
    fn cut_torn_tail(&self, st: &mut State) -> Result<()> {
        if st.seen_len > st.end {
            tracing::warn!(
                path = %self.real.display(),
                "cutting off a torn last line ({} bytes) left by an interrupted write",
                st.seen_len - st.end
            );
            st.file
                .set_len(st.end)
                .map_err(|e| ferr(&self.real, "truncate", e))?;
            st.seen_len = st.end;
        }
        Ok(())
    }

    /// Writes `buf` at the end and records `pending` (entry index, location)
    /// in the index; a bounded log then evicts and compacts as needed.
    fn flush_lines(
        &self,
        st: &mut State,
        buf: &mut Vec<u8>,
        pending: &mut Vec<(usize, Loc)>,
        entries: &[(&str, Option<&[u8]>)],
    ) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.write_chunk(st, buf, pending)?;
        if self.sync == SyncPolicy::Always {
            st.file
                .sync_data()
                .map_err(|e| ferr(&self.real, "fsync", e))?;
        }
        st.end += buf.len() as u64;
        st.seen_len = st.end;
        let lines = Lines::file(&st.file);
        let written = pending.len();
        for (i, loc) in pending.drain(..) {
            let (key, value) = entries[i];
            st.ix
                .record(&lines, &self.ns, key, value.map(|_| loc))
                .map_err(|e| ferr(&self.real, "read", e))?;
        }
        buf.clear();
        if Self::is_bounded(st) {
            // The chunk is in the log: a failed eviction is a warning.
            if let Err(e) = self.enforce(st, written, Room::default()) {
                tracing::warn!("evicting after a write failed (the write stands): {e}");
            }
            self.maybe_compact(st)?;
        }
        Ok(())
    }

    /// Appends `buf`. Whatever part of a failed write reached the file is
    /// a torn tail, cut at once. A bounded log out of space makes room
    /// (evicts, compacts) and tries once more, `pending` moved along.
    fn write_chunk(
        &self,
        st: &mut State,
        buf: &[u8],
        pending: &mut [(usize, Loc)],
    ) -> Result<()> {
        let Err(e) = st.file.write_all(buf) else {
            return Ok(());
        };
        let _ = st.file.set_len(st.end);
        if e.raw_os_error() != Some(28) || !Self::is_bounded(st) {
            return Err(ferr(&self.real, "append", e));
        }
        let before = st.end;
        let room = Room {
            bytes: buf.len() as u64,
            entries: pending.len() as u64,
        };
        self.room_on_full_disk(st, room);
        for (_, loc) in pending.iter_mut() {
            loc.offset = loc.offset - before + st.end;
        }
        if let Err(e) = st.file.write_all(buf) {
            let _ = st.file.set_len(st.end);
            return Err(ferr(&self.real, "append", e));
        }
        Ok(())
    }

    /// [`FileCache::append`] for a caller that holds the write lock and has
    /// caught up with the file.
    fn append_locked(
        &self,
        st: &mut State,
        entries: &[(&str, Option<&[u8]>)],
        expires: Option<u64>,
    ) -> Result<()> {
        self.cut_torn_tail(st)?;
        let mut buf = Vec::with_capacity(WRITE_CHUNK.min(entries.len() * 128 + 64));
        let mut scratch = Vec::with_capacity(256);
        let mut pending: Vec<(usize, Loc)> = Vec::new();
        // With max_age in force, set lines carry their write time.
        let written = st.ix.fold_age.map(|_| now_millis());
        st.ix.any_dated |= written.is_some();
        let folded = st.ix.expiry(expires, written);
        for (i, (key, value)) in entries.iter().enumerate() {
            let start = buf.len();
            match value {
                Some(v) => {
                    let (ns, json) = (&self.ns, st.v2);
                    encode_set(&mut buf, &mut scratch, ns, key, v, expires, written, json);
                }
                None => encode_line(&mut buf, &mut scratch, "del", &self.ns, key, None, None),
            }
            let len = buf.len() - start;
            let refused = if value.is_none() {
                None
            } else if u32::try_from(len).is_err() {
                Some(
                    Error::new(ErrorKind::InvalidInput, "entry too large for the file log")
                        .with_backend(BACKEND)
                        .with_context("key", key),
                )
            } else {
                self.check_fits(st, len, key).err()
            };
            if let Some(err) = refused {
                buf.truncate(start);
                self.flush_lines(st, &mut buf, &mut pending, entries)?;
                return Err(err);
            }
            pending.push((
                i,
                Loc {
                    offset: st.end + start as u64,
                    len: len as u32,
                    expires: folded.filter(|_| value.is_some()),
                },
            ));
            if buf.len() >= WRITE_CHUNK || self.sync == SyncPolicy::Always {
                self.flush_lines(st, &mut buf, &mut pending, entries)?;
            }
        }
        self.flush_lines(st, &mut buf, &mut pending, entries)?;
        if self.sync == SyncPolicy::Batch {
            st.file
                .sync_data()
                .map_err(|e| ferr(&self.real, "fsync", e))?;
        }
        if let Some(d) = &self.dirty {
            d.mark(&st.file, st.ino);
        }
        self.maybe_compact(st)
    }

    /// Compacts when dead bytes pass the ratio. Runs after a write is in the
    /// log: a compaction that fails (a full disk has no room for the copy)
    /// is a warning, never that write's error; the log stays as it was and
    /// the next write tries again.
    fn maybe_compact(&self, st: &mut State) -> Result<()> {
        let dead = st.end.saturating_sub(st.ix.live_bytes);
        // A bounded log smaller than 1 MiB compacts from its bound on, so
        // its file stays within the formula (`bounds` module doc).
        let floor = match st.ix.bounds.and_then(|b| b.max_bytes) {
            Some(m) => m.min(MIN_COMPACT_BYTES),
            None => MIN_COMPACT_BYTES,
        };
        if st.end >= floor
            && dead * 100 > st.end * self.compact_ratio as u64
            && let Err(e) = self.compact_locked(st, Omit::Nothing)
        {
            tracing::warn!("compaction after a write failed (the write stands): {e}");
        }
        Ok(())
    }

    /// Compacts now (CLI `unicache compact`).
    pub fn compact_now(&self) -> Result<()> {
        self.rewrite(Omit::Nothing)
    }

    /// Compacts under the write lock, leaving out `omit` too.
    fn rewrite(&self, omit: Omit) -> Result<()> {
        self.with_state(|st| self.locked_in(st, |st| self.compact_locked(st, omit)))
    }

    /// Tombstones for the keys present; returns how many were live.
    fn delete_now(&self, keys: &[&str]) -> Result<u64> {
        let n = self.with_state(|st| self.locked_in(st, |st| {
            let now = now_millis();
            let mut uniq: Vec<&str> = keys.to_vec();
            uniq.sort_unstable();
            uniq.dedup();
            // Tombstones for every key present (expired ones too, so they go);
            // only unexpired ones count as deleted.
            let mut present: Vec<(&str, Option<&[u8]>)> = Vec::new();
            let mut live = 0u64;
            for k in uniq {
                if let Some((_, l)) = self.find(st, k, None, None)? {
                    live += u64::from(l.expires.is_none_or(|x| x > now));
                    present.push((k, None));
                }
            }
            // Under the same lock: nothing can change between looking and writing.
            if !present.is_empty() {
                self.append_locked(st, &present, None)?;
            }
            Ok(live)
        }))?;
        self.counters.delete(n);
        Ok(n)
    }

    /// The value of a hit as the trait returns it.
    fn bytes(v: Option<Vec<u8>>) -> Option<Bytes> {
        v.map(Bytes::from)
    }
}
