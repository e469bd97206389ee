//! The table layout and the statements on it, creating the file, the WAL
//! switch, and the layout check run at open.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{BACKEND, sql_err};
use crate::error::{Error, ErrorKind, Result};

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
pub(super) const EXPIRY_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS cache_expiry ON cache (expires_at) WHERE expires_at IS NOT NULL";

/// The statement every write uses (namespace, key, value, expires_at).
pub const INSERT: &str =
    "INSERT OR REPLACE INTO cache (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)";
/// Values are read through `CAST(value AS BLOB)`: BLOBs as they are, TEXT
/// (what `sqlite3` and Python's `str` store) as its UTF-8 bytes, INTEGER and
/// REAL as SQLite's own text form of them. Expiry times another tool wrote
/// as REAL are read as whole milliseconds.
pub(super) const SELECT: &str = "SELECT CAST(value AS BLOB), CAST(expires_at AS INTEGER) FROM cache \
     WHERE namespace = ?1 AND key = ?2";
/// Every live entry of a namespace, in key order (the primary key's range).
pub(super) const SELECT_ENTRIES: &str = "SELECT key, CAST(value AS BLOB), CAST(expires_at AS INTEGER) \
     FROM cache \
     WHERE namespace = ?1 AND (expires_at IS NULL OR expires_at > ?2)";
/// Entries per message from the export thread.
pub(super) const ENTRY_BATCH: usize = 512;
/// The longest busy timeout SQLite takes (a C int of milliseconds, ~24.8 days);
/// longer ones are clamped to it.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
pub(super) const DELETE: &str = "DELETE FROM cache WHERE namespace = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)";
/// `add`: inserts, or replaces only an expired row (?5 is now); one
/// statement, so `changes()` says whether it stored.
pub(super) const ADD: &str = "INSERT INTO cache (namespace, key, value, expires_at) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (namespace, key) DO UPDATE \
     SET value = excluded.value, expires_at = excluded.expires_at \
     WHERE cache.expires_at IS NOT NULL AND cache.expires_at <= ?5";
/// `incr` on a live row: the new counter, the expiry kept.
pub(super) const SET_VALUE: &str = "UPDATE cache SET value = ?3 WHERE namespace = ?1 AND key = ?2";
/// `touch`: a new expiry for a live row only (?4 is now).
pub(super) const TOUCH: &str = "UPDATE cache SET expires_at = ?3 WHERE namespace = ?1 AND key = ?2 \
     AND (expires_at IS NULL OR expires_at > ?4)";
pub(super) const DELETE_ANY: &str = "DELETE FROM cache WHERE namespace = ?1 AND key = ?2";

/// Puts the database in WAL mode (a persistent property of the file).
///
/// Converting a rollback-journal database needs exclusive access, and SQLite
/// does not run the busy handler for `PRAGMA journal_mode=WAL`: several
/// processes opening one fresh file at once get "database is locked" at once
/// (or the old mode back). So the mode is read first (nothing to do once any
/// process converted the file) and the switch is retried with backoff within
/// the busy timeout. Reading the mode also reads the header, so a file that is
/// not a database fails here.
pub(super) fn enable_wal(conn: &Connection, path: &Path, budget: Duration) -> Result<()> {
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

/// Creates the file (and its directory) owner-only if it is missing; SQLite
/// gives its -wal/-shm files the same mode.
pub(super) fn create_file(path: &Path) -> Result<()> {
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

/// Refuses a `cache` table of another shape (such as the seed's two-column one).
/// The layout's version, kept in the file's `PRAGMA user_version` (README,
/// "Versions"): 1 is the plain layout, 2 a bounded file
/// ([`super::bounds::LAYOUT_BOUNDED`]). A file with 0 was made before the
/// version was recorded (or by another tool, with the same columns): it is
/// the plain layout and gets the number. A later unicache that changes the
/// layout raises it and reads this one; this version refuses a higher
/// number instead of guessing.
pub const LAYOUT_VERSION: i64 = 1;

/// Checks (and on a writable open records) the layout's version.
pub(super) fn check_version(conn: &Connection, path: &Path, read_only: bool) -> Result<()> {
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql_err(path, e))?;
    if v > super::bounds::LAYOUT_BOUNDED {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "written by a newer unicache (SQLite layout version {v}; this version reads \
                 up to {}): upgrade unicache to open it",
                super::bounds::LAYOUT_BOUNDED
            ),
        )
        .with_backend(BACKEND)
        .with_context("path", path.display()));
    }
    if v == 0 && !read_only {
        conn.pragma_update(None, "user_version", LAYOUT_VERSION)
            .map_err(|e| sql_err(path, e).with_context("op", "user_version"))?;
    }
    Ok(())
}

pub(super) fn check_layout(conn: &Connection, path: &Path) -> Result<()> {
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
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql_err(path, e))?;
    let want: &[&str] = match version {
        super::bounds::LAYOUT_BOUNDED => &[
            "namespace",
            "key",
            "value",
            "expires_at",
            "stored_at",
            "hits",
        ],
        _ => &["namespace", "key", "value", "expires_at"],
    };
    if cols != want {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "table 'cache' has columns {cols:?}, not unicache's layout version {version} \
                 ({}); use another file",
                want.join(", ")
            ),
        )
        .with_backend(BACKEND)
        .with_context("path", path.display()));
    }
    Ok(())
}
