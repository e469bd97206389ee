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
        if let Ok(p) = unicache::open::parse(&url) {
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
        let _ = unicache::open::redact(&url);
        let _ = unicache::open::resolve_name(&s, std::path::Path::new("."));
    }
}

/// A password of any printable characters, with a marker so that finding
/// it in a message cannot be a coincidence.
fn password() -> impl Strategy<Value = String> {
    ("\\PC{0,10}", "\\PC{0,10}").prop_map(|(a, b)| format!("{a}Pw9{b}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Passwords not percent-encoded: no redacted URL, Debug form or parse
    /// error shows them, whatever else in the URL is wrong.
    #[test]
    fn passwords_never_shown(
        pw in password(),
        user in "[a-z]{0,6}",
        scheme in prop_oneof![Just("redis"), Just("rediss"), Just("redis+cluster"), Just("memcached"), Just("mongo")],
        tail in prop_oneof![
            Just(""), Just("/0"), Just("?namespace=n"), Just("?bogus=1"), Just("?ttl=soon"),
            Just("?namespace=%FF"), Just(",b:2"), Just(":99999"), Just("?connect_timeout=1s&ttl=0"),
        ],
    ) {
        let url = format!("{scheme}://{user}:{pw}@host:6379{tail}");
        let shown = unicache::open::redact(&url);
        prop_assert!(!shown.contains(&pw), "redact: {}", shown);
        match unicache::open::parse(&url) {
            Ok(p) => {
                prop_assert!(!p.redacted.contains(&pw), "{}", p.redacted);
                prop_assert!(!format!("{p:?}").contains(&pw), "{:?}", p);
            }
            Err(e) => prop_assert!(!e.to_string().contains(&pw), "{}", e),
        }
        // The password alone in the user slot (where a `:` would start it).
        let pw = pw.replace(':', "");
        let url = format!("{scheme}://{pw}@host:1{tail}");
        prop_assert!(!unicache::open::redact(&url).contains(&pw));
        if let Err(e) = unicache::open::parse(&url) {
            prop_assert!(!e.to_string().contains(&pw), "{}", e);
        }
    }
}

/// Numbers at and past every integer limit, as URL option text.
fn edge_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("1".to_string()),
        Just("99".to_string()),
        Just("100".to_string()),
        Just("255".to_string()),
        Just("256".to_string()),
        Just("2147483647".to_string()),
        Just("2147483648".to_string()),
        Just("4294967296".to_string()),
        Just("9223372036854775807".to_string()),
        Just("9223372036854775808".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("340282366920938463463374607431768211456".to_string()),
        Just("-1".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
    ]
}

/// Durations at and past every limit: bare seconds and humantime units.
fn edge_duration() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        Just(""),
        Just("ns"),
        Just("us"),
        Just("ms"),
        Just("s"),
        Just("m"),
        Just("h"),
        Just("d"),
        Just("w"),
        Just("M"),
        Just("y"),
    ];
    prop_oneof![
        (edge_number(), unit).prop_map(|(n, u)| format!("{n}{u}")),
        Just("25d".to_string()),
        Just("24d20h31m23s647ms".to_string()),
        Just("584942417355y".to_string()),
        Just("1y 1y 1y".to_string()),
    ]
}

/// Opens `url` for real and writes and reads through it; errors are fine,
/// panics are not (proptest reports a panic as a failure).
fn exercise(rt: &tokio::runtime::Runtime, url: &str) {
    rt.block_on(async {
        let Ok(c) = unicache::open(url).await else {
            return;
        };
        for ttl in [
            None,
            Some(std::time::Duration::MAX),
            Some(std::time::Duration::from_secs(u64::MAX)),
        ] {
            if c.set("k", b"v", ttl).await.is_ok() {
                let _ = c.get("k").await;
                let _ = c.ttl("k").await;
            }
            let _ = c.set_many(&[("a", b"1"), ("b", b"2")], ttl).await;
        }
        let _ = c.get_many(&["a", "b", "k"]).await;
        let _ = c.len().await;
        let _ = c.stats().await;
        let _ = c.close().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every duration and number the local backends' URLs take, through the
    /// real open/set/get path (items 12/13 of issue 8: huge TTLs and
    /// busy_timeout panicked).
    #[test]
    fn url_numbers_and_durations_never_panic_in_use(
        ttl in edge_duration(),
        busy in edge_duration(),
        capacity in edge_number(),
        max_bytes in edge_number(),
        ratio in edge_number(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.sqlite3");
        let log = dir.path().join("f.log");
        // Capacities are capped: a real 2^64-entry memory cache is not the point.
        let cap = capacity.parse::<u64>().map_or(capacity.clone(), |c| (c % 100_000).to_string());
        // One option per URL (so one bad value does not hide the others), then all.
        for url in [
            format!("memory://?ttl={ttl}"),
            format!("memory://?capacity={cap}"),
            format!("memory://?max_bytes={max_bytes}"),
            format!("memory://?capacity={cap}&max_bytes={max_bytes}&ttl={ttl}"),
            format!("sqlite:{}?busy_timeout={busy}", db.display()),
            format!("sqlite:{}?ttl={ttl}", db.display()),
            format!("file:{}?compact_ratio={ratio}", log.display()),
            format!("file:{}?ttl={ttl}", log.display()),
            // Server URLs against a closed loopback port: refused at once, so
            // the timeouts' own arithmetic runs without waiting on them.
            format!("redis://127.0.0.1:1?connect_timeout={busy}&response_timeout={ttl}&ttl={ttl}"),
            format!("memcached://127.0.0.1:1?connect_timeout={busy}&response_timeout={ttl}&ttl={ttl}"),
            format!("redis+cluster://127.0.0.1:1?connect_timeout={busy}&response_timeout={ttl}"),
            format!("redis+cluster://127.0.0.1:1?connect_timeout={ttl}&response_timeout={busy}"),
        ] {
            exercise(&rt, &url);
        }
    }
}

/// The largest whole-second timeouts a URL takes, on a Redis Cluster URL
/// (its connect deadline added them up and overflowed: exit 101).
#[test]
fn redis_cluster_timeouts_at_u64_max_do_not_overflow() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for q in [
        "connect_timeout=18446744073709551615",
        "response_timeout=18446744073709551615",
        "connect_timeout=18446744073709551615&response_timeout=18446744073709551615",
    ] {
        exercise(&rt, &format!("redis+cluster://127.0.0.1:1?{q}"));
    }
}
