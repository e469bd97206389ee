//! L1: a memory cache whose fills cannot resurrect a value an invalidation,
//! a local write or a flush overtook.
//!
//! Every key hashes to one of [`STRIPES`] generation counters; an
//! invalidation or local write bumps its stripe, a flush bumps the global
//! epoch. A reader takes a [`Ticket`] (both counters) before it asks L2 and
//! fills L1 only when neither moved meanwhile, checking again after the
//! insert, so a message that arrives while an L2 read is in flight is never
//! undone by that read. Each L1 entry carries, beside its value, its own
//! expiry (the L1 cap or L2's expiry, whichever comes first) and the L2
//! expiry it was read with, so L1 never outlives L2 and `get_with_ttl`
//! answers from L1 with L2's remaining TTL. Both sit in the map's slot,
//! not in the value's bytes: a hit reads no byte of the value, which
//! costs a cache miss per hit once the entries outgrow the CPU's caches.
//!
//! A hit checks the expiry against the coarse monotonic clock (on Linux
//! `CLOCK_MONOTONIC_COARSE`: a read of the vDSO page, no clock source),
//! which lags the precise one by about its resolution (4 ms at HZ=250; more
//! when ticks are missed, as under a VM's CPU steal). Only an entry within
//! twice that resolution of its expiry pays for the precise clock, so most
//! hits read no precise clock (that read was a third of a hit's cost) and
//! the boundary is exact unless the coarse clock falls further behind. The
//! map underneath (quick_cache, bounded as `memory://` is) keeps L1's
//! entries without a TTL of its own; an expired entry is removed when read
//! (if it is still the one read).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quick_cache::DefaultHashBuilder;
use quick_cache::sync::Cache as QuickCache;

use super::config::TierConfig;
use super::stats::{TierStats, add};
use crate::backends::memory::{EntryWeighter, MemoryConfig, WeighedValue, weighted_map};
use crate::cache::{INTERNAL_PREFIX, ValueTtl};

/// How long after the backplane task last ran on time L1 still serves
/// hits. A reader that was stopped or starved for longer reads L2 until a
/// PING round trip has drained its sockets. 30 ms: the staleness promise
/// is 50 ms (no read returns a value older than one whose write returned
/// 50 ms before the read began), and a message takes well under the other
/// 20 ms to be handled once it is in the socket of a running process.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) const FRESH: Duration = Duration::from_millis(30);

/// Generation counters; a power of two.
const STRIPES: usize = 4096;
/// Locks over the generation stripes (a divisor of `STRIPES`).
const LOCKS: usize = 64;
/// Bytes of an entry's two expiries, counted in its size against
/// `l1_max_bytes` (as when they were a header of the value).
const EXPIRIES: usize = 16;
const NEVER: u64 = u64::MAX;

/// The monotonic clocks, in microseconds from an arbitrary start.
mod clock {
    /// The precise clock.
    #[cfg(target_os = "linux")]
    pub fn precise() -> u64 {
        read(libc::CLOCK_MONOTONIC)
    }

    /// The coarse clock: behind [`precise`] by about its resolution.
    #[cfg(target_os = "linux")]
    pub fn coarse() -> u64 {
        read(libc::CLOCK_MONOTONIC_COARSE)
    }

    /// How far [`coarse`] is taken to be behind [`precise`]: twice its
    /// resolution (ticks can be missed), at least 2 ms.
    #[cfg(target_os = "linux")]
    pub fn lag() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        #[allow(unsafe_code)]
        let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0;
        let res = if ok { micros(&ts) } else { 10_000 };
        (2 * res).max(2_000)
    }

    #[cfg(target_os = "linux")]
    fn read(id: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the monotonic clocks
        // exist on every Linux this builds for.
        #[allow(unsafe_code)]
        unsafe {
            libc::clock_gettime(id, &mut ts)
        };
        micros(&ts)
    }

    #[cfg(target_os = "linux")]
    fn micros(ts: &libc::timespec) -> u64 {
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
    }

    /// Elsewhere: one clock, `Instant`.
    #[cfg(not(target_os = "linux"))]
    pub fn precise() -> u64 {
        use std::sync::OnceLock;
        use std::time::Instant;
        static BASE: OnceLock<Instant> = OnceLock::new();
        BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
    }

    #[cfg(not(target_os = "linux"))]
    pub fn coarse() -> u64 {
        precise()
    }

    #[cfg(not(target_os = "linux"))]
    pub fn lag() -> u64 {
        0
    }
}

/// The coarse clock (µs), for [`L1::alive_until`].
#[cfg(feature = "redis")]
pub(crate) fn coarse_now() -> u64 {
    clock::coarse()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(NEVER)
}

/// One L1 entry: the value and its expiries, both on the precise clock,
/// in microseconds (`NEVER`: none).
#[derive(Clone)]
struct Slot {
    value: Bytes,
    /// L1's own expiry.
    expiry: u64,
    /// L2's expiry as of the read (or write) that stored it.
    l2_deadline: u64,
}

impl WeighedValue for Slot {
    fn weighed_len(&self) -> usize {
        self.value.len() + EXPIRIES
    }
}

/// What a reader or writer saw before it went to L2.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    epoch: u64,
    stripe: usize,
    generation: u64,
    /// When the ticket was taken, on the precise clock (µs).
    start: u64,
}

/// The guarded L1 and the tier's counters.
#[derive(Debug)]
pub(crate) struct L1 {
    map: QuickCache<String, Slot, EntryWeighter, DefaultHashBuilder>,
    weighter: EntryWeighter,
    /// Hits served (a lookup that found an expired entry, or found one
    /// while hits were suspended, is none).
    hits: AtomicU64,
    cap: Duration,
    gens: Box<[AtomicU64]>,
    /// Held while a fill checks its ticket and stores, and while a write or
    /// an eviction bumps a generation and stores or removes: a fill can no
    /// longer land after a write that overtook it (it checked, then the
    /// write stored its value, then the fill overwrote it with the older
    /// one until its re-check removed it). Hits take no lock.
    locks: Box<[std::sync::Mutex<()>]>,
    epoch: AtomicU64,
    /// L1 may serve and take entries: no backplane, or its subscription is up.
    live: AtomicBool,
    /// Until when (coarse clock, µs) a hit may be served: the backplane
    /// task pushes it forward while it runs on time ([`L1::alive_until`]);
    /// `NEVER` without a backplane.
    serve_until: AtomicU64,
    /// Subtracted from L2's remaining TTL: L2's TTL resolution (µs), so an
    /// L2 that counts in whole seconds (memcached) is never outlived.
    grain: u64,
    /// How far the coarse clock is taken to lag (µs).
    lag: u64,
    pub stats: TierStats,
}

impl L1 {
    /// An empty L1; `live` false until a backplane is subscribed. `grain`
    /// is L2's TTL resolution (see [`super::ttl_granularity`]).
    pub fn new(cfg: &TierConfig, live: bool, grain: Duration) -> Self {
        let mut mc = MemoryConfig::new().capacity(cfg.capacity);
        if let Some(b) = cfg.max_bytes {
            mc = mc.max_bytes(b);
        }
        let (map, weighter) = weighted_map(&mc, Default::default());
        L1 {
            map,
            weighter,
            hits: AtomicU64::new(0),
            cap: cfg.l1_ttl,
            gens: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            locks: (0..LOCKS).map(|_| std::sync::Mutex::new(())).collect(),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(live),
            serve_until: AtomicU64::new(if live { NEVER } else { 0 }),
            grain: micros(grain),
            lag: clock::lag(),
            stats: TierStats::default(),
        }
    }

    fn stripe(key: &str) -> usize {
        xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize & (STRIPES - 1)
    }

    /// L1's TTL cap.
    #[cfg(feature = "redis")]
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Whether L1 is in use.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The L1 entry of `key`, when live and not expired; counted as a hit.
    fn slot(&self, key: &str) -> Option<Slot> {
        if !self.is_live() {
            return None;
        }
        let s = self.map.get(key)?;
        let now = clock::coarse();
        // The backplane task is behind (this process was stopped, or is
        // starved): invalidations may be queued unread, so L2 answers.
        if now >= self.serve_until.load(Ordering::Acquire) {
            return None;
        }
        if self.unexpired(s.expiry, now) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(s);
        }
        // Expired: gone (unless replaced since), and no hit.
        self.map.remove_if(key, |v| {
            v.expiry == s.expiry && v.value.as_ptr() == s.value.as_ptr()
        });
        None
    }

    /// Whether an entry expiring at `expiry` is before it: on the coarse
    /// clock when far from it, on the precise one near it.
    fn unexpired(&self, expiry: u64, coarse_now: u64) -> bool {
        coarse_now.saturating_add(self.lag) < expiry || clock::precise() < expiry
    }

    /// The backplane has handled every message sent before `at` (coarse
    /// clock, µs, from [`coarse_now`]): hits may be served until `at + fresh`.
    #[cfg(feature = "redis")]
    pub fn alive_until(&self, at: u64, fresh: Duration) {
        self.serve_until
            .fetch_max(at.saturating_add(micros(fresh)), Ordering::AcqRel);
    }

    /// Hits stop at once until the next [`L1::alive_until`].
    #[cfg(feature = "redis")]
    pub fn stale(&self) {
        self.serve_until.store(0, Ordering::Release);
    }

    /// The value L1 holds for `key`.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.slot(key).map(|s| s.value)
    }

    /// Reads L1 answered with a value.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The value and L2's remaining TTL, from L1.
    pub fn get_with_ttl(&self, key: &str) -> Option<ValueTtl> {
        let s = self.slot(key)?;
        let ttl = if s.l2_deadline == NEVER {
            None
        } else {
            let left = s.l2_deadline.checked_sub(clock::precise())?;
            Some(Duration::from_micros(left.max(1)))
        };
        Some(ValueTtl::new(s.value, ttl))
    }

    /// Whether L1 holds `key` (not counted as a read).
    pub fn contains(&self, key: &str) -> bool {
        let now = clock::coarse();
        self.is_live()
            && now < self.serve_until.load(Ordering::Acquire)
            && self
                .map
                .peek(key)
                .is_some_and(|s| self.unexpired(s.expiry, now))
    }

    /// Taken before a read or write goes to L2.
    pub fn ticket(&self, key: &str) -> Ticket {
        let stripe = Self::stripe(key);
        Ticket {
            epoch: self.epoch.load(Ordering::Acquire),
            stripe,
            generation: self.gens[stripe].load(Ordering::Acquire),
            start: clock::precise(),
        }
    }

    fn unchanged(&self, t: &Ticket) -> bool {
        self.epoch.load(Ordering::Acquire) == t.epoch
            && self.gens[t.stripe].load(Ordering::Acquire) == t.generation
    }

    /// Stores `value` that L2 holds for `l2_ttl` more (`None`: forever), as
    /// of `t.start`; `true` when it went in.
    fn put(&self, key: &str, t: &Ticket, value: &[u8], l2_ttl: Option<Duration>) -> bool {
        // Locks and leases are coordination state other holders change at
        // any moment: read from L2 every time, never from a copy that an
        // invalidation in flight has not reached yet.
        if key.starts_with(INTERNAL_PREFIX) {
            return false;
        }
        let now = clock::precise();
        let l2_deadline = l2_ttl.map_or(NEVER, |r| t.start.saturating_add(micros(r)));
        // L2 may drop it up to one TTL resolution before the TTL it reported.
        let l1_expiry = now
            .saturating_add(micros(self.cap))
            .min(l2_deadline.saturating_sub(self.grain));
        if l1_expiry <= now {
            return false;
        }
        // Too large for one shard: quick_cache would not keep it.
        if self.weighter.weigh(key.len(), value.len() + EXPIRIES) > self.map.shard_capacity() {
            return false;
        }
        // No TTL in the map: the slot's expiry is checked on reads, and
        // capacity evicts what is never read again.
        let slot = Slot {
            value: Bytes::copy_from_slice(value),
            expiry: l1_expiry,
            l2_deadline,
        };
        self.map.insert(key.to_string(), slot);
        true
    }

    /// Fills L1 after an L2 hit read under ticket `t`, unless the key was
    /// invalidated or L1 flushed since.
    pub fn fill(&self, key: &str, t: &Ticket, value: &[u8], l2_ttl: Option<Duration>) {
        let _held = self.lock(t.stripe);
        if !self.is_live() || !self.unchanged(t) {
            return;
        }
        if self.put(key, t, value, l2_ttl) {
            // An invalidation that raced the insert has bumped by now.
            if !self.unchanged(t) || !self.is_live() {
                self.remove(key);
            } else {
                add(&self.stats.backfills, 1);
            }
        }
    }

    /// After this process's write of `key` reached L2: stores the new value
    /// (`Some((value, l2_ttl))`) when no other write or invalidation of the
    /// key overlapped it, otherwise evicts.
    pub fn wrote(&self, key: &str, t: &Ticket, new: Option<(&[u8], Option<Duration>)>) {
        let _held = self.lock(t.stripe);
        let before = self.gens[t.stripe].fetch_add(1, Ordering::AcqRel);
        let alone = before == t.generation && self.epoch.load(Ordering::Acquire) == t.epoch;
        match new {
            Some((v, ttl)) if alone && self.is_live() => {
                if !self.put(key, t, v, ttl) {
                    self.remove(key);
                }
            }
            _ => self.remove(key),
        }
    }

    /// The lock over generation stripe `stripe` (a panic while held
    /// leaves nothing half-done that matters: take it anyway).
    fn lock(&self, stripe: usize) -> std::sync::MutexGuard<'_, ()> {
        self.locks[stripe % LOCKS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn remove(&self, key: &str) {
        self.map.remove(key);
    }

    /// Evicts `key` (another process changed it, or a write's outcome is unknown).
    pub fn evict(&self, key: &str) {
        let stripe = Self::stripe(key);
        let _held = self.lock(stripe);
        self.gens[stripe].fetch_add(1, Ordering::AcqRel);
        self.remove(key);
    }

    /// Empties L1; fills in flight are dropped.
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.map.clear();
    }

    /// Turns L1 on after a subscription is confirmed: flushed first, so
    /// nothing from before is served.
    #[cfg(feature = "redis")]
    pub fn go_live(&self) {
        self.flush();
        self.live.store(true, Ordering::Release);
        // Just subscribed: nothing sent since is unread yet.
        self.alive_until(clock::coarse(), FRESH);
    }

    /// The subscription is lost: L1 off and flushed (counted once per loss).
    #[cfg(feature = "redis")]
    pub fn lose(&self) {
        self.stale();
        if self.live.swap(false, Ordering::AcqRel) {
            add(&self.stats.l1_flushes, 1);
        }
        self.flush();
    }

    /// L1's size and bounds, for stats.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "entries": self.map.len(),
            "ttl_cap_ms": self.cap.as_millis() as u64,
            "endpoint": format!("memory://?capacity={}", self.weighter.capacity),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l1() -> L1 {
        L1::new(
            &TierConfig::new(100).l1_ttl(Duration::from_secs(60)),
            true,
            Duration::ZERO,
        )
    }

    #[test]
    fn a_fill_overtaken_by_an_invalidation_or_flush_is_dropped() {
        let c = l1();
        let t = c.ticket("k");
        c.evict("k"); // a message arrived while the L2 read was in flight
        c.fill("k", &t, b"old", None);
        assert_eq!(c.get("k"), None);
        let t = c.ticket("k");
        c.flush();
        c.fill("k", &t, b"old", None);
        assert_eq!(c.get("k"), None);
        let t = c.ticket("k");
        c.fill("k", &t, b"new", None);
        assert_eq!(c.get("k").as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn locks_and_leases_are_never_kept_in_l1() {
        let c = l1();
        for key in ["__unicache_lock:job", "__unicache_lease:k"] {
            let t = c.ticket(key);
            c.fill(key, &t, b"holder", None);
            assert_eq!(c.get(key), None, "{key} filled");
            let t = c.ticket(key);
            c.wrote(key, &t, Some((b"holder", None)));
            assert!(!c.contains(key), "{key} kept after a write");
        }
        assert!(crate::lock::LOCK_PREFIX.starts_with(INTERNAL_PREFIX));
        assert!(crate::readthrough::LEASE_PREFIX.starts_with(INTERNAL_PREFIX));
    }

    #[test]
    fn overlapping_local_writes_evict_instead_of_storing() {
        let c = l1();
        let (ta, tb) = (c.ticket("k"), c.ticket("k"));
        c.wrote("k", &ta, Some((b"a", None)));
        assert_eq!(c.get("k").as_deref(), Some(&b"a"[..]));
        c.wrote("k", &tb, Some((b"b", None)));
        assert_eq!(c.get("k"), None, "b's write overlapped a's");
    }

    #[test]
    fn l1_keeps_no_longer_than_l2_and_reports_l2s_ttl() {
        let c = l1();
        let t = c.ticket("k");
        c.fill("k", &t, b"v", Some(Duration::from_millis(50)));
        let ttl = c.get_with_ttl("k").unwrap().ttl.unwrap();
        assert!(ttl <= Duration::from_millis(50), "{ttl:?}");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("k"), None);
        // Nothing left of L2's TTL: not filled at all.
        let t = c.ticket("z");
        c.fill("z", &t, b"v", Some(Duration::ZERO));
        assert_eq!(c.get("z"), None);
    }

    #[test]
    fn the_cap_bounds_l1_and_an_expired_entry_is_no_hit() {
        let c = L1::new(
            &TierConfig::new(100).l1_ttl(Duration::from_millis(40)),
            true,
            Duration::ZERO,
        );
        let t = c.ticket("k");
        c.fill("k", &t, b"v", None);
        assert_eq!(c.get("k").as_deref(), Some(&b"v"[..]));
        assert_eq!(c.hits(), 1);
        std::thread::sleep(Duration::from_millis(45));
        assert_eq!(c.get("k"), None, "past the cap");
        assert!(!c.contains("k"));
        assert_eq!(c.hits(), 1, "the expired entry is not counted as a hit");
    }

    #[test]
    fn contains_is_not_a_read_and_a_cap_below_the_clocks_lag_still_works() {
        let c = l1();
        let t = c.ticket("k");
        c.fill("k", &t, b"v", None);
        assert!((0..100).all(|_| c.contains("k")));
        assert_eq!(c.hits(), 0, "contains counted as hits");
        // 3 ms: under the coarse clock's resolution here (4 ms).
        let c = L1::new(
            &TierConfig::new(100).l1_ttl(Duration::from_millis(3)),
            true,
            Duration::ZERO,
        );
        let t = c.ticket("k");
        c.fill("k", &t, b"v", None);
        assert_eq!(c.get("k").as_deref(), Some(&b"v"[..]), "not stored");
        std::thread::sleep(Duration::from_millis(4));
        assert_eq!(c.get("k"), None, "served past its 3 ms");
    }

    #[test]
    fn l1_keeps_one_ttl_resolution_less_than_l2_reports() {
        let c = L1::new(
            &TierConfig::new(100).l1_ttl(Duration::from_secs(60)),
            true,
            Duration::from_millis(100),
        );
        let t = c.ticket("k");
        c.fill("k", &t, b"v", Some(Duration::from_millis(150)));
        assert!(c.get("k").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("k"), None, "kept past L2's TTL minus its resolution");
        // Less than the resolution left: not kept at all.
        let t = c.ticket("z");
        c.fill("z", &t, b"v", Some(Duration::from_millis(90)));
        assert_eq!(c.get("z"), None);
    }

    #[test]
    #[cfg(feature = "redis")]
    fn hits_need_a_fresh_lease_from_the_backplane() {
        let c = l1();
        c.go_live();
        let t = c.ticket("k");
        c.fill("k", &t, b"v", None);
        assert!(c.get("k").is_some(), "a fresh lease after go_live");
        c.stale();
        assert_eq!(c.get("k"), None, "served without a lease");
        assert!(!c.contains("k"));
        c.alive_until(coarse_now(), Duration::from_millis(20));
        assert!(c.get("k").is_some(), "entry kept while the lease was out");
        std::thread::sleep(Duration::from_millis(20) + Duration::from_micros(c.lag));
        assert_eq!(c.get("k"), None, "served past the lease");
        // Only the two reads served count as hits, not the two refused
        // for want of a lease (the entry was there all along).
        assert_eq!(c.hits(), 2);
    }

    #[test]
    #[cfg(feature = "redis")]
    fn a_lost_subscription_turns_l1_off_until_live_again() {
        let c = l1();
        let t = c.ticket("k");
        c.fill("k", &t, b"v", None);
        c.lose();
        assert_eq!(c.get("k"), None);
        let t = c.ticket("k");
        c.fill("k", &t, b"v", None);
        assert!(!c.contains("k"), "filled while off");
        c.go_live();
        assert_eq!(c.stats.l1_flushes.load(Ordering::Relaxed), 1);
    }
}
