//! The slot map: which master serves each slot, its replicas, and the
//! `host:port` forms of `CLUSTER SLOTS` and of `MOVED`/`ASK` redirects.

use redis::Value;

use super::node_error;
use crate::error::{ErrorKind, Result};

/// Which master serves each slot, and its replicas.
#[derive(Clone)]
pub(super) struct SlotMap {
    /// Slot -> index into `masters` (`NO_OWNER` when none).
    pub(super) owner: Vec<u16>,
    /// `host:port` of each master.
    pub(super) masters: Vec<String>,
    /// The replicas `CLUSTER SLOTS` lists for each of `masters` (those the
    /// cluster has not marked failed).
    pub(super) replicas: Vec<Vec<String>>,
    /// Every node seen (masters and replicas): where a refresh may ask.
    pub(super) nodes: Vec<String>,
}

pub(super) const NO_OWNER: u16 = u16::MAX;

impl SlotMap {
    pub(super) fn empty() -> SlotMap {
        SlotMap {
            owner: vec![NO_OWNER; 16384],
            masters: Vec::new(),
            replicas: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// The index of master `addr`, added (with no replica known) if new.
    pub(super) fn index_of(&mut self, addr: &str) -> u16 {
        match self.masters.iter().position(|m| m == addr) {
            Some(i) => i as u16,
            None => {
                self.masters.push(addr.to_string());
                self.replicas.push(Vec::new());
                (self.masters.len() - 1) as u16
            }
        }
    }

    /// The map a `CLUSTER SLOTS` reply from node `from` describes.
    pub(super) fn parse(v: Value, from: &str) -> Result<SlotMap> {
        let mut m = SlotMap::empty();
        let Value::Array(ranges) = v else {
            return Err(node_error(
                ErrorKind::Backend,
                "odd CLUSTER SLOTS reply".into(),
                from,
            ));
        };
        for r in ranges {
            let Value::Array(f) = r else { continue };
            let (Some(Value::Int(a)), Some(Value::Int(b))) = (f.first(), f.get(1)) else {
                continue;
            };
            let mut owners = f[2..].iter().filter_map(|n| match n {
                Value::Array(n) => match (n.first(), n.get(1)) {
                    (Some(Value::BulkString(ip)), Some(Value::Int(port))) => {
                        join_addr(&String::from_utf8_lossy(ip), &port.to_string(), from)
                    }
                    _ => None,
                },
                _ => None,
            });
            let Some(master) = owners.next() else {
                continue;
            };
            let idx = m.index_of(&master);
            let replicas: Vec<String> = owners.collect();
            m.nodes.push(master);
            m.nodes.extend(replicas.iter().cloned());
            m.replicas[idx as usize] = replicas;
            for slot in (*a).clamp(0, 16383)..=(*b).clamp(0, 16383) {
                m.owner[slot as usize] = idx;
            }
        }
        if m.masters.is_empty() {
            return Err(node_error(
                ErrorKind::Connection,
                "CLUSTER SLOTS lists no master (cluster not ready)".into(),
                from,
            ));
        }
        m.nodes.sort();
        m.nodes.dedup();
        Ok(m)
    }
}

/// `host:port`, with an IPv6 host in brackets (as URLs want it); an empty
/// host is `from`'s (the node that answered).
fn join_addr(host: &str, port: &str, from: &str) -> Option<String> {
    let host = if host.is_empty() {
        from.rsplit_once(':')?.0
    } else {
        host
    };
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// `slot host:port` of a MOVED/ASK.
pub(super) fn redirect(details: Option<&str>, from: &str) -> Option<(u16, String)> {
    let (slot, addr) = details?.split_once(' ')?;
    let slot: u16 = slot.parse().ok().filter(|s| *s < 16384)?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((slot, join_addr(host, port, from)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_parse() {
        assert_eq!(
            redirect(Some("3999 127.0.0.1:6381"), "127.0.0.1:7000"),
            Some((3999, "127.0.0.1:6381".to_string()))
        );
        assert_eq!(
            redirect(Some("12 :6381"), "10.0.0.1:7000"),
            Some((12, "10.0.0.1:6381".to_string()))
        );
        assert_eq!(redirect(Some("99999 h:1"), "x:1"), None);
        assert_eq!(
            redirect(Some("7 ::1:7001"), "[::1]:7000"),
            Some((7, "[::1]:7001".to_string()))
        );
        assert_eq!(
            redirect(Some("7 :7001"), "[::1]:7000"),
            Some((7, "[::1]:7001".to_string()))
        );
        assert_eq!(redirect(None, "x:1"), None);
    }

    #[test]
    fn replicas_are_kept_per_master() {
        let node = |h: &str, p: i64| Value::Array(vec![Value::BulkString(h.into()), Value::Int(p)]);
        let range = |a, b, nodes: Vec<Value>| {
            let mut v = vec![Value::Int(a), Value::Int(b)];
            v.extend(nodes);
            Value::Array(v)
        };
        let v = Value::Array(vec![
            range(0, 99, vec![node("h", 1), node("h", 2)]),
            range(100, 16383, vec![node("", 3)]),
        ]);
        let m = SlotMap::parse(v, "x:9").unwrap();
        assert_eq!(m.masters, ["h:1", "x:3"]);
        assert_eq!(m.replicas, [vec!["h:2".to_string()], vec![]]);
        assert_eq!((m.owner[99], m.owner[100]), (0, 1));
        assert_eq!(m.nodes, ["h:1", "h:2", "x:3"]);
    }
}
