use std::{fmt, hash::Hash, sync::Arc};

use http::{Extensions, HeaderName, HeaderValue, Request, header::AUTHORIZATION};
use tower::Layer;
use tower_token_refresh_core::{SessionKey, Sessions, TokenManager};

use crate::{
    BufferBody, BufferLayer, CloneBody, Origin, RejectedToken, TokenRefresh, origin::OriginPolicy,
};

/// Settings shared by every clone of a layer and its services.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) tokens: Tokens,
    /// Shared with the per-request settings of a layer over `Sessions`.
    pub(crate) origins: Arc<OriginPolicy>,
    pub(crate) header_name: HeaderName,
}

/// Whose tokens a layer sends: one manager's, or each request's session's.
#[derive(Clone, Debug)]
pub(crate) enum Tokens {
    One(TokenManager),
    PerSession(Arc<dyn SessionOf>),
}

impl Tokens {
    /// The one manager, for a layer that has one.
    pub(crate) fn one(&self) -> Option<&TokenManager> {
        match self {
            Tokens::One(manager) => Some(manager),
            Tokens::PerSession(_) => None,
        }
    }
}

/// A [`Sessions`] registry with its key type erased: the session a
/// request's [`SessionKey`] names.
pub(crate) trait SessionOf: fmt::Debug + Send + Sync + 'static {
    fn session_of(&self, extensions: &Extensions) -> Option<TokenManager>;
}

impl<K> SessionOf for Sessions<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn session_of(&self, extensions: &Extensions) -> Option<TokenManager> {
        let SessionKey(key) = extensions.get::<SessionKey<K>>()?;
        Some(self.session(key))
    }
}

impl Shared {
    /// Puts the credential on `request`, replacing any value the header had.
    #[inline(always)]
    pub(crate) fn authorize<B>(&self, request: &mut Request<B>, credential: HeaderValue) {
        let headers = request.headers_mut();
        // The usual header as the constant: 36 fewer instructions per
        // request than the same insert with the name by reference
        // (`benches/instructions.sh`).
        if self.header_name == AUTHORIZATION {
            headers.insert(AUTHORIZATION, credential);
        } else {
            headers.insert(&self.header_name, credential);
        }
    }
}

/// Wraps services in [`TokenRefresh`].
///
/// Cheap to clone: one layer value can serve every client of an application.
///
/// A new layer sends the token nowhere: name the origins that may have it
/// with [`allow_origin`](Self::allow_origin) (or, for a service bound to
/// one connection, [`connection_origin`](Self::connection_origin)), or
/// opt into every origin with [`any_origin`](Self::any_origin). The rules,
/// for every URI form and the `Host` header, are in the
/// [`origin` module docs](crate::origin).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_token_refresh::{TokenManager, TokenRefreshLayer, TokenSet, source};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let tokens = TokenManager::builder(source::from_fn(|_| async {
///     Ok(TokenSet::bearer("abc").with_expires_in(Duration::from_secs(3600)))
/// }))
/// .build();
///
/// let client = ServiceBuilder::new()
///     .layer(TokenRefreshLayer::new(tokens).allow_origin("https://api.example.com".parse()?))
///     .service(service_fn(|req: http::Request<Full<Bytes>>| async move {
///         // Stands in for hyper-util's client.
///         let auth = req.headers()[http::header::AUTHORIZATION].clone();
///         Ok::<_, std::convert::Infallible>(http::Response::new(auth))
///     }));
///
/// let response = client
///     .oneshot(http::Request::get("https://api.example.com/products").body(Full::default())?)
///     .await?;
/// assert_eq!(response.body(), "Bearer abc");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TokenRefreshLayer<P = CloneBody, C = RejectedToken> {
    shared: Arc<Shared>,
    policy: P,
    classifier: C,
}

impl TokenRefreshLayer {
    /// A layer that authorizes requests with `manager`'s tokens, once it
    /// is told where they may go.
    ///
    /// Defaults: **no origin is allowed** (every request fails with an
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) error until
    /// [`allow_origin`](Self::allow_origin),
    /// [`connection_origin`](Self::connection_origin) or
    /// [`any_origin`](Self::any_origin) says otherwise), requests to other
    /// origins refused rather than sent without the token, the
    /// `Authorization` header, cleartext HTTP only to loopback hosts, replay
    /// of requests whose body can be copied ([`CloneBody`]), and RFC 6750
    /// rejection rules ([`RejectedToken`]).
    pub fn new(manager: TokenManager) -> Self {
        TokenRefreshLayer::from_tokens(Tokens::One(manager))
    }

    /// A layer that authorizes each request with the token of the session
    /// its [`SessionKey<K>`](SessionKey) extension names, out of
    /// `sessions` (per user, per tenant): its own session's token, refreshed
    /// and replayed by that session alone. A request without the extension
    /// (or with a key of another type) fails with an
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) error and is not sent.
    /// Origins and the rest as [`new`](Self::new).
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    /// use tower_token_refresh::{
    ///     MemoryStore, SessionKey, Sessions, TokenManager, TokenRefreshLayer, TokenSet, source,
    /// };
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let grant = source::from_fn(|_| async { Ok(TokenSet::bearer("fresh")) });
    /// // (A MemoryStore per key loses a session on eviction; use FileStore::keyed or Redis.)
    /// let sessions: Sessions<u64> = Sessions::builder(TokenManager::builder(grant))
    ///     .store(|_: &u64| MemoryStore::new())
    ///     .build()?;
    /// sessions.set(7, TokenSet::bearer("token-of-user-7")).await?;
    ///
    /// let client = ServiceBuilder::new()
    ///     .layer(TokenRefreshLayer::sessions(sessions).allow_origin("https://api.example.com".parse()?))
    ///     .service(service_fn(|req: http::Request<Full<Bytes>>| async move {
    ///         let auth = req.headers()[http::header::AUTHORIZATION].clone();
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(auth))
    ///     }));
    ///
    /// let mut request = http::Request::get("https://api.example.com/orders").body(Full::default())?;
    /// request.extensions_mut().insert(SessionKey(7_u64));
    /// let response = client.clone().oneshot(request).await?;
    /// assert_eq!(response.body(), "Bearer token-of-user-7");
    ///
    /// // No session named: refused, not sent.
    /// let anonymous = http::Request::get("https://api.example.com/orders").body(Full::default())?;
    /// assert!(client.oneshot(anonymous).await.is_err());
    /// # Ok(()) }
    /// ```
    pub fn sessions<K>(sessions: Sessions<K>) -> Self
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        TokenRefreshLayer::from_tokens(Tokens::PerSession(Arc::new(sessions)))
    }

    fn from_tokens(tokens: Tokens) -> Self {
        TokenRefreshLayer {
            shared: Arc::new(Shared {
                tokens,
                origins: Arc::default(),
                header_name: AUTHORIZATION,
            }),
            policy: CloneBody,
            classifier: RejectedToken,
        }
    }
}

impl<P, C> TokenRefreshLayer<P, C> {
    fn origins_mut(&mut self) -> &mut OriginPolicy {
        Arc::make_mut(&mut self.shared_mut().origins)
    }

    fn shared_mut(&mut self) -> &mut Shared {
        // Only a layer under construction is changed; copying the settings
        // then (if a clone shares them) is a one-off.
        Arc::make_mut(&mut self.shared)
    }

    /// Allows the token to go to `origin` (scheme, host and port; the
    /// scheme's default port if none is written). Call it once per origin.
    ///
    /// A request to an origin not allowed fails with an
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) error, unless
    /// [`pass_through_other_origins`](Self::pass_through_other_origins) is
    /// on. Cleartext `http://` origins get the token only on loopback hosts,
    /// unless [`allow_cleartext`](Self::allow_cleartext) is on.
    ///
    /// The first origin allowed is checked first and, if it is `https`, in a
    /// few comparisons: allow your busiest origin first.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_token_refresh::{TokenManager, TokenRefreshLayer, TokenSet, source};
    /// # fn main() -> Result<(), tower_token_refresh::InvalidOrigin> {
    /// # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
    /// let layer = TokenRefreshLayer::new(tokens)
    ///     .allow_origin("https://api.example.com".parse()?)
    ///     .allow_origin("https://uploads.example.com:8443".parse()?);
    /// # Ok(()) }
    /// ```
    pub fn allow_origin(mut self, origin: Origin) -> Self {
        self.origins_mut().allow(origin);
        self
    }

    /// Allows the token to go to every origin a request names: for a client
    /// whose requests only ever go to hosts you trust, whatever URL it is
    /// given. The other rules still hold: a URI without a scheme needs a
    /// [`connection_origin`](Self::connection_origin), cleartext goes only
    /// to loopback, a `Host` header must agree with the URI.
    ///
    /// Prefer [`allow_origin`](Self::allow_origin): with `any_origin` a
    /// client pointed at the wrong host (a URL from a config file, a
    /// redirect followed inside this layer) hands it the token.
    pub fn any_origin(mut self) -> Self {
        self.origins_mut().allow_any();
        self
    }

    /// Says that the inner service is bound to one connection to `origin`,
    /// and allows that origin: for hyper's `client::conn` `SendRequest` and
    /// tonic's `Channel`, whose requests carry origin-form URIs
    /// (`/package.Service/Method`) that name no host.
    ///
    /// With it, a URI without a scheme is judged as a request to `origin`
    /// (an authority-form URI must name its host and port), and an absolute
    /// URI naming any other origin is treated as another origin: the bytes
    /// go down that one connection whatever the URI says. Without it, a URI
    /// without a scheme is always refused, whatever its `Host` header says:
    /// the layer cannot know where it goes.
    ///
    /// # Example
    ///
    /// ```
    /// # use tower_token_refresh::{TokenManager, TokenRefreshLayer, TokenSet, source};
    /// # fn main() -> Result<(), tower_token_refresh::InvalidOrigin> {
    /// # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
    /// // Around a tonic `Channel` to https://grpc.example.com.
    /// let layer = TokenRefreshLayer::new(tokens)
    ///     .connection_origin("https://grpc.example.com".parse()?);
    /// # Ok(()) }
    /// ```
    pub fn connection_origin(mut self, origin: Origin) -> Self {
        self.origins_mut().set_connection(origin);
        self
    }

    /// Sends requests to origins that are not allowed on to the inner
    /// service without the token, instead of failing them with an
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) error. Off by default.
    ///
    /// For a client shared with other hosts on purpose, and for the layer
    /// inside tower-http's `FollowRedirect` when a redirect off your API
    /// (to a CDN, say) should be followed without the token. A request
    /// whose target is unknown (no scheme, no
    /// [`connection_origin`](Self::connection_origin)) or whose `Host`
    /// header disagrees with its URI is refused even so.
    pub fn pass_through_other_origins(mut self, enable: bool) -> Self {
        self.origins_mut().set_pass_through(enable);
        self
    }

    /// Sends the credential in this header instead of `Authorization` (an
    /// API-key header, say; pair it with
    /// [`Scheme::None`](crate::Scheme::None) on the manager).
    ///
    /// tower-http's `FollowRedirect` strips only `Authorization`, `Cookie`
    /// and `Proxy-Authorization` on a cross-origin redirect: with the layer
    /// outside it, give it this layer's `redirect_policy()` (feature
    /// `follow-redirect`), which strips this header too.
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.shared_mut().header_name = name;
        self
    }

    /// Allows tokens over cleartext `http://` to hosts that are not loopback.
    /// Off by default: such requests fail with an
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) error.
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.origins_mut().set_allow_cleartext(allow);
        self
    }

    /// A tower-http `FollowRedirect` policy for this layer: tower-http's
    /// [`Standard`](tower_http::follow_redirect::policy::Standard) (a limit
    /// of 20 hops, `Authorization`, `Cookie` and `Proxy-Authorization`
    /// stripped on a cross-origin hop), and this layer's
    /// [`header_name`](Self::header_name) stripped on a cross-origin hop
    /// too. See [`StripCredential`](crate::redirect::StripCredential).
    ///
    /// # Example
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower::ServiceBuilder;
    /// use tower_http::follow_redirect::FollowRedirectLayer;
    /// # use tower_token_refresh::{Scheme, TokenManager, TokenRefreshLayer, TokenSet, source};
    /// # fn main() -> Result<(), tower_token_refresh::InvalidOrigin> {
    /// # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) }))
    /// #     .scheme(Scheme::None)
    /// #     .build();
    /// # let http = tower::service_fn(|_: http::Request<http_body_util::Empty<bytes::Bytes>>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(()))
    /// # });
    /// let auth = TokenRefreshLayer::new(tokens)
    ///     .allow_origin("https://api.example.com".parse()?)
    ///     .header_name(HeaderName::from_static("x-api-key"));
    /// let client = ServiceBuilder::new()
    ///     .layer(auth.clone())
    ///     .layer(FollowRedirectLayer::with_policy(auth.redirect_policy()))
    ///     .service(http);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "follow-redirect")]
    pub fn redirect_policy(&self) -> crate::redirect::StripCredential {
        crate::redirect::StripCredential::new(self.shared.header_name.clone())
    }

    /// Sets the policy that copies requests for a replay.
    pub fn replay<P2>(self, policy: P2) -> TokenRefreshLayer<P2, C> {
        TokenRefreshLayer {
            shared: self.shared,
            policy,
            classifier: self.classifier,
        }
    }

    /// Reads each request body into memory (up to `policy`'s limit) before
    /// it is sent, so that bodies that cannot be copied, tonic's, axum's or
    /// reqwest's, are replayed after a rejection too: see [`BufferBody`].
    /// Replaces the replay policy. Call it last: it returns a
    /// [`BufferLayer`], which keeps this layer's settings.
    ///
    /// # Example
    ///
    /// Around a client that takes `axum::body::Body`:
    ///
    /// ```
    /// use axum::body::Body;
    /// use tower::{Layer, ServiceExt, service_fn};
    /// use tower_token_refresh::{BufferBody, TokenManager, TokenRefreshLayer, TokenSet, source};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
    /// let layer = TokenRefreshLayer::new(tokens)
    ///     .allow_origin("https://api.example.com".parse()?)
    ///     .buffer(BufferBody::new(Body::new).limit(16 * 1024));
    /// # let http = service_fn(|_: http::Request<Body>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
    /// # });
    /// let client = layer.layer(http);
    /// let request = http::Request::post("https://api.example.com/orders").body(Body::from("{}"))?;
    /// let response = client.oneshot(request).await?;
    /// # assert_eq!(response.status(), 200);
    /// # Ok(()) }
    /// ```
    pub fn buffer<F>(self, policy: BufferBody<F>) -> BufferLayer<F, C> {
        BufferLayer::new(self.replay(CloneBody), policy)
    }

    /// A layer to put **inside** this one, for gRPC: it watches response
    /// trailers for `UNAUTHENTICATED` and refreshes the token the call
    /// carried, so that the next call gets a new one (the call itself
    /// cannot be replayed). See the [`trailers`](crate::trailers) module.
    pub fn watch_trailers(&self) -> crate::trailers::WatchTrailersLayer {
        crate::trailers::WatchTrailersLayer::from_tokens(self.shared.tokens.clone())
            .header_name(self.shared.header_name.clone())
    }

    /// Sets what counts as a rejected token.
    pub fn classify<C2>(self, classifier: C2) -> TokenRefreshLayer<P, C2> {
        TokenRefreshLayer {
            shared: self.shared,
            policy: self.policy,
            classifier,
        }
    }

    /// The manager whose tokens this layer sends; `None` for a layer over
    /// [`Sessions`] ([`sessions`](TokenRefreshLayer::sessions)).
    pub fn manager(&self) -> Option<&TokenManager> {
        self.shared.tokens.one()
    }
}

impl<S, P: Clone, C: Clone> Layer<S> for TokenRefreshLayer<P, C> {
    type Service = TokenRefresh<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenRefresh::from_parts(
            inner,
            self.shared.clone(),
            self.policy.clone(),
            self.classifier.clone(),
        )
    }
}
