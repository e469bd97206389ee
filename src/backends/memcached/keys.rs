//! What memcached is sent for a (namespace, key, TTL): the key mapping,
//! namespace escaping and version tokens, and expiry times.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::BACKEND;
use crate::error::{Error, ErrorKind, Result};

/// Longest key memcached accepts.
pub(crate) const MAX_KEY: usize = 250;
/// TTLs above this many seconds are sent as absolute Unix times (memcached's rule).
pub(crate) const RELATIVE_TTL_LIMIT: u64 = 30 * 24 * 3600;
/// The latest absolute expiry memcached can represent (2^31-1 s: 2038-01-19
/// 03:14:07 UTC); a later one would be read as already expired.
pub(crate) const MAX_EXPTIME: u64 = i32::MAX as u64;
/// Longest namespace, in bytes as given.
pub(crate) const MAX_NAMESPACE: usize = 64;
/// Longest namespace once `%` and `:` are escaped (keeps every mapped key,
/// hashed form included, within [`MAX_KEY`]).
pub(crate) const MAX_NAMESPACE_ESCAPED: usize = 160;
/// Longest namespace version token accepted from a server.
pub(crate) const MAX_TOKEN: usize = 48;
/// The version key's second segment: never a version token (those are hex
/// digits and dots), so it cannot equal a user key's prefix.
pub(crate) const VERSION_KEY: &str = "__unicache_ns";
/// A key memcached accepts as-is: 1..=250 bytes, no whitespace or control bytes.
pub(crate) fn is_legal_key(k: &[u8]) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY && k.iter().all(|&b| b > 0x20 && b != 0x7f)
}
/// The exptime memcached expects for a TTL: seconds, or an absolute Unix
/// time past 30 days, clamped to [`MAX_EXPTIME`] (so `Duration::MAX` means
/// "until 2038", not "already expired"). Sub-second TTLs round up to 1 s.
pub(crate) fn exptime(ttl: Duration, now_unix: u64) -> u64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1);
    if secs > RELATIVE_TTL_LIMIT {
        now_unix.saturating_add(secs).min(MAX_EXPTIME)
    } else {
        secs
    }
}

/// The namespace as a key prefix: `%` and `:` percent-escaped, so the first
/// `:` of a mapped key always ends the namespace (`app:v2` is `app%3Av2`,
/// never `app` + `v2`).
pub(crate) fn escape_namespace(ns: &str) -> String {
    if !ns.contains(['%', ':']) {
        return ns.to_string();
    }
    ns.replace('%', "%25").replace(':', "%3A")
}

/// Checks a namespace: 1-64 bytes that memcached takes in a key, at most
/// 160 once escaped.
pub(crate) fn check_namespace(ns: &str) -> Result<String> {
    let escaped = escape_namespace(ns);
    if ns.len() > MAX_NAMESPACE
        || escaped.len() > MAX_NAMESPACE_ESCAPED
        || !is_legal_key(ns.as_bytes())
    {
        return Err(Error::new(
            ErrorKind::InvalidUrl,
            format!(
                "namespace {ns:?} must be 1-{MAX_NAMESPACE} bytes without spaces or control \
                 characters (at most {MAX_NAMESPACE_ESCAPED} once each '%' and ':' is written as 3)"
            ),
        )
        .with_backend(BACKEND));
    }
    Ok(escaped)
}

/// A namespace version token as [`fresh_token`] makes them: hex digits and dots.
pub(crate) fn is_token(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_TOKEN
        && v.iter()
            .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'.')
}

/// The key sent to memcached for `key`: `prefix:version:key` (or `key`
/// without a namespace) when that is a legal memcached key and `key` does not
/// start with `#h`; otherwise `prefix:version:#h` + the 32 hex digits of the
/// key's xxh3-128 hash. `prefix` has no `:` (see [`escape_namespace`]) and
/// `version` none either, so two (namespace, key) pairs never share a key.
pub(crate) fn map_key(prefix: Option<&str>, version: &str, key: &str) -> String {
    // Built in one allocation: this runs once per key of every batch.
    let ns_len = prefix.map_or(0, |p| p.len() + version.len() + 2);
    let mut out = String::with_capacity(ns_len + key.len().max(34));
    if let Some(p) = prefix {
        out.push_str(p);
        out.push(':');
        out.push_str(version);
        out.push(':');
    }
    out.push_str(key);
    if !is_legal_key(out.as_bytes()) || key.starts_with("#h") {
        use std::fmt::Write;
        out.truncate(ns_len);
        let _ = write!(
            out,
            "#h{:032x}",
            xxhash_rust::xxh3::xxh3_128(key.as_bytes())
        );
    }
    out
}

/// A namespace version never issued before: time in nanoseconds, process id
/// and a per-process counter (two clears in one millisecond must differ).
pub(crate) fn fresh_token() -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:x}.{:x}.{:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}
