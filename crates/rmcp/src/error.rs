use std::{error::Error as StdError, fmt};

use tower_token_refresh::BoxError;

/// The error of an [`McpHttpClient`](crate::McpHttpClient): what rmcp
/// reports as [`StreamableHttpError::Client`](rmcp::transport::streamable_http_client::StreamableHttpError::Client).
///
/// It carries the HTTP service's error (with the token layer: the
/// connection's error, or a [`tower_token_refresh::Error`] when no token
/// could be had), a failure to read a response body, or a request that
/// could not be built (a URI or header value rmcp was given that HTTP
/// does not allow). [`token_error`](Self::token_error) tells a session that
/// expired from a network that is down without parsing strings.
///
/// # Example
///
/// ```
/// use rmcp::transport::streamable_http_client::StreamableHttpError;
/// use tower_token_refresh_rmcp::Error;
///
/// fn must_log_in(error: &StreamableHttpError<Error>) -> bool {
///     match error {
///         StreamableHttpError::Client(e) => e.token_error().is_some_and(|e| e.is_session_expired()),
///         _ => false,
///     }
/// }
/// # let _ = must_log_in;
/// ```
pub struct Error {
    inner: BoxError,
}

impl Error {
    pub(crate) fn new(inner: impl Into<BoxError>) -> Self {
        Error {
            inner: inner.into(),
        }
    }

    /// The error as the service (or body) returned it.
    pub fn get_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.inner
    }

    /// Unwraps the error.
    pub fn into_inner(self) -> BoxError {
        self.inner
    }

    /// The token layer's error, if that is what failed: the session
    /// [expired](tower_token_refresh::Error::is_session_expired), a refresh
    /// failed for now, or policy refused the request.
    pub fn token_error(&self) -> Option<&tower_token_refresh::Error> {
        self.inner.downcast_ref()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner.source()
    }
}
