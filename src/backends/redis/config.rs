//! How to reach a Redis server or cluster, and its TLS trust.

use std::time::Duration;

use super::BACKEND;
#[cfg(not(feature = "tls"))]
use crate::error::ErrorKind;
use crate::error::{Error, Result};

/// How to reach a Redis server or cluster (from a parsed URL).
#[derive(Clone)]
pub struct RedisConfig {
    /// Node URLs (may carry credentials; never printed).
    pub nodes: Vec<String>,
    /// Cluster mode.
    pub cluster: bool,
    /// The redacted URL shown in errors and stats.
    pub endpoint: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-command response timeout.
    pub response_timeout: Duration,
    /// PEM CA to trust for `rediss://` instead of the system store.
    pub tls_ca: Option<std::path::PathBuf>,
}

#[cfg(feature = "tls")]
pub(super) fn tls_certs(ca: &Option<std::path::PathBuf>) -> Result<Option<redis::TlsCertificates>> {
    let Some(path) = ca else { return Ok(None) };
    let pem = std::fs::read(path).map_err(|e| {
        Error::from(e)
            .with_backend(BACKEND)
            .with_context("tls_ca", path.display())
    })?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

#[cfg(not(feature = "tls"))]
pub(super) fn tls_certs(ca: &Option<std::path::PathBuf>) -> Result<Option<()>> {
    if ca.is_some() {
        return Err(Error::new(
            ErrorKind::FeatureDisabled,
            "TLS was compiled out; rebuild with `--features tls`",
        )
        .with_backend(BACKEND));
    }
    Ok(None)
}
