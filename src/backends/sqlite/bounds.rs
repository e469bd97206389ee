//! Bounded SQLite files (README, "Bounded disk caches"): `max_bytes`,
//! `max_entries` and `max_age` as a property of the file, kept by every
//! process that writes to it.
//!
//! A file becomes bounded the first time it is opened with a bound: its
//! layout goes to version 2 (`PRAGMA user_version`), which adds to `cache`
//! the write stamp (`stored_at`: microseconds since the epoch, made
//! strictly increasing across the file's writes, so it is both the
//! eviction order and the age) and
//! a small access count (`hits`, 0-3), an index on `stored_at`, and a
//! one-row table `unicache_bounds` holding the bounds and the usage. Triggers
//! on `cache` keep the usage exact in every transaction, whoever writes
//! (another process, the `sqlite3` shell), so it survives any crash and
//! always equals a recount. A later open with other bounds replaces them;
//! an open without bounds keeps the file's.
//!
//! Bytes are counted per entry as the key's and the value's bytes plus
//! [`ENTRY_OVERHEAD`] (SQLite's record header, its b-tree cells, and the
//! `stored_at` index entry, which repeats the key: measured on this layout,
//! see the test below). Expired rows count until purged.
//!
//! Eviction runs in the writing transaction, a bounded batch per write
//! (never a pause): expired rows first (not counted as evictions), then in
//! write order (FIFO), where a row read since it was last written gets a
//! second chance (moved to the back, its count lowered) instead of leaving.
//! Reads never write: a process notes its hits in memory and adds them to
//! the rows in its next write transaction (batched access records), so a
//! process that only reads does not inform eviction.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};

use super::{BACKEND, sql_err};
use crate::cache::Bounds;
use crate::error::{Error, ErrorKind, Result};
use std::path::Path;

/// The layout version of a bounded file (`PRAGMA user_version`).
pub const LAYOUT_BOUNDED: i64 = 2;

/// Bytes counted per entry on top of its key and value.
pub const ENTRY_OVERHEAD: i64 = 64;

/// Once over a bound, eviction goes on to 1/100 below it (the low-water
/// mark; nothing below for bounds under 100 entries), so that about one
/// write in `bound / 100` evicts, a batch at once, instead of every write
/// one row: a bounded `set` costs about what an unbounded one does, the
/// eviction's cost spread over many.
const LOW_WATER_DIVISOR: u64 = 100;

/// Hits noted in memory before new ones are dropped until the next write.
const MAX_PENDING_HITS: usize = 16_384;

/// From a version-1 file to a bounded one (run once, in one transaction).
const UPGRADE: &str = "
ALTER TABLE cache ADD COLUMN stored_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cache ADD COLUMN hits INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS cache_stored ON cache (stored_at);
CREATE TABLE IF NOT EXISTS unicache_bounds (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    max_bytes   INTEGER,
    max_entries INTEGER,
    max_age_ms  INTEGER,
    bytes       INTEGER NOT NULL DEFAULT 0,
    entries     INTEGER NOT NULL DEFAULT 0,
    evictions   INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO unicache_bounds (id) VALUES (1);
CREATE TRIGGER IF NOT EXISTS cache_usage_insert AFTER INSERT ON cache BEGIN
    UPDATE unicache_bounds SET
        bytes = bytes + octet_length(NEW.key) + octet_length(NEW.value) + 64,
        entries = entries + 1
    WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS cache_usage_delete AFTER DELETE ON cache BEGIN
    UPDATE unicache_bounds SET
        bytes = bytes - octet_length(OLD.key) - octet_length(OLD.value) - 64,
        entries = entries - 1
    WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS cache_usage_update AFTER UPDATE OF key, value ON cache BEGIN
    UPDATE unicache_bounds SET
        bytes = bytes + octet_length(NEW.key) + octet_length(NEW.value)
                      - octet_length(OLD.key) - octet_length(OLD.value)
    WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS cache_stamp AFTER INSERT ON cache WHEN NEW.stored_at = 0 BEGIN
    UPDATE cache SET stored_at = CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)
    WHERE namespace = NEW.namespace AND key = NEW.key;
END;
";

/// The usage recounted from the rows (when a file becomes bounded, and at
/// `compact`: a tool that wrote with `INSERT OR REPLACE` and without
/// `recursive_triggers` leaves the count off until then).
pub(super) const RECOUNT: &str = "
UPDATE unicache_bounds SET
    bytes = (SELECT coalesce(sum(octet_length(key) + octet_length(value) + 64), 0)
             FROM cache),
    entries = (SELECT count(*) FROM cache)
WHERE id = 1;
";

/// A write on a bounded file: stamped with its time, its access count
/// reset; an existing row is updated in place (the usage trigger sees the
/// size change; `INSERT OR REPLACE` would hide it behind a delete).
pub const INSERT_STAMPED: &str = "INSERT INTO cache (namespace, key, value, expires_at, stored_at, hits) \
     VALUES (?1, ?2, ?3, ?4, ?5, 0) ON CONFLICT (namespace, key) DO UPDATE \
     SET value = excluded.value, expires_at = excluded.expires_at, \
     stored_at = excluded.stored_at, hits = 0";

/// `add` on a bounded file: [`super::schema::ADD`] stamped as
/// [`INSERT_STAMPED`] (?6 the stamp), also when it replaces an expired row.
pub const ADD_STAMPED: &str = "INSERT INTO cache (namespace, key, value, expires_at, stored_at, hits) \
     VALUES (?1, ?2, ?3, ?4, ?6, 0) ON CONFLICT (namespace, key) DO UPDATE \
     SET value = excluded.value, expires_at = excluded.expires_at, \
     stored_at = excluded.stored_at, hits = 0 \
     WHERE cache.expires_at IS NOT NULL AND cache.expires_at <= ?5";

const NOTE_HIT: &str =
    "UPDATE cache SET hits = min(hits + 1, 3) WHERE namespace = ?1 AND key = ?2";

/// The bounds and usage as the file holds them now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Usage {
    pub bounds: Bounds,
    pub bytes: i64,
    pub entries: i64,
    pub evictions: i64,
}

impl Usage {
    fn over(&self) -> bool {
        let b = &self.bounds;
        b.max_bytes.is_some_and(|m| self.bytes > m as i64)
            || b.max_entries.is_some_and(|m| self.entries > m as i64)
    }

    /// These figures against the low-water mark: each bound less
    /// 1/[`LOW_WATER_DIVISOR`] of it, what eviction brings a file over its
    /// bounds down to.
    fn low_water(&self) -> Usage {
        let low = |m: u64| m - m / LOW_WATER_DIVISOR;
        let mut u = *self;
        u.bounds.max_bytes = u.bounds.max_bytes.map(low);
        u.bounds.max_entries = u.bounds.max_entries.map(low);
        u
    }
}

/// Makes the file bounded when `requested` has a bound (upgrading a
/// version-1 file once) and stores `requested` as the file's bounds;
/// `true` when the file is bounded. A read-only open changes nothing.
pub(super) fn configure(
    c: &mut Connection,
    path: &Path,
    requested: &Bounds,
    read_only: bool,
) -> Result<bool> {
    let version = |c: &Connection| -> Result<i64> {
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_err(path, e))
    };
    if version(c)? < LAYOUT_BOUNDED && (requested.is_unbounded() || read_only) {
        return Ok(false);
    }
    if read_only {
        return Ok(true);
    }
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| sql_err(path, e))?;
    // Another process may have upgraded it since the check above.
    if version(&tx)? < LAYOUT_BOUNDED {
        tx.execute_batch(UPGRADE)
            .and_then(|()| tx.execute_batch(RECOUNT))
            .map_err(|e| sql_err(path, e).with_context("op", "make the file bounded"))?;
        tx.pragma_update(None, "user_version", LAYOUT_BOUNDED)
            .map_err(|e| sql_err(path, e))?;
    }
    if !requested.is_unbounded() {
        let age = requested.max_age.map(|a| a.as_millis().min(i64::MAX as u128) as i64);
        let cap = |n: Option<u64>| n.map(|n| n.min(i64::MAX as u64) as i64);
        tx.execute(
            "UPDATE unicache_bounds SET max_bytes = ?1, max_entries = ?2, max_age_ms = ?3 WHERE id = 1",
            params![cap(requested.max_bytes), cap(requested.max_entries), age],
        )
        .map_err(|e| sql_err(path, e))?;
    }
    tx.commit().map_err(|e| sql_err(path, e))?;
    Ok(true)
}

/// The stamp of the next write: the time in microseconds, or one more
/// than the newest stamp when that is later (a clock step back, or writes
/// within one microsecond), so the order of writes is kept exactly.
pub(super) fn next_stamp(c: &Connection, path: &Path) -> Result<i64> {
    let newest: Option<i64> = c
        .prepare_cached("SELECT max(stored_at) FROM cache")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(|e| sql_err(path, e))?;
    let now = now_micros();
    Ok(newest.map_or(now, |n| now.max(n.saturating_add(1))))
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(i64::MAX as u128) as i64)
}

/// The file's bounds and usage.
pub(super) fn usage(c: &Connection, path: &Path) -> Result<Usage> {
    let row = c
        .prepare_cached(
            "SELECT max_bytes, max_entries, max_age_ms, bytes, entries, evictions \
             FROM unicache_bounds WHERE id = 1",
        )
        .and_then(|mut s| {
            s.query_row([], |r| {
                let mut u = Usage::default();
                u.bounds.max_bytes = r.get::<_, Option<i64>>(0)?.map(|n| n.max(0) as u64);
                u.bounds.max_entries = r.get::<_, Option<i64>>(1)?.map(|n| n.max(0) as u64);
                u.bounds.max_age = r
                    .get::<_, Option<i64>>(2)?
                    .map(|n| std::time::Duration::from_millis(n.max(0) as u64));
                (u.bytes, u.entries, u.evictions) = (r.get(3)?, r.get(4)?, r.get(5)?);
                Ok(u)
            })
            .optional()
        })
        .map_err(|e| sql_err(path, e))?;
    row.ok_or_else(|| {
        Error::new(ErrorKind::Corrupt, "bounded layout without its unicache_bounds row")
            .with_backend(BACKEND)
            .with_context("path", path.display())
    })
}

/// Adds the hits noted since the last write to their rows (in the write's
/// transaction).
pub(super) fn flush_hits(c: &Connection, path: &Path, namespace: &str, keys: HashSet<String>) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut st = c.prepare_cached(NOTE_HIT).map_err(|e| sql_err(path, e))?;
    for k in keys {
        st.execute(params![namespace, k]).map_err(|e| sql_err(path, e))?;
    }
    Ok(())
}

/// Notes a hit on `key`, for [`flush_hits`] (dropped past a cap).
pub(super) fn note_hit(pending: &std::sync::Mutex<HashSet<String>>, key: &str) {
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    if p.len() < MAX_PENDING_HITS && !p.contains(key) {
        p.insert(key.to_string());
    }
}

/// The oldest rows first, with what eviction needs of each. No `LIMIT`:
/// the caller stops reading when it has enough. (A bound `LIMIT ?` makes
/// the SQLite bundled here prepare the statement again at every run, as
/// its planner uses the value: that was a quarter of a bounded `set`.)
const OLDEST: &str = "SELECT namespace, key, hits, expires_at, stored_at, \
     octet_length(key) + octet_length(value) FROM cache INDEXED BY cache_stored ORDER BY stored_at";

/// A row of [`OLDEST`].
struct Old {
    namespace: String,
    key: String,
    hits: i64,
    expired: bool,
    stored_at: i64,
    /// Bytes as the usage counts them.
    size: i64,
}

/// Up to `n` of the oldest rows.
fn oldest(c: &Connection, path: &Path, n: usize) -> Result<Vec<Old>> {
    let now = crate::cache::now_millis() as i64;
    let mut st = c.prepare_cached(OLDEST).map_err(|e| sql_err(path, e))?;
    let rows = st
        .query_map([], |r| {
            Ok(Old {
                namespace: r.get(0)?,
                key: r.get(1)?,
                hits: r.get(2)?,
                expired: r.get::<_, Option<i64>>(3)?.is_some_and(|e| e <= now),
                stored_at: r.get(4)?,
                size: r.get::<_, i64>(5)? + ENTRY_OVERHEAD,
            })
        })
        .map_err(|e| sql_err(path, e))?;
    rows.take(n)
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| sql_err(path, e))
}

fn delete_row(c: &Connection, path: &Path, row: &Old) -> Result<()> {
    c.prepare_cached(super::schema::DELETE_ANY)
        .and_then(|mut s| s.execute(params![row.namespace, row.key]))
        .map_err(|e| sql_err(path, e))?;
    Ok(())
}

/// Brings the file back within its bounds, looking at no more than
/// `budget` rows (the rest is left to later writes): rows past `max_age`,
/// then the oldest written, each read one moved to the back once per hit.
/// Once over a bound, rows go until the file is at its low-water mark
/// (1% below; see [`LOW_WATER_DIVISOR`]).
/// Among the oldest, expired rows go first and are not evictions (as
/// cachelib's and Django's culls prune expired entries first). Rows are
/// read oldest first and let go one by one by their key, the usage
/// followed here as the triggers keep it. Returns the rows evicted.
pub(super) fn enforce(c: &Connection, path: &Path, budget: i64) -> Result<u64> {
    let mut u = usage(c, path)?;
    let mut evicted = 0u64;
    let mut looked = 0i64;
    if let Some(age) = u.bounds.max_age {
        let before = now_micros().saturating_sub(age.as_micros().min(i64::MAX as u128) as i64);
        'aged: while looked < budget {
            let rows = oldest(c, path, 256.min(budget - looked) as usize)?;
            let more = rows.len() == 256;
            for row in rows {
                if row.stored_at >= before {
                    break 'aged;
                }
                delete_row(c, path, &row)?;
                (u.bytes, u.entries) = (u.bytes - row.size, u.entries - 1);
                evicted += 1;
                looked += 1;
            }
            if !more {
                break;
            }
        }
    }
    if !u.over() {
        return count_evictions(c, path, evicted);
    }
    let mut u = u.low_water();
    while u.over() && looked < budget {
        let window = (2 * rows_over(&u) + 8).min(budget - looked).max(1);
        let rows = oldest(c, path, window as usize)?;
        if rows.is_empty() {
            break;
        }
        looked += rows.len() as i64;
        let mut back = None;
        let (expired, live): (Vec<Old>, Vec<Old>) = rows.into_iter().partition(|r| r.expired);
        for row in expired.iter().chain(&live) {
            if !u.over() {
                break;
            }
            if row.expired || row.hits == 0 {
                delete_row(c, path, row)?;
                (u.bytes, u.entries) = (u.bytes - row.size, u.entries - 1);
                evicted += u64::from(!row.expired);
                continue;
            }
            // Read since written: to the back, one hit less.
            let stamp = match back {
                Some(b) => b + 1,
                None => next_stamp(c, path)?,
            };
            back = Some(stamp);
            c.prepare_cached(
                "UPDATE cache SET stored_at = ?1, hits = hits - 1 WHERE namespace = ?2 AND key = ?3",
            )
            .and_then(|mut s| s.execute(params![stamp, row.namespace, row.key]))
            .map_err(|e| sql_err(path, e))?;
        }
    }
    count_evictions(c, path, evicted)
}

/// Adds `evicted` to the file's count; returns it.
fn count_evictions(c: &Connection, path: &Path, evicted: u64) -> Result<u64> {
    if evicted > 0 {
        c.prepare_cached("UPDATE unicache_bounds SET evictions = evictions + ?1 WHERE id = 1")
            .and_then(|mut s| s.execute(params![evicted as i64]))
            .map_err(|e| sql_err(path, e))?;
    }
    Ok(evicted)
}

/// How many of the oldest rows to let go so that `u` is within its bounds:
/// the entries over, or the bytes over at the average entry's size.
fn rows_over(u: &Usage) -> i64 {
    let b = &u.bounds;
    let by_entries = b.max_entries.map_or(0, |m| u.entries - m as i64);
    let by_bytes = b.max_bytes.map_or(0, |m| {
        let over = u.bytes - m as i64;
        let avg = (u.bytes / u.entries.max(1)).max(1);
        (over + avg - 1) / avg
    });
    by_entries.max(by_bytes).max(1)
}

/// On a full disk: evicts the oldest rows (at least 64, twice the rows
/// about to be written) whatever the bounds, so that a retry may fit.
/// Returns how many went.
pub(super) fn make_room(c: &mut Connection, path: &Path, writing: usize) -> Result<u64> {
    let n = (2 * writing).max(64) as i64;
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| sql_err(path, e))?;
    let gone = tx
        .execute(
            "DELETE FROM cache WHERE (namespace, key) IN \
             (SELECT namespace, key FROM cache ORDER BY stored_at LIMIT ?1)",
            params![n],
        )
        .map_err(|e| sql_err(path, e))? as i64;
    tx.execute(
        "UPDATE unicache_bounds SET evictions = evictions + ?1 WHERE id = 1",
        params![gone],
    )
    .map_err(|e| sql_err(path, e))?;
    tx.commit().map_err(|e| sql_err(path, e))?;
    Ok(gone as u64)
}
