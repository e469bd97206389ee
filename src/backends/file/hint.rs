//! The hint file `PATH.hint`: the index as it stood when the log was
//! `covered` bytes long, so that an open maps it instead of reading the log
//! (Bitcask writes hint files at merge for the same reason).
//!
//! **Never trusted.** An open uses a hint only when its header's checksum
//! and every segment's checksum (xxh3) hold, and it names the log as it is
//! now: the same file (device, inode), at least `covered` bytes long, the
//! same bytes at 16 places up to `covered` (a checksum of 15 pieces of
//! 4 KiB spread over the log and its last 64 KiB before `covered`) and,
//! when the lock file's shared record names this file, the same generation.
//! Anything else (no hint, a damaged, truncated or stale one, a log
//! compacted, replaced or cut since) and the log is read as before. Lines
//! after `covered` (appended since) are read as at any catch-up.
//!
//! **Written** whole to a temporary file renamed over `PATH.hint` (never
//! changed in place: processes that mapped the old one keep it), after a
//! compaction and when a handle closes, when it saves at least
//! `hint_min_bytes` of log reading (4 MiB by default) over the hint there.
//! No fsync: a hint torn by a power loss fails its checksums. Any process
//! sharing the log may write it: the index is the same for every namespace
//! and process (hashes are seeded by the namespace alone).
//!
//! **Layout** (native-endian `u64` words; a hint from a machine of the
//! other byte order fails the marker): magic `uchint01`, the marker, the
//! header's length, the header's checksum; then (checksummed) device,
//! inode, covered, generation, sample checksum, live bytes, damaged lines,
//! dated lines seen, folded age, bounds (present, bytes, entries, age ms),
//! entries, segments (and each one's slots, entries, checksum), long lines
//! (offset, length), namespaces (id, length, bytes padded to 8); zeros to
//! a 4 KiB boundary; then every segment's slots as they are in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::codec::HEADER;
use super::index::{Index, SEGS, Slot, Slots};
use super::map::{Mapping, as_bytes};
use super::store::{Indexed, State};
use super::{files, shared};
use crate::cache::Bounds;

/// A hint is written when it saves at least this many bytes of reading.
pub(super) const DEFAULT_MIN_BYTES: u64 = 4 << 20;
const MAGIC: &[u8; 8] = b"uchint01";
const ENDIAN: u64 = 0x0102_0304_0506_0708;
/// The slots start at a multiple of this.
const PAGE: usize = 4096;
/// `None` in a word.
const NONE: u64 = u64::MAX;
/// The fixed words before the checksummed header.
const FIXED: usize = 32;
/// Headers larger than this are damaged (65,535 namespaces of 1 KiB and
/// the long lines of a 4 TiB log fit).
const MAX_HEAD: u64 = 1 << 30;
/// Checksums of more slot bytes than this use two threads.
const PARALLEL_BYTES: usize = 16 << 20;

/// `PATH.hint`.
pub(super) fn path_of(real: &Path) -> PathBuf {
    files::with_suffix(real, ".hint")
}

/// The generation of the log `id` in the lock file's record, when the
/// record is whole and names it.
fn generation(lock_path: &Path, id: (u64, u64)) -> Option<u64> {
    let f = files::open_existing_lock(lock_path)?;
    shared::read(&f).filter(|r| !r.replacing() && r.id == id).map(|r| r.generation)
}

/// A checksum of the log's first `len` bytes at 16 places (see the module
/// doc): reads about 124 KiB however long the log.
fn sample(file: &File, len: u64) -> io::Result<u64> {
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 64 << 10];
    for k in 1..16u64 {
        let at = len / 16 * k;
        let n = 4096.min(len - at) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        h.update(&buf[..n]);
    }
    let n = (buf.len() as u64).min(len) as usize;
    file.read_exact_at(&mut buf[..n], len - n as u64)?;
    h.update(&buf[..n]);
    h.update(&len.to_le_bytes());
    Ok(h.digest())
}

fn opt(w: u64) -> Option<u64> {
    (w != NONE).then_some(w)
}

/// Reads words off a header.
struct Words<'a>(&'a [u8]);

impl Words<'_> {
    fn u64(&mut self) -> Option<u64> {
        let (w, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_ne_bytes(*w))
    }

    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let padded = n.checked_next_multiple_of(8)?;
        if padded > self.0.len() {
            return None;
        }
        let (b, rest) = self.0.split_at(padded);
        self.0 = rest;
        Some(&b[..n])
    }
}

/// A hint's header, checksum verified.
struct Head {
    len: usize,
    id: (u64, u64),
    covered: u64,
    generation: Option<u64>,
    sample: u64,
    live_bytes: u64,
    corrupt: u64,
    any_dated: bool,
    fold_age: Option<u64>,
    bounds: Option<Bounds>,
    entries: u64,
    /// (slots, entries, checksum) of each segment.
    segs: Vec<(u64, u64, u64)>,
    big: HashMap<u64, u32>,
    ns: Vec<(String, u16)>,
}

/// Reads and checks the header of the hint `f`.
fn read_head(f: &File) -> Result<Head, &'static str> {
    let size = f.metadata().map_err(|_| "cannot stat it")?.len();
    let mut fixed = [0u8; FIXED];
    f.read_exact_at(&mut fixed, 0).map_err(|_| "truncated")?;
    let mut w = Words(&fixed);
    let magic = w.bytes(8).ok_or("truncated")?;
    if magic != MAGIC || w.u64() != Some(ENDIAN) {
        return Err("not a hint of this version and byte order");
    }
    let len = w.u64().ok_or("truncated")?;
    let sum = w.u64().ok_or("truncated")?;
    if len < FIXED as u64 || len > MAX_HEAD || len > size || !len.is_multiple_of(PAGE as u64) {
        return Err("damaged header length");
    }
    let mut head = vec![0u8; len as usize];
    f.read_exact_at(&mut head, 0).map_err(|_| "truncated")?;
    if xxh3_64(&head[FIXED..]) != sum {
        return Err("header checksum mismatch");
    }
    parse(&head[FIXED..], len as usize).ok_or("damaged header")
}

fn parse(body: &[u8], len: usize) -> Option<Head> {
    let mut w = Words(body);
    let id = (w.u64()?, w.u64()?);
    let covered = w.u64()?;
    let generation = opt(w.u64()?);
    let sample = w.u64()?;
    let live_bytes = w.u64()?;
    let corrupt = w.u64()?;
    let any_dated = w.u64()? != 0;
    let fold_age = opt(w.u64()?);
    let has_bounds = w.u64()? != 0;
    let (max_bytes, max_entries, age) = (opt(w.u64()?), opt(w.u64()?), opt(w.u64()?));
    let bounds = has_bounds.then_some(Bounds {
        max_bytes,
        max_entries,
        max_age: age.map(Duration::from_millis),
    });
    let entries = w.u64()?;
    let nsegs = w.u64()?;
    if nsegs != SEGS as u64 {
        return None;
    }
    let segs = (0..SEGS)
        .map(|_| Some((w.u64()?, w.u64()?, w.u64()?)))
        .collect::<Option<Vec<_>>>()?;
    let nbig = w.u64()?;
    let mut big = HashMap::new();
    for _ in 0..nbig {
        big.insert(w.u64()?, u32::try_from(w.u64()?).ok()?);
    }
    let nns = w.u64()?;
    let mut ns = Vec::new();
    for _ in 0..nns {
        let id = u16::try_from(w.u64()?).ok()?;
        let n = usize::try_from(w.u64()?).ok()?;
        ns.push((String::from_utf8(w.bytes(n)?.to_vec()).ok()?, id));
    }
    Some(Head {
        len,
        id,
        covered,
        generation,
        sample,
        live_bytes,
        corrupt,
        any_dated,
        fold_age,
        bounds,
        entries,
        segs,
        big,
        ns,
    })
}

/// The bytes of the log a valid-looking hint at `hint` covers, if it names
/// the log `id` (to decide whether a new one is worth writing).
fn covered(hint: &Path, id: (u64, u64)) -> u64 {
    File::open(hint)
        .ok()
        .and_then(|f| read_head(&f).ok())
        .filter(|h| h.id == id)
        .map_or(0, |h| h.covered)
}

/// The index of the log `file` (`meta`, its metadata) from its hint, and
/// the length it covers; `None` (the reason logged) when there is no usable
/// one. `pin`: the `max_age` fixed by the opener (see `State::load_folding`).
pub(super) fn load(
    real: &Path,
    lock_path: &Path,
    file: &File,
    meta: &std::fs::Metadata,
    pin: Option<Option<u64>>,
) -> Option<(Indexed, u64)> {
    let path = path_of(real);
    let f = File::open(&path).ok()?;
    match try_load(f, lock_path, file, meta, pin) {
        Ok(r) => Some(r),
        Err(why) => {
            tracing::info!(path = %path.display(), "hint not used ({why}): reading the log");
            None
        }
    }
}

fn try_load(
    f: File,
    lock_path: &Path,
    file: &File,
    meta: &std::fs::Metadata,
    pin: Option<Option<u64>>,
) -> Result<(Indexed, u64), &'static str> {
    let head = read_head(&f)?;
    let id = (meta.dev(), meta.ino());
    if head.id != id {
        return Err("written for another log file");
    }
    if head.covered < HEADER.len() as u64 || head.covered > meta.len() {
        return Err("the log is shorter than the hint covers");
    }
    if let (Some(g), Some(now)) = (head.generation, generation(lock_path, id))
        && g != now
    {
        return Err("written for another generation of the log");
    }
    if sample(file, head.covered).ok() != Some(head.sample) {
        return Err("the log's bytes differ from those it was written for");
    }
    let fold_age = match pin {
        // Expiries folded with another max_age than the opener's.
        Some(p) if head.any_dated && p != head.fold_age => {
            return Err("expiries folded with another max_age");
        }
        Some(p) => p,
        None => head.fold_age,
    };
    let slot = std::mem::size_of::<Slot>() as u64;
    let total = head
        .segs
        .iter()
        .try_fold(0u64, |t, &(cap, _, _)| cap.checked_mul(slot).and_then(|b| t.checked_add(b)))
        .ok_or("damaged header")?;
    let size = f.metadata().map_err(|_| "cannot stat it")?.len();
    if Some(size) != total.checked_add(head.len as u64) {
        return Err("truncated or padded");
    }
    let map = Mapping::new(&f).map_err(|_| "cannot map it")?;
    let mut ranges = Vec::with_capacity(SEGS);
    let mut at = head.len;
    for &(cap, _, sum) in &head.segs {
        let n = (cap * slot) as usize;
        ranges.push((at, n, sum));
        at += n;
    }
    if !checksums_hold(map.bytes(), &ranges) {
        return Err("slot checksum mismatch");
    }
    let segs = ranges
        .iter()
        .zip(&head.segs)
        .map(|(&(at, _, _), &(cap, n, _))| {
            let slots = map.slots(at, usize::try_from(cap).ok()?)?;
            Some((Slots::Mapped(slots), usize::try_from(n).ok()?))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("damaged header")?;
    let index = Index::from_parts(segs, head.big, head.ns).ok_or("damaged header")?;
    if index.len() as u64 != head.entries {
        return Err("damaged header");
    }
    let ix = Indexed {
        index,
        live_bytes: head.live_bytes,
        corrupt: head.corrupt,
        bounds: head.bounds,
        fold_age,
        pinned: pin.is_some(),
        any_dated: head.any_dated,
        fifo: None,
    };
    Ok((ix, head.covered))
}

/// Whether every (offset, length, checksum) range of `bytes` checks out
/// (two threads for large ones: this is most of an open's time).
fn checksums_hold(bytes: &[u8], ranges: &[(usize, usize, u64)]) -> bool {
    let check = |rs: &[(usize, usize, u64)]| rs.iter().all(|&(at, n, sum)| xxh3_64(&bytes[at..at + n]) == sum);
    let total: usize = ranges.iter().map(|r| r.1).sum();
    if total < PARALLEL_BYTES {
        return check(ranges);
    }
    let (a, b) = ranges.split_at(ranges.len() / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| check(b));
        let mine = check(a);
        other.join().unwrap_or(false) && mine
    })
}

/// Writes a hint for the log as `st` has it, when it saves at least
/// `min_bytes` of reading over the one there and `st` is of the file at
/// `real` now. Returns whether one was written.
pub(super) fn save(real: &Path, lock_path: &Path, st: &State, min_bytes: u64) -> io::Result<bool> {
    let hint = path_of(real);
    let now = std::fs::metadata(real)?;
    if (now.dev(), now.ino()) != st.ino || st.end < HEADER.len() as u64 {
        return Ok(false);
    }
    let gain = st.end.saturating_sub(covered(&hint, st.ino));
    if gain == 0 || gain < min_bytes {
        return Ok(false);
    }
    let head = encode_head(lock_path, st)?;
    let (tmp, out) = files::create_temp(real)?;
    let written = (|| {
        files::keep_owner_and_mode(&st.file, &out, 0o666)?;
        let mut w = io::BufWriter::with_capacity(1 << 20, &out);
        w.write_all(&head)?;
        for (slots, _) in st.ix.index.segments() {
            w.write_all(as_bytes(slots))?;
        }
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, &hint)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| true)
}

/// The header of a hint of `st` (see the module doc).
fn encode_head(lock_path: &Path, st: &State) -> io::Result<Vec<u8>> {
    let ix = &st.ix;
    let mut b: Vec<u8> = Vec::with_capacity(PAGE);
    let put = |b: &mut Vec<u8>, w: u64| b.extend_from_slice(&w.to_ne_bytes());
    b.extend_from_slice(MAGIC);
    put(&mut b, ENDIAN);
    put(&mut b, 0); // length, below
    put(&mut b, 0); // checksum, below
    put(&mut b, st.ino.0);
    put(&mut b, st.ino.1);
    put(&mut b, st.end);
    put(&mut b, generation(lock_path, st.ino).unwrap_or(NONE));
    put(&mut b, sample(&st.file, st.end)?);
    put(&mut b, ix.live_bytes);
    put(&mut b, ix.corrupt);
    put(&mut b, u64::from(ix.any_dated));
    put(&mut b, ix.fold_age.unwrap_or(NONE));
    let bounds = ix.bounds.unwrap_or_default();
    put(&mut b, u64::from(ix.bounds.is_some()));
    put(&mut b, bounds.max_bytes.unwrap_or(NONE));
    put(&mut b, bounds.max_entries.unwrap_or(NONE));
    let age = bounds.max_age.map(|a| u64::try_from(a.as_millis()).unwrap_or(NONE - 1));
    put(&mut b, age.unwrap_or(NONE));
    put(&mut b, ix.index.len() as u64);
    put(&mut b, SEGS as u64);
    for (slots, n) in ix.index.segments() {
        put(&mut b, slots.len() as u64);
        put(&mut b, n as u64);
        put(&mut b, xxh3_64(as_bytes(slots)));
    }
    put(&mut b, ix.index.big_lens().len() as u64);
    for (&o, &l) in ix.index.big_lens() {
        put(&mut b, o);
        put(&mut b, u64::from(l));
    }
    let ns: Vec<(&str, u16)> = ix.index.namespaces().collect();
    put(&mut b, ns.len() as u64);
    for (name, id) in ns {
        put(&mut b, u64::from(id));
        put(&mut b, name.len() as u64);
        b.extend_from_slice(name.as_bytes());
        b.resize(b.len().next_multiple_of(8), 0);
    }
    b.resize(b.len().next_multiple_of(PAGE), 0);
    let len = b.len() as u64;
    b[16..24].copy_from_slice(&len.to_ne_bytes());
    let sum = xxh3_64(&b[FIXED..]);
    b[24..32].copy_from_slice(&sum.to_ne_bytes());
    Ok(b)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    use futures::FutureExt;

    use super::super::{FileCache, FileConfig, SyncPolicy, shared};
    use super::path_of;
    use crate::cache::{Cache, CacheOptions};

    /// A handle on `path` in namespace `ns` that writes a hint whenever
    /// it saves any reading (`Some(0)`), or none (`None`).
    fn open(path: &Path, ns: &str, hint: Option<u64>) -> FileCache {
        let config = FileConfig::new(path)
            .sync(SyncPolicy::Never)
            .hint_min_bytes(hint);
        FileCache::open(config, CacheOptions::new().namespace(ns)).unwrap()
    }

    /// Reads hints, writes none.
    const NEVER: Option<u64> = Some(u64::MAX);

    fn from_hint(c: &FileCache) -> bool {
        c.state.lock().unwrap().from_hint
    }

    fn write(c: &FileCache, keys: std::ops::Range<u32>, tag: &str) {
        let keys: Vec<String> = keys.map(|i| format!("k{i}")).collect();
        let vals: Vec<String> = keys.iter().map(|k| format!("{tag}-{k}")).collect();
        let e: Vec<(&str, &[u8])> = keys
            .iter()
            .zip(&vals)
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        c.set_many(&e, None).now_or_never().unwrap().unwrap();
    }

    /// Every key in `keys` reads `tag-KEY`, and `k999999` is absent.
    fn check(c: &FileCache, keys: std::ops::Range<u32>, tag: &str) {
        for i in keys {
            let k = format!("k{i}");
            let got = c.get(&k).now_or_never().unwrap().unwrap();
            assert_eq!(got.as_deref(), Some(format!("{tag}-{k}").as_bytes()), "{k}");
        }
        assert_eq!(c.get("k999999").now_or_never().unwrap().unwrap(), None);
    }

    /// A log of 3,000 keys in namespace "a" (a few deleted) and 10 in "b",
    /// with a hint.
    fn hinted_log(path: &Path) {
        let c = open(path, "a", Some(0));
        write(&c, 0..3000, "v");
        c.delete("k5").now_or_never().unwrap().unwrap();
        write(&open(path, "b", None), 0..10, "b");
        drop(c);
        assert!(path_of(path).exists());
    }

    #[test]
    fn a_hinted_open_is_the_log_and_reads_what_was_appended_after() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("h.log");
        hinted_log(&p);
        // Appended after the hint by a handle that writes none.
        let other = open(&p, "a", None);
        write(&other, 2900..3100, "w");
        drop(other);
        let c = open(&p, "a", Some(0));
        assert!(from_hint(&c));
        check(&c, 0..5, "v");
        check(&c, 6..2900, "v");
        check(&c, 2900..3100, "w");
        assert_eq!(c.get("k5").now_or_never().unwrap().unwrap(), None);
        let b = open(&p, "b", Some(u64::MAX));
        assert!(from_hint(&b));
        check(&b, 0..10, "b");
        assert_eq!(b.get("k20").now_or_never().unwrap().unwrap(), None);
        // It keeps working: writes, deletes, a compaction, then a new hint.
        write(&c, 3100..3200, "x");
        c.compact().now_or_never().unwrap().unwrap();
        check(&c, 3100..3200, "x");
        drop((b, c));
        let c = open(&p, "a", None);
        let h = open(&p, "a", Some(0));
        assert!(from_hint(&h));
        for i in (0..3200).step_by(7) {
            let k = format!("k{i}");
            let a = c.get(&k).now_or_never().unwrap().unwrap();
            assert_eq!(a, h.get(&k).now_or_never().unwrap().unwrap(), "{k}");
        }
        let (sa, sh) = (
            c.stats().now_or_never().unwrap().unwrap(),
            h.stats().now_or_never().unwrap().unwrap(),
        );
        assert_eq!(sa.entries, sh.entries);
        assert_eq!(sa.server, sh.server);
    }

    #[test]
    fn damaged_or_truncated_hints_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("h.log");
        hinted_log(&p);
        let good = std::fs::read(path_of(&p)).unwrap();
        assert!(from_hint(&open(&p, "a", NEVER)));
        let len = good.len();
        // Bytes in the fixed words, the header, the padding and the slots.
        let mut at: Vec<usize> = vec![0, 9, 17, 25, 33, 100, 200, 4000, 4096, 5000, len / 2, len - 1];
        at.extend((0..20).map(|i| 4096 + (len - 4096) * i / 20));
        for &i in &at {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            std::fs::write(path_of(&p), &bad).unwrap();
            let c = open(&p, "a", NEVER);
            assert!(!from_hint(&c), "byte {i} flipped: used");
            check(&c, 6..3000, "v");
        }
        for cut in [0, 8, 31, 32, 4095, 4096, len / 2, len - 8, len - 1] {
            std::fs::write(path_of(&p), &good[..cut]).unwrap();
            let c = open(&p, "a", NEVER);
            assert!(!from_hint(&c), "cut at {cut}: used");
            check(&c, 6..3000, "v");
        }
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 8]);
        std::fs::write(path_of(&p), &longer).unwrap();
        assert!(!from_hint(&open(&p, "a", NEVER)));
        std::fs::write(path_of(&p), &good).unwrap();
        assert!(from_hint(&open(&p, "a", NEVER)), "the good one again");
    }

    #[test]
    fn stale_hints_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("h.log");
        hinted_log(&p);
        let hint = std::fs::read(path_of(&p)).unwrap();
        // Another generation: compacted (a new file) without a new hint.
        let c = open(&p, "a", NEVER);
        write(&c, 0..3000, "y");
        c.compact().now_or_never().unwrap().unwrap();
        drop(c);
        let c = open(&p, "a", NEVER);
        assert!(!from_hint(&c));
        check(&c, 0..3000, "y");
        drop(c);

        // The same file, a record of another generation in the lock file.
        hinted_log(&d.path().join("g.log"));
        let g = d.path().join("g.log");
        assert!(from_hint(&open(&g, "a", NEVER)));
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(d.path().join("g.log.lock"))
            .unwrap();
        let mut r = shared::read(&lock).expect("a record");
        r.generation += 2;
        shared::write(&lock, &r).unwrap();
        assert!(!from_hint(&open(&g, "a", NEVER)));

        // A hint of another log.
        std::fs::write(path_of(&p), &hint).unwrap();
        assert!(!from_hint(&open(&p, "a", NEVER)));

        // The log cut below what the hint covers, then grown past it again
        // with other lines.
        let t = d.path().join("t.log");
        hinted_log(&t);
        let len = std::fs::metadata(&t).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&t).unwrap();
        f.set_len(len / 2).unwrap();
        let c = open(&t, "a", NEVER);
        assert!(!from_hint(&c));
        write(&c, 0..3000, "z");
        drop(c);
        assert!(std::fs::metadata(&t).unwrap().len() > len);
        let c = open(&t, "a", NEVER);
        assert!(!from_hint(&c));
        check(&c, 0..3000, "z");
        drop(c);

        // The same length, one byte of an early line changed in place.
        let u = d.path().join("u.log");
        hinted_log(&u);
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&u).unwrap();
        let len = std::fs::metadata(&u).unwrap().len();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, len / 16 + 10).unwrap();
        f.write_all_at(&[b[0] ^ 1], len / 16 + 10).unwrap();
        assert!(!from_hint(&open(&u, "a", NEVER)));
    }

    #[test]
    fn small_gains_write_no_hint() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("h.log");
        let c = open(&p, "a", Some(1 << 20));
        write(&c, 0..100, "v");
        drop(c);
        assert!(!path_of(&p).exists(), "a hint that saves under 1 MiB");
        let c = open(&p, "a", None);
        write(&c, 100..20_000, "v");
        drop(c);
        // A handle that must create nothing (read-only commands) writes none.
        let config = FileConfig::new(&p).hint_min_bytes(Some(0));
        let ro = FileCache::open(config, CacheOptions::new().namespace("a").must_exist(true)).unwrap();
        assert!(ro.get("k1").now_or_never().unwrap().unwrap().is_some());
        drop(ro);
        assert!(!path_of(&p).exists(), "written by a read-only handle");
        drop(open(&p, "a", Some(1 << 20)));
        assert!(path_of(&p).exists());
        let before = std::fs::metadata(path_of(&p)).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let c = open(&p, "a", Some(1 << 20));
        assert!(from_hint(&c));
        write(&c, 0..10, "w");
        drop(c);
        let after = std::fs::metadata(path_of(&p)).unwrap().modified().unwrap();
        assert_eq!(before, after, "rewritten for a few lines");
    }
}
