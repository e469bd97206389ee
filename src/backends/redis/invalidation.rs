//! Key-only invalidation messages for the in-process L1s of tiered caches
//! (`l1=N`) in other processes: published by every Redis write (this
//! backend's own, unless `publish=0`) and by the tier, read by the tier's
//! subscriber (`crate::tiered`).
//!
//! One channel per Redis database and namespace, `unicache:l1:<db>:<ns>`
//! (pub/sub is server-wide, so the database is part of the name). A single
//! server uses `PUBLISH`; a cluster `SPUBLISH` on the channel's shard.
//! Messages are `<origin: 16 hex digits><kind><payload>`: `k<key>` one key,
//! `m<JSON array>` several, `c` the namespace was cleared. A subscriber
//! skips the messages of its own origin (its own writes, already in its L1).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// What a write tells the other processes.
pub(crate) enum Msg<'a> {
    /// These keys changed.
    Keys(&'a [&'a str]),
    /// The namespace was cleared.
    Clear,
}

/// A message as received.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// These keys changed.
    Keys(Vec<String>),
    /// The namespace was cleared.
    Clear,
}

/// The channel of database `db` and `namespace`.
pub(crate) fn channel(db: i64, namespace: Option<&str>) -> String {
    format!("unicache:l1:{db}:{}", namespace.unwrap_or(""))
}

/// The database a node URL names (0 when it names none).
pub(crate) fn db_of(node: &str) -> i64 {
    use redis::IntoConnectionInfo;
    node.into_connection_info()
        .map(|i| i.redis_settings().db())
        .unwrap_or(0)
}

pub(crate) fn encode(origin: u64, msg: &Msg<'_>) -> Vec<u8> {
    let mut out = format!("{origin:016x}").into_bytes();
    match msg {
        Msg::Keys([k]) => {
            out.push(b'k');
            out.extend_from_slice(k.as_bytes());
        }
        Msg::Keys(keys) => {
            out.push(b'm');
            out.extend(serde_json::to_vec(keys).unwrap_or_default());
        }
        Msg::Clear => out.push(b'c'),
    }
    out
}

/// Decodes `payload`, unless it is `own` origin's or malformed.
pub(crate) fn decode(own: u64, payload: &[u8]) -> Option<Received> {
    if payload.len() < 17 || payload[..16] == *format!("{own:016x}").as_bytes() {
        return None;
    }
    let body = &payload[17..];
    match payload[16] {
        b'k' => Some(Received::Keys(vec![std::str::from_utf8(body).ok()?.to_string()])),
        b'm' => serde_json::from_slice(body).ok().map(Received::Keys),
        b'c' => Some(Received::Clear),
        _ => None,
    }
}

/// The sender id of a configuration's messages: drawn once, shared by every
/// clone of the [`super::RedisConfig`] it belongs to, so a tier and the
/// Redis cache under it (opened from one URL) are one origin, and the
/// tier's subscriber skips the messages of the cache's own writes. It also
/// records whether a cache opened from the configuration publishes: the
/// tier over it then leaves the publishing to it.
#[derive(Clone, Default)]
pub(crate) struct Origin(Arc<(OnceLock<u64>, AtomicBool)>);

impl Origin {
    /// A cache opened from this configuration publishes its writes.
    pub(crate) fn set_publishing(&self) {
        self.0.1.store(true, Ordering::Release);
    }

    /// Whether a cache opened from this configuration publishes its writes.
    pub(crate) fn publishing(&self) -> bool {
        self.0.1.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self) -> u64 {
        *self.0.0.get_or_init(|| {
            std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                (std::process::id(), std::time::SystemTime::now()),
            )
        })
    }
}

/// Configurations compare by what they reach, not by who sends.
impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Origin {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_own_are_skipped() {
        assert_eq!(decode(1, &encode(1, &Msg::Keys(&["a"]))), None);
        assert_eq!(
            decode(1, &encode(2, &Msg::Keys(&["a"]))),
            Some(Received::Keys(vec!["a".into()]))
        );
        assert_eq!(
            decode(1, &encode(2, &Msg::Keys(&["b", "c\nd"]))),
            Some(Received::Keys(vec!["b".into(), "c\nd".into()]))
        );
        assert_eq!(decode(1, &encode(2, &Msg::Clear)), Some(Received::Clear));
        assert_eq!(decode(1, b"garbage"), None);
        assert_eq!(decode(1, b""), None);
        let o = Origin::default();
        assert_eq!(o.get(), o.clone().get());
        assert_ne!(o.get(), Origin::default().get());
    }
}
