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

/// What a direct GET came to.
pub(super) enum Got {
    /// The value, or `None` when the key is absent.
    Value(Option<Vec<u8>>),
    /// No answer within the response timeout.
    TimedOut,
    /// Not answered here: use the other connection.
    Elsewhere,
}

/// A reply we act on.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    Ok,
    Nil,
    Bulk(Vec<u8>),
    /// An error or any other type: not for us to interpret.
    Other,
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
            let end = after + n as usize;
            if b.len() < end + 2 {
                return None;
            }
            Some((Reply::Bulk(b[after..end].to_vec()), end + 2))
        }
        b'-' | b':' => Some((Reply::Other, after)),
        // Aggregates are never the answer to GET/AUTH/SELECT.
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
        match self.try_get(key).await {
            Some(Ok(v)) => Got::Value(v),
            Some(Err(())) => Got::TimedOut,
            None => Got::Elsewhere,
        }
    }

    /// `Some(Ok(value or None))`, `Some(Err(()))` when the server did
    /// not answer in time, `None` when the caller must use its other
    /// connection (busy, down, or a reply not understood).
    async fn try_get(&self, key: &[u8]) -> Option<std::result::Result<Option<Vec<u8>>, ()>> {
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
        let req = redis::cmd("GET").arg(key).get_packed_command();
        conn.busy = true;
        let r = tokio::time::timeout(self.response_timeout, conn.exchange(&req, 1)).await;
        conn.busy = false;
        match r {
            Ok(Ok(mut r)) => match r.pop() {
                Some(Reply::Bulk(v)) => Some(Ok(Some(v))),
                Some(Reply::Nil) => Some(Ok(None)),
                // An error reply (or anything else): the other connection
                // will report it; this one is not trusted further.
                _ => {
                    st.conn = None;
                    None
                }
            },
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
        assert_eq!(parse(b"-ERR wrong type\r\n"), Some((Reply::Other, 17)));
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
