//! One server: its pooled connections and whether it is up.
//!
//! A server that refuses connections, drops them, or lets a request go
//! unanswered for the response timeout is marked down. While it is down its
//! calls fail at once, except one probe at a time, at most every
//! [`PROBE_EVERY`]; the
//! first call that gets an answer marks it up again. So a frozen server costs
//! one response timeout per probe, not one per call.

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::BACKEND;
use super::proto::{Conn, Failure, Reply};
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
    pool: Vec<Mutex<Option<Conn>>>,
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
    /// Waiting for a pooled connection and its reply takes at most the
    /// response timeout; a new connection gets the connect timeout, then
    /// the response timeout. A pooled connection the server has closed
    /// meanwhile (restart, idle timeout) is replaced once.
    pub async fn exchange(
        &self,
        req: &[u8],
        last: Option<&str>,
        count: usize,
        t: Timeouts,
    ) -> Result<Vec<Reply>> {
        let probe = self.admit(t)?;
        // checked_add: a huge timeout means no deadline, not a panic.
        let deadline = Instant::now().checked_add(t.response);
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let Some(mut guard) = until(deadline, self.pool[slot].lock()).await else {
            // The holder is waiting on the server and marks it down itself.
            return Err(self.err(
                ErrorKind::Timeout,
                format!("no connection free within {:?}", t.response),
            ));
        };
        if !probe {
            // Marked down while this call waited for the connection?
            self.admit(t)?;
        }
        // Taken out while in use: if this call is cancelled mid-exchange
        // (its future dropped), the connection goes with it instead of
        // leaving unread replies for the next caller.
        let mut r = None;
        if let Some(mut conn) = guard.take() {
            let got = until(deadline, conn.exchange(req, last, count)).await;
            if !matches!(got, Some(Err(Failure::Io(_)))) {
                r = Some((conn, got));
            }
        }
        let (conn, got) = match r {
            Some(r) => r,
            None => {
                let mut conn = self.connect(t.connect).await?;
                let deadline = Instant::now().checked_add(t.response);
                let got = until(deadline, conn.exchange(req, last, count)).await;
                (conn, got)
            }
        };
        let out = self.outcome(got, t.response);
        if out.is_ok() {
            *guard = Some(conn);
        }
        out
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

    async fn connect(&self, timeout: Duration) -> Result<Conn> {
        match Conn::connect(&self.addr, timeout).await {
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
