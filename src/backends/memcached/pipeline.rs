//! One connection shared by every caller: requests are queued, written in
//! order (whatever has queued meanwhile goes in the same write) and matched
//! to their replies by order, which memcached keeps on a connection. So
//! callers never wait for each other's round trips, only for the server.
//!
//! Two tasks drive a connection: the writer takes requests off the queue,
//! tells the reader what each one's replies look like, and writes them; the
//! reader parses replies and completes each request in turn. A caller that
//! gives up (timeout, cancelled) just drops its receiver: its replies are
//! still read and thrown away, so the stream stays in step. Any failure of
//! the stream (closed, reset, bytes that are no reply) fails every request
//! on it and marks the connection dead; the server replaces it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use super::proto::{Failure, Garbage, Reply, parse_reply};

/// Most request bytes gathered into one write.
const WRITE_GATHER: usize = 256 * 1024;

/// What ends a request's replies: `count` (at least one) replies with the
/// code `last`, or `count` replies when `last` is None.
#[derive(Clone, Copy)]
struct Until {
    last: Option<&'static str>,
    count: usize,
}

/// A request waiting for its replies.
struct Pending {
    until: Until,
    done: oneshot::Sender<Result<Vec<Reply>, Failure>>,
}

struct Job {
    req: Bytes,
    pending: Pending,
}

/// A connection's handle: cloned by callers, its tasks stop when the last
/// handle goes (or the connection fails).
pub(super) struct Pipeline {
    jobs: mpsc::UnboundedSender<Job>,
    dead: Arc<AtomicBool>,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
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

impl Pipeline {
    /// Connects within `timeout` (`Err(None)` when it ran out) and starts
    /// the connection's tasks on the current Tokio runtime.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Pipeline, Option<std::io::Error>> {
        // tokio::time::timeout saturates a huge duration (no Instant overflow).
        let s = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Some(e)),
            Err(_) => return Err(None),
        };
        let _ = s.set_nodelay(true);
        let (r, w) = s.into_split();
        let (jobs, queue) = mpsc::unbounded_channel();
        let (to_reader, in_flight) = mpsc::unbounded_channel();
        let dead = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_replies(r, in_flight, dead.clone()));
        let writer = tokio::spawn(write_requests(w, queue, to_reader, dead.clone()));
        Ok(Pipeline {
            jobs,
            dead,
            tasks: [reader.abort_handle(), writer.abort_handle()],
        })
    }

    /// Whether the connection failed (or its runtime went away): it takes
    /// no more requests.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire) || self.jobs.is_closed()
    }

    /// Takes the connection out of use: the server's next call connects
    /// afresh, while requests already on it still get their replies.
    pub fn close(&self) {
        self.dead.store(true, Ordering::Release);
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
        let (done, reply) = oneshot::channel();
        let job = Job {
            req,
            pending: Pending {
                until: Until { last, count },
                done,
            },
        };
        if self.jobs.send(job).is_err() {
            return Err(lost());
        }
        reply.await.unwrap_or_else(|_| Err(lost()))
    }
}

/// The writer: gathers queued requests into one write, each announced to
/// the reader before its bytes go out.
async fn write_requests(
    mut w: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Job>,
    to_reader: mpsc::UnboundedSender<Pending>,
    dead: Arc<AtomicBool>,
) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut one = Some(first.req);
        let announce = |p: Pending| to_reader.send(p).is_ok();
        if !announce(first.pending) {
            break;
        }
        // More queued meanwhile: one write for all of them.
        while buf.len() + one.as_ref().map_or(0, Bytes::len) < WRITE_GATHER {
            let Ok(next) = queue.try_recv() else { break };
            if !announce(next.pending) {
                dead.store(true, Ordering::Release);
                return;
            }
            if let Some(o) = one.take() {
                buf.extend_from_slice(&o);
            }
            buf.extend_from_slice(&next.req);
        }
        let wrote = match one.take() {
            // A lone request goes as it is, without a copy.
            Some(req) => w.write_all(&req).await,
            None => {
                let r = w.write_all(&buf).await;
                buf.clear();
                r
            }
        };
        if wrote.is_err() {
            // The reader fails what is in flight when the stream ends.
            break;
        }
    }
    dead.store(true, Ordering::Release);
}

/// The reader: parses replies out of large socket reads and completes the
/// requests in the order they were written.
async fn read_replies(
    mut r: OwnedReadHalf,
    mut in_flight: mpsc::UnboundedReceiver<Pending>,
    dead: Arc<AtomicBool>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut current: Option<(Pending, Vec<Reply>, usize)> = None;
    let failure = 'stream: loop {
        let mut pos = 0usize;
        loop {
            if current.is_none() {
                match in_flight.try_recv() {
                    Ok(p) => current = Some((p, Vec::new(), 0)),
                    // Bytes with no request written to answer.
                    Err(_) if pos < buf.len() => {
                        break 'stream Failure::Garbage(Garbage::at(&buf[pos..]));
                    }
                    Err(_) => break,
                }
            }
            let Some((p, out, lasts)) = current.as_mut() else { break };
            match parse_reply(&buf[pos..]) {
                Err(g) => break 'stream Failure::Garbage(g),
                Ok(None) => break,
                Ok(Some((reply, used))) => {
                    pos += used;
                    *lasts += usize::from(p.until.last == Some(reply.code.as_ref()));
                    out.push(reply);
                    let complete = match p.until.last {
                        Some(_) => *lasts >= p.until.count.max(1),
                        None => out.len() >= p.until.count,
                    };
                    if complete && let Some((p, out, _)) = current.take() {
                        // The caller may have given up: nothing to tell.
                        let _ = p.done.send(Ok(out));
                    }
                }
            }
        }
        buf.drain(..pos);
        if current.is_none() && buf.is_empty() {
            // Idle: wait for a request (or the end) rather than spin.
            match in_flight.recv().await {
                Some(p) => current = Some((p, Vec::new(), 0)),
                None => break 'stream lost(),
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) => {
                break 'stream Failure::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            Ok(_) => {}
            Err(e) => break 'stream Failure::Io(e),
        }
    };
    dead.store(true, Ordering::Release);
    if let Some((p, _, _)) = current.take() {
        let _ = p.done.send(Err(again(&failure)));
    }
    in_flight.close();
    while let Ok(p) = in_flight.try_recv() {
        let _ = p.done.send(Err(again(&failure)));
    }
}
