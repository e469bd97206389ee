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
use std::io::{BufRead, Read};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

mod entries;
mod sniff;

pub use sniff::{Sniffed, detect, sniff};

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
    let b = json.as_bytes();
    // Valid JSON has no raw byte below 0x21 but whitespace (control
    // characters are escaped inside strings), so text without one is
    // already compact: one copy, the common case for machine-written lines.
    if b.chunks(64)
        .all(|c| c.iter().fold(true, |ok, &x| ok & (x > b' ')))
    {
        return b.to_vec();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            // A string goes through whole, up to its closing quote (an
            // escaped quote does not close it).
            let start = i;
            i += 1;
            loop {
                let next = b
                    .get(i..)
                    .and_then(|r| r.iter().position(|&x| x == b'"' || x == b'\\'));
                let Some(j) = next else {
                    i = b.len(); // unterminated: the rest is the string's
                    break;
                };
                i += j + 1;
                if b[i - 1] == b'"' {
                    break;
                }
                i += 1; // the escaped character
            }
            let end = i.min(b.len());
            out.extend_from_slice(&b[start..end]);
            i = end;
            continue;
        }
        if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// The key field's value, if usable: a non-empty string, or an integer of
/// any size as its decimal text. A field given twice counts by its last
/// occurrence, as JSON parsers (and the seed) read it. With `whole`, text
/// after the object other than whitespace is an error too.
fn extract_key(raw: &str, field: &str, whole: bool) -> Result<Option<String>, String> {
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
    if whole {
        de.end().map_err(|e| e.to_string())?;
    }
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
    let key = match extract_key(raw, &policy.field, false) {
        Ok(k) => k,
        Err(e) => {
            return Ok(Item::Rejected(Rejected {
                position,
                reason: format!("unreadable record: {e}"),
                raw: text(),
            }));
        }
    };
    keyed(value, key, position, policy, source)
}

/// Keys and encodes one JSON Lines line in a single parse (the line's
/// syntax, its being an object and its key field, all at once): what
/// [`key_record`] makes of the line's JSON value, which costs a parse more
/// (the value's extent first). `None` when the line is anything but a
/// well-formed object: [`key_record`]'s path then says why, as before.
fn key_line(
    line: &str,
    position: Position,
    policy: &KeyPolicy,
    source: &str,
) -> Option<Result<Item, InputError>> {
    if !line.trim_start().starts_with('{') {
        return None;
    }
    let key = extract_key(line, &policy.field, true).ok()?;
    // Only JSON whitespace is left around the object (the parse said so):
    // trimmed first, a line without any inside is copied whole by `minify`.
    let object = line.trim_matches(|c| matches!(c, ' ' | '\n' | '\r' | '\t'));
    Some(keyed(minify(object), key, position, policy, source))
}

/// A record from its compact JSON and its key, if usable, per `policy`.
fn keyed(
    value: Vec<u8>,
    key: Option<String>,
    position: Position,
    policy: &KeyPolicy,
    source: &str,
) -> Result<Item, InputError> {
    let text = || String::from_utf8_lossy(&value).into_owned();
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
    r: R,
    source: &str,
    policy: &KeyPolicy,
    sink: &mut dyn FnMut(Item) -> bool,
) -> Result<(), InputError> {
    for_each_line(r, source, |text, position| {
        let item = match std::str::from_utf8(text) {
            Err(e) => Item::Rejected(Rejected {
                position,
                reason: format!("not valid UTF-8 at byte {}", e.valid_up_to()),
                raw: String::from_utf8_lossy(text).trim_end().to_string(),
            }),
            Ok(s) => match key_line(s, position, policy, source) {
                Some(item) => item?,
                None => slow_line(s, position, policy, source)?,
            },
        };
        Ok(sink(item))
    })
}

/// A line [`key_line`] did not take: not an object, or not JSON at all.
fn slow_line(
    s: &str,
    position: Position,
    policy: &KeyPolicy,
    source: &str,
) -> Result<Item, InputError> {
    Ok(match serde_json::from_str::<&RawValue>(s) {
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
    })
}

/// Hands each non-blank line of `r` (its bytes, newline included) and its
/// position to `each`, until the input ends or `each` says stop (`false`);
/// the line-oriented formats (JSON Lines, export lines) share it, so they
/// count lines and records alike.
fn for_each_line<R: BufRead>(
    mut r: R,
    source: &str,
    mut each: impl FnMut(&[u8], Position) -> Result<bool, InputError>,
) -> Result<(), InputError> {
    let mut buf = Vec::with_capacity(4096);
    let (mut line, mut record) = (0u64, 0u64);
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|e| InputError {
            message: format!("{source}: line {}: cannot read: {e}", line + 1),
        })?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        record += 1;
        if !each(&buf, Position { record, line })? {
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

/// A seekable input's format (sniffed only as far as it shows) and, for
/// the seed's config object, its `backends` list (which may follow the
/// records); the file is rewound, ready for the writer. The one way the
/// CLI (a file, or stdin spooled to one) and the Python package prepare an
/// input whose targets come from the seed's config.
pub fn prepare_seekable(
    file: &mut std::fs::File,
    source: &str,
    format: InputFormat,
) -> Result<(InputFormat, Option<Vec<String>>), InputError> {
    use std::io::Seek;
    let rewind = |f: &mut std::fs::File| {
        f.rewind().map_err(|e| InputError {
            message: format!("{source}: cannot rewind the input: {e}"),
        })
    };
    let (found, sniffed) = sniff(&mut *file, source, format)?;
    drop(sniffed);
    rewind(file)?;
    let backends = if found == InputFormat::Seed {
        let backends = scan_backends(&mut *file, source)?;
        rewind(file)?;
        backends
    } else {
        None
    };
    Ok((found, backends))
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
mod tests;
