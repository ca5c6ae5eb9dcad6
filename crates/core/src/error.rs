//! The error type shared by token sources, stores and the coordinator.

use std::{borrow::Cow, error::Error as StdError, fmt, sync::Arc, time::Duration};

use crate::ErrorCode;

/// A boxed error, as tower and hyper use.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, in terms a caller can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The session is over: the refresh token is invalid, expired or revoked
    /// (`invalid_grant`), or there is none. Nothing works until new tokens
    /// are set with [`TokenManager::set`](crate::TokenManager::set); ask the
    /// user to log in again.
    SessionExpired,
    /// Refreshing failed for a reason that may pass (connection refused,
    /// timeout, 5xx, 429, `temporarily_unavailable`) and the retries ran out.
    /// The next request tries again.
    Transient,
    /// The client's configuration is refused: by the token endpoint
    /// (`invalid_client`, `unauthorized_client`, `unsupported_grant_type`,
    /// `invalid_scope`, `invalid_request`) or here (a signing key that is
    /// not one). Retrying cannot help, the configuration is wrong.
    Rejected,
    /// The token endpoint answered something unusable: malformed JSON, a
    /// token already expired on arrival, a token with bytes not allowed in an
    /// HTTP header. Retried like a transient failure.
    InvalidResponse,
    /// A token store failed to load or save, or holds something unreadable.
    /// A refresh that cannot read its store fails (retried, then reported)
    /// rather than risk refreshing with a stale refresh token; the token in
    /// memory is still served while it is valid.
    Store,
    /// The request is not allowed by policy (for example a token over
    /// cleartext HTTP to a non-loopback host).
    Policy,
    /// No tokio runtime is running, so no refresh can be spawned.
    NoRuntime,
}

impl ErrorKind {
    /// Whether a failure of this kind is worth another attempt later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Transient | ErrorKind::InvalidResponse | ErrorKind::Store
        )
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::SessionExpired => "session expired",
            ErrorKind::Transient => "token refresh failed",
            ErrorKind::Rejected => "token endpoint rejected the client",
            ErrorKind::InvalidResponse => "invalid token response",
            ErrorKind::Store => "token store failed",
            ErrorKind::Policy => "request refused by token policy",
            ErrorKind::NoRuntime => "no tokio runtime",
        }
    }
}

impl fmt::Display for ErrorKind {
    /// The kind in words: `session expired`, `token refresh failed`, …
    ///
    /// ```
    /// use tower_token_refresh_core::ErrorKind;
    ///
    /// assert_eq!(ErrorKind::SessionExpired.to_string(), "session expired");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The error of a refresh, a token source, a store or the layer's own policy.
///
/// It is cheap to clone (every waiter of one refresh gets the same error),
/// matchable through [`kind`](Error::kind), and never contains a token or a
/// secret: messages are written by this crate, and causes are transport
/// errors. The only server text copied is the OAuth2 `error` code and
/// `error_description` of a JSON error body, each withheld whole if it
/// quotes, in any encoding this crate sent it (raw, form- or
/// percent-encoded, in a Basic header's base64) or by a fragment of 8 or
/// more characters, a secret the request carried.
///
/// # Example
///
/// ```
/// use tower_token_refresh_core::{Error, ErrorKind};
///
/// let err = Error::session_expired("refresh token revoked");
/// assert_eq!(err.kind(), ErrorKind::SessionExpired);
/// assert!(err.is_session_expired());
/// assert_eq!(err.to_string(), "session expired: refresh token revoked");
/// ```
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    oauth_error: Option<ErrorCode>,
    retry_after: Option<Duration>,
    outcome_unknown: bool,
    /// The session's end as a tombstone in the store records it (another
    /// process ended it): told apart in metrics only.
    ended_in_store: bool,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            oauth_error: None,
            retry_after: None,
            outcome_unknown: false,
            ended_in_store: false,
            source: None,
        }
    }

    /// A [`SessionExpired`](ErrorKind::SessionExpired) error.
    pub fn session_expired(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::SessionExpired, message)
    }

    /// A [`Transient`](ErrorKind::Transient) error.
    pub fn transient(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// An [`InvalidResponse`](ErrorKind::InvalidResponse) error.
    pub fn invalid_response(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidResponse, message)
    }

    /// The same error with another kind: a grant that knows better than
    /// the RFC 6749 §5.2 mapping (an `invalid_grant` for an assertion that
    /// is no session).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Attaches the underlying cause (a transport error, say).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Attaches the OAuth2 `error` code the server sent (RFC 6749 §5.2):
    /// an [`ErrorCode`], or its text.
    pub fn with_oauth_error(mut self, code: impl Into<ErrorCode>) -> Self {
        self.oauth_error = Some(code.into());
        self
    }

    /// Attaches how long the server asked us to wait (`Retry-After`).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Marks a failed request whose outcome is unknown: it may have reached
    /// the server and been carried out, but no answer came back (a timeout
    /// after the request was sent, a connection lost before the response).
    ///
    /// A token source sets it on such failures of a request that presented
    /// a refresh token: a server that rotates refresh tokens may already
    /// have spent that one, so the coordinator does not present it again
    /// blindly (see
    /// [`TokenManagerBuilder::rotation`](crate::TokenManagerBuilder::rotation)).
    /// Failures known to happen before the request left (a refused
    /// connection, say) must not be marked.
    pub fn with_outcome_unknown(mut self) -> Self {
        self.outcome_unknown = true;
        self
    }

    /// Whether the failed request may have been carried out by the server;
    /// see [`with_outcome_unknown`](Self::with_outcome_unknown).
    pub fn is_outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// Marks the session's end as read from a tombstone in the store.
    pub(crate) fn ended_in_store(mut self) -> Self {
        self.ended_in_store = true;
        self
    }

    /// Whether [`ended_in_store`](Self::ended_in_store) marked it.
    pub(crate) fn is_ended_in_store(&self) -> bool {
        self.ended_in_store
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the session is over and the user must log in again.
    pub fn is_session_expired(&self) -> bool {
        self.kind == ErrorKind::SessionExpired
    }

    /// The OAuth2 `error` code the server sent, if any (`invalid_grant`, …),
    /// as text; [`oauth_error_code`](Self::oauth_error_code) to match on it.
    pub fn oauth_error(&self) -> Option<&str> {
        self.oauth_error.as_ref().map(ErrorCode::as_str)
    }

    /// The OAuth2 `error` code the server sent, if any.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_core::{Error, ErrorCode};
    ///
    /// let err = Error::session_expired("refresh token revoked").with_oauth_error("invalid_grant");
    /// assert_eq!(err.oauth_error_code(), Some(&ErrorCode::InvalidGrant));
    /// assert_eq!(err.oauth_error(), Some("invalid_grant"));
    /// ```
    pub fn oauth_error_code(&self) -> Option<&ErrorCode> {
        self.oauth_error.as_ref()
    }

    /// How long the server asked us to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The message, without the kind's prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(code) = &self.oauth_error {
            d.field("oauth_error", &code.as_str());
        }
        if let Some(after) = &self.retry_after {
            d.field("retry_after", after);
        }
        if self.outcome_unknown {
            d.field("outcome_unknown", &true);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(code) = &self.oauth_error {
            write!(f, " ({code})")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
