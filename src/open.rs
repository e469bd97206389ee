//! From a URL to an opened cache: the one place that parses a whole cache
//! URL into a backend and the layers over it, and stacks them.
//!
//! The stack, from the outside in, and why in this order:
//!
//! | layer | turned on by | why here |
//! |---|---|---|
//! | [`Handle`] (read-through) | always | `get_or_set` sees the cache the user sees |
//! | [`observe`](crate::observe) | `observe=1`, [`Stack::observe`] | spans and metrics count the operations the caller made, not what the layers below turn them into |
//! | [`envelope`](crate::readthrough::envelope) | `fail_safe=1`, `refresh_ahead=F` | the logical expiry is checked on every read, L1 hits included |
//! | [`compress`](crate::compress) | `compress=zstd\|zlib`, [`Stack::compress`] | under the envelope, so fail-safe's and refresh-ahead's own reads of stale values decompress too; over the tier, so L1 holds (and the backplane never carries) anything but compressed bytes; without the envelope the stored bytes are exactly those of Python's `compress=` |
//! | [`tiered`](crate::tiered) (L1) | `l1=N` | caches the enveloped bytes with L2's physical TTL, so it never outlives L2 |
//! | the backend | the scheme | |
//!
//! The CLI and the Python package open caches through [`Stack`] too, so
//! every front-end gets the same stack. This module sits above the
//! backends and the layers; nothing below imports it.

use std::path::Path;
use std::sync::Arc;

use crate::backends::{self, BackendConfig, Bare};
use crate::cache::{Cache, CacheOptions};
use crate::compress::CompressConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::readthrough::{Config, Enveloped, Handle, ReadThroughOptions};
use crate::tiered::TierConfig;
use crate::url::{Query, Target, path_to_url_body, redact_credentials};

/// A parsed cache URL: which backend, its settings, and the layers' options.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct ParsedUrl {
    /// Backend-specific settings.
    pub backend: BackendConfig,
    /// Namespace, default TTL: what the backend needs.
    pub options: CacheOptions,
    /// What the layers above the backend read from the URL.
    pub layers: LayerOptions,
    /// The URL with any password replaced by `***`.
    pub redacted: String,
}

impl std::fmt::Debug for ParsedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config may hold a password: show only the redacted URL.
        f.debug_struct("ParsedUrl")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

/// The options of the layers over a backend, each parsed by its layer.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct LayerOptions {
    /// The in-process L1 (`l1=N`, `l1_ttl`, `l1_max_bytes`,
    /// `l1_invalidation`; see [`crate::tiered`]).
    pub tier: Option<TierConfig>,
    /// Read-through and fail-safe (`lock`, `lease_ttl`, `factory_timeout`,
    /// `ttl_jitter`, `fail_safe`, ...; see [`crate::readthrough`]).
    pub read_through: ReadThroughOptions,
    /// Spans and metrics per operation (`observe=1`; see [`crate::observe`]).
    pub observe: bool,
    /// Value compression (`compress=zstd|zlib`, `compress_min_size=N`; see
    /// [`crate::compress`]).
    pub compress: Option<CompressConfig>,
}

/// Every URL option a layer reads.
fn layer_options() -> Vec<&'static str> {
    let mut all: Vec<&str> = crate::tiered::URL_OPTIONS.to_vec();
    all.extend(crate::readthrough::URL_OPTIONS);
    all.extend(crate::observe::URL_OPTIONS);
    all.extend(crate::compress::URL_OPTIONS);
    all
}

fn layer_claims(name: &str) -> bool {
    crate::tiered::claims(name)
        || crate::readthrough::URL_OPTIONS.contains(&name)
        || crate::observe::URL_OPTIONS.contains(&name)
        || crate::compress::URL_OPTIONS.contains(&name)
}

/// Parses a cache URL: the scheme picks the backend (see
/// [`crate::backends`]), whose own code reads the rest once the layers
/// took their options. Bare names are not accepted here (see
/// [`resolve_name`]); unknown schemes get [`ErrorKind::UnknownBackend`],
/// compiled-out ones [`ErrorKind::FeatureDisabled`].
pub fn parse(url: &str) -> Result<ParsedUrl> {
    let url = url.trim();
    let (scheme, rest) = match url.split_once(':') {
        Some((s, r)) if !s.is_empty() => (s.to_ascii_lowercase(), r),
        _ => return Err(unknown_backend(url)),
    };
    let redacted = redact(url);
    let entry = backends::lookup(&scheme).ok_or_else(|| unknown_backend(url))?;
    let (rest, parts) = crate::url::take_query_parts(rest, layer_claims);
    let (tier_parts, other): (Vec<String>, Vec<String>) = parts
        .into_iter()
        .partition(|p| crate::tiered::claims(p.split_once('=').map_or(p.as_str(), |(k, _)| k)));
    let tier = crate::tiered::from_url_parts(&tier_parts, &redacted)?;
    let joined = other.join("&");
    let mut q = Query::parse(entry.name, Some(&joined))?;
    let read_through = ReadThroughOptions::from_query(&mut q)?;
    let observe = crate::observe::from_query(&mut q)?;
    let compress = crate::compress::from_query(&mut q)?;
    let known = layer_options();
    let target = Target {
        scheme: &scheme,
        rest: &rest,
        redacted: &redacted,
        layer_options: &known,
    };
    q.finish(&[], &target)?;
    let (backend, options) = entry.parse(&target)?;
    Ok(ParsedUrl {
        backend,
        options,
        layers: LayerOptions {
            tier,
            read_through,
            observe,
            compress,
        },
        redacted,
    })
}

/// Replaces the password of a URL (`scheme://user:pass@host`, a
/// `password=` option) by `***`; a local store's URL (whose path may hold
/// `@`) is returned as it is. Works on URLs that do not parse.
pub fn redact(url: &str) -> String {
    let local = url
        .split_once(':')
        .and_then(|(s, _)| backends::lookup(&s.to_ascii_lowercase()))
        .is_some_and(|e| e.local);
    if local {
        url.to_string()
    } else {
        redact_credentials(url)
    }
}

fn unknown_backend(url: &str) -> Error {
    let shown = redact(url);
    Error::new(
        ErrorKind::UnknownBackend,
        format!(
            "{shown:?} (known: {}; bare names: {})",
            backends::examples().join(", "),
            backends::names().join(", ")
        ),
    )
}

/// Resolves a backend's bare name (the seed's `memory`, `file`, `sqlite`,
/// plus `redis` and `memcached` on their default local ports) to a URL;
/// persistent stores go in `dir`. Anything containing `:` is returned as-is
/// (it is already a URL).
pub fn resolve_name(name: &str, dir: &Path) -> Result<String> {
    let n = name.trim();
    if n.contains(':') {
        return Ok(n.to_string());
    }
    match backends::lookup_name(n).map(|e| e.bare) {
        Some(Bare::Url(url)) => Ok(url.to_string()),
        Some(Bare::File(scheme, file)) => {
            Ok(format!("{scheme}:{}", path_to_url_body(&dir.join(file))))
        }
        None => Err(unknown_backend(n)),
    }
}

/// Opens a cache from a URL such as `memory://`, `sqlite:data/cache.sqlite3`,
/// `file:data/cache.jsonl`, `redis://127.0.0.1:6379` or
/// `memcached://127.0.0.1:11211`, with the layers its options ask for, as
/// a [`Handle`]: the [`Cache`] (through `Deref`) plus read-through
/// ([`Handle::get_or_set`]). See [`Stack`] for the order of the layers.
pub async fn open(url: &str) -> Result<Handle> {
    Stack::from_url(url)?.open().await
}

/// Like [`open`], with backend options that override the URL's (namespace,
/// default TTL, `must_exist`). Layer options in code: [`Stack`].
pub async fn open_with(url: &str, options: CacheOptions) -> Result<Handle> {
    Stack::from_url(url)?.options(options).open().await
}

/// A stack of layers over a backend, ready to open: a parsed URL plus
/// options given in code, which win over the URL's. The order of the
/// layers is fixed (see [the module](self)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> unicache::Result<()> {
/// use unicache::{CacheOptions, Stack};
///
/// let cache = Stack::from_url("memory://?l1=100")?
///     .options(CacheOptions::new().namespace("app"))
///     .observe(true)
///     .open()
///     .await?;
/// cache.set("k", b"v", None).await?;
/// assert_eq!(cache.get("k").await?.as_deref(), Some(&b"v"[..]));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Stack {
    parsed: ParsedUrl,
}

impl Stack {
    /// The stack a parsed URL describes.
    pub fn new(parsed: ParsedUrl) -> Self {
        Stack { parsed }
    }

    /// The stack a URL describes.
    pub fn from_url(url: &str) -> Result<Self> {
        parse(url).map(Stack::new)
    }

    /// The URL as parsed, with the overrides given so far.
    pub fn parsed(&self) -> &ParsedUrl {
        &self.parsed
    }

    /// Backend options that win over the URL's: a namespace, default TTL or
    /// bound that is set; `must_exist` when either asks for it.
    pub fn options(mut self, overrides: CacheOptions) -> Self {
        let o = &mut self.parsed.options;
        if overrides.namespace.is_some() {
            o.namespace = overrides.namespace;
        }
        if overrides.default_ttl.is_some() {
            o.default_ttl = overrides.default_ttl;
        }
        o.must_exist |= overrides.must_exist;
        // Each bound given in code replaces the URL's.
        let (b, ob) = (&mut o.bounds, overrides.bounds);
        b.max_bytes = ob.max_bytes.or(b.max_bytes);
        b.max_entries = ob.max_entries.or(b.max_entries);
        b.max_age = ob.max_age.or(b.max_age);
        self
    }

    /// Puts an L1 over the backend (or none), instead of the URL's.
    pub fn tier(mut self, tier: Option<TierConfig>) -> Self {
        self.parsed.layers.tier = tier;
        self
    }

    /// Read-through options; each field set wins over the URL's.
    pub fn read_through(mut self, rt: ReadThroughOptions) -> Self {
        self.parsed.layers.read_through = rt.or(&self.parsed.layers.read_through);
        self
    }

    /// Turns the observe layer on (the URL's `observe=1` also does).
    pub fn observe(mut self, yes: bool) -> Self {
        self.parsed.layers.observe |= yes;
        self
    }

    /// Compresses values (or not), instead of the URL's `compress=`.
    pub fn compress(mut self, config: Option<CompressConfig>) -> Self {
        self.parsed.layers.compress = config;
        self
    }

    /// Opens the backend and stacks the layers over it, with the
    /// read-through [`Handle`] on top.
    pub async fn open(self) -> Result<Handle> {
        let (cache, config, envelope) = self.build().await?;
        Ok(Handle::over(cache, config, envelope))
    }

    /// [`Stack::open`] without the [`Handle`]: the stacked cache.
    pub async fn open_cache(self) -> Result<Arc<dyn Cache>> {
        Ok(self.build().await?.0)
    }

    async fn build(self) -> Result<(Arc<dyn Cache>, Config, Option<Arc<Enveloped>>)> {
        let ParsedUrl {
            backend,
            options,
            layers,
            ..
        } = self.parsed;
        layers.read_through.check()?;
        let l2 = backends::open(backend.clone(), options.clone()).await?;
        let cache = match layers.tier {
            Some(tier) => crate::tiered::wrap(l2, tier, &backend, &options).await?,
            None => l2,
        };
        let cache = match layers.compress {
            Some(c) => crate::compress::wrap(cache, c),
            None => cache,
        };
        let shared = cache.capabilities().shared;
        let config = Config::from_options(&layers.read_through, options.default_ttl, shared);
        let envelope = Enveloped::for_config(&cache, &config);
        let cache = match &envelope {
            Some(e) => e.clone() as Arc<dyn Cache>,
            None => cache,
        };
        let cache = if layers.observe {
            crate::observe::instrument(cache, options.namespace.as_deref())
        } else {
            cache
        };
        Ok((cache, config, envelope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_paths() {
        let p = |u: &str| match parse(u).unwrap().backend {
            BackendConfig::Sqlite(c) => c.path,
            _ => panic!(),
        };
        assert_eq!(p("sqlite:data/c.db"), PathBuf::from("data/c.db"));
        assert_eq!(p("sqlite:///abs/c.db"), PathBuf::from("/abs/c.db"));
        assert_eq!(p("sqlite:/abs/c.db"), PathBuf::from("/abs/c.db"));
        assert_eq!(p("sqlite://rel/c.db?ttl=5s"), PathBuf::from("rel/c.db"));
        assert!(parse("sqlite:").is_err());
        assert!(parse("sqlite::memory:").is_err());
    }

    #[cfg(feature = "memory")]
    #[test]
    fn memory_options() {
        let u = parse("memory://?capacity=10&ttl=5m&namespace=a").unwrap();
        assert_eq!(
            u.backend,
            BackendConfig::Memory(crate::backends::memory::MemoryConfig {
                capacity: 10,
                max_bytes: None
            })
        );
        assert_eq!(u.options.default_ttl, Some(Duration::from_secs(300)));
        assert_eq!(u.options.namespace.as_deref(), Some("a"));
        let e = parse("memory://?capcity=10").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidUrl);
        assert!(e.to_string().contains("capcity"), "{e}");
        assert!(parse("memory://?capacity=x").is_err());
        assert!(parse("memory://?ttl=0").is_err());
    }

    #[test]
    fn unknown_scheme_and_names() {
        assert_eq!(
            parse("mongo://x").unwrap_err().kind(),
            ErrorKind::UnknownBackend
        );
        assert_eq!(
            parse("memory").unwrap_err().kind(),
            ErrorKind::UnknownBackend
        );
        let d = std::path::Path::new("out");
        assert_eq!(resolve_name("memory", d).unwrap(), "memory://");
        assert_eq!(
            resolve_name("sqlite", d).unwrap(),
            "sqlite:out/cache.sqlite3"
        );
        assert!(resolve_name("mongo", d).is_err());
    }

    #[test]
    fn passwords_redacted() {
        let u = "redis://user:s3cret@host:6379/0";
        assert_eq!(redact(u), "redis://user:***@host:6379/0");
        assert_eq!(redact("redis://s3cret@h:1"), "redis://***@h:1");
        // One userinfo for every node, up to the last `@`: per-node
        // credentials are not a form (a password may hold `,` and `@`).
        assert_eq!(
            redact("redis+cluster://:pw@a:1,b:2"),
            "redis+cluster://:***@a:1,b:2"
        );
        assert_eq!(
            redact("redis+cluster://:pw@a:1,:pw@b:2"),
            "redis+cluster://:***@b:2"
        );
        #[cfg(feature = "redis")]
        for (bad, says) in [
            (
                "redis://h:1?read_from=replica",
                "needs redis+sentinel:// or redis+cluster://",
            ),
            (
                "redis+cluster://h:1?read_from=slave",
                "master, replica or nearest",
            ),
            ("redis+cluster://h:1?wait=1", "not redis+cluster"),
            (
                "redis+sentinel://h:1/m?read_from=slave",
                "master, replica or nearest",
            ),
            ("redis+sentinel://h:1/m?bogus=1", "sentinel_password"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Sentinel: the data node's password and the sentinels'.
        let s = "redis+sentinel://:pw@a:1,b:2/m?sentinel_password=spw&namespace=n";
        assert_eq!(
            redact(s),
            "redis+sentinel://:***@a:1,b:2/m?sentinel_password=***&namespace=n"
        );
        #[cfg(feature = "redis")]
        {
            let p = parse(s).unwrap();
            assert!(!format!("{p:?} {:?}", p.backend).contains("spw"));
        }
        #[cfg(feature = "redis")]
        {
            let p = parse(u).unwrap();
            assert!(!p.redacted.contains("s3cret"));
            assert!(!format!("{p:?}").contains("s3cret"));
            assert!(!format!("{:?}", p.backend).contains("s3cret"));
        }
        let e = parse("redis://user:s3cret@host:notaport").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = parse("bogus://user:s3cret@host").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    /// Passwords not percent-encoded, holding `? , / # @ :` or `%`: the
    /// userinfo runs to the last `@`; nothing shown holds the password; the
    /// driver gets it back exactly.
    #[cfg(feature = "redis")]
    #[test]
    fn unencoded_passwords_are_never_shown_and_reach_the_driver() {
        for pw in [
            "QM?ARKsecret",
            "a,b,c",
            "x/y/z",
            "h#sh",
            "at@sign",
            "c:o:l",
            "50%off",
            "p%3Fq",
        ] {
            for scheme in ["redis", "rediss", "redis+cluster"] {
                let url = format!("{scheme}://alice:{pw}@host:6379?namespace=n");
                let p = parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
                assert_eq!(
                    p.redacted,
                    format!("{scheme}://alice:***@host:6379?namespace=n")
                );
                assert_eq!(p.options.namespace.as_deref(), Some("n"));
                let BackendConfig::Redis(c) = p.backend else {
                    panic!()
                };
                let nodes = c.nodes;
                let info =
                    redis::IntoConnectionInfo::into_connection_info(nodes[0].as_str()).unwrap();
                let want = percent_encoding::percent_decode_str(pw)
                    .decode_utf8()
                    .unwrap();
                assert_eq!(info.redis_settings().password(), Some(&*want), "{url}");
                assert_eq!(info.redis_settings().username(), Some("alice"));
                for bad in [
                    format!("{url}&bogus=1"),
                    format!("{url}&ttl=x"),
                    url.replace(":6379", ":99999"),
                ] {
                    let e = parse(&bad).unwrap_err().to_string();
                    assert!(!e.contains(pw), "{e}");
                }
            }
            let e = parse(&format!("memcached://u:{pw}@h:1"))
                .unwrap_err()
                .to_string();
            assert!(!e.contains(pw) && e.contains("credentials"), "{e}");
            assert!(!redact(&format!("mongo://u:{pw}@h")).contains(pw));
        }
        let e = parse("redis://alice:QM?ARKsecret@host").unwrap();
        assert_eq!(e.redacted, "redis://alice:***@host");
        match parse("redis+cluster://u:p,w@a:1,b:2").unwrap().backend {
            BackendConfig::Redis(c) => {
                assert_eq!(c.nodes, ["redis://u:p%2Cw@a:1", "redis://u:p%2Cw@b:2"])
            }
            _ => panic!(),
        }
    }

    /// Bare names in a directory whose name holds URL syntax resolve to a
    /// URL that parses back to exactly that directory.
    #[cfg(all(feature = "sqlite", feature = "file"))]
    #[test]
    fn bare_names_round_trip_any_directory() {
        for dir in [
            "pct%41dir",
            "q?x=1",
            "h#sh",
            "with space",
            "a+b",
            "//srv/share",
            "/abs/d",
            "ü",
        ] {
            let d = std::path::Path::new(dir);
            for (name, file) in [("sqlite", "cache.sqlite3"), ("file", "cache_file.jsonl")] {
                let url = resolve_name(name, d).unwrap();
                let path = match parse(&url).unwrap().backend {
                    BackendConfig::Sqlite(c) => c.path,
                    BackendConfig::File(c) => c.path,
                    _ => panic!(),
                };
                assert_eq!(path, d.join(file), "{dir} -> {url}");
            }
        }
        assert_eq!(
            resolve_name("sqlite", "out".as_ref()).unwrap(),
            "sqlite:out/cache.sqlite3"
        );
    }

    #[cfg(all(feature = "redis", feature = "memcached"))]
    #[test]
    fn redis_and_memcached() {
        match parse("redis+cluster://a:1,b:2?namespace=x")
            .unwrap()
            .backend
        {
            BackendConfig::Redis(c) => {
                assert!(c.cluster);
                assert_eq!(c.nodes, vec!["redis://a:1", "redis://b:2"]);
                assert!(!c.reads_from_replicas());
            }
            _ => panic!(),
        }
        for how in ["replica", "nearest"] {
            match parse(&format!("redis+cluster://a:1?read_from={how}"))
                .unwrap()
                .backend
            {
                BackendConfig::Redis(c) => assert!(c.cluster && c.reads_from_replicas()),
                _ => panic!(),
            }
        }
        assert!(parse("redis://a:1,b:2").is_err());
        match parse("memcached://a,b:2").unwrap().backend {
            BackendConfig::Memcached(c) => {
                assert_eq!(c.servers, vec!["a:11211", "b:2"])
            }
            _ => panic!(),
        }
    }
}
