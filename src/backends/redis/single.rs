//! The one-server connection: redis-rs's connection manager on a fixed
//! address, or the Sentinel connection that follows the master; and the
//! cache's methods that pick between them (reads on replicas, `wait=N`).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};

use super::follow::{ReaderConn, SentinelConn};
use super::{BACKEND, Certs, Conn, RedisCache, sentinel};
use crate::error::{Error, ErrorKind, Result};

/// A single server's connection, cloned per call (both kinds are handles).
#[derive(Clone)]
pub(super) enum SingleConn {
    /// `redis://`, `rediss://`: one address, reconnected by the manager.
    Plain(ConnectionManager),
    /// `redis+sentinel://`: the master the sentinels name.
    Sentinel(SentinelConn),
    /// A replica's connection for reads (`read_from`).
    Reader(ReaderConn),
}

impl SingleConn {
    /// The connection reads go to: a replica's when `read_from` picks one.
    pub(super) fn for_reads(&self) -> SingleConn {
        match self {
            SingleConn::Sentinel(s) => s.reader().map_or_else(|| self.clone(), SingleConn::Reader),
            _ => self.clone(),
        }
    }
}

impl ConnectionLike for SingleConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            SingleConn::Plain(c) => c.req_packed_command(cmd),
            SingleConn::Sentinel(c) => c.req_packed_command(cmd),
            SingleConn::Reader(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            SingleConn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            SingleConn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            SingleConn::Reader(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            SingleConn::Plain(c) => c.get_db(),
            SingleConn::Sentinel(c) => c.get_db(),
            SingleConn::Reader(c) => c.get_db(),
        }
    }
}

impl RedisCache {
    /// The master found through the sentinels (bounded like `open_conn`).
    pub(super) async fn open_sentinel(
        spec: sentinel::SentinelSpec,
        read_from: super::read_from::ReadFrom,
        certs: &Certs,
        (connect_timeout, response_timeout): (Duration, Duration),
        endpoint: &str,
    ) -> Result<Conn> {
        let reach = sentinel::Reach {
            #[allow(clippy::clone_on_copy)] // `Certs` is `Option<()>` without `tls`
            certs: certs.clone(),
            connect_timeout,
            response_timeout,
        };
        // Each sentinel may be asked in turn, and the master checked.
        let n = spec.sentinels.len() as u32;
        let deadline = (connect_timeout.saturating_add(response_timeout))
            .saturating_mul(n.saturating_add(1));
        let c = tokio::time::timeout(deadline, super::follow::SentinelConn::connect(spec, reach, read_from))
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(ErrorKind::Timeout, "no sentinel answered in time").with_backend(BACKEND))
            })
            .map_err(|e| e.with_context("endpoint", endpoint).with_context("op", "connect"))?;
        Ok(Conn::Single(SingleConn::Sentinel(c)))
    }

    /// A read's command: on a replica with `read_from` (Sentinel or Cluster).
    pub(super) async fn one_read<T: FromRedisValue>(&self, full: &str, key: &str, cmd: Cmd) -> Result<T> {
        match &self.conn {
            Conn::Single(c) => cmd
                .query_async(&mut c.for_reads())
                .await
                .map_err(|e| self.err(e).with_context("key", key)),
            Conn::Cluster(_) => self.one(full, key, cmd, true).await,
        }
    }

    /// A replica's connection when `read_from` picks one for this read.
    pub(super) fn replica(&self) -> Option<SingleConn> {
        match &self.conn {
            Conn::Single(c @ SingleConn::Sentinel(_)) => {
                Some(c.for_reads()).filter(|r| matches!(r, SingleConn::Reader(_)))
            }
            _ => None,
        }
    }

    /// `WAIT n ms`, bounded by half the response timeout (the reply must
    /// come back before the call gives up on it).
    pub(super) fn wait_cmd(&self, n: u32) -> Cmd {
        let ms = (self.response_timeout / 2).as_millis().clamp(1, i64::MAX as u128) as u64;
        let mut c = redis::cmd("WAIT");
        c.arg(n).arg(ms);
        c
    }

    /// `WAIT`'s count against the `n` replicas asked for: fewer is a
    /// transient failure (the batch is on the master, not yet on enough
    /// replicas to survive its loss; sending it again is harmless).
    pub(super) fn check_wait(&self, n: u32, reply: Option<Value>) -> Result<()> {
        match reply {
            Some(Value::Int(got)) if got >= i64::from(n) => Ok(()),
            Some(Value::Int(got)) => Err(Error::new(
                ErrorKind::Connection,
                format!("WAIT: {got} of {n} replicas acknowledged the batch in time"),
            )
            .with_backend(BACKEND)
            .with_context("endpoint", &self.endpoint)),
            _ => Err(Error::new(ErrorKind::Backend, "unexpected reply to WAIT").with_backend(BACKEND)),
        }
    }
}
