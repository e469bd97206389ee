//! `add`, `incr`, `touch` and `compare_and_set` on SQLite: `add`, `touch`
//! and `compare_and_set` are one statement each; `incr` reads, parses and writes in one `BEGIN IMMEDIATE`
//! transaction, which takes the database's write lock first, so no other
//! connection or process writes between the read and the write.

use super::*;

/// `compare_and_set`: replaces value and expiry of a live row whose value
/// is exactly ?5 (?6 is now). The value is compared as read, through
/// `CAST(value AS BLOB)`, so a TEXT counter equals its digits' bytes.
const COMPARE_AND_SET: &str = "UPDATE cache SET value = ?3, expires_at = ?4 \
     WHERE namespace = ?1 AND key = ?2 AND CAST(value AS BLOB) = ?5 \
     AND (expires_at IS NULL OR expires_at > ?6)";

impl SqliteCache {
    /// `add`: one `INSERT ... ON CONFLICT DO UPDATE ... WHERE` expired.
    pub(super) fn add_now(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let exp = self.counters.track(self.expiry(ttl))?;
        let stored = self.with_conn(|c| {
            let now = now_millis() as i64;
            // Stamped here on a bounded file, as a set is: the trigger's
            // stamp (SQLite's clock, in ms) can be behind a set of the same
            // millisecond, which made the new entry the next one evicted.
            let n = match self.is_bounded() {
                true => {
                    let stamp = bounds::next_stamp(c, &self.path)?;
                    c.prepare_cached(bounds::ADD_STAMPED).and_then(|mut s| {
                        s.execute(params![self.namespace, key, value, exp, now, stamp])
                    })
                }
                false => c
                    .prepare_cached(ADD)
                    .and_then(|mut s| s.execute(params![self.namespace, key, value, exp, now])),
            }
            .map_err(|e| sql_err(&self.path, e).with_context("key", key))?;
            self.note_writes(n as u64)?;
            self.after_write(c);
            Ok(n > 0)
        })?;
        if stored {
            self.counters.set(1);
        }
        Ok(stored)
    }

    /// `incr`: the counter is written as TEXT (`typeof(value) = 'text'`), so
    /// `sqlite3` shows the number and SQL arithmetic works on it.
    pub(super) fn incr_now(&self, key: &str, delta: i64) -> Result<i64> {
        let default_exp = self.counters.track(self.expiry(None))?;
        let n = self.with_conn(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_err(&self.path, e).with_context("key", key))?;
            let now = now_millis() as i64;
            let current = self.read(&tx, key, now)?;
            let n = incr_value(BACKEND, key, current.as_deref(), delta)?;
            let text = n.to_string();
            let written = match current {
                // A live row keeps its expiry.
                Some(_) => tx
                    .prepare_cached(SET_VALUE)
                    .and_then(|mut s| s.execute(params![self.namespace, key, text])),
                // Absent or expired: a new row with the default TTL,
                // stamped on a bounded file (see `add_now`).
                None if self.is_bounded() => {
                    let stamp = bounds::next_stamp(&tx, &self.path)?;
                    tx.prepare_cached(bounds::INSERT_STAMPED).and_then(|mut s| {
                        s.execute(params![self.namespace, key, text, default_exp, stamp])
                    })
                }
                None => tx
                    .prepare_cached(INSERT)
                    .and_then(|mut s| s.execute(params![self.namespace, key, text, default_exp])),
            };
            written.map_err(|e| sql_err(&self.path, e).with_context("key", key))?;
            tx.commit()
                .map_err(|e| sql_err(&self.path, e).with_context("key", key))?;
            self.note_writes(1)?;
            self.after_write(c);
            Ok(n)
        })?;
        self.counters.set(1);
        Ok(n)
    }

    /// `touch`: one UPDATE of `expires_at` on a live row.
    pub(super) fn touch_now(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let exp = self.counters.track(self.expiry(ttl))?;
        self.expire_at(key, exp)
    }

    /// A live row's `expires_at` set to `exp` (`None`: never): `touch`
    /// with the expiry computed, and `persist`.
    pub(super) fn expire_at(&self, key: &str, exp: Option<i64>) -> Result<bool> {
        self.with_conn(|c| {
            let now = now_millis() as i64;
            c.prepare_cached(TOUCH)
                .and_then(|mut s| s.execute(params![self.namespace, key, exp, now]))
                .map(|n| n > 0)
                .map_err(|e| sql_err(&self.path, e).with_context("key", key))
        })
    }

    /// `compare_and_set`: one conditional UPDATE; `changes()` says whether
    /// it stored.
    pub(super) fn compare_and_set_now(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let exp = self.counters.track(self.expiry(ttl))?;
        let stored = self.with_conn(|c| {
            let now = now_millis() as i64;
            let n = c
                .prepare_cached(COMPARE_AND_SET)
                .and_then(|mut s| {
                    s.execute(params![self.namespace, key, new, exp, expected, now])
                })
                .map_err(|e| sql_err(&self.path, e).with_context("key", key))?;
            self.note_writes(n as u64)?;
            self.after_write(c);
            Ok(n > 0)
        })?;
        if stored {
            self.counters.set(1);
        }
        Ok(stored)
    }

    /// `get_many_with_ttl`: one read transaction, one SELECT per key.
    pub(super) fn read_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<ValueTtl>>> {
        self.read_each(keys, Self::read_with_ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sqlite3` sees: the counter as TEXT digits, its expiry kept by
    /// `incr` and changed by `touch`; `add` replaced an expired row in place.
    #[test]
    fn counters_are_text_and_expiries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite3");
        let c = SqliteCache::open(SqliteConfig::new(&path), CacheOptions::new()).unwrap();
        c.set_now("n", b"40", Some(Duration::from_secs(100)))
            .unwrap();
        assert_eq!(c.incr_now("n", 2).unwrap(), 42);
        let raw = Connection::open(&path).unwrap();
        let row = |k: &str| -> (String, String, Option<i64>) {
            raw.query_row(
                "SELECT typeof(value), CAST(value AS TEXT), expires_at FROM cache WHERE key = ?1",
                [k],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        let (kind, text, exp) = row("n");
        assert_eq!((kind.as_str(), text.as_str()), ("text", "42"));
        let left = exp.unwrap() - now_millis() as i64;
        assert!(left > 90_000 && left <= 100_000, "{left}");
        assert!(c.touch_now("n", Some(Duration::from_secs(5000))).unwrap());
        assert!(row("n").2.unwrap() - now_millis() as i64 > 4_900_000);
        raw.execute("INSERT INTO cache VALUES ('', 'old', x'00', 1)", [])
            .unwrap();
        assert!(!c.touch_now("old", None).unwrap(), "expired: not touched");
        assert!(c.add_now("old", b"new", None).unwrap());
        assert_eq!(row("old"), ("blob".into(), "new".into(), None));
    }
}
