//! Input records, streamed: the seed's `{"records": [...], "backends": [...]}`
//! object, a plain JSON array, or JSON Lines, detected from the first bytes.
//!
//! Memory stays bounded by one batch whatever the input size: arrays are read
//! element by element through a serde visitor, JSON Lines line by line. Each
//! record is keyed (key field, missing-key policy) and encoded as its compact
//! JSON text, byte for byte what the input said minus insignificant
//! whitespace (number spelling and field order are kept). Nothing is dropped
//! silently: a record that cannot be stored comes out as a [`Rejected`].

use std::fmt;
use std::io::{BufRead, BufReader, Read};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

mod entries;

/// How the input is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InputFormat {
    /// Decide from the first bytes: `[` array; `{` whose first key is
    /// `records` or `backends` the seed's config; any other `{` JSON Lines.
    #[default]
    Auto,
    /// `{"records": [...], "backends": [...]}`.
    Seed,
    /// `[{...}, {...}]`.
    Array,
    /// One JSON object per line.
    Jsonl,
    /// `unicache export`'s JSON Lines: `{"key":..,"value"|"value_b64":..,"ttl_ms":..}`
    /// per line; each entry stored as given (`import`).
    Entries,
    /// The seed's cache file, one object `{"key": "value", ...}` (`import`).
    CacheFile,
    /// [`InputFormat::Entries`] or [`InputFormat::CacheFile`], told apart by
    /// the first object's structure (`import --format auto`).
    AnyEntries,
}

impl std::str::FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(InputFormat::Auto),
            "seed" => Ok(InputFormat::Seed),
            "array" | "json" => Ok(InputFormat::Array),
            "jsonl" | "ndjson" => Ok(InputFormat::Jsonl),
            _ => Err(format!("unknown format {s:?} (auto, seed, array, jsonl)")),
        }
    }
}

/// What to do with a record that has no usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// Leave it out, count it and report its position (the default).
    #[default]
    Skip,
    /// Key it by a stable hash of its content (`hash:<32 hex digits>`).
    Hash,
    /// Stop the run at the first one.
    Fail,
}

impl std::str::FromStr for MissingKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(MissingKey::Skip),
            "hash" => Ok(MissingKey::Hash),
            "fail" => Ok(MissingKey::Fail),
            _ => Err(format!("unknown policy {s:?} (skip, hash, fail)")),
        }
    }
}

/// How records are keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The field whose value is the key (a string, or an integer as decimal text).
    pub field: String,
    /// What to do when it is missing, empty or not a string/integer.
    pub missing: MissingKey,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            field: "key".into(),
            missing: MissingKey::Skip,
        }
    }
}

/// Where a record sits in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Position {
    /// 1-based number of the record in the input.
    pub record: u64,
    /// 1-based line for JSON Lines input (0 when not known).
    #[serde(skip_serializing_if = "is_zero")]
    pub line: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}", self.line)
        } else {
            write!(f, "record {}", self.record)
        }
    }
}

/// A record ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where it came from.
    pub position: Position,
    /// Its key.
    pub key: String,
    /// Its compact JSON text (for [`InputFormat::Entries`]: the entry's value).
    pub value: Vec<u8>,
    /// Its own TTL (an imported entry's `ttl_ms`); `None`: the writer's TTL.
    pub ttl: Option<std::time::Duration>,
}

/// A record that will not be stored, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// Where it came from.
    pub position: Position,
    /// Why it was left out.
    pub reason: String,
    /// Its text (compact when it parsed), for the rejects file.
    pub raw: String,
}

/// A fatal input problem: the message names the source and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// One-line description including source name and line/column.
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

/// One item of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Keyed and encoded.
    Record(Record),
    /// Left out.
    Rejected(Rejected),
}

/// What the reader learned besides records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputMeta {
    /// The format actually read.
    pub format: Option<InputFormat>,
    /// The seed config's `backends`, if it had one.
    pub backends: Option<Vec<String>>,
}

/// Removes insignificant whitespace from valid JSON text.
pub fn minify(json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut in_str = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_str {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if b == b'"' {
                in_str = true;
            }
            out.push(b);
        }
    }
    out
}

/// The key field's value, if usable: a non-empty string, or an integer of
/// any size as its decimal text. A field given twice counts by its last
/// occurrence, as JSON parsers (and the seed) read it.
fn extract_key(raw: &str, field: &str) -> Result<Option<String>, String> {
    struct FindKey<'f>(&'f str);
    impl<'de> Visitor<'de> for FindKey<'_> {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if k == self.0 {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    let found =
        de::Deserializer::deserialize_map(&mut de, FindKey(field)).map_err(|e| e.to_string())?;
    Ok(found.and_then(|v| key_text(v.get())))
}

/// A key from the raw JSON of the key field: a non-empty string, or an
/// integer (the raw digits, so no size limit). Fractions and exponents
/// (`1.5`, `1e3`, `1.0`) are not keys: their text is not one number's only spelling.
fn key_text(v: &str) -> Option<String> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    match v.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(v)
            .ok()
            .filter(|s| !s.is_empty()),
        _ if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some(v.to_string())
        }
        _ => None,
    }
}

fn kind_of(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Keys and encodes one record's raw JSON text.
pub fn key_record(
    raw: &str,
    position: Position,
    policy: &KeyPolicy,
    source: &str,
) -> Result<Item, InputError> {
    let value = minify(raw);
    let text = || String::from_utf8_lossy(&value).into_owned();
    if !raw.trim_start().starts_with('{') {
        return Ok(Item::Rejected(Rejected {
            position,
            reason: format!("record is {}, not an object", kind_of(raw)),
            raw: text(),
        }));
    }
    let key = match extract_key(raw, &policy.field) {
        Ok(k) => k,
        Err(e) => {
            return Ok(Item::Rejected(Rejected {
                position,
                reason: format!("unreadable record: {e}"),
                raw: text(),
            }));
        }
    };
    match (key, policy.missing) {
        (Some(key), _) => Ok(Item::Record(Record {
            position,
            key,
            value,
            ttl: None,
        })),
        (None, MissingKey::Hash) => {
            let h = xxhash_rust::xxh3::xxh3_128(&value);
            Ok(Item::Record(Record {
                position,
                key: format!("hash:{h:032x}"),
                value,
                ttl: None,
            }))
        }
        (None, MissingKey::Skip) => Ok(Item::Rejected(Rejected {
            position,
            reason: format!("no usable {:?} field (string or integer)", policy.field),
            raw: text(),
        })),
        (None, MissingKey::Fail) => Err(InputError {
            message: format!(
                "{source}: {position}: record has no usable {:?} field (string or integer); \
                 use --missing-key skip or hash to go on",
                policy.field
            ),
        }),
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

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
/// [`read_records`] read on as far as needed instead.
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

fn json_error(source: &str, e: &serde_json::Error) -> InputError {
    let msg = e.to_string();
    // serde_json appends " at line L column C"; we print it first instead.
    let msg = msg
        .rsplit_once(" at line ")
        .map(|(m, _)| m.to_string())
        .unwrap_or(msg);
    let what = if e.is_eof() {
        "unexpected end of input"
    } else {
        "malformed JSON"
    };
    InputError {
        message: format!(
            "{source}: line {} column {}: {what}: {msg}",
            e.line(),
            e.column()
        ),
    }
}

/// Reads `input` to the end, calling `sink` for each item in order; stops
/// early (without error) when `sink` returns `false`.
pub fn read_records<R: Read>(
    input: R,
    source: &str,
    format: InputFormat,
    policy: &KeyPolicy,
    mut sink: impl FnMut(Item) -> bool,
) -> Result<InputMeta, InputError> {
    let (format, r) = sniff(input, source, format)?;
    let mut meta = InputMeta {
        format: Some(format),
        backends: None,
    };
    match format {
        InputFormat::Jsonl | InputFormat::Auto => read_jsonl(r, source, policy, &mut sink)?,
        InputFormat::Entries | InputFormat::AnyEntries => {
            entries::read_lines(r, source, &mut sink)?
        }
        InputFormat::CacheFile => entries::read_object(r, source, &mut sink)?,
        InputFormat::Array | InputFormat::Seed => {
            let mut state = ArrayState {
                source,
                policy,
                sink: &mut sink,
                count: 0,
                stopped: false,
                fatal: None,
            };
            let mut de = serde_json::Deserializer::from_reader(r);
            let res = if format == InputFormat::Array {
                de::Deserializer::deserialize_seq(&mut de, RecordsSeq(&mut state))
            } else {
                de::Deserializer::deserialize_map(
                    &mut de,
                    SeedConfig {
                        state: &mut state,
                        backends: &mut meta.backends,
                    },
                )
            };
            if let Some(f) = state.fatal.take() {
                return Err(f);
            }
            if state.stopped {
                return Ok(meta);
            }
            res.map_err(|e| json_error(source, &e))?;
            de.end().map_err(|e| json_error(source, &e))?;
        }
    }
    Ok(meta)
}

fn read_jsonl<R: BufRead>(
    mut r: R,
    source: &str,
    policy: &KeyPolicy,
    sink: &mut dyn FnMut(Item) -> bool,
) -> Result<(), InputError> {
    let mut buf = Vec::with_capacity(4096);
    let mut line = 0u64;
    let mut record = 0u64;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|e| InputError {
            message: format!("{source}: line {}: cannot read: {e}", line + 1),
        })?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        let text = &buf[..];
        if text.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        record += 1;
        let position = Position { record, line };
        let item = match std::str::from_utf8(text) {
            Err(e) => Item::Rejected(Rejected {
                position,
                reason: format!("not valid UTF-8 at byte {}", e.valid_up_to()),
                raw: String::from_utf8_lossy(text).trim_end().to_string(),
            }),
            Ok(s) => match serde_json::from_str::<&RawValue>(s) {
                Err(e) => Item::Rejected(Rejected {
                    position,
                    reason: format!(
                        "malformed JSON at column {}: {}",
                        e.column(),
                        e.to_string()
                            .rsplit_once(" at line ")
                            .map(|x| x.0.to_string())
                            .unwrap_or_default()
                    ),
                    raw: s.trim_end().to_string(),
                }),
                Ok(raw) => key_record(raw.get(), position, policy, source)?,
            },
        };
        if !sink(item) {
            return Ok(());
        }
    }
}

struct ArrayState<'a> {
    source: &'a str,
    policy: &'a KeyPolicy,
    sink: &'a mut dyn FnMut(Item) -> bool,
    count: u64,
    stopped: bool,
    fatal: Option<InputError>,
}

/// Visits a JSON array of records one element at a time.
struct RecordsSeq<'s, 'a>(&'s mut ArrayState<'a>);

impl<'de> Visitor<'de> for RecordsSeq<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let st = self.0;
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            st.count += 1;
            let position = Position {
                record: st.count,
                line: 0,
            };
            match key_record(raw.get(), position, st.policy, st.source) {
                Ok(item) => {
                    if !(st.sink)(item) {
                        st.stopped = true;
                        return Err(de::Error::custom("stopped"));
                    }
                }
                Err(e) => {
                    st.fatal = Some(e);
                    return Err(de::Error::custom("fatal"));
                }
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for RecordsSeq<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

/// Visits the seed's config object: streams `records`, keeps `backends`.
struct SeedConfig<'s, 'a> {
    state: &'s mut ArrayState<'a>,
    backends: &'s mut Option<Vec<String>>,
}

impl<'de> Visitor<'de> for SeedConfig<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with \"records\" and \"backends\"")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                "records" => map.next_value_seed(RecordsSeq(self.state))?,
                "backends" => *self.backends = Some(map.next_value::<Vec<String>>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads only the seed config's `backends` (records are skipped, not kept).
pub fn scan_backends<R: Read>(input: R, source: &str) -> Result<Option<Vec<String>>, InputError> {
    struct Scan;
    impl<'de> Visitor<'de> for Scan {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object with \"records\" and \"backends\"")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut b = None;
            while let Some(k) = map.next_key::<String>()? {
                if k == "backends" {
                    b = Some(map.next_value::<Vec<String>>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(b)
        }
    }
    let (_, r) = sniff(input, source, InputFormat::Seed)?;
    let mut de = serde_json::Deserializer::from_reader(r);
    let b = de::Deserializer::deserialize_map(&mut de, Scan).map_err(|e| json_error(source, &e))?;
    de.end().map_err(|e| json_error(source, &e))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &str, policy: &KeyPolicy) -> Result<(Vec<Item>, InputMeta), InputError> {
        let mut items = Vec::new();
        let meta = read_records(input.as_bytes(), "in", InputFormat::Auto, policy, |i| {
            items.push(i);
            true
        })?;
        Ok((items, meta))
    }

    fn keys(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Record(r) => Some(r.key.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn seed_format_with_backends_anywhere() {
        let (items, meta) = read(
            r#"{"records": [{"key": "a", "v": 1.50}, {"key": 7}], "backends": ["memory", "sqlite"]}"#,
            &KeyPolicy::default(),
        )
        .unwrap();
        assert_eq!(meta.format, Some(InputFormat::Seed));
        assert_eq!(meta.backends.unwrap(), vec!["memory", "sqlite"]);
        assert_eq!(keys(&items), vec!["a", "7"]);
        match &items[0] {
            Item::Record(r) => assert_eq!(r.value, br#"{"key":"a","v":1.50}"#),
            _ => panic!(),
        }
    }

    #[test]
    fn array_and_jsonl() {
        let (items, meta) = read("[\n {\"key\": \"x\"},\n 5\n]", &KeyPolicy::default()).unwrap();
        assert_eq!(meta.format, Some(InputFormat::Array));
        assert_eq!(keys(&items), vec!["x"]);
        assert!(
            matches!(&items[1], Item::Rejected(r) if r.reason.contains("a number") && r.position.record == 2)
        );

        let (items, meta) = read(
            "{\"key\":\"a\"}\n\n{\"id\":1}\n{bad\n{\"key\": \"b\"}\n",
            &KeyPolicy::default(),
        )
        .unwrap();
        assert_eq!(meta.format, Some(InputFormat::Jsonl));
        assert_eq!(keys(&items), vec!["a", "b"]);
        let rej: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                Item::Rejected(r) => Some((r.position.line, r.reason.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(rej.len(), 2);
        assert_eq!(rej[0].0, 3);
        assert_eq!(rej[1].0, 4);
        assert!(rej[1].1.contains("malformed"), "{rej:?}");
    }

    #[test]
    fn missing_key_policies() {
        let input = r#"[{"key": ""}, {"v": 1}, {"key": null}, {"key": 1.5}]"#;
        let (items, _) = read(input, &KeyPolicy::default()).unwrap();
        assert!(items.iter().all(|i| matches!(i, Item::Rejected(_))));

        let hash = KeyPolicy {
            missing: MissingKey::Hash,
            ..KeyPolicy::default()
        };
        let (a, _) = read(input, &hash).unwrap();
        let (b, _) = read(input, &hash).unwrap();
        assert_eq!(keys(&a), keys(&b));
        assert_eq!(keys(&a).len(), 4);
        assert!(keys(&a)[0].starts_with("hash:"));

        let fail = KeyPolicy {
            missing: MissingKey::Fail,
            ..KeyPolicy::default()
        };
        let e = read(input, &fail).unwrap_err();
        assert!(e.message.contains("record 1"), "{e}");
    }

    #[test]
    fn malformed_and_empty_say_where() {
        let e = read("[{\"key\": \"a\"},\n {\"key\": }]", &KeyPolicy::default()).unwrap_err();
        assert!(e.message.starts_with("in: line 2 column"), "{e}");
        let e = read("  \n ", &KeyPolicy::default()).unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        let e = read("[{\"key\": \"a\"}", &KeyPolicy::default()).unwrap_err();
        assert!(e.message.contains("end of input"), "{e}");
        let e = read("[] x", &KeyPolicy::default()).unwrap_err();
        assert!(e.message.contains("line 1"), "{e}");
        let e = read("hello", &KeyPolicy::default()).unwrap_err();
        assert!(e.message.contains("expected a JSON"), "{e}");
    }

    /// Item 17: integers of any size (and negative) are keys as their
    /// digits; fractions and exponents are not keys. Item 18: a duplicated
    /// key field counts by its last occurrence.
    #[test]
    fn integer_keys_of_any_size_and_last_duplicate_wins() {
        let input = r#"[{"key": 1180591620717411303424}, {"key": -42}, {"key": 18446744073709551616},
            {"key": "a", "key": "b"}, {"key": 1, "v": 0, "key": "last"}, {"key": 0},
            {"key": 1.5}, {"key": 1e3}, {"key": 1.0}, {"key": -1E2}, {"key": "a", "key": null}]"#;
        let (items, _) = read(input, &KeyPolicy::default()).unwrap();
        assert_eq!(
            keys(&items),
            [
                "1180591620717411303424",
                "-42",
                "18446744073709551616",
                "b",
                "last",
                "0"
            ]
        );
        assert_eq!(items.len(), 11);
        let jsonl = "{\"key\":\"first\",\"key\":\"second\"}\n{\"key\":99999999999999999999999}\n";
        assert_eq!(
            keys(&read(jsonl, &KeyPolicy::default()).unwrap().0),
            ["second", "99999999999999999999999"]
        );
    }

    /// Item 19: a UTF-8 BOM is accepted in every format, detected or forced,
    /// and by scan_backends.
    #[test]
    fn bom_accepted_in_every_format() {
        let inputs = [
            (
                InputFormat::Jsonl,
                "\u{feff}{\"key\":\"a\"}\n{\"key\":\"b\"}\n",
            ),
            (
                InputFormat::Array,
                "\u{feff}[{\"key\":\"a\"},{\"key\":\"b\"}]",
            ),
            (
                InputFormat::Seed,
                "\u{feff}{\"records\":[{\"key\":\"a\"},{\"key\":\"b\"}],\"backends\":[\"memory\"]}",
            ),
        ];
        for (want, input) in inputs {
            for format in [InputFormat::Auto, want] {
                let mut items = Vec::new();
                let meta =
                    read_records(input.as_bytes(), "in", format, &KeyPolicy::default(), |i| {
                        items.push(i);
                        true
                    })
                    .unwrap_or_else(|e| panic!("{want:?}/{format:?}: {e}"));
                assert_eq!(meta.format, Some(want));
                assert_eq!(keys(&items), ["a", "b"], "{want:?}/{format:?}");
            }
            assert_eq!(detect(&mut input.as_bytes(), "in").unwrap(), want);
        }
        let b = scan_backends(inputs[2].1.as_bytes(), "in").unwrap();
        assert_eq!(b, Some(vec!["memory".to_string()]));
    }

    /// Reads one byte per call over its first 320 KiB, like a slow pipe.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let most = if self.1 < 320 * 1024 { 1 } else { buf.len() };
            let n = self.0.len().min(buf.len()).min(most);
            self.1 += n;
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Same class as item 3: detection does not depend on how much one read
    /// returns or on a buffer size: a 3 MiB first record, 300 KiB of leading
    /// whitespace, and one byte per read, in each format.
    #[test]
    fn detection_needs_no_buffer_size() {
        let big = "x".repeat(3 << 20);
        let space = " \n".repeat(150 * 1024);
        let cases = [
            (
                InputFormat::Seed,
                format!(
                    "{space}{{ \"records\": [{{\"key\":\"big\",\"v\":\"{big}\"}}], \"backends\": [\"file\"]}}"
                ),
            ),
            (
                InputFormat::Array,
                format!("{space}[{{\"v\":\"{big}\",\"key\":\"big\"}}]"),
            ),
            (
                InputFormat::Jsonl,
                format!("{space}{{\"v\":\"{big}\",\"key\":\"big\"}}\n{{\"key\":\"b\"}}\n"),
            ),
        ];
        for (want, input) in &cases {
            let mut items = Vec::new();
            let meta = read_records(
                Trickle(input.as_bytes(), 0),
                "in",
                InputFormat::Auto,
                &KeyPolicy::default(),
                |i| {
                    items.push(i);
                    true
                },
            )
            .unwrap_or_else(|e| panic!("{want:?}: {e}"));
            assert_eq!(meta.format, Some(*want));
            assert_eq!(keys(&items)[0], "big", "{want:?}");
            if *want == InputFormat::Jsonl {
                // Line numbers still count the leading blank lines.
                assert_eq!(
                    items[1].clone(),
                    match &items[1] {
                        Item::Record(r) if r.position.line == 150 * 1024 + 2 => items[1].clone(),
                        other => panic!("{other:?}"),
                    }
                );
            }
        }
        // The buffered-only detect says when it cannot tell, never guesses.
        let mut partial = std::io::BufReader::new(Trickle(cases[0].1.as_bytes(), 0));
        assert_eq!(detect(&mut partial, "in").unwrap(), InputFormat::Auto);
    }

    #[test]
    fn minify_keeps_strings() {
        assert_eq!(
            minify("{ \"a b\" : \"x \\\" y\" ,\n \"c\": [1, 2] }"),
            br#"{"a b":"x \" y","c":[1,2]}"#
        );
    }

    #[test]
    fn scan_finds_backends_after_records() {
        let b = scan_backends(
            r#"{"records": [{"key": "a"}], "backends": ["file"]}"#.as_bytes(),
            "in",
        )
        .unwrap();
        assert_eq!(b, Some(vec!["file".to_string()]));
    }
}
