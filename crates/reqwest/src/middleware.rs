//! The `reqwest_middleware::Middleware`.

use std::{borrow::Cow, fmt, hash::Hash, mem, sync::Arc};

use http::{
    Extensions, HeaderName, Uri,
    header::{AUTHORIZATION, PROXY_AUTHORIZATION},
};
use reqwest::{Request, Response, Url};
use reqwest_middleware::{Middleware, Next};
use tower_token_refresh::{
    Classify, Error, ErrorKind, Origin, RejectedToken, SessionKey, Sessions, TokenManager,
    manager::Lookup,
    origin::{Decision, OriginPolicy},
};

/// A [`reqwest_middleware::Middleware`] that authorizes requests with a
/// [`TokenManager`]'s token, refreshes it when the server rejects it, and
/// replays the rejected request once.
///
/// It does what [`TokenRefreshLayer`](tower_token_refresh::TokenRefreshLayer)
/// does for a tower client, with the same builder methods and the same
/// [origin policy](tower_token_refresh::origin):
///
/// 1. a request to an origin not allowed, over cleartext `http` to a host
///    that is not loopback, or with a `Host` header naming another host, is
///    refused before anything is sent (an [`ErrorKind::Policy`] error); one
///    with [`SkipAuth`](tower_token_refresh::SkipAuth) in its extensions
///    (`RequestBuilder::with_extension`) goes on untouched;
/// 2. the current credential goes on the request at once; past expiry (or
///    with none) the request waits for the refresh every caller shares;
/// 3. the request is copied with [`Request::try_clone`] before it is sent;
/// 4. on a response the classifier calls a rejected token (default
///    [`RejectedToken`]: RFC 6750's 401 rules) the token is refreshed, unless
///    a newer one is already current, and the copy is sent once with it. A
///    second rejection is returned as it is. A streaming body cannot be
///    copied: its request is sent once and the 401 returned, and the token
///    is still refreshed for the requests that follow.
///
/// # Errors
///
/// When no token can be had, the request fails with
/// [`reqwest_middleware::Error::Middleware`] holding a
/// [`tower_token_refresh::Error`]: get it with [`token_error`](crate::token_error)
/// and tell a [session that expired](ErrorKind::SessionExpired) from a
/// [refresh that failed for now](ErrorKind::Transient) or a request that
/// [policy refused](ErrorKind::Policy).
///
/// # Redirects
///
/// reqwest follows redirects inside the client, below this middleware: the
/// policy judges the first URL only. reqwest removes `Authorization` on a
/// redirect to another scheme, host or port, but not another header: with a
/// [`header_name`](Self::header_name) of your own, build the client with
/// [`redirect_policy`](Self::redirect_policy) (or
/// `reqwest::redirect::Policy::none()`). A 401 at the end of a redirect to another origin is not
/// taken for a rejection of the token: it is returned as it is.
///
/// # Example
///
/// ```no_run
/// use reqwest_middleware::ClientBuilder;
/// use tower_token_refresh::{TokenManager, TokenSet, source};
/// use tower_token_refresh_reqwest::TokenRefreshMiddleware;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
/// let client = ClientBuilder::new(reqwest::Client::new())
///     .with(TokenRefreshMiddleware::new(tokens).allow_origin("https://api.example.com".parse()?))
///     .build();
/// let response = client.get("https://api.example.com/products").send().await?;
/// # let _ = response;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenRefreshMiddleware<C = RejectedToken> {
    tokens: Tokens,
    origins: OriginPolicy,
    header_name: HeaderName,
    classifier: C,
}

impl TokenRefreshMiddleware {
    /// A middleware that authorizes requests with `manager`'s tokens, once
    /// it is told where they may go.
    ///
    /// The defaults are the layer's: **no origin is allowed** (every request
    /// fails with an [`ErrorKind::Policy`] error until
    /// [`allow_origin`](Self::allow_origin) or [`any_origin`](Self::any_origin)
    /// says otherwise), requests to other origins refused rather than sent
    /// without the token, the `Authorization` header, cleartext HTTP only to
    /// loopback hosts, and [`RejectedToken`]'s rules.
    pub fn new(manager: TokenManager) -> Self {
        TokenRefreshMiddleware::from_tokens(Tokens::One(manager))
    }

    /// A middleware that authorizes each request with the token of the
    /// session its [`SessionKey<K>`](SessionKey) extension names
    /// (`RequestBuilder::with_extension(SessionKey(user))`), out of
    /// `sessions`. A request that names none (or a key of another type) is
    /// refused with an [`ErrorKind::Policy`] error and not sent. Otherwise
    /// as [`new`](Self::new).
    pub fn sessions<K>(sessions: Sessions<K>) -> Self
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        let session_of = move |extensions: &Extensions| {
            let SessionKey(key) = extensions.get::<SessionKey<K>>()?;
            Some(sessions.session(key))
        };
        TokenRefreshMiddleware::from_tokens(Tokens::PerSession(Arc::new(session_of)))
    }

    fn from_tokens(tokens: Tokens) -> Self {
        TokenRefreshMiddleware {
            tokens,
            origins: OriginPolicy::default(),
            header_name: AUTHORIZATION,
            classifier: RejectedToken,
        }
    }
}

impl<C> TokenRefreshMiddleware<C> {
    /// Allows the token to go to `origin`: see
    /// [`TokenRefreshLayer::allow_origin`](tower_token_refresh::TokenRefreshLayer::allow_origin).
    pub fn allow_origin(mut self, origin: Origin) -> Self {
        self.origins.allow(origin);
        self
    }

    /// Allows the token to go to every origin a request names (cleartext
    /// still only to loopback): see
    /// [`TokenRefreshLayer::any_origin`](tower_token_refresh::TokenRefreshLayer::any_origin).
    pub fn any_origin(mut self) -> Self {
        self.origins.allow_any();
        self
    }

    /// Sends requests to origins that are not allowed on without the token,
    /// instead of failing them: see
    /// [`TokenRefreshLayer::pass_through_other_origins`](tower_token_refresh::TokenRefreshLayer::pass_through_other_origins).
    pub fn pass_through_other_origins(mut self, enable: bool) -> Self {
        self.origins.set_pass_through(enable);
        self
    }

    /// Allows tokens over cleartext `http://` to hosts that are not
    /// loopback. Off by default.
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.origins.set_allow_cleartext(allow);
        self
    }

    /// Sends the credential in this header instead of `Authorization`.
    /// reqwest does not remove it on a redirect to another origin: give the
    /// client [`redirect_policy`](Self::redirect_policy) (see
    /// [Redirects](Self#redirects)).
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.header_name = name;
        self
    }

    /// A reqwest redirect policy for the client under this middleware:
    /// reqwest's default (at most 10 hops), except that a hop to another
    /// origin is not followed when the credential travels in a header
    /// reqwest does not remove there (any [`header_name`](Self::header_name)
    /// but `Authorization` and `Proxy-Authorization`). The redirect
    /// response is then returned as it is.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_token_refresh::{Scheme, TokenManager, TokenSet, source};
    /// use tower_token_refresh_reqwest::TokenRefreshMiddleware;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) }))
    /// #     .scheme(Scheme::None)
    /// #     .build();
    /// let middleware = TokenRefreshMiddleware::new(tokens)
    ///     .allow_origin("https://api.example.com".parse()?)
    ///     .header_name(http::HeaderName::from_static("x-api-key"));
    /// let http = reqwest::Client::builder()
    ///     .redirect(middleware.redirect_policy())
    ///     .build()?;
    /// let client = reqwest_middleware::ClientBuilder::new(http).with(middleware).build();
    /// # let _ = client;
    /// # Ok(()) }
    /// ```
    pub fn redirect_policy(&self) -> reqwest::redirect::Policy {
        let removed_by_reqwest =
            self.header_name == AUTHORIZATION || self.header_name == PROXY_AUTHORIZATION;
        let default = reqwest::redirect::Policy::default();
        reqwest::redirect::Policy::custom(move |attempt| {
            let elsewhere = attempt
                .previous()
                .last()
                .is_some_and(|previous| answered_elsewhere(attempt.url(), previous));
            if elsewhere && !removed_by_reqwest {
                attempt.stop()
            } else {
                default.redirect(attempt)
            }
        })
    }

    /// Sets what counts as a rejected token (a [`Classify`]: the layer's
    /// classifiers, or a closure `Fn(StatusCode, &HeaderMap) -> bool`).
    pub fn classify<C2>(self, classifier: C2) -> TokenRefreshMiddleware<C2> {
        TokenRefreshMiddleware {
            tokens: self.tokens,
            origins: self.origins,
            header_name: self.header_name,
            classifier,
        }
    }

    /// The manager whose tokens this middleware sends; `None` over
    /// [`Sessions`].
    pub fn manager(&self) -> Option<&TokenManager> {
        match &self.tokens {
            Tokens::One(manager) => Some(manager),
            Tokens::PerSession(_) => None,
        }
    }

    fn decide(&self, request: &Request, extensions: &Extensions) -> Decision {
        // Judged as reqwest will send it: the `url` crate has already
        // normalized it (`http://2130706433/` is `http://127.0.0.1/` by now).
        match request.url().as_str().parse::<Uri>() {
            Ok(uri) => self
                .origins
                .decide_parts(&uri, request.headers(), extensions),
            Err(_) => Decision::Refuse("a URL that is not a valid URI".into()),
        }
    }
}

impl<C: Classify> TokenRefreshMiddleware<C> {
    /// Runs the classifier on the response's status, version, headers and
    /// extensions, lent to an `http::Response` for the call.
    fn is_rejected(&self, response: &mut Response) -> bool {
        let mut probe = http::Response::new(());
        *probe.status_mut() = response.status();
        *probe.version_mut() = response.version();
        mem::swap(probe.headers_mut(), response.headers_mut());
        mem::swap(probe.extensions_mut(), response.extensions_mut());
        let rejected = self.classifier.is_rejected(&probe);
        mem::swap(probe.headers_mut(), response.headers_mut());
        mem::swap(probe.extensions_mut(), response.extensions_mut());
        rejected
    }
}

impl<C> fmt::Debug for TokenRefreshMiddleware<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRefreshMiddleware")
            .field("manager", &self.manager())
            .field("origins", &self.origins)
            .field("header_name", &self.header_name)
            .finish_non_exhaustive()
    }
}

/// Whose tokens the middleware sends: one manager's, or each request's
/// session's.
#[derive(Clone)]
enum Tokens {
    One(TokenManager),
    PerSession(Arc<SessionOf>),
}

/// The session a request's [`SessionKey`] names, its key type erased.
type SessionOf = dyn Fn(&Extensions) -> Option<TokenManager> + Send + Sync;

fn failed(error: Error) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(error)
}

/// Whether a response came from another origin than the request was sent
/// to: reqwest followed a redirect. That origin never saw our token.
fn answered_elsewhere(response: &Url, sent_to: &Url) -> bool {
    response.scheme() != sent_to.scheme()
        || response.host_str() != sent_to.host_str()
        || response.port_or_known_default() != sent_to.port_or_known_default()
}

#[async_trait::async_trait]
impl<C> Middleware for TokenRefreshMiddleware<C>
where
    C: Classify + Send + Sync + 'static,
{
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        match self.decide(&request, extensions) {
            Decision::Authorize => {}
            Decision::PassThrough => return next.run(request, extensions).await,
            Decision::Refuse(why) => return Err(failed(Error::new(ErrorKind::Policy, why))),
        }
        // No `LookupCache` here: the middleware is shared by reference
        // between every task of the client, and a cache it could update
        // would need a lock that costs what the cache saves (and makes the
        // tasks contend for it). `lookup` takes no lock.
        let manager = match &self.tokens {
            Tokens::One(manager) => Cow::Borrowed(manager),
            Tokens::PerSession(session_of) => match session_of(extensions) {
                Some(manager) => Cow::Owned(manager),
                None => {
                    return Err(failed(Error::new(
                        ErrorKind::Policy,
                        "the request names no session (no SessionKey extension of the \
                         middleware's key type); it is not sent with another session's token",
                    )));
                }
            },
        };
        let authorization = match manager.lookup() {
            Lookup::Ready(authorization) => authorization,
            Lookup::Pending(refresh) => refresh.await.map_err(failed)?,
            Lookup::Failed(error) => return Err(failed(error)),
        };
        let generation = authorization.generation();
        // The copy is made before the header goes on (the replay carries a
        // newer one). Without a copy, the URL is kept to tell a 401 that
        // came from elsewhere after a redirect.
        let copy = request.try_clone();
        let sent_to = match copy {
            Some(_) => None,
            None => Some(request.url().clone()),
        };
        request
            .headers_mut()
            .insert(&self.header_name, authorization.into_header());
        let mut response = next.clone().run(request, extensions).await?;
        if !self.is_rejected(&mut response) {
            return Ok(response);
        }
        let first_url = match (&copy, &sent_to) {
            (Some(copy), _) => copy.url(),
            (None, Some(url)) => url,
            (None, None) => return Ok(response),
        };
        if answered_elsewhere(response.url(), first_url) {
            return Ok(response);
        }
        let Some(mut copy) = copy else {
            // The 401 goes back as it is; the refresh (spawned) serves the
            // requests that follow.
            drop(manager.refresh_if(generation));
            return Ok(response);
        };
        // The rejected response is not held while the refresh runs.
        drop(response);
        let authorization = manager.replay_if(generation).await.map_err(failed)?;
        copy.headers_mut()
            .insert(&self.header_name, authorization.into_header());
        next.run(copy, extensions).await
    }
}
