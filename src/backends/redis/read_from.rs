//! `read_from=master|replica|nearest`: where reads go, for Sentinel
//! (`follow`) and Cluster (`cluster::reads`) alike. Both keep, for a master
//! and its replicas, each node's `PING` time at the last check (or
//! `Duration::MAX` for a node that did not answer, or failed a read since)
//! and ask [`ReadFrom::pick`] which one a read goes to.

use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::error::Result;
use crate::url::url_err;

/// Where reads go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// Every read on the master (the default).
    #[default]
    Master,
    /// Reads spread over the replicas (the master when none is up).
    Replica,
    /// Reads on the node, master or replica, that answered a PING fastest
    /// at the last check.
    Nearest,
}

impl ReadFrom {
    pub(super) fn parse(v: Option<&str>) -> Result<Self> {
        Ok(match v {
            None | Some("master") => ReadFrom::Master,
            Some("replica") => ReadFrom::Replica,
            Some("nearest") => ReadFrom::Nearest,
            Some(v) => {
                return Err(url_err(format!(
                    "redis: read_from must be master, replica or nearest, not {v:?}"
                )));
            }
        })
    }

    /// Which node one read goes to: `Some(i)` for the replica whose PING
    /// time is `replicas[i]` (`Duration::MAX`: down, never picked), `None`
    /// for the master. `turn` spreads `replica` reads round robin;
    /// `nearest` takes the fastest, a replica on a tie.
    pub(super) fn pick(self, master: Duration, replicas: &[Duration], turn: usize) -> Option<usize> {
        let up = || {
            replicas
                .iter()
                .enumerate()
                .filter(|(_, r)| **r != Duration::MAX)
        };
        match self {
            ReadFrom::Master => None,
            ReadFrom::Replica => {
                let n = up().count();
                (n > 0).then(|| up().nth(turn % n).map(|(i, _)| i))?
            }
            ReadFrom::Nearest => {
                let (i, r) = up().min_by_key(|(_, r)| **r)?;
                (*r <= master).then_some(i)
            }
        }
    }
}

/// `conn`'s `PING` time, what `nearest` compares; `Duration::MAX` when it
/// does not answer within `within`.
pub(super) async fn ping_rtt(conn: &mut MultiplexedConnection, within: Duration) -> Duration {
    let t = Instant::now();
    let ok = tokio::time::timeout(within, redis::cmd("PING").query_async::<Value>(conn))
        .await
        .is_ok_and(|r| r.is_ok());
    if ok { t.elapsed() } else { Duration::MAX }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(ReadFrom::parse(Some("replica")).unwrap(), ReadFrom::Replica);
        assert_eq!(ReadFrom::parse(None).unwrap(), ReadFrom::Master);
        assert!(ReadFrom::parse(Some("slave")).is_err());
    }

    #[test]
    fn picks() {
        let ms = Duration::from_millis;
        let down = Duration::MAX;
        assert_eq!(ReadFrom::Master.pick(ms(1), &[ms(0)], 0), None);
        // Round robin over the replicas that are up; the master when none is.
        let r = [ms(1), down, ms(3)];
        let picked: Vec<_> = (0..4).map(|t| ReadFrom::Replica.pick(ms(9), &r, t)).collect();
        assert_eq!(picked, [Some(0), Some(2), Some(0), Some(2)]);
        assert_eq!(ReadFrom::Replica.pick(ms(1), &[down, down], 0), None);
        assert_eq!(ReadFrom::Replica.pick(ms(1), &[], 0), None);
        // Nearest: the fastest, a replica on a tie, never a down one.
        assert_eq!(ReadFrom::Nearest.pick(ms(2), &r, 0), Some(0));
        assert_eq!(ReadFrom::Nearest.pick(ms(1), &r, 0), Some(0));
        assert_eq!(ReadFrom::Nearest.pick(ms(0), &r, 0), None);
        assert_eq!(ReadFrom::Nearest.pick(down, &[down], 0), None);
    }
}
