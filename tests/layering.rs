//! The library's layering, held against its imports: every `crate::` path
//! in `src/` (outside comments and unit-test modules) may name only a
//! module on a lower floor of the table below, or its own module. The
//! crate boundaries do the same between the library, the CLI (`cli/`) and
//! the Python package (`python/`): the compiler refuses an import upward.
//!
//! docs/ARCHITECTURE.md shows the same table; change both together.

use std::collections::BTreeSet;
use std::path::Path;

/// Floors, bottom up. A module may import from lower floors only; modules
/// on one floor are independent of each other.
const FLOORS: &[&[&str]] = &[
    &["error"],
    &["cache", "records"],
    &["url", "layer", "lock"],
    &["backends"],
    &["tiered", "readthrough", "observe", "compress"],
    &["open"],
    &["writer", "blocking"],
    &["testing"],
    &["lib"],
];

/// Names lib.rs re-exports at the crate root, and the module each is from.
const ROOT_NAMES: &[(&str, &str)] = &[
    ("Error", "error"),
    ("ErrorKind", "error"),
    ("Result", "error"),
    ("Cache", "cache"),
    ("CacheExt", "cache"),
    ("CacheFuture", "cache"),
    ("CacheOptions", "cache"),
    ("Capabilities", "cache"),
    ("Counters", "cache"),
    ("Entry", "cache"),
    ("EntryStream", "cache"),
    ("KeyStream", "cache"),
    ("Stats", "cache"),
    ("ValueTtl", "cache"),
    ("Layer", "layer"),
    ("Lock", "lock"),
    // #[macro_export] puts the suite's macro at the root.
    ("conformance_tests", "testing"),
    ("Stack", "open"),
    ("open", "open"),
    ("open_with", "open"),
    ("FactoryError", "readthrough"),
    ("FailSafeOptions", "readthrough"),
    ("Fill", "readthrough"),
    ("Got", "readthrough"),
    ("Handle", "readthrough"),
    ("LockMode", "readthrough"),
    ("ReadThroughOptions", "readthrough"),
    ("ReadThroughStats", "readthrough"),
    ("bench_support", "backends"),
];

fn floor(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// The code of a file without comments and without its unit-test module
/// (which may open whole stacks to test a piece).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level names a file's `crate::` paths start with, including each
/// item of `use crate::{a::X, b, c::{..}}`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas at depth 0.
            let (mut depth, mut start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(first_ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(first_ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(first_ident(rest));
        }
    }
    out.remove("");
    out
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The module a `crate::NAME` path reaches.
fn module_of(name: &str) -> String {
    ROOT_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, m)| m)
        .to_string()
}

/// `src/` files with the top-level module each belongs to.
fn source_files() -> Vec<(String, std::path::PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(&src).unwrap();
                let top = rel.components().next().unwrap().as_os_str();
                let top = top.to_str().unwrap().trim_end_matches(".rs").to_string();
                out.push((top, p));
            }
        }
    }
    out
}

/// Every import against the table, as `file -> module (why)`.
fn violations(files: &[(String, std::path::PathBuf)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (top, path) in files {
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // a unit-test module in its own file
        }
        let Some(own) = floor(top) else {
            bad.push(format!("{}: module {top:?} is on no floor", path.display()));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for name in crate_paths(&code(&text)) {
            let m = module_of(&name);
            if m == *top {
                continue;
            }
            match floor(&m) {
                Some(f) if f < own => {}
                Some(f) => bad.push(format!(
                    "{}: {top} (floor {own}) imports {m} (floor {f}) through crate::{name}",
                    path.display()
                )),
                None => bad.push(format!(
                    "{}: crate::{name} names no module of the table",
                    path.display()
                )),
            }
        }
    }
    bad
}

#[test]
fn imports_only_go_down_the_layer_table() {
    let files = source_files();
    assert!(files.len() > 50, "found only {} source files", files.len());
    let bad = violations(&files);
    assert!(
        bad.is_empty(),
        "imports against the layer table:\n{}",
        bad.join("\n")
    );
}

/// The check itself: an upward import, and a sideways one between layers,
/// are caught (the reader is not vacuous).
#[test]
fn an_upward_import_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let files = vec![
        (
            "cache".to_string(),
            write("cache.rs", "use crate::{error::Result, open::Stack};\n"),
        ),
        (
            "tiered".to_string(),
            write("tiered.rs", "fn f() { crate::readthrough::x(); }\n"),
        ),
        (
            "url".to_string(),
            write(
                "url.rs",
                "// crate::open in a comment is no import\nuse crate::error::Error;\n\
                 #[cfg(test)]\nmod tests { use crate::open::parse; }\n",
            ),
        ),
    ];
    let bad = violations(&files);
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(
        bad[0].contains("cache (floor 1) imports open"),
        "{}",
        bad[0]
    );
    assert!(
        bad[1].contains("tiered (floor 4) imports readthrough"),
        "{}",
        bad[1]
    );
}
