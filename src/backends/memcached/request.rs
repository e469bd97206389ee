//! Requests built for batches (pipelined quiet `ms`, many-key `get`) and
//! errors for replies the protocol does not allow.

use super::*;

/// ASCII `get k1 k2 ...`, up to [`GET_KEYS`] keys a line, for the keys
/// `full[i]` of `chunk`: the server answers a many-key get far faster than
/// as many `mg` commands (measured: about 2x per key). Replies name their
/// key; misses are simply absent.
pub(crate) fn get_request(
    full: &[String],
    chunk: &[usize],
) -> (Vec<u8>, Option<&'static str>, usize) {
    let mut req = Vec::with_capacity(chunk.len() * 40);
    let lines = chunk.len().div_ceil(GET_KEYS);
    for part in chunk.chunks(GET_KEYS) {
        req.extend_from_slice(b"get");
        for &i in part {
            req.push(b' ');
            req.extend_from_slice(full[i].as_bytes());
        }
        req.extend_from_slice(b"\r\n");
    }
    (req, Some("END"), lines)
}

/// Quiet-mode `ms` for the keys `keys[j]` of `chunk` (value `value(j)`,
/// `ttl_flag` either empty or ` T<exptime>`), each tagged with its position
/// in `chunk` as opaque, then `mn`: only failures and the final `MN` answer.
pub(crate) fn set_request<'v>(
    keys: &[String],
    value: impl Fn(usize) -> &'v [u8],
    chunk: &[usize],
    ttl_flag: &str,
) -> Vec<u8> {
    let bytes: usize = chunk.iter().map(|&j| value(j).len() + 64).sum();
    let mut req = Vec::with_capacity(bytes + 8);
    for (o, &j) in chunk.iter().enumerate() {
        let v = value(j);
        req.extend_from_slice(b"ms ");
        req.extend_from_slice(keys[j].as_bytes());
        req.push(b' ');
        push_num(&mut req, v.len() as u64);
        req.extend_from_slice(ttl_flag.as_bytes());
        req.extend_from_slice(b" q O");
        push_num(&mut req, o as u64);
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"mn\r\n");
    req
}

/// Puts the values of a [`get_request`]'s replies in `out`.
pub(crate) fn take_values(
    addr: &str,
    full: &[String],
    chunk: &[usize],
    replies: Vec<Reply>,
    out: &mut [Option<Bytes>],
) -> Result<()> {
    // Key -> its first position; a key asked twice gets its value copied
    // afterwards (no list per key).
    let mut first: HashMap<&str, usize, Xxh3DefaultBuilder> =
        HashMap::with_capacity_and_hasher(chunk.len(), Xxh3DefaultBuilder);
    let mut repeated = false;
    for &i in chunk {
        repeated |= *first.entry(full[i].as_str()).or_insert(i) != i;
    }
    for mut r in replies {
        match (r.code.as_ref(), r.value.take()) {
            ("VALUE", Some(v)) => {
                let Some(&i) = first.get(r.line.as_str()) else {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        format!(
                            "unexpected reply from {addr}: a value for key {} not asked for",
                            r.line.as_bytes().escape_ascii()
                        ),
                    )
                    .with_backend(BACKEND));
                };
                out[i] = Some(Bytes::from(v));
            }
            ("END", _) => {}
            _ => return Err(unexpected(addr, &r)),
        }
    }
    if repeated {
        for &i in chunk {
            let f = first[full[i].as_str()];
            if f != i {
                out[i] = out[f].clone();
            }
        }
    }
    Ok(())
}

/// A reply the protocol does not allow at this point.
pub(crate) fn unexpected(addr: &str, r: &Reply) -> Error {
    // Hot replies (VA/HD/...) keep only their code.
    let shown = if r.line.is_empty() {
        r.code.as_ref()
    } else {
        r.line.as_str()
    };
    Error::new(
        ErrorKind::Backend,
        format!(
            "unexpected reply from {addr}: {}",
            shown.as_bytes().escape_ascii()
        ),
    )
    .with_backend(BACKEND)
}

pub(crate) fn proto_err(addr: &str, msg: String) -> Error {
    Error::new(ErrorKind::Backend, msg)
        .with_backend(BACKEND)
        .with_context("server", addr)
}

/// Appends `n` in decimal (request building is per key: no formatter).
pub(crate) fn push_num(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_request_is_quiet_ms_tagged_by_position_then_mn() {
        let keys = vec!["a".to_string(), "bb".to_string(), "c".to_string()];
        let values: [&[u8]; 3] = [b"1", b"22", b"333"];
        let req = set_request(&keys, |j| values[j], &[2, 0], " T60");
        assert_eq!(
            req,
            b"ms c 3 T60 q O0\r\n333\r\nms a 1 T60 q O1\r\n1\r\nmn\r\n".to_vec()
        );
    }
}
