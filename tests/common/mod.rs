//! Shared test helpers: the conformance suite and real-server harnesses.
#![allow(dead_code)]

pub mod conformance;
pub mod servers;

use std::sync::atomic::{AtomicU64, Ordering};

/// A namespace no other test in this process uses.
pub fn unique_ns(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
