//! What the interactive logins share: their typed failures
//! ([`LoginError`]) and the step-up hints an application passes to a new
//! login ([`LoginHints`]).

use std::{borrow::Cow, error::Error as StdError, fmt, time::Duration};

use super::{ErrorCode, Form};
use crate::{Error, ErrorKind};

/// Why an interactive login ([`AuthorizationCodeLogin`](super::AuthorizationCodeLogin),
/// [`DeviceLogin`](super::DeviceLogin)) ended without tokens.
///
/// A login returns an [`Error`]; this is its
/// [`source`](StdError::source), found with [`LoginError::of`]. The
/// error's kind says what the coordinator does with it:
///
/// | `LoginError` | [`ErrorKind`] |
/// |---|---|
/// | [`Denied`](Self::Denied) with `access_denied`, `login_required`, `consent_required`, `interaction_required`, `account_selection_required` | [`SessionExpired`](ErrorKind::SessionExpired) |
/// | [`Denied`](Self::Denied) with `temporarily_unavailable`, `server_error` | [`Transient`](ErrorKind::Transient) |
/// | [`Denied`](Self::Denied) with any other code | [`Rejected`](ErrorKind::Rejected) |
/// | [`Expired`](Self::Expired), [`TimedOut`](Self::TimedOut) | [`SessionExpired`](ErrorKind::SessionExpired) |
/// | [`StateMismatch`](Self::StateMismatch), [`IssuerMismatch`](Self::IssuerMismatch) | [`Policy`](ErrorKind::Policy) |
/// | [`MissingCode`](Self::MissingCode), [`BadCallback`](Self::BadCallback) | [`Rejected`](ErrorKind::Rejected) |
///
/// None is retried by the coordinator on its own: a user who said no, or
/// did not answer in time, is not asked again in a loop.
///
/// # Example
///
/// ```
/// use tower_token_refresh_core::{Error, ErrorKind};
/// use tower_token_refresh_oauth2::LoginError;
///
/// let err: Error = LoginError::StateMismatch.into();
/// assert_eq!(err.kind(), ErrorKind::Policy);
/// assert_eq!(LoginError::of(&err), Some(&LoginError::StateMismatch));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginError {
    /// The redirect's `state` is not the one this login sent: a forged or
    /// stale callback (RFC 6749 §10.12). No code was exchanged.
    StateMismatch,
    /// The redirect's `iss` is missing or names another authorization
    /// server than the one configured (RFC 9207): a mix-up. No code was
    /// exchanged.
    IssuerMismatch,
    /// The redirect had the right `state` but neither `code` nor `error`.
    MissingCode,
    /// The authorization server, or the user, refused (`error=access_denied`
    /// on the redirect, or from device polling).
    Denied {
        /// The OAuth2 `error` code.
        error: String,
        /// The `error_description`, control characters replaced and cut to
        /// 200 bytes.
        description: Option<String>,
    },
    /// The authorization server cannot finish the login without the user
    /// (OpenID Connect Core §3.1.2.6): `login_required` (no session at the
    /// server), `consent_required`, `account_selection_required` or
    /// `interaction_required`. The answer to a silent login
    /// ([`AuthorizationCodeLogin::silent`](super::AuthorizationCodeLogin::silent),
    /// `prompt=none`) that cannot be silent: a fallback chain goes on to an
    /// interactive login (it is [`SessionExpired`](ErrorKind::SessionExpired),
    /// which [`or_else`](tower_token_refresh_core::source::TokenSourceExt::or_else)
    /// falls through).
    InteractionRequired {
        /// Which of the four the server answered.
        error: ErrorCode,
        /// The `error_description`, control characters replaced and cut to
        /// 200 bytes.
        description: Option<String>,
    },
    /// The device code expired (`expired_token`, or its `expires_in` passed
    /// while the user had not finished).
    Expired,
    /// No redirect came to the loopback listener before the login's
    /// timeout.
    TimedOut,
    /// What came to the loopback listener cannot be a redirect of this
    /// login (a parameter given twice, bytes that are not UTF-8).
    BadCallback(&'static str),
}

impl LoginError {
    /// The `LoginError` behind `error`, if a login failed with one: found
    /// anywhere in its [`source`](StdError::source) chain, so also behind
    /// the error of a fallback chain whose last link was the login.
    pub fn of(error: &Error) -> Option<&LoginError> {
        let mut next = StdError::source(error);
        // Chains are short; the bound only guards against a cyclic one.
        for _ in 0..16 {
            let current = next?;
            if let Some(login) = current.downcast_ref::<LoginError>() {
                return Some(login);
            }
            next = current.source();
        }
        None
    }

    /// The error a login's redirect or poll answered with.
    pub(crate) fn denied(error: &str, description: Option<&str>) -> Self {
        let description = description.map(|d| clean(d, 200));
        match ErrorCode::from(error) {
            code @ (ErrorCode::LoginRequired
            | ErrorCode::ConsentRequired
            | ErrorCode::InteractionRequired
            | ErrorCode::AccountSelectionRequired) => LoginError::InteractionRequired {
                error: code,
                description,
            },
            _ => LoginError::Denied {
                error: clean(error, 64),
                description,
            },
        }
    }

    /// Whether only the user can get the login further: a silent login's
    /// [`InteractionRequired`](Self::InteractionRequired).
    pub fn needs_user(&self) -> bool {
        matches!(self, LoginError::InteractionRequired { .. })
    }

    fn kind(&self) -> ErrorKind {
        match self {
            LoginError::InteractionRequired { .. } => ErrorKind::SessionExpired,
            LoginError::Denied { error, .. } => match ErrorCode::from(error.as_str()) {
                ErrorCode::AccessDenied => ErrorKind::SessionExpired,
                ErrorCode::TemporarilyUnavailable | ErrorCode::ServerError => ErrorKind::Transient,
                _ => ErrorKind::Rejected,
            },
            LoginError::Expired | LoginError::TimedOut => ErrorKind::SessionExpired,
            LoginError::StateMismatch | LoginError::IssuerMismatch => ErrorKind::Policy,
            LoginError::MissingCode | LoginError::BadCallback(_) => ErrorKind::Rejected,
        }
    }
}

/// Server text, safe to show: control characters replaced, cut to `max`
/// bytes on a character boundary.
fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c.is_control() { '\u{FFFD}' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::StateMismatch => f.write_str("the redirect's state is not this login's"),
            LoginError::IssuerMismatch => {
                f.write_str("the redirect does not name the expected issuer")
            }
            LoginError::MissingCode => f.write_str("the redirect carried no code"),
            LoginError::Denied {
                error,
                description: Some(d),
            } => write!(f, "authorization refused: {error} ({d})"),
            LoginError::Denied { error, .. } => write!(f, "authorization refused: {error}"),
            LoginError::InteractionRequired {
                error,
                description: Some(d),
            } => write!(f, "the login needs the user: {error} ({d})"),
            LoginError::InteractionRequired { error, .. } => {
                write!(f, "the login needs the user: {error}")
            }
            LoginError::Expired => f.write_str("the device code expired before the user finished"),
            LoginError::TimedOut => f.write_str("no redirect came before the login timed out"),
            LoginError::BadCallback(why) => write!(f, "unusable redirect: {why}"),
        }
    }
}

impl StdError for LoginError {}

impl From<LoginError> for Error {
    fn from(login: LoginError) -> Error {
        let mut err = Error::new(login.kind(), Cow::Owned(format!("login failed: {login}")));
        match &login {
            LoginError::Denied { error, .. } => err = err.with_oauth_error(error.as_str()),
            LoginError::InteractionRequired { error, .. } => {
                err = err.with_oauth_error(error.clone());
            }
            _ => {}
        }
        err.with_source(login)
    }
}

/// What an application asks of the next login beyond its configuration:
/// the authentication strength a resource demanded (RFC 9470 `acr_values`,
/// `max_age`), or a wider scope.
///
/// The layer crate's `StepUp::login_hints` builds one from a 401 or 403;
/// pass it to [`AuthorizationCodeLogin::login_with`](super::AuthorizationCodeLogin::login_with)
/// or [`DeviceLogin::login_with`](super::DeviceLogin::login_with).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_token_refresh_oauth2::LoginHints;
///
/// let hints = LoginHints::new()
///     .with_acr_values("urn:example:mfa")
///     .with_max_age(Duration::from_secs(300));
/// assert_eq!(hints.acr_values(), Some("urn:example:mfa"));
/// assert_eq!(hints.max_age(), Some(Duration::from_secs(300)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginHints {
    acr_values: Option<String>,
    max_age: Option<Duration>,
    scope: Option<String>,
}

impl LoginHints {
    /// No hints.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for these authentication context classes (space-separated,
    /// OpenID Connect Core §3.1.2.1, RFC 9470 §3).
    pub fn with_acr_values(mut self, acr_values: impl Into<String>) -> Self {
        self.acr_values = Some(acr_values.into());
        self
    }

    /// Asks that the user has authenticated within `max_age` (whole
    /// seconds are sent; `0` forces a new authentication).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Asks for this scope instead of the login's configured one.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The `acr_values` asked for, if any.
    pub fn acr_values(&self) -> Option<&str> {
        self.acr_values.as_deref()
    }

    /// The `max_age` asked for, if any.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The scope asked for, if any.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Whether no hint is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` overridden by whatever `self` sets.
    pub(crate) fn over(&self, base: &LoginHints) -> LoginHints {
        LoginHints {
            acr_values: self.acr_values.clone().or_else(|| base.acr_values.clone()),
            max_age: self.max_age.or(base.max_age),
            scope: self.scope.clone().or_else(|| base.scope.clone()),
        }
    }

    /// Adds the hints, then a login's `extra` parameters, as request
    /// parameters.
    pub(crate) fn apply(
        &self,
        extra: &[(String, String)],
        pairs: &mut Vec<(Cow<'static, str>, String)>,
    ) {
        if let Some(scope) = &self.scope {
            pairs.push(("scope".into(), scope.clone()));
        }
        if let Some(acr) = &self.acr_values {
            pairs.push(("acr_values".into(), acr.clone()));
        }
        if let Some(max_age) = self.max_age {
            pairs.push(("max_age".into(), max_age.as_secs().to_string()));
        }
        for (name, value) in extra {
            pairs.push((Cow::Owned(name.clone()), value.clone()));
        }
    }
}

/// The parameters of `pairs` as a form.
pub(crate) fn form_of(pairs: &[(Cow<'static, str>, String)]) -> Form {
    let mut form = Form::default();
    for (name, value) in pairs {
        form.pair(name, value);
    }
    form
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_errors_map_to_kinds_and_stay_findable() {
        let cases = [
            (
                LoginError::denied("access_denied", None),
                ErrorKind::SessionExpired,
            ),
            (
                LoginError::denied("login_required", None),
                ErrorKind::SessionExpired,
            ),
            (
                LoginError::denied("invalid_scope", None),
                ErrorKind::Rejected,
            ),
            (
                LoginError::denied("server_error", None),
                ErrorKind::Transient,
            ),
            (LoginError::Expired, ErrorKind::SessionExpired),
            (LoginError::TimedOut, ErrorKind::SessionExpired),
            (LoginError::StateMismatch, ErrorKind::Policy),
            (LoginError::IssuerMismatch, ErrorKind::Policy),
            (LoginError::MissingCode, ErrorKind::Rejected),
        ];
        for (login, kind) in cases {
            let err = Error::from(login.clone());
            assert_eq!(err.kind(), kind, "{login:?}");
            assert_eq!(LoginError::of(&err), Some(&login));
        }
        let err = Error::from(LoginError::denied("access_denied", Some("no")));
        assert_eq!(err.oauth_error(), Some("access_denied"));
    }

    #[test]
    fn a_silent_login_that_needs_the_user_comes_back_typed() {
        for (code, typed) in [
            ("login_required", ErrorCode::LoginRequired),
            ("consent_required", ErrorCode::ConsentRequired),
            ("interaction_required", ErrorCode::InteractionRequired),
            (
                "account_selection_required",
                ErrorCode::AccountSelectionRequired,
            ),
        ] {
            let login = LoginError::denied(code, Some("no session"));
            assert_eq!(
                login,
                LoginError::InteractionRequired {
                    error: typed.clone(),
                    description: Some("no session".into()),
                }
            );
            assert!(login.needs_user());
            let err = Error::from(login);
            assert_eq!(err.kind(), ErrorKind::SessionExpired);
            assert_eq!(err.oauth_error_code(), Some(&typed));
        }
        assert!(!LoginError::denied("access_denied", None).needs_user());
        assert!(!LoginError::TimedOut.needs_user());
    }

    #[tokio::test]
    async fn a_chain_falls_through_a_silent_login_that_needs_the_user() {
        use tower_token_refresh_core::{
            TokenSet, TokenSource as _,
            source::{self, TokenSourceExt as _},
        };
        let refresh = source::from_fn(|_| async { Err(Error::session_expired("revoked")) });
        let silent =
            source::from_fn(|_| async { Err(LoginError::denied("login_required", None).into()) });
        let interactive = source::from_fn(|_| async { Ok(TokenSet::bearer("from-the-user")) });
        let chain = refresh.or_else(silent).or_else(interactive);
        let tokens = chain.fetch(None).await.unwrap();
        assert_eq!(tokens.access_token().secret(), "from-the-user");
    }

    #[test]
    fn a_login_error_is_found_behind_a_wrapping_error() {
        let chain = Error::session_expired("every token source failed")
            .with_source(Error::from(LoginError::Expired));
        assert_eq!(LoginError::of(&chain), Some(&LoginError::Expired));
        assert_eq!(LoginError::of(&Error::session_expired("plain")), None);
    }

    #[test]
    fn server_text_in_a_denial_is_cleaned_and_cut() {
        let long = format!("bad\r\nline{}", "é".repeat(200));
        let LoginError::Denied { description, .. } = LoginError::denied("x", Some(&long)) else {
            unreachable!()
        };
        let d = description.unwrap();
        assert!(d.len() <= 200);
        assert!(!d.chars().any(char::is_control), "{d:?}");
    }

    #[test]
    fn hints_override_the_configured_ones() {
        let base = LoginHints::new().with_scope("read").with_acr_values("pwd");
        let merged = LoginHints::new().with_acr_values("mfa").over(&base);
        assert_eq!(merged.acr_values(), Some("mfa"));
        assert_eq!(merged.scope(), Some("read"));
        let mut pairs = Vec::new();
        merged
            .with_max_age(Duration::from_millis(90_500))
            .apply(&[("prompt".into(), "login".into())], &mut pairs);
        assert!(pairs.contains(&("max_age".into(), "90".to_owned())));
        assert_eq!(pairs.last(), Some(&("prompt".into(), "login".to_owned())));
    }
}
