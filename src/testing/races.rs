//! `touch` racing `set` and `delete`: a `touch` that reads then writes
//! (not atomic) reverts acknowledged writes and resurrects deleted keys.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Shared;

/// The value `set` writes in round `i` of the race, and back.
fn version(i: u64) -> Vec<u8> {
    format!("v{i:06}").into_bytes()
}

fn version_of(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.strip_prefix('v')?.parse().ok()
}

/// `touch` racing `set` and `delete` on one key: after each acknowledged
/// `set` of version i a read returns version i or a newer one (or nothing,
/// a delete having run), never an older; after an acknowledged `delete`
/// that began once version j was acknowledged, a read never returns
/// version j or older. Tasks on one handle, then (where the store is
/// shared) the toucher and deleter on a second handle. `rounds` sets each.
pub async fn touch_races_set_and_delete(c: Shared, second: Option<Shared>, rounds: u64) {
    let mut bad = touch_race(c.clone(), c.clone(), "one handle", rounds).await;
    if let Some(s) = second {
        bad.extend(touch_race(c, s, "two handles", rounds).await);
    }
    assert!(
        bad.is_empty(),
        "{} stale reads, the first: {:#?}",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
}

/// What the tasks of one race share.
struct Race {
    label: &'static str,
    rounds: u64,
    /// The last version whose `set` returned.
    acked: AtomicU64,
    /// The writer has finished.
    done: AtomicBool,
    /// Stale reads seen.
    bad: Mutex<Vec<String>>,
    /// All four tasks start together.
    start: tokio::sync::Barrier,
}

const KEY: &str = "raced";
const TTL: Option<Duration> = Some(Duration::from_secs(60));

/// Sets v1..=rounds, reading back after each on every read path in turn.
async fn writer(r: Arc<Race>, w: Shared) {
    r.start.wait().await;
    let label = r.label;
    for i in 1..=r.rounds {
        let set = w.set(KEY, &version(i), TTL).await;
        set.unwrap_or_else(|e| panic!("{label}: set: {e}"));
        r.acked.store(i, SeqCst);
        let got = match i % 3 {
            0 => w.get(KEY).await,
            1 => w.get_with_ttl(KEY).await.map(|v| v.map(|v| v.value)),
            _ => w.get_many(&[KEY]).await.map(|mut v| v.pop().unwrap()),
        };
        let got = got.unwrap_or_else(|e| panic!("{label}: read: {e}"));
        if let Some(v) = got
            && version_of(&v).is_none_or(|j| j < i)
        {
            let msg = format!("{label}: read {v:?} after the set of v{i:06} returned");
            r.bad.lock().unwrap().push(msg);
        }
        tokio::task::yield_now().await;
    }
    r.done.store(true, SeqCst);
}

/// Touches until the writer is done: a touch that is a read then a write
/// has a narrow window.
async fn toucher(r: Arc<Race>, o: Shared) {
    r.start.wait().await;
    for _ in 0..r.rounds * 20 {
        if r.done.load(SeqCst) {
            break;
        }
        let t = o.touch(KEY, TTL).await;
        t.unwrap_or_else(|e| panic!("{}: touch: {e}", r.label));
        tokio::task::yield_now().await;
    }
}

/// Deletes and reads back until the writer is done.
async fn deleter(r: Arc<Race>, o: Shared) {
    r.start.wait().await;
    let label = r.label;
    for _ in 0..r.rounds * 20 {
        if r.done.load(SeqCst) {
            break;
        }
        let before = r.acked.load(SeqCst);
        let d = o.delete(KEY).await;
        d.unwrap_or_else(|e| panic!("{label}: delete: {e}"));
        let got = o.get(KEY).await;
        let got = got.unwrap_or_else(|e| panic!("{label}: read: {e}"));
        if let Some(v) = got
            && version_of(&v).is_none_or(|j| j <= before)
        {
            let msg =
                format!("{label}: read {v:?} after a delete that began once v{before:06} was set");
            r.bad.lock().unwrap().push(msg);
        }
        tokio::task::yield_now().await;
    }
}

/// One race: `w` sets and reads back, `o` touches (two tasks) and deletes
/// and reads; returns what went wrong, one line per stale read.
pub async fn touch_race(w: Shared, o: Shared, label: &'static str, rounds: u64) -> Vec<String> {
    let r = Arc::new(Race {
        label,
        rounds,
        acked: AtomicU64::new(0),
        done: AtomicBool::new(false),
        bad: Mutex::new(Vec::new()),
        // Each task yields after every step, so they interleave even where
        // every call finishes at once (memory://).
        start: tokio::sync::Barrier::new(4),
    });
    let tasks = [
        tokio::spawn(writer(r.clone(), w.clone())),
        tokio::spawn(toucher(r.clone(), o.clone())),
        tokio::spawn(toucher(r.clone(), o.clone())),
        tokio::spawn(deleter(r.clone(), o.clone())),
    ];
    for t in tasks {
        t.await.unwrap();
    }
    let ttl = TTL;
    // Quiet again: the last write is what the writer's handle reads.
    w.set(KEY, b"final", ttl).await.unwrap();
    assert!(
        o.touch(KEY, ttl).await.unwrap(),
        "{label}: touch after the race"
    );
    assert_eq!(w.get(KEY).await.unwrap().as_deref(), Some(&b"final"[..]));
    assert!(w.delete(KEY).await.unwrap());
    assert_eq!(w.get(KEY).await.unwrap(), None);
    std::mem::take(&mut *r.bad.lock().unwrap())
}
