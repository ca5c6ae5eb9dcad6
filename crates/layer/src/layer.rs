use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request, header::AUTHORIZATION};
use tower::Layer;
use tower_token_refresh_core::TokenManager;

use crate::{CloneBody, Origin, RejectedToken, TokenRefresh};

/// Settings shared by every clone of a layer and its services.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) manager: TokenManager,
    pub(crate) origins: Vec<Origin>,
    pub(crate) header_name: HeaderName,
    pub(crate) allow_cleartext: bool,
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
///     .layer(TokenRefreshLayer::new(tokens).scope("https://api.example.com".parse()?))
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
    /// A layer that authorizes requests with `manager`'s tokens.
    ///
    /// Defaults: every origin is in scope (call [`scope`](Self::scope) to
    /// narrow it, as you should whenever the client talks to more than one
    /// host), the `Authorization` header, cleartext HTTP only to loopback
    /// hosts, replay of requests whose body can be copied ([`CloneBody`]),
    /// and RFC 6750 rejection rules ([`RejectedToken`]).
    pub fn new(manager: TokenManager) -> Self {
        TokenRefreshLayer {
            shared: Arc::new(Shared {
                manager,
                origins: Vec::new(),
                header_name: AUTHORIZATION,
                allow_cleartext: false,
            }),
            policy: CloneBody,
            classifier: RejectedToken,
        }
    }
}

impl<P, C> TokenRefreshLayer<P, C> {
    fn shared_mut(&mut self) -> &mut Shared {
        // Only a layer under construction is changed; copying the settings
        // then (if a clone shares them) is a one-off.
        Arc::make_mut(&mut self.shared)
    }

    /// Adds an origin that tokens may be sent to; requests to any other
    /// origin pass through untouched. With no origin set, all requests are
    /// in scope.
    pub fn scope(mut self, origin: Origin) -> Self {
        self.shared_mut().origins.push(origin);
        self
    }

    /// Sends the credential in this header instead of `Authorization` (an
    /// API-key header, say; pair it with
    /// [`Scheme::None`](crate::Scheme::None) on the manager).
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.shared_mut().header_name = name;
        self
    }

    /// Allows tokens over cleartext `http://` to hosts that are not loopback.
    /// Off by default: such requests fail with an
    /// [`ErrorKind::Policy`](crate::ErrorKind::Policy) error.
    pub fn allow_cleartext(mut self, allow: bool) -> Self {
        self.shared_mut().allow_cleartext = allow;
        self
    }

    /// Sets the policy that copies requests for a replay.
    pub fn replay<P2>(self, policy: P2) -> TokenRefreshLayer<P2, C> {
        TokenRefreshLayer {
            shared: self.shared,
            policy,
            classifier: self.classifier,
        }
    }

    /// Sets what counts as a rejected token.
    pub fn classify<C2>(self, classifier: C2) -> TokenRefreshLayer<P, C2> {
        TokenRefreshLayer {
            shared: self.shared,
            policy: self.policy,
            classifier,
        }
    }

    /// The manager whose tokens this layer sends.
    pub fn manager(&self) -> &TokenManager {
        &self.shared.manager
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
