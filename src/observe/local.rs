//! Per-thread counters for in-process caches.
//!
//! A memory:// get takes tens of nanoseconds; a shared atomic add per count
//! (a locked instruction, and a cache line that bounces between the cores
//! that use the cache) cost 1.4x of a bare get. Here each thread owns one
//! cache-line slot per cache and bumps it with a plain load and store;
//! [`Local::fold`] sums the slots and hands the difference since the last
//! fold to the facade's counters.
//!
//! Slot indexes are handed to threads from a process-wide pool and given back
//! when a thread exits, so a slot has one writer at a time; the pool's mutex
//! orders a dead thread's last store before its successor's first load.
//! Threads past [`SLOTS`] share one overflow slot with locked adds (still
//! exact, only slower).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Threads with a slot of their own; later ones share the overflow slot.
pub const SLOTS: usize = 64;

/// Field indexes in a slot.
pub(super) const HITS: usize = 0;
pub(super) const MISSES: usize = 1;
pub(super) const GET_ERRORS: usize = 2;
pub(super) const BYTES_READ: usize = 3;
pub(super) const BYTES_WRITTEN: usize = 4;
/// `set`, `delete`, `contains` calls: `SET + i`.
pub(super) const SET: usize = 5;
/// Gets on this slot's fast path (the sampling tick; not published).
pub(super) const TICK: usize = 8;
pub(super) const FIELDS: usize = 9;

/// One thread's counts for one cache, on cache lines of its own (128 bytes:
/// x86 prefetches lines in pairs).
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Slot([AtomicU64; FIELDS]);

impl Slot {
    /// Adds `n` to field `f`; only the slot's own thread may call it.
    /// Returns the new value.
    #[inline]
    pub(super) fn bump(&self, f: usize, n: u64) -> u64 {
        let c = &self.0[f];
        let v = c.load(Relaxed).wrapping_add(n);
        c.store(v, Relaxed);
        v
    }
}

/// The facade's side of a fold: gets the counts added since the last one.
pub(super) trait Sink: Send + Sync {
    /// `delta[i]` more of field `i`.
    fn add(&self, delta: &[u64; FIELDS]);
}

/// The per-thread counters of one in-process cache.
pub(super) struct Local {
    /// [`SLOTS`] owned slots, then the shared overflow slot (inline: one
    /// pointer less to follow on each count, no bounds checks).
    slots: [Slot; SLOTS + 1],
    /// What the facade has been given so far.
    published: Mutex<[u64; FIELDS]>,
    sink: Box<dyn Sink>,
}

/// The pool of slot indexes: the next never-used one, and those given back.
static NEXT: AtomicUsize = AtomicUsize::new(0);
static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// A thread's slot index and call tick; gives the index back at thread exit.
struct ThreadSlot {
    index: usize,
    tick: Cell<u32>,
}

impl ThreadSlot {
    fn acquire() -> Self {
        let reused = FREE.lock().ok().and_then(|mut f| f.pop());
        let index = reused.unwrap_or_else(|| NEXT.fetch_add(1, Relaxed).min(SLOTS));
        ThreadSlot {
            index,
            tick: Cell::new(0),
        }
    }
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        if self.index < SLOTS
            && let Ok(mut f) = FREE.lock()
        {
            f.push(self.index);
        }
    }
}

thread_local! {
    static THREAD: ThreadSlot = ThreadSlot::acquire();
}

/// This thread's slot (the overflow slot when it has none, or while the
/// thread is being torn down).
#[inline]
fn slot_index() -> usize {
    THREAD.try_with(|t| t.index).unwrap_or(SLOTS)
}

/// This thread's slot index, past [`SLOTS`] when it has none.
#[inline]
pub(super) fn thread_slot() -> usize {
    slot_index()
}

/// Counts this thread's calls (for sampling and periodic folds).
#[inline]
pub(super) fn tick() -> u32 {
    THREAD
        .try_with(|t| {
            let n = t.tick.get().wrapping_add(1);
            t.tick.set(n);
            n
        })
        .unwrap_or(1)
}

impl Local {
    pub(super) fn new(sink: Box<dyn Sink>) -> Arc<Self> {
        let local = Arc::new(Local {
            slots: std::array::from_fn(|_| Slot::default()),
            published: Mutex::new([0; FIELDS]),
            sink,
        });
        publisher::register(&local);
        local
    }

    /// Adds `a` to field `fa` and `b` to field `fb` of this thread's slot.
    #[inline]
    pub(super) fn add2(&self, fa: usize, a: u64, fb: usize, b: u64) {
        let i = slot_index();
        let s = &self.slots[i].0;
        if i < SLOTS {
            // Only this thread writes this slot: no locked add needed.
            s[fa].store(s[fa].load(Relaxed).wrapping_add(a), Relaxed);
            if b != 0 {
                s[fb].store(s[fb].load(Relaxed).wrapping_add(b), Relaxed);
            }
        } else {
            s[fa].fetch_add(a, Relaxed);
            if b != 0 {
                s[fb].fetch_add(b, Relaxed);
            }
        }
    }

    /// Slot `i`, which must be this thread's own (below [`SLOTS`]).
    #[inline]
    pub(super) fn own_slot(&self, i: usize) -> &Slot {
        &self.slots[i.min(SLOTS - 1)]
    }

    /// Adds `n` to field `f` of this thread's slot.
    #[inline]
    pub(super) fn add(&self, f: usize, n: u64) {
        self.add2(f, n, f, 0);
    }

    /// Hands the counts since the last fold to the facade. With `wait`
    /// false a fold already under way elsewhere is left to finish alone.
    pub(super) fn fold(&self, wait: bool) {
        let guard = if wait {
            self.published.lock().ok()
        } else {
            self.published.try_lock().ok()
        };
        let Some(mut published) = guard else { return };
        // Slots past the highest index ever handed out are still zero.
        let used = NEXT.load(Relaxed).min(SLOTS);
        let mut total = [0u64; FIELDS];
        for slot in self.slots[..used].iter().chain(&self.slots[SLOTS..]) {
            for (t, v) in total.iter_mut().zip(&slot.0) {
                *t = t.wrapping_add(v.load(Relaxed));
            }
        }
        let mut delta = [0u64; FIELDS];
        for i in 0..FIELDS {
            delta[i] = total[i].wrapping_sub(published[i]);
        }
        if delta.iter().any(|&d| d != 0) {
            self.sink.add(&delta);
            *published = total;
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.fold(true);
    }
}

/// Folds every live in-process cache once a second, so an idle cache's
/// figures reach a scrape too. One thread per process, started with the
/// first such cache and ending when none is left.
mod publisher {
    use super::*;

    /// The caches to fold, and whether the thread runs.
    static CACHES: Mutex<(Vec<Weak<Local>>, bool)> = Mutex::new((Vec::new(), false));
    const EVERY: Duration = Duration::from_secs(1);

    pub(super) fn register(local: &Arc<Local>) {
        let Ok(mut c) = CACHES.lock() else { return };
        c.0.push(Arc::downgrade(local));
        if !c.1 {
            let started = std::thread::Builder::new()
                .name("unicache-metrics".into())
                .spawn(run);
            // Without the thread, figures still reach the facade on
            // stats/flush/close/drop and every INLINE_PUBLISH_EVERY calls.
            c.1 = started.is_ok();
        }
    }

    fn run() {
        loop {
            std::thread::sleep(EVERY);
            let live: Vec<Arc<Local>> = {
                let Ok(mut c) = CACHES.lock() else { return };
                c.0.retain(|w| w.strong_count() > 0);
                if c.0.is_empty() {
                    c.1 = false;
                    return;
                }
                c.0.iter().filter_map(Weak::upgrade).collect()
            };
            for l in live {
                l.fold(false);
            }
        }
    }
}
