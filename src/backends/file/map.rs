//! The unsafe corner of the index: its slots seen as bytes (to write them
//! into a hint file), slots read from a hint file mapped into memory (to
//! open without copying them) and large segments in memory of their own
//! (anonymous mappings: freed to the system when a segment grows, where the
//! allocator may keep a freed block resident). `Slot` is `#[repr(C)]` of three `u64`s:
//! no padding, any bit pattern valid, alignment 8.
#![allow(unsafe_code)]

use std::fs::File;
use std::sync::Arc;

use super::index::Slot;

/// The slots as bytes (to write or checksum them).
pub(super) fn as_bytes(slots: &[Slot]) -> &[u8] {
    // SAFETY: `Slot` is plain data without padding (see the module doc);
    // the byte view covers exactly the same memory, borrowed as long.
    unsafe { std::slice::from_raw_parts(slots.as_ptr().cast::<u8>(), std::mem::size_of_val(slots)) }
}

/// A hint file mapped copy-on-write (`MAP_PRIVATE`): the index's writes go
/// to private pages, never to the file. Other processes only ever replace
/// a hint by renaming a new file over it, so the mapped file's bytes do not
/// change under us (a hint truncated in place by hand while mapped would be
/// a `SIGBUS`, as for any mapped file).
pub(super) struct Mapping {
    /// Start of the mapping, taken once from the `&mut` view.
    base: *mut u8,
    len: usize,
    _map: memmap2::MmapMut,
}

// SAFETY: the mapping is owned; the regions handed out by `slots` are
// disjoint and each is reached only through its `MappedSlots` (`&mut` for
// writes), so sharing the owner between threads is like sharing a `Vec`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `file` privately.
    pub fn new(file: &File) -> std::io::Result<Arc<Mapping>> {
        // SAFETY: copy-on-write mapping of a file that is only ever replaced
        // by rename (see the type's doc); checked by the caller before use.
        let mut map = unsafe { memmap2::MmapOptions::new().map_copy(file)? };
        let base = map.as_mut_ptr();
        Ok(Arc::new(Mapping {
            base,
            len: map.len(),
            _map: map,
        }))
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `base..base+len` is the live mapping, owned by `self`.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }

    /// `len` slots at byte offset `at` (a multiple of 8 within the
    /// mapping), owned from now on by the returned value alone.
    /// `None` when out of bounds or misaligned.
    pub fn slots(self: &Arc<Self>, at: usize, len: usize) -> Option<MappedSlots> {
        let bytes = len.checked_mul(std::mem::size_of::<Slot>())?;
        if !at.is_multiple_of(std::mem::align_of::<Slot>()) || at.checked_add(bytes)? > self.len {
            return None;
        }
        Some(MappedSlots {
            map: Arc::clone(self),
            at,
            len,
        })
    }
}

/// Slots living in a [`Mapping`]; callers never hand out two over the same
/// bytes (the hint loader takes each segment's range once).
pub(super) struct MappedSlots {
    map: Arc<Mapping>,
    at: usize,
    len: usize,
}

impl MappedSlots {
    pub fn get(&self) -> &[Slot] {
        // SAFETY: in bounds and aligned (checked in `Mapping::slots`), the
        // mapping lives as long as `self.map`, any bytes are valid slots.
        unsafe { std::slice::from_raw_parts(self.map.base.add(self.at).cast::<Slot>(), self.len) }
    }

    pub fn get_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `get`; the range is this value's alone (disjoint
        // from every other `MappedSlots`), the mapping writable (private).
        unsafe { std::slice::from_raw_parts_mut(self.map.base.add(self.at).cast::<Slot>(), self.len) }
    }
}

/// Zeroed (empty) slots in an anonymous mapping of their own.
pub(super) struct AnonSlots {
    map: memmap2::MmapMut,
    len: usize,
}

impl AnonSlots {
    /// `len` empty slots.
    pub fn new(len: usize) -> std::io::Result<AnonSlots> {
        let bytes = len
            .checked_mul(std::mem::size_of::<Slot>())
            .ok_or_else(|| std::io::Error::other("too many slots"))?;
        let map = memmap2::MmapOptions::new().len(bytes).map_anon()?;
        Ok(AnonSlots { map, len })
    }

    pub fn get(&self) -> &[Slot] {
        // SAFETY: the mapping is page-aligned, `len` slots long, zeroed
        // or written as slots, and any bytes are valid slots.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<Slot>(), self.len) }
    }

    pub fn get_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `get`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().cast::<Slot>(), self.len) }
    }
}
