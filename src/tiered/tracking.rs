//! Redis 6+ client-side caching as an invalidation source: the subscriber
//! connection (RESP3) also runs `CLIENT TRACKING ON BCAST PREFIX ns:`, so the
//! server pushes `invalidate` for every key under the namespace that any
//! client changes (`redis-cli SET`, other languages, expiry, eviction). On a
//! cluster each master gets a connection of its own (`cluster_tracking`).
//! Without a namespace the whole database is tracked. Our own writes come
//! back too and evict the entry this process just stored: one extra miss,
//! never a stale read.

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::l1::L1;
use super::stats::add;

/// Turns tracking on for this connection (broadcast mode, no key table on
/// the server).
pub(crate) async fn enable(
    conn: &mut MultiplexedConnection,
    prefix: Option<&str>,
) -> redis::RedisResult<()> {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("TRACKING").arg("ON").arg("BCAST");
    if let Some(p) = prefix {
        cmd.arg("PREFIX").arg(p);
    }
    cmd.query_async::<()>(conn).await
}

/// Applies one `invalidate` push: its keys (with the namespace prefix
/// stripped) are evicted; a nil list (FLUSHDB/FLUSHALL) flushes L1.
pub(crate) fn apply(l1: &L1, prefix: Option<&str>, data: &[Value]) {
    match data.first() {
        Some(Value::Array(keys)) => {
            for k in keys {
                let Value::BulkString(k) = k else { continue };
                let Ok(k) = std::str::from_utf8(k) else {
                    continue;
                };
                let k = match prefix {
                    Some(p) => match k.strip_prefix(p) {
                        Some(k) => k,
                        None => continue,
                    },
                    None => k,
                };
                l1.evict(k);
                add(&l1.stats.invalidations_received, 1);
            }
        }
        _ => {
            l1.flush();
            add(&l1.stats.invalidations_received, 1);
        }
    }
}
