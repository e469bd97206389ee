//! The conformance suite, for authors of a [`Cache`] implementation (a
//! backend or a layer): the cases every unicache backend and every stack of
//! layers passes, as plain `#[test]` functions in your crate.
//!
//! Enable the `testing` feature in your dev-dependencies and give
//! [`conformance_tests!`](crate::conformance_tests) an `async fn` that opens
//! a fresh cache isolated by a namespace:
//!
//! ```no_run
//! # // (`no_run`: doctests are not test harnesses; see examples/custom_backend.rs)
//! use std::sync::Arc;
//!
//! // Your backend here; memory:// stands in for it.
//! async fn open(namespace: &str) -> Arc<dyn unicache::Cache> {
//!     unicache::open(&format!("memory://?namespace={namespace}"))
//!         .await
//!         .unwrap()
//!         .into()
//! }
//!
//! #[cfg(test)]
//! mod conformance {
//!     unicache::conformance_tests!(super::open);
//! }
//! # fn main() {}
//! ```
//!
//! That expands to one test per case (`conformance::atomic_incr`, ...),
//! each on a two-worker tokio runtime of its own. The contract:
//!
//! - `open(namespace)` returns an empty cache that no other namespace's
//!   writes, reads or `clear` reach; the suite picks a new namespace per
//!   case (`unique_namespace`), so a store shared between runs is fine.
//! - Operations a backend cannot do return [`ErrorKind::Unsupported`]
//!   and are declared in its [`Capabilities`] (`count`, `list_keys`,
//!   `read_ttl`, `max_value_bytes`...): the cases check those answers
//!   instead. Anything else must behave as the [`Cache`] docs say.
//! - Some cases sleep past 1 s TTLs: the whole suite takes about 10 s.
//!
//! The functions behind the cases are public too, for a harness of your
//! own: each takes a fresh cache ([`Shared`]) and panics on a broken
//! promise. unicache's own tests run them over six backends and six
//! stacks of layers.
//!
//! [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported
//! [`Capabilities`]: crate::Capabilities

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;

use crate::Cache;

mod basics;
mod model;
mod promises;
mod races;

pub use basics::*;
pub use model::{Op, model, run_model};
pub use promises::*;
pub use races::{touch_race, touch_races_set_and_delete};

/// A cache under test, as the cases take it.
pub type Shared = Arc<dyn Cache>;

/// How hard the cases that have a size push.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Random sequences the model test runs (16).
    pub model_sequences: u32,
    /// Most operations in one sequence (60).
    pub model_ops: usize,
    /// Rounds of the `touch`/`set`/`delete` race (2,000). An in-process
    /// store, where a call takes a microsecond, needs many more to show a
    /// non-atomic `touch` than one behind a socket.
    pub touch_rounds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model_sequences: 16,
            model_ops: 60,
            touch_rounds: 2_000,
        }
    }
}

type Opener = dyn Fn(String) -> BoxFuture<'static, Shared> + Send + Sync;

/// What a case gets: the opener and the configuration.
#[derive(Clone)]
pub struct Suite {
    open: Arc<Opener>,
    /// How hard the sized cases push.
    pub config: Config,
}

impl Suite {
    /// The cache in `namespace` (the same data for the same namespace, as
    /// far as the backend shares it).
    pub async fn open(&self, namespace: &str) -> Shared {
        (self.open)(namespace.to_string()).await
    }

    /// A cache in a namespace no other case uses.
    pub async fn fresh(&self) -> Shared {
        self.open(&unique_namespace("t")).await
    }
}

/// A namespace no other case of any run uses: `prefix`, the process id, a
/// counter and a random suffix (a store kept between runs may hold a
/// crashed run's namespaces).
pub fn unique_namespace(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    format!(
        "{prefix}{}-{:08x}-{}",
        std::process::id(),
        RUN.get_or_init(|| fastrand::u32(..)),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs one case on a two-worker runtime of its own (what
/// [`conformance_tests!`](crate::conformance_tests) expands to).
///
/// # Panics
///
/// When the case finds a broken promise, or the runtime cannot start.
pub fn run<F, Fut, C, CF>(config: Config, open: F, case: C)
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Shared> + Send + 'static,
    C: FnOnce(Suite) -> CF,
    CF: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance case");
    let suite = Suite {
        open: Arc::new(move |ns| Box::pin(open(ns))),
        config,
    };
    rt.block_on(case(suite));
}

/// The conformance suite as `#[test]` functions, one per case, in the
/// module where it is invoked: `conformance_tests!(open)` or
/// `conformance_tests!(open, config)` with a [`testing::Config`]. `open` is
/// the path of an `async fn(&str) -> Arc<dyn Cache>` that opens the cache
/// in a namespace (see [`testing`](crate::testing)). Needs the `testing`
/// feature.
///
/// [`testing::Config`]: crate::testing::Config
#[macro_export]
macro_rules! conformance_tests {
    ($open:path) => {
        $crate::conformance_tests!($open, $crate::testing::Config::default());
    };
    ($open:path, $config:expr) => {
        $crate::conformance_tests!(@each $open, $config;
            set_get_delete binary_empty_and_unicode large_value batches ttl_expiry
            huge_ttl clear_and_len stats_count blocking_facade typed_json list_keys
            atomic_add atomic_incr atomic_touch atomic_persist with_ttl ttl_never_above_what_was_set
            incr_on_set_and_expired_values delete_reports_whether_it_existed
            value_at_declared_limit);
        #[test]
        fn clear_keeps_other_namespaces() {
            $crate::conformance_tests!(@run $open, $config, |s: $crate::testing::Suite| async move {
                let ns = $crate::testing::unique_namespace("iso");
                let a = s.open(&ns).await;
                let b = s.open(&format!("{ns}-other")).await;
                $crate::testing::clear_only_this_namespace(a, b, None).await
            });
        }
        #[test]
        fn touch_races_set_and_delete() {
            $crate::conformance_tests!(@run $open, $config, |s: $crate::testing::Suite| async move {
                let rounds = s.config.touch_rounds;
                $crate::testing::touch_races_set_and_delete(s.fresh().await, None, rounds).await
            });
        }
        #[test]
        fn model() {
            $crate::conformance_tests!(@run $open, $config, |s: $crate::testing::Suite| async move {
                let (n, ops) = (s.config.model_sequences, s.config.model_ops);
                $crate::testing::model(s.fresh().await, n, ops).await
            });
        }
    };
    (@each $open:path, $config:expr; $($case:ident)*) => {$(
        #[test]
        fn $case() {
            $crate::conformance_tests!(@run $open, $config, |s: $crate::testing::Suite| async move {
                $crate::testing::$case(s.fresh().await).await
            });
        }
    )*};
    (@run $open:path, $config:expr, $case:expr) => {
        $crate::testing::run(
            $config,
            |ns: ::std::string::String| async move { $open(&ns).await },
            $case,
        )
    };
}
