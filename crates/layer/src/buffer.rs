//! The layer with [`BufferBody`]: request bodies read into memory (up to a
//! limit) before they are sent, so that any body can be replayed.
//!
//! Built by [`TokenRefreshLayer::buffer`](crate::TokenRefreshLayer::buffer).
//! The service reads the body into a [`Buffered`] body, then hands the
//! request to a [`TokenRefresh`] with the [`CloneBody`] policy, which
//! copies the body when it was read whole; the inner service gets the body
//! back in its own type through the policy's `rebuild` function
//! ([`Rebuild`]).
//!
//! # Example: a tonic client
//!
//! tonic's request body is a stream: with the default policy the layer
//! does not compile over it, and with [`NoReplay`](crate::NoReplay) a call
//! rejected with `UNAUTHENTICATED` is not replayed. With [`BufferBody`]
//! unary calls (and server-streaming ones, whose request is one message)
//! are replayed; add the [trailers watcher](crate::trailers) for servers
//! that reject a token in the trailers.
//!
//! ```
//! use tonic::{body::Body, client::Grpc, transport::Channel};
//! use tower::ServiceBuilder;
//! use tower_token_refresh::{BufferBody, RejectedToken, TokenManager, TokenRefreshLayer, TokenSet, source};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
//! let channel = Channel::from_static("https://grpc.example.com").connect_lazy();
//! let auth = TokenRefreshLayer::new(tokens)
//!     // tonic's URIs are `/package.Service/Method`: say where the channel goes.
//!     .connection_origin("https://grpc.example.com".parse()?)
//!     .classify(RejectedToken.also_grpc());
//! let watch = auth.watch_trailers();
//! let client = Grpc::new(
//!     ServiceBuilder::new()
//!         .layer(auth.buffer(BufferBody::new(Body::new)))
//!         .layer(watch)
//!         .service(channel),
//! );
//! # fn is_grpc<T: tonic::client::GrpcService<Body>>(_: &Grpc<T>) {}
//! # is_grpc(&client);
//! # Ok(()) }
//! ```

use std::{
    fmt,
    future::Future,
    mem,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::ready;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_token_refresh_core::{BoxError, TokenManager};

use crate::{
    BufferBody, Classify, CloneBody, RejectedToken, TokenRefresh, TokenRefreshLayer,
    future::ResponseFuture,
    origin::Decision,
    replay::{Buffered, ReadBodyError, Unbuffered},
};

/// Wraps services in [`BufferedTokenRefresh`]: a [`TokenRefreshLayer`]
/// whose requests' bodies are read into memory first.
///
/// Built by [`TokenRefreshLayer::buffer`]; see [`BufferBody`].
#[derive(Clone, Debug)]
pub struct BufferLayer<F, C = RejectedToken> {
    auth: TokenRefreshLayer<CloneBody, C>,
    policy: BufferBody<F>,
}

impl<F, C> BufferLayer<F, C> {
    pub(crate) fn new(auth: TokenRefreshLayer<CloneBody, C>, policy: BufferBody<F>) -> Self {
        BufferLayer { auth, policy }
    }

    /// The manager whose tokens this layer sends; `None` over
    /// [`Sessions`](crate::Sessions).
    pub fn manager(&self) -> Option<&TokenManager> {
        self.auth.manager()
    }

    /// The layer to put inside this one to act on gRPC `UNAUTHENTICATED`
    /// in trailers: see
    /// [`TokenRefreshLayer::watch_trailers`](crate::TokenRefreshLayer::watch_trailers).
    pub fn watch_trailers(&self) -> crate::trailers::WatchTrailersLayer {
        self.auth.watch_trailers()
    }
}

impl<S, F: Clone, C: Clone> Layer<S> for BufferLayer<F, C> {
    type Service = BufferedTokenRefresh<S, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferedTokenRefresh {
            auth: self.auth.layer(Rebuild {
                inner,
                rebuild: self.policy.rebuild.clone(),
            }),
            limit: self.policy.limit,
            read_timeout: self.policy.read_timeout,
        }
    }
}

/// The service between [`BufferedTokenRefresh`]'s token layer and the
/// inner service: turns the [`Buffered`] body back into the inner
/// service's body type with the policy's `rebuild` function.
#[derive(Clone)]
pub struct Rebuild<S, F> {
    inner: S,
    rebuild: F,
}

impl<S, F> fmt::Debug for Rebuild<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rebuild").finish_non_exhaustive()
    }
}

impl<S, B, B2, F> Service<Request<Buffered<B>>> for Rebuild<S, F>
where
    S: Service<Request<B2>>,
    F: Fn(Buffered<B>) -> B2,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Buffered<B>>) -> S::Future {
        self.inner.call(request.map(&self.rebuild))
    }
}

/// [`TokenRefresh`] for bodies that cannot be copied: reads each body into
/// memory (up to the [`BufferBody`] limit) before the token goes on, so
/// that a rejected request can be replayed.
///
/// # Errors
///
/// As [`TokenRefresh`], and a [`ReadBodyError`] when the body failed or did
/// not end within the read timeout (the request was not sent).
pub struct BufferedTokenRefresh<S, F, C = RejectedToken> {
    auth: TokenRefresh<Rebuild<S, F>, CloneBody, C>,
    limit: usize,
    read_timeout: Option<std::time::Duration>,
}

impl<S, F, C> BufferedTokenRefresh<S, F, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.auth.get_ref().inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.auth.get_mut().inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.auth.into_inner().inner
    }

    /// The manager whose tokens this service sends; `None` over
    /// [`Sessions`](crate::Sessions).
    pub fn manager(&self) -> Option<&TokenManager> {
        self.auth.manager()
    }
}

impl<S: Clone, F: Clone, C: Clone> Clone for BufferedTokenRefresh<S, F, C> {
    fn clone(&self) -> Self {
        BufferedTokenRefresh {
            auth: self.auth.clone(),
            limit: self.limit,
            read_timeout: self.read_timeout,
        }
    }
}

impl<S, F, C> fmt::Debug for BufferedTokenRefresh<S, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferedTokenRefresh")
            .field("auth", &self.auth)
            .field("limit", &self.limit)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

impl<S, B, B2, R, F, C> Service<Request<B>> for BufferedTokenRefresh<S, F, C>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    F: Fn(Buffered<B>) -> B2 + Clone,
    S: Service<Request<B2>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = BufferFuture<S, B, F, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.auth.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let authorize = matches!(
            self.auth.shared().origins.decide(&request),
            Decision::Authorize
        );
        let (parts, body) = request.into_parts();
        let limit = self.limit as u64;
        if !authorize
            || body.size_hint().lower() > limit
            || parts.extensions.get::<Unbuffered>().is_some()
        {
            // Not for the token (the token layer passes it on or refuses
            // it), longer than the limit, or a stream the caller keeps
            // open: not read, not replayed.
            let request = Request::from_parts(parts, Buffered::partial(Vec::new(), body));
            return BufferFuture::sending(self.auth.call(request));
        }
        if body.is_end_stream() {
            let request = Request::from_parts(parts, Buffered::full(Bytes::new(), None));
            return BufferFuture::sending(self.auth.call(request));
        }
        // The request is sent later, from the future, through the service
        // that `poll_ready` readied (see tower-service's docs on `call`).
        let clone = self.auth.clone();
        let service = mem::replace(&mut self.auth, clone);
        let deadline = self.read_timeout.map(tokio::time::sleep);
        BufferFuture {
            state: State::Reading {
                read: Some(Box::new(Read {
                    service,
                    parts,
                    body,
                    chunks: Vec::new(),
                    len: 0,
                    limit: self.limit,
                    trailers: None,
                })),
                deadline,
            },
        }
    }
}

pin_project! {
    /// Response future of [`BufferedTokenRefresh`]: reads the request body,
    /// then sends the request as [`ResponseFuture`] does.
    pub struct BufferFuture<S, B, F, C>
    where
        Rebuild<S, F>: Service<Request<Buffered<B>>>,
    {
        #[pin]
        state: State<S, B, F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F, C>
    where
        Rebuild<S, F>: Service<Request<Buffered<B>>>,
    {
        Reading {
            read: Option<Box<Read<S, B, F, C>>>,
            // Beside the box, pinned in place: no allocation of its own.
            #[pin]
            deadline: Option<tokio::time::Sleep>,
        },
        Sending { #[pin] future: ResponseFuture<Rebuild<S, F>, Buffered<B>, CloneBody, C> },
    }
}

/// A request whose body is being read, and the service (readied) that
/// will send it.
struct Read<S, B, F, C> {
    service: TokenRefresh<Rebuild<S, F>, CloneBody, C>,
    parts: http::request::Parts,
    body: B,
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
    trailers: Option<HeaderMap>,
}

/// Frames read in one poll before yielding, so that a body that is always
/// ready (with empty frames, say) cannot hold the thread.
const FRAMES_PER_POLL: usize = 64;

impl<S, B, F, C> BufferFuture<S, B, F, C>
where
    Rebuild<S, F>: Service<Request<Buffered<B>>>,
{
    fn sending(future: ResponseFuture<Rebuild<S, F>, Buffered<B>, CloneBody, C>) -> Self {
        BufferFuture {
            state: State::Sending { future },
        }
    }
}

impl<S, B, F, C> Read<S, B, F, C>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Reads until the body ends (`Ok(true)`) or passes the limit
    /// (`Ok(false)`), or `deadline` passes.
    fn poll_read(
        &mut self,
        deadline: Pin<&mut Option<tokio::time::Sleep>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, ReadBodyError>> {
        for _ in 0..FRAMES_PER_POLL {
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Err(ReadBodyError::body(error.into())));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(true)),
                Poll::Pending => {
                    if let Some(deadline) = deadline.as_pin_mut()
                        && deadline.poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(ReadBodyError::timed_out()));
                    }
                    return Poll::Pending;
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    self.len = self.len.saturating_add(data.len());
                    if !data.is_empty() {
                        self.chunks.push(data);
                    }
                    if self.len > self.limit {
                        return Poll::Ready(Ok(false));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.trailers = Some(trailers);
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The chunks read, as one buffer (copied only if there are several).
fn concat(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut all = bytes::BytesMut::with_capacity(len);
    for chunk in chunks {
        all.extend_from_slice(&chunk);
    }
    all.freeze()
}

impl<S, B, F, C> fmt::Debug for BufferFuture<S, B, F, C>
where
    Rebuild<S, F>: Service<Request<Buffered<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("BufferFuture");
        match &self.state {
            State::Reading { read, .. } => out
                .field("state", &"reading body")
                .field("read", &read.as_ref().map_or(0, |r| r.len)),
            State::Sending { future } => out.field("state", &"sending").field("future", future),
        };
        out.finish()
    }
}

impl<S, B, B2, R, F, C> Future for BufferFuture<S, B, F, C>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    F: Fn(Buffered<B>) -> B2 + Clone,
    S: Service<Request<B2>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (read, deadline) = match self.as_mut().project().state.project() {
            StateProj::Sending { future } => return future.poll(cx),
            StateProj::Reading { read, deadline } => (read, deadline),
        };
        let Some(reading) = read.as_mut() else {
            return Poll::Ready(Err(
                "tower-token-refresh: response future polled after completion".into(),
            ));
        };
        let whole = match ready!(reading.poll_read(deadline, cx)) {
            Ok(whole) => whole,
            Err(error) => {
                *read = None;
                return Poll::Ready(Err(error.into()));
            }
        };
        let Some(reading) = read.take() else {
            return Poll::Ready(Err(
                "tower-token-refresh: response future polled after completion".into(),
            ));
        };
        let Read {
            mut service,
            parts,
            body,
            chunks,
            len,
            trailers,
            ..
        } = *reading;
        let body = if whole {
            Buffered::full(concat(chunks, len), trailers)
        } else {
            tracing::debug!(
                read = len,
                "request body over the replay buffer limit; sent without a copy"
            );
            Buffered::partial(chunks, body)
        };
        // `service` is the one `poll_ready` readied before `call`.
        let future = service.call(Request::from_parts(parts, body));
        self.set(BufferFuture::sending(future));
        self.poll(cx)
    }
}
