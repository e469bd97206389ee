//! The conformance suite against every backend compiled in. Remote backends
//! run against real servers the harness starts (see `common/servers.rs`).

mod common;

use std::sync::{Arc, OnceLock};

use unicache::Cache;

async fn memory(_ns: &str) -> Arc<dyn Cache> {
    // Each memory:// URL is its own instance: the namespace is implicit.
    unicache::open("memory://?capacity=100000").await.unwrap()
}

fn tmp() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
}

async fn sqlite(ns: &str) -> Arc<dyn Cache> {
    // One shared file: namespaces keep the tests apart, as they would apps.
    let path = tmp().path().join("conformance.sqlite3");
    unicache::open(&format!("sqlite:{}?namespace={ns}", path.display()))
        .await
        .unwrap()
}

async fn file(ns: &str) -> Arc<dyn Cache> {
    // One shared log: namespaces keep the tests apart.
    let path = tmp().path().join("conformance.log");
    unicache::open(&format!("file:{}?namespace={ns}", path.display()))
        .await
        .unwrap()
}

conformance_suite!(memory_backend, memory, 64);
conformance_suite!(file_backend, file, 32);
conformance_suite!(sqlite_backend, sqlite, 32);
