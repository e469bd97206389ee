//! The wire: the reply parser, and what counts as a reply.
//!
//! Anything a memcached server would never send (an unknown reply code, a
//! line longer than any reply, an absurd value size, bytes after the last
//! expected reply) is [`Garbage`] at once, rather than a wait for a
//! terminator that will never come.

use std::borrow::Cow;

/// Reply codes memcached answers our requests with.
const KNOWN_CODES: &[&[u8]] = &[
    b"VA",
    b"HD",
    b"EN",
    b"NF",
    b"NS",
    b"EX",
    b"MN",
    b"VALUE",
    b"END",
    b"STAT",
    b"OK",
    b"ERROR",
    b"CLIENT_ERROR",
    b"SERVER_ERROR",
    b"VERSION",
];
/// Longest reply line waited for: memcached's are far shorter (a 250-byte
/// key plus flags, or one `STAT` line).
const MAX_LINE: usize = 8 * 1024;
/// Largest value a reply may announce (memcached's `-I` maximum is 1 GiB).
const MAX_VALUE: usize = 1 << 30;
/// How many of the offending bytes an error shows.
const SHOWN: usize = 64;

/// One reply line's parts: code, optional value, opaque token.
pub(super) struct Reply {
    pub code: Cow<'static, str>,
    pub opaque: Option<usize>,
    pub value: Option<Vec<u8>>,
    /// The `t` flag of a meta reply: remaining seconds, -1 for never.
    pub ttl: Option<i64>,
    /// The `c` flag of a meta reply: the item's CAS value.
    pub cas: Option<u64>,
    /// The whole line for uncommon codes, the key for `VALUE`, else empty.
    pub line: String,
}

/// Bytes that are not a memcached reply: the first of them, escaped.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Garbage(pub String);

impl Garbage {
    pub(super) fn at(b: &[u8]) -> Self {
        let shown = &b[..b.len().min(SHOWN)];
        let more = if b.len() > SHOWN { "..." } else { "" };
        Garbage(format!("{}{more}", shown.escape_ascii()))
    }
}

/// Why an exchange failed.
pub(super) enum Failure {
    /// The connection failed or closed.
    Io(std::io::Error),
    /// The server sent something that is not a reply.
    Garbage(Garbage),
}

/// The decimal size field `s`, if it is one within [`MAX_VALUE`].
fn size_field(s: Option<&[u8]>) -> Option<usize> {
    let n = std::str::from_utf8(s?).ok()?.parse::<usize>().ok()?;
    (n <= MAX_VALUE).then_some(n)
}

/// Whether `b`, a line not yet complete, can still become a reply: its
/// first word is (a prefix of) a known code and it is not over-long.
fn may_be_reply(b: &[u8]) -> bool {
    if b.len() > MAX_LINE {
        return false;
    }
    let word = b.split(|&c| c == b' ').next().unwrap_or(b"");
    // `END\r` is a whole code waiting for its `\n`.
    let (word, complete) = match word.strip_suffix(b"\r") {
        Some(w) if word.len() == b.len() => (w, true),
        _ => (word, word.len() < b.len()),
    };
    KNOWN_CODES.iter().any(|code| {
        if complete {
            word == *code
        } else {
            code.starts_with(word)
        }
    })
}

/// Parses one reply from the front of `b`: `None` until it is complete.
pub(super) fn parse_reply(b: &[u8]) -> Result<Option<(Reply, usize)>, Garbage> {
    let Some(nl) = b.iter().position(|&c| c == b'\n') else {
        return if may_be_reply(b) {
            Ok(None)
        } else {
            Err(Garbage::at(b))
        };
    };
    let trimmed = b[..nl].trim_ascii_end();
    let mut parts = trimmed.split(|&c| c == b' ');
    let code_b = parts.next().unwrap_or(b"");
    if code_b == b"VALUE" {
        // ASCII multi-get: `VALUE <key> <flags> <bytes>`; the key goes in `line`.
        let key = parts.next().unwrap_or(b"");
        let n = size_field(parts.nth(1)).ok_or_else(|| Garbage::at(b))?;
        let start = nl + 1;
        if b.len() < start + n + 2 {
            return Ok(None);
        }
        let reply = Reply {
            code: Cow::Borrowed("VALUE"),
            opaque: None,
            value: Some(b[start..start + n].to_vec()),
            line: String::from_utf8_lossy(key).into_owned(),
            ttl: None,
            cas: None,
        };
        return Ok(Some((reply, start + n + 2)));
    }
    let size = if code_b == b"VA" {
        Some(size_field(parts.next()).ok_or_else(|| Garbage::at(b))?)
    } else {
        None
    };
    let (mut opaque, mut ttl, mut cas) = (None, None, None);
    let meta = code_b == b"VA" || code_b == b"HD";
    for p in parts {
        match p.split_first() {
            Some((b'O', o)) => opaque = flag_num(o),
            Some((b't', t)) if meta => ttl = flag_num(t),
            Some((b'c', c)) if meta => cas = flag_num(c),
            _ => {}
        }
    }
    let mut used = nl + 1;
    let value = match size {
        Some(n) => {
            if b.len() < used + n + 2 {
                return Ok(None);
            }
            let v = b[used..used + n].to_vec();
            used += n + 2;
            Some(v)
        }
        None => None,
    };
    let (code, line) = reply_code(code_b, trimmed).ok_or_else(|| Garbage::at(b))?;
    let reply = Reply {
        code,
        opaque,
        value,
        line,
        ttl,
        cas,
    };
    Ok(Some((reply, used)))
}

/// A flag's numeric token, if it is one.
fn flag_num<T: std::str::FromStr>(t: &[u8]) -> Option<T> {
    std::str::from_utf8(t).ok()?.parse().ok()
}

/// The code and kept line of a reply line, or None for an unknown code.
/// The hot replies (VA/HD/EN/NF/MN) allocate nothing.
fn reply_code(code: &[u8], line: &[u8]) -> Option<(Cow<'static, str>, String)> {
    let hot: Option<&'static str> = match code {
        b"VA" => Some("VA"),
        b"HD" => Some("HD"),
        b"EN" => Some("EN"),
        b"NF" => Some("NF"),
        b"MN" => Some("MN"),
        _ => None,
    };
    match hot {
        Some(c) => Some((Cow::Borrowed(c), String::new())),
        None if KNOWN_CODES.contains(&code) => Some((
            Cow::Owned(String::from_utf8_lossy(code).into_owned()),
            String::from_utf8_lossy(line).into_owned(),
        )),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The reply parser takes any bytes without panicking.
        #[test]
        fn reply_parser_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut pos = 0;
            while let Ok(Some((_, used))) = parse_reply(&bytes[pos..]) {
                proptest::prop_assert!(used > 0);
                pos += used;
            }
        }

        /// Any prefix of a valid reply stream is "wait for more", never garbage.
        #[test]
        fn prefixes_of_valid_replies_wait(cut in 0usize..60) {
            let b = b"VA 3 O7\r\nabc\r\nVALUE k 0 2\r\nhi\r\nEND\r\nSTAT pid 1\r\nMN\r\n";
            let cut = cut.min(b.len());
            let mut pos = 0;
            loop {
                match parse_reply(&b[pos..cut]) {
                    Ok(Some((_, used))) => pos += used,
                    Ok(None) => break,
                    Err(g) => proptest::prop_assert!(false, "garbage {g:?} at {pos} of {cut}"),
                }
            }
        }
    }

    #[test]
    fn parses_meta_and_ascii_replies() {
        let b = b"VA 3 O7\r\nabc\r\nVALUE k 0 2\r\nhi\r\nEND\r\nVA 5\r\nab";
        let (r, used) = parse_reply(b).unwrap().unwrap();
        assert_eq!(
            (r.code.as_ref(), r.opaque, r.value.as_deref()),
            ("VA", Some(7), Some(&b"abc"[..]))
        );
        let (r2, used2) = parse_reply(&b[used..]).unwrap().unwrap();
        assert_eq!(
            (r2.code.as_ref(), r2.line.as_str(), r2.value.as_deref()),
            ("VALUE", "k", Some(&b"hi"[..]))
        );
        let (r3, used3) = parse_reply(&b[used + used2..]).unwrap().unwrap();
        assert_eq!(r3.code.as_ref(), "END");
        // Incomplete value: wait for more bytes.
        assert!(parse_reply(&b[used + used2 + used3..]).unwrap().is_none());
        assert!(parse_reply(b"VA x\r\n").is_err());
        let (r, _) = parse_reply(b"VA 2 c18446744073709551615 t-1 O2\r\n-8\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.cas, r.ttl, r.opaque), (Some(u64::MAX), Some(-1), Some(2)));
        let (r, _) = parse_reply(b"HD t95\r\n").unwrap().unwrap();
        assert_eq!((r.cas, r.ttl), (None, Some(95)));
    }

    #[test]
    fn garbage_is_named_at_once_with_its_bytes_escaped() {
        // Complete lines with unknown codes, or partial ones that cannot become a reply.
        for (bytes, shown) in [
            (
                &b"HTTP/1.1 400 Bad Request\r\n"[..],
                "HTTP/1.1 400 Bad Request\\r\\n",
            ),
            (b"\x00\xffjunk", "\\x00\\xffjunk"),
            (b"junk", "junk"),
            (b"ENDX\r\n", "ENDX\\r\\n"),
            (b"VA 99999999999 \r\n", "VA 99999999999 \\r\\n"),
            (b"VALUE k 0 -1\r\n", "VALUE k 0 -1\\r\\n"),
        ] {
            assert_eq!(parse_reply(bytes).err(), Some(Garbage(shown.into())));
        }
        let long = vec![b'S'; MAX_LINE + 1];
        assert!(parse_reply(&long).is_err());
        // Prefixes of real codes wait.
        for partial in [
            &b"EN"[..],
            b"SERVER_ERR",
            b"VALUE k 0 1",
            b"STAT pid 12",
            b"",
        ] {
            assert!(parse_reply(partial).unwrap().is_none(), "{partial:?}");
        }
    }
}
