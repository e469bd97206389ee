//! `sqlite:PATH`: a persistent cache in one SQLite file (rusqlite, bundled).
//!
//! WAL journal, a busy timeout so several processes share one file, cached
//! prepared statements, one immediate transaction per batch, and an expiry
//! column purged at open and every few thousand writes. The table layout is
//! part of the public contract (README, "SQLite layout"): never change it
//! without a migration.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::cache::{
    Cache, CacheFuture, CacheOptions, Capabilities, Counters, Entry, EntryStream, KeyStream, Stats,
    ValueTtl, incr_value, now_millis,
};
use crate::error::{Error, ErrorKind, Result};

mod atomic;
pub(crate) mod bounds;
mod cache_impl;
mod config;
mod export;
pub(crate) mod schema;
mod upkeep;

use export::stream_entries;
use schema::*;
pub use config::{DEFAULT_BUSY_TIMEOUT, SqliteConfig};
pub use schema::MAX_BUSY_TIMEOUT;
pub use upkeep::{after_fork, prepare_fork};

const BACKEND: &str = "sqlite";
/// Keys fetched per page when listing.
const KEY_PAGE: usize = 1_000;

/// A cache stored in one SQLite database file.
pub struct SqliteCache {
    conn: Mutex<Connection>,
    path: PathBuf,
    namespace: String,
    options: CacheOptions,
    counters: Counters,
    /// Checkpoints and purges off the callers' path, from the first write
    /// (declared after `conn`: its connection closes last, and that close
    /// checkpoints what is left).
    upkeep: Mutex<Option<upkeep::Upkeep>>,
    /// How long a statement waits for another process's lock.
    busy_timeout: Duration,
    /// The file keeps bounds (layout version 2; see [`bounds`]).
    bounded: AtomicBool,
    /// Keys this handle read since its last write, for the eviction order.
    pending_hits: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for SqliteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCache")
            .field("path", &self.path)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The settings of every connection that writes to the file (the handle's
/// and its upkeep thread's), so that both count a bounded file's usage
/// alike.
pub(super) fn configure_writer(conn: &Connection, path: &Path, busy_timeout: Duration) -> Result<()> {
    let e = |op: &'static str| move |err| sql_err(path, err).with_context("op", op);
    conn.busy_timeout(busy_timeout).map_err(e("busy_timeout"))?;
    // A REPLACE then fires the delete trigger a bounded file counts with.
    conn.pragma_update(None, "recursive_triggers", true)
        .map_err(e("recursive_triggers"))?;
    // Statement journals in memory: a statement in a transaction that
    // fires triggers (every write to a bounded file) copies each page it
    // changes to one, which on disk was half of a bounded write's time
    // (pwrite per page). They hold a statement's pages only.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(e("temp_store"))?;
    // A WAL emptied by a checkpoint shrinks back at the next write.
    conn.pragma_update(None, "journal_size_limit", upkeep::WAL_SIZE_LIMIT as i64)
        .map_err(e("journal_size_limit"))?;
    Ok(())
}

/// Converts a rusqlite error into ours, naming the file.
pub(super) fn sql_err(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ffi::ErrorCode;
    let (kind, msg) = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => (
            ErrorKind::Corrupt,
            "file is not a SQLite database (or is encrypted/corrupt)",
        ),
        Some(ErrorCode::DatabaseCorrupt) => {
            (ErrorKind::Corrupt, "database disk image is malformed")
        }
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => (
            ErrorKind::Timeout,
            "database stayed locked by another process past busy_timeout",
        ),
        Some(ErrorCode::DiskFull) => (ErrorKind::Io, "disk full"),
        Some(ErrorCode::CannotOpen) => (ErrorKind::Io, "cannot open database file"),
        Some(ErrorCode::ReadOnly) => (ErrorKind::Io, "database is read-only"),
        Some(ErrorCode::PermissionDenied) => (ErrorKind::Io, "permission denied"),
        Some(ErrorCode::SystemIoFailure) => (ErrorKind::Io, "disk I/O error"),
        _ => (ErrorKind::Backend, ""),
    };
    Error::new(kind, msg)
        .with_backend(BACKEND)
        .with_context("path", path.display())
        .set_source(e)
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A NULL `value` (possible only in a table another tool made without
/// `NOT NULL`): not a value unicache can return.
fn null_value(path: &Path, key: &str) -> Error {
    Error::new(ErrorKind::Corrupt, "value is NULL")
        .with_backend(BACKEND)
        .with_context("path", path.display())
        .with_context("key", key)
}

/// The error for a missing database when it must exist.
fn not_found(path: &Path) -> Error {
    Error::new(ErrorKind::NotFound, "no SQLite database at this path")
        .with_backend(BACKEND)
        .with_context("path", path.display())
}

impl SqliteCache {
    /// Opens (creating if needed, mode 0600) the database at `path`. With
    /// [`CacheOptions::must_exist`] a missing file is an
    /// [`ErrorKind::NotFound`] error and nothing is created. A `busy_timeout`
    /// over [`MAX_BUSY_TIMEOUT`] is clamped to it.
    pub fn open(config: SqliteConfig, options: CacheOptions) -> Result<Self> {
        let path = config.path.as_path();
        let busy_timeout = config.busy_timeout.min(MAX_BUSY_TIMEOUT);
        // No SQLITE_OPEN_URI: a path is a path, even one starting "file:".
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if options.must_exist {
            if !path.exists() {
                return Err(not_found(path));
            }
        } else {
            create_file(path)?;
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|e| {
            // Removed between the check and the open: still nothing created.
            if options.must_exist && !path.exists() {
                not_found(path)
            } else {
                sql_err(path, e)
            }
        })?;
        let e = |op: &'static str| move |err| sql_err(path, err).with_context("op", op);
        configure_writer(&conn, path, busy_timeout)?;
        enable_wal(&conn, path, busy_timeout)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(e("synchronous"))?;
        // Checkpoints are the upkeep thread's; this one only if it is not
        // running (see `upkeep`).
        conn.pragma_update(None, "wal_autocheckpoint", upkeep::FALLBACK_CHECKPOINT_PAGES)
            .map_err(e("wal_autocheckpoint"))?;
        conn.execute_batch(SCHEMA).map_err(e("schema"))?;
        // Refuse a newer layout, check the columns, and only then record
        // the version (a foreign layout is refused, never altered).
        check_version(&conn, path, true)?;
        check_layout(&conn, path)?;
        check_version(&conn, path, options.must_exist)?;
        conn.execute_batch(EXPIRY_INDEX).map_err(e("index"))?;
        let mut conn = conn;
        let bounded = bounds::configure(&mut conn, path, &options.bounds, options.must_exist)?;
        // Every statement this cache runs (about 40 with the bounds' own) stays
        // prepared: a re-prepare costs more than the statement.
        conn.set_prepared_statement_cache_capacity(64);
        let cache = SqliteCache {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            namespace: options.namespace.clone().unwrap_or_default(),
            options,
            counters: Counters::default(),
            upkeep: Mutex::new(None),
            busy_timeout,
            bounded: AtomicBool::new(bounded),
            pending_hits: Mutex::new(HashSet::new()),
        };
        // Upkeep, not the open's work: a purge that fails (a full disk) must
        // not keep the cache from being read.
        if let Err(e) = cache.with_conn(|c| cache.purge(c)) {
            tracing::warn!("purging expired rows at open failed: {e}");
        }
        Ok(cache)
    }

    /// A read-only connection of its own, for streams that outlive one call.
    fn reader(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_err(&self.path, e))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| sql_err(&self.path, e))?;
        Ok(conn)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection. Inside a multi-threaded tokio runtime the
    /// worker is handed off first (`block_in_place`) so other tasks go on.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let run = || {
            let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        };
        let r = super::run_blocking(run);
        self.counters.track(r)
    }

    /// Deletes every expired row (see [`upkeep::purge_expired`]).
    fn purge(&self, c: &Connection) -> Result<u64> {
        upkeep::purge_expired(c, &self.path, &|| true)
    }

    /// Counts `n` committed writes for the upkeep thread (started here at
    /// the first), which purges expired rows every so many writes and
    /// checkpoints the WAL, off this caller's path (see [`upkeep`]).
    /// Always `Ok` (a `Result` for the callers' `?`).
    fn note_writes(&self, n: u64) -> Result<()> {
        let mut u = self.upkeep.lock().unwrap_or_else(|p| p.into_inner());
        if !u.as_ref().is_some_and(upkeep::Upkeep::is_ours) {
            *u = Some(upkeep::Upkeep::start(&self.path, self.busy_timeout));
        }
        if let Some(u) = &*u {
            u.wrote(n);
        }
        Ok(())
    }

    fn set_now(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        if self.is_bounded() {
            return self.set_many_now(&[(key, value)], ttl);
        }
        let exp = self.counters.track(self.expiry(ttl))?;
        self.with_conn(|c| {
            c.prepare_cached(INSERT)
                .and_then(|mut s| s.execute(params![self.namespace, key, value, exp]))
                .map_err(|e| sql_err(&self.path, e).with_context("key", key))?;
            self.note_writes(1)
        })?;
        self.counters.set(1);
        Ok(())
    }

    /// Writes `entries` in one transaction; on a bounded file stamped with
    /// the time, after the hits noted since the last write, and followed
    /// by the eviction that keeps the bounds.
    fn set_many_now(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let exp = self.counters.track(self.expiry(ttl))?;
        let first = self.write_entries(entries, exp);
        // A bounded store is a cache: on a full disk it evicts the oldest
        // rows and tries once more before failing.
        let disk_full = |e: &Error| e.kind() == ErrorKind::Io && e.message() == "disk full";
        let evicted = match first {
            Err(e) if self.is_bounded() && disk_full(&e) => {
                let freed = self.with_conn(|c| bounds::make_room(c, &self.path, entries.len()));
                tracing::warn!("disk full: evicted {freed:?} rows and tried the write again");
                self.write_entries(entries, exp)
            }
            other => other,
        };
        let evicted = self.counters.track(evicted)?;
        self.counters.set(entries.len() as u64);
        self.counters.evict(evicted);
        Ok(())
    }

    /// One transaction of [`Self::set_many_now`]: the rows evicted.
    fn write_entries(&self, entries: &[(&str, &[u8])], exp: Option<i64>) -> Result<u64> {
        let bounded = self.is_bounded();
        self.with_conn(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_err(&self.path, e))?;
            if bounded {
                self.flush_hits(&tx)?;
            }
            {
                let (sql, stamp) = match bounded {
                    true => (bounds::INSERT_STAMPED, Some(bounds::next_stamp(&tx, &self.path)?)),
                    false => (INSERT, None),
                };
                let mut st = tx.prepare_cached(sql).map_err(|e| sql_err(&self.path, e))?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    let r = match stamp {
                        Some(t) => st.execute(params![self.namespace, k, v, exp, t + i as i64]),
                        None => st.execute(params![self.namespace, k, v, exp]),
                    };
                    r.map_err(|e| sql_err(&self.path, e).with_context("key", k))?;
                }
            }
            let evicted = match bounded {
                true => bounds::enforce(&tx, &self.path, 4 * entries.len() as i64 + 256)?,
                false => 0,
            };
            tx.commit().map_err(|e| sql_err(&self.path, e))?;
            self.note_writes(entries.len() as u64)?;
            Ok(evicted)
        })
    }

    /// Whether the file keeps bounds.
    fn is_bounded(&self) -> bool {
        self.bounded.load(Ordering::Relaxed)
    }

    /// Adds this handle's noted hits to their rows, in `c`'s transaction.
    fn flush_hits(&self, c: &Connection) -> Result<()> {
        let keys = std::mem::take(&mut *self.pending_hits.lock().unwrap_or_else(|p| p.into_inner()));
        bounds::flush_hits(c, &self.path, &self.namespace, keys)
    }

    /// Notes the hits among `got` (keys in the same order) on a bounded file.
    fn note_hits<T>(&self, keys: &[&str], got: &[Option<T>]) {
        if !self.is_bounded() {
            return;
        }
        for (k, g) in keys.iter().zip(got) {
            if g.is_some() {
                bounds::note_hit(&self.pending_hits, k);
            }
        }
    }

    /// After a write that went around [`Self::set_many_now`] (`add`,
    /// `incr`, `compare_and_set`): the bounds kept in a transaction of its
    /// own. The write is committed: a failure here is a warning (the next
    /// write evicts again), never the write's error.
    fn after_write(&self, c: &mut Connection) {
        if !self.is_bounded() {
            return;
        }
        let run = |c: &mut Connection| -> Result<u64> {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_err(&self.path, e))?;
            self.flush_hits(&tx)?;
            let evicted = bounds::enforce(&tx, &self.path, 256)?;
            tx.commit().map_err(|e| sql_err(&self.path, e))?;
            Ok(evicted)
        };
        match run(c) {
            Ok(n) => self.counters.evict(n),
            Err(e) => tracing::warn!("keeping the bounds after a committed write failed: {e}"),
        }
    }

    /// Deletes in one transaction; counts only live (unexpired) rows, but
    /// removes expired ones too.
    fn delete_many_now(&self, keys: &[&str]) -> Result<u64> {
        let n = self.with_conn(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_err(&self.path, e))?;
            let now = now_millis() as i64;
            let mut n = 0u64;
            {
                let mut live = tx
                    .prepare_cached(DELETE)
                    .map_err(|e| sql_err(&self.path, e))?;
                let mut any = tx
                    .prepare_cached(DELETE_ANY)
                    .map_err(|e| sql_err(&self.path, e))?;
                for k in keys {
                    n += live
                        .execute(params![self.namespace, k, now])
                        .map_err(|e| sql_err(&self.path, e).with_context("key", k))?
                        as u64;
                    any.execute(params![self.namespace, k])
                        .map_err(|e| sql_err(&self.path, e).with_context("key", k))?;
                }
            }
            tx.commit().map_err(|e| sql_err(&self.path, e))?;
            Ok(n)
        })?;
        self.counters.delete(n);
        Ok(n)
    }

    fn expiry(&self, ttl: Option<Duration>) -> Result<Option<i64>> {
        let ttl = self.options.effective_ttl(ttl)?;
        Ok(ttl.map(|d| (now_millis() as i64).saturating_add(ms(d))))
    }

    /// `read` for each key in one read transaction, counted as hits and
    /// misses: `get_many` and `get_many_with_ttl`.
    fn read_each<T>(
        &self,
        keys: &[&str],
        read: impl Fn(&Self, &Connection, &str, i64) -> Result<Option<T>>,
    ) -> Result<Vec<Option<T>>> {
        let out = self.with_conn(|c| {
            let tx = c.transaction().map_err(|e| sql_err(&self.path, e))?;
            let now = now_millis() as i64;
            let out = keys
                .iter()
                .map(|k| read(self, &tx, k, now))
                .collect::<Result<Vec<_>>>()?;
            tx.commit().map_err(|e| sql_err(&self.path, e))?;
            Ok(out)
        })?;
        self.counters.read(&out);
        self.note_hits(keys, &out);
        Ok(out)
    }

    fn read(&self, c: &Connection, key: &str, now: i64) -> Result<Option<Bytes>> {
        Ok(self.read_with_ttl(c, key, now)?.map(|v| v.value))
    }

    /// The live value and its remaining TTL, from one SELECT.
    fn read_with_ttl(&self, c: &Connection, key: &str, now: i64) -> Result<Option<ValueTtl>> {
        let row: Option<(Option<Vec<u8>>, Option<i64>)> = c
            .prepare_cached(SELECT)
            .and_then(|mut s| {
                s.query_row(params![self.namespace, key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| sql_err(&self.path, e).with_context("key", key))?;
        Ok(match row {
            Some((v, exp)) if exp.is_none_or(|t| t > now) => Some(ValueTtl::new(
                Bytes::from(v.ok_or_else(|| null_value(&self.path, key))?),
                exp.map(|t| Duration::from_millis((t - now) as u64)),
            )),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    fn open(path: &Path, ns: &str) -> SqliteCache {
        SqliteCache::open(SqliteConfig::new(path).busy_timeout(Duration::from_secs(5)), CacheOptions::new().namespace(ns))
        .unwrap()
    }

    fn all_entries(c: &SqliteCache) -> Vec<Result<Entry>> {
        block(async { c.entries().await.unwrap().collect::<Vec<_>>().await })
    }

    /// The layout's version is recorded in a new file and in one made
    /// before it was (user_version 0); a file a later layout wrote is
    /// refused by name, and a read-only open records nothing.
    #[test]
    fn the_layout_version_is_recorded_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sqlite3");
        let version = |p: &Path| -> i64 {
            let raw = Connection::open(p).unwrap();
            raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
        };
        drop(open(&path, ""));
        assert_eq!(version(&path), LAYOUT_VERSION);
        // A file from before the version was kept.
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 0).unwrap();
        let ro = SqliteConfig::new(&path).busy_timeout(Duration::from_secs(5));
        drop(SqliteCache::open(ro, CacheOptions::new().must_exist(true)).unwrap());
        assert_eq!(version(&path), 0, "a read-only open writes nothing");
        drop(open(&path, ""));
        assert_eq!(version(&path), 1);
        // A later unicache's file.
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 3).unwrap();
        let cfg = SqliteConfig::new(&path).busy_timeout(Duration::from_secs(5));
        let e = SqliteCache::open(cfg, CacheOptions::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("newer unicache") && msg.contains("version 3"), "{msg}");
        assert!(msg.contains("v.sqlite3"), "names the file: {msg}");
    }

    /// Rows other tools wrote: TEXT (the `sqlite3` shell, Python's `str`),
    /// INTEGER and REAL read as their text; a NULL is a Corrupt error naming
    /// the key, in get and in entries, and the other rows still come.
    #[test]
    fn text_integer_and_real_values_written_by_other_tools() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite3");
        let c = open(&path, "");
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(
            "INSERT INTO cache (key, value) VALUES ('text', '{\"a\":\"é\"}');
             INSERT INTO cache (key, value) VALUES ('int', 42);
             INSERT INTO cache (key, value) VALUES ('real', 1.5);
             INSERT INTO cache (key, value, expires_at) VALUES ('ttl', 'x', 99999999999999.5);",
        )
        .unwrap();
        let text = "{\"a\":\"é\"}".as_bytes();
        assert_eq!(block(c.get("text")).unwrap().as_deref(), Some(text));
        assert_eq!(block(c.get("int")).unwrap().as_deref(), Some(&b"42"[..]));
        assert_eq!(block(c.get("real")).unwrap().as_deref(), Some(&b"1.5"[..]));
        let many = block(c.get_many(&["text", "int", "nope"])).unwrap();
        assert_eq!(many[0].as_deref(), Some(text));
        assert_eq!(many[1].as_deref(), Some(&b"42"[..]));
        let got: Vec<_> = all_entries(&c).into_iter().map(|e| e.unwrap()).collect();
        let keys: Vec<&str> = got.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["int", "real", "text", "ttl"]);
        assert_eq!(&got[2].value[..], text);
        assert!(got[3].ttl.unwrap() > Duration::from_secs(86400));
        // A REAL expiry (Python's time.time() * 1000) reads as milliseconds.
        assert_eq!(block(c.get("ttl")).unwrap().as_deref(), Some(&b"x"[..]));
        assert!(block(c.ttl("ttl")).unwrap().unwrap().unwrap() > Duration::from_secs(86400));

        // A table made without NOT NULL, with the same columns.
        let path2 = dir.path().join("null.sqlite3");
        Connection::open(&path2)
            .unwrap()
            .execute_batch(
                "CREATE TABLE cache (namespace TEXT NOT NULL DEFAULT '', key TEXT NOT NULL,
                 value BLOB, expires_at INTEGER, PRIMARY KEY (namespace, key)) WITHOUT ROWID;
                 INSERT INTO cache (key, value) VALUES ('a', 'x'), ('n', NULL), ('z', 'y');",
            )
            .unwrap();
        let c2 = open(&path2, "");
        let e = block(c2.get("n")).unwrap_err();
        assert_eq!(
            (e.kind(), e.context("key")),
            (ErrorKind::Corrupt, Some("n")),
            "{e}"
        );
        let got = all_entries(&c2);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap().key, "a");
        assert_eq!(got[1].as_ref().unwrap_err().context("key"), Some("n"));
        assert_eq!(got[2].as_ref().unwrap().key, "z");
    }

    /// entries(): one namespace only, live rows only, TTLs, more rows than
    /// one batch, in key order; a stream dropped early stops its thread.
    #[test]
    fn entries_stream_one_namespace_with_ttls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite3");
        let a = open(&path, "a");
        let b = open(&path, "b");
        let keys: Vec<String> = (0..2000).map(|i| format!("k{i:05}")).collect();
        let rows: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
        block(a.set_many(&rows, None)).unwrap();
        block(a.set("ttl", b"t", Some(Duration::from_secs(3600)))).unwrap();
        block(b.set("other", b"o", None)).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute("INSERT INTO cache VALUES ('a', 'dead', x'00', 1)", [])
            .unwrap();
        let got: Vec<Entry> = all_entries(&a).into_iter().map(|e| e.unwrap()).collect();
        assert_eq!(got.len(), 2001);
        assert!(
            got[..2000]
                .iter()
                .zip(&keys)
                .all(|(e, k)| &e.key == k && e.value == k.as_bytes() && e.ttl.is_none())
        );
        let t = got[2000].ttl.unwrap();
        assert!(
            t > Duration::from_secs(3590) && t <= Duration::from_secs(3600),
            "{t:?}"
        );
        // Dropped after one entry: the thread sees the closed channel and ends.
        let first = block(async { a.entries().await.unwrap().next().await });
        assert_eq!(first.unwrap().unwrap().key, "k00000");
    }

    /// must_exist: a missing file is NotFound naming the path, and nothing
    /// (database, -wal, -shm, directory) is created; an existing one opens.
    #[test]
    fn must_exist_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CacheOptions::new().must_exist(true);
        for path in [
            dir.path().join("missing.db"),
            dir.path().join("no/dir/x.db"),
        ] {
            let e = SqliteCache::open(SqliteConfig::new(&path).busy_timeout(Duration::from_secs(1)), opts.clone()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        let path = dir.path().join("there.db");
        block(open(&path, "").set("k", b"v", None)).unwrap();
        let c = SqliteCache::open(SqliteConfig::new(&path).busy_timeout(Duration::from_secs(1)), opts).unwrap();
        assert_eq!(block(c.get("k")).unwrap().as_deref(), Some(&b"v"[..]));
    }

    /// busy_timeout beyond SQLite's C int of milliseconds is clamped, not a panic.
    #[test]
    fn huge_busy_timeout_is_clamped() {
        let dir = tempfile::tempdir().unwrap();
        for t in [Duration::from_secs(25 * 86400), Duration::MAX] {
            let c = SqliteCache::open(SqliteConfig::new(dir.path().join("b.db")).busy_timeout(t), CacheOptions::new()).unwrap();
            assert_eq!(c.busy_timeout, MAX_BUSY_TIMEOUT);
            block(c.set("k", b"v", Some(Duration::MAX))).unwrap();
            assert_eq!(block(c.get("k")).unwrap().as_deref(), Some(&b"v"[..]));
        }
    }

    /// Many connections opening one fresh file at the same moment all get in:
    /// the WAL conversion is retried rather than failing with "locked".
    #[test]
    fn a_fresh_file_opened_by_many_at_once() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..8 {
            let path = dir.path().join(format!("fresh{round}.sqlite3"));
            let gate = std::sync::Barrier::new(12);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..12)
                    .map(|i| {
                        let (path, gate) = (&path, &gate);
                        s.spawn(move || {
                            gate.wait();
                            let c = SqliteCache::open(SqliteConfig::new(path).busy_timeout(Duration::from_secs(10)), CacheOptions::default())?;
                            futures::executor::block_on(c.set(&format!("k{i}"), b"v", None))
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap().unwrap();
                }
            });
            let conn = Connection::open(&path).unwrap();
            let n: i64 = conn
                .query_row("select count(*) from cache", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 12);
        }
    }
}
