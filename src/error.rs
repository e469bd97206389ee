//! The library's one error type.
//!
//! Every failure carries a [`ErrorKind`], the backend it came from, context
//! (key, path or endpoint) and the underlying source. Messages fit on one
//! line and never contain passwords: endpoints are stored already redacted.

use std::fmt;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely; match on it to decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The cache URL could not be parsed or has a bad option.
    InvalidUrl,
    /// The URL names a backend unicache does not know.
    UnknownBackend,
    /// The backend exists but was compiled out (see the message for the feature).
    FeatureDisabled,
    /// The backend cannot do this operation.
    Unsupported,
    /// A caller-supplied argument is not acceptable (zero TTL, bad key...).
    InvalidInput,
    /// A value exceeds what the backend can store.
    ValueTooLarge,
    /// A local I/O error (file, directory, disk full).
    Io,
    /// The store does not exist and was not to be created
    /// ([`crate::CacheOptions::must_exist`]).
    NotFound,
    /// Stored data is damaged or is not a unicache store.
    Corrupt,
    /// The server could not be reached or the connection dropped.
    Connection,
    /// An operation did not finish in time.
    Timeout,
    /// The server answered something unexpected or reported an error.
    Backend,
    /// Encoding or decoding a typed value failed.
    Serialization,
    /// Some entries of a batch failed; see [`Error::failures`].
    PartialBatch,
    /// A read-through factory (`get_or_set`) returned an error; the
    /// source is the factory's own error, shared by every waiter.
    Factory,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidUrl => "invalid cache URL",
            ErrorKind::UnknownBackend => "unknown backend",
            ErrorKind::FeatureDisabled => "backend not compiled in",
            ErrorKind::Unsupported => "unsupported operation",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::ValueTooLarge => "value too large",
            ErrorKind::Io => "I/O error",
            ErrorKind::NotFound => "not found",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::Connection => "connection error",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Backend => "backend error",
            ErrorKind::Serialization => "serialization error",
            ErrorKind::PartialBatch => "batch partly failed",
            ErrorKind::Factory => "factory failed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
/// Sources are shared so an error can be cloned (one failure reported for
/// every entry of a batch keeps its kind, context and cause).
type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A unicache error: kind, message, backend, context and source.
///
/// Built OpenDAL-style: `Error::new(kind, msg).with_backend("sqlite").with_context("path", p)`.
/// One pointer wide, so `Result<T>` stays small on the hot paths.
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    backend: Option<&'static str>,
    context: Vec<(&'static str, String)>,
    source: Option<SharedError>,
    failures: Vec<(usize, Error)>,
}

impl Error {
    /// A new error of `kind` with a human message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                backend: None,
                context: Vec::new(),
                source: None,
                failures: Vec::new(),
            }),
        }
    }

    /// A batch where only the listed entries (index into the batch, error) failed.
    pub fn partial(failures: Vec<(usize, Error)>) -> Self {
        let n = failures.len();
        let mut e = Error::new(ErrorKind::PartialBatch, format!("{n} entries failed"));
        if let Some((_, first)) = failures.first() {
            e.inner.backend = first.inner.backend;
        }
        e.inner.failures = failures;
        e
    }

    /// Names the backend the error came from.
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.inner.backend = Some(backend);
        self
    }

    /// Adds one piece of context (`key`, `path`, `endpoint`...). Never pass secrets.
    pub fn with_context(mut self, name: &'static str, value: impl fmt::Display) -> Self {
        self.inner.context.push((name, value.to_string()));
        self
    }

    /// Sets the underlying cause.
    pub fn set_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(SharedError::from(source.into()));
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The backend name, if known.
    pub fn backend(&self) -> Option<&'static str> {
        self.inner.backend
    }

    /// The message without context or source.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// A context value by name.
    pub fn context(&self, name: &str) -> Option<&str> {
        self.inner
            .context
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// For [`ErrorKind::PartialBatch`]: which entries failed and why.
    pub fn failures(&self) -> &[(usize, Error)] {
        &self.inner.failures
    }

    /// The operation timed out.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
    }

    /// The server was unreachable or the connection dropped.
    pub fn is_connection(&self) -> bool {
        self.inner.kind == ErrorKind::Connection
    }

    /// The backend cannot do this.
    pub fn is_unsupported(&self) -> bool {
        self.inner.kind == ErrorKind::Unsupported
    }

    /// Retrying the same idempotent operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Connection | ErrorKind::Timeout)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(b) = self.inner.backend {
            write!(f, "{b}: ")?;
        }
        write!(f, "{}", self.inner.kind)?;
        if !self.inner.message.is_empty() {
            write!(f, ": {}", self.inner.message)?;
        }
        if !self.inner.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.inner.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(s) = &self.inner.source {
            // Keep it on one line: sources sometimes carry newlines.
            let text = s.to_string().replace(['\n', '\r'], " ");
            write!(f, ": {text}")?;
        }
        if let Some((i, first)) = self.inner.failures.first() {
            write!(f, "; first failure at entry {i}: {first}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::NotConnected
            | std::io::ErrorKind::UnexpectedEof => ErrorKind::Connection,
            _ => ErrorKind::Io,
        };
        Error::new(kind, "").set_source(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::new(ErrorKind::Serialization, "").set_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_context() {
        let e = Error::new(ErrorKind::Io, "cannot open")
            .with_backend("sqlite")
            .with_context("path", "a/b.db")
            .set_source(std::io::Error::other("line1\nline2"));
        let s = e.to_string();
        assert_eq!(
            s,
            "sqlite: I/O error: cannot open (path=a/b.db): line1 line2"
        );
        assert!(!s.contains('\n'));
        assert_eq!(e.context("path"), Some("a/b.db"));
    }

    #[test]
    fn predicates() {
        let e: Error = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(e.is_connection() && e.is_transient());
        assert!(!Error::new(ErrorKind::Unsupported, "x").is_transient());
    }
}
