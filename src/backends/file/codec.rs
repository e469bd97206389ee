//! The log's line format: encoding, checksums, decoding.

use base64::Engine as _;
use std::borrow::Cow;

use serde::Deserialize;

/// First line of every log; anything else is not ours.
pub const HEADER: &[u8] = b"{\"unicache\":\"file-log\",\"version\":1}\n";
/// One decoded line.
#[derive(Deserialize, Debug)]
struct Line<'a> {
    op: &'a str,
    #[serde(default, borrow)]
    n: Option<Cow<'a, str>>,
    #[serde(borrow)]
    k: Cow<'a, str>,
    #[serde(default, borrow)]
    v: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    b: Option<Cow<'a, str>>,
    #[serde(default)]
    x: Option<u64>,
}

/// A line as the index rebuild needs it: the value is skipped, not copied.
#[derive(Deserialize)]
struct ScanLine<'a> {
    op: &'a str,
    #[serde(default, borrow)]
    n: Option<Cow<'a, str>>,
    #[serde(borrow)]
    k: Cow<'a, str>,
    #[serde(default)]
    v: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    b: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    x: Option<u64>,
    /// Write time (Unix ms), on lines written while `max_age` is in force.
    #[serde(default)]
    t: Option<u64>,
}

/// What a line does.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// A value for `ns`/`key`, expiring at `expires` (Unix ms).
    Set {
        /// Namespace ("" for none).
        ns: String,
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Expiry, Unix milliseconds.
        expires: Option<u64>,
    },
    /// A tombstone.
    Del {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
    },
}

/// Why a line was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LineError {
    /// Not `{"c":N,...}`.
    Malformed,
    /// Checksum mismatch.
    Checksum,
    /// Valid checksum, invalid content.
    Content,
}

/// Appends one encoded line (with its trailing newline) to `out`.
pub fn encode_line(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    op: &str,
    ns: &str,
    key: &str,
    value: Option<&[u8]>,
    expires: Option<u64>,
) {
    encode_body(scratch, op, ns, key, value, expires);
    seal(out, scratch);
}

/// A `set` line with its write time `written` (Unix ms) when there is one:
/// `,"t":N` after the expiry. Readers that do not know `t` ignore it (serde
/// skips unknown fields), so the log stays version 1.
pub(super) fn encode_set(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    ns: &str,
    key: &str,
    value: &[u8],
    expires: Option<u64>,
    written: Option<u64>,
) {
    encode_body(scratch, "set", ns, key, Some(value), expires);
    if let Some(t) = written {
        scratch.pop();
        scratch.extend_from_slice(b",\"t\":");
        scratch.extend_from_slice(t.to_string().as_bytes());
        scratch.push(b'}');
    }
    seal(out, scratch);
}

/// The JSON object of a line, without its checksum, into `scratch`.
pub(super) fn encode_body(
    scratch: &mut Vec<u8>,
    op: &str,
    ns: &str,
    key: &str,
    value: Option<&[u8]>,
    expires: Option<u64>,
) {
    scratch.clear();
    scratch.extend_from_slice(b"{\"op\":\"");
    scratch.extend_from_slice(op.as_bytes());
    scratch.push(b'"');
    if !ns.is_empty() {
        scratch.extend_from_slice(b",\"n\":");
        let _ = serde_json::to_writer(&mut *scratch, ns);
    }
    scratch.extend_from_slice(b",\"k\":");
    let _ = serde_json::to_writer(&mut *scratch, key);
    if let Some(v) = value {
        match std::str::from_utf8(v) {
            Ok(s) => {
                scratch.extend_from_slice(b",\"v\":");
                let _ = serde_json::to_writer(&mut *scratch, s);
            }
            Err(_) => {
                scratch.extend_from_slice(b",\"b\":\"");
                scratch.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(v)
                        .as_bytes(),
                );
                scratch.push(b'"');
            }
        }
    }
    if let Some(x) = expires {
        scratch.extend_from_slice(b",\"x\":");
        scratch.extend_from_slice(x.to_string().as_bytes());
    }
    scratch.push(b'}');
}

/// Appends the object in `scratch` to `out` as a line: its CRC-32 first
/// (`{"c":N,` + the object after its `{`), then a newline.
pub(super) fn seal(out: &mut Vec<u8>, scratch: &[u8]) {
    let mut crc = crc32fast::hash(scratch);
    out.extend_from_slice(b"{\"c\":");
    // Decimal digits without an allocation (every line passes here).
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (crc % 10) as u8;
        crc /= 10;
        if crc == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.push(b',');
    out.extend_from_slice(&scratch[1..]);
    out.push(b'\n');
}

/// The tombstone of the key of `set_line` (a set line as we write them,
/// without its newline, checksum verified) into `out`, its namespace and key
/// copied as they are written there (no decoding and escaping again).
/// `false` (nothing written): not such a line.
pub(super) fn encode_del_of(out: &mut Vec<u8>, scratch: &mut Vec<u8>, set_line: &[u8]) -> bool {
    // `{"c":N,"op":"set"` then `,"n":"…"` (optional) and `,"k":"…"`, strings
    // without escapes (the fast path's layout), then the value.
    let Some(rest) = set_line
        .strip_prefix(b"{\"c\":")
        .and_then(|r| r.iter().position(|&b| b == b',').map(|i| &r[i + 1..]))
        .and_then(|r| r.strip_prefix(b"\"op\":\"set\""))
    else {
        return false;
    };
    // The length of a string without escapes up to its closing quote.
    let plain = |r: &[u8]| match r.iter().position(|&b| b == b'"' || b == b'\\') {
        Some(q) if r[q] == b'"' => Some(q + 1),
        _ => None,
    };
    const NS: &[u8] = b",\"n\":\"";
    const KEY: &[u8] = b",\"k\":\"";
    let mut end = 0;
    if let Some(r) = rest.strip_prefix(NS) {
        let Some(n) = plain(r) else { return false };
        end = NS.len() + n;
    }
    let Some(n) = rest[end..].strip_prefix(KEY).and_then(plain) else {
        return false;
    };
    end += KEY.len() + n;
    scratch.clear();
    scratch.extend_from_slice(b"{\"op\":\"del\"");
    scratch.extend_from_slice(&rest[..end]);
    scratch.push(b'}');
    seal(out, scratch);
    true
}

/// Checks a line's checksum (without its newline) and returns its payload
/// parsed.
fn check_line(line: &[u8]) -> std::result::Result<Line<'_>, LineError> {
    check_crc(line)?;
    // The whole line is valid JSON too (the "c" field is ignored by `Line`).
    serde_json::from_slice(line).map_err(|_| LineError::Content)
}

/// Verifies the line's CRC-32 (over `{` + everything after `"c":N,`).
pub(super) fn check_crc(line: &[u8]) -> std::result::Result<(), LineError> {
    let rest = line.strip_prefix(b"{\"c\":").ok_or(LineError::Malformed)?;
    let comma = rest
        .iter()
        .position(|&b| b == b',')
        .ok_or(LineError::Malformed)?;
    let crc: u32 = std::str::from_utf8(&rest[..comma])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(LineError::Malformed)?;
    let body = &rest[comma + 1..];
    let mut h = crc32fast::Hasher::new();
    h.update(b"{");
    h.update(body);
    if h.finalize() != crc {
        return Err(LineError::Checksum);
    }
    Ok(())
}

/// What the index needs from a line whose checksum matched.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Fields<'a> {
    /// A `set` (else a `del`).
    pub set: bool,
    /// Namespace.
    pub ns: Cow<'a, str>,
    /// Key.
    pub key: Cow<'a, str>,
    /// Expiry (Unix ms).
    pub x: Option<u64>,
    /// Write time (Unix ms), on lines written while `max_age` was in force.
    pub t: Option<u64>,
}

/// [`Fields`] of a line (without its newline), checksum already verified:
/// the fast path for lines as we write them, serde for anything else.
/// `None`: not a valid operation.
pub(super) fn line_fields(body: &[u8]) -> Option<Fields<'_>> {
    if let Some(f) = fast_fields(body) {
        return Some(f);
    }
    let l = serde_json::from_slice::<ScanLine>(body).ok()?;
    let set = match l.op {
        "set" if l.v.is_some() != l.b.is_some() => true,
        "del" => false,
        _ => return None,
    };
    Some(Fields {
        set,
        ns: l.n.unwrap_or_default(),
        key: l.k,
        x: l.x.filter(|_| set),
        t: l.t.filter(|_| set),
    })
}

/// Decodes one line (without its newline): the fuzzable entry point.
pub fn decode_line(line: &[u8]) -> std::result::Result<Op, LineError> {
    let l = check_line(line)?;
    let ns = l.n.map(|c| c.into_owned()).unwrap_or_default();
    let key = l.k.into_owned();
    match l.op {
        "set" => {
            let value = match (l.v, l.b) {
                (Some(v), None) => v.into_owned().into_bytes(),
                (None, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|_| LineError::Content)?,
                _ => return Err(LineError::Content),
            };
            Ok(Op::Set {
                ns,
                key,
                value,
                expires: l.x,
            })
        }
        "del" => Ok(Op::Del { ns, key }),
        _ => Err(LineError::Content),
    }
}

/// The fields the index needs, read straight from a line we wrote
/// (`{"c":N,"op":"set"[,"n":"…"],"k":"…","v"|"b":"…"[,"x":N][,"t":N]}`).
/// Anything unusual (escapes in the key, other layouts) returns None and goes
/// through serde instead. Only called on lines whose checksum matched.
fn fast_fields(line: &[u8]) -> Option<Fields<'_>> {
    fn plain_str(s: &[u8]) -> Option<(&str, &[u8])> {
        let end = s.iter().position(|&b| b == b'"' || b == b'\\')?;
        if s[end] != b'"' {
            return None;
        }
        Some((std::str::from_utf8(&s[..end]).ok()?, &s[end + 1..]))
    }
    let rest = line.strip_prefix(b"{\"c\":")?;
    let rest = &rest[rest.iter().position(|&b| b == b',')? + 1..];
    let (set, rest) = if let Some(r) = rest.strip_prefix(b"\"op\":\"set\"") {
        (true, r)
    } else {
        (false, rest.strip_prefix(b"\"op\":\"del\"")?)
    };
    let (ns, rest) = match rest.strip_prefix(b",\"n\":\"") {
        Some(r) => plain_str(r)?,
        None => ("", rest),
    };
    let (key, rest) = plain_str(rest.strip_prefix(b",\"k\":\"")?)?;
    let fields = |x, t| Fields {
        set,
        ns: Cow::Borrowed(ns),
        key: Cow::Borrowed(key),
        x,
        t,
    };
    if !set {
        return (rest == b"}").then(|| fields(None, None));
    }
    if !(rest.starts_with(b",\"v\":\"") || rest.starts_with(b",\"b\":\"")) {
        return None;
    }
    // A string value ends the line with `"}`; an expiry and a write time
    // with `,"x":N` and `,"t":N` (a `","` never occurs inside a JSON string).
    let body = rest.strip_suffix(b"}")?;
    let (body, t) = trailing_number(body, b",\"t\":");
    let (body, x) = trailing_number(body, b",\"x\":");
    body.ends_with(b"\"").then(|| fields(x, t))
}

/// Splits `body` ending with `name` + digits into (the part before
/// `name`, the number); `body` unchanged and `None` otherwise.
fn trailing_number<'a>(body: &'a [u8], name: &[u8]) -> (&'a [u8], Option<u64>) {
    let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (head, num) = body.split_at(body.len() - digits);
    match (head.strip_suffix(name), std::str::from_utf8(num).ok()) {
        (Some(h), Some(n)) if digits > 0 => match n.parse() {
            Ok(v) => (h, Some(v)),
            Err(_) => (body, None),
        },
        _ => (body, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_checksums_catch_damage() {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        encode_line(
            &mut out,
            &mut scratch,
            "set",
            "ns",
            "k \"q\"",
            Some(b"v\n1"),
            Some(42),
        );
        encode_line(
            &mut out,
            &mut scratch,
            "set",
            "",
            "bin",
            Some(&[0xff, 0x00]),
            None,
        );
        encode_line(&mut out, &mut scratch, "del", "", "bin", None, None);
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            decode_line(lines[0]).unwrap(),
            Op::Set {
                ns: "ns".into(),
                key: "k \"q\"".into(),
                value: b"v\n1".to_vec(),
                expires: Some(42)
            }
        );
        assert_eq!(
            decode_line(lines[1]).unwrap(),
            Op::Set {
                ns: "".into(),
                key: "bin".into(),
                value: vec![0xff, 0],
                expires: None
            }
        );
        assert_eq!(
            decode_line(lines[2]).unwrap(),
            Op::Del {
                ns: "".into(),
                key: "bin".into()
            }
        );
        // Readable as plain JSON.
        let j: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
        assert_eq!(j["v"], "v\n1");
        let mut bad = lines[0].to_vec();
        let i = bad.len() - 5;
        bad[i] ^= 1;
        assert_eq!(decode_line(&bad), Err(LineError::Checksum));
        assert_eq!(decode_line(b"garbage"), Err(LineError::Malformed));
    }

    #[test]
    fn a_tombstone_from_a_set_line_is_the_encoded_delete() {
        let cases = [("", "k"), ("ns", "user:1"), ("", "quote\"key"), ("n\\s", "k")];
        for (ns, key) in cases {
            let (mut set, mut want, mut got) = (Vec::new(), Vec::new(), Vec::new());
            let mut scratch = Vec::new();
            encode_set(&mut set, &mut scratch, ns, key, b"v", Some(5), Some(6));
            encode_line(&mut want, &mut scratch, "del", ns, key, None, None);
            let plain = !key.contains('"') && !ns.contains('\\');
            assert_eq!(encode_del_of(&mut got, &mut scratch, &set[..set.len() - 1]), plain);
            if plain {
                assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
            }
        }
    }

    #[test]
    fn fast_path_agrees_with_serde() {
        type Case<'a> = (&'a str, &'a str, Option<&'a [u8]>, Option<u64>, Option<u64>);
        let cases: Vec<Case> = vec![
            ("", "k", Some(b"v"), None, None),
            (
                "ns",
                "user:1",
                Some(b"{\"a\":\"b\"}"),
                Some(1_700_000_000_000),
                None,
            ),
            ("", "quote\"key", Some(b"x"), None, None),
            ("", "k", Some(&[0xff, 1]), Some(5), None),
            ("n", "gone", None, None, None),
            ("", "ends with x", Some(b",\"x\":5"), None, None),
            ("", "dated", Some(b"v"), None, Some(1_700_000_000_123)),
            ("", "both", Some(b"v"), Some(9), Some(7)),
            ("", "ends with t", Some(b"\",\"t\":5"), None, Some(8)),
            ("", "bin dated", Some(&[0xfe]), Some(1), Some(2)),
        ];
        for (ns, key, value, x, t) in cases {
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            match value {
                Some(v) => encode_set(&mut out, &mut scratch, ns, key, v, x, t),
                None => encode_line(&mut out, &mut scratch, "del", ns, key, None, None),
            }
            let line = &out[..out.len() - 1];
            assert_eq!(check_crc(line), Ok(()));
            let slow: ScanLine = serde_json::from_slice(line).unwrap();
            assert_eq!((slow.x, slow.t), (x, t));
            match fast_fields(line) {
                Some(f) => {
                    assert_eq!(f.set, slow.op == "set");
                    assert_eq!(f.ns, slow.n.as_deref().unwrap_or(""));
                    assert_eq!(f.key, slow.k);
                    assert_eq!((f.x, f.t), (slow.x, slow.t));
                }
                None => assert!(key.contains('"'), "fast path refused {key:?}"),
            }
            // The full decoder reads dated lines too (and ignores the date).
            if let (Some(v), Ok(Op::Set { value, expires, .. })) = (value, decode_line(line)) {
                assert_eq!((&value[..], expires), (v, x));
            } else {
                assert!(value.is_none());
            }
        }
    }
}
