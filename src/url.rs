//! Cache URLs: the one place where `memory://`, `sqlite:PATH`, `file:PATH`,
//! `redis://`, `redis+cluster://` and `memcached://` are parsed.
//!
//! Parsing never touches the network or the disk. Passwords are kept only in
//! the parsed config and replaced by `***` in [`ParsedUrl::redacted`], which is
//! what errors, stats and summaries show.

// Each helper below serves some backends' parsers: unused when those are compiled out.
#![cfg_attr(
    not(all(
        feature = "memory",
        feature = "sqlite",
        feature = "file",
        feature = "redis",
        feature = "memcached"
    )),
    allow(dead_code)
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::cache::CacheOptions;
use crate::error::{Error, ErrorKind, Result};

/// A parsed cache URL: which backend, its settings, the common options.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParsedUrl {
    /// Backend-specific settings.
    pub backend: BackendConfig,
    /// Namespace and default TTL.
    pub options: CacheOptions,
    /// The URL with any password replaced by `***`.
    pub redacted: String,
    /// The in-process L1 asked for with `l1=N` (see [`crate::tiered`]).
    pub tier: Option<crate::tiered::TierConfig>,
}

impl std::fmt::Debug for ParsedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config may hold a password: show only the redacted URL.
        f.debug_struct("ParsedUrl")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

pub use crate::backends::BackendConfig;

/// What a backend's URL parser is handed: the scheme (lower case), the text
/// after `scheme:`, and the redacted URL for its messages.
pub(crate) struct Target<'a> {
    /// The scheme, lower case.
    pub scheme: &'a str,
    /// Everything after `scheme:`.
    pub rest: &'a str,
    /// The whole URL with any password replaced by `***`.
    pub redacted: &'a str,
}

/// Parses a duration: bare seconds (`30`) or humantime (`500ms`, `5m`, `1h30m`, `31d`).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if let Some(d) = number_and_unit(s) {
        return Ok(d);
    }
    humantime::parse_duration(s).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("bad duration {s:?} (use e.g. 30, 500ms, 5m, 2h, 31d)"),
        )
        .set_source(e)
    })
}

/// `<digits><unit>` with saturating arithmetic (humantime refuses e.g.
/// `99999999999999ms` as an overflow while bare seconds of any size are
/// taken); `None` for any other form, which humantime then parses.
fn number_and_unit(s: &str) -> Option<Duration> {
    let at = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(at);
    if n.is_empty() {
        return None;
    }
    // Digits only, so the one possible error is overflow: saturate.
    let n = n.parse::<u64>().unwrap_or(u64::MAX);
    let per_second = match unit {
        "ms" | "msec" => return Some(Duration::from_millis(n)),
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "y" | "year" | "years" => 31_557_600,
        _ => return None,
    };
    Some(Duration::from_secs(n.saturating_mul(per_second)))
}

/// A URL's query options, taken one by one by the backend that knows them.
pub(crate) struct Query {
    pub(crate) scheme: &'static str,
    pairs: BTreeMap<String, String>,
}

impl Query {
    pub(crate) fn parse(scheme: &'static str, q: Option<&str>) -> Result<Self> {
        let mut pairs = BTreeMap::new();
        for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k =
                decode(k).map_err(|_| url_err(format!("{scheme}: an option name {BAD_UTF8}")))?;
            // The value is not shown: it could be a secret.
            let v = decode(v).map_err(|_| url_err(format!("{scheme}: option {k:?} {BAD_UTF8}")))?;
            pairs.insert(k, v);
        }
        Ok(Query { scheme, pairs })
    }

    pub(crate) fn take(&mut self, k: &str) -> Option<String> {
        self.pairs.remove(k)
    }

    pub(crate) fn take_u64(&mut self, k: &str) -> Result<Option<u64>> {
        match self.take(k) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                url_err(format!(
                    "{}: option {k}={v:?} is not a whole number",
                    self.scheme
                ))
            }),
        }
    }

    pub(crate) fn take_duration(&mut self, k: &str) -> Result<Option<Duration>> {
        match self.take(k) {
            None => Ok(None),
            Some(v) => parse_duration(&v)
                .map(Some)
                .map_err(|e| url_err(format!("{}: option {k}: {}", self.scheme, e.message()))),
        }
    }

    pub(crate) fn common(&mut self) -> Result<CacheOptions> {
        let mut o = CacheOptions::new();
        if let Some(ns) = self.take("namespace").or_else(|| self.take("ns"))
            && !ns.is_empty()
        {
            o.namespace = Some(ns);
        }
        if let Some(ttl) = self.take_duration("ttl")? {
            if ttl.is_zero() {
                return Err(url_err(format!(
                    "{}: ttl must be greater than zero",
                    self.scheme
                )));
            }
            o.default_ttl = Some(ttl);
        }
        o.read_through = self.read_through()?;
        Ok(o)
    }

    /// The read-through options every backend's URL takes (used by
    /// [`crate::Handle`], not by the backend).
    fn read_through(&mut self) -> Result<crate::cache::ReadThroughOptions> {
        use crate::cache::LockMode;
        let mut rt = crate::cache::ReadThroughOptions::new();
        rt.lock = match self.take("lock").as_deref() {
            None => None,
            Some("local") => Some(LockMode::Local),
            Some("lease") => Some(LockMode::Lease),
            Some(v) => {
                let msg = format!("{}: lock={v:?} (use local or lease)", self.scheme);
                return Err(url_err(msg));
            }
        };
        for (name, slot) in [
            ("lease_ttl", &mut rt.lease_ttl),
            ("factory_timeout", &mut rt.factory_timeout),
        ] {
            *slot = self.take_duration(name)?;
            if slot.is_some_and(|d| d.is_zero()) {
                let msg = format!("{}: {name} must be greater than zero", self.scheme);
                return Err(url_err(msg));
            }
        }
        rt.ttl_jitter = self.take_duration("ttl_jitter")?;
        rt.fail_safe = crate::readthrough::FailSafeOptions::from_url(self)?;
        Ok(rt)
    }

    pub(crate) fn finish(self, known: &[&str]) -> Result<()> {
        if let Some(k) = self.pairs.keys().next() {
            let mut all: Vec<&str> = known.to_vec();
            all.extend(READ_THROUGH_OPTIONS);
            all.extend(crate::readthrough::failsafe::URL_OPTIONS);
            all.extend(["namespace", "ttl"]);
            return Err(url_err(format!(
                "{}: unknown option {k:?} (known: {})",
                self.scheme,
                all.join(", ")
            )));
        }
        Ok(())
    }
}

/// Options of every URL that the read-through handle reads.
const READ_THROUGH_OPTIONS: [&str; 4] = ["lock", "lease_ttl", "factory_timeout", "ttl_jitter"];

const BAD_UTF8: &str = "is not valid UTF-8 after percent-decoding";

fn decode(s: &str) -> std::result::Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
}

pub(crate) fn url_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidUrl, msg)
}

/// Splits `rest` at the first `?` into (body, query).
pub(crate) fn split_query(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    }
}

/// The path part of `sqlite:` / `file:` URLs: `sqlite:rel/p`, `sqlite:/abs/p`,
/// `sqlite:///abs/p`, `sqlite://rel/p`.
pub(crate) fn local_path(scheme: &'static str, body: &str) -> Result<PathBuf> {
    let p = if let Some(abs) = body.strip_prefix("///") {
        format!("/{abs}")
    } else if let Some(rel) = body.strip_prefix("//") {
        rel.to_string()
    } else {
        body.to_string()
    };
    let p = decode_path(scheme, &p)?;
    if p.as_os_str().is_empty() {
        return Err(url_err(format!(
            "{scheme}: missing path (e.g. {scheme}:data/cache.{})",
            if scheme == "sqlite" { "sqlite3" } else { "log" }
        )));
    }
    if p.as_os_str() == ":memory:" {
        return Err(url_err(format!(
            "{scheme}: ':memory:' would lose everything at exit; use memory:// for an in-process cache"
        )));
    }
    Ok(p)
}

/// `%XX` escapes decoded to bytes; on Unix any bytes make a path.
fn decode_path(scheme: &str, p: &str) -> Result<PathBuf> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(p).collect();
    #[cfg(unix)]
    {
        let _ = scheme;
        Ok(PathBuf::from(
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(bytes),
        ))
    }
    #[cfg(not(unix))]
    String::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| url_err(format!("{scheme}: path is not valid UTF-8")))
}

/// A path as the body of a `sqlite:`/`file:` URL that [`parse`] turns
/// back into exactly this path: `%`, `?` and `#` escaped (and, on Unix,
/// bytes that are not UTF-8), `//` kept from meaning "relative".
pub fn path_to_url_body(path: &std::path::Path) -> String {
    let mut out = String::new();
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    #[cfg(not(unix))]
    let lossy = path.to_string_lossy();
    #[cfg(not(unix))]
    let bytes = lossy.as_bytes();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '%' => out.push_str("%25"),
                '?' => out.push_str("%3F"),
                '#' => out.push_str("%23"),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // "//x" would read as the relative "x"; "///" + rest keeps it absolute.
    if out.starts_with("//") {
        out.insert(0, '/');
        out.insert(0, '/');
    }
    out
}

/// Schemes that name a local store and never carry credentials.
fn is_local(scheme: &str) -> bool {
    crate::backends::lookup(&scheme.to_ascii_lowercase()).is_some_and(|e| e.local)
}

/// Splits what follows `scheme://` into (userinfo, the rest). The userinfo
/// is everything up to the LAST `@`, so a password may hold `@ / ? # ,`
/// unencoded; an `@` in an option value must then be written `%40`.
pub(crate) fn split_userinfo(body: &str) -> (Option<&str>, &str) {
    match body.rfind('@') {
        Some(i) => (Some(&body[..i]), &body[i + 1..]),
        None => (None, body),
    }
}

/// Replaces the password of `scheme://user:pass@host` forms (and of a
/// `password=` option) by `***`. Done on the raw text before any parsing,
/// so it holds for URLs that do not parse.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once(':') else {
        return url.to_string();
    };
    if is_local(scheme) {
        return url.to_string();
    }
    let (slashes, body) = match rest.strip_prefix("//") {
        Some(b) => ("//", b),
        None => ("", rest),
    };
    let (userinfo, after) = split_userinfo(body);
    let shown_user = match userinfo {
        None => String::new(),
        Some("") => "@".to_string(),
        Some(u) => match u.split_once(':') {
            Some((user, _)) => format!("{user}:***@"),
            // `redis://secret@host` puts the password in the user slot.
            None => "***@".to_string(),
        },
    };
    format!("{scheme}:{slashes}{shown_user}{}", redact_query(after))
}

/// Hides the value of a `password=` option.
fn redact_query(s: &str) -> String {
    let (body, query) = split_query(s);
    let Some(q) = query else {
        return s.to_string();
    };
    let q: Vec<String> = q
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k == "password" => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{body}?{}", q.join("&"))
}

/// Decodes one part of a userinfo (`%XX` escapes are optional; a `%` not
/// followed by two hex digits stays as it is).
fn decode_cred(scheme: &str, s: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            url_err(format!(
                "{scheme}: credentials are not valid UTF-8 after percent-decoding"
            ))
        })
}

/// Everything but RFC 3986's unreserved characters.
const CRED_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The userinfo as the driver's URL parser needs it: each part decoded,
/// then escaped, so `? / # @ ,` in a password cannot end the authority.
pub(crate) fn driver_userinfo(scheme: &str, userinfo: Option<&str>) -> Result<String> {
    let enc = |s: &str| -> Result<String> {
        Ok(
            percent_encoding::utf8_percent_encode(&decode_cred(scheme, s)?, CRED_ESCAPE)
                .to_string(),
        )
    };
    Ok(match userinfo {
        None => String::new(),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => format!("{}:{}@", enc(user)?, enc(pass)?),
            None => format!("{}@", enc(u)?),
        },
    })
}

/// Parses a cache URL: the scheme picks the backend (see
/// [`crate::backends`]), whose own code reads the rest. Bare names are not
/// accepted here (see [`resolve_name`]); unknown schemes get
/// [`ErrorKind::UnknownBackend`], compiled-out ones
/// [`ErrorKind::FeatureDisabled`].
pub fn parse(url: &str) -> Result<ParsedUrl> {
    let url = url.trim();
    let (scheme, rest) = match url.split_once(':') {
        Some((s, r)) if !s.is_empty() => (s.to_ascii_lowercase(), r),
        _ => return Err(unknown_backend(url)),
    };
    let redacted = redact(url);
    let entry = crate::backends::lookup(&scheme).ok_or_else(|| unknown_backend(url))?;
    let (rest, tier) = crate::tiered::split_tier(rest, &redacted)?;
    let target = Target {
        scheme: &scheme,
        rest: &rest,
        redacted: &redacted,
    };
    let (backend, options) = entry.parse(&target)?;
    Ok(ParsedUrl {
        backend,
        options,
        redacted,
        tier,
    })
}

/// Checks one `host[:port][/db]` (credentials already split off); errors
/// show `shown`, the redacted URL.
pub(crate) fn check_host_port(shown: &str, hp: &str) -> Result<()> {
    let hp = hp.split('/').next().unwrap_or(hp);
    let ok = match hp.rsplit_once(':') {
        Some((h, p)) => !h.is_empty() && p.parse::<u16>().is_ok(),
        None => !hp.is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(url_err(format!("bad host:port in {shown:?}")))
    }
}

fn unknown_backend(url: &str) -> Error {
    let shown = redact(url);
    Error::new(
        ErrorKind::UnknownBackend,
        format!(
            "{shown:?} (known: {}; bare names: memory, file, sqlite, redis, memcached)",
            crate::backends::examples().join(", ")
        ),
    )
}

/// Resolves one of the seed's bare backend names (`memory`, `file`,
/// `sqlite`, plus `redis` and `memcached` on their default local ports) to a
/// URL; persistent stores go in `dir`. Anything containing `:` is returned
/// as-is (it is already a URL).
pub fn resolve_name(name: &str, dir: &std::path::Path) -> Result<String> {
    let n = name.trim();
    if n.contains(':') {
        return Ok(n.to_string());
    }
    let path = |file: &str| path_to_url_body(&dir.join(file));
    match n.to_ascii_lowercase().as_str() {
        "memory" => Ok("memory://".into()),
        "file" => Ok(format!("file:{}", path("cache_file.jsonl"))),
        "sqlite" => Ok(format!("sqlite:{}", path("cache.sqlite3"))),
        "redis" => Ok("redis://127.0.0.1:6379".into()),
        "memcached" => Ok("memcached://127.0.0.1:11211".into()),
        _ => Err(unknown_backend(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            }
            _ => panic!(),
        }
        assert!(parse("redis://a:1,b:2").is_err());
        match parse("memcached://a,b:2").unwrap().backend {
            BackendConfig::Memcached(c) => {
                assert_eq!(c.servers, vec!["a:11211", "b:2"])
            }
            _ => panic!(),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("31d").unwrap(),
            Duration::from_secs(31 * 86400)
        );
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        // Large counts of a unit saturate like bare seconds, never "bad".
        assert_eq!(
            parse_duration("99999999999999ms").unwrap(),
            Duration::from_millis(99_999_999_999_999)
        );
        assert_eq!(
            parse_duration("99999999999999999999999d").unwrap(),
            Duration::from_secs(u64::MAX)
        );
        assert!(parse_duration("-5s").is_err());
    }
}
