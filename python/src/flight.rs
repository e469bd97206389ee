//! Single-flight for `get_or_set`: of the callers that miss the same key at
//! the same time in one process, one (the leader) runs the factory and
//! stores its value; the others wait with the GIL released and get the
//! leader's value, or its exception.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

use bytes::Bytes;
use pyo3::prelude::*;

use crate::{ErrorClass, error_of};

/// One factory call in progress.
pub(crate) struct Flight {
    outcome: Mutex<Option<Result<Bytes, PyErr>>>,
    done: Condvar,
    leader: ThreadId,
}

/// What a caller that missed does.
pub(crate) enum Role {
    /// Run the factory, then [`Flights::finish`].
    Lead(Arc<Flight>),
    /// Wait for the leader with [`Flight::wait`].
    Wait(Arc<Flight>),
}

/// The flights of one cache handle, by key.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

impl Flights {
    /// Joins the flight for `key`, or starts one.
    pub(crate) fn join(&self, key: &str) -> PyResult<Role> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(key) {
            if f.leader == std::thread::current().id() {
                // Waiting would wait for ourselves forever.
                return Err(error_of(
                    ErrorClass::Error,
                    format!("get_or_set({key:?}): the factory called get_or_set for the same key"),
                ));
            }
            return Ok(Role::Wait(f.clone()));
        }
        let f = Arc::new(Flight {
            outcome: Mutex::new(None),
            done: Condvar::new(),
            leader: std::thread::current().id(),
        });
        map.insert(key.to_string(), f.clone());
        Ok(Role::Lead(f))
    }

    /// Publishes the leader's outcome to the waiters and ends the flight.
    pub(crate) fn finish(&self, py: Python<'_>, key: &str, f: &Flight, r: &PyResult<Bytes>) {
        let shared = match r {
            Ok(b) => Ok(b.clone()),
            Err(e) => Err(e.clone_ref(py)),
        };
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        *f.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared);
        f.done.notify_all();
    }
}

impl Flight {
    /// Waits (GIL released) for the leader's outcome.
    pub(crate) fn wait(&self, py: Python<'_>) -> PyResult<Bytes> {
        py.detach(|| {
            let mut g = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
            while g.is_none() {
                g = self.done.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        });
        match &*self.outcome.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(b)) => Ok(b.clone()),
            Some(Err(e)) => Err(e.clone_ref(py)),
            None => Err(error_of(ErrorClass::Error, "get_or_set: no outcome".into())),
        }
    }
}
