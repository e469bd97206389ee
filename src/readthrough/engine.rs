//! The `get_or_set` engine, in two steps every front-end calls:
//! [`Handle::begin`] (a hit, another caller's outcome, or this caller's
//! turn to fill the key: a [`Leader`]) and [`Leader::complete`] (store the
//! factory's value, or apply fail-safe to its failure, then wake the
//! waiters). Between the two the front-end runs its factory its own way:
//! [`Handle::get_or_set`] awaits a future under `factory_timeout`, the
//! blocking facade calls a closure on the caller's thread, the Python
//! package awaits a coroutine.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::flight::Slot;
use super::lease::{self, Acquired, Lease};
use super::{FactoryError, Fill, Got, Handle, Role, check_ttl};
use crate::error::Result;

/// What [`Handle::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// The answer: a hit, or the outcome of the caller that filled the key
    /// meanwhile (in this process, or in another one holding the lease).
    Done(Got),
    /// A miss this caller fills: run the factory, then
    /// [`Leader::complete`].
    Lead(Leader),
}

/// The caller that fills a missing key: it holds the key's single-flight
/// slot (concurrent callers of the handle and its clones wait for it) and,
/// with `lock=lease`, the cross-process lease.
///
/// [`Leader::complete`] (or [`Leader::timed_out`]) ends it. Dropping it
/// instead (a cancelled caller, a panicking factory) hands the key over:
/// one waiting caller becomes the leader and runs its own factory, and the
/// lease is deleted in the background on the runtime that took it. It is
/// `Send` and owns its state, so the factory may run on any thread.
#[must_use = "dropping a Leader hands the key over to a waiting caller"]
pub struct Leader {
    // Boxed: `Begin` stays small, and so does every hit's future.
    state: Box<LeaderState>,
}

struct LeaderState {
    handle: Handle,
    ttl: Option<Duration>,
    slot: Slot,
    lease: Option<Lease>,
    started: Instant,
}

impl fmt::Debug for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("key", &self.key())
            .field("lease", &self.state.lease.is_some())
            .finish()
    }
}

impl Handle {
    /// The first step of [`Handle::get_or_set`]: the cached value, the
    /// outcome of the caller filling the key now (its error too: errors
    /// reach every waiter), or [`Begin::Lead`]: this caller runs the
    /// factory and passes its result to [`Leader::complete`].
    ///
    /// Waiting happens here: for this handle's (and its clones') running
    /// flight of the key, taking over when its leader is dropped; then,
    /// with `lock=lease`, for another process's lease. A zero `ttl` is
    /// [`crate::ErrorKind::InvalidInput`] before anything runs.
    pub async fn begin(&self, key: &str, ttl: Option<Duration>) -> Result<Begin> {
        if let Some(value) = self.hit(key, ttl).await? {
            return Ok(Begin::Done(Got::fresh(value)));
        }
        // Boxed: the miss path's state (flight, lease, timers) would
        // otherwise make every hit's future that large too.
        Box::pin(self.begin_miss(key, ttl)).await
    }

    /// What [`Handle::begin`] checks first: a zero `ttl` is refused, then
    /// the cache's `get` (with fail-safe or refresh-ahead on, the
    /// [`super::Enveloped`] layer's: logically fresh values only). A
    /// front-end whose backend answers in process may poll it once (e.g.
    /// `now_or_never`) to serve a hit without a runtime, and call
    /// [`Handle::begin`] on a miss.
    pub async fn hit(&self, key: &str, ttl: Option<Duration>) -> Result<Option<Bytes>> {
        check_ttl(ttl)?;
        self.lookup(key).await
    }

    /// [`Handle::begin`] after a miss: wait for the key's flight, or lead it.
    pub(super) async fn begin_miss(&self, key: &str, ttl: Option<Duration>) -> Result<Begin> {
        loop {
            match self.join(key) {
                Role::Waiter(w) => {
                    if let Some(outcome) = w.wait().await {
                        return outcome.map(Begin::Done);
                    }
                    // The leader was dropped: go round and lead (or wait
                    // for whoever got there first).
                }
                Role::Leader(slot) => return self.lead(slot, ttl).await,
            }
        }
    }

    /// This caller holds the flight: check again (a flight that just ended
    /// may have stored the value), take the lease if asked. A value or an
    /// error found on the way ends the flight for every waiter.
    async fn lead(&self, slot: Slot, ttl: Option<Duration>) -> Result<Begin> {
        let outcome = match self.claim(slot.key()).await {
            Ok(Claim::Mine(lease)) => {
                self.count_factory_run();
                return Ok(Begin::Lead(Leader {
                    state: Box::new(LeaderState {
                        handle: self.clone(),
                        ttl,
                        slot,
                        lease,
                        started: Instant::now(),
                    }),
                }));
            }
            Ok(Claim::Found(v)) => Ok(Got::fresh(v)),
            Err(e) => Err(e),
        };
        slot.finish(&outcome);
        outcome.map(Begin::Done)
    }

    /// The value, if it is there now, or the right to compute it (with the
    /// lease, when leases are on and one was taken).
    async fn claim(&self, key: &str) -> Result<Claim> {
        if let Some(v) = self.lookup(key).await? {
            return Ok(Claim::Found(v));
        }
        if !self.shared.config.lease {
            return Ok(Claim::Mine(None));
        }
        Ok(match lease::acquire(self, key).await? {
            Acquired::Value(v) => Claim::Found(v),
            Acquired::Held(l) => Claim::Mine(Some(l)),
            Acquired::GaveUp => Claim::Mine(None),
        })
    }

    /// `get_or_set` with an async factory whose value `encode` turns into
    /// bytes: [`Handle::begin`], the factory, [`Leader::complete`].
    pub(super) async fn read_through<V, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        factory: F,
        encode: impl FnOnce(V) -> Result<Bytes>,
    ) -> Result<Got>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Fill<V>, FactoryError>>,
    {
        if let Some(value) = self.hit(key, ttl).await? {
            return Ok(Got::fresh(value));
        }
        // Boxed, as in `begin`; the factory's future is in there too.
        Box::pin(async move { self.begin_miss(key, ttl).await?.run(factory, encode).await }).await
    }
}

impl Begin {
    /// The answer, or the leader's: its factory run under
    /// `factory_timeout`, then completed.
    pub(super) async fn run<V, F, Fut>(
        self,
        factory: F,
        encode: impl FnOnce(V) -> Result<Bytes>,
    ) -> Result<Got>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Fill<V>, FactoryError>>,
    {
        match self {
            Begin::Done(got) => Ok(got),
            Begin::Lead(leader) => {
                let result = leader.state.handle.timed(factory()).await;
                leader.finish(result, encode).await
            }
        }
    }
}

/// What a caller holding the flight finds.
enum Claim {
    /// The value is there: no factory run.
    Found(Bytes),
    /// Run the factory (holding this lease, if any).
    Mine(Option<Lease>),
}

impl Leader {
    /// The key this leader fills.
    pub fn key(&self) -> &str {
        self.state.slot.key()
    }

    /// The handle's `factory_timeout`: a front-end that can stop its
    /// factory (`tokio::time::timeout`, `asyncio.wait_for`) stops it then
    /// and calls [`Leader::timed_out`].
    pub fn factory_timeout(&self) -> Option<Duration> {
        self.state.handle.shared.config.factory_timeout
    }

    /// Ends the leader's turn with its factory's result: stores a
    /// [`Fill::Cache`] value (TTL as asked of [`Handle::begin`], plus
    /// `ttl_jitter`), returns a [`Fill::DoNotCache`] one, or turns an error
    /// into [`crate::ErrorKind::Factory`] (with fail-safe on, a kept stale
    /// value is served instead: [`Got::stale`]); releases the lease, and
    /// gives every waiting caller the same outcome.
    ///
    /// A result that comes after `factory_timeout` (counted from
    /// [`Handle::begin`]'s answer: a factory that could not be stopped) is
    /// a [`crate::ErrorKind::Timeout`] and its value is not stored.
    pub async fn complete(self, result: std::result::Result<Fill, FactoryError>) -> Result<Got> {
        let late = self.factory_timeout();
        let result = match late.filter(|&limit| self.state.started.elapsed() > limit) {
            Some(limit) => Err(limit),
            None => Ok(result),
        };
        self.finish(result, Ok).await
    }

    /// Ends the leader's turn for a factory the front-end stopped at
    /// [`Leader::factory_timeout`]: every waiter gets the
    /// [`crate::ErrorKind::Timeout`] error (or, with fail-safe, the stale
    /// value), nothing is stored.
    pub async fn timed_out(self) -> Result<Got> {
        let limit = self.factory_timeout();
        let limit = limit.unwrap_or_else(|| self.state.started.elapsed());
        self.finish::<Bytes>(Err(limit), Ok).await
    }

    /// Stores (or fails over to a stale value), releases the lease, then
    /// wakes the waiters. Dropped midway, the slot and the lease hand over
    /// as a dropped [`Leader`] does.
    async fn finish<V>(
        self,
        result: std::result::Result<std::result::Result<Fill<V>, FactoryError>, Duration>,
        encode: impl FnOnce(V) -> Result<Bytes>,
    ) -> Result<Got> {
        let LeaderState {
            handle,
            ttl,
            slot,
            lease,
            ..
        } = *self.state;
        let key = slot.key();
        let outcome = match handle.settle(key, result, encode) {
            Ok(p) => handle.store(key, p, ttl).await.map(Got::fresh),
            Err(e) => handle.fail_safe(key, e).await,
        };
        if let Some(l) = lease {
            l.release().await;
        }
        slot.finish(&outcome);
        outcome
    }
}

// Front-ends move a leader to the factory's thread and back.
const _: fn() = || {
    fn owned_and_sendable<T: Send + Sync + 'static>() {}
    owned_and_sendable::<Begin>();
};
