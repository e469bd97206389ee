//! Cache entries as `unicache export` writes them, for `import`: JSON Lines
//! `{"key":..,"value"|"value_b64":..,"ttl_ms":..}` or the seed's cache file
//! `{"key": "value", ...}`. Each entry is stored as given, with its own TTL.

use std::cell::Cell;
use std::fmt;
use std::io::{BufRead, Read};
use std::time::Duration;

use base64::Engine as _;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{InputError, InputFormat, Item, Position, Record, for_each_line, json_error};

/// JSON Lines (`export`'s default) or the seed's one object? Decided from
/// the document's structure, however large its entries: a JSON Lines
/// file's first object is one line holding only `key`, `ttl_ms`, `value` or
/// `value_b64`, with a string `key` and a value. Returns the format and the
/// bytes read to decide (one object at most), to be read again.
pub(super) fn detect(r: impl Read) -> (InputFormat, Vec<u8>) {
    let verdict = Cell::new(None);
    let mut tee = Tee {
        inner: r,
        seen: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_reader(&mut tee);
    let _ = de::Deserializer::deserialize_map(&mut de, FirstObject(&verdict));
    drop(de);
    let seen = tee.seen;
    let text_start = seen.iter().position(|b| !b.is_ascii_whitespace());
    let one_line = text_start.is_none_or(|s| !seen[s..].trim_ascii_end().contains(&b'\n'));
    let format = match verdict.get() {
        Some(true) if one_line => InputFormat::Entries,
        Some(_) => InputFormat::CacheFile,
        // Malformed or not an object: the reader that fits reports where.
        None if one_line => InputFormat::Entries,
        None => InputFormat::CacheFile,
    };
    (format, seen)
}

/// Keeps a copy of every byte read.
struct Tee<R> {
    inner: R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Sets the verdict as soon as it is known: a key no export line has
/// means the seed's object, whatever follows.
struct FirstObject<'a>(&'a Cell<Option<bool>>);

impl<'de> Visitor<'de> for FirstObject<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let (mut key, mut value) = (false, false);
        while let Some(k) = m.next_key::<String>()? {
            match k.as_str() {
                "key" => key = m.next_value::<serde_json::Value>()?.is_string(),
                "value" | "value_b64" => {
                    m.next_value::<IgnoredAny>()?;
                    value = true;
                }
                "ttl_ms" => {
                    m.next_value::<IgnoredAny>()?;
                }
                _ => {
                    self.0.set(Some(false));
                    return Err(de::Error::custom("not an export line"));
                }
            }
        }
        self.0.set(Some(key && value));
        Ok(())
    }
}

/// One export line's fields, read in one pass.
#[derive(serde::Deserialize)]
struct Line<'a> {
    key: Option<Field>,
    value: Option<Field>,
    value_b64: Option<Field>,
    #[serde(borrow)]
    ttl_ms: Option<&'a RawValue>,
}

/// A field's JSON value: a string decoded, anything else as its compact text.
enum Field {
    Str(String),
    Null,
    Other(Vec<u8>),
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        Ok(Field::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Field, E> {
        Ok(Field::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Field, E> {
        Ok(Field::Other(v.to_string().into_bytes()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Field, E> {
        Ok(Field::Other(v.to_string().into_bytes()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field, E> {
        Ok(Field::Other(v.to_string().into_bytes()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Field, E> {
        Ok(Field::Other(
            serde_json::Value::from(v).to_string().into_bytes(),
        ))
    }
    // Objects and arrays: their text as serde_json writes it (as the first
    // importer stored them).
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Field, A::Error> {
        let v = <serde_json::Value as serde::Deserialize>::deserialize(
            de::value::MapAccessDeserializer::new(m),
        )?;
        Ok(Field::Other(v.to_string().into_bytes()))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, s: A) -> Result<Field, A::Error> {
        let v = <serde_json::Value as serde::Deserialize>::deserialize(
            de::value::SeqAccessDeserializer::new(s),
        )?;
        Ok(Field::Other(v.to_string().into_bytes()))
    }
}

/// Parses one export line; errors say which line and why.
fn parse_line(text: &str, position: Position, source: &str) -> Result<Record, InputError> {
    let n = position.line;
    let fail = |what: &str| InputError {
        message: format!("{source}: line {n}: {what}"),
    };
    if !text.trim_start().starts_with('{') {
        return Err(fail("not an object"));
    }
    let line: Line =
        serde_json::from_str(text).map_err(|e| fail(&format!("malformed JSON: {e}")))?;
    let Some(Field::Str(key)) = line.key else {
        return Err(fail("no string \"key\""));
    };
    // The order the first importer took them in: a string value, else a
    // base64 one, else any other JSON value as its text.
    let value = match (line.value, line.value_b64) {
        (Some(Field::Str(s)), _) => s.into_bytes(),
        (_, Some(Field::Str(b))) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| fail("bad value_b64"))?,
        (None | Some(Field::Null), _) => return Err(fail("no \"value\" or \"value_b64\"")),
        (Some(Field::Other(text)), _) => text,
    };
    let ttl = match line.ttl_ms.map(|t| t.get().trim()) {
        None | Some("null") => None,
        Some(t) => Some(Duration::from_millis(ttl_ms(t).ok_or_else(|| {
            fail(&format!(
                "bad \"ttl_ms\" {t}: want a whole number of milliseconds above 0"
            ))
        })?)),
    };
    Ok(Record {
        position,
        key,
        value,
        ttl,
    })
}

/// An export's `ttl_ms`: digits only, above zero; more than `u64` holds
/// saturates (the backends clamp it to what they can keep). Anything else
/// (negative, fractional, a string) is refused, never taken as "no expiry".
fn ttl_ms(t: &str) -> Option<u64> {
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = t.parse::<u64>().unwrap_or(u64::MAX);
    (ms > 0).then_some(ms)
}

/// Reads export lines; a line that is not an entry stops the read (the
/// entries before it are written and accounted for).
pub(super) fn read_lines<R: BufRead>(
    r: R,
    source: &str,
    sink: &mut dyn FnMut(Item) -> bool,
) -> Result<(), InputError> {
    for_each_line(r, source, |buf, position| {
        let text = std::str::from_utf8(buf).map_err(|e| InputError {
            message: format!(
                "{source}: line {}: not valid UTF-8 at byte {}",
                position.line,
                e.valid_up_to()
            ),
        })?;
        Ok(sink(Item::Record(parse_line(
            text.trim_end(),
            position,
            source,
        )?)))
    })
}

/// Streams the seed's `{"key": "value", ...}` object; memory stays bounded.
pub(super) fn read_object<R: Read>(
    r: R,
    source: &str,
    sink: &mut dyn FnMut(Item) -> bool,
) -> Result<(), InputError> {
    let mut de = serde_json::Deserializer::from_reader(r);
    let mut stopped = false;
    let res = de::Deserializer::deserialize_map(&mut de, CacheObject(sink, &mut stopped));
    if stopped {
        return Ok(());
    }
    res.and_then(|_| de.end())
        .map_err(|e| json_error(source, &e))
}

/// Visits the seed's cache object, one entry at a time.
struct CacheObject<'s, 'a>(&'s mut dyn FnMut(Item) -> bool, &'a mut bool);

impl<'de> Visitor<'de> for CacheObject<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of key -> value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let mut record = 0u64;
        while let Some((key, v)) = m.next_entry::<String, serde_json::Value>()? {
            record += 1;
            let value = match v {
                serde_json::Value::String(s) => s.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            let position = Position { record, line: 0 };
            let item = Item::Record(Record {
                position,
                key,
                value,
                ttl: None,
            });
            if !(self.0)(item) {
                *self.1 = true;
                return Err(de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Record, InputError> {
        parse_line(text, Position { record: 1, line: 1 }, "in")
    }

    #[test]
    fn bad_ttls_are_refused_not_dropped() {
        for bad in ["-1000", "1000.0", "\"1000\"", "1.5e300", "0", "true"] {
            let line = format!(r#"{{"key":"t","ttl_ms":{bad},"value":"x"}}"#);
            let e = parse(&line).unwrap_err();
            assert!(e.message.contains("bad \"ttl_ms\""), "{bad}: {}", e.message);
        }
        let r = parse(r#"{"key":"t","ttl_ms":99999999999999999999999,"value":"x"}"#).unwrap();
        assert_eq!(r.ttl, Some(Duration::from_millis(u64::MAX)));
        let r = parse(r#"{"key":"t","ttl_ms":null,"value":"x"}"#).unwrap();
        assert_eq!(r.ttl, None);
    }

    #[test]
    fn lines_carry_value_bytes_and_ttl() {
        let r = parse(r#"{"key":"t","ttl_ms":1500,"value":"soon"}"#).unwrap();
        assert_eq!((r.key.as_str(), &r.value[..]), ("t", &b"soon"[..]));
        assert_eq!(r.ttl, Some(Duration::from_millis(1500)));
        let r = parse(r#"{"key":"b","value_b64":"AP8="}"#).unwrap();
        assert_eq!((r.value, r.ttl), (vec![0, 255], None));
        let r = parse(r#"{"key":"n","value":{"a": [1, true]}}"#).unwrap();
        assert_eq!(r.value, br#"{"a":[1,true]}"#);
        let r = parse(r#"{"key":"n","value":-5}"#).unwrap();
        assert_eq!(r.value, b"-5");
        for (bad, why) in [
            (r#"{"key":"k"}"#, "no \"value\""),
            (r#"{"key":"k","value":null}"#, "no \"value\""),
            (r#"{"key":1,"value":"v"}"#, "no string \"key\""),
            (r#"{"key":"k","value_b64":"%%"}"#, "bad value_b64"),
            ("{bad", "malformed JSON"),
            (r#"["k","v"]"#, "not an object"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.message.starts_with("in: line 1: "), "{e}");
            assert!(e.message.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn detect_tells_export_lines_from_the_cache_file() {
        let cases = [
            ("{\"key\":\"a\",\"value\":\"b\"}\n", InputFormat::Entries),
            ("{\"key\": \"a\", \"value\": \"b\"}", InputFormat::Entries),
            (
                "{\n\"key\": \"a\",\n\"value\": \"b\"\n}\n",
                InputFormat::CacheFile,
            ),
            ("{\"user:1\": \"x\"}", InputFormat::CacheFile),
            ("", InputFormat::Entries),
        ];
        for (text, want) in cases {
            let (got, seen) = detect(text.as_bytes());
            assert_eq!(got, want, "{text:?}");
            assert!(text.as_bytes().starts_with(&seen), "{text:?}");
        }
    }
}
