//! Consistent hashing: which server owns a key.

/// Points per server on the hash ring.
pub(crate) const VNODES: usize = 160;

/// Builds a consistent-hash ring: `VNODES` points per server address.
pub(crate) fn build_ring(addrs: &[String]) -> Vec<(u64, usize)> {
    let mut ring: Vec<(u64, usize)> = addrs
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            (0..VNODES).map(move |v| (xxhash_rust::xxh3::xxh3_64(format!("{a}#{v}").as_bytes()), i))
        })
        .collect();
    ring.sort_unstable();
    ring
}

/// The server index owning `key` on `ring`.
pub(crate) fn ring_lookup(ring: &[(u64, usize)], key: &[u8]) -> usize {
    let h = xxhash_rust::xxh3::xxh3_64(key);
    let i = ring.partition_point(|(p, _)| *p < h);
    ring[if i == ring.len() { 0 } else { i }].1
}
