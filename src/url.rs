//! The pieces of cache URLs that every backend's parser uses: the query
//! (`Query`), durations, local paths, credentials and their redaction.
//!
//! This module sits below the backends and knows none of them: turning a
//! whole URL into a backend and its layers is [`mod@crate::open`]'s job.
//! Nothing here touches the network or the disk.

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

/// What a backend's URL parser is handed: the scheme (lower case), the text
/// after `scheme:`, and the redacted URL for its messages.
pub(crate) struct Target<'a> {
    /// The scheme, lower case.
    pub scheme: &'a str,
    /// Everything after `scheme:`.
    pub rest: &'a str,
    /// The whole URL with any password replaced by `***`.
    pub redacted: &'a str,
    /// The options the layers above the backend read (named in the
    /// unknown-option message).
    pub layer_options: &'a [&'a str],
}

/// Parses a size in bytes: a bare number of bytes, or a number with a unit,
/// decimal (`kB`/`KB`, `MB`, `GB`, `TB`: powers of 1000) or binary (`KiB`,
/// `MiB`, `GiB`, `TiB`: powers of 1024), case-insensitive, a space allowed
/// before the unit (`500MB`, `10GiB`, `1.5 GB`).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("bad size {s:?} (use e.g. 1048576, 500MB, 10GiB)"),
        )
    };
    let t = s.trim();
    let at = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..at], t[at..].trim());
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(scale).ok_or_else(bad);
    }
    let x: f64 = num.parse().map_err(|_| bad())?;
    let bytes = x * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
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

    /// A size option (`500MB`, `10GiB`, bytes; see [`parse_size`]).
    pub(crate) fn take_size(&mut self, k: &str) -> Result<Option<u64>> {
        match self.take(k) {
            None => Ok(None),
            Some(v) => parse_size(&v)
                .map(Some)
                .map_err(|e| url_err(format!("{}: option {k}: {}", self.scheme, e.message()))),
        }
    }

    /// The bounds of a disk cache (`max_bytes`, `max_entries`, `max_age`),
    /// for the backends that keep them (they list [`BOUND_OPTIONS`] among
    /// their known options). Zero is refused: a bound of nothing would
    /// evict every write.
    pub(crate) fn bounds(&mut self) -> Result<crate::cache::Bounds> {
        let b = crate::cache::Bounds {
            max_bytes: self.take_size("max_bytes")?,
            max_entries: self.take_u64("max_entries")?,
            max_age: self.take_duration("max_age")?,
        };
        let zero = b.max_bytes == Some(0)
            || b.max_entries == Some(0)
            || b.max_age.is_some_and(|a| a.is_zero());
        if zero {
            return Err(url_err(format!(
                "{}: max_bytes, max_entries and max_age must be greater than zero",
                self.scheme
            )));
        }
        Ok(b)
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
        Ok(o)
    }

    /// Refuses any option left: `known` are the backend's own, `target`
    /// names the layers' for the message.
    pub(crate) fn finish(self, known: &[&str], target: &Target<'_>) -> Result<()> {
        if let Some(k) = self.pairs.keys().next() {
            let mut all: Vec<&str> = known.to_vec();
            all.extend(["namespace", "ttl"]);
            all.extend(target.layer_options);
            return Err(url_err(format!(
                "{}: unknown option {k:?} (known: {})",
                self.scheme,
                all.join(", ")
            )));
        }
        Ok(())
    }
}

/// The URL options of [`Query::bounds`].
pub(crate) const BOUND_OPTIONS: [&str; 3] = ["max_bytes", "max_entries", "max_age"];

const BAD_UTF8: &str = "is not valid UTF-8 after percent-decoding";

fn decode(s: &str) -> std::result::Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
}

pub(crate) fn url_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidUrl, msg)
}

/// Takes the query options `claims` names out of a URL body (after
/// `scheme:`), returning the body without them and the raw `k=v` parts
/// taken. The query is what follows the first `?` after the last `@`, as
/// every backend reads it (a password may hold `?`).
pub(crate) fn take_query_parts(rest: &str, claims: impl Fn(&str) -> bool) -> (String, Vec<String>) {
    let from = rest.rfind('@').map_or(0, |i| i + 1);
    let Some(q) = rest[from..].find('?').map(|i| from + i) else {
        return (rest.to_string(), Vec::new());
    };
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    for part in rest[q + 1..].split('&') {
        let name = part.split_once('=').map_or(part, |(k, _)| k);
        if !part.is_empty() && claims(name) {
            taken.push(part.to_string());
        } else {
            kept.push(part);
        }
    }
    if taken.is_empty() {
        return (rest.to_string(), taken);
    }
    let body = if kept.iter().all(|p| p.is_empty()) {
        rest[..q].to_string()
    } else {
        format!("{}?{}", &rest[..q], kept.join("&"))
    };
    (body, taken)
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

/// A path as the body of a `sqlite:`/`file:` URL that [`crate::open::parse`] turns
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
/// so it holds for URLs that do not parse. For URLs of network stores:
/// [`crate::open::redact`] leaves local stores' paths (which may hold `@`)
/// as they are.
pub fn redact_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once(':') else {
        return url.to_string();
    };
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

/// Hides the value of a `password=` (or `*_password=`) option.
fn redact_query(s: &str) -> String {
    let (body, query) = split_query(s);
    let Some(q) = query else {
        return s.to_string();
    };
    let q: Vec<String> = q
        .split('&')
        .map(|p| match p.split_once('=') {
            // `sentinel_password=` too.
            Some((k, _)) if k == "password" || k.ends_with("_password") => format!("{k}=***"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, n) in [
            ("1048576", 1 << 20),
            ("500MB", 500_000_000),
            ("500mb", 500_000_000),
            ("10GiB", 10 << 30),
            ("1.5 GB", 1_500_000_000),
            ("64KiB", 65_536),
            ("7b", 7),
            ("2TB", 2_000_000_000_000),
        ] {
            assert_eq!(parse_size(s).unwrap(), n, "{s}");
        }
        for bad in ["", "MB", "-5MB", "5 XB", "1e3", "99999999999TiB", "1.2.3GB"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.message().contains("bad size"), "{bad}: {e}");
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
