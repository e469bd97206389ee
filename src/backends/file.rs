//! `file:PATH`: a crash-safe, multi-process, append-only JSON-lines log
//! (Bitcask's design: an in-memory index of where each live key's latest line
//! sits, compaction into a fresh file that atomically replaces the old one).
//!
//! Every line carries a CRC-32 of its own bytes, so a torn tail (a writer
//! killed mid-append) and damaged lines are recognised and never returned.
//! Writers serialise through an exclusive lock on `PATH.lock`; every operation
//! first catches up with lines other processes appended and notices a
//! compaction by another process (the path's inode changed) by reloading.
//! It must never rewrite a file that is not a unicache log.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use crate::cache::{
    Cache, CacheFuture, CacheOptions, Capabilities, Counters, KeyStream, Stats, now_millis,
};
use crate::error::{Error, ErrorKind, Result};
use crate::url::SyncPolicy;

const BACKEND: &str = "file";
/// First line of every log; anything else is not ours.
pub const HEADER: &[u8] = b"{\"unicache\":\"file-log\",\"version\":1}\n";
/// Lines are written in pieces of about this size.
const WRITE_CHUNK: usize = 4 << 20;
/// No compaction below this file size.
const MIN_COMPACT_BYTES: u64 = 1 << 20;

/// Where a live entry's line is.
#[derive(Clone, Copy, Debug)]
struct Loc {
    offset: u64,
    len: u32,
    expires: Option<u64>,
}

/// One decoded line.
#[derive(Deserialize, Debug)]
struct Line<'a> {
    op: &'a str,
    #[serde(default, borrow)]
    n: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    k: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    v: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    b: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    x: Option<u64>,
}

/// A line as the index rebuild needs it: the value is skipped, not copied.
#[derive(Deserialize)]
struct ScanLine<'a> {
    op: &'a str,
    #[serde(default, borrow)]
    n: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    k: std::borrow::Cow<'a, str>,
    #[serde(default)]
    v: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    b: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    x: Option<u64>,
}

/// What a line does.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// A value for `ns`/`key`, expiring at `expires` (Unix ms).
    Set {
        /// Namespace ("" for none).
        ns: String,
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Expiry, Unix milliseconds.
        expires: Option<u64>,
    },
    /// A tombstone.
    Del {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
    },
}

/// Why a line was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LineError {
    /// Not `{"c":N,...}`.
    Malformed,
    /// Checksum mismatch.
    Checksum,
    /// Valid checksum, invalid content.
    Content,
}

fn index_key(ns: &str, key: &str) -> String {
    let mut s = String::with_capacity(ns.len() + key.len() + 4);
    if ns.is_empty() {
        s.push('0');
    } else {
        s.push_str(&ns.len().to_string());
    }
    s.push(':');
    s.push_str(ns);
    s.push_str(key);
    s
}

fn split_index_key(ik: &str) -> Option<(&str, &str)> {
    let (n, rest) = ik.split_once(':')?;
    let n: usize = n.parse().ok()?;
    (rest.len() >= n && rest.is_char_boundary(n)).then(|| rest.split_at(n))
}

/// Appends one encoded line (with its trailing newline) to `out`.
pub fn encode_line(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    op: &str,
    ns: &str,
    key: &str,
    value: Option<&[u8]>,
    expires: Option<u64>,
) {
    scratch.clear();
    scratch.extend_from_slice(b"{\"op\":\"");
    scratch.extend_from_slice(op.as_bytes());
    scratch.push(b'"');
    if !ns.is_empty() {
        scratch.extend_from_slice(b",\"n\":");
        let _ = serde_json::to_writer(&mut *scratch, ns);
    }
    scratch.extend_from_slice(b",\"k\":");
    let _ = serde_json::to_writer(&mut *scratch, key);
    if let Some(v) = value {
        match std::str::from_utf8(v) {
            Ok(s) => {
                scratch.extend_from_slice(b",\"v\":");
                let _ = serde_json::to_writer(&mut *scratch, s);
            }
            Err(_) => {
                scratch.extend_from_slice(b",\"b\":\"");
                scratch.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(v)
                        .as_bytes(),
                );
                scratch.push(b'"');
            }
        }
    }
    if let Some(x) = expires {
        scratch.extend_from_slice(b",\"x\":");
        scratch.extend_from_slice(x.to_string().as_bytes());
    }
    scratch.push(b'}');
    let crc = crc32fast::hash(scratch);
    out.extend_from_slice(b"{\"c\":");
    out.extend_from_slice(crc.to_string().as_bytes());
    out.push(b',');
    out.extend_from_slice(&scratch[1..]);
    out.push(b'\n');
}

/// Checks a line's checksum (without its newline) and returns its payload
/// parsed.
fn check_line(line: &[u8]) -> std::result::Result<Line<'_>, LineError> {
    check_crc(line)?;
    // The whole line is valid JSON too (the "c" field is ignored by `Line`).
    serde_json::from_slice(line).map_err(|_| LineError::Content)
}

/// Verifies the line's CRC-32 (over `{` + everything after `"c":N,`).
fn check_crc(line: &[u8]) -> std::result::Result<(), LineError> {
    let rest = line.strip_prefix(b"{\"c\":").ok_or(LineError::Malformed)?;
    let comma = rest
        .iter()
        .position(|&b| b == b',')
        .ok_or(LineError::Malformed)?;
    let crc: u32 = std::str::from_utf8(&rest[..comma])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(LineError::Malformed)?;
    let body = &rest[comma + 1..];
    let mut h = crc32fast::Hasher::new();
    h.update(b"{");
    h.update(body);
    if h.finalize() != crc {
        return Err(LineError::Checksum);
    }
    Ok(())
}

/// Decodes one line (without its newline): the fuzzable entry point.
pub fn decode_line(line: &[u8]) -> std::result::Result<Op, LineError> {
    let l = check_line(line)?;
    let ns = l.n.map(|c| c.into_owned()).unwrap_or_default();
    let key = l.k.into_owned();
    match l.op {
        "set" => {
            let value = match (l.v, l.b) {
                (Some(v), None) => v.into_owned().into_bytes(),
                (None, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|_| LineError::Content)?,
                _ => return Err(LineError::Content),
            };
            Ok(Op::Set {
                ns,
                key,
                value,
                expires: l.x,
            })
        }
        "del" => Ok(Op::Del { ns, key }),
        _ => Err(LineError::Content),
    }
}

/// The index: key -> location. xxh3 instead of SipHash: rebuilding a
/// 1M-key index at open is dominated by hashing otherwise, and the keys come
/// from our own file.
type Index = HashMap<String, Loc, xxhash_rust::xxh3::Xxh3DefaultBuilder>;

struct State {
    file: File,
    ino: (u64, u64),
    /// End of the last complete line applied.
    end: u64,
    /// File length last looked at (bytes past `end` are a torn tail).
    seen_len: u64,
    index: Index,
    live_bytes: u64,
    corrupt: u64,
}

impl State {
    /// Records a line in the index: `Some(loc)` a set, `None` a delete,
    /// keeping the live-bytes count in step.
    fn apply(&mut self, ik: String, loc: Option<Loc>) {
        let old = match loc {
            Some(loc) => {
                self.live_bytes += loc.len as u64;
                self.index.insert(ik, loc)
            }
            None => self.index.remove(&ik),
        };
        if let Some(o) = old {
            self.live_bytes -= o.len as u64;
        }
    }
}

/// The file backend.
pub struct FileCache {
    path: PathBuf,
    lock_path: PathBuf,
    sync: SyncPolicy,
    compact_ratio: u8,
    ns: String,
    options: CacheOptions,
    counters: Counters,
    state: Mutex<State>,
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
    let disk_full = e.raw_os_error() == Some(28);
    let mut err = Error::from(e)
        .with_backend(BACKEND)
        .with_context("path", path.display())
        .with_context("op", op.to_string());
    if disk_full {
        err = Error::new(ErrorKind::Io, "disk full")
            .with_backend(BACKEND)
            .with_context("path", path.display())
            .with_context("op", op.to_string());
    }
    err
}

fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).create(true);
    if append {
        o.append(true);
    } else {
        o.write(true);
    }
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Holds `PATH.lock` exclusively until dropped.
struct WriteLock(File);

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl FileCache {
    /// Opens (creating, mode 0600) the log at `path`.
    pub fn open(
        path: &Path,
        sync: SyncPolicy,
        compact_ratio: u8,
        options: CacheOptions,
    ) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ferr(path, "create directory", e))?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let cache = FileCache {
            path: path.to_path_buf(),
            lock_path,
            sync,
            compact_ratio,
            ns: options.namespace.clone().unwrap_or_default(),
            options,
            counters: Counters::default(),
            state: Mutex::new(Self::load(path, false)?),
        };
        Ok(cache)
    }

    fn lock(&self) -> Result<WriteLock> {
        let f = open_private(&self.lock_path, false)
            .map_err(|e| ferr(&self.lock_path, "open lock", e))?;
        f.lock().map_err(|e| ferr(&self.lock_path, "lock", e))?;
        Ok(WriteLock(f))
    }

    /// Opens the file and builds the index from scratch. `locked`: the
    /// caller already holds the write lock (taking it again would block).
    fn load(path: &Path, locked: bool) -> Result<State> {
        let mut file = open_private(path, true).map_err(|e| ferr(path, "open", e))?;
        let meta = file.metadata().map_err(|e| ferr(path, "stat", e))?;
        if meta.is_dir() {
            return Err(Error::new(ErrorKind::Io, "is a directory")
                .with_backend(BACKEND)
                .with_context("path", path.display()));
        }
        let mut head = vec![0u8; HEADER.len()];
        let n = read_up_to(&mut file, &mut head).map_err(|e| ferr(path, "read", e))?;
        if n == 0 {
            // New (or emptied) file: write the header. Concurrent creators
            // race benignly only under the lock, so take it.
            let lock = if locked {
                None
            } else {
                let l = open_private(&PathBuf::from(format!("{}.lock", path.display())), false)
                    .map_err(|e| ferr(path, "open lock", e))?;
                l.lock().map_err(|e| ferr(path, "lock", e))?;
                Some(WriteLock(l))
            };
            if file.metadata().map_err(|e| ferr(path, "stat", e))?.len() == 0 {
                file.write_all(HEADER)
                    .map_err(|e| ferr(path, "write header", e))?;
                file.sync_all().map_err(|e| ferr(path, "sync", e))?;
            }
            drop(lock);
            return Self::load(path, locked);
        }
        if head[..n] != HEADER[..n] || n < HEADER.len() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "not a unicache file log (first line differs); refusing to touch it",
            )
            .with_backend(BACKEND)
            .with_context("path", path.display()));
        }
        let mut st = State {
            ino: (meta.dev(), meta.ino()),
            file,
            end: HEADER.len() as u64,
            seen_len: HEADER.len() as u64,
            // Sized from the file (about 150 bytes a line) to avoid rehashing.
            index: Index::with_capacity_and_hasher(
                (meta.len() / 150) as usize,
                xxhash_rust::xxh3::Xxh3DefaultBuilder,
            ),
            live_bytes: HEADER.len() as u64,
            corrupt: 0,
        };
        scan(&mut st, path, locked)?;
        Ok(st)
    }

    /// Catches up with other processes: reloads after a compaction (new
    /// inode), applies lines appended since we last looked.
    fn refresh(&self, st: &mut State, locked: bool) -> Result<()> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted under us: start a new log.
                *st = Self::load(&self.path, locked)?;
                return Ok(());
            }
            Err(e) => return Err(ferr(&self.path, "stat", e)),
        };
        if (meta.dev(), meta.ino()) != st.ino {
            let corrupt = st.corrupt;
            *st = Self::load(&self.path, locked)?;
            st.corrupt = st.corrupt.max(corrupt);
            return Ok(());
        }
        if meta.len() != st.seen_len {
            scan(st, &self.path, locked)?;
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

    fn read_value(&self, st: &State, loc: Loc) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; loc.len as usize];
        st.file
            .read_exact_at(&mut buf, loc.offset)
            .map_err(|e| ferr(&self.path, "read", e))?;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        match decode_line(line) {
            Ok(Op::Set { value, .. }) => Ok(Some(value)),
            // Never a wrong value: a line that no longer checks out is a miss.
            _ => Ok(None),
        }
    }

    fn lookup(&self, st: &State, key: &str, now: u64) -> Result<Option<Vec<u8>>> {
        match st.index.get(&index_key(&self.ns, key)) {
            Some(loc) if loc.expires.is_none_or(|x| x > now) => self.read_value(st, *loc),
            _ => Ok(None),
        }
    }

    fn expiry(&self, ttl: Option<Duration>) -> Result<Option<u64>> {
        Ok(self
            .options
            .effective_ttl(ttl)?
            .map(|d| now_millis().saturating_add(d.as_millis() as u64)))
    }

    /// Appends lines under the write lock, updating the index. `lines`
    /// yields (index key, encoded line, is_set, expires).
    fn append(
        &self,
        st: &mut State,
        entries: &[(&str, Option<&[u8]>)],
        expires: Option<u64>,
    ) -> Result<()> {
        let _lock = self.lock()?;
        self.refresh(st, true)?;
        self.append_locked(st, entries, expires)
    }

    /// [`FileCache::append`] for a caller that holds the write lock and has
    /// caught up with the file.
    fn append_locked(
        &self,
        st: &mut State,
        entries: &[(&str, Option<&[u8]>)],
        expires: Option<u64>,
    ) -> Result<()> {
        if st.seen_len > st.end {
            tracing::warn!(
                path = %self.path.display(),
                "cutting off a torn last line ({} bytes) left by an interrupted write",
                st.seen_len - st.end
            );
            st.file
                .set_len(st.end)
                .map_err(|e| ferr(&self.path, "truncate", e))?;
            st.seen_len = st.end;
        }
        let mut buf = Vec::with_capacity(WRITE_CHUNK.min(entries.len() * 128 + 64));
        let mut scratch = Vec::with_capacity(256);
        let mut pending: Vec<(String, Loc, bool)> = Vec::new();
        let flush = |st: &mut State,
                     buf: &mut Vec<u8>,
                     pending: &mut Vec<(String, Loc, bool)>|
         -> Result<()> {
            if buf.is_empty() {
                return Ok(());
            }
            if let Err(e) = st.file.write_all(buf) {
                // Whatever part reached the file is a torn tail: cut it now.
                let _ = st.file.set_len(st.end);
                return Err(ferr(&self.path, "append", e));
            }
            if self.sync == SyncPolicy::Always {
                st.file
                    .sync_data()
                    .map_err(|e| ferr(&self.path, "fsync", e))?;
            }
            st.end += buf.len() as u64;
            st.seen_len = st.end;
            for (ik, loc, is_set) in pending.drain(..) {
                st.apply(ik, is_set.then_some(loc));
            }
            buf.clear();
            Ok(())
        };
        for (key, value) in entries {
            let start = buf.len();
            let op = if value.is_some() { "set" } else { "del" };
            encode_line(
                &mut buf,
                &mut scratch,
                op,
                &self.ns,
                key,
                *value,
                expires.filter(|_| value.is_some()),
            );
            let loc = Loc {
                offset: st.end + start as u64,
                len: (buf.len() - start) as u32,
                expires: expires.filter(|_| value.is_some()),
            };
            pending.push((index_key(&self.ns, key), loc, value.is_some()));
            if buf.len() >= WRITE_CHUNK || self.sync == SyncPolicy::Always {
                flush(st, &mut buf, &mut pending)?;
            }
        }
        flush(st, &mut buf, &mut pending)?;
        if self.sync == SyncPolicy::Batch {
            st.file
                .sync_data()
                .map_err(|e| ferr(&self.path, "fsync", e))?;
        }
        self.maybe_compact(st)
    }

    fn maybe_compact(&self, st: &mut State) -> Result<()> {
        let dead = st.end.saturating_sub(st.live_bytes);
        if st.end >= MIN_COMPACT_BYTES && dead * 100 > st.end * self.compact_ratio as u64 {
            self.compact_locked(st)?;
        }
        Ok(())
    }

    /// Rewrites the live, unexpired lines into a new file and renames it
    /// over the log (write, fsync, rename, fsync the directory). The caller
    /// holds the write lock.
    fn compact_locked(&self, st: &mut State) -> Result<()> {
        let now = now_millis();
        let tmp = PathBuf::from(format!(
            "{}.compact-{}",
            self.path.display(),
            std::process::id()
        ));
        let result = (|| -> Result<State> {
            let mut out = std::io::BufWriter::with_capacity(
                1 << 20,
                open_private(&tmp, false).map_err(|e| ferr(&tmp, "create", e))?,
            );
            out.get_mut()
                .set_len(0)
                .map_err(|e| ferr(&tmp, "truncate", e))?;
            out.write_all(HEADER).map_err(|e| ferr(&tmp, "write", e))?;
            let mut live: Vec<(&String, &Loc)> = st
                .index
                .iter()
                .filter(|(_, l)| l.expires.is_none_or(|x| x > now))
                .collect();
            live.sort_by_key(|(_, l)| l.offset);
            let mut index =
                Index::with_capacity_and_hasher(live.len(), xxhash_rust::xxh3::Xxh3DefaultBuilder);
            let mut pos = HEADER.len() as u64;
            let mut reader = BufReader::with_capacity(1 << 20, &st.file);
            let mut at = 0u64;
            reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| ferr(&self.path, "seek", e))?;
            let mut line = Vec::new();
            for (ik, loc) in live {
                if loc.offset != at {
                    reader
                        .seek_relative(loc.offset as i64 - at as i64)
                        .map_err(|e| ferr(&self.path, "seek", e))?;
                }
                line.resize(loc.len as usize, 0);
                reader
                    .read_exact(&mut line)
                    .map_err(|e| ferr(&self.path, "read", e))?;
                at = loc.offset + loc.len as u64;
                out.write_all(&line).map_err(|e| ferr(&tmp, "write", e))?;
                index.insert(
                    ik.clone(),
                    Loc {
                        offset: pos,
                        ..*loc
                    },
                );
                pos += loc.len as u64;
            }
            let f = out
                .into_inner()
                .map_err(|e| ferr(&tmp, "write", e.into_error()))?;
            f.sync_all().map_err(|e| ferr(&tmp, "fsync", e))?;
            drop(f);
            std::fs::rename(&tmp, &self.path).map_err(|e| ferr(&self.path, "rename", e))?;
            if let Some(dir) = self.path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            let file = open_private(&self.path, true).map_err(|e| ferr(&self.path, "open", e))?;
            let meta = file.metadata().map_err(|e| ferr(&self.path, "stat", e))?;
            Ok(State {
                ino: (meta.dev(), meta.ino()),
                file,
                end: pos,
                seen_len: pos,
                index,
                live_bytes: pos,
                corrupt: 0,
            })
        })();
        match result {
            Ok(new) => {
                *st = new;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Compacts now (CLI `unicache compact`).
    pub fn compact_now(&self) -> Result<()> {
        self.with_state(|st| {
            let _lock = self.lock()?;
            self.refresh(st, true)?;
            self.compact_locked(st)
        })
    }

    fn keys_of_ns(&self, st: &State, now: u64) -> Vec<String> {
        st.index
            .iter()
            .filter(|(_, l)| l.expires.is_none_or(|x| x > now))
            .filter_map(|(ik, _)| split_index_key(ik))
            .filter(|(ns, _)| *ns == self.ns)
            .map(|(_, k)| k.to_string())
            .collect()
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    f.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

/// Bytes read at a time while rebuilding the index.
const SCAN_CHUNK: usize = 4 << 20;

/// The fields the index needs, read straight from a line we wrote
/// (`{"c":N,"op":"set"[,"n":"…"],"k":"…","v"|"b":"…"[,"x":N]}`). Anything
/// unusual (escapes in the key, other layouts) returns None and goes through
/// serde instead. Only called on lines whose checksum matched.
fn fast_fields(line: &[u8]) -> Option<(bool, &str, &str, Option<u64>)> {
    fn plain_str(s: &[u8]) -> Option<(&str, &[u8])> {
        let end = s.iter().position(|&b| b == b'"' || b == b'\\')?;
        if s[end] != b'"' {
            return None;
        }
        Some((std::str::from_utf8(&s[..end]).ok()?, &s[end + 1..]))
    }
    let rest = line.strip_prefix(b"{\"c\":")?;
    let rest = &rest[rest.iter().position(|&b| b == b',')? + 1..];
    let (is_set, rest) = if let Some(r) = rest.strip_prefix(b"\"op\":\"set\"") {
        (true, r)
    } else {
        (false, rest.strip_prefix(b"\"op\":\"del\"")?)
    };
    let (ns, rest) = match rest.strip_prefix(b",\"n\":\"") {
        Some(r) => plain_str(r)?,
        None => ("", rest),
    };
    let (key, rest) = plain_str(rest.strip_prefix(b",\"k\":\"")?)?;
    if !is_set {
        return (rest == b"}").then_some((false, ns, key, None));
    }
    if !(rest.starts_with(b",\"v\":\"") || rest.starts_with(b",\"b\":\"")) {
        return None;
    }
    // A string value ends the line with `"}`; an expiry with `,"x":N}`.
    let body = rest.strip_suffix(b"}")?;
    if body.ends_with(b"\"") {
        return Some((true, ns, key, None));
    }
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (head, num) = body.split_at(body.len() - digits);
    if !head.ends_with(b"\",\"x\":") {
        return None;
    }
    let x = std::str::from_utf8(num).ok()?.parse().ok()?;
    Some((true, ns, key, Some(x)))
}

/// Applies one complete line (without its newline) at `pos` to the index.
fn apply_line(st: &mut State, body: &[u8], pos: u64, n: u32, path: &Path) {
    if let Err(e) = check_crc(body) {
        st.corrupt += 1;
        tracing::warn!(path = %path.display(), offset = pos, "skipping a damaged line ({e:?})");
        return;
    }
    let parsed = match fast_fields(body) {
        Some((is_set, ns, key, x)) => Some((is_set, index_key(ns, key), x)),
        None => match serde_json::from_slice::<ScanLine>(body) {
            Ok(l) if l.op == "set" && l.v.is_some() != l.b.is_some() => {
                Some((true, index_key(l.n.as_deref().unwrap_or(""), &l.k), l.x))
            }
            Ok(l) if l.op == "del" => {
                Some((false, index_key(l.n.as_deref().unwrap_or(""), &l.k), None))
            }
            _ => None,
        },
    };
    let Some((is_set, ik, x)) = parsed else {
        st.corrupt += 1;
        return;
    };
    let loc = Loc {
        offset: pos,
        len: n,
        expires: x,
    };
    st.apply(ik, is_set.then_some(loc));
}

/// Applies complete lines from `st.end` to the end of the file.
fn scan(st: &mut State, path: &Path, locked: bool) -> Result<()> {
    let len = st.file.metadata().map_err(|e| ferr(path, "stat", e))?.len();
    if len < st.end {
        // Shrunk without a new inode (another process cut a torn tail, or
        // the file was truncated): rebuild.
        let mut fresh = FileCache::load_rebuild(path, st, locked)?;
        std::mem::swap(st, &mut fresh);
        return Ok(());
    }
    // Large reads, lines handled in place: no copy per line.
    let mut buf: Vec<u8> = Vec::with_capacity(SCAN_CHUNK + 4096);
    let mut pos = st.end; // file offset of buf[0]
    let mut read_at = st.end;
    loop {
        let want = SCAN_CHUNK.min((len - read_at) as usize);
        if want == 0 {
            break;
        }
        let old = buf.len();
        buf.resize(old + want, 0);
        st.file
            .read_exact_at(&mut buf[old..], read_at)
            .map_err(|e| ferr(path, "read", e))?;
        read_at += want as u64;
        let mut start = 0usize;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let body = &buf[start..start + nl];
            apply_line(st, body, pos, nl as u32 + 1, path);
            pos += nl as u64 + 1;
            start += nl + 1;
        }
        buf.drain(..start);
    }
    // Whatever is left in `buf` is an incomplete (torn) last line.
    st.end = pos;
    st.seen_len = len;
    Ok(())
}

impl FileCache {
    /// Tombstones for the keys present; returns how many were live.
    fn delete_now(&self, keys: &[&str]) -> Result<u64> {
        let n = self.with_state(|st| {
            let _lock = self.lock()?;
            self.refresh(st, true)?;
            let now = now_millis();
            let mut uniq: Vec<&str> = keys.to_vec();
            uniq.sort_unstable();
            uniq.dedup();
            // Tombstones for every key present (expired ones too, so they go);
            // only unexpired ones count as deleted.
            let mut present: Vec<(&str, Option<&[u8]>)> = Vec::new();
            let mut live = 0u64;
            for k in uniq {
                if let Some(l) = st.index.get(&index_key(&self.ns, k)) {
                    live += u64::from(l.expires.is_none_or(|x| x > now));
                    present.push((k, None));
                }
            }
            // Under the same lock: nothing can change between looking and writing.
            if !present.is_empty() {
                self.append_locked(st, &present, None)?;
            }
            Ok(live)
        })?;
        self.counters.delete(n);
        Ok(n)
    }

    fn load_rebuild(path: &Path, old: &State, locked: bool) -> Result<State> {
        let mut st = Self::load(path, locked)?;
        st.corrupt = st.corrupt.max(old.corrupt);
        Ok(st)
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
            evicts: false,
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
        let r = r.map(|v| v.map(Bytes::from));
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
            let now = now_millis();
            Ok(st
                .index
                .get(&index_key(&self.ns, key))
                .is_some_and(|l| l.expires.is_none_or(|x| x > now)))
        }))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let out = self.with_state(|st| {
            self.refresh(st, false)?;
            let now = now_millis();
            keys.iter()
                .map(|k| self.lookup(st, k, now).map(|v| v.map(Bytes::from)))
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
        self.with_state(|st| {
            let _lock = self.lock()?;
            self.refresh(st, true)?;
            let ns = self.ns.clone();
            st.index
                .retain(|ik, _| split_index_key(ik).is_none_or(|(n, _)| n != ns));
            st.live_bytes =
                HEADER.len() as u64 + st.index.values().map(|l| l.len as u64).sum::<u64>();
            // Rewriting without the namespace's entries leaves a valid store.
            self.compact_locked(st)
        })
    }

    async fn clear_all(&self) -> Result<()> {
        self.with_state(|st| {
            let _lock = self.lock()?;
            self.refresh(st, true)?;
            st.index.clear();
            st.live_bytes = HEADER.len() as u64;
            self.compact_locked(st)
        })
    }

    async fn len(&self) -> Result<u64> {
        self.with_state(|st| {
            self.refresh(st, false)?;
            Ok(self.keys_of_ns(st, now_millis()).len() as u64)
        })
    }

    async fn ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        self.with_state(|st| {
            self.refresh(st, false)?;
            let now = now_millis();
            Ok(match st.index.get(&index_key(&self.ns, key)) {
                Some(l) => match l.expires {
                    None => Some(None),
                    Some(x) if x > now => Some(Some(Duration::from_millis(x - now))),
                    Some(_) => None,
                },
                None => None,
            })
        })
    }

    async fn keys(&self) -> Result<KeyStream> {
        let mut keys = self.with_state(|st| {
            self.refresh(st, false)?;
            Ok(self.keys_of_ns(st, now_millis()))
        })?;
        keys.sort_unstable();
        Ok(Box::pin(futures::stream::iter(keys.into_iter().map(Ok))))
    }

    async fn stats(&self) -> Result<Stats> {
        let mut s = self.counters.snapshot(BACKEND, self.endpoint());
        let (entries, server) = self.with_state(|st| {
            self.refresh(st, false)?;
            let n = self.keys_of_ns(st, now_millis()).len() as u64;
            Ok((
                n,
                serde_json::json!({
                    "path": self.path.display().to_string(),
                    "namespace": self.ns,
                    "file_bytes": st.seen_len,
                    "live_bytes": st.live_bytes,
                    "dead_bytes": st.end.saturating_sub(st.live_bytes),
                    "torn_tail_bytes": st.seen_len.saturating_sub(st.end),
                    "corrupt_records": st.corrupt,
                    "keys_all_namespaces": st.index.len(),
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
                .map_err(|e| ferr(&self.path, "fsync", e))
        })
    }

    async fn compact(&self) -> Result<()> {
        self.compact_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_checksums_catch_damage() {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        encode_line(
            &mut out,
            &mut scratch,
            "set",
            "ns",
            "k \"q\"",
            Some(b"v\n1"),
            Some(42),
        );
        encode_line(
            &mut out,
            &mut scratch,
            "set",
            "",
            "bin",
            Some(&[0xff, 0x00]),
            None,
        );
        encode_line(&mut out, &mut scratch, "del", "", "bin", None, None);
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            decode_line(lines[0]).unwrap(),
            Op::Set {
                ns: "ns".into(),
                key: "k \"q\"".into(),
                value: b"v\n1".to_vec(),
                expires: Some(42)
            }
        );
        assert_eq!(
            decode_line(lines[1]).unwrap(),
            Op::Set {
                ns: "".into(),
                key: "bin".into(),
                value: vec![0xff, 0],
                expires: None
            }
        );
        assert_eq!(
            decode_line(lines[2]).unwrap(),
            Op::Del {
                ns: "".into(),
                key: "bin".into()
            }
        );
        // Readable as plain JSON.
        let j: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
        assert_eq!(j["v"], "v\n1");
        let mut bad = lines[0].to_vec();
        let i = bad.len() - 5;
        bad[i] ^= 1;
        assert_eq!(decode_line(&bad), Err(LineError::Checksum));
        assert_eq!(decode_line(b"garbage"), Err(LineError::Malformed));
    }

    #[test]
    fn fast_path_agrees_with_serde() {
        type Case<'a> = (&'a str, &'a str, Option<&'a [u8]>, Option<u64>);
        let cases: Vec<Case> = vec![
            ("", "k", Some(b"v"), None),
            (
                "ns",
                "user:1",
                Some(b"{\"a\":\"b\"}"),
                Some(1_700_000_000_000),
            ),
            ("", "quote\"key", Some(b"x"), None),
            ("", "k", Some(&[0xff, 1]), Some(5)),
            ("n", "gone", None, None),
            ("", "ends with x", Some(b",\"x\":5"), None),
        ];
        for (ns, key, value, x) in cases {
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            let op = if value.is_some() { "set" } else { "del" };
            encode_line(&mut out, &mut scratch, op, ns, key, value, x);
            let line = &out[..out.len() - 1];
            let slow: ScanLine = serde_json::from_slice(line).unwrap();
            match fast_fields(line) {
                Some((is_set, n, k, fx)) => {
                    assert_eq!(is_set, slow.op == "set");
                    assert_eq!(n, slow.n.as_deref().unwrap_or(""));
                    assert_eq!(k, slow.k);
                    assert_eq!(fx, slow.x);
                }
                None => assert!(key.contains('"'), "fast path refused {key:?}"),
            }
        }
    }

    #[test]
    fn index_keys_split() {
        let ik = index_key("a:b", "c:d");
        assert_eq!(split_index_key(&ik), Some(("a:b", "c:d")));
        assert_eq!(split_index_key(&index_key("", "k")), Some(("", "k")));
    }
}
