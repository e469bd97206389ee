//! `add`, `incr`, `touch`, `compare_and_set` and reads with TTL on the
//! file log.
//!
//! Each read-modify-write runs like `set`: under the exclusive lock on
//! `PATH.lock`, after catching up with what other processes appended, so no
//! other process writes between the check and the append.
//!
//! `touch` (and `persist`, with no `x`) appends an ordinary `set` line with the same value and the new
//! expiry rather than a new line type: the index keeps one line per key that
//! holds both value and expiry, and every reader (get, export, compaction's
//! copy of raw lines, older unicache versions, `jq` users) reads both from
//! that line. The price is rewriting the value's bytes.

use std::time::Duration;

use super::index::Loc;
use super::store::State;
use super::{BACKEND, FileCache};
use crate::cache::{ValueTtl, incr_value, now_millis};
use crate::error::Result;

/// A live value, where its line is and the expiry the line holds.
type Found = (Vec<u8>, Loc, Option<u64>);

impl FileCache {
    /// The live value under `key`, where its line is (the index's expiry:
    /// the earlier of the TTL's and `max_age`'s) and the expiry its line
    /// holds.
    fn find_value(
        &self,
        st: &State,
        key: &str,
        now: u64,
    ) -> Result<Option<Found>> {
        let mut value = None;
        let found = self.find(st, key, Some(now), Some(&mut value))?;
        Ok(found.zip(value).map(|((_, loc), (v, x))| (v, loc, x)))
    }

    /// The live value under `key` with its remaining TTL (a read: sets its
    /// read bit).
    pub(super) fn lookup_with_ttl(
        &self,
        st: &mut State,
        key: &str,
        now: u64,
    ) -> Result<Option<ValueTtl>> {
        let found = self.find_value(st, key, now)?;
        Ok(found.map(|(v, loc, _)| {
            self.mark_read(st, loc.offset);
            let ttl = loc
                .expires
                .map(|x| Duration::from_millis(x.saturating_sub(now)));
            ValueTtl::new(v.into(), ttl)
        }))
    }

    /// Runs `f` under the write lock, caught up with the file.
    fn locked<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        self.with_state(|st| self.locked_in(st, f))
    }

    /// `add`: appends only when no live entry is there.
    pub(super) fn add_now(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let x = self.counters.track(self.expiry(ttl))?;
        let stored = self.locked(|st| {
            if self.find(st, key, Some(now_millis()), None)?.is_some() {
                return Ok(false);
            }
            self.append_locked(st, &[(key, Some(value))], x)?;
            Ok(true)
        })?;
        if stored {
            self.counters.set(1);
        }
        Ok(stored)
    }

    /// `incr`: reads the counter and appends the new one, keeping the
    /// expiry of a live entry (a new one gets the default TTL).
    pub(super) fn incr_now(&self, key: &str, delta: i64) -> Result<i64> {
        let default_x = self.counters.track(self.expiry(None))?;
        let n = self.locked(|st| {
            let current = self.find_value(st, key, now_millis())?;
            let n = incr_value(BACKEND, key, current.as_ref().map(|(v, ..)| &v[..]), delta)?;
            // The line's own expiry: the age bound restarts with the write.
            let x = current.map_or(default_x, |(.., x)| x);
            self.append_locked(st, &[(key, Some(n.to_string().as_bytes()))], x)?;
            Ok(n)
        })?;
        self.counters.set(1);
        Ok(n)
    }

    /// `compare_and_set`: appends `new` only when the live value is exactly
    /// `expected`.
    pub(super) fn compare_and_set_now(
        &self,
        key: &str,
        expected: &[u8],
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let x = self.counters.track(self.expiry(ttl))?;
        let stored = self.locked(|st| {
            match self.find_value(st, key, now_millis())? {
                Some((v, ..)) if v == expected => {}
                _ => return Ok(false),
            }
            self.append_locked(st, &[(key, Some(new))], x)?;
            Ok(true)
        })?;
        if stored {
            self.counters.set(1);
        }
        Ok(stored)
    }

    /// `touch`: the live value appended again with the new expiry.
    pub(super) fn touch_now(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        let x = self.counters.track(self.expiry(ttl))?;
        self.expire_at(key, x)
    }

    /// The live value appended again with expiry `x` (`None`: never):
    /// `touch` with the expiry computed, and `persist`.
    pub(super) fn expire_at(&self, key: &str, x: Option<u64>) -> Result<bool> {
        self.locked(|st| {
            let Some((value, ..)) = self.find_value(st, key, now_millis())? else {
                return Ok(false);
            };
            self.append_locked(st, &[(key, Some(&value))], x)?;
            Ok(true)
        })
    }
}
