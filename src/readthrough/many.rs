//! Batches: one `get_many`, one factory call with only the missing keys,
//! one `set_many`.
//!
//! Batches do not join the per-key flights of [`Handle::get_or_set`] nor
//! take leases: their point is a fixed number of round trips. Every value
//! of one batch is stored with one TTL (`set_many` takes one), jittered
//! once per batch.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::{FactoryError, Fill, Handle, bump, check_ttl};
use crate::error::{Error, ErrorKind, Result};

impl Handle {
    /// The values of `keys`, in order: cached ones from one
    /// [`crate::Cache::get_many`], the missing ones from one call of
    /// `factory` (given only the missing keys, in order), stored with one
    /// [`crate::Cache::set_many`] (`ttl` as in [`Handle::get_or_set`]).
    ///
    /// The factory answers one `Option<Fill>` per missing key, in the same
    /// order: `None` for a key it has no value for (returned as `None`,
    /// nothing stored). A reply of another length is an
    /// [`ErrorKind::Factory`] error. Store errors follow
    /// [`Handle::get_or_set`]'s rule; with a partly failed batch the values
    /// are returned when every failure was transient.
    pub async fn get_or_set_many<F, Fut>(
        &self,
        keys: &[&str],
        ttl: Option<Duration>,
        factory: F,
    ) -> Result<Vec<Option<Bytes>>>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<Vec<Option<Fill>>, FactoryError>>,
    {
        check_ttl(ttl)?;
        let mut values = self.cache.get_many(keys).await?;
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| values[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(values);
        }
        let asked: Vec<String> = missing.iter().map(|&i| keys[i].to_string()).collect();
        bump(&self.shared.counters.factory_runs);
        let fills = match self.timed(factory(asked)).await {
            Ok(Ok(f)) if f.len() == missing.len() => f,
            Ok(Ok(f)) => {
                let msg = format!("returned {} values for {} keys", f.len(), missing.len());
                return Err(self.batch_failure(Ok(msg.into())));
            }
            Ok(Err(e)) => return Err(self.batch_failure(Ok(e))),
            Err(limit) => return Err(self.batch_failure(Err(limit))),
        };
        let mut to_store: Vec<(&str, Bytes)> = Vec::with_capacity(fills.len());
        for (&i, fill) in missing.iter().zip(fills) {
            match fill {
                Some(Fill::Cache(v)) => {
                    to_store.push((keys[i], v.clone()));
                    values[i] = Some(v);
                }
                Some(Fill::DoNotCache(v)) => values[i] = Some(v),
                None => {}
            }
        }
        self.store_batch(&to_store, ttl).await?;
        Ok(values)
    }

    /// A failed batch factory (its error, or `Err(limit)` for a timeout):
    /// the error every key of the batch gets.
    fn batch_failure(&self, failure: std::result::Result<FactoryError, Duration>) -> Error {
        bump(&self.shared.counters.factory_errors);
        self.factory_error(failure).with_context("keys", "(batch)")
    }

    async fn store_batch(&self, entries: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let ttl = self.shared.config.store_ttl(ttl)?;
        let refs: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (*k, &v[..])).collect();
        match self.cache.set_many(&refs, ttl).await {
            Ok(()) => Ok(()),
            Err(e) if stored_enough(&e) => {
                bump(&self.shared.counters.store_errors);
                tracing::warn!("get_or_set_many: values computed but not all stored: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// A store error that still lets the values be returned: transient, or a
/// partial batch whose failures all were.
fn stored_enough(e: &Error) -> bool {
    if e.kind() == ErrorKind::PartialBatch {
        return e.failures().iter().all(|(_, f)| f.is_transient());
    }
    e.is_transient()
}
