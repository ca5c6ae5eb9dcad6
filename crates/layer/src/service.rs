use std::{
    fmt, mem,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::Service;
use tower_token_refresh_core::{BoxError, Error, ErrorKind, Lookup, LookupCache, TokenManager};

use crate::{
    Classify, CloneBody, RejectedToken, ReplayPolicy,
    future::ResponseFuture,
    layer::{Shared, Tokens},
    origin::Decision,
};

/// Authorizes requests with a [`TokenManager`]'s token, refreshes it when
/// the server rejects it, and replays the rejected request once.
///
/// Built by [`TokenRefreshLayer`](crate::TokenRefreshLayer); see the crate
/// docs for the data path.
///
/// # Errors
///
/// The inner service's error, boxed; or a [`tower_token_refresh_core::Error`]
/// (downcast the [`BoxError`]) when no token could be had: the session
/// expired, a refresh failed, or policy refused the request.
pub struct TokenRefresh<S, P = CloneBody, C = RejectedToken> {
    inner: S,
    shared: Arc<Shared>,
    /// The credential this clone sent last: while it stays fresh, a request
    /// reads one flag of it instead of the manager's state.
    cache: LookupCache,
    policy: P,
    classifier: C,
}

impl<S, P, C> TokenRefresh<S, P, C> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, policy: P, classifier: C) -> Self {
        TokenRefresh {
            inner,
            shared,
            cache: LookupCache::new(),
            policy,
            classifier,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The manager whose tokens this service sends; `None` for a service
    /// over [`Sessions`](crate::Sessions).
    pub fn manager(&self) -> Option<&TokenManager> {
        self.shared.tokens.one()
    }
}

impl<S: Clone, P: Clone, C: Clone> Clone for TokenRefresh<S, P, C> {
    fn clone(&self) -> Self {
        TokenRefresh {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            cache: self.cache.clone(),
            policy: self.policy.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, P, C> fmt::Debug for TokenRefresh<S, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRefresh")
            .field("tokens", &self.shared.tokens)
            .field("origins", &self.shared.origins)
            .field("header_name", &self.shared.header_name)
            .finish_non_exhaustive()
    }
}

/// Sends `$request` with what the lookup `$found` found, or waits for it,
/// under the settings `$shared`. A macro, not a function: written out in
/// `call`, moving the request costs no copy (a function, even inlined,
/// cost the one-manager path a second `memcpy` of the request).
macro_rules! send {
    ($this:ident, $shared:expr, $found:expr, $request:ident) => {{
        let shared: &Arc<Shared> = $shared;
        match $found {
            Lookup::Ready(token) => {
                // The copy is made before the inner service consumes the
                // request, and before the header goes on (a replay carries a
                // newer one); it is sent through a clone, readied before use.
                let replay = $this
                    .policy
                    .clone_request(&$request)
                    .map(|copy| ($this.inner.clone(), copy));
                let generation = token.generation();
                shared.authorize(&mut $request, token.into_header());
                ResponseFuture::sent(
                    $this.inner.call($request),
                    generation,
                    replay,
                    shared.clone(),
                    $this.classifier.clone(),
                )
            }
            Lookup::Pending(refresh) => {
                // The request is sent later, from the future: it must go
                // through the service that `poll_ready` readied, so take it
                // and leave a clone behind (see tower-service's docs on
                // `Service::call`).
                let clone = $this.inner.clone();
                let readied = mem::replace(&mut $this.inner, clone);
                ResponseFuture::waiting(
                    refresh,
                    readied,
                    $request,
                    $this.policy.clone(),
                    shared.clone(),
                    $this.classifier.clone(),
                )
            }
            Lookup::Failed(error) => ResponseFuture::failed(error),
        }
    }};
}

impl<S, B, R, P, C> Service<Request<B>> for TokenRefresh<S, P, C>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
    C: Classify,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, P, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.shared.origins.decide(&request) {
            Decision::Authorize => {}
            Decision::PassThrough => return ResponseFuture::pass_through(self.inner.call(request)),
            Decision::Refuse(why) => {
                return ResponseFuture::failed(Error::new(ErrorKind::Policy, why));
            }
        }
        let found = match &self.shared.tokens {
            Tokens::One(manager) => manager.lookup_cached(&mut self.cache),
            Tokens::PerSession(sessions) => {
                let session = sessions.session_of(request.extensions());
                return self.call_in_session(session, request);
            }
        };
        send!(self, &self.shared, found, request)
    }
}

impl<S, P, C> TokenRefresh<S, P, C> {
    /// A layer over `Sessions`: the request goes as through a layer of its
    /// session's manager alone (the settings for the request name that
    /// manager), or is refused when it names no session.
    #[inline(never)]
    fn call_in_session<B, R>(
        &mut self,
        session: Option<TokenManager>,
        mut request: Request<B>,
    ) -> ResponseFuture<S, B, P, C>
    where
        S: Service<Request<B>, Response = Response<R>> + Clone,
        S::Error: Into<BoxError>,
        P: ReplayPolicy<B>,
        C: Classify,
    {
        let Some(session) = session else {
            return ResponseFuture::failed(no_session());
        };
        let found = session.lookup();
        let shared = Arc::new(Shared {
            tokens: Tokens::One(session),
            origins: Arc::clone(&self.shared.origins),
            header_name: self.shared.header_name.clone(),
        });
        send!(self, &shared, found, request)
    }
}

#[cold]
fn no_session() -> Error {
    Error::new(
        ErrorKind::Policy,
        "the request names no session (no SessionKey extension of the layer's key type); \
         it is not sent with another session's token",
    )
}
