//! Bounded logs: `file:PATH?max_bytes=500MB&max_entries=N&max_age=DUR`.
//!
//! **What is counted.** `max_bytes` bounds the bytes of the live entries'
//! lines in the log: key, value (JSON-escaped, or base64 for non-UTF-8
//! values), namespace, expiry, checksum and framing, newline included, i.e.
//! what each entry occupies on disk now (the header and bounds lines are
//! not entries). `max_entries` bounds the live entries of all namespaces.
//! Expired entries count until they are evicted or compacted away.
//! `max_age` makes an entry written longer ago than DUR expired for every
//! read at once, and evicts it when it comes up; while it is in force, new
//! `set` lines carry their write time (`"t":MS`, which readers that do not
//! know it ignore: the log stays version 1). Lines without one (written
//! before `max_age` was set) do not age: the other bounds and their TTL
//! still apply. `touch`, `incr` and the other writes date the entry anew.
//!
//! **A property of the log.** The bounds are a bounds line in the log (a
//! `del` of a reserved key, `{"op":"del","n":"\u0000unicache","k":"bounds",
//! "bounds":{...}}`, which an older reader takes for the delete of a key that
//! never existed), and compaction writes it again after the header. A
//! process that opens the log without bounds follows the log's; one that
//! opens it with bounds replaces them when they differ (the last opener's
//! bounds win, for every process; the others see the new line as they catch
//! up with the log). There is no way back to unbounded but a new log. An
//! older unicache neither enforces nor keeps them (its compaction drops the
//! bounds line; the next process that opens with bounds writes it again).
//!
//! **Policy.** Entries go in log order (oldest line first, FIFO). With the
//! default `clock` policy an entry read since it was written (an in-memory,
//! per-process bit set by `get`-like reads and `contains`) gets a second
//! chance once: its line is appended again at the tail instead (the same
//! line, value, expiry and write time). `evict=fifo` (a hidden URL option,
//! for measurement) turns that off. The choice is [`choose`].
//!
//! **When.** In the writing process, under the log's lock, after each
//! written chunk (about 4 MiB, or each line with `sync=always`): the oldest
//! entries get tombstone lines, so every process's index drops them, at
//! most `4 * lines written + 4096` entries looked at per chunk (never a long
//! pause: after a bound is lowered the log converges over the next writes).
//! An expired entry at the head of the queue goes too. Compaction (when the
//! dead share passes `compact_ratio`, checked after each chunk of a bounded
//! log, from `min(1 MiB, max_bytes)` on) drops the evicted lines.
//!
//! **Disk usage.** After every write the file is at most
//! `(max_bytes + 36) * 100 / (100 - compact_ratio)` bytes (36: the header):
//! live lines are at most `max_bytes` and dead bytes at most
//! `compact_ratio`% of the file, else it is compacted. While a write runs it
//! may pass that by the chunk being written (4 MiB at most) and, during a
//! compaction, by the copy (at most `max_bytes` more). A compaction that
//! fails (full disk) leaves the log larger until one succeeds.
//!
//! **Full disk.** A bounded log whose append fails for lack of space cuts
//! the partial line, evicts room for the chunk, compacts (which frees the
//! dead bytes when the copy fits; other processes still holding the old
//! file keep its blocks until they catch up) and tries once more before
//! failing with "disk full".
//!
//! **Memory.** The eviction queue costs 16 bytes per line written since the
//! log was loaded or last compacted, in every process that has the log open.
//!
//! **Evictions** are counted per handle (`Stats::evictions`), not in the
//! log. An entry whose TTL had passed is removed without counting.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use super::codec::{Fields, encode_body, encode_del_of, encode_line, line_fields, seal};
use super::index::Loc;
use super::store::{Indexed, State};
use super::{FileCache, SyncPolicy, WRITE_CHUNK, ferr};
use crate::cache::{Bounds, now_millis};
use crate::error::{Error, ErrorKind, Result};

/// The namespace and key of bounds lines.
const CTL_NS: &str = "\u{0}unicache";
const CTL_KEY: &str = "bounds";
/// Entries looked at per chunk beyond 4 per line written.
const EVICT_BATCH: usize = 4096;
/// Second chances given per chunk beyond one per line written.
const SPARE_BATCH: usize = 64;
/// Queue entries whose index slots are loaded together (see
/// [`super::index::Index::warm`]).
pub(super) const WARM: usize = 16;
/// Bytes read at a time from the head of the log.
const READ_SPAN: usize = 1 << 20;

/// Which entries a bounded log evicts (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Oldest line first.
    Fifo,
    /// Oldest line first, but an entry read since its line was written is
    /// moved to the tail once instead.
    #[default]
    Clock,
}

/// What becomes of the oldest entry when room is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Tombstoned.
    Evict,
    /// Appended again at the tail, its read bit cleared.
    Spare,
}

/// The victim choice, the one place a policy decides: `accessed` (read
/// since written), `expired` (TTL or age passed), `may_spare` (second
/// chances left in this batch).
pub(super) fn choose(policy: Policy, accessed: bool, expired: bool, may_spare: bool) -> Action {
    match policy {
        Policy::Clock if accessed && !expired && may_spare => Action::Spare,
        _ => Action::Evict,
    }
}

/// `max_age` in ms.
pub(super) fn age_ms(b: &Bounds) -> Option<u64> {
    b.max_age
        .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX))
}

/// Any bound set.
pub(super) fn is_bounded(b: Option<&Bounds>) -> bool {
    b.is_some_and(|b| !b.is_unbounded())
}

#[derive(Serialize, Deserialize, Default)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_entries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_age_ms: Option<u64>,
}

#[derive(Deserialize)]
struct BoundsLine {
    bounds: Wire,
}

/// The bounds as `stats` shows them.
pub(super) fn to_json(b: Option<&Bounds>) -> serde_json::Value {
    match b.filter(|b| !b.is_unbounded()) {
        None => serde_json::Value::Null,
        Some(b) => serde_json::to_value(Wire {
            max_bytes: b.max_bytes,
            max_entries: b.max_entries,
            max_age_ms: age_ms(b),
        })
        .unwrap_or_default(),
    }
}

/// Appends the bounds line of `b` to `out`.
pub(super) fn encode_bounds(out: &mut Vec<u8>, b: &Bounds) {
    let mut body = Vec::with_capacity(128);
    encode_body(&mut body, "del", CTL_NS, CTL_KEY, None, None);
    body.pop(); // the closing brace: the bounds go before it
    body.extend_from_slice(b",\"bounds\":");
    let wire = Wire {
        max_bytes: b.max_bytes,
        max_entries: b.max_entries,
        max_age_ms: age_ms(b),
    };
    let _ = serde_json::to_writer(&mut body, &wire);
    body.push(b'}');
    seal(out, &body);
}

/// Whether a `del` line's fields are a bounds line's.
pub(super) fn is_bounds_line(f: &Fields) -> bool {
    f.ns == CTL_NS && f.key == CTL_KEY
}

/// The bounds of a bounds line (checksum verified, without its newline).
pub(super) fn decode_bounds(body: &[u8]) -> Option<Bounds> {
    let w = serde_json::from_slice::<BoundsLine>(body).ok()?.bounds;
    Some(Bounds {
        max_bytes: w.max_bytes,
        max_entries: w.max_entries,
        max_age: w.max_age_ms.map(std::time::Duration::from_millis),
    })
}

/// One queued line: its key's hash, and offset | namespace id << 42 |
/// read bit << 58.
#[derive(Clone, Copy)]
struct Item {
    hash: u64,
    word: u64,
}

const OFFSET_MASK: u64 = (1 << 42) - 1;
const READ_BIT: u64 = 1 << 58;

impl Item {
    fn offset(self) -> u64 {
        self.word & OFFSET_MASK
    }
    fn ns_id(self) -> u16 {
        (self.word >> 42) as u16
    }
}

/// The eviction queue: every `set` line indexed since the log was loaded or
/// compacted, in log order (offsets only grow). A line that is no longer
/// its key's live one is dropped when it reaches the head. 16 bytes a line.
#[derive(Default)]
pub(super) struct Fifo {
    q: VecDeque<Item>,
    /// Head entries still warm from the last [`head`] that loaded a group.
    warmed: usize,
}

impl Fifo {
    /// The live entries of `ix`, oldest line first.
    pub fn from_index(ix: &Indexed) -> Fifo {
        let mut v: Vec<Item> = ix
            .index
            .iter_hashed()
            .map(|(hash, id, l)| Item {
                hash,
                word: l.offset | u64::from(id) << 42,
            })
            .collect();
        v.sort_unstable_by_key(|i| i.offset());
        Fifo {
            q: v.into(),
            warmed: 0,
        }
    }

    /// A line appended at `offset`.
    pub fn push(&mut self, offset: u64, hash: u64, ns_id: u16) {
        self.push_item(offset, hash, ns_id, false);
    }

    fn push_item(&mut self, offset: u64, hash: u64, ns_id: u16, read: bool) {
        let bit = if read { READ_BIT } else { 0 };
        self.q.push_back(Item {
            hash,
            word: (offset & OFFSET_MASK) | u64::from(ns_id) << 42 | bit,
        });
    }

    /// Sets the read bit of the line at `offset`.
    pub fn mark(&mut self, offset: u64) {
        if let Ok(i) = self.q.binary_search_by_key(&offset, |it| it.offset())
            && let Some(it) = self.q.get_mut(i)
        {
            it.word |= READ_BIT;
        }
    }

    /// A cursor that answers, for increasing offsets, whether that line's
    /// read bit is set (compaction carries the bits to the new offsets).
    pub fn bits(&self) -> impl FnMut(u64) -> bool + '_ {
        let mut i = 0;
        move |offset| {
            while i < self.q.len() && self.q[i].offset() < offset {
                i += 1;
            }
            self.q
                .get(i)
                .is_some_and(|it| it.offset() == offset && it.word & READ_BIT != 0)
        }
    }

    /// The queued lines, oldest first, in groups of [`WARM`]: (offset, key
    /// hash, namespace id, read bit).
    pub fn groups(&self) -> impl Iterator<Item = Vec<(u64, u64, u16, bool)>> + '_ {
        let (a, b) = self.q.as_slices();
        a.chunks(WARM).chain(b.chunks(WARM)).map(|g| {
            g.iter()
                .map(|it| (it.offset(), it.hash, it.ns_id(), it.word & READ_BIT != 0))
                .collect()
        })
    }

    /// A line moved to `offset` by compaction, read bit kept.
    pub fn push_moved(&mut self, offset: u64, hash: u64, ns_id: u16, read: bool) {
        self.push_item(offset, hash, ns_id, read);
    }
}

/// Room to make besides the bounds: bytes and entries about to be written.
#[derive(Clone, Copy, Default)]
pub(super) struct Room {
    pub bytes: u64,
    pub entries: u64,
}

/// Whether the index is over its bounds with `room` more.
fn over(ix: &Indexed, b: &Bounds, room: Room) -> bool {
    b.max_bytes
        .is_some_and(|m| ix.used_bytes().saturating_add(room.bytes) > m)
        || b.max_entries
            .is_some_and(|m| (ix.index.len() as u64).saturating_add(room.entries) > m)
}

/// The head of the log read in growing pieces (victims are mostly
/// adjacent): one entry per write reads little, a large batch reads 1 MiB
/// at a time.
pub(super) struct Window {
    buf: Vec<u8>,
    base: u64,
    /// Bytes the next read takes (doubles up to `READ_SPAN`).
    span: u64,
}

impl Window {
    pub(super) fn new() -> Window {
        Window {
            buf: Vec::new(),
            base: 0,
            span: 4096,
        }
    }

    /// The line at `loc` (newline included); `end`: the end of the file.
    pub(super) fn line(&mut self, file: &File, loc: Loc, end: u64) -> std::io::Result<&[u8]> {
        let len = loc.len as u64;
        let have = self.base..=self.base + self.buf.len() as u64;
        if !(have.contains(&loc.offset) && have.contains(&(loc.offset + len))) {
            let n = len.max(self.span).min(end.saturating_sub(loc.offset));
            self.span = (self.span * 2).min(READ_SPAN as u64);
            self.buf.resize(n.max(len) as usize, 0);
            file.read_exact_at(&mut self.buf, loc.offset)?;
            self.base = loc.offset;
        }
        let at = (loc.offset - self.base) as usize;
        Ok(&self.buf[at..at + loc.len as usize])
    }
}

/// One eviction batch's tallies.
#[derive(Default)]
struct Batch {
    out: Vec<u8>,
    evicted: u64,
}

impl FileCache {
    /// Whether the log (as this process last read it) has bounds.
    pub(super) fn is_bounded(st: &State) -> bool {
        is_bounded(st.ix.bounds.as_ref())
    }

    /// Refuses an entry whose line alone is over `max_bytes`: it could
    /// never be kept.
    pub(super) fn check_fits(&self, st: &State, len: usize, key: &str) -> Result<()> {
        match st.ix.bounds.and_then(|b| b.max_bytes) {
            Some(m) if len as u64 > m => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("entry of {len} bytes is larger than the log's max_bytes={m}"),
            )
            .with_backend(super::BACKEND)
            .with_context("key", key)),
            _ => Ok(()),
        }
    }

    /// Sets the read bit of the entry whose line is at `offset`.
    pub(super) fn mark_read(&self, st: &mut State, offset: u64) {
        if self.policy == Policy::Clock
            && let Some(f) = &mut st.ix.fifo
        {
            f.mark(offset);
        }
    }

    /// Evicts, oldest first, until the log is within its bounds with `room`
    /// to spare (see the module doc), after `written` lines were appended.
    /// The caller holds the write lock and has caught up with the file. On
    /// a failed write the index is reloaded from the file.
    pub(super) fn enforce(&self, st: &mut State, written: usize, room: Room) -> Result<()> {
        let Some(b) = st.ix.bounds.filter(|b| !b.is_unbounded()) else {
            return Ok(());
        };
        if st.ix.fifo.is_none() {
            st.ix.fifo = Some(Fifo::from_index(&st.ix));
        }
        let mut batch = Batch::default();
        let r = self.evict_batch(st, &b, written, room, &mut batch);
        let r = r.and_then(|()| self.write_out(st, &mut batch.out));
        if r.is_err() {
            // The index already dropped what the file may not say: reread.
            *st = self.load(true)?;
            self.settle(st, true)?;
            return r;
        }
        // Counted once their tombstones are in the log.
        self.counters.evict(batch.evicted);
        if self.sync == SyncPolicy::Always && batch.evicted > 0 {
            st.file
                .sync_data()
                .map_err(|e| ferr(&self.real, "fsync", e))?;
        }
        Ok(())
    }

    /// The loop of [`FileCache::enforce`]: lines go to `batch.out`, which is
    /// written when large or before a line still in it must be read.
    fn evict_batch(
        &self,
        st: &mut State,
        b: &Bounds,
        written: usize,
        room: Room,
        batch: &mut Batch,
    ) -> Result<()> {
        let now = now_millis();
        let mut budget = EVICT_BATCH + 4 * written;
        let mut spares = SPARE_BATCH + written;
        let mut window = Window::new();
        let mut scratch = Vec::new();
        while budget > 0 {
            let Some((i, loc, item)) = head(&mut st.ix) else {
                break;
            };
            let expired = loc.expires.is_some_and(|x| x <= now);
            if !expired && !over(&st.ix, b, room) {
                break;
            }
            budget -= 1;
            if loc.offset + u64::from(loc.len) > st.end {
                self.write_out(st, &mut batch.out)?;
            }
            let line = window
                .line(&st.file, loc, st.end)
                .map_err(|e| ferr(&self.real, "read", e))?;
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let fifo = st.ix.fifo.as_mut().expect("built above");
            fifo.q.pop_front();
            let read = item.word & READ_BIT != 0;
            match choose(self.policy, read, expired, spares > 0) {
                Action::Spare => {
                    if !line_fields(body).is_some_and(|f| f.set) {
                        return Err(disagree());
                    }
                    spares -= 1;
                    let offset = st.end + batch.out.len() as u64;
                    batch.out.extend_from_slice(line);
                    fifo.push(offset, item.hash, item.ns_id());
                    if !st.ix.index.set(i, Loc { offset, ..loc }) {
                        return Err(Error::new(ErrorKind::Io, "the log is larger than 4 TiB"));
                    }
                }
                Action::Evict => {
                    let counts = tombstone(&mut batch.out, &mut scratch, body, loc, now)?;
                    st.ix.index.remove(i);
                    st.ix.live_bytes = st.ix.live_bytes.saturating_sub(u64::from(loc.len));
                    batch.evicted += u64::from(counts);
                }
            }
            if batch.out.len() >= WRITE_CHUNK {
                self.write_out(st, &mut batch.out)?;
            }
        }
        Ok(())
    }

    /// Appends `out` (eviction lines) at the end of the log.
    fn write_out(&self, st: &mut State, out: &mut Vec<u8>) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        if let Err(e) = st.file.write_all(out) {
            let _ = st.file.set_len(st.end);
            return Err(ferr(&self.real, "append", e));
        }
        st.end += out.len() as u64;
        st.seen_len = st.end;
        out.clear();
        Ok(())
    }

    /// Makes the log's bounds `want` (a process opened it with bounds): a
    /// bounds line when they differ, then one eviction batch.
    pub(super) fn install_bounds(&self, st: &mut State, want: Bounds) -> Result<()> {
        self.locked_in(st, |st| self.install_bounds_locked(st, want))
    }

    /// [`FileCache::install_bounds`] under the write lock.
    fn install_bounds_locked(&self, st: &mut State, want: Bounds) -> Result<()> {
        if st.ix.bounds != Some(want) {
            self.cut_torn_tail(st)?;
            let mut out = Vec::new();
            encode_bounds(&mut out, &want);
            self.write_out(st, &mut out)?;
            st.file
                .sync_data()
                .map_err(|e| ferr(&self.real, "fsync", e))?;
            st.ix.bounds = Some(want);
            self.settle(st, true)?;
        }
        if let Err(e) = self.enforce(st, 0, Room::default()) {
            tracing::warn!("evicting after the bounds were set failed: {e}");
        }
        self.maybe_compact(st)
    }

    /// Brings the index in line with the log's bounds after it was read:
    /// expiries folded with the bounds' `max_age` (reloading when dated
    /// lines were folded with another), the eviction queue kept while
    /// bounded.
    pub(super) fn settle(&self, st: &mut State, locked: bool) -> Result<()> {
        for _ in 0..3 {
            let want = st.ix.bounds.as_ref().and_then(age_ms);
            if st.ix.fold_age == want {
                break;
            }
            if !st.ix.any_dated {
                st.ix.fold_age = want;
                break;
            }
            *st = State::load_folding(
                &self.real,
                &self.lock_path,
                (locked, self.hint_min.is_some()),
                !self.options.must_exist,
                Some(want),
            )?;
        }
        let bounded = Self::is_bounded(st);
        if bounded != st.ix.fifo.is_some() {
            st.ix.fifo = bounded.then(|| Fifo::from_index(&st.ix));
        }
        self.bounded
            .store(bounded, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Makes room after an append failed for lack of space: evicts for
    /// `room`, then compacts (frees the dead bytes when the copy fits).
    pub(super) fn room_on_full_disk(&self, st: &mut State, room: Room) {
        if let Err(e) = self.enforce(st, 0, room) {
            tracing::warn!("disk full: evicting failed: {e}");
        }
        if let Err(e) = self.compact_locked(st, super::compact::Omit::Nothing) {
            tracing::warn!("disk full: compacting failed: {e}");
        }
    }
}

/// The index points at a line that is not a set: the index is reread.
fn disagree() -> Error {
    Error::new(ErrorKind::Corrupt, "index and log disagree")
}

/// The tombstone of the set line `body` (without its newline) into `out`;
/// whether it counts as an eviction (an entry whose TTL had passed was gone
/// already; `max_age` is a bound, so an aged one counts).
fn tombstone(out: &mut Vec<u8>, scratch: &mut Vec<u8>, body: &[u8], loc: Loc, now: u64) -> Result<bool> {
    if !encode_del_of(out, scratch, body) {
        let f = line_fields(body).filter(|f| f.set).ok_or_else(disagree)?;
        encode_line(out, scratch, "del", &f.ns, &f.key, None, None);
    }
    // Only an entry with an expiry in the index has a TTL to look at.
    let ttl_passed = loc.expires.is_some()
        && line_fields(body)
            .and_then(|f| f.x)
            .is_some_and(|x| x <= now);
    Ok(!ttl_passed)
}

/// The oldest queued line that is still its key's live one: (slot,
/// location, queue item). Lines no longer live leave the queue.
fn head(ix: &mut Indexed) -> Option<(usize, Loc, Item)> {
    let fifo = ix.fifo.as_mut()?;
    while let Some(&item) = fifo.q.front() {
        if fifo.warmed == 0 {
            let group = fifo.q.range(..WARM.min(fifo.q.len()));
            ix.index.warm(group.map(|it| it.hash));
            fifo.warmed = WARM;
        }
        fifo.warmed -= 1;
        let at = item.offset();
        let found = ix
            .index
            .find(item.hash, item.ns_id(), |l| Ok::<_, ()>(l.offset == at))
            .ok()
            .flatten();
        if let Some(i) = found {
            return Some((i, ix.index.loc(i), item));
        }
        fifo.q.pop_front();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::codec::check_crc;
    use super::*;

    #[test]
    fn bounds_lines_round_trip_and_read_as_a_plain_delete() {
        let b = Bounds {
            max_bytes: Some(1 << 20),
            max_age: Some(std::time::Duration::from_secs(90)),
            ..Bounds::default()
        };
        let mut out = Vec::new();
        encode_bounds(&mut out, &b);
        let body = &out[..out.len() - 1];
        assert_eq!(check_crc(body), Ok(()));
        let f = line_fields(body).unwrap();
        assert!(!f.set && is_bounds_line(&f));
        assert_eq!(decode_bounds(body), Some(b));
        // What an older reader sees: a delete of a key nobody wrote.
        assert!(matches!(
            super::super::codec::decode_line(body),
            Ok(super::super::codec::Op::Del { .. })
        ));
    }

    #[test]
    fn the_policy_spares_a_read_entry_once_and_never_an_expired_one() {
        assert_eq!(choose(Policy::Clock, true, false, true), Action::Spare);
        assert_eq!(choose(Policy::Clock, true, false, false), Action::Evict);
        assert_eq!(choose(Policy::Clock, true, true, true), Action::Evict);
        assert_eq!(choose(Policy::Clock, false, false, true), Action::Evict);
        assert_eq!(choose(Policy::Fifo, true, false, true), Action::Evict);
    }

    #[test]
    fn the_queue_marks_by_offset_and_carries_bits() {
        let mut f = Fifo::default();
        for o in [10u64, 20, 30, 40] {
            f.push(o, o + 1, 2);
        }
        f.mark(30);
        f.mark(31); // no such line
        let mut bits = f.bits();
        let got: Vec<bool> = [10, 25, 30, 40].iter().map(|&o| bits(o)).collect();
        assert_eq!(got, [false, false, true, false]);
        let it = f.q[2];
        assert_eq!((it.offset(), it.ns_id(), it.hash), (30, 2, 31));
    }
}
