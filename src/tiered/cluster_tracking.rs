//! Client tracking on a Redis Cluster. A master only reports invalidations
//! for keys in its own slots, so the subscriber holds one RESP3 connection
//! per master, each with `CLIENT TRACKING ON BCAST PREFIX ns:`, beside its
//! sharded pub/sub subscription. Their pushes go through the same handler,
//! and the loss of any of them is the loss of the subscription (L1 off and
//! flushed until all are back).
//!
//! The masters come from `CLUSTER NODES` (every node flagged `master` and
//! not `fail`, including one without slots yet, so a node joined before a
//! resharding is tracked before keys move to it). Each heartbeat asks again;
//! a changed set (failover, node added or removed) is a loss too: all
//! connections are re-established. Slots moving between tracked masters
//! need nothing: `MIGRATE` deletes the key at the source (an invalidation)
//! and the target is tracked already.

use std::collections::BTreeSet;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::tracking;
use crate::error::{Error, Result};

/// The live masters in a `CLUSTER NODES` reply, as `host:port`.
pub(super) fn masters(nodes: &str) -> BTreeSet<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let (_id, addr, flags) = (f.next()?, f.next()?, f.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            let dead = |f: &&str| matches!(*f, "fail" | "handshake" | "noaddr");
            if !flags.contains(&"master") || flags.iter().any(dead) {
                return None;
            }
            // `ip:port@cport[,hostname]`; an empty ip means no address yet.
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)).then(|| addr.to_string())
        })
        .collect()
}

/// Asks the node behind `via` for the live masters.
async fn ask_masters(via: &mut MultiplexedConnection) -> redis::RedisResult<BTreeSet<String>> {
    let text: String = redis::cmd("CLUSTER").arg("NODES").query_async(via).await?;
    Ok(masters(&text))
}

/// One tracking connection per master, and the masters they were opened for.
pub(super) struct Trackers {
    masters: BTreeSet<String>,
    conns: Vec<MultiplexedConnection>,
}

impl Trackers {
    /// Asks the node behind `via` for the masters and opens a tracking
    /// connection to each with `open` (the backplane's: its timeouts and
    /// push handler), all at once; fails if any fails.
    pub(super) async fn connect<F, Fut>(
        via: &mut MultiplexedConnection,
        prefix: Option<&str>,
        err: impl Fn(&dyn std::fmt::Display) -> Error,
        open: F,
    ) -> Result<Self>
    where
        F: Fn(&str) -> Fut,
        Fut: std::future::Future<Output = Result<MultiplexedConnection>>,
    {
        let masters = ask_masters(via).await.map_err(|e| err(&e))?;
        if masters.is_empty() {
            return Err(err(&"CLUSTER NODES lists no live master"));
        }
        let opens = masters.iter().map(|m| {
            let (open, err) = (&open, &err);
            async move {
                let mut c = open(m).await?;
                tracking::enable(&mut c, prefix)
                    .await
                    .map_err(|e| err(&format!("{m}: {e}")))?;
                Ok::<_, Error>(c)
            }
        });
        let conns = futures::future::try_join_all(opens).await?;
        Ok(Trackers { masters, conns })
    }

    /// How many masters are tracked.
    pub(super) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether every connection answers a PING and the node behind `via`
    /// still names the same masters (the caller bounds the time).
    /// A PING round trip on every tracking connection: the pushes queued
    /// on each before its reply have been handled when this returns `true`.
    pub(super) async fn drain(&self) -> bool {
        let pings = self.conns.iter().map(|c| {
            let mut c = c.clone();
            async move { redis::cmd("PING").query_async::<Value>(&mut c).await }
        });
        futures::future::join_all(pings)
            .await
            .iter()
            .all(Result::is_ok)
    }

    pub(super) async fn healthy(&self, via: &MultiplexedConnection) -> bool {
        let pings = self.conns.iter().map(|c| {
            let mut c = c.clone();
            async move { redis::cmd("PING").query_async::<Value>(&mut c).await }
        });
        let mut via = via.clone();
        let (pings, now) = tokio::join!(futures::future::join_all(pings), ask_masters(&mut via));
        let same = match now {
            Ok(m) if m == self.masters => true,
            Ok(m) => {
                tracing::info!(
                    "tiered cache: cluster masters changed ({} now); re-establishing client tracking",
                    m.len()
                );
                false
            }
            Err(_) => false,
        };
        same && pings.iter().all(Result::is_ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_masters_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,host-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected
d4 127.0.0.1:7003@17003 slave b2 0 0 2 connected
e5 127.0.0.1:7004@17004 master - 0 0 0 connected
f6 :0@0 master,noaddr - 0 0 0 disconnected
g7 127.0.0.1:7006@17006 master,fail? - 0 0 4 connected 10923-16383
h8 127.0.0.1:7007@17007 handshake - 0 0 0 disconnected
i9 ::1:7008@17008 master - 0 0 5 connected
";
        let m: Vec<String> = masters(nodes).into_iter().collect();
        assert_eq!(
            m,
            [
                "127.0.0.1:7000",
                "127.0.0.1:7001",
                "127.0.0.1:7004",
                "127.0.0.1:7006",
                "::1:7008"
            ]
        );
        assert!(masters("").is_empty() && masters("garbage\n\n").is_empty());
    }
}
