//! The open log and its index: loading, catching up with appended lines.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::bounds::{self, Fifo};
use super::codec::{HEADER, HEADER_V1, check_crc, line_fields};
use super::index::{Index, Loc, key_hash, ns_seed};
use crate::cache::Bounds;
use super::{BACKEND, WriteLock, ferr, files, hint};
use crate::error::{Error, ErrorKind, Result};

/// Bytes read at a time while rebuilding the index or compacting.
pub(super) const SCAN_CHUNK: usize = 4 << 20;

/// The index with its tallies.
#[derive(Default)]
pub(super) struct Indexed {
    pub index: Index,
    /// Bytes of the header and of the lines the index points at.
    pub live_bytes: u64,
    /// Damaged lines skipped.
    pub corrupt: u64,
    /// The log's bounds, from its last bounds line (`None`: it never had
    /// any).
    pub bounds: Option<Bounds>,
    /// The `max_age` (ms) folded into the expiries of dated lines (see
    /// [`Indexed::expiry`]); it must equal the bounds' (`settle` reloads
    /// when a bounds line changed it after dated lines were indexed).
    pub fold_age: Option<u64>,
    /// `fold_age` was fixed before loading: bounds lines do not change it.
    pub pinned: bool,
    /// A line with a write time was indexed.
    pub any_dated: bool,
    /// The eviction queue, in log order, while the log is bounded.
    pub fifo: Option<Fifo>,
}

/// The open log.
pub(super) struct State {
    pub file: File,
    /// (device, inode) of `file`: a compaction by another process changes it.
    pub ino: (u64, u64),
    /// The log is version 2 (its first line says so): values that are JSON
    /// text are written as `j` fields. A version-1 log gets only `v` and `b`
    /// lines (older unicache may share it) until compaction rewrites it.
    pub v2: bool,
    /// End of the last complete line applied.
    pub end: u64,
    /// File length last looked at (bytes past `end` are a torn tail).
    pub seen_len: u64,
    pub ix: Indexed,
    /// The index came from a hint file (`hint` module): read by tests only.
    #[cfg_attr(not(test), allow(dead_code))]
    pub from_hint: bool,
}

/// Where lines are read to confirm a hash match: `buf` holds the log's bytes
/// from offset `base` (lines in it need no read), the file the rest.
pub(super) struct Lines<'a> {
    pub file: &'a File,
    pub buf: &'a [u8],
    pub base: u64,
}

impl<'a> Lines<'a> {
    /// Lines read from the file only.
    pub fn file(file: &'a File) -> Self {
        Lines {
            file,
            buf: &[],
            base: 0,
        }
    }

    /// The line at `loc` without its newline.
    fn read<'s>(&'s self, loc: Loc, scratch: &'s mut Vec<u8>) -> io::Result<&'s [u8]> {
        let len = loc.len as usize;
        let line = match loc.offset.checked_sub(self.base) {
            Some(at) if (at as usize).saturating_add(len) <= self.buf.len() => {
                &self.buf[at as usize..at as usize + len]
            }
            _ => {
                scratch.resize(len, 0);
                self.file.read_exact_at(scratch, loc.offset)?;
                &scratch[..]
            }
        };
        Ok(line.strip_suffix(b"\n").unwrap_or(line))
    }

    /// Whether the line at `loc` is a set of (`ns`, `key`).
    pub fn is_key(&self, loc: Loc, ns: &str, key: &str, scratch: &mut Vec<u8>) -> io::Result<bool> {
        let body = self.read(loc, scratch)?;
        Ok(line_fields(body).is_some_and(|f| f.set && f.ns == ns && f.key == key))
    }
}

impl Indexed {
    /// Bytes of the live entries' lines (what `max_bytes` bounds): the
    /// header and bounds lines are not entries.
    pub fn used_bytes(&self) -> u64 {
        self.live_bytes.saturating_sub(HEADER.len() as u64)
    }

    /// The index's expiry of a line that expires at `x` and was written at
    /// `t`: with `max_age` in force also `t + max_age`, whichever is first,
    /// so every read treats an entry past its age as expired.
    pub fn expiry(&self, x: Option<u64>, t: Option<u64>) -> Option<u64> {
        match (self.fold_age, t) {
            (Some(age), Some(t)) => {
                let aged = t.saturating_add(age);
                Some(x.map_or(aged, |x| x.min(aged)))
            }
            _ => x,
        }
    }

    /// A bounds line: the log's bounds from now on.
    fn adopt(&mut self, b: Bounds) {
        self.bounds = Some(b);
        let age = bounds::age_ms(&b);
        // Nothing was folded with the old age yet: switch now (a compacted
        // log has its bounds line first, so one pass suffices).
        if !self.pinned && !self.any_dated {
            self.fold_age = age;
        }
    }

    /// Records a line of (`ns`, `key`): a set at `loc`, or a delete (`None`).
    pub fn record(
        &mut self,
        lines: &Lines,
        ns: &str,
        key: &str,
        loc: Option<Loc>,
    ) -> io::Result<()> {
        let ix = &mut self.index;
        let id = match loc {
            Some(_) => ix.ns_id_or_insert(ns),
            None => match ix.ns_id(ns) {
                Some(id) => id,
                None => return Ok(()),
            },
        };
        let h = key_hash(ns_seed(ns), key);
        let mut scratch = Vec::new();
        let found = ix.find(h, id, |l| lines.is_key(l, ns, key, &mut scratch))?;
        if let Some(i) = found {
            self.live_bytes = self.live_bytes.saturating_sub(u64::from(ix.loc(i).len));
        }
        let fits = match (found, loc) {
            (Some(i), Some(l)) => ix.set(i, l),
            (Some(i), None) => {
                ix.remove(i);
                true
            }
            (None, Some(l)) => ix.insert(h, id, l),
            (None, None) => true,
        };
        if !fits {
            return Err(io::Error::other("the log is larger than 4 TiB"));
        }
        if let Some(l) = loc {
            self.live_bytes += u64::from(l.len);
            if let Some(f) = &mut self.fifo {
                f.push(l.offset, h, id);
            }
        }
        Ok(())
    }

    /// Applies one complete line (without its newline) at `pos`, `n` bytes
    /// with its newline.
    fn apply_line(
        &mut self,
        lines: &Lines,
        body: &[u8],
        pos: u64,
        n: usize,
        path: &Path,
    ) -> io::Result<()> {
        let fields = check_crc(body).ok().and_then(|()| line_fields(body));
        let (Some(f), Ok(len)) = (fields, u32::try_from(n)) else {
            self.corrupt += 1;
            tracing::warn!(path = %path.display(), offset = pos, "skipping a damaged line");
            return Ok(());
        };
        if !f.set && bounds::is_bounds_line(&f) {
            if let Some(b) = bounds::decode_bounds(body) {
                self.adopt(b);
            }
            return Ok(());
        }
        self.any_dated |= f.t.is_some();
        let loc = Loc {
            offset: pos,
            len,
            expires: self.expiry(f.x, f.t),
        };
        self.record(lines, &f.ns, &f.key, f.set.then_some(loc))
    }
}

/// Calls `f(chunk, chunk_offset, start, len)` for each complete line between
/// `from` and `to` (`start..start+len` in `chunk`, newline excluded); returns
/// the end of the last complete line.
pub(super) fn for_each_line(
    file: &File,
    from: u64,
    to: u64,
    mut f: impl FnMut(&[u8], u64, usize, usize) -> Result<()>,
    path: &Path,
) -> Result<u64> {
    // Large reads, lines handled in place: no copy per line.
    let mut buf: Vec<u8> = Vec::with_capacity(SCAN_CHUNK + 4096);
    let mut pos = from; // file offset of buf[0]
    let mut read_at = from;
    loop {
        let want = SCAN_CHUNK.min(to.saturating_sub(read_at) as usize);
        if want == 0 {
            return Ok(pos);
        }
        let old = buf.len();
        buf.resize(old + want, 0);
        file.read_exact_at(&mut buf[old..], read_at)
            .map_err(|e| ferr(path, "read", e))?;
        read_at += want as u64;
        let mut start = 0usize;
        while let Some(nl) = find_newline(&buf[start..]) {
            f(&buf, pos - start as u64, start, nl)?;
            pos += nl as u64 + 1;
            start += nl + 1;
        }
        buf.drain(..start);
    }
}

/// The position of the first newline in `s`, eight bytes at a time (the
/// scan of a whole log at open and in compaction spends its time here).
fn find_newline(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = ONES * b'\n' as u64;
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for w in words.by_ref() {
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default()) ^ NL;
        // The lowest byte that is zero (a newline) sets the lowest flag.
        let zero = x.wrapping_sub(ONES) & !x & HIGH;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = words.remainder();
    rest.iter().position(|&b| b == b'\n').map(|p| at + p)
}

/// How many keys a log of `len` bytes may hold, from the first lines' length.
fn estimate_keys(file: &File, len: u64) -> usize {
    let mut sample = vec![0u8; (1 << 20).min(len.saturating_sub(HEADER.len() as u64)) as usize];
    if file
        .read_exact_at(&mut sample, HEADER.len() as u64)
        .is_err()
    {
        return 0;
    }
    let lines = sample.iter().filter(|&&b| b == b'\n').count().max(1);
    // Lines are at least 25 bytes (`{"c":N,"op":"del","k":""}`).
    let avg = (sample.len() / lines).max(25) as u64;
    (len / avg) as usize
}

impl State {
    /// Opens the log and builds the index. `locked`: the caller holds the
    /// write lock (taking it again would block); `hints`: the index may come
    /// from a valid hint file (`hint` module), the lines after it read;
    /// `create`: a missing log may be created.
    pub fn load(path: &Path, lock_path: &Path, (locked, hints): (bool, bool), create: bool) -> Result<State> {
        Self::load_folding(path, lock_path, (locked, hints), create, None)
    }

    /// [`State::load`] with the `max_age` (ms) to fold into expiries fixed
    /// beforehand (`Some`), whatever the log's bounds lines say, or taken
    /// from them (`None`).
    pub fn load_folding(
        path: &Path,
        lock_path: &Path,
        (locked, hints): (bool, bool),
        create: bool,
        pin: Option<Option<u64>>,
    ) -> Result<State> {
        let mut file = match files::open_private(path, true, create) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => {
                return Err(not_found(path));
            }
            Err(e) => return Err(ferr(path, "open", e)),
        };
        let meta = file.metadata().map_err(|e| ferr(path, "stat", e))?;
        if meta.is_dir() {
            return Err(Error::new(ErrorKind::Io, "is a directory")
                .with_backend(BACKEND)
                .with_context("path", path.display()));
        }
        let mut head = vec![0u8; HEADER.len()];
        let n = read_up_to(&mut file, &mut head).map_err(|e| ferr(path, "read", e))?;
        if n == 0 && !create {
            // Nothing is written for a command that must not create a store
            // (its header and lock would make an empty file a log).
            return Err(Error::new(ErrorKind::NotFound, "empty file: no file log here yet")
                .with_backend(BACKEND)
                .with_context("path", path.display()));
        }
        if n == 0 {
            write_header(&mut file, path, lock_path, locked)?;
            return Self::load_folding(path, lock_path, (locked, hints), create, pin);
        }
        let v2 = head[..n] == *HEADER;
        if !v2 && head[..n] != *HEADER_V1 {
            if let Some(v) = newer_version(&head[..n]) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "written by a newer unicache (file-log version {v}; this version \
                         reads versions 1 and 2): upgrade unicache to open it"
                    ),
                )
                .with_backend(BACKEND)
                .with_context("path", path.display()));
            }
            return Err(Error::new(
                ErrorKind::Corrupt,
                "not a unicache file log (first line differs); refusing to touch it",
            )
            .with_backend(BACKEND)
            .with_context("path", path.display()));
        }
        let hinted = hints
            .then(|| hint::load(path, lock_path, &file, &meta, pin))
            .flatten();
        if let Some((ix, covered)) = hinted {
            let mut st = State {
                ino: (meta.dev(), meta.ino()),
                v2,
                end: covered,
                seen_len: covered,
                ix,
                file,
                from_hint: true,
            };
            // The lines appended after the hint was written.
            st.scan(path, lock_path, locked)?;
            return Ok(st);
        }
        let mut st = State {
            ino: (meta.dev(), meta.ino()),
            v2,
            end: HEADER.len() as u64,
            seen_len: HEADER.len() as u64,
            ix: Indexed {
                index: Index::with_capacity(estimate_keys(&file, meta.len())),
                live_bytes: HEADER.len() as u64,
                fold_age: pin.flatten(),
                pinned: pin.is_some(),
                ..Indexed::default()
            },
            file,
            from_hint: false,
        };
        st.scan(path, lock_path, locked)?;
        Ok(st)
    }

    /// Applies complete lines from `end` to the end of the file.
    pub fn scan(&mut self, path: &Path, lock_path: &Path, locked: bool) -> Result<()> {
        let len = self
            .file
            .metadata()
            .map_err(|e| ferr(path, "stat", e))?
            .len();
        if len < self.end {
            // Shrunk without a new inode (another process cut a torn tail, or
            // the file was truncated): rebuild.
            let corrupt = self.ix.corrupt;
            *self = Self::load(path, lock_path, (locked, false), false)?;
            self.ix.corrupt = self.ix.corrupt.max(corrupt);
            return Ok(());
        }
        let (file, ix) = (&self.file, &mut self.ix);
        let end = for_each_line(
            file,
            self.end,
            len,
            |buf, base, start, n| {
                let lines = Lines { file, buf, base };
                let body = &buf[start..start + n];
                let pos = base + start as u64;
                ix.apply_line(&lines, body, pos, n + 1, path)
                    .map_err(|e| ferr(path, "read", e))
            },
            path,
        )?;
        // Whatever follows `end` is an incomplete (torn) last line.
        self.end = end;
        self.seen_len = len;
        Ok(())
    }
}

/// A log that must exist and does not.
pub(super) fn not_found(path: &Path) -> Error {
    Error::new(
        ErrorKind::NotFound,
        "no file log there (nothing was created)",
    )
    .with_backend(BACKEND)
    .with_context("path", path.display())
}

/// Writes the header into a new (or emptied) log, under the write lock so
/// concurrent creators race benignly.
fn write_header(file: &mut File, path: &Path, lock_path: &Path, locked: bool) -> Result<()> {
    let lock = if locked {
        None
    } else {
        let l = files::open_lock(lock_path, path).map_err(|e| ferr(lock_path, "open lock", e))?;
        l.lock().map_err(|e| ferr(lock_path, "lock", e))?;
        Some(WriteLock(l))
    };
    if file.metadata().map_err(|e| ferr(path, "stat", e))?.len() == 0 {
        file.write_all(HEADER)
            .map_err(|e| ferr(path, "write header", e))?;
        file.sync_all().map_err(|e| ferr(path, "sync", e))?;
    }
    drop(lock);
    Ok(())
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
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

/// The version a file log's first line names when it is another one than
/// this code's (`{"unicache":"file-log","version":N}`): a later unicache's
/// log, refused by name instead of as "not a file log".
fn newer_version(head: &[u8]) -> Option<u64> {
    let prefix = &HEADER[..HEADER.len() - 3]; // up to `"version":`
    let rest = head.strip_prefix(prefix)?;
    let digits: Vec<u8> = rest.iter().copied().take_while(u8::is_ascii_digit).collect();
    let v: u64 = std::str::from_utf8(&digits).ok()?.parse().ok()?;
    (v > 2).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::find_newline;

    #[test]
    fn newline_search_agrees_with_a_plain_scan() {
        let mut seed = 7u64;
        for len in 0..200usize {
            for _ in 0..20 {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Bytes near '\n' (0x0a) that a bit trick could confuse.
                        let near = [b'\n', 9, 11, 0x8a, 0, 0xff, b'a', 0x2a, 0x0b];
                        if seed.is_multiple_of(5) { b'\n' } else { near[1 + (seed % 8) as usize] }
                    })
                    .collect();
                let want = s.iter().position(|&b| b == b'\n');
                assert_eq!(find_newline(&s), want, "{s:?}");
            }
        }
    }
}
