//! The classic policies: FIFO, exact LRU, CLOCK and sampled LRU with batched
//! access times. Every per-key table is a dense vector indexed by key id
//! (the traces' ids are below their `universe`), in place of a hash map.

use std::collections::VecDeque;

use fastrand::Rng;

/// "No slot" / "no neighbour" in the dense tables.
pub const NIL: u32 = u32::MAX;

/// A cache under simulation: unit-size objects, read-through.
pub trait Policy {
    /// Serves request number `now` (0, 1, 2, ...) for `key`: true on a hit;
    /// on a miss the key is inserted, evicting another if the cache is full.
    fn access(&mut self, key: u32, now: u64) -> bool;
}

/// Evicts in insertion order; reads change nothing.
pub struct Fifo {
    capacity: usize,
    queue: VecDeque<u32>,
    resident: Vec<bool>,
}

impl Fifo {
    pub fn new(capacity: usize, universe: usize) -> Self {
        Self {
            capacity,
            queue: VecDeque::with_capacity(capacity),
            resident: vec![false; universe],
        }
    }
}

impl Policy for Fifo {
    fn access(&mut self, key: u32, _now: u64) -> bool {
        if self.resident[key as usize] {
            return true;
        }
        if self.queue.len() == self.capacity
            && let Some(victim) = self.queue.pop_front()
        {
            self.resident[victim as usize] = false;
        }
        self.queue.push_back(key);
        self.resident[key as usize] = true;
        false
    }
}

/// Exact LRU: a doubly linked list threaded through per-key `prev`/`next`
/// tables (a linked hash map with the hash replaced by the key id).
pub struct Lru {
    capacity: usize,
    len: usize,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next victim.
    tail: u32,
    prev: Vec<u32>,
    next: Vec<u32>,
    resident: Vec<bool>,
}

impl Lru {
    pub fn new(capacity: usize, universe: usize) -> Self {
        Self {
            capacity,
            len: 0,
            head: NIL,
            tail: NIL,
            prev: vec![NIL; universe],
            next: vec![NIL; universe],
            resident: vec![false; universe],
        }
    }

    fn unlink(&mut self, key: u32) {
        let (prev, next) = (self.prev[key as usize], self.next[key as usize]);
        match prev {
            NIL => self.head = next,
            p => self.next[p as usize] = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.prev[n as usize] = prev,
        }
    }

    fn push_front(&mut self, key: u32) {
        self.prev[key as usize] = NIL;
        self.next[key as usize] = self.head;
        match self.head {
            NIL => self.tail = key,
            h => self.prev[h as usize] = key,
        }
        self.head = key;
    }
}

impl Policy for Lru {
    fn access(&mut self, key: u32, _now: u64) -> bool {
        let hit = self.resident[key as usize];
        if hit {
            self.unlink(key);
        } else if self.len == self.capacity {
            let victim = self.tail;
            self.unlink(victim);
            self.resident[victim as usize] = false;
        } else {
            self.len += 1;
        }
        self.push_front(key);
        self.resident[key as usize] = true;
        hit
    }
}

/// CLOCK (second chance): a ring of slots with one reference bit each, set
/// by a hit; the hand clears set bits and evicts the first clear one.
pub struct Clock {
    capacity: usize,
    slots: Vec<u32>,
    referenced: Vec<bool>,
    slot_of: Vec<u32>,
    hand: usize,
}

impl Clock {
    pub fn new(capacity: usize, universe: usize) -> Self {
        Self {
            capacity,
            slots: Vec::with_capacity(capacity),
            referenced: Vec::with_capacity(capacity),
            slot_of: vec![NIL; universe],
            hand: 0,
        }
    }
}

impl Policy for Clock {
    fn access(&mut self, key: u32, _now: u64) -> bool {
        let slot = self.slot_of[key as usize];
        if slot != NIL {
            self.referenced[slot as usize] = true;
            return true;
        }
        if self.slots.len() < self.capacity {
            self.slot_of[key as usize] = self.slots.len() as u32;
            self.slots.push(key);
            self.referenced.push(false);
            return false;
        }
        while self.referenced[self.hand] {
            self.referenced[self.hand] = false;
            self.hand = (self.hand + 1) % self.capacity;
        }
        self.slot_of[self.slots[self.hand] as usize] = NIL;
        self.slots[self.hand] = key;
        self.slot_of[key as usize] = self.hand as u32;
        self.hand = (self.hand + 1) % self.capacity;
        false
    }
}

/// Sampled LRU as Redis and disk caches do it: the victim is the least
/// recently used of `samples` random residents, judged by the access times
/// the store has. An insert writes its time at once (it is a write anyway);
/// a hit's time is only queued, and the queue is written to the store every
/// `batch` requests (`batch` 1: at once), so the evictor does not see reads
/// of the current batch.
pub struct SampledLru {
    capacity: usize,
    samples: usize,
    batch: u64,
    slots: Vec<u32>,
    slot_of: Vec<u32>,
    stored_time: Vec<u64>,
    pending: Vec<(u32, u64)>,
    rng: Rng,
}

impl SampledLru {
    pub fn new(capacity: usize, universe: usize, samples: usize, batch: u64, seed: u64) -> Self {
        Self {
            capacity,
            samples,
            batch,
            slots: Vec::with_capacity(capacity),
            slot_of: vec![NIL; universe],
            stored_time: vec![0; universe],
            pending: Vec::new(),
            rng: Rng::with_seed(seed),
        }
    }

    /// Writes the queued access times; one evicted and inserted again since
    /// keeps its (later) insert time.
    fn flush(&mut self) {
        for (key, time) in self.pending.drain(..) {
            if self.slot_of[key as usize] != NIL {
                let stored = &mut self.stored_time[key as usize];
                *stored = (*stored).max(time);
            }
        }
    }

    fn evict(&mut self) {
        let mut victim = self.rng.usize(..self.slots.len());
        for _ in 1..self.samples {
            let candidate = self.rng.usize(..self.slots.len());
            let time = |slot: usize| self.stored_time[self.slots[slot] as usize];
            if time(candidate) < time(victim) {
                victim = candidate;
            }
        }
        self.slot_of[self.slots[victim] as usize] = NIL;
        self.slots.swap_remove(victim);
        if let Some(&moved) = self.slots.get(victim) {
            self.slot_of[moved as usize] = victim as u32;
        }
    }
}

impl Policy for SampledLru {
    fn access(&mut self, key: u32, now: u64) -> bool {
        if now.is_multiple_of(self.batch) {
            self.flush();
        }
        if self.slot_of[key as usize] != NIL {
            self.pending.push((key, now));
            return true;
        }
        if self.slots.len() == self.capacity {
            self.evict();
        }
        self.slot_of[key as usize] = self.slots.len() as u32;
        self.slots.push(key);
        self.stored_time[key as usize] = now;
        false
    }
}

/// The bounded SQLite store's policy: one FIFO in write order; an entry
/// with a non-zero count (0-3, one per hit) is moved to the back with its
/// count lowered instead of evicted. A hit is only noted by the process
/// that served it (each request goes to one of `processes` at random) and
/// reaches the store when that process next writes (its next miss), as
/// reads never write.
pub struct Reinsert {
    capacity: usize,
    queue: VecDeque<u32>,
    resident: Vec<bool>,
    count: Vec<u8>,
    pending: Vec<Vec<u32>>,
    rng: Rng,
}

impl Reinsert {
    pub fn new(capacity: usize, universe: usize, processes: usize, seed: u64) -> Self {
        Self {
            capacity,
            queue: VecDeque::with_capacity(capacity),
            resident: vec![false; universe],
            count: vec![0; universe],
            pending: vec![Vec::new(); processes.max(1)],
            rng: Rng::with_seed(seed),
        }
    }
}

impl Policy for Reinsert {
    fn access(&mut self, key: u32, _now: u64) -> bool {
        let p = self.rng.usize(..self.pending.len());
        if self.resident[key as usize] {
            self.pending[p].push(key);
            return true;
        }
        // One per key per flush, as the store's set of noted keys.
        let mut noted = std::mem::take(&mut self.pending[p]);
        noted.sort_unstable();
        noted.dedup();
        for k in noted {
            if self.resident[k as usize] {
                let c = &mut self.count[k as usize];
                *c = (*c + 1).min(3);
            }
        }
        while self.queue.len() >= self.capacity {
            let Some(v) = self.queue.pop_front() else {
                break;
            };
            if self.count[v as usize] > 0 {
                self.count[v as usize] -= 1;
                self.queue.push_back(v);
            } else {
                self.resident[v as usize] = false;
            }
        }
        self.queue.push_back(key);
        self.resident[key as usize] = true;
        self.count[key as usize] = 0;
        false
    }
}
