//! [`Handle::get_or_set_with_info`]: `get_or_set` with the stale flag, the
//! soft factory timeout and refresh-ahead. Both of the latter let a
//! factory run on after the caller has its answer, in a spawned task, so
//! this call takes `Send + 'static` factories; [`Handle::get_or_set`]
//! (which takes any factory) has fail-safe but neither of them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::envelope::{Enveloped, Stored};
use super::{FactoryError, Fill, Got, Handle, Role, bump, check_ttl};
use crate::cache::now_millis;
use crate::error::{Error, ErrorKind, Result};

impl Handle {
    /// [`Handle::get_or_set`], saying whether the value is a stale one
    /// served by fail-safe ([`Got::stale`]), and with:
    ///
    /// - **soft timeout** (`soft_timeout`, with fail-safe): when a stale
    ///   value is kept and the factory runs longer than this, the stale
    ///   value is returned at once; the factory finishes in the background
    ///   (up to `factory_timeout`) and its value is stored.
    /// - **refresh-ahead** (`refresh_ahead=0.8`): a hit after 80% of its TTL
    ///   returns the value at once and runs the factory in the background,
    ///   once per key at a time (the key's single-flight entry is taken).
    ///
    /// Both need a Tokio runtime to spawn on; without one they are skipped.
    pub async fn get_or_set_with_info<F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        factory: F,
    ) -> Result<Got>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Fill, FactoryError>> + Send + 'static,
    {
        check_ttl(ttl)?;
        let Some(env) = self.shared.envelope.clone() else {
            return self.read_through(key, ttl, factory, Ok).await;
        };
        let fs = self.shared.config.fail_safe;
        let now = now_millis();
        let stale = match env.raw(key).await? {
            Some(s) if !s.is_stale(now) => {
                if let Some(p) = fs.refresh_ahead_permille
                    && s.in_refresh_window(now, p)
                {
                    self.refresh_ahead(key, ttl, factory);
                }
                return Ok(Got {
                    value: s.value,
                    stale: false,
                });
            }
            Some(s) if fs.enabled => Some(s.value),
            _ => None,
        };
        let runtime = tokio::runtime::Handle::try_current().ok();
        match (stale, fs.soft_timeout, runtime) {
            (Some(stale), Some(soft), Some(rt)) => {
                self.miss_soft(key, ttl, factory, stale, soft, &rt).await
            }
            _ => Box::pin(async { self.begin_miss(key, ttl).await?.run(factory, Ok).await }).await,
        }
    }

    /// A miss with a stale value at hand: the flight runs in a spawned
    /// task; past `soft` the stale value is returned and the task goes on.
    async fn miss_soft<F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        factory: F,
        stale: Bytes,
        soft: Duration,
        rt: &tokio::runtime::Handle,
    ) -> Result<Got>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Fill, FactoryError>> + Send + 'static,
    {
        let (h, k) = (self.clone(), key.to_string());
        let mut task = rt.spawn(async move { h.begin_miss(&k, ttl).await?.run(factory, Ok).await });
        match tokio::time::timeout(soft, &mut task).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => Err(Error::new(ErrorKind::Factory, format!("factory task: {e}"))
                .with_backend(self.cache.backend())
                .with_context("key", key)),
            Err(_) => {
                tracing::info!("get_or_set: {key:?} past soft timeout {soft:?}: serving stale");
                bump(&self.shared.counters.fail_safe_served);
                bump(&self.shared.counters.background_runs);
                Ok(Got {
                    value: stale,
                    stale: true,
                })
            }
        }
    }

    /// Starts a background refresh of `key` unless one is running.
    fn refresh_ahead<F, Fut>(&self, key: &str, ttl: Option<Duration>, factory: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Fill, FactoryError>> + Send + 'static,
    {
        // A cheap pre-check; the flight taken in the task is what counts.
        if self.shared.flights.is_running(key) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(env) = self.shared.envelope.clone() else {
            return;
        };
        let (h, k) = (self.clone(), key.to_string());
        rt.spawn(async move { h.refresh(env, &k, ttl, factory).await });
    }

    /// The background refresh: lead the key's flight, check the value still
    /// needs it, run the factory (under `factory_timeout`) and store.
    async fn refresh<F, Fut>(&self, env: Arc<Enveloped>, key: &str, ttl: Option<Duration>, f: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Fill, FactoryError>>,
    {
        let Role::Leader(slot) = self.join(key) else {
            return; // another caller is refreshing or filling it
        };
        let permille = self.shared.config.fail_safe.refresh_ahead_permille;
        let now = now_millis();
        let due = |s: &Stored| permille.is_none_or(|p| s.in_refresh_window(now, p));
        let outcome = match env.raw(key).await {
            Ok(Some(s)) if !s.is_stale(now) && !due(&s) => Ok(s.value), // refreshed meanwhile
            _ => {
                bump(&self.shared.counters.background_runs);
                self.count_factory_run();
                let result = self.timed(f()).await;
                match self.settle(key, result, Ok) {
                    Ok(p) => self.store(key, p, ttl).await,
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = &outcome {
            tracing::warn!("get_or_set: background refresh of {key:?} failed: {e}");
        }
        // Waiters that joined meanwhile get the new value; on an error they
        // go round and read the (still fresh) cached one.
        match outcome {
            Ok(v) => slot.finish(&Ok(Got::fresh(v))),
            Err(_) => drop(slot),
        }
    }
}
