//! Key mapping: `namespace:key` names, cluster hash slots, SCAN patterns and
//! `PX` expiries.

use std::time::Duration;

use super::BACKEND;

/// The largest `PX` sent. Redis refuses a PX whose expiry (now + PX, in ms)
/// overflows an i64 ("invalid expire time"); half of i64::MAX (about 146
/// million years) always fits, so longer TTLs are clamped to it.
pub(super) const MAX_PX: u64 = (i64::MAX / 2) as u64;
use crate::error::{Error, ErrorKind, Result};

/// Milliseconds for `PX`: at least 1, at most [`MAX_PX`].
pub(super) fn px_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_PX)
}

/// Refuses a namespace that could share keys with another: keys are
/// `NS:KEY`, so `app` and `app:v2` would overlap (`v2:x` in one is `x` in
/// the other), and `clear` of `app` would delete `app:v2`'s keys.
pub(super) fn check_namespace(ns: Option<&str>) -> Result<()> {
    match ns {
        Some(ns) if ns.contains(':') => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "Redis namespace {ns:?} contains ':': keys are stored as NAMESPACE:KEY, so it \
                 would share keys with namespace {:?}; use another separator ('-', '.', '/')",
                ns.split(':').next().unwrap_or("")
            ),
        )
        .with_backend(BACKEND)),
        _ => Ok(()),
    }
}

/// Hash slot of a key (CRC16/XMODEM of the key or its `{hash tag}`, mod 16384).
pub fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % 16384
}

pub(super) fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Escapes glob characters so SCAN MATCH treats the namespace literally.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
