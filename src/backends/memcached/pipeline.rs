//! One connection shared by every caller, pipelined: requests go out in
//! order, each as soon as it is made, and replies are matched to them by
//! order, which memcached keeps on a connection. So callers never wait for
//! each other's round trips, only for the server.
//!
//! There is no task of its own: the calling tasks do the work. A caller
//! writes its request itself (a non-blocking send; only when the socket is
//! full does it stay to write the rest, and later callers queue their bytes
//! behind). For the replies, one waiting caller at a time holds the read
//! side: it reads, completes every request whose replies it finds (its own
//! included) and hands the read side on when its own is done. So a request
//! costs its caller a send, a receive and at most one wake-up, with no
//! hop through a driver task.
//!
//! A caller that gives up (timeout, cancelled) leaves its entry behind: its
//! replies are still read and thrown away, so the stream stays in step.
//! Cancelled in the middle of writing, it takes the connection out of use
//! (a partial request cannot be finished). Any failure of the stream
//! (closed, reset, bytes that are no reply) fails every request on it and
//! marks the connection dead; the server then connects a new one.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use super::proto::{Failure, Garbage, Reply, parse_reply};

/// What ends a request's replies: `count` (at least one) replies with the
/// code `last`, or `count` replies when `last` is None.
#[derive(Clone, Copy)]
struct Until {
    last: Option<&'static str>,
    count: usize,
}

impl Until {
    fn complete(self, replies: usize, lasts: usize) -> bool {
        match self.last {
            Some(_) => lasts >= self.count.max(1),
            None => replies >= self.count,
        }
    }
}

/// A request written (or queued to be), waiting for its replies.
struct Pending {
    until: Until,
    done: oneshot::Sender<Result<Vec<Reply>, Failure>>,
}

/// The write side's state, held only briefly (never across an await).
struct WriteState {
    /// Requests in the order their bytes go out.
    in_flight: VecDeque<Pending>,
    /// Bytes behind a write that did not fit in the socket at once.
    backlog: Vec<u8>,
    /// A caller is writing the backlog: others append to it.
    flushing: bool,
}

/// The read side: one caller at a time.
struct ReadState {
    r: OwnedReadHalf,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
    /// The request being answered and its replies so far (kept here, not
    /// by the reading caller, which may be cancelled at any await).
    current: Option<(Pending, Vec<Reply>, usize)>,
}

pub(super) struct Pipeline {
    w: OwnedWriteHalf,
    ws: StdMutex<WriteState>,
    rs: tokio::sync::Mutex<ReadState>,
    dead: AtomicBool,
}

/// The error of a request whose connection went away under it.
fn lost() -> Failure {
    Failure::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection lost with the request in flight",
    ))
}

/// The same failure again, for the other requests on a failed stream.
fn again(f: &Failure) -> Failure {
    match f {
        Failure::Io(e) => Failure::Io(std::io::Error::new(e.kind(), e.to_string())),
        Failure::Garbage(g) => Failure::Garbage(Garbage(g.0.clone())),
    }
}

/// Marks the connection dead if dropped armed: a caller cancelled while
/// its request was half written.
struct MidWrite<'a>(Option<&'a Pipeline>);

impl MidWrite<'_> {
    /// The write finished (or failed and was dealt with).
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for MidWrite<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.fail_queued(&lost());
        }
    }
}

impl Pipeline {
    /// Connects within `timeout`: `Err(None)` when it ran out.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Pipeline, Option<std::io::Error>> {
        let connect = TcpStream::connect(addr);
        let s = match crate::backends::timer_deadline(timeout) {
            Some(d) => tokio::time::timeout_at(d.into(), connect).await,
            None => Ok(connect.await),
        };
        let s = match s {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Some(e)),
            Err(_) => return Err(None),
        };
        let _ = s.set_nodelay(true);
        let (r, w) = s.into_split();
        Ok(Pipeline {
            w,
            ws: StdMutex::new(WriteState {
                in_flight: VecDeque::new(),
                backlog: Vec::new(),
                flushing: false,
            }),
            rs: tokio::sync::Mutex::new(ReadState {
                r,
                buf: Vec::with_capacity(64 * 1024),
                current: None,
            }),
            dead: AtomicBool::new(false),
        })
    }

    /// Whether the connection failed or was taken out of use.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Takes the connection out of use: the server's next call connects
    /// afresh, while requests already on it still get their replies.
    pub fn close(&self) {
        self.dead.store(true, Ordering::Release);
    }

    fn write_state(&self) -> std::sync::MutexGuard<'_, WriteState> {
        self.ws.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection dead and fails every request not being read.
    fn fail_queued(&self, why: &Failure) {
        self.close();
        let queued = std::mem::take(&mut self.write_state().in_flight);
        for p in queued {
            let _ = p.done.send(Err(again(why)));
        }
    }

    /// Sends `req` and waits for its replies: until `count` (at least one)
    /// of them have the code `last`, or until `count` replies when `last` is
    /// None.
    pub async fn exchange(
        &self,
        req: Bytes,
        last: Option<&'static str>,
        count: usize,
    ) -> Result<Vec<Reply>, Failure> {
        let (done, mut reply) = oneshot::channel();
        let until = Until { last, count };
        let flush = {
            let mut s = self.write_state();
            if self.is_dead() {
                return Err(lost());
            }
            s.in_flight.push_back(Pending { until, done });
            if s.flushing {
                s.backlog.extend_from_slice(&req);
                false
            } else {
                let sent = match self.w.try_write(&req) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                    Err(e) => {
                        drop(s);
                        self.fail_queued(&Failure::Io(e));
                        return Err(lost());
                    }
                };
                if sent < req.len() {
                    s.backlog.extend_from_slice(&req[sent..]);
                    s.flushing = true;
                }
                sent < req.len()
            }
        };
        if !flush {
            return self.await_reply(&mut reply).await;
        }
        // Read while writing: a request too big for the socket may already
        // be answered in part, and a server whose replies are not read
        // stops reading requests.
        let mut guard = MidWrite(Some(self));
        let writing = async move {
            if let Err(e) = self.flush().await {
                self.fail_queued(&Failure::Io(e));
            }
            guard.disarm();
        };
        futures::future::join(writing, self.await_reply(&mut reply)).await.1
    }

    /// Writes the backlog until it is empty (more may be appended while
    /// this waits for the socket).
    async fn flush(&self) -> std::io::Result<()> {
        loop {
            let chunk = {
                let mut s = self.write_state();
                if s.backlog.is_empty() {
                    s.flushing = false;
                    return Ok(());
                }
                std::mem::take(&mut s.backlog)
            };
            let mut off = 0;
            while off < chunk.len() {
                self.w.writable().await?;
                match self.w.try_write(&chunk[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Waits for `reply`, reading for everyone while nobody else is.
    async fn await_reply(
        &self,
        reply: &mut oneshot::Receiver<Result<Vec<Reply>, Failure>>,
    ) -> Result<Vec<Reply>, Failure> {
        let mut rs = tokio::select! {
            biased;
            r = &mut *reply => return r.unwrap_or_else(|_| Err(lost())),
            rs = self.rs.lock() => rs,
        };
        loop {
            // Answered while this caller waited for the read side, or by
            // the replies parsed just now.
            match reply.try_recv() {
                Ok(r) => return r,
                Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if let Err(f) = self.read_more(&mut rs).await {
                // Everything on this stream fails, this caller's too.
                self.close();
                if let Some((p, _, _)) = rs.current.take() {
                    let _ = p.done.send(Err(again(&f)));
                }
                self.fail_queued(&f);
            }
        }
    }

    /// Completes the requests whose replies are in the buffer; when none
    /// completed, reads more first.
    async fn read_more(&self, rs: &mut ReadState) -> Result<(), Failure> {
        if self.parse_and_complete(rs)? {
            return Ok(());
        }
        if rs.buf.capacity() - rs.buf.len() < 16 * 1024 {
            rs.buf.reserve(64 * 1024);
        }
        let ReadState { r, buf, .. } = rs;
        match r.read_buf(buf).await {
            Ok(0) => Err(Failure::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ))),
            Ok(_) => {
                self.parse_and_complete(rs)?;
                Ok(())
            }
            Err(e) => Err(Failure::Io(e)),
        }
    }

    /// Parses whole replies off the buffer and completes the requests they
    /// finish; `true` when at least one completed.
    fn parse_and_complete(&self, rs: &mut ReadState) -> Result<bool, Failure> {
        let mut pos = 0usize;
        let mut completed = false;
        let r = loop {
            if pos == rs.buf.len() {
                break Ok(());
            }
            if rs.current.is_none() {
                match self.write_state().in_flight.pop_front() {
                    Some(p) => rs.current = Some((p, Vec::new(), 0)),
                    // Bytes with no request written to answer.
                    None => break Err(Failure::Garbage(Garbage::at(&rs.buf[pos..]))),
                }
            }
            let Some((p, out, lasts)) = rs.current.as_mut() else {
                break Ok(());
            };
            match parse_reply(&rs.buf[pos..]) {
                Err(g) => break Err(Failure::Garbage(g)),
                Ok(None) => break Ok(()),
                Ok(Some((reply, used))) => {
                    pos += used;
                    *lasts += usize::from(p.until.last == Some(reply.code.as_ref()));
                    out.push(reply);
                    if p.until.complete(out.len(), *lasts)
                        && let Some((p, out, _)) = rs.current.take()
                    {
                        // The caller may have given up: nothing to tell.
                        let _ = p.done.send(Ok(out));
                        completed = true;
                    }
                }
            }
        };
        rs.buf.drain(..pos);
        r.map(|()| completed)
    }
}

