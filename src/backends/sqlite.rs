//! `sqlite:PATH`: a persistent cache in one SQLite file (rusqlite, bundled).
//!
//! WAL journal, a busy timeout so several processes share one file, cached
//! prepared statements, one immediate transaction per batch, and an expiry
//! column purged at open and every few thousand writes. The table layout is
//! part of the public contract (README, "SQLite layout"): never change it
//! without a migration.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::cache::{
    Cache, CacheFuture, CacheOptions, Capabilities, Counters, Entry, EntryStream, KeyStream, Stats,
    now_millis,
};
use crate::error::{Error, ErrorKind, Result};

const BACKEND: &str = "sqlite";
/// Purge expired rows after this many writes.
const PURGE_EVERY: u64 = 10_000;
/// Keys fetched per page when listing.
const KEY_PAGE: usize = 1_000;

/// The `cache` table (README, "SQLite layout"); public so benchmarks'
/// raw-rusqlite baselines write to exactly this table.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cache (
    namespace  TEXT    NOT NULL DEFAULT '',
    key        TEXT    NOT NULL,
    value      BLOB    NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
";

/// Created after the layout check. Partial: rows without a TTL cost nothing
/// here, and purging expired rows is a range scan, not a table scan.
const EXPIRY_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS cache_expiry ON cache (expires_at) WHERE expires_at IS NOT NULL";

/// The statement every write uses (namespace, key, value, expires_at).
pub const INSERT: &str =
    "INSERT OR REPLACE INTO cache (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)";
/// Values are read through `CAST(value AS BLOB)`: BLOBs as they are, TEXT
/// (what `sqlite3` and Python's `str` store) as its UTF-8 bytes, INTEGER and
/// REAL as SQLite's own text form of them. Expiry times another tool wrote
/// as REAL are read as whole milliseconds.
const SELECT: &str = "SELECT CAST(value AS BLOB), CAST(expires_at AS INTEGER) FROM cache \
     WHERE namespace = ?1 AND key = ?2";
/// Every live entry of a namespace, in key order (the primary key's range).
const SELECT_ENTRIES: &str = "SELECT key, CAST(value AS BLOB), CAST(expires_at AS INTEGER) \
     FROM cache \
     WHERE namespace = ?1 AND (expires_at IS NULL OR expires_at > ?2)";
/// Entries per message from the export thread.
const ENTRY_BATCH: usize = 512;
/// The longest busy timeout SQLite takes (a C int of milliseconds, ~24.8 days);
/// longer ones are clamped to it.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
const DELETE: &str = "DELETE FROM cache WHERE namespace = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)";
const DELETE_ANY: &str = "DELETE FROM cache WHERE namespace = ?1 AND key = ?2";

/// A cache stored in one SQLite database file.
pub struct SqliteCache {
    conn: Mutex<Connection>,
    path: PathBuf,
    namespace: String,
    options: CacheOptions,
    counters: Counters,
    writes_since_purge: AtomicU64,
    /// How long a statement waits for another process's lock.
    busy_timeout: Duration,
}

impl std::fmt::Debug for SqliteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCache")
            .field("path", &self.path)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Converts a rusqlite error into ours, naming the file.
fn sql_err(path: &Path, e: rusqlite::Error) -> Error {
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

/// Puts the database in WAL mode (a persistent property of the file).
///
/// Converting a rollback-journal database needs exclusive access, and SQLite
/// does not run the busy handler for `PRAGMA journal_mode=WAL`: several
/// processes opening one fresh file at once get "database is locked" at once
/// (or the old mode back). So the mode is read first (nothing to do once any
/// process converted the file) and the switch is retried with backoff within
/// the busy timeout. Reading the mode also reads the header, so a file that is
/// not a database fails here.
fn enable_wal(conn: &Connection, path: &Path, budget: Duration) -> Result<()> {
    let is_wal = |m: &str| m.eq_ignore_ascii_case("wal");
    // None: a budget too large for Instant, i.e. no deadline.
    let deadline = Instant::now().checked_add(budget);
    let time_left = || deadline.is_none_or(|d| Instant::now() < d);
    let mut delay = Duration::from_millis(1);
    loop {
        let attempt = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .and_then(|mode| {
                if is_wal(&mode) {
                    Ok(mode)
                } else {
                    conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                }
            });
        let mode = match attempt.map_err(|err| sql_err(path, err)) {
            Ok(mode) if is_wal(&mode) => return Ok(()),
            Ok(mode) => mode,
            // sql_err makes "busy" and "locked" a timeout: retry while time is left.
            Err(e) if e.is_timeout() && time_left() => String::new(),
            Err(e) => return Err(e.with_context("op", "journal_mode=WAL")),
        };
        if !time_left() {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("could not switch the database to WAL journal mode (it stays {mode:?})"),
            )
            .with_backend(BACKEND)
            .with_context("path", path.display()));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
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

/// Creates the file (and its directory) owner-only if it is missing; SQLite
/// gives its -wal/-shm files the same mode.
fn create_file(path: &Path) -> Result<()> {
    let io = |msg: &str, e: std::io::Error| {
        Error::from(e)
            .with_backend(BACKEND)
            .with_context("path", path.display())
            .with_context("op", msg.to_string())
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
    }
    if !path.exists() {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(path).map_err(|e| io("create", e))?;
    }
    Ok(())
}

impl SqliteCache {
    /// Opens (creating if needed, mode 0600) the database at `path`. With
    /// [`CacheOptions::must_exist`] a missing file is an
    /// [`ErrorKind::NotFound`] error and nothing is created. A `busy_timeout`
    /// over [`MAX_BUSY_TIMEOUT`] is clamped to it.
    pub fn open(path: &Path, busy_timeout: Duration, options: CacheOptions) -> Result<Self> {
        let busy_timeout = busy_timeout.min(MAX_BUSY_TIMEOUT);
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
        conn.busy_timeout(busy_timeout).map_err(e("busy_timeout"))?;
        enable_wal(&conn, path, busy_timeout)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(e("synchronous"))?;
        conn.execute_batch(SCHEMA).map_err(e("schema"))?;
        check_layout(&conn, path)?;
        conn.execute_batch(EXPIRY_INDEX).map_err(e("index"))?;
        conn.set_prepared_statement_cache_capacity(32);
        let cache = SqliteCache {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            namespace: options.namespace.clone().unwrap_or_default(),
            options,
            counters: Counters::default(),
            writes_since_purge: AtomicU64::new(0),
            busy_timeout,
        };
        cache.with_conn(|c| cache.purge(c))?;
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

    fn purge(&self, c: &Connection) -> Result<u64> {
        let n = c
            .prepare_cached("DELETE FROM cache WHERE expires_at IS NOT NULL AND expires_at <= ?1")
            .and_then(|mut s| s.execute(params![now_millis() as i64]))
            .map_err(|e| sql_err(&self.path, e))?;
        self.writes_since_purge.store(0, Ordering::Relaxed);
        Ok(n as u64)
    }

    fn note_writes(&self, c: &Connection, n: u64) -> Result<()> {
        if self.writes_since_purge.fetch_add(n, Ordering::Relaxed) + n >= PURGE_EVERY {
            self.purge(c)?;
        }
        Ok(())
    }

    fn set_now(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let exp = self.counters.track(self.expiry(ttl))?;
        self.with_conn(|c| {
            c.prepare_cached(INSERT)
                .and_then(|mut s| s.execute(params![self.namespace, key, value, exp]))
                .map_err(|e| sql_err(&self.path, e).with_context("key", key))?;
            self.note_writes(c, 1)
        })?;
        self.counters.set(1);
        Ok(())
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

    fn read(&self, c: &Connection, key: &str, now: i64) -> Result<Option<Bytes>> {
        let row: Option<(Option<Vec<u8>>, Option<i64>)> = c
            .prepare_cached(SELECT)
            .and_then(|mut s| {
                s.query_row(params![self.namespace, key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| sql_err(&self.path, e).with_context("key", key))?;
        Ok(match row {
            Some((v, exp)) if exp.is_none_or(|t| t > now) => {
                Some(Bytes::from(v.ok_or_else(|| null_value(&self.path, key))?))
            }
            _ => None,
        })
    }
}

/// Runs [`SELECT_ENTRIES`] and sends its rows in batches until done or
/// the receiver is gone. A row that cannot be read is an error item naming
/// its key; the rows after it still come.
fn stream_entries(
    conn: &Connection,
    path: &Path,
    ns: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<Entry>>>,
) {
    let now = now_millis() as i64;
    let run = || -> rusqlite::Result<()> {
        let mut st = conn.prepare(SELECT_ENTRIES)?;
        let mut rows = st.query(params![ns, now])?;
        let mut batch = Vec::with_capacity(ENTRY_BATCH);
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            let value: Option<Vec<u8>> = row.get(1)?;
            let exp: Option<i64> = row.get(2)?;
            let Some(value) = value else {
                let sent = std::mem::take(&mut batch);
                if tx.blocking_send(Ok(sent)).is_err()
                    || tx.blocking_send(Err(null_value(path, &key))).is_err()
                {
                    return Ok(());
                }
                continue;
            };
            let ttl = exp.map(|t| Duration::from_millis(t.saturating_sub(now).max(1) as u64));
            batch.push(Entry::new(key, Bytes::from(value), ttl));
            if batch.len() == ENTRY_BATCH
                && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err()
            {
                return Ok(()); // the reader stopped listening
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
        Ok(())
    };
    if let Err(e) = run() {
        let _ = tx.blocking_send(Err(sql_err(path, e).with_context("op", "entries")));
    }
}

/// Refuses a `cache` table of another shape (such as the seed's two-column one).
fn check_layout(conn: &Connection, path: &Path) -> Result<()> {
    let mut cols = Vec::new();
    let mut st = conn
        .prepare("SELECT name FROM pragma_table_info('cache')")
        .map_err(|e| sql_err(path, e))?;
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| sql_err(path, e))?;
    for r in rows {
        cols.push(r.map_err(|e| sql_err(path, e))?);
    }
    if cols != ["namespace", "key", "value", "expires_at"] {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "table 'cache' has columns {cols:?}, not unicache's layout \
                 (namespace, key, value, expires_at); use another file"
            ),
        )
        .with_backend(BACKEND)
        .with_context("path", path.display()));
    }
    Ok(())
}

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
            ..Capabilities::default()
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<Bytes>> {
        let r = self.with_conn(|c| self.read(c, key, now_millis() as i64));
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
        let out = self.with_conn(|c| {
            let tx = c.transaction().map_err(|e| sql_err(&self.path, e))?;
            let now = now_millis() as i64;
            let out = keys
                .iter()
                .map(|k| self.read(&tx, k, now))
                .collect::<Result<Vec<_>>>()?;
            tx.commit().map_err(|e| sql_err(&self.path, e))?;
            Ok(out)
        })?;
        self.counters.read(&out);
        Ok(out)
    }

    async fn set_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let exp = self.counters.track(self.expiry(ttl))?;
        self.with_conn(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_err(&self.path, e))?;
            {
                let mut st = tx
                    .prepare_cached(INSERT)
                    .map_err(|e| sql_err(&self.path, e))?;
                for (k, v) in entries {
                    st.execute(params![self.namespace, k, v, exp])
                        .map_err(|e| sql_err(&self.path, e).with_context("key", k))?;
                }
            }
            tx.commit().map_err(|e| sql_err(&self.path, e))?;
            self.note_writes(c, entries.len() as u64)
        })?;
        self.counters.set(entries.len() as u64);
        Ok(())
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
        s.server = Some(serde_json::json!({
            "path": self.path.display().to_string(),
            "namespace": self.namespace,
            "file_bytes": pages * page_size,
            "sqlite_version": rusqlite::version(),
        }));
        Ok(s)
    }

    async fn compact(&self) -> Result<()> {
        self.with_conn(|c| {
            self.purge(c)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    fn open(path: &Path, ns: &str) -> SqliteCache {
        SqliteCache::open(
            path,
            Duration::from_secs(5),
            CacheOptions::new().namespace(ns),
        )
        .unwrap()
    }

    fn all_entries(c: &SqliteCache) -> Vec<Result<Entry>> {
        block(async { c.entries().await.unwrap().collect::<Vec<_>>().await })
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
            let e = SqliteCache::open(&path, Duration::from_secs(1), opts.clone()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        let path = dir.path().join("there.db");
        block(open(&path, "").set("k", b"v", None)).unwrap();
        let c = SqliteCache::open(&path, Duration::from_secs(1), opts).unwrap();
        assert_eq!(block(c.get("k")).unwrap().as_deref(), Some(&b"v"[..]));
    }

    /// busy_timeout beyond SQLite's C int of milliseconds is clamped, not a panic.
    #[test]
    fn huge_busy_timeout_is_clamped() {
        let dir = tempfile::tempdir().unwrap();
        for t in [Duration::from_secs(25 * 86400), Duration::MAX] {
            let c = SqliteCache::open(&dir.path().join("b.db"), t, CacheOptions::new()).unwrap();
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
                            let c = SqliteCache::open(
                                path,
                                Duration::from_secs(10),
                                CacheOptions::default(),
                            )?;
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
