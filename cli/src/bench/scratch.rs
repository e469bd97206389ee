//! Where the `bench` subcommands write in a user's cache: a namespace of
//! their own, found empty before anything is written, and emptied again at
//! the end (also after an error or Ctrl-C). A user's keys are never
//! overwritten, and nothing the bench wrote stays behind. Imports no sibling.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;
use unicache::{Cache, ErrorKind};

use crate::files::{store_file, store_files};

/// Keys deleted per `delete_many` when cleaning up (and read per `get_many`
/// when checking a namespace that cannot be counted).
const CHUNK: usize = 1000;

/// The memcached backend keeps a namespace's version token under
/// `NAMESPACE:__unicache_ns` (src/backends/memcached/keys.rs): it is
/// created on first use, and removed here for a namespace the bench made up.
const MEMCACHED_VERSION_KEY: &str = "__unicache_ns";

/// A fresh namespace: `unicache-bench-<pid>-<random>`.
pub fn fresh_namespace() -> String {
    format!(
        "unicache-bench-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// One cache as the bench uses it: its URL with the bench's namespace, and
/// what to undo afterwards.
#[derive(Debug)]
pub struct Scratch {
    /// The URL to open: the user's, with `namespace=` added when it had none.
    pub url: String,
    /// The namespace the bench writes in.
    pub namespace: String,
    /// The user's URL, to reach what lies outside the namespace (memcached's
    /// version key).
    user_url: String,
    /// The namespace was made up here (no one else can have used it).
    fresh: bool,
    memcached: bool,
    /// Store files (main file first) that were not there before the bench:
    /// removed at the end when the main file is one of them.
    created: Vec<PathBuf>,
}

impl Scratch {
    /// The bench's place in `url` (bare names already resolved): the URL's
    /// own `namespace=`, else `given`, else a fresh one. Reads the disk only
    /// to note which store files are not there yet.
    pub fn new(url: &str, given: Option<&str>) -> anyhow::Result<Scratch> {
        if given.is_some_and(str::is_empty) {
            bail!("--namespace must not be empty (that is the default namespace: the user's keys)");
        }
        let parsed = unicache::open::parse(url)?;
        let memcached = matches!(
            parsed.backend,
            unicache::backends::BackendConfig::Memcached(_)
        );
        let (url_out, namespace, fresh) = match (&parsed.options.namespace, given) {
            (Some(ns), Some(g)) if ns != g => {
                bail!("--namespace {g:?} differs from the URL's namespace={ns:?}; give one")
            }
            (Some(ns), _) => (url.to_string(), ns.clone(), false),
            (None, given) => {
                let ns = given.map_or_else(fresh_namespace, str::to_string);
                let sep = if url.contains('?') { '&' } else { '?' };
                let enc =
                    percent_encoding::utf8_percent_encode(&ns, percent_encoding::NON_ALPHANUMERIC);
                (format!("{url}{sep}namespace={enc}"), ns, given.is_none())
            }
        };
        let created = match store_file(&parsed.backend) {
            Some(main) if std::fs::symlink_metadata(&main).is_err() => store_files(&parsed.backend)
                .into_iter()
                .filter(|p| std::fs::symlink_metadata(p).is_err())
                .collect(),
            _ => Vec::new(),
        };
        Ok(Scratch {
            url: url_out,
            namespace,
            user_url: url.to_string(),
            fresh,
            memcached,
            created,
        })
    }

    /// Refuses to go on unless the namespace holds nothing (or, where the
    /// backend cannot count a namespace, memcached, none of `keys`).
    pub async fn ensure_empty(&self, cache: &dyn Cache, keys: &[String]) -> anyhow::Result<()> {
        let ns = &self.namespace;
        let held = match cache.len().await {
            Ok(n) => n,
            // A namespace made up here cannot hold anything yet.
            Err(e) if e.kind() == ErrorKind::Unsupported && self.fresh => 0,
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                let mut n = 0;
                for chunk in keys.chunks(CHUNK) {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    n += cache.get_many(&refs).await?.iter().flatten().count() as u64;
                }
                n
            }
            Err(e) => return Err(e.into()),
        };
        if held > 0 {
            bail!(
                "namespace {ns:?} already holds {held} entries; the bench writes only into an \
                 empty namespace (give another one, or none for a fresh one)"
            );
        }
        Ok(())
    }

    /// Deletes `keys` (everything the bench wrote), and for a memcached
    /// namespace made up here its version key. Call only after
    /// [`Scratch::ensure_empty`] succeeded: the keys are then the bench's.
    pub async fn remove(&self, cache: &dyn Cache, keys: &[String]) -> anyhow::Result<()> {
        for chunk in keys.chunks(CHUNK) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            cache.delete_many(&refs).await?;
        }
        if self.memcached && self.fresh {
            // The URL without the namespace reaches the version key as is (a
            // fresh name has no `:` or `%` to escape).
            let bare = unicache::open(&self.user_url).await?;
            bare.delete(&format!("{}:{MEMCACHED_VERSION_KEY}", self.namespace))
                .await?;
            let _ = bare.close().await;
        }
        Ok(())
    }

    /// Removes the store files the bench created (a SQLite file or log that
    /// did not exist before it); call after the cache is closed. A store
    /// that was there is left alone, its lock file included: another
    /// process may hold it.
    pub fn remove_created_files(&self) {
        for p in &self.created {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Set by SIGINT / SIGTERM once [`catch_interrupts`] ran.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Told when [`INTERRUPTED`] is set, so that waiting tasks wake at once (a
/// signal handler can only set a flag; one task watches it).
fn stop() -> &'static tokio::sync::watch::Sender<bool> {
    static STOP: OnceLock<tokio::sync::watch::Sender<bool>> = OnceLock::new();
    STOP.get_or_init(|| tokio::sync::watch::channel(false).0)
}

/// From now on, the first Ctrl-C (or SIGTERM) asks the bench to stop and
/// clean up ([`interrupted`]); a second one exits at once (what was
/// written then expires with its TTL, where it has one). Call from within
/// the runtime.
pub fn catch_interrupts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // tokio's handlers: the first Ctrl-C (or SIGTERM) asks for a stop
        // and the cleanup; a second one leaves at once (the TTL cleans up).
        tokio::spawn(async {
            first_signal().await;
            INTERRUPTED.store(true, Ordering::SeqCst);
            stop().send_replace(true);
            first_signal().await;
            std::process::exit(130);
        });
    });
}

/// The next SIGINT or SIGTERM (Ctrl-C only, off Unix).
async fn first_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Whether the user asked the bench to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Resolves once the user asked the bench to stop.
pub async fn until_interrupted() {
    let mut rx = stop().subscribe();
    let _ = rx.wait_for(|stopped| *stopped).await;
}

/// The error a bench stopped by the user ends with (exit 2).
pub fn interrupted_error() -> anyhow::Error {
    anyhow::anyhow!("interrupted; what the bench wrote was removed")
}
