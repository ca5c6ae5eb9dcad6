//! Calling the token endpoint through a `tower::Service`.

use std::{fmt, marker::PhantomData};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower::{Service, ServiceExt};
use tower_token_refresh_core::{BoxError, BoxFuture, oauth2::HttpClient};

use crate::SkipAuth;

/// The largest token endpoint response body [`ServiceClient`] reads by default.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Adapts any `tower::Service` (hyper-util's client, say) into the
/// [`HttpClient`] that OAuth2 grants call their token endpoint with.
///
/// Each request carries [`SkipAuth`], so the same client may be layered with
/// [`TokenRefreshLayer`](crate::TokenRefreshLayer): the token endpoint call
/// is never intercepted (no deadlock, no loop). Response bodies are read up
/// to a limit ([`DEFAULT_MAX_BODY`] unless set).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use tower_token_refresh::{ServiceClient, oauth2::{ClientAuth, RefreshTokenGrant}};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let grant = RefreshTokenGrant::new(
///     "http://127.0.0.1:8080/token".parse()?,
///     ClientAuth::basic("id", "secret"),
///     ServiceClient::new(http),
/// );
/// # Ok(()) }
/// ```
pub struct ServiceClient<S, B = http_body_util::Full<Bytes>> {
    service: S,
    max_body: usize,
    _body: PhantomData<fn(B)>,
}

impl<S: Clone, B> Clone for ServiceClient<S, B> {
    fn clone(&self) -> Self {
        ServiceClient {
            service: self.service.clone(),
            max_body: self.max_body,
            _body: PhantomData,
        }
    }
}

impl<S, B> fmt::Debug for ServiceClient<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceClient")
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl<S> ServiceClient<S> {
    /// Wraps `service`, which takes `http_body_util::Full<Bytes>` request
    /// bodies (as hyper-util's client usually does).
    pub fn new(service: S) -> Self {
        Self::with_body(service)
    }
}

impl<S, B> ServiceClient<S, B> {
    /// Wraps `service`, which takes request bodies of type `B` (made from
    /// the form's [`Bytes`]).
    pub fn with_body(service: S) -> Self {
        ServiceClient {
            service,
            max_body: DEFAULT_MAX_BODY,
            _body: PhantomData,
        }
    }

    /// Sets the largest response body read, in bytes.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

impl<S, B, R> HttpClient for ServiceClient<S, B>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: From<Bytes> + Send + 'static,
    R: Body + Send + 'static,
    R::Data: Send,
    R::Error: Into<BoxError>,
{
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, BoxError>> {
        let service = self.service.clone();
        let max = self.max_body;
        Box::pin(async move {
            let mut request = request.map(B::from);
            request.extensions_mut().insert(SkipAuth);
            let response = service.oneshot(request).await.map_err(Into::into)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max).collect().await?.to_bytes();
            Ok(Response::from_parts(parts, body))
        })
    }
}
