//! In-process single-flight: one factory run per missing key per handle.
//!
//! The first caller of a missing key becomes the leader and inserts a
//! [`Flight`]; later callers find it and wait on its `watch` channel. The
//! leader publishes the outcome through [`Slot::finish`]; when its [`Slot`]
//! is dropped first (its future cancelled, its factory panicking, a
//! front-end dropping its [`super::Leader`]) the flight is marked
//! abandoned and the waiters go round again: one of them leads.
//!
//! The slot owns what it needs (no borrow of the handle), so a leader can
//! move to another thread: the blocking facade runs its factory on the
//! caller's thread, the Python package in a coroutine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use super::Got;
use crate::error::Result;

/// What waiters see of a flight.
#[derive(Debug, Clone)]
pub(crate) enum State {
    /// The leader is still working.
    Running,
    /// The leader's result: the value (stored or not) or the shared error.
    Done(Result<Bytes>),
    /// A stale value served by fail-safe.
    Stale(Bytes),
    /// The leader went away without a result: take over.
    Abandoned,
}

/// One running factory for one key.
#[derive(Debug)]
struct Flight {
    tx: watch::Sender<State>,
}

/// The flights of one handle and its clones, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Arc<Mutex<HashMap<String, Arc<Flight>>>>,
}

/// A caller's part in a key's flight.
pub(crate) enum Role {
    /// Run the factory, then [`Slot::finish`].
    Leader(Slot),
    /// Wait for the leader with [`Waiter::wait`].
    Waiter(Waiter),
}

/// Held by the caller that runs the factory; dropping it unfinished
/// abandons the flight.
pub(crate) struct Slot {
    map: Arc<Mutex<HashMap<String, Arc<Flight>>>>,
    key: String,
    flight: Arc<Flight>,
    finished: bool,
}

/// A caller waiting for another's factory.
pub(crate) struct Waiter {
    rx: watch::Receiver<State>,
}

/// The map's lock. A panic cannot happen while it is held (only map
/// operations run under it), but never propagate poison anyway.
fn lock(map: &Mutex<HashMap<String, Arc<Flight>>>) -> MutexGuard<'_, HashMap<String, Arc<Flight>>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

impl Flights {
    /// Joins the running flight of `key`, or starts one.
    pub(crate) fn join(&self, key: &str) -> Role {
        let mut map = lock(&self.map);
        if let Some(f) = map.get(key) {
            return Role::Waiter(Waiter {
                rx: f.tx.subscribe(),
            });
        }
        let flight = Arc::new(Flight {
            tx: watch::Sender::new(State::Running),
        });
        map.insert(key.to_string(), flight.clone());
        Role::Leader(Slot {
            map: self.map.clone(),
            key: key.to_string(),
            flight,
            finished: false,
        })
    }

    /// Whether a flight of `key` is running.
    pub(crate) fn is_running(&self, key: &str) -> bool {
        lock(&self.map).contains_key(key)
    }

    /// How many flights are running (tests, stats).
    pub(crate) fn running(&self) -> usize {
        lock(&self.map).len()
    }
}

impl Slot {
    /// The flight's key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Publishes the outcome to every waiter and ends the flight; later
    /// callers read the cache (or start a new flight after an error).
    pub(crate) fn finish(mut self, outcome: &Result<Got>) {
        self.finished = true;
        self.end(match outcome {
            Ok(g) if g.stale => State::Stale(g.value.clone()),
            Ok(g) => State::Done(Ok(g.value.clone())),
            Err(e) => State::Done(Err(e.clone())),
        });
    }

    /// Takes the flight out of the map, then tells the waiters.
    fn end(&self, state: State) {
        {
            let mut map = lock(&self.map);
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        self.flight.tx.send_replace(state);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.finished {
            self.end(State::Abandoned);
        }
    }
}

impl Waiter {
    /// The leader's outcome: `Some(result)`, or `None` when it was
    /// abandoned and the caller should try to lead.
    pub(crate) async fn wait(mut self) -> Option<Result<Got>> {
        let state = match self.rx.wait_for(|s| !matches!(s, State::Running)).await {
            Ok(s) => s.clone(),
            Err(_) => State::Abandoned, // sender gone: the leader is gone
        };
        match state {
            State::Done(r) => Some(r.map(Got::fresh)),
            State::Stale(value) => Some(Ok(Got { value, stale: true })),
            State::Running | State::Abandoned => None,
        }
    }
}
