//! Which backends and which stacks of layers the conformance suite runs
//! over, and how each is opened.
//!
//! [`open_stack`] is the one place that knows how to open "stack X over
//! backend Y": through the library's stack builder (`unicache::Stack`),
//! each layer turned on by its URL option, as users do.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use unicache::Cache;

use crate::common::servers;

/// A store the suite runs against. The servers are the ones shared by the
/// tests of one binary (`servers::shared_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    File,
    Redis,
    RedisCluster,
    /// Two memcached servers (consistent hashing between them).
    Memcached,
    /// A master, two replicas and three sentinels, by `redis+sentinel://`.
    Sentinel,
}

/// The layers over a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// The backend alone.
    Plain,
    /// The observe layer (spans, metrics).
    Observed,
    /// `fail_safe=1`: values go through the envelope layer.
    Enveloped,
    /// `l1=100`: an in-process L1 (on Redis with its pub/sub backplane).
    Tiered,
    /// Tier and envelope.
    TierEnvelope,
    /// `compress=zstd&compress_min_size=0`: every value that compresses
    /// goes through the compression layer.
    Compressed,
    /// Observe, envelope, compression (zlib) and tier.
    All,
}

impl Stack {
    fn observe(self) -> bool {
        matches!(self, Stack::Observed | Stack::All)
    }

    fn envelope(self) -> bool {
        matches!(self, Stack::Enveloped | Stack::TierEnvelope | Stack::All)
    }

    fn tier(self) -> bool {
        matches!(self, Stack::Tiered | Stack::TierEnvelope | Stack::All)
    }

    /// The `compress=` options of this stack, if any.
    fn compress(self) -> Option<&'static str> {
        match self {
            Stack::Compressed => Some("&compress=zstd&compress_min_size=0"),
            Stack::All => Some("&compress=zlib&compress_min_size=0"),
            _ => None,
        }
    }
}

/// One temp dir per test binary for the SQLite files and file logs.
fn tmp() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
}

impl Backend {
    /// The backend's URL without layers, for namespace `ns`. SQLite and the
    /// file log get one store per stack (`store`), shared by that stack's
    /// tests (namespaces keep them apart, as they would apps), so no store
    /// grows with all six stacks' data.
    pub fn url(self, store: Stack, ns: &str) -> String {
        match self {
            // Each memory:// URL is its own instance.
            Backend::Memory => format!("memory://?capacity=100000&namespace={ns}"),
            Backend::Sqlite => {
                let path = tmp().path().join(format!("{store:?}.sqlite3"));
                format!("sqlite:{}?namespace={ns}", path.display())
            }
            Backend::File => {
                let path = tmp().path().join(format!("{store:?}.log"));
                format!("file:{}?namespace={ns}", path.display())
            }
            Backend::Redis => {
                let port = servers::shared_redis().port;
                format!("redis://127.0.0.1:{port}?namespace={ns}")
            }
            Backend::RedisCluster => format!("{}?namespace={ns}", servers::shared_cluster().url()),
            Backend::Sentinel => {
                format!("{}?namespace={ns}", crate::common::sentinel::shared().url())
            }
            Backend::Memcached => {
                let [a, b] = servers::shared_memcached();
                format!(
                    "memcached://127.0.0.1:{},127.0.0.1:{}?namespace={ns}",
                    a.port, b.port
                )
            }
        }
    }

    /// Whether a second handle opened on the same URL sees the same data
    /// (every backend but memory://).
    pub fn shared(self) -> bool {
        self != Backend::Memory
    }

    /// The port of the single redis-server, for writes in its own protocol.
    pub fn raw_redis_port(self) -> Option<u16> {
        (self == Backend::Redis).then(|| servers::shared_redis().port)
    }
}

/// Opens `stack` over `backend` in namespace `ns`: the one function that
/// says how a stack is built.
pub async fn open_stack(backend: Backend, stack: Stack, ns: &str) -> Arc<dyn Cache> {
    open_stack_with(backend, stack, ns, "").await
}

/// [`open_stack`] with `extra` (`&opt=value...`) added to the backend's URL.
pub async fn open_stack_with(
    backend: Backend,
    stack: Stack,
    ns: &str,
    extra: &str,
) -> Arc<dyn Cache> {
    let mut url = backend.url(stack, ns);
    url.push_str(extra);
    if stack.tier() {
        url.push_str("&l1=100");
    }
    if stack.envelope() {
        url.push_str("&fail_safe=1");
    }
    if stack.observe() {
        url.push_str("&observe=1");
    }
    if let Some(c) = stack.compress() {
        url.push_str(c);
    }
    match unicache::Stack::from_url(&url).unwrap().open().await {
        Ok(h) => h.into(),
        Err(e) => panic!("cannot open {stack:?} over {backend:?} ({url}): {e}"),
    }
}

/// A client of the same store and namespace without any layer: what
/// another program (or an older unicache) reads and writes. `None` for
/// memory://, which no other client can reach.
pub async fn foreign(backend: Backend, stack: Stack, ns: &str) -> Option<Arc<dyn Cache>> {
    if !backend.shared() {
        return None;
    }
    let url = backend.url(stack, ns);
    Some(unicache::open(&url).await.unwrap().into())
}

/// `SET key value PX ttl` in Redis's own protocol (binary-safe), as
/// `redis-cli` or any other client writes it; asserts `+OK`.
pub fn redis_raw_set(port: u16, key: &str, value: &[u8], ttl: Duration) {
    use std::io::{Read, Write};
    let px = ttl.as_millis().to_string();
    let args: [&[u8]; 5] = [b"SET", key.as_bytes(), value, b"PX", px.as_bytes()];
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).unwrap();
    assert!(reply[..n].starts_with(b"+OK"), "{:?}", &reply[..n]);
}
