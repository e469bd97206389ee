//! The log's line format: encoding, checksums, decoding.

use base64::Engine as _;
use std::borrow::Cow;

use serde::Deserialize;

/// First line of every log this version creates (or compacts); anything
/// else is not ours. Version 2 added `j` lines (a JSON value unescaped):
/// older readers refuse a version-2 log by name instead of skipping its `j`
/// lines as damaged.
pub const HEADER: &[u8] = b"{\"unicache\":\"file-log\",\"version\":2}\n";
/// The first line of a version-1 log (no `j` lines): still read, and kept
/// (no `j` lines written into it, so older unicache sharing it read every
/// line) until a compaction rewrites it as version 2.
pub const HEADER_V1: &[u8] = b"{\"unicache\":\"file-log\",\"version\":1}\n";
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
    /// A value that is JSON text, as it was given (version 2).
    #[serde(default, borrow)]
    j: Option<&'a serde_json::value::RawValue>,
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
    j: Option<serde::de::IgnoredAny>,
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
/// `,"t":N` after the expiry (readers that do not know `t` ignore it: serde
/// skips unknown fields). With `json` (a version-2 log) a value that is JSON
/// text ([`is_json_text`]) goes in unescaped, last: `,"j":VALUE}` after `x`
/// and `t`, so a reader finds its bytes without parsing them.
#[allow(clippy::too_many_arguments)]
pub(super) fn encode_set(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    ns: &str,
    key: &str,
    value: &[u8],
    expires: Option<u64>,
    written: Option<u64>,
    json: bool,
) {
    if json && is_json_text(value) {
        encode_head(scratch, "set", ns, key);
        push_number(scratch, b",\"x\":", expires);
        push_number(scratch, b",\"t\":", written);
        scratch.extend_from_slice(b",\"j\":");
        scratch.extend_from_slice(value);
        scratch.push(b'}');
        seal(out, scratch);
        return;
    }
    encode_body(scratch, "set", ns, key, Some(value), expires);
    if written.is_some() {
        scratch.pop();
        push_number(scratch, b",\"t\":", written);
        scratch.push(b'}');
    }
    seal(out, scratch);
}

/// `name` and the number, when there is one.
fn push_number(scratch: &mut Vec<u8>, name: &[u8], n: Option<u64>) {
    if let Some(n) = n {
        scratch.extend_from_slice(name);
        scratch.extend_from_slice(n.to_string().as_bytes());
    }
}

/// Whether `v` may be stored as a `j` field and read back byte for byte:
/// one JSON text (RFC 8259, UTF-8) that neither starts nor ends with
/// whitespace (a reader takes the value's own bytes, whitespace around it
/// would be lost) and holds no newline (the line would break; inside JSON
/// text a newline can only be whitespace between tokens), nor `null`
/// (serde reads a `null` field as an absent one). Anything else goes in
/// `v` (escaped) or `b`.
pub(super) fn is_json_text(v: &[u8]) -> bool {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    match (v.first(), v.last()) {
        (Some(f), Some(l)) if !ws(f) && !ws(l) && v != b"null" => {}
        _ => return false,
    }
    // serde_json skips strings without checking their UTF-8: check first.
    !v.contains(&b'\n')
        && std::str::from_utf8(v).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok()
}

/// `{"op":"OP"[,"n":NS],"k":KEY` into `scratch` (emptied first).
fn encode_head(scratch: &mut Vec<u8>, op: &str, ns: &str, key: &str) {
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
    encode_head(scratch, op, ns, key);
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
    push_number(scratch, b",\"x\":", expires);
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
    if let Some((f, _)) = fast_fields(body) {
        return Some(f);
    }
    let l = serde_json::from_slice::<ScanLine>(body).ok()?;
    let values = [l.v.is_some(), l.b.is_some(), l.j.is_some()];
    let set = match l.op {
        "set" if values.iter().filter(|&&v| v).count() == 1 => true,
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
    check_crc(line)?;
    // A `j` line as we write it: the value is the bytes after `"j":`.
    if let Some((f, Some(value))) = fast_fields(line) {
        return Ok(Op::Set {
            ns: f.ns.into_owned(),
            key: f.key.into_owned(),
            value: value.to_vec(),
            expires: f.x,
        });
    }
    // The whole line is valid JSON too (the "c" field is ignored by `Line`).
    let l: Line = serde_json::from_slice(line).map_err(|_| LineError::Content)?;
    let ns = l.n.map(|c| c.into_owned()).unwrap_or_default();
    let key = l.k.into_owned();
    match l.op {
        "set" => {
            let value = match (l.v, l.b, l.j) {
                (Some(v), None, None) => v.into_owned().into_bytes(),
                (None, Some(b), None) => base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|_| LineError::Content)?,
                (None, None, Some(j)) => j.get().as_bytes().to_vec(),
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
/// (`{"c":N,"op":"set"[,"n":"…"],"k":"…","v"|"b":"…"[,"x":N][,"t":N]}` or
/// `{"c":N,"op":"set"[,"n":"…"],"k":"…"[,"x":N][,"t":N],"j":VALUE}`), with
/// a `j` line's value bytes. Anything unusual (escapes in the key, other
/// layouts) returns None and goes through serde instead. Only called on
/// lines whose checksum matched: like the layout of `v` lines, a `j` line's
/// is trusted to be ours (its value is not parsed again).
fn fast_fields(line: &[u8]) -> Option<(Fields<'_>, Option<&[u8]>)> {
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
        return (rest == b"}").then(|| (fields(None, None), None));
    }
    if !(rest.starts_with(b",\"v\":\"") || rest.starts_with(b",\"b\":\"")) {
        // `j` last: the value is everything between `"j":` and the final `}`.
        let (x, rest) = leading_number(rest, b",\"x\":");
        let (t, rest) = leading_number(rest, b",\"t\":");
        let value = rest.strip_prefix(b",\"j\":")?.strip_suffix(b"}")?;
        return (!value.is_empty()).then(|| (fields(x, t), Some(value)));
    }
    // A string value ends the line with `"}`; an expiry and a write time
    // with `,"x":N` and `,"t":N` (a `","` never occurs inside a JSON string).
    let body = rest.strip_suffix(b"}")?;
    let (body, t) = trailing_number(body, b",\"t\":");
    let (body, x) = trailing_number(body, b",\"x\":");
    body.ends_with(b"\"").then(|| (fields(x, t), None))
}

/// `body` starting with `name` + digits: (the number, the rest after
/// them); `(None, body)` otherwise.
fn leading_number<'a>(body: &'a [u8], name: &[u8]) -> (Option<u64>, &'a [u8]) {
    let Some(r) = body.strip_prefix(name) else {
        return (None, body);
    };
    let digits = r.iter().take_while(|b| b.is_ascii_digit()).count();
    match std::str::from_utf8(&r[..digits]).ok().and_then(|n| n.parse().ok()) {
        Some(n) if digits > 0 => (Some(n), &r[digits..]),
        _ => (None, body),
    }
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
            encode_set(&mut set, &mut scratch, ns, key, b"v", Some(5), Some(6), true);
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
                Some(v) => encode_set(&mut out, &mut scratch, ns, key, v, x, t, true),
                None => encode_line(&mut out, &mut scratch, "del", ns, key, None, None),
            }
            let line = &out[..out.len() - 1];
            assert_eq!(check_crc(line), Ok(()));
            let slow: ScanLine = serde_json::from_slice(line).unwrap();
            assert_eq!((slow.x, slow.t), (x, t));
            match fast_fields(line) {
                Some((f, _)) => {
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

    /// One `set` line for `value` in a version-2 log, without its newline.
    fn set_line(key: &str, value: &[u8], x: Option<u64>, t: Option<u64>) -> Vec<u8> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        encode_set(&mut out, &mut scratch, "ns", key, value, x, t, true);
        assert_eq!(out.pop(), Some(b'\n'));
        assert!(!out.contains(&b'\n'), "a newline inside {out:?}");
        out
    }

    #[test]
    fn json_values_are_written_unescaped_and_read_back_byte_for_byte() {
        let json: &[&[u8]] = &[
            br#"{"key":"user:1","n":[1,2.5e3,-0]}"#,
            br#"{"a":1,"x":5}"#,
            br#"{"a":1,"t":5}"#,
            br#"[1,"x",{"j":"}"}]"#,
            br#""a string""#,
            b"42",
            b"true",
            b"[null]",
            "{\"caf\u{e9}\":\"\\u00e9 \\n \\\"\"}".as_bytes(),
            b"{ \"spaced\" :\t[ 1 , 2 ] }",
            b"{\"cr\":\r1}",
        ];
        for (i, v) in json.iter().enumerate() {
            assert!(is_json_text(v), "{}", String::from_utf8_lossy(v));
            for (x, t) in [(None, None), (Some(9), None), (None, Some(8)), (Some(9), Some(8))] {
                let key = format!("k{i}");
                let line = set_line(&key, v, x, t);
                let text = String::from_utf8(line.clone()).unwrap();
                assert!(text.ends_with(&format!(",\"j\":{}}}", String::from_utf8_lossy(v))), "{text}");
                let Op::Set { value, expires, key: k, ns } = decode_line(&line).unwrap() else {
                    panic!("not a set: {text}");
                };
                assert_eq!((&value[..], expires, &k[..], &ns[..]), (&v[..], x, &key[..], "ns"));
                // jq's view: the line is JSON and `.j` is the value as JSON.
                let doc: serde_json::Value = serde_json::from_slice(&line).unwrap();
                let want: serde_json::Value = serde_json::from_slice(v).unwrap();
                assert_eq!(doc["j"], want, "{text}");
                // The index's fast path and serde agree.
                let f = line_fields(&line).unwrap();
                let slow: ScanLine = serde_json::from_slice(&line).unwrap();
                assert!(f.set && slow.j.is_some() && slow.v.is_none());
                assert_eq!((f.x, f.t, &f.key[..]), (slow.x, slow.t, &slow.k[..]));
                // The checksum covers the value.
                let mut bad = line.clone();
                let at = bad.len() - 2;
                bad[at] ^= 0x20;
                assert!(decode_line(&bad).is_err());
            }
        }
        // An escaped key leaves the fast path: serde reads the value as written.
        let line = set_line("quote\"key", br#"{"a":[1,2]}"#, Some(3), None);
        assert!(fast_fields(&line).is_none());
        assert_eq!(
            decode_line(&line).unwrap(),
            Op::Set {
                ns: "ns".into(),
                key: "quote\"key".into(),
                value: br#"{"a":[1,2]}"#.to_vec(),
                expires: Some(3)
            }
        );
    }

    #[test]
    fn values_that_are_not_exactly_json_text_stay_escaped() {
        let not_json: &[&[u8]] = &[
            b"",
            b"hello",
            b" {\"a\":1}",
            b"{\"a\":1} ",
            b"{\"a\":1}\n",
            b"\t1",
            b"{\"a\":\n1}",
            b"{\"a\":1}{\"b\":2}",
            b"{\"a\":1",
            b"[1,]",
            b"{'a':1}",
            b"\"\xff\"",
            b"\"tab\tinside\"",
            b"NaN",
            b"01",
            b"null",
        ];
        for v in not_json {
            assert!(!is_json_text(v), "{}", String::from_utf8_lossy(v));
            let line = set_line("k", v, Some(1), Some(2));
            let doc: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert!(doc.get("j").is_none(), "{}", String::from_utf8_lossy(&line));
            let Op::Set { value, .. } = decode_line(&line).unwrap() else { panic!() };
            assert_eq!(&value[..], &v[..]);
        }
        // Without `json` (a version-1 log) JSON text is escaped in `v`.
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        encode_set(&mut out, &mut scratch, "", "k", b"{\"a\":1}", None, None, false);
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["v"], "{\"a\":1}");
    }
}
