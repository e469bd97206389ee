//! [`Handle::get_or_set_with_info`]: `get_or_set` with the stale flag, the
//! soft factory timeout and refresh-ahead, which run factories in the
//! background and so need them `Send + 'static`.

use std::future::Future;
use std::time::Duration;

use super::{FactoryError, Fill, Got, Handle};
use crate::error::Result;

impl Handle {
    /// [`Handle::get_or_set`], saying whether the value is a stale one
    /// served by fail-safe ([`Got::stale`]).
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
        let (value, stale) = self.read_through(key, ttl, factory, Ok).await?;
        Ok(Got { value, stale })
    }
}
