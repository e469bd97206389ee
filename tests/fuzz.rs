//! Property tests standing in for fuzz targets (cargo-fuzz needs nightly,
//! which CI does not have) over every parser of outside bytes: input
//! records, cache URLs (the file log and memcached replies have theirs beside
//! their code). None may panic; the record encoder must be exact.

use proptest::prelude::*;
use unicache::records::{InputFormat, Item, KeyPolicy, MissingKey, minify, read_records};

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        (-1e9f64..1e9).prop_map(|f| serde_json::json!(f)),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for format in [InputFormat::Auto, InputFormat::Jsonl, InputFormat::Array, InputFormat::Seed] {
            for missing in [MissingKey::Skip, MissingKey::Hash, MissingKey::Fail] {
                let policy = KeyPolicy { field: "key".into(), missing };
                let _ = read_records(&bytes[..], "fuzz", format, &policy, |_| true);
            }
        }
    }

    #[test]
    fn pretty_input_is_stored_as_its_compact_text(v in json_value(), key in "\\PC{1,10}") {
        let mut obj = serde_json::Map::new();
        obj.insert("key".into(), serde_json::Value::String(key.clone()));
        obj.insert("v".into(), v);
        let record = serde_json::Value::Object(obj);
        let pretty = serde_json::to_string_pretty(&serde_json::json!([record])).unwrap();
        let mut items = Vec::new();
        read_records(pretty.as_bytes(), "p", InputFormat::Auto, &KeyPolicy::default(), |i| {
            items.push(i);
            true
        })
        .unwrap();
        prop_assert_eq!(items.len(), 1);
        match &items[0] {
            Item::Record(r) => {
                prop_assert_eq!(&r.key, &key);
                prop_assert_eq!(String::from_utf8(r.value.clone()).unwrap(), serde_json::to_string(&record).unwrap());
            }
            Item::Rejected(r) => prop_assert!(false, "rejected: {:?}", r),
        }
        prop_assert_eq!(minify(&pretty), serde_json::to_string(&serde_json::json!([record])).unwrap().into_bytes());
    }

    #[test]
    fn url_parser_never_panics(s in "\\PC{0,60}", scheme in prop_oneof![
        Just(""), Just("memory://"), Just("sqlite:"), Just("file:"), Just("redis://"),
        Just("rediss+cluster://"), Just("memcached://")
    ]) {
        let url = format!("{scheme}{s}");
        if let Ok(p) = unicache::url::parse(&url) {
            // Whatever parses shows no password in its redacted form.
            let pw = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .and_then(|(cred, _)| cred.split_once(':'))
                .map(|(_, pw)| pw)
                .filter(|pw| pw.len() > 3);
            if let Some(pw) = pw {
                let shown = format!(":{}@", pw);
                prop_assert!(!p.redacted.contains(&shown), "{}", p.redacted);
            }
        }
        let _ = unicache::url::redact(&url);
        let _ = unicache::url::resolve_name(&s, std::path::Path::new("."));
    }
}
