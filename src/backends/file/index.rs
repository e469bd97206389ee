//! The in-memory index: where each live (namespace, key)'s latest line is.
//!
//! Keys are kept only in the log (as Bitcask-like stores do): memory holds a
//! 64-bit hash of (namespace, key) and the packed location, 24 bytes a slot
//! in open-addressing tables (linear probing, at most 80% full, 64 of them
//! chosen by the hash's top bits, each growing on its own), about 40 bytes
//! a key. A hash match is confirmed by reading the line: the caller's
//! `is_it` check compares the namespace and key it holds.

use std::collections::HashMap;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::map::{AnonSlots, MappedSlots};

/// Offsets have this many bits (4 TiB logs), lengths the rest of a `u64`.
const OFFSET_BITS: u32 = 42;
const MAX_OFFSET: u64 = (1 << OFFSET_BITS) - 1;
/// A length that does not fit is this marker plus an entry in `big_lens`.
const LEN_ESCAPE: u64 = (1 << (64 - OFFSET_BITS)) - 1;
/// Expiries are kept to 48 bits of Unix ms (the year 10889): later saturates.
const EXPIRY_BITS: u32 = 48;
const MAX_EXPIRY: u64 = (1 << EXPIRY_BITS) - 1;
/// The namespace id of namespaces past the first 65,535 (checked by reading).
pub(super) const NS_OVERFLOW: u16 = u16::MAX;

/// Where a live entry's line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    /// Offset of the line in the log.
    pub offset: u64,
    /// Length of the line with its newline.
    pub len: u32,
    /// Expiry, Unix ms (saturated at the year 10889).
    pub expires: Option<u64>,
}

/// `hash == 0`: empty. `pos`: offset | len << 42. `meta`: namespace id << 48
/// | expiry (0: none). `repr(C)`: a hint file holds slots verbatim.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(super) struct Slot {
    hash: u64,
    pos: u64,
    meta: u64,
}

/// The table is split by a hash's top bits into this many tables
/// (segments) that grow on their own: a growth copies one segment, 1/64 of
/// the index, instead of the whole table (whose old and new copies, 1.5x
/// the new size, were the peak of memory while a log grew).
pub(super) const SEG_BITS: u32 = 6;
/// The number of segments.
pub(super) const SEGS: usize = 1 << SEG_BITS;
/// Slot ids are segment << `SLOT_BITS` | slot.
const SLOT_BITS: u32 = 40;
/// The smallest segment.
const MIN_SEG: usize = 8;

/// The hash of a namespace, the seed for its keys' hashes.
pub(super) fn ns_seed(ns: &str) -> u64 {
    xxh3_64(ns.as_bytes())
}

/// The hash of a key in the namespace whose seed is `seed` (never 0).
pub(super) fn key_hash(seed: u64, key: &str) -> u64 {
    xxh3_64_with_seed(key.as_bytes(), seed).max(1)
}

/// The segment of `hash` (its top bits; the slot comes from the low ones).
fn seg_of(hash: u64) -> usize {
    (hash >> (64 - SEG_BITS)) as usize
}

/// Segments of at least this many slots get a mapping of their own.
const ANON_SLOTS: usize = 4096;

/// A segment's slots: in memory (a large one in an anonymous mapping of
/// its own, so that the old copy's memory goes back to the system when it
/// grows), or in a mapped hint file (copy-on-write) until it first grows.
pub(super) enum Slots {
    Heap(Vec<Slot>),
    Anon(AnonSlots),
    Mapped(MappedSlots),
}

impl Slots {
    /// `cap` empty slots (`None`: no memory for them).
    fn empty(cap: usize) -> Option<Slots> {
        if cap >= ANON_SLOTS {
            return AnonSlots::new(cap).ok().map(Slots::Anon);
        }
        let mut v = Vec::new();
        v.try_reserve_exact(cap).ok()?;
        v.resize(cap, Slot::default());
        Some(Slots::Heap(v))
    }
}

impl std::ops::Deref for Slots {
    type Target = [Slot];
    fn deref(&self) -> &[Slot] {
        match self {
            Slots::Heap(v) => v,
            Slots::Anon(a) => a.get(),
            Slots::Mapped(m) => m.get(),
        }
    }
}

impl std::ops::DerefMut for Slots {
    fn deref_mut(&mut self) -> &mut [Slot] {
        match self {
            Slots::Heap(v) => v,
            Slots::Anon(a) => a.get_mut(),
            Slots::Mapped(m) => m.get_mut(),
        }
    }
}

/// One open-addressing table (a power of two of slots, at most 80% full).
struct Seg {
    slots: Slots,
    len: usize,
}

impl Seg {
    /// Empty, for about `n` keys (fewer slots when that much memory cannot
    /// be had: `n` is only an estimate).
    fn with_capacity(n: usize) -> Seg {
        let mut cap = (n.saturating_mul(5) / 4 + 1).max(MIN_SEG).next_power_of_two();
        let slots = loop {
            match Slots::empty(cap) {
                Some(s) => break s,
                None if cap > MIN_SEG => cap /= 2,
                None => break Slots::Heap(vec![Slot::default(); MIN_SEG]),
            }
        };
        Seg { slots, len: 0 }
    }

    fn place(&mut self, s: Slot) {
        let slots = &mut *self.slots;
        let mask = slots.len() - 1;
        let mut i = s.hash as usize & mask;
        while slots[i].hash != 0 {
            i = (i + 1) & mask;
        }
        slots[i] = s;
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let new = Slots::empty(cap).unwrap_or_else(|| Slots::Heap(vec![Slot::default(); cap]));
        let old = std::mem::replace(&mut self.slots, new);
        for &s in old.iter().filter(|s| s.hash != 0) {
            self.place(s);
        }
    }
}

/// The table.
pub(super) struct Index {
    segs: Vec<Seg>,
    len: usize,
    /// Lengths of lines too long for a slot (4 MiB and over), by offset.
    big_lens: HashMap<u64, u32>,
    ns_ids: HashMap<String, u16, xxhash_rust::xxh3::Xxh3DefaultBuilder>,
}

impl Default for Index {
    fn default() -> Self {
        Index::with_capacity(0)
    }
}

impl Index {
    /// A table for about `n` keys without growing (smaller, growing later,
    /// if that much memory cannot be had: `n` is only an estimate).
    pub fn with_capacity(n: usize) -> Self {
        let per = n.div_ceil(SEGS);
        Index {
            segs: (0..SEGS).map(|_| Seg::with_capacity(per)).collect(),
            len: 0,
            big_lens: HashMap::new(),
            ns_ids: Default::default(),
        }
    }

    /// An index from its parts (a hint file): each segment's slots and how
    /// many are live. `None` unless there are [`SEGS`] power-of-two
    /// segments, each with an empty slot.
    pub fn from_parts(
        segs: Vec<(Slots, usize)>,
        big_lens: HashMap<u64, u32>,
        ns: Vec<(String, u16)>,
    ) -> Option<Self> {
        if segs.len() != SEGS
            || segs.iter().any(|(s, n)| {
                !s.len().is_power_of_two() || *n >= s.len() || s.len() >= 1 << SLOT_BITS
            })
        {
            return None;
        }
        let len = segs.iter().map(|(_, n)| n).sum();
        Some(Index {
            segs: segs
                .into_iter()
                .map(|(slots, len)| Seg { slots, len })
                .collect(),
            len,
            big_lens,
            ns_ids: ns.into_iter().collect(),
        })
    }

    /// Each segment's slots and live count (to write a hint file).
    pub fn segments(&self) -> impl Iterator<Item = (&[Slot], usize)> + '_ {
        self.segs.iter().map(|s| (&*s.slots, s.len))
    }

    /// The long-line lengths, by offset.
    pub fn big_lens(&self) -> &HashMap<u64, u32> {
        &self.big_lens
    }

    /// The namespaces and their ids.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, u16)> + '_ {
        self.ns_ids.iter().map(|(n, &id)| (n.as_str(), id))
    }

    /// Live slots (expired ones included until a compaction drops them).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The id of `ns`, if any line of it was seen.
    pub fn ns_id(&self, ns: &str) -> Option<u16> {
        self.ns_ids
            .get(ns)
            .copied()
            .or_else(|| (self.ns_ids.len() >= NS_OVERFLOW as usize).then_some(NS_OVERFLOW))
    }

    /// The id of `ns`, assigning the next one.
    pub fn ns_id_or_insert(&mut self, ns: &str) -> u16 {
        if let Some(id) = self.ns_id(ns) {
            return id;
        }
        let id = self.ns_ids.len() as u16;
        self.ns_ids.insert(ns.to_string(), id);
        id
    }

    /// Forgets every entry (namespace ids too).
    pub fn clear(&mut self) {
        *self = Index::with_capacity(0);
    }

    fn loc_of(&self, s: &Slot) -> Loc {
        let offset = s.pos & MAX_OFFSET;
        let len = match s.pos >> OFFSET_BITS {
            LEN_ESCAPE => self.big_lens.get(&offset).copied().unwrap_or(0),
            l => l as u32,
        };
        let x = s.meta & MAX_EXPIRY;
        Loc {
            offset,
            len,
            expires: (x != 0).then_some(x),
        }
    }

    /// The slot whose id is `i`.
    fn slot(&self, i: usize) -> &Slot {
        &self.segs[i >> SLOT_BITS].slots[i & ((1 << SLOT_BITS) - 1)]
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot {
        &mut self.segs[i >> SLOT_BITS].slots[i & ((1 << SLOT_BITS) - 1)]
    }

    /// The location in slot `i`.
    pub fn loc(&self, i: usize) -> Loc {
        self.loc_of(self.slot(i))
    }

    /// Loads the first slot each of `hashes` probes, in one tight loop:
    /// walking the eviction queue visits slots in random order, and loads
    /// issued together wait for memory together instead of one by one.
    pub fn warm(&self, hashes: impl Iterator<Item = u64>) {
        let any = hashes.fold(0u64, |acc, h| {
            let slots = &*self.segs[seg_of(h)].slots;
            acc ^ slots[h as usize & (slots.len() - 1)].hash
        });
        std::hint::black_box(any);
    }

    /// The slot of the entry whose hash is `hash` in namespace `ns_id` and
    /// for which `is_it` (reading its line) says yes.
    pub fn find<E>(
        &self,
        hash: u64,
        ns_id: u16,
        mut is_it: impl FnMut(Loc) -> Result<bool, E>,
    ) -> Result<Option<usize>, E> {
        let seg = seg_of(hash);
        let slots = &*self.segs[seg].slots;
        let mask = slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let s = &slots[i];
            if s.hash == 0 {
                return Ok(None);
            }
            if s.hash == hash && (s.meta >> EXPIRY_BITS) as u16 == ns_id && is_it(self.loc_of(s))? {
                return Ok(Some(seg << SLOT_BITS | i));
            }
            i = (i + 1) & mask;
        }
    }

    fn pack(&mut self, ns_id: u16, loc: Loc) -> Option<(u64, u64)> {
        if loc.offset > MAX_OFFSET {
            return None;
        }
        let len = if u64::from(loc.len) >= LEN_ESCAPE {
            self.big_lens.insert(loc.offset, loc.len);
            LEN_ESCAPE
        } else {
            u64::from(loc.len)
        };
        let x = loc.expires.map_or(0, |x| x.clamp(1, MAX_EXPIRY));
        Some((
            loc.offset | len << OFFSET_BITS,
            u64::from(ns_id) << EXPIRY_BITS | x,
        ))
    }

    /// Points slot `i` at `loc`. `false`: the offset is past 4 TiB.
    pub fn set(&mut self, i: usize, loc: Loc) -> bool {
        let old = self.loc(i);
        self.big_lens.remove(&old.offset);
        let ns_id = (self.slot(i).meta >> EXPIRY_BITS) as u16;
        match self.pack(ns_id, loc) {
            Some((pos, meta)) => {
                let s = self.slot_mut(i);
                s.pos = pos;
                s.meta = meta;
                true
            }
            None => false,
        }
    }

    /// Moves slot `i`'s line to `offset` (compaction), its length kept; the
    /// caller installs the new long-line map. `false`: past 4 TiB.
    pub fn move_to(&mut self, i: usize, offset: u64) -> bool {
        if offset > MAX_OFFSET {
            return false;
        }
        let s = self.slot_mut(i);
        s.pos = (s.pos & !MAX_OFFSET) | offset;
        true
    }

    /// Adds an entry known not to be there. `false`: offset past 4 TiB.
    pub fn insert(&mut self, hash: u64, ns_id: u16, loc: Loc) -> bool {
        let Some((pos, meta)) = self.pack(ns_id, loc) else {
            return false;
        };
        let seg = &mut self.segs[seg_of(hash)];
        if (seg.len + 1) * 5 > seg.slots.len() * 4 {
            seg.grow();
        }
        seg.place(Slot { hash, pos, meta });
        seg.len += 1;
        self.len += 1;
        true
    }

    /// Removes slot `i` (backward-shift deletion keeps probe runs unbroken).
    pub fn remove(&mut self, i: usize) {
        let old = self.loc(i);
        self.big_lens.remove(&old.offset);
        let seg = &mut self.segs[i >> SLOT_BITS];
        let slots = &mut *seg.slots;
        let mask = slots.len() - 1;
        let mut i = i & mask;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = slots[j];
            if s.hash == 0 {
                break;
            }
            let home = s.hash as usize & mask;
            // `s` may move to `i` unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                slots[i] = s;
                i = j;
            }
        }
        slots[i] = Slot::default();
        seg.len -= 1;
        self.len -= 1;
    }

    /// Every live slot: (slot, namespace id, location).
    pub fn iter(&self) -> impl Iterator<Item = (usize, u16, Loc)> + '_ {
        self.segs.iter().enumerate().flat_map(move |(n, seg)| {
            seg.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.hash != 0)
                .map(move |(i, s)| (n << SLOT_BITS | i, (s.meta >> EXPIRY_BITS) as u16, self.loc_of(s)))
        })
    }

    /// Every live slot's hash, namespace id and location (the eviction
    /// queue is built from these).
    pub fn iter_hashed(&self) -> impl Iterator<Item = (u64, u16, Loc)> + '_ {
        self.segs.iter().flat_map(move |seg| {
            seg.slots
                .iter()
                .filter(|s| s.hash != 0)
                .map(move |s| (s.hash, (s.meta >> EXPIRY_BITS) as u16, self.loc_of(s)))
        })
    }

    /// Replaces the long-line lengths (after a compaction moved every line).
    pub fn set_big_lens(&mut self, big: HashMap<u64, u32>) {
        self.big_lens = big;
    }

    /// Whether `len` needs an entry in the long-line map.
    pub fn is_big(len: u32) -> bool {
        u64::from(len) >= LEN_ESCAPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(offset: u64, len: u32) -> Loc {
        Loc {
            offset,
            len,
            expires: None,
        }
    }

    #[test]
    fn collisions_probe_and_removal_keeps_runs() {
        let mut ix = Index::with_capacity(4);
        // Same hash for all: one probe run; `is_it` tells them apart by offset.
        for o in 0..10u64 {
            assert!(ix.insert(7, 0, loc(o, 1)));
        }
        assert_eq!(ix.len(), 10);
        let find = |ix: &Index, o: u64| ix.find(7, 0, |l| Ok::<_, ()>(l.offset == o)).unwrap();
        let i = find(&ix, 3).unwrap();
        ix.remove(i);
        assert!(find(&ix, 3).is_none());
        for o in (0..10).filter(|&o| o != 3) {
            assert_eq!(ix.loc(find(&ix, o).unwrap()).offset, o);
        }
        // Another namespace id never matches.
        assert!(ix.find(7, 1, |_| Ok::<_, ()>(true)).unwrap().is_none());
    }

    #[test]
    fn random_ops_with_few_distinct_hashes_match_a_model() {
        // Keys 0..500 share 7 hashes; a key's id is kept in `len` and told
        // apart by `is_it`, as reading the line does for real.
        let mut ix = Index::with_capacity(0);
        let mut model = std::collections::HashMap::new();
        let mut seed = 12345u64;
        for step in 0..20_000u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (seed >> 33) % 500;
            let h = key % 7 + 1;
            let found = ix
                .find(h, 0, |l| Ok::<_, ()>(u64::from(l.len) == key))
                .unwrap();
            assert_eq!(found.is_some(), model.contains_key(&key), "step {step}");
            if (seed >> 20).is_multiple_of(3) {
                if let Some(i) = found {
                    ix.remove(i);
                }
                model.remove(&key);
            } else {
                let l = loc(step, key as u32);
                match found {
                    Some(i) => assert!(ix.set(i, l)),
                    None => assert!(ix.insert(h, 0, l)),
                }
                model.insert(key, step);
            }
            assert_eq!(ix.len(), model.len());
        }
        for (key, offset) in &model {
            let i = ix
                .find(key % 7 + 1, 0, |l| Ok::<_, ()>(u64::from(l.len) == *key))
                .unwrap()
                .unwrap();
            assert_eq!(ix.loc(i).offset, *offset);
        }
    }

    #[test]
    fn packing_saturates_and_escapes() {
        let mut ix = Index::with_capacity(1);
        let big = Loc {
            offset: MAX_OFFSET,
            len: u32::MAX,
            expires: Some(u64::MAX),
        };
        assert!(ix.insert(1, 2, big));
        let i = ix.find(1, 2, |_| Ok::<_, ()>(true)).unwrap().unwrap();
        assert_eq!(
            ix.loc(i),
            Loc {
                expires: Some(MAX_EXPIRY),
                ..big
            }
        );
        assert!(!ix.insert(2, 0, loc(MAX_OFFSET + 1, 1)));
        assert!(ix.set(i, loc(5, 9)));
        assert_eq!(ix.loc(i), loc(5, 9));
        assert!(ix.big_lens.is_empty());
    }

    /// Growth doubles one segment at a time: the table never needs its
    /// old and new copies at once (the memory peak while a log grew).
    #[test]
    fn growth_copies_a_segment_not_the_table() {
        let slots = |ix: &Index| ix.segments().map(|(s, _)| s.len()).sum::<usize>();
        let mut ix = Index::with_capacity(0);
        let mut grown = 0;
        for k in 0..200_000u64 {
            let before = slots(&ix);
            let h = key_hash(ns_seed(""), &k.to_string());
            assert!(ix.insert(h, 0, loc(k, 1)));
            let added = slots(&ix) - before;
            if added > 0 {
                grown += 1;
                assert!(added * SEGS <= 2 * slots(&ix), "{added} slots added at once to {before}");
            }
            // Never more than 80% full, never under 20% past the start.
            assert!(ix.len() * 5 <= slots(&ix) * 4);
        }
        assert!(grown >= SEGS, "{grown} growths");
    }

    #[test]
    fn grows_and_keeps_everything() {
        let mut ix = Index::with_capacity(0);
        for k in 0..10_000u64 {
            let h = key_hash(ns_seed(""), &k.to_string());
            assert!(ix.insert(h, 0, loc(k, 1)));
        }
        for k in 0..10_000u64 {
            let h = key_hash(ns_seed(""), &k.to_string());
            assert!(
                ix.find(h, 0, |l| Ok::<_, ()>(l.offset == k))
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(ix.iter().count(), 10_000);
    }
}
