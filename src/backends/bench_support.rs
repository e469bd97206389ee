//! Internals that this crate's benchmarks, integration tests and the CLI's
//! `bench` command need and users do not: hidden from the docs, no stability
//! promise. Also reachable as `unicache::bench_support`.

/// The SQLite table and write statement, for raw-rusqlite baselines that
/// must write exactly what [`crate::backends::sqlite::SqliteCache`] writes.
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use crate::backends::sqlite::schema::{INSERT, SCHEMA};
}

/// The file log's line codec, for fuzzing and for writing logs by hand.
#[cfg(feature = "file")]
pub mod file {
    pub use crate::backends::file::codec::{
        HEADER, HEADER_V1, LineError, Op, decode_line, encode_line,
    };
}

/// Redis Cluster key slots, for tests that migrate a key's slot.
#[cfg(feature = "redis")]
pub mod redis {
    pub use crate::backends::redis::keys::hash_slot;
}

/// Which memcached server holds a key, for raw per-server baselines.
#[cfg(feature = "memcached")]
pub mod memcached {
    use crate::backends::memcached::MemcachedCache;

    /// The `host:port` of the server that holds `server_key` (a key as sent).
    pub fn server_addr<'a>(cache: &'a MemcachedCache, server_key: &str) -> &'a str {
        cache.server_addr(server_key)
    }
}
