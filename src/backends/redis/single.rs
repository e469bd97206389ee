//! The one-server connection: redis-rs's connection manager on a fixed
//! address, or the Sentinel connection that follows the master.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::sentinel::{ReaderConn, SentinelConn};

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
