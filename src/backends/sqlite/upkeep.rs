//! Upkeep off the callers' path: WAL checkpoints and the purge of expired
//! rows run on a thread of this handle's, on a connection of its own, so
//! that no caller's `set` pays for them (they were the p99.9 of single
//! sets: a checkpoint copies and syncs up to a thousand pages).
//!
//! The thread starts with the handle's first write (a handle that only
//! reads starts none; a process forked from one that had it starts its
//! own) and stops when the handle is dropped. It looks at the
//! WAL's size every [`TICK`] and checkpoints (`PASSIVE`: it never waits for
//! writers or readers) once it holds [`CHECKPOINT_BYTES`]; it purges
//! expired rows after [`PURGE_EVERY`] writes, in transactions of at most
//! [`PURGE_CHUNK`] rows, so a writer of this or another process waits at
//! most one of them. The handle's own connection keeps SQLite's automatic
//! checkpoint at [`FALLBACK_CHECKPOINT_PAGES`] as a safety net (a process
//! forked after the thread started has no thread). Failures are warnings:
//! the writes they follow are committed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::sql_err;
use crate::error::Result;

/// How often the thread looks at the WAL.
const TICK: Duration = Duration::from_millis(50);
/// WAL size that starts a checkpoint (SQLite's own default is 1,000 pages).
const CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;
/// The automatic checkpoint left on the writing connection, in pages: ten
/// times the thread's threshold, so it only runs when the thread does not.
pub(super) const FALLBACK_CHECKPOINT_PAGES: i64 = 10_000;
/// What a WAL is cut back to once a checkpoint has emptied it (SQLite's
/// `journal_size_limit`): without it the file keeps its largest size ever
/// (a big transaction left a 50 MB WAL beside a 10 MB bounded cache).
pub(super) const WAL_SIZE_LIMIT: u64 = 2 * CHECKPOINT_BYTES;
/// Purge expired rows after this many writes.
const PURGE_EVERY: u64 = 10_000;
/// Rows per purge transaction.
const PURGE_CHUNK: i64 = 500;

/// Set while a process prepares to `fork()`: upkeep threads stay out of
/// SQLite until it is cleared (see [`prepare_fork`]).
static PAUSED: AtomicBool = AtomicBool::new(false);
/// Upkeep threads inside SQLite now.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Before `fork()`: waits until no upkeep thread of this process is inside
/// SQLite and keeps them out until [`after_fork`]. SQLite's own mutexes
/// held by another thread at the fork stay locked forever in the child,
/// whose next SQLite call (opening a file, say) then hangs; the upkeep
/// thread opening its connection right after a first write was such a
/// thread. (Callers' own SQLite calls on other threads are theirs to keep
/// out of a fork, as with any SQLite library.) Python registers both with
/// `os.register_at_fork`.
pub fn prepare_fork() {
    PAUSED.store(true, Ordering::SeqCst);
    while ACTIVE.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// After `fork()`, in the parent and in the child: upkeep threads may use
/// SQLite again.
pub fn after_fork() {
    PAUSED.store(false, Ordering::SeqCst);
}

/// Runs `f` (SQLite work) unless a fork is being prepared; `None` then.
fn outside_forks<T>(f: impl FnOnce() -> T) -> Option<T> {
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let r = (!PAUSED.load(Ordering::SeqCst)).then(f);
    ACTIVE.fetch_sub(1, Ordering::SeqCst);
    r
}

/// The upkeep thread of one handle.
pub(super) struct Upkeep {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The process that started the thread: a child forked since has no
    /// such thread (and must not join it).
    pid: u32,
}

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    writes: AtomicU64,
}

impl Upkeep {
    /// Starts the thread for the database at `path`.
    pub(super) fn start(path: &Path, busy_timeout: Duration) -> Upkeep {
        let shared = Arc::new(Shared {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            writes: AtomicU64::new(0),
        });
        let (s, path) = (shared.clone(), path.to_path_buf());
        let thread = std::thread::Builder::new()
            // Linux keeps 15 bytes of a thread name.
            .name("sqlite-upkeep".into())
            .spawn(move || run(&s, &path, busy_timeout))
            .map_err(|e| tracing::warn!("cannot start the SQLite upkeep thread: {e}"))
            .ok();
        Upkeep {
            shared,
            thread,
            pid: std::process::id(),
        }
    }

    /// Whether the thread runs in this process (not in a parent this one
    /// was forked from).
    pub(super) fn is_ours(&self) -> bool {
        self.pid == std::process::id()
    }

    /// Counts `n` committed writes; wakes the thread when a purge is due.
    pub(super) fn wrote(&self, n: u64) {
        if self.shared.writes.fetch_add(n, Ordering::Relaxed) + n >= PURGE_EVERY {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        if !self.is_ours() {
            // Forked: the thread is the parent's; its handle means nothing here.
            std::mem::forget(self.thread.take());
            return;
        }
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_err(path, e))?;
    // A purge on a bounded file fires the usage triggers as any delete.
    super::configure_writer(&c, path, busy_timeout)?;
    Ok(c)
}

fn run(shared: &Shared, path: &Path, busy_timeout: Duration) {
    let conn = loop {
        match outside_forks(|| open(path, busy_timeout)) {
            Some(Ok(c)) => break c,
            Some(Err(e)) => {
                tracing::warn!("SQLite upkeep: {e}; checkpoints stay on the writers");
                return;
            }
            None => std::thread::sleep(TICK),
        }
    };
    let wal = wal_path(path);
    loop {
        {
            let stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
            let (stop, _) = shared
                .wake
                .wait_timeout(stop, TICK)
                .unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
        }
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() >= CHECKPOINT_BYTES)
            && let Some(Err(e)) = outside_forks(|| {
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            })
        {
            tracing::warn!("SQLite checkpoint failed: {}", sql_err(path, e));
        }
        if shared.writes.load(Ordering::Relaxed) >= PURGE_EVERY {
            let go_on = || !*shared.stop.lock().unwrap_or_else(|p| p.into_inner());
            // Skipped while a fork is prepared: the next tick purges.
            if let Some(r) = outside_forks(|| purge_expired(&conn, path, &go_on)) {
                shared.writes.store(0, Ordering::Relaxed);
                if let Err(e) = r {
                    tracing::warn!("purging expired rows failed: {e}");
                }
            }
        }
    }
}

/// Deletes the expired rows, [`PURGE_CHUNK`] per statement (a
/// transaction of its own outside one), until none is left or `go_on`
/// says to stop; returns how many went. The handle's open, `compact` and
/// `flush` and the upkeep thread all purge through it.
pub(super) fn purge_expired(c: &Connection, path: &Path, go_on: &dyn Fn() -> bool) -> Result<u64> {
    let now = crate::cache::now_millis() as i64;
    // The chunk is written into the statement: a bound LIMIT makes SQLite
    // prepare it again at every run (see `bounds::OLDEST`).
    let sql = format!(
        "DELETE FROM cache WHERE (namespace, key) IN (SELECT namespace, key FROM cache \
         WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT {PURGE_CHUNK})"
    );
    let mut total = 0;
    loop {
        let n = c
            .prepare_cached(&sql)
            .and_then(|mut s| s.execute(params![now]))
            .map_err(|e| sql_err(path, e))? as u64;
        total += n;
        if n < PURGE_CHUNK as u64 || !go_on() {
            return Ok(total);
        }
    }
}

/// The WAL beside the database: `PATH-wal`.
fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}
