//! A plain connection of our own for single-key GETs on one non-TLS server.
//!
//! With redis-rs's multiplexed connection a GET goes from the caller's task
//! through a channel to the connection's driver task and its reply back
//! through another; here the calling task writes the GET and reads the reply
//! itself. It is used only when free (a concurrent GET takes the multiplexed
//! connection instead) and only for what it understands: on anything else
//! (error reply, timeout, I/O error) it steps aside, the call goes through
//! the connection manager, which reports the error, and it reconnects at
//! most once a second.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where and how to connect, from the URL.
pub(super) struct Direct {
    host: String,
    port: u16,
    /// `AUTH [user] password` and `SELECT db` to send after connecting.
    handshake: Vec<u8>,
    handshake_replies: usize,
    connect_timeout: Duration,
    response_timeout: Duration,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    conn: Option<Conn>,
    failed_at: Option<Instant>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Set while a request is out: still set at the next call means the
    /// last caller was cancelled mid-exchange and a reply may be in
    /// flight, so the connection is not trusted again.
    busy: bool,
}

/// What a direct call came to.
pub(super) enum Got<T = Option<Vec<u8>>> {
    /// The answer (for GET: the value, or `None` when the key is absent).
    Value(T),
    /// No answer within the response timeout.
    TimedOut,
    /// Not answered here: use the other connection.
    Elsewhere,
}

/// What a direct `get_with_ttl` came to: the value with its `PTTL`.
pub(super) type GotTtl = Got<Option<(Vec<u8>, i64)>>;

/// A reply we act on.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    Ok,
    Nil,
    Bulk(Vec<u8>),
    Int(i64),
    /// An error reply (one whole line: the stream stays in step).
    Error,
    /// Any other type: not for us to interpret.
    Other,
}

/// The number on a `$`, `*` or `:` line, if it is one.
fn number(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line.get(1..)?).ok()?.parse().ok()
}

/// Parses one reply from the front of `b`: `None` until complete.
pub(super) fn parse(b: &[u8]) -> Option<(Reply, usize)> {
    let nl = b.windows(2).position(|w| w == b"\r\n")?;
    let line = &b[..nl];
    let after = nl + 2;
    match line.first()? {
        b'+' => Some((
            if line == b"+OK" {
                Reply::Ok
            } else {
                Reply::Other
            },
            after,
        )),
        b'$' => {
            let Some(n) = std::str::from_utf8(&line[1..])
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
            else {
                return Some((Reply::Other, b.len()));
            };
            if n < 0 {
                return Some((Reply::Nil, after));
            }
            // A length no buffer can hold is not a reply we act on.
            let Some(end) = after.checked_add(n as usize).filter(|e| *e < usize::MAX - 2) else {
                return Some((Reply::Other, b.len()));
            };
            if b.len() < end + 2 {
                return None;
            }
            Some((Reply::Bulk(b[after..end].to_vec()), end + 2))
        }
        b':' => Some((number(line).map_or(Reply::Other, Reply::Int), after)),
        b'-' => Some((Reply::Error, after)),
        _ => Some((Reply::Other, b.len())),
    }
}

impl Conn {
    async fn exchange(&mut self, req: &[u8], replies: usize) -> std::io::Result<Vec<Reply>> {
        self.stream.write_all(req).await?;
        let mut out = Vec::with_capacity(replies);
        let mut pos = 0;
        loop {
            while out.len() < replies {
                match parse(&self.buf[pos..]) {
                    Some((r, used)) => {
                        pos += used;
                        out.push(r);
                    }
                    None => break,
                }
            }
            if out.len() == replies {
                self.buf.drain(..pos);
                if !self.buf.is_empty() {
                    // More than was asked for: the stream is out of step.
                    return Err(std::io::Error::other("unexpected bytes after the reply"));
                }
                return Ok(out);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

impl Direct {
    /// `None` when the URL is not a plain TCP one (TLS, Unix socket).
    pub(super) fn new(
        url: &str,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Option<Direct> {
        let info = redis::IntoConnectionInfo::into_connection_info(url).ok()?;
        let redis::ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
            return None;
        };
        let s = info.redis_settings();
        let mut handshake = Vec::new();
        let mut handshake_replies = 0;
        if let Some(pass) = s.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = s.username() {
                auth.arg(user);
            }
            handshake.extend(auth.arg(pass).get_packed_command());
            handshake_replies += 1;
        }
        if s.db() != 0 {
            handshake.extend(redis::cmd("SELECT").arg(s.db()).get_packed_command());
            handshake_replies += 1;
        }
        Some(Direct {
            host,
            port,
            handshake,
            handshake_replies,
            connect_timeout,
            response_timeout,
            state: tokio::sync::Mutex::new(State::default()),
        })
    }

    /// A connection, or `Err(true)` when the server did not answer in
    /// time (`Err(false)`: refused or not understood).
    async fn connect(&self) -> Result<Conn, bool> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => return Err(false),
            Err(_) => return Err(true),
        };
        let _ = stream.set_nodelay(true);
        let mut c = Conn {
            stream,
            buf: Vec::with_capacity(4096),
            busy: false,
        };
        if self.handshake_replies > 0 {
            let replies = tokio::time::timeout(
                self.response_timeout,
                c.exchange(&self.handshake, self.handshake_replies),
            )
            .await
            .map_err(|_| true)?
            .map_err(|_| false)?;
            if replies.iter().any(|r| *r != Reply::Ok) {
                return Err(false);
            }
        }
        Ok(c)
    }

    /// GET `key` (see [`Got`]).
    pub(super) async fn get(&self, key: &[u8]) -> Got {
        let req = redis::cmd("GET").arg(key).get_packed_command();
        let one = |r: &[Reply]| matches!(r, [Reply::Bulk(_) | Reply::Nil]);
        match self.request(&req, 1, one).await {
            Some(Ok(mut r)) => match r.pop() {
                Some(Reply::Bulk(v)) => Got::Value(Some(v)),
                _ => Got::Value(None),
            },
            Some(Err(())) => Got::TimedOut,
            None => Got::Elsewhere,
        }
    }

    /// `GET key` and `PTTL key` pipelined in one write: one round trip, two
    /// of the server's cheapest commands (a script doing both costs a Lua
    /// call per read). The server runs both before reading from another
    /// client when they arrive together, as one write sends them; should
    /// another write land between them anyway, the tier's generation check
    /// refuses the fill (its invalidation arrives after the read started).
    /// A key gone between the two (`PTTL` -2) is returned with a zero TTL,
    /// so it is served once and not kept.
    pub(super) async fn get_pttl(&self, key: &[u8]) -> GotTtl {
        let mut req = redis::cmd("GET").arg(key).get_packed_command();
        req.extend(redis::cmd("PTTL").arg(key).get_packed_command());
        let pair = |r: &[Reply]| matches!(r, [Reply::Bulk(_) | Reply::Nil, Reply::Int(_)]);
        match self.request(&req, 2, pair).await {
            Some(Ok(mut r)) => match (r.swap_remove(0), &r[0]) {
                // -2: gone since the GET (expired or deleted).
                (Reply::Bulk(v), Reply::Int(-2)) => Got::Value(Some((v, 0))),
                (Reply::Bulk(v), Reply::Int(ms)) => Got::Value(Some((v, *ms))),
                _ => Got::Value(None),
            },
            Some(Err(())) => Got::TimedOut,
            None => Got::Elsewhere,
        }
    }

    /// Sends `req` and reads `replies` replies: `Some(Ok(replies))` when
    /// `accept` takes them, `Some(Err(()))` when the server did not answer in time,
    /// `None` when the caller must use its other connection (busy, down,
    /// or a reply not accepted).
    async fn request(
        &self,
        req: &[u8],
        replies: usize,
        accept: impl Fn(&[Reply]) -> bool,
    ) -> Option<std::result::Result<Vec<Reply>, ()>> {
        let mut st = self.state.try_lock().ok()?;
        if st.conn.as_ref().is_some_and(|c| c.busy) {
            st.conn = None;
        }
        if st.conn.is_none() {
            if st
                .failed_at
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                return None;
            }
            match self.connect().await {
                Ok(c) => st.conn = Some(c),
                Err(timed_out) => {
                    st.failed_at = Some(Instant::now());
                    // The time is spent; the other connection would
                    // wait as long again.
                    return timed_out.then_some(Err(()));
                }
            }
        }
        let conn = st.conn.as_mut()?;
        conn.busy = true;
        let r = tokio::time::timeout(self.response_timeout, conn.exchange(req, replies)).await;
        conn.busy = false;
        match r {
            Ok(Ok(r)) if accept(&r) => Some(Ok(r)),
            // An error reply (wrong type, an ACL refusing PTTL...): the other
            // connection will report it. The stream is still in step, so this
            // connection stays; after anything we do not understand it goes.
            Ok(Ok(r)) => {
                if r.contains(&Reply::Other) {
                    st.conn = None;
                }
                None
            }
            Err(_) => {
                st.conn = None;
                st.failed_at = Some(Instant::now());
                Some(Err(()))
            }
            Ok(Err(_)) => {
                st.conn = None;
                st.failed_at = Some(Instant::now());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(
            parse(b"$3\r\nabc\r\n"),
            Some((Reply::Bulk(b"abc".to_vec()), 9))
        );
        assert_eq!(parse(b"$-1\r\n"), Some((Reply::Nil, 5)));
        assert_eq!(parse(b"+OK\r\n"), Some((Reply::Ok, 5)));
        assert_eq!(parse(b"-ERR wrong type\r\n"), Some((Reply::Error, 17)));
        assert_eq!(parse(b":-12\r\n"), Some((Reply::Int(-12), 6)));
        // A huge length waits for the rest (bounded by the response
        // timeout); it never overflows.
        assert_eq!(parse(b"$9223372036854775807\r\n"), None);
        // Arrays are not ours (the direct connection sends no command
        // answering one).
        assert_eq!(parse(b"*1\r\n$1\r\nv\r\n").map(|r| r.0), Some(Reply::Other));
        assert_eq!(parse(b"$3\r\nab"), None);
        assert_eq!(parse(b"$3"), None);
        assert_eq!(parse(b"$x\r\n"), Some((Reply::Other, 4)));
        assert_eq!(parse(b"$0\r\n\r\n"), Some((Reply::Bulk(Vec::new()), 6)));
        // What goes out for a GET (redis-rs encodes it).
        assert_eq!(
            redis::cmd("GET").arg(&b"k y"[..]).get_packed_command(),
            b"*2\r\n$3\r\nGET\r\n$3\r\nk y\r\n".to_vec()
        );
    }
}
