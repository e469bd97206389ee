//! Compaction: the live, unexpired lines copied into a fresh file that
//! replaces the log (write, fsync, rename over the real file, fsync the
//! directory), then a hint file of the new log (`hint` module).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::bounds::{Fifo, Window, encode_bounds};
use super::codec::{HEADER, line_fields};
use super::index::{Index, key_hash, ns_seed};
use super::store::{State, for_each_line};
use super::{FileCache, ferr, files};
use crate::cache::now_millis;
use crate::error::{Error, ErrorKind, Result};

/// Points slot `i` at `pos` in the new file (`len`: its line's length,
/// recorded in `big` when long).
fn move_slot(index: &mut Index, big: &mut HashMap<u64, u32>, i: usize, pos: u64, len: u32) -> Result<()> {
    if !index.move_to(i, pos) {
        return Err(Error::new(ErrorKind::Io, "the log is larger than 4 TiB"));
    }
    if Index::is_big(len) {
        big.insert(pos, len);
    }
    Ok(())
}

/// What a compaction leaves out besides dead and expired lines.
pub(super) enum Omit<'a> {
    /// Nothing more.
    Nothing,
    /// One namespace's entries (`clear`).
    Namespace(&'a str),
    /// Everything (`clear_all`).
    All,
}

impl FileCache {
    /// Rewrites the log (see the module doc). The caller holds the write lock
    /// and has caught up with the file.
    pub(super) fn compact_locked(&self, st: &mut State, omit: Omit) -> Result<()> {
        files::remove_stale_temps(&self.real);
        let (tmp, out) =
            files::create_temp(&self.real).map_err(|e| ferr(&self.real, "create temp file", e))?;
        // The new file replaces the log: same owner, group and mode, not the
        // temp file's 0600 and this process's user.
        let copied = files::keep_owner_and_mode(&st.file, &out, 0o777)
            .map_err(|e| ferr(&tmp, "copy owner and mode", e))
            .and_then(|()| self.copy_live(st, &out, &tmp, omit));
        let result = copied.and_then(|(end, ctl, whole)| {
            out.sync_all().map_err(|e| ferr(&tmp, "fsync", e))?;
            self.install(st, &tmp, (end, ctl), whole)
        });
        drop(out);
        if result.is_ok()
            && let Some(min) = self.hint_min
        {
            // The old hint names the old file: the next open would read
            // the whole log.
            super::save_hint(&self.real, &self.lock_path, st, min);
        }
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
            // The index may be half moved to the new file: reload now (a
            // bounded write goes on after it), or before the next use.
            let reloaded = State::load(&self.real, &self.lock_path, (true, false), false)
                .map(|fresh| *st = fresh)
                .and_then(|()| self.settle(st, true));
            if reloaded.is_err() {
                st.ino = (0, 0);
            }
        }
        result
    }

    /// Copies the live lines into `out` after the header and the bounds
    /// line (the log's bounds survive it), moving the index (and the
    /// eviction queue, read bits kept) to their new offsets as it goes.
    /// Returns the new end, the bounds line's length and whether every index
    /// entry was found in the log (otherwise the new file is reloaded).
    fn copy_live(
        &self,
        st: &mut State,
        out: &File,
        tmp: &Path,
        omit: Omit,
    ) -> Result<(u64, u64, bool)> {
        let mut w = BufWriter::with_capacity(1 << 20, out);
        let mut head = HEADER.to_vec();
        if let Some(b) = &st.ix.bounds {
            encode_bounds(&mut head, b);
        }
        w.write_all(&head).map_err(|e| ferr(tmp, "write", e))?;
        let ctl = (head.len() - HEADER.len()) as u64;
        let pos = head.len() as u64;
        let old = st.ix.fifo.take();
        let (end, moved, fifo) = match (omit, old) {
            (Omit::All, old) => {
                st.ix.index.clear();
                (pos, 0, old.map(|_| Fifo::default()))
            }
            // A bounded log: its queue has every live line, in log order.
            (Omit::Nothing, Some(old)) => {
                let (end, moved, fifo) = self.copy_queued(st, &mut w, tmp, pos, old)?;
                (end, moved, Some(fifo))
            }
            (omit, old) => self.copy_scanned(st, &mut w, tmp, (pos, omit), old)?,
        };
        st.ix.fifo = fifo;
        w.flush().map_err(|e| ferr(tmp, "write", e))?;
        Ok((end, ctl, moved == st.ix.index.len()))
    }

    /// [`FileCache::copy_live`] by reading every line of the log: (new
    /// end, lines moved, the new queue when there was one).
    fn copy_scanned(
        &self,
        st: &mut State,
        w: &mut BufWriter<&File>,
        tmp: &Path,
        (mut pos, omit): (u64, Omit),
        old: Option<Fifo>,
    ) -> Result<(u64, usize, Option<Fifo>)> {
        let now = now_millis();
        let mut big = HashMap::new();
        let mut moved = 0usize;
        let mut fifo = old.as_ref().map(|_| Fifo::default());
        let mut read_bit = old.as_ref().map(|f| f.bits());
        let (file, index) = (&st.file, &mut st.ix.index);
        let each = |buf: &[u8], base: u64, start: usize, n: usize| -> Result<()> {
            let body = &buf[start..start + n];
            let at = base + start as u64;
            let Some(super::codec::Fields {
                set: true, ns, key, ..
            }) = line_fields(body)
            else {
                return Ok(());
            };
            let Some(id) = index.ns_id(&ns) else {
                return Ok(());
            };
            let h = key_hash(ns_seed(&ns), &key);
            // The slot that points at this very offset is this line's.
            let found = index.find(h, id, |l| Ok::<_, Error>(l.offset == at))?;
            let Some(i) = found else { return Ok(()) };
            let expired = index.loc(i).expires.is_some_and(|x| x <= now);
            if expired || matches!(omit, Omit::Namespace(o) if o == ns) {
                index.remove(i);
                return Ok(());
            }
            w.write_all(&buf[start..start + n + 1])
                .map_err(|e| ferr(tmp, "write", e))?;
            let len = n as u32 + 1;
            move_slot(index, &mut big, i, pos, len)?;
            if let (Some(f), Some(bit)) = (&mut fifo, &mut read_bit) {
                f.push_moved(pos, h, id, bit(at));
            }
            pos += u64::from(len);
            moved += 1;
            Ok(())
        };
        for_each_line(file, HEADER.len() as u64, st.end, each, &self.real)?;
        drop(read_bit);
        st.ix.index.set_big_lens(big);
        Ok((pos, moved, fifo))
    }

    /// [`FileCache::copy_live`] of a bounded log through its eviction
    /// queue: only the live lines are read (no parsing, no hashing).
    fn copy_queued(
        &self,
        st: &mut State,
        w: &mut BufWriter<&File>,
        tmp: &Path,
        mut pos: u64,
        old: Fifo,
    ) -> Result<(u64, usize, Fifo)> {
        let now = now_millis();
        let mut big = HashMap::new();
        let mut fifo = Fifo::default();
        let mut window = Window::new();
        let mut moved = 0usize;
        let index = &mut st.ix.index;
        for group in old.groups() {
            index.warm(group.iter().map(|g| g.1));
            for (at, hash, id, read) in group {
                let found = index.find(hash, id, |l| Ok::<_, ()>(l.offset == at));
                let Ok(Some(i)) = found else { continue };
                let loc = index.loc(i);
                if loc.expires.is_some_and(|x| x <= now) {
                    index.remove(i);
                    continue;
                }
                let line = window
                    .line(&st.file, loc, st.end)
                    .map_err(|e| ferr(&self.real, "read", e))?;
                w.write_all(line).map_err(|e| ferr(tmp, "write", e))?;
                move_slot(index, &mut big, i, pos, loc.len)?;
                fifo.push_moved(pos, hash, id, read);
                pos += u64::from(loc.len);
                moved += 1;
            }
        }
        st.ix.index.set_big_lens(big);
        Ok((pos, moved, fifo))
    }

    /// Renames `tmp` over the real file and switches to it; `end`: its
    /// length and its bounds line's.
    fn install(&self, st: &mut State, tmp: &Path, end: (u64, u64), whole: bool) -> Result<()> {
        let (end, ctl) = end;
        self.publish_replacing(st);
        std::fs::rename(tmp, &self.real).map_err(|e| ferr(&self.real, "rename", e))?;
        let dir = match self.real.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        if !whole {
            tracing::warn!(path = %self.real.display(), "index and log disagreed; reloading");
            *st = State::load(&self.real, &self.lock_path, (true, false), false)?;
            return self.settle(st, true);
        }
        let file = files::open_private(&self.real, true, false)
            .map_err(|e| ferr(&self.real, "open", e))?;
        let meta = file.metadata().map_err(|e| ferr(&self.real, "stat", e))?;
        use std::os::unix::fs::MetadataExt;
        st.file = file;
        st.ino = (meta.dev(), meta.ino());
        // Written with this version's first line (a version-1 log is
        // upgraded here: its old lines are valid version-2 lines).
        st.v2 = true;
        st.end = end;
        st.seen_len = end;
        // The bounds line is not an entry: dead bytes, as when appended.
        st.ix.live_bytes = end - ctl;
        st.ix.corrupt = 0;
        // The old file's space is freed once nothing holds it open.
        if let Some(d) = &self.dirty {
            d.mark(&st.file, st.ino);
        }
        Ok(())
    }
}
