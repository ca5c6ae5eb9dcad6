//! Where new tokens come from.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use crate::{Error, ErrorKind, TokenSet};

/// A boxed, sendable future: what the object-safe traits of this crate return.
///
/// Refreshes and store writes are cold paths, so one allocation per call is fine.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Produces a new token set, given the current one.
///
/// The coordinator calls it from a spawned task, at most once at a time per
/// [`TokenManager`](crate::TokenManager). The error's
/// [`kind`](crate::ErrorKind) decides what happens next:
/// [`SessionExpired`](crate::ErrorKind::SessionExpired) ends the session,
/// [`Transient`](crate::ErrorKind::Transient) and
/// [`InvalidResponse`](crate::ErrorKind::InvalidResponse) are retried with
/// backoff, anything else fails the waiters at once.
///
/// Built in: [`from_fn`] and a fallback chain of sources
/// ([`TokenSourceExt::or_else`]). The OAuth2 grants and logins
/// (`RefreshTokenGrant`, `ClientCredentialsGrant`, …) are sources of the
/// `tower-token-refresh-oauth2` crate.
pub trait TokenSource: Send + Sync + 'static {
    /// Fetches a new token set. `current` is the set in use, if any (its
    /// refresh token is what a refresh grant needs).
    fn fetch<'a>(&'a self, current: Option<&'a TokenSet>)
    -> BoxFuture<'a, Result<TokenSet, Error>>;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch<'a>(
        &'a self,
        current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        (**self).fetch(current)
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn fetch<'a>(
        &'a self,
        current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        (**self).fetch(current)
    }
}

/// A [`TokenSource`] from an async closure that gets a copy of the current set.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_token_refresh_core::{source, TokenSet, TokenManager};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let source = source::from_fn(|_current: Option<TokenSet>| async {
///     Ok(TokenSet::bearer("fresh").with_expires_in(Duration::from_secs(3600)))
/// });
/// let tokens = TokenManager::builder(source).build();
/// let auth = tokens.authorization().await.unwrap();
/// assert_eq!(auth.header().to_str().unwrap(), "Bearer fresh");
/// # }
/// ```
pub fn from_fn<F, Fut>(f: F) -> FromFn<F>
where
    F: Fn(Option<TokenSet>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<TokenSet, Error>> + Send + 'static,
{
    FromFn { f }
}

/// The [`TokenSource`] returned by [`from_fn`].
#[derive(Clone)]
pub struct FromFn<F> {
    f: F,
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

impl<F, Fut> TokenSource for FromFn<F>
where
    F: Fn(Option<TokenSet>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<TokenSet, Error>> + Send + 'static,
{
    fn fetch<'a>(
        &'a self,
        current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin((self.f)(current.cloned()))
    }
}

/// Combinators for every [`TokenSource`].
pub trait TokenSourceExt: TokenSource + Sized {
    /// A fallback chain: `self` first; when it fails with
    /// [`SessionExpired`](ErrorKind::SessionExpired) or
    /// [`Rejected`](ErrorKind::Rejected), `fallback` is asked (with the
    /// same current set). Typical: the refresh token grant, then
    /// re-authentication with client credentials or an application's silent
    /// login (`prompt=none`).
    ///
    /// A transient failure of `self` is returned as is (the coordinator
    /// retries the whole chain), and so is every failure of `fallback` but
    /// these two kinds: when `fallback` also ends with `SessionExpired` or
    /// `Rejected`, the chain fails with `SessionExpired`, so the
    /// `on_session_expired` hook tells the application to log the user in.
    /// Chains nest: `a.or_else(b).or_else(c)`.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_token_refresh_core::{source::{self, TokenSourceExt}, Error, TokenManager, TokenSet};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// let refresh = source::from_fn(|_| async { Err(Error::session_expired("refresh token revoked")) });
    /// let silent_login = source::from_fn(|_| async { Ok(TokenSet::bearer("from-silent-login")) });
    /// let tokens = TokenManager::builder(refresh.or_else(silent_login)).build();
    /// let auth = tokens.authorization().await?;
    /// assert_eq!(auth.header().to_str().unwrap(), "Bearer from-silent-login");
    /// # Ok(()) }
    /// ```
    fn or_else<B: TokenSource>(self, fallback: B) -> OrElse<Self, B> {
        OrElse {
            first: self,
            fallback,
        }
    }

    /// Calls `hook` with every token set this source produces, before the
    /// coordinator takes it: how an application learns which link of a
    /// fallback chain started the session.
    ///
    /// Mark the links where the chain is built; the coordinator and the
    /// chain stay unaware of them, chains nest, and a custom source is
    /// marked the same way. The hook runs on the refresh task: keep it
    /// short (set a flag, send on a channel, log a line).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use tower_token_refresh_core::{source::{self, TokenSourceExt}, Error, TokenManager, TokenSet};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// let answered = Arc::new(Mutex::new(Vec::new()));
    /// let (a, b) = (answered.clone(), answered.clone());
    /// let refresh = source::from_fn(|_| async { Err(Error::session_expired("refresh token revoked")) })
    ///     .on_success(move |_| a.lock().unwrap().push("refresh"));
    /// let login = source::from_fn(|_| async { Ok(TokenSet::bearer("from-login")) })
    ///     .on_success(move |_| b.lock().unwrap().push("interactive login"));
    /// let tokens = TokenManager::builder(refresh.or_else(login)).build();
    /// tokens.authorization().await?;
    /// assert_eq!(*answered.lock().unwrap(), ["interactive login"]);
    /// # Ok(()) }
    /// ```
    fn on_success<F>(self, hook: F) -> OnSuccess<Self, F>
    where
        F: Fn(&TokenSet) + Send + Sync + 'static,
    {
        OnSuccess { source: self, hook }
    }
}

impl<T: TokenSource> TokenSourceExt for T {}

/// The fallback chain returned by [`TokenSourceExt::or_else`].
#[derive(Clone, Debug)]
pub struct OrElse<A, B> {
    first: A,
    fallback: B,
}

fn falls_through(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::SessionExpired | ErrorKind::Rejected)
}

impl<A: TokenSource, B: TokenSource> TokenSource for OrElse<A, B> {
    fn fetch<'a>(
        &'a self,
        current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin(async move {
            let first = match self.first.fetch(current).await {
                Ok(tokens) => return Ok(tokens),
                Err(e) if falls_through(&e) => e,
                Err(e) => return Err(e),
            };
            tracing::debug!(error = %first, "token source failed; trying its fallback");
            match self.fallback.fetch(current).await {
                Ok(tokens) => Ok(tokens),
                Err(last) if falls_through(&last) => {
                    let mut err = Error::session_expired(format!(
                        "every token source failed (first: {first}; last: {last})"
                    ));
                    if let Some(code) = last.oauth_error_code() {
                        err = err.with_oauth_error(code.clone());
                    }
                    Err(err.with_source(last))
                }
                Err(last) => Err(last),
            }
        })
    }
}

/// The source returned by [`TokenSourceExt::on_success`].
#[derive(Clone)]
pub struct OnSuccess<S, F> {
    source: S,
    hook: F,
}

impl<S: fmt::Debug, F> fmt::Debug for OnSuccess<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnSuccess")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<S, F> TokenSource for OnSuccess<S, F>
where
    S: TokenSource,
    F: Fn(&TokenSet) + Send + Sync + 'static,
{
    fn fetch<'a>(
        &'a self,
        current: Option<&'a TokenSet>,
    ) -> BoxFuture<'a, Result<TokenSet, Error>> {
        Box::pin(async move {
            let tokens = self.source.fetch(current).await?;
            (self.hook)(&tokens);
            Ok(tokens)
        })
    }
}
