//! gRPC `UNAUTHENTICATED` in real trailers: the token is refreshed for the
//! calls that follow.
//!
//! A gRPC server usually rejects a token before any message, trailers-only:
//! `grpc-status: 16` in the response headers, which the layer's classifier
//! sees with [`RejectedToken::also_grpc`](crate::RejectedToken::also_grpc)
//! and which is refreshed and replayed like a 401. Some servers (or a
//! streaming call whose token expires midway) send messages first and
//! `grpc-status: 16` only in the trailers, after the body. By then the
//! response is the caller's: the call cannot be replayed. What can be done
//! is to stop using that token: [`WatchTrailersLayer`], placed **inside**
//! the token layer, watches each response's trailers and, on
//! `UNAUTHENTICATED`, asks the manager to refresh if the token the call
//! carried is still the current one
//! ([`refresh_if`](crate::TokenManager::refresh_if) of its generation), so
//! the next call carries a new one.
//!
//! What it cannot do: replay the call (its response has been handed out;
//! the caller sees `UNAUTHENTICATED` and may retry), or notice trailers
//! that nobody reads (a caller that drops the body before its end). It
//! costs nothing to the default layer, whose response type it leaves alone:
//! only a stack that adds it wraps response bodies in [`WatchTrailersBody`].
//!
//! # Example
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_token_refresh::{RejectedToken, TokenManager, TokenRefreshLayer, TokenSet, source};
//! # fn main() -> Result<(), tower_token_refresh::InvalidOrigin> {
//! # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
//! # let channel = tower::service_fn(|_: http::Request<http_body_util::Full<bytes::Bytes>>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! # });
//! let auth = TokenRefreshLayer::new(tokens)
//!     .connection_origin("https://grpc.example.com".parse()?)
//!     .classify(RejectedToken.also_grpc());
//! let client = ServiceBuilder::new()
//!     .layer(auth.clone())
//!     .layer(auth.watch_trailers()) // inside: sees the header the call carried
//!     .service(channel);
//! # let _ = client;
//! # Ok(()) }
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderName, HeaderValue, Request, Response, header::AUTHORIZATION};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_token_refresh_core::{Lookup, TokenManager, header::GRPC_STATUS};

use crate::layer::Tokens;

/// gRPC's `UNAUTHENTICATED` status code.
const UNAUTHENTICATED: &[u8] = b"16";

/// Wraps services in [`WatchTrailers`]. Built by
/// [`TokenRefreshLayer::watch_trailers`](crate::TokenRefreshLayer::watch_trailers),
/// or [`new`](Self::new) for the `Authorization` header. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct WatchTrailersLayer {
    tokens: Tokens,
    header_name: HeaderName,
}

impl WatchTrailersLayer {
    /// Watches for `manager`'s tokens in the `Authorization` header.
    pub fn new(manager: TokenManager) -> Self {
        WatchTrailersLayer::from_tokens(Tokens::One(manager))
    }

    /// Watches for the tokens a token layer sends: one manager's, or each
    /// request's session's (its [`SessionKey`](crate::SessionKey)).
    pub(crate) fn from_tokens(tokens: Tokens) -> Self {
        WatchTrailersLayer {
            tokens,
            header_name: AUTHORIZATION,
        }
    }

    /// Looks for the token in this header instead (the token layer's
    /// [`header_name`](crate::TokenRefreshLayer::header_name)).
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.header_name = name;
        self
    }
}

impl<S> Layer<S> for WatchTrailersLayer {
    type Service = WatchTrailers<S>;

    fn layer(&self, inner: S) -> WatchTrailers<S> {
        WatchTrailers {
            inner,
            layer: self.clone(),
        }
    }
}

/// Watches the trailers of each response for gRPC `UNAUTHENTICATED` and
/// then refreshes the token the request carried, if it is still current.
/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct WatchTrailers<S> {
    inner: S,
    layer: WatchTrailersLayer,
}

impl<S> WatchTrailers<S> {
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
}

impl<S, B, R> Service<Request<B>> for WatchTrailers<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<WatchTrailersBody<R>>;
    type Error = S::Error;
    type Future = WatchFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let watch = request
            .headers()
            .get(&self.layer.header_name)
            .and_then(|sent| {
                let manager = match &self.layer.tokens {
                    Tokens::One(manager) => manager.clone(),
                    Tokens::PerSession(sessions) => sessions.session_of(request.extensions())?,
                };
                Some(Watch {
                    manager,
                    sent: sent.clone(),
                })
            });
        WatchFuture {
            future: self.inner.call(request),
            watch,
        }
    }
}

/// The token a call carried, and the manager it came from.
struct Watch {
    manager: TokenManager,
    sent: HeaderValue,
}

impl Watch {
    fn unauthenticated(self) {
        // Only the token the call carried is refreshed: if another call has
        // replaced it already (or a refresh is running), nothing to do.
        if let Lookup::Ready(current) = self.manager.lookup()
            && *current.header() == self.sent
        {
            tracing::debug!(
                generation = current.generation(),
                "gRPC UNAUTHENTICATED in trailers; refreshing for the next call"
            );
            // The refresh is spawned: it runs whether or not this waits.
            drop(self.manager.refresh_if(current.generation()));
        }
    }
}

pin_project! {
    /// Response future of [`WatchTrailers`].
    pub struct WatchFuture<F> {
        #[pin]
        future: F,
        watch: Option<Watch>,
    }
}

impl<F> fmt::Debug for WatchFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchFuture")
            .field("watching", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for WatchFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<WatchTrailersBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.future.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result?,
        };
        let watch = this.watch.take();
        Poll::Ready(Ok(response.map(|inner| WatchTrailersBody { inner, watch })))
    }
}

pin_project! {
    /// A response body whose trailers are checked for gRPC
    /// `UNAUTHENTICATED` as they pass.
    pub struct WatchTrailersBody<B> {
        #[pin]
        inner: B,
        watch: Option<Watch>,
    }
}

impl<B> WatchTrailersBody<B> {
    /// Unwraps the body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> fmt::Debug for WatchTrailersBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchTrailersBody")
            .field("watching", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for WatchTrailersBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame {
            let unauthenticated = frame
                .trailers_ref()
                .and_then(|t| t.get(GRPC_STATUS))
                .is_some_and(|status| status.as_bytes().trim_ascii() == UNAUTHENTICATED);
            if unauthenticated && let Some(watch) = this.watch.take() {
                watch.unauthenticated();
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
