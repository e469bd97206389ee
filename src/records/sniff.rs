//! Format detection: as few bytes as it takes, put back for the reader.

use std::io::{BufRead, BufReader, Read};

use super::{InputError, InputFormat, entries};

pub(super) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decides the format from the input's first bytes (after any BOM):
/// `None` when they do not suffice yet and more may come (`eof` false).
fn decide(buf: &[u8], eof: bool, source: &str) -> Option<Result<InputFormat, InputError>> {
    let Some(start) = buf.iter().position(|b| !b.is_ascii_whitespace()) else {
        return eof.then(|| {
            Err(InputError {
                message: format!("{source}: input is empty (expected JSON records)"),
            })
        });
    };
    match buf[start] {
        b'[' => Some(Ok(InputFormat::Array)),
        b'{' => {
            let rest = &buf[start + 1..];
            let Some(k) = rest.iter().position(|b| !b.is_ascii_whitespace()) else {
                return eof.then_some(Ok(InputFormat::Jsonl));
            };
            let key = &rest[k..];
            let seed_keys: [&[u8]; 2] = [b"\"records\"", b"\"backends\""];
            if !eof
                && seed_keys
                    .iter()
                    .any(|s| key.len() < s.len() && s.starts_with(key))
            {
                return None;
            }
            let is_seed = seed_keys.iter().any(|s| key.starts_with(s));
            Some(Ok(if is_seed {
                InputFormat::Seed
            } else {
                InputFormat::Jsonl
            }))
        }
        other => {
            let line = 1 + buf[..start].iter().filter(|&&b| b == b'\n').count();
            Some(Err(InputError {
                message: format!(
                    "{source}: line {line}: expected a JSON object, array or JSON Lines, found {:?}",
                    other as char
                ),
            }))
        }
    }
}

/// Detects the format from the bytes `r` has buffered, without consuming
/// them. Returns [`InputFormat::Auto`] when they do not suffice (a short
/// read from a pipe, a long run of leading whitespace): [`sniff`] and
/// [`read_records`](super::read_records) read on as far as needed instead.
pub fn detect<R: BufRead>(r: &mut R, source: &str) -> Result<InputFormat, InputError> {
    let buf = r.fill_buf().map_err(|e| InputError {
        message: format!("{source}: cannot read: {e}"),
    })?;
    let eof = buf.is_empty();
    let buf = buf.strip_prefix(BOM).unwrap_or(buf);
    decide(buf, eof, source).unwrap_or(Ok(InputFormat::Auto))
}

/// An input whose first bytes were read ahead to tell its format, put
/// back: leading whitespace as counted newlines and spaces (so line and
/// column numbers stay right and memory stays bounded), then the bytes kept,
/// then the rest. A leading BOM is dropped.
pub struct Sniffed<R> {
    lines: u64,
    spaces: u64,
    kept: std::io::Cursor<Vec<u8>>,
    rest: BufReader<R>,
}

const NEWLINES: [u8; 1024] = [b'\n'; 1024];
const SPACES: [u8; 1024] = [b' '; 1024];

impl<R: Read> BufRead for Sniffed<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.lines > 0 {
            return Ok(&NEWLINES[..self.lines.min(1024) as usize]);
        }
        if self.spaces > 0 {
            return Ok(&SPACES[..self.spaces.min(1024) as usize]);
        }
        if (self.kept.position() as usize) < self.kept.get_ref().len() {
            return self.kept.fill_buf();
        }
        self.rest.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        if self.lines > 0 {
            self.lines -= n as u64;
        } else if self.spaces > 0 {
            self.spaces -= n as u64;
        } else if (self.kept.position() as usize) < self.kept.get_ref().len() {
            self.kept.consume(n);
        } else {
            self.rest.consume(n);
        }
    }
}

impl<R: Read> Read for Sniffed<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Where the format sniffer is in the input.
enum Sniff {
    /// Leading whitespace.
    Lead,
    /// After the first `{`, before its first non-space byte.
    Brace,
    /// Reading the first key of a `{` from `kept[start..]`.
    Key(usize),
}

/// Drops a leading UTF-8 BOM and, for [`InputFormat::Auto`], reads just as
/// far as needed to tell the format, whatever sizes the reads return, however
/// large the first record and however much whitespace comes first. Returns
/// the format and the input with what was read ahead put back.
pub fn sniff<R: Read>(
    input: R,
    source: &str,
    format: InputFormat,
) -> Result<(InputFormat, Sniffed<R>), InputError> {
    let mut rest = BufReader::with_capacity(256 * 1024, input);
    let mut next = || -> Result<Option<u8>, InputError> {
        let buf = rest.fill_buf().map_err(|e| InputError {
            message: format!("{source}: cannot read: {e}"),
        })?;
        let b = buf.first().copied();
        rest.consume(usize::from(b.is_some()));
        Ok(b)
    };
    let mut kept = Vec::new();
    while kept.len() < BOM.len() && BOM.starts_with(&kept) {
        match next()? {
            Some(b) => kept.push(b),
            None => break,
        }
    }
    if kept == BOM {
        kept.clear();
    }
    let (mut lines, mut spaces) = (0u64, 0u64);
    let format = match format {
        InputFormat::Auto => {
            // The bytes after the BOM go through the sniffer first.
            let mut queued = std::mem::take(&mut kept).into_iter();
            let mut state = Sniff::Lead;
            loop {
                let b = match queued.next() {
                    Some(b) => Some(b),
                    None => next()?,
                };
                if let Some(f) =
                    sniff_step(&mut state, b, &mut kept, &mut lines, &mut spaces, source)
                {
                    kept.extend(queued);
                    break f?;
                }
            }
        }
        InputFormat::AnyEntries => {
            let head = std::io::Cursor::new(std::mem::take(&mut kept)).chain(&mut rest);
            let (format, seen) = entries::detect(head);
            kept = seen;
            format
        }
        f => f,
    };
    let kept = std::io::Cursor::new(kept);
    Ok((
        format,
        Sniffed {
            lines,
            spaces,
            kept,
            rest,
        },
    ))
}

/// One byte (`None`: end of input) through the sniffer; `Some` once decided.
fn sniff_step(
    state: &mut Sniff,
    b: Option<u8>,
    kept: &mut Vec<u8>,
    lines: &mut u64,
    spaces: &mut u64,
    source: &str,
) -> Option<Result<InputFormat, InputError>> {
    const SEED_KEYS: [&[u8]; 2] = [b"\"records\"", b"\"backends\""];
    let Some(b) = b else {
        return Some(match state {
            Sniff::Lead => Err(InputError {
                message: format!("{source}: input is empty (expected JSON records)"),
            }),
            _ => Ok(InputFormat::Jsonl),
        });
    };
    match state {
        Sniff::Lead if b == b'\n' => (*lines, *spaces) = (*lines + 1, 0),
        Sniff::Lead if b.is_ascii_whitespace() => *spaces += 1,
        Sniff::Lead => {
            kept.push(b);
            match b {
                b'[' => return Some(Ok(InputFormat::Array)),
                b'{' => *state = Sniff::Brace,
                other => {
                    return Some(Err(InputError {
                        message: format!(
                            "{source}: line {}: expected a JSON object, array or JSON Lines, found {:?}",
                            *lines + 1,
                            other as char
                        ),
                    }));
                }
            }
        }
        Sniff::Brace => {
            kept.push(b);
            if !b.is_ascii_whitespace() {
                *state = Sniff::Key(kept.len() - 1);
            }
        }
        Sniff::Key(_) => kept.push(b),
    }
    let Sniff::Key(start) = *state else {
        return None;
    };
    let key = &kept[start..];
    if SEED_KEYS
        .iter()
        .any(|s| key.len() < s.len() && s.starts_with(key))
    {
        return None;
    }
    Some(Ok(if SEED_KEYS.iter().any(|s| key.starts_with(s)) {
        InputFormat::Seed
    } else {
        InputFormat::Jsonl
    }))
}
