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

use std::sync::atomic::{AtomicU32, Ordering};
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

/// The sender id of a configuration's messages, shared by every clone of
/// the [`super::RedisConfig`] it belongs to: the first publishing cache
/// opened from the configuration sends as it, and a tier built with the
/// configuration over that cache (one URL opens both) subscribes as it, so
/// it skips the messages of its own writes. A second cache from the same
/// configuration draws an id of its own; a tier then cannot tell which
/// cache it is over, and sends and skips as itself (an own write's echo
/// costs one extra miss).
#[derive(Clone, Default)]
pub(crate) struct Origin(Arc<OriginCell>);

#[derive(Default)]
struct OriginCell {
    id: OnceLock<u64>,
    /// Publishing caches opened from the configuration.
    caches: AtomicU32,
}

fn fresh_id() -> u64 {
    std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        (std::process::id(), std::time::SystemTime::now()),
    )
}

impl Origin {
    /// The id a publishing cache sends as: the shared one for the first.
    pub(crate) fn claim(&self) -> u64 {
        if self.0.caches.fetch_add(1, Ordering::AcqRel) == 0 {
            *self.0.id.get_or_init(fresh_id)
        } else {
            fresh_id()
        }
    }

    /// The id of the one publishing cache opened from the configuration,
    /// if exactly one was: a tier over it sends and skips as it.
    pub(crate) fn sole_cache(&self) -> Option<u64> {
        (self.0.caches.load(Ordering::Acquire) == 1).then(|| *self.0.id.get_or_init(fresh_id))
    }

    /// An id of its own, for a tier that shares none.
    pub(crate) fn fresh() -> u64 {
        fresh_id()
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
        assert_eq!(o.sole_cache(), None, "no cache yet");
        let first = o.clone().claim();
        assert_eq!(o.sole_cache(), Some(first));
        assert_ne!(o.claim(), first, "a second cache shares no id");
        assert_eq!(o.sole_cache(), None);
        assert_ne!(Origin::default().claim(), first);
    }
}
