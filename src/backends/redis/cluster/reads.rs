//! `read_from=replica|nearest` on a cluster: which node a read of a slot
//! goes to (the choice is [`ReadFrom::pick`]'s, shared with Sentinel), and
//! the check that keeps it current: every second, as Sentinel's, the slot
//! map is fetched again (a failover, a replica added or marked failed) and
//! every node `PING`ed. A node whose read fails for a connection reason
//! gets no more reads until a check finds it answering; the read itself
//! goes again to the master or another replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, Weak};
use std::time::Duration;

use super::Cluster;
use super::map::SlotMap;
use crate::backends::redis::read_from::{ReadFrom, ping_rtt};

/// How often the map is fetched and the nodes timed.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A node new in the map, not timed yet: up, but slower than any timed.
const UNMEASURED: Duration = Duration::MAX.saturating_sub(Duration::from_nanos(1));

/// Where reads go, and what the last check found.
pub(super) struct Readers {
    pub(super) read_from: ReadFrom,
    /// Each node's PING time at the last check; `Duration::MAX`: down (no
    /// answer then, or a read failed on it since).
    rtt: RwLock<HashMap<String, Duration>>,
    turn: AtomicUsize,
}

impl Readers {
    pub(super) fn new(read_from: ReadFrom) -> Readers {
        Readers {
            read_from,
            rtt: RwLock::new(HashMap::new()),
            turn: AtomicUsize::new(0),
        }
    }

    /// The node a read of a slot that master `o` of `m` serves goes to.
    pub(super) fn node(&self, m: &SlotMap, o: u16) -> String {
        let master = &m.masters[o as usize];
        let replicas = m.replicas.get(o as usize).map_or(&[][..], Vec::as_slice);
        if self.read_from == ReadFrom::Master || replicas.is_empty() {
            return master.clone();
        }
        let rtt = self.rtt.read().unwrap_or_else(|p| p.into_inner());
        let of = |a: &String| rtt.get(a).copied().unwrap_or(UNMEASURED);
        let rtts: Vec<Duration> = replicas.iter().map(of).collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        match self.read_from.pick(of(master), &rtts, turn) {
            Some(i) => replicas[i].clone(),
            None => master.clone(),
        }
    }

    /// A command on `node` failed for a connection reason.
    pub(super) fn failed(&self, node: &str) {
        if self.read_from != ReadFrom::Master {
            let mut rtt = self.rtt.write().unwrap_or_else(|p| p.into_inner());
            rtt.insert(node.to_string(), Duration::MAX);
        }
    }
}

impl Cluster {
    /// Fetches the map (unless another call just did) and times every
    /// node in it; a node that does not answer is down until the next.
    async fn check(&self) {
        let _ = self.refresh(CHECK_EVERY).await;
        let nodes = self.map.read().unwrap_or_else(|p| p.into_inner()).nodes.clone();
        let within = self.response_timeout;
        let timed = futures::future::join_all(nodes.into_iter().map(|a| async move {
            let rtt = match self.conn(&a).await {
                Ok(mut c) => ping_rtt(&mut c, within).await,
                Err(_) => Duration::MAX,
            };
            if rtt == Duration::MAX {
                self.forget(&a);
            }
            (a, rtt)
        }))
        .await;
        *self.readers.rtt.write().unwrap_or_else(|p| p.into_inner()) = timed.into_iter().collect();
    }
}

/// Checks at once, then every [`CHECK_EVERY`] until the cluster is dropped.
async fn watch(c: Weak<Cluster>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = c.upgrade() else { return };
        c.check().await;
    }
}

/// Starts the check of a cluster that reads from replicas. Not awaited:
/// a node that stopped answering must not hold up the open (until the
/// first check, every node counts as up).
pub(super) fn start(c: &std::sync::Arc<Cluster>) {
    if c.readers.read_from == ReadFrom::Master {
        return;
    }
    let task = tokio::spawn(watch(std::sync::Arc::downgrade(c)));
    *c.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pick_a_live_replica_else_the_master() {
        let mut m = SlotMap::empty();
        let o = m.index_of("m:1");
        m.replicas[o as usize] = vec!["r:1".into(), "r:2".into()];
        let lone = m.index_of("m:2");
        let r = Readers::new(ReadFrom::Replica);
        let mut picked: Vec<String> = (0..4).map(|_| r.node(&m, o)).collect();
        picked.sort();
        assert_eq!(picked, ["r:1", "r:1", "r:2", "r:2"]);
        assert_eq!(r.node(&m, lone), "m:2", "no replica: the master");
        r.failed("r:1");
        assert!((0..4).all(|_| r.node(&m, o) == "r:2"));
        r.failed("r:2");
        assert_eq!(r.node(&m, o), "m:1");
        // A check that finds them answering brings them back.
        *r.rtt.write().unwrap() = [("m:1", 2), ("r:1", 1), ("r:2", 3)]
            .map(|(a, ms)| (a.to_string(), Duration::from_millis(ms)))
            .into();
        assert_ne!(r.node(&m, o), "m:1");

        let near = Readers::new(ReadFrom::Nearest);
        *near.rtt.write().unwrap() = r.rtt.read().unwrap().clone();
        assert_eq!(near.node(&m, o), "r:1");
        near.failed("r:1");
        assert_eq!(near.node(&m, o), "m:1");
        let master = Readers::new(ReadFrom::Master);
        assert_eq!(master.node(&m, o), "m:1");
        master.failed("m:1");
        assert_eq!(master.node(&m, o), "m:1");
    }
}
