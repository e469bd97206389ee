//! In-process single-flight: one factory run per missing key per handle.
//!
//! The first caller of a missing key becomes the leader and inserts a
//! [`Flight`]; later callers find it and wait on its `watch` channel. The
//! leader publishes the outcome through [`Leader::finish`]; when it is
//! dropped first (its future cancelled, its factory panicking) the flight
//! is marked abandoned and the waiters go round again: one of them leads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

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
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

/// A caller's part in a key's flight.
pub(crate) enum Role<'a> {
    /// Run the factory, then [`Leader::finish`].
    Leader(Leader<'a>),
    /// Wait for the leader with [`Waiter::wait`].
    Waiter(Waiter),
}

/// Held by the caller that runs the factory; dropping it unfinished
/// abandons the flight.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    flight: Arc<Flight>,
    finished: bool,
}

/// A caller waiting for another's factory.
pub(crate) struct Waiter {
    rx: watch::Receiver<State>,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Flight>>> {
        // A panic cannot happen while the map is locked (only map
        // operations run under it), but never propagate poison anyway.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the running flight of `key`, or starts one.
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut map = self.lock();
        if let Some(f) = map.get(key) {
            return Role::Waiter(Waiter {
                rx: f.tx.subscribe(),
            });
        }
        let flight = Arc::new(Flight {
            tx: watch::Sender::new(State::Running),
        });
        map.insert(key.to_string(), flight.clone());
        Role::Leader(Leader {
            flights: self,
            key: key.to_string(),
            flight,
            finished: false,
        })
    }

    /// Whether a flight of `key` is running.
    pub(crate) fn is_running(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// How many flights are running (tests, stats).
    pub(crate) fn running(&self) -> usize {
        self.lock().len()
    }

    fn remove(&self, key: &str, flight: &Arc<Flight>) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }
}

impl Leader<'_> {
    /// Publishes the outcome to every waiter and ends the flight; later
    /// callers read the cache (or start a new flight after an error).
    pub(crate) fn finish(self, outcome: &Result<Bytes>) {
        self.finish_with(State::Done(outcome.clone()));
    }

    /// [`Leader::finish`], saying whether the value is a stale one.
    pub(crate) fn finish_served(self, outcome: &Result<(Bytes, bool)>) {
        self.finish_with(match outcome {
            Ok((v, true)) => State::Stale(v.clone()),
            Ok((v, false)) => State::Done(Ok(v.clone())),
            Err(e) => State::Done(Err(e.clone())),
        });
    }

    fn finish_with(mut self, state: State) {
        self.finished = true;
        self.flights.remove(&self.key, &self.flight);
        self.flight.tx.send_replace(state);
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.flights.remove(&self.key, &self.flight);
            self.flight.tx.send_replace(State::Abandoned);
        }
    }
}

impl Waiter {
    /// The leader's outcome: `Some(result)`, or `None` when it was
    /// abandoned and the caller should try to lead.
    pub(crate) async fn wait(self) -> Option<Result<Bytes>> {
        self.wait_served().await.map(|r| r.map(|(v, _)| v))
    }

    /// [`Waiter::wait`], with whether the value is a stale one.
    pub(crate) async fn wait_served(mut self) -> Option<Result<(Bytes, bool)>> {
        let state = match self.rx.wait_for(|s| !matches!(s, State::Running)).await {
            Ok(s) => s.clone(),
            Err(_) => State::Abandoned, // sender gone: the leader is gone
        };
        match state {
            State::Done(r) => Some(r.map(|v| (v, false))),
            State::Stale(v) => Some(Ok((v, true))),
            State::Running | State::Abandoned => None,
        }
    }
}
