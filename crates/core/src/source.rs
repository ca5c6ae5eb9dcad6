//! Where new tokens come from.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use crate::{Error, TokenSet};

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
/// Built in: [`from_fn`] and the OAuth2 [`RefreshTokenGrant`](crate::oauth2::RefreshTokenGrant).
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
