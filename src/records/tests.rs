//! Unit tests of the record reader.

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
            let meta = read_records(input.as_bytes(), "in", format, &KeyPolicy::default(), |i| {
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

/// The byte-at-a-time `minify` the faster one replaced: the reference.
fn minify_bytewise(json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_str, mut escaped) = (false, false);
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

/// Every string of up to 6 characters from an alphabet of the bytes that
/// matter (quotes, escapes, whitespace inside and outside strings, an
/// unterminated string, a trailing backslash) minifies as before.
#[test]
fn minify_matches_the_bytewise_reference() {
    let alphabet = ['"', '\\', ' ', '\n', '\t', 'a', '{', ':'];
    let mut s = String::new();
    fn each(s: &mut String, left: usize, alphabet: &[char]) {
        assert_eq!(minify(s), minify_bytewise(s), "{s:?}");
        if left == 0 {
            return;
        }
        for &c in alphabet {
            s.push(c);
            each(s, left - 1, alphabet);
            s.pop();
        }
    }
    each(&mut s, 6, &alphabet);
    for long in [
        format!("{{\"key\":\"k\",\"v\":\"{}\"}}", "x".repeat(200)),
        format!("{{\"key\" : \"k\", \"v\":\"{} \\\" \"}}", "é".repeat(70)),
    ] {
        assert_eq!(minify(&long), minify_bytewise(&long), "{long:?}");
    }
}

/// JSON Lines lines keyed in one parse come out exactly as the two-parse
/// path (the line's JSON value first, then `key_record`) makes them, for
/// every policy: records, rejects and their reasons, fatal errors.
#[test]
fn one_parse_lines_match_the_two_parse_path() {
    let lines = [
        "{\"key\":\"a\",\"v\":1}\n",
        "{\"key\":\"a\",\"v\":1}\r\n",
        "  { \"key\" : \"b c\" , \"v\" : [1, 2.50, {\"x\": \"y z\"}] }  \n",
        "{\"key\":7}",
        "{\"key\":-12345678901234567890123}\n",
        "{\"key\":1.5}\n",
        "{\"key\":\"\"}\n",
        "{\"id\":1}\n",
        "{\"key\":\"a\",\"key\":\"b\"}\n",
        "{\"key\":\"a\\\"b\\u00e9\"}\n",
        "{\"key\":\"a\"} x\n",
        "{\"key\":\"a\"}{}\n",
        "{\"key\":\"a\"\n",
        "{bad\n",
        "[1,2]\n",
        "5\n",
        "\"s\"\n",
        "null\n",
        "{\"key\":\"a\",}\n",
        "{\"key\":\"tab\there\"}\n",
    ];
    let policies =
        [MissingKey::Skip, MissingKey::Hash, MissingKey::Fail].map(|missing| KeyPolicy {
            field: "key".into(),
            missing,
        });
    for policy in &policies {
        for (n, line) in lines.iter().enumerate() {
            let position = Position {
                record: n as u64 + 1,
                line: n as u64 + 1,
            };
            let two = slow_line(line, position, policy, "in");
            let one = key_line(line, position, policy, "in")
                .unwrap_or_else(|| slow_line(line, position, policy, "in"));
            assert_eq!(one, two, "{line:?} {policy:?}");
        }
    }
}
