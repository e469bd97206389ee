//! One server: its pooled connections and whether it is up.
//!
//! A server that refuses connections, drops them, or lets a request go
//! unanswered for the response timeout is marked down. While it is down its
//! calls fail at once, except one probe at a time, at most every
//! [`PROBE_EVERY`]; the
//! first call that gets an answer marks it up again. So a frozen server costs
//! one response timeout per probe, not one per call.

use std::sync::Arc;
use std::sync::Mutex as StdMutex;

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::BACKEND;
use super::pipeline::Pipeline;
use super::proto::{Failure, Reply};
use crate::error::{Error, ErrorKind, Result};

/// Connections kept per server.
const POOL: usize = 2;
/// After this long down, a server's errors stop being "transient".
const DEAD_AFTER: Duration = Duration::from_secs(5);
/// A down server is tried again at most this often.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Longest a probe in flight keeps others from probing (one whose caller
/// gave up never reports back).
const PROBE_HOLD_MAX: Duration = Duration::from_secs(30);

/// Why a server is marked down.
#[derive(Clone, Copy)]
enum Why {
    Unreachable,
    NotAnswering,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Unreachable => "unreachable",
            Why::NotAnswering => "not answering",
        }
    }
}

struct Down {
    since: Instant,
    /// When the next probe may start.
    next_try: Instant,
    why: Why,
}

/// The two timeouts of every call.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

pub(super) struct Server {
    pub addr: String,
    pool: Vec<Mutex<Option<Arc<Pipeline>>>>,
    next: AtomicUsize,
    down: StdMutex<Option<Down>>,
}

/// Runs `f` until `deadline` (None: no deadline); None when it ran out.
async fn until<F: std::future::Future>(deadline: Option<Instant>, f: F) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), f).await.ok(),
        None => Some(f.await),
    }
}

impl Server {
    pub fn new(addr: String) -> Self {
        Server {
            addr,
            pool: (0..POOL).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            down: StdMutex::new(None),
        }
    }

    fn err(&self, kind: ErrorKind, msg: String) -> Error {
        Error::new(kind, msg)
            .with_backend(BACKEND)
            .with_context("server", &self.addr)
    }

    /// The error for a failure while the server is down: `cause` (transient)
    /// at first, so the writer retries; a permanent "marked down" once it
    /// has been down [`DEAD_AFTER`].
    fn down_error(&self, cause: Error) -> Error {
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match &*down {
            Some(d) if d.since.elapsed() >= DEAD_AFTER => self
                .err(
                    ErrorKind::Backend,
                    format!(
                        "server marked down ({} for {} s)",
                        d.why.as_str(),
                        d.since.elapsed().as_secs()
                    ),
                )
                .set_source(cause),
            _ => cause,
        }
    }

    fn mark_down(&self, why: Why) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match &mut *down {
            Some(d) => {
                d.next_try = now + PROBE_EVERY;
                d.why = why;
            }
            None => {
                *down = Some(Down {
                    since: now,
                    next_try: now + PROBE_EVERY,
                    why,
                })
            }
        }
    }

    /// Whether the server is marked down now.
    pub fn is_down(&self) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn mark_up(&self) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_some() {
            *down = None;
        }
    }

    /// Whether a call may go to the server now: `Ok(false)` while it is up,
    /// `Ok(true)` when this call is the probe due (claimed here, so
    /// concurrent calls do not all wait on a frozen server); otherwise the
    /// fast failure.
    fn admit(&self, t: Timeouts) -> Result<bool> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let Some(d) = &mut *down else {
            return Ok(false);
        };
        let now = Instant::now();
        if now >= d.next_try {
            // Held until this probe reports (mark_up / mark_down).
            d.next_try = now + t.connect.saturating_add(t.response).min(PROBE_HOLD_MAX);
            return Ok(true);
        }
        let (kind, why) = match d.why {
            Why::Unreachable => (ErrorKind::Connection, "unreachable"),
            Why::NotAnswering => (ErrorKind::Timeout, "not answering"),
        };
        let secs = d.since.elapsed().as_secs();
        // Transient at first, so the writer retries; then permanent.
        let (kind, why) = if d.since.elapsed() >= DEAD_AFTER {
            (ErrorKind::Backend, format!("{why} for {secs} s"))
        } else {
            (kind, why.to_string())
        };
        Err(self.err(
            kind,
            format!(
                "server marked down ({why}); probed again at most every {} s",
                PROBE_EVERY.as_secs()
            ),
        ))
    }

    /// Runs one exchange on a pooled connection, (re)connecting as needed.
    /// The connection is shared: requests from other callers go out beside
    /// this one's, so the wait is for the server, not for each other. The
    /// reply takes at most the response timeout (a new connection gets the
    /// connect timeout first). A pooled connection found closed (restart,
    /// idle timeout) is replaced once and the request sent again.
    pub async fn exchange(
        &self,
        req: Bytes,
        last: Option<&'static str>,
        count: usize,
        t: Timeouts,
    ) -> Result<Vec<Reply>> {
        self.admit(t)?;
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let (conn, pooled) = self.conn(slot, t).await?;
        // A huge timeout means no deadline, not a panic.
        let mut got = until(
            crate::backends::timer_deadline(t.response),
            conn.exchange(req.clone(), last, count),
        )
        .await;
        if pooled && matches!(got, Some(Err(Failure::Io(_)))) {
            conn.close();
            let (conn, _) = self.conn(slot, t).await?;
            got = until(
                crate::backends::timer_deadline(t.response),
                conn.exchange(req, last, count),
            )
            .await;
            if !matches!(got, Some(Ok(_))) {
                conn.close();
            }
        } else if !matches!(got, Some(Ok(_))) {
            // A timeout or garbage: the stream can no longer be trusted to
            // answer (or a frozen server holds it); start afresh.
            conn.close();
        }
        self.outcome(got, t.response)
    }

    /// Slot `slot`'s live connection, connecting one if it has none; `true`
    /// when it was already there.
    async fn conn(&self, slot: usize, t: Timeouts) -> Result<(Arc<Pipeline>, bool)> {
        let mut guard = self.pool[slot].lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_dead()) {
            return Ok((c.clone(), true));
        }
        let c = Arc::new(self.connect(t.connect).await?);
        *guard = Some(c.clone());
        Ok((c, false))
    }


    /// What an exchange's result means for the call and the server's state.
    /// On any failure the caller drops the connection: after a timeout a
    /// late reply would be read as the next request's, after garbage the
    /// stream cannot be trusted.
    fn outcome(
        &self,
        got: Option<std::result::Result<Vec<Reply>, Failure>>,
        timeout: Duration,
    ) -> Result<Vec<Reply>> {
        match got {
            Some(Ok(replies)) => {
                self.mark_up();
                Ok(replies)
            }
            Some(Err(Failure::Io(e))) => {
                self.mark_down(Why::Unreachable);
                let e = Error::from(e)
                    .with_backend(BACKEND)
                    .with_context("server", &self.addr);
                Err(self.down_error(e))
            }
            Some(Err(Failure::Garbage(g))) => {
                // It answers, if not in memcached's protocol: not down.
                self.mark_up();
                Err(Error::new(
                    ErrorKind::Backend,
                    format!("unexpected reply from {}: {}", self.addr, g.0),
                )
                .with_backend(BACKEND))
            }
            None => {
                self.mark_down(Why::NotAnswering);
                Err(self.down_error(self.no_reply(timeout)))
            }
        }
    }

    fn no_reply(&self, timeout: Duration) -> Error {
        self.err(
            ErrorKind::Timeout,
            format!("no reply within {timeout:?}: server not answering, marked down"),
        )
    }

    async fn connect(&self, timeout: Duration) -> Result<Pipeline> {
        match Pipeline::connect(&self.addr, timeout).await {
            Ok(c) => Ok(c),
            Err(cause) => {
                self.mark_down(Why::Unreachable);
                let e = match cause {
                    Some(e) => Error::from(e)
                        .with_backend(BACKEND)
                        .with_context("server", &self.addr),
                    None => self.err(
                        ErrorKind::Timeout,
                        format!("connect took over {timeout:?}; server marked down"),
                    ),
                };
                Err(self.down_error(e))
            }
        }
    }
}
