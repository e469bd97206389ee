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
    /// Its compact JSON text.
    pub value: Vec<u8>,
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

/// The key field's value, if usable: a non-empty string, or an integer.
fn extract_key(raw: &str, field: &str) -> Result<Option<String>, String> {
    struct FindKey<'f>(&'f str);
    impl<'de> Visitor<'de> for FindKey<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if k == self.0 && found.is_none() {
                    let v: serde_json::Value = map.next_value()?;
                    found = Some(match v {
                        serde_json::Value::String(s) if !s.is_empty() => Some(s),
                        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                            Some(n.to_string())
                        }
                        _ => None,
                    });
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found.flatten())
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    de::Deserializer::deserialize_map(&mut de, FindKey(field)).map_err(|e| e.to_string())
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
        })),
        (None, MissingKey::Hash) => {
            let h = xxhash_rust::xxh3::xxh3_128(&value);
            Ok(Item::Record(Record {
                position,
                key: format!("hash:{h:032x}"),
                value,
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

/// Detects the format from the buffered first bytes (does not consume).
pub fn detect<R: BufRead>(r: &mut R, source: &str) -> Result<InputFormat, InputError> {
    let buf = r.fill_buf().map_err(|e| InputError {
        message: format!("{source}: cannot read: {e}"),
    })?;
    let buf = buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(buf);
    let Some(start) = buf.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Err(InputError {
            message: format!("{source}: input is empty (expected JSON records)"),
        });
    };
    let line = 1 + buf[..start].iter().filter(|&&b| b == b'\n').count();
    match buf[start] {
        b'[' => Ok(InputFormat::Array),
        b'{' => {
            let rest = &buf[start + 1..];
            let k = rest.iter().position(|b| !b.is_ascii_whitespace());
            let is_seed = k.is_some_and(|k| {
                rest[k..].starts_with(b"\"records\"") || rest[k..].starts_with(b"\"backends\"")
            });
            Ok(if is_seed {
                InputFormat::Seed
            } else {
                InputFormat::Jsonl
            })
        }
        other => Err(InputError {
            message: format!(
                "{source}: line {line}: expected a JSON object, array or JSON Lines, found {:?}",
                other as char
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
    let mut r = BufReader::with_capacity(256 * 1024, input);
    let format = match format {
        InputFormat::Auto => detect(&mut r, source)?,
        f => f,
    };
    let mut meta = InputMeta {
        format: Some(format),
        backends: None,
    };
    match format {
        InputFormat::Jsonl | InputFormat::Auto => read_jsonl(r, source, policy, &mut sink)?,
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
        let text = if line == 1 {
            buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf)
        } else {
            &buf[..]
        };
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
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(256 * 1024, input));
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
