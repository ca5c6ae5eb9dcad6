//! Whether and how a request is copied so that it can be replayed once.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::{Frame, SizeHint};
use http_body_util::{Empty, Full};

/// Decides whether a request is copied before it is sent, so that it can be
/// replayed once with a new token if the server rejects the first.
///
/// The copy is made before the inner service consumes the request; `None`
/// means no copy, and then a rejected request's 401 is returned as it is.
///
/// Built in: [`CloneBody`] (the default: copy when the body is a
/// [`ReplayBody`]) and [`NoReplay`]. A closure
/// `Fn(&Request<B>) -> Option<Request<B>>` is a policy too.
///
/// A policy sees the request only, so it cannot read a streaming body;
/// [`BufferBody`], given to the layer's
/// [`buffer`](crate::TokenRefreshLayer::buffer), reads it (up to a limit)
/// before the request is sent.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot copy a `Request<{B}>` for a replay",
    label = "not a replay policy for `Request<{B}>`",
    note = "with `CloneBody` (the default), the body type must implement `ReplayBody`",
    note = "for a body from another crate (tonic, axum, reqwest, hyper's `Incoming`), use `.buffer(BufferBody::new(rebuild))` on the layer: it reads the body into memory (up to 64 KiB by default) and rebuilds `{B}` with `rebuild` (`tonic::body::Body::new`, `axum::body::Body::new`)",
    note = "or use `.replay(NoReplay)`, or a body type that implements `ReplayBody` (`Full`, `Empty`, `Bytes`, `String`, `Vec<u8>`, `Either` of two), or, if `{B}` is your own type, implement `ReplayBody` for it"
)]
pub trait ReplayPolicy<B>: Clone {
    /// A copy of `request` for a replay, or `None`.
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>>;
}

/// Copies requests whose body is a [`ReplayBody`] that can be copied.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneBody;

impl<B: ReplayBody> ReplayPolicy<B> for CloneBody {
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>> {
        let body = request.body().try_clone()?;
        Some(copy_parts(request, body))
    }
}

/// Never copies: every request is sent once and a 401 comes back as it is
/// (the token is still refreshed for the requests that follow).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    fn clone_request(&self, _: &Request<B>) -> Option<Request<B>> {
        None
    }
}

impl<B, F> ReplayPolicy<B> for F
where
    F: Fn(&Request<B>) -> Option<Request<B>> + Clone,
{
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>> {
        self(request)
    }
}

/// Copies a request's method, URI, version, headers and extensions around a
/// new body: the helper for writing a [`ReplayPolicy`].
pub fn copy_parts<B>(request: &Request<B>, body: B) -> Request<B> {
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}

/// A request body that may be copied for a replay.
///
/// In-memory bodies copy (cheaply, for [`Bytes`]-backed ones); streaming
/// bodies return `None`. Implement it for your own body type to opt in.
///
/// # Example
///
/// ```
/// use tower_token_refresh::replay::ReplayBody;
///
/// #[derive(Clone)]
/// struct Json(bytes::Bytes);
///
/// impl ReplayBody for Json {
///     fn try_clone(&self) -> Option<Self> {
///         Some(self.clone())
///     }
/// }
/// ```
///
/// # A body that cannot be copied
///
/// With the default policy, [`CloneBody`], the layer is a `Service` only
/// for requests whose body implements `ReplayBody`. Other bodies do not
/// compile; the compiler's message says "`CloneBody` cannot copy a
/// `Request<Upload>` for a replay" and names the way out:
///
/// ```compile_fail,E0277
/// use tower::{Layer, Service, service_fn};
/// use tower_token_refresh::{TokenManager, TokenRefreshLayer, TokenSet, source};
///
/// struct Upload; // not a ReplayBody
///
/// fn needs_service<S: Service<http::Request<Upload>>>(_: S) {}
///
/// let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
/// let client = TokenRefreshLayer::new(tokens).layer(service_fn(|_: http::Request<Upload>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
/// }));
/// needs_service(client);
/// ```
///
/// [`NoReplay`] takes any body (a rejected request is then returned, not
/// replayed); the same code with `.replay(NoReplay)` compiles:
///
/// ```
/// use tower::{Layer, Service, service_fn};
/// use tower_token_refresh::{NoReplay, TokenManager, TokenRefreshLayer, TokenSet, source};
///
/// struct Upload; // not a ReplayBody
///
/// fn needs_service<S: Service<http::Request<Upload>>>(_: S) {}
///
/// let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
/// let client = TokenRefreshLayer::new(tokens).replay(NoReplay).layer(service_fn(
///     |_: http::Request<Upload>| async { Ok::<_, std::convert::Infallible>(http::Response::new(())) },
/// ));
/// needs_service(client);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be copied for a replay",
    label = "this body type does not implement `ReplayBody`",
    note = "the default replay policy, `CloneBody`, copies a request before it is sent, so that it can be replayed with a new token",
    note = "for a body from another crate (tonic, axum, reqwest, hyper's `Incoming`), use `.buffer(BufferBody::new(rebuild))` on the layer: it reads the body into memory (up to 64 KiB by default) and rebuilds the body type with `rebuild` (`tonic::body::Body::new`, `axum::body::Body::new`)",
    note = "or use `.replay(NoReplay)`, or a body type that implements `ReplayBody` (`Full`, `Empty`, `Bytes`, `String`, `Vec<u8>`, `Either` of two), or, if `{Self}` is your own type, implement `ReplayBody` for it (returning `None` if it streams)"
)]
pub trait ReplayBody {
    /// A copy of the body, or `None` if it cannot be copied.
    fn try_clone(&self) -> Option<Self>
    where
        Self: Sized;
}

macro_rules! replay_by_clone {
    ($($t:ty),* $(,)?) => {
        $(impl ReplayBody for $t {
            fn try_clone(&self) -> Option<Self> {
                Some(self.clone())
            }
        })*
    };
}

replay_by_clone!(Bytes, String, Vec<u8>, (), &'static str, &'static [u8]);

impl<D: Clone> ReplayBody for Full<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayBody for Empty<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(Empty::new())
    }
}

impl<L: ReplayBody, R: ReplayBody> ReplayBody for http_body_util::Either<L, R> {
    fn try_clone(&self) -> Option<Self> {
        match self {
            http_body_util::Either::Left(l) => l.try_clone().map(http_body_util::Either::Left),
            http_body_util::Either::Right(r) => r.try_clone().map(http_body_util::Either::Right),
        }
    }
}

impl<S> ReplayBody for http_body_util::StreamBody<S> {
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

impl<D, E> ReplayBody for http_body_util::combinators::BoxBody<D, E> {
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

impl<D, E> ReplayBody for http_body_util::combinators::UnsyncBoxBody<D, E> {
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

/// The most a [`BufferBody`] policy reads into memory by default: 64 KiB,
/// as linkerd2-proxy buffers for its retries.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;

/// How long a [`BufferBody`] policy waits by default for a request body to
/// end (or pass the limit) before the request fails: 10 seconds.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A replay policy for bodies that cannot be copied: it reads the request
/// body into memory, up to a limit, before the request is sent, so that a
/// rejected request can be replayed. For tonic's `Body`, axum's `Body`,
/// `reqwest::Body`, hyper's `Incoming`: any [`http_body::Body`] with
/// [`Bytes`] data, with no [`ReplayBody`] implementation to write.
///
/// The body read is handed to `rebuild` as a [`Buffered`] body, and
/// `rebuild` turns it back into the type the inner service takes:
/// `tonic::body::Body::new` under a tonic `Channel`, `axum::body::Body::new`
/// for a proxy, or the identity for a client generic over its body
/// (hyper-util's `Client<_, Buffered<B>>`).
///
/// - A body that ends within the limit (default [`DEFAULT_BUFFER_LIMIT`]) is
///   sent from memory and can be replayed once, like a [`CloneBody`] one.
/// - A body that goes past the limit (or says so in its size hint) is sent
///   whole, the part read followed by the rest, and is not replayed: its
///   401 comes back as it is (the token is still refreshed for the
///   requests that follow).
/// - Reading waits for the body. A body that neither ends nor passes the
///   limit within the read timeout (default [`DEFAULT_READ_TIMEOUT`]) fails
///   the request with a [`ReadBodyError`], as does an error from the body.
///   So this policy suits unary calls and uploads, not a client-streaming
///   or bidirectional gRPC call whose request stream waits on the server's
///   answers: mark those with the [`Unbuffered`] extension (sent with the
///   token, not read, not replayed), or send them through a layer with
///   [`NoReplay`].
///
/// Requests that the layer does not authorize (other origins passed
/// through, [`SkipAuth`](crate::SkipAuth)) are not read: their body goes on
/// as it is, wrapped.
///
/// The body type must be `Unpin` (tonic's, axum's, reqwest's and hyper's
/// are); box one that is not (`http_body_util::BodyExt::boxed`).
///
/// Give it to the layer with
/// [`TokenRefreshLayer::buffer`](crate::TokenRefreshLayer::buffer) (not
/// `replay`: a replay policy only sees the request, and this one must read
/// its body first, so the layer becomes a [`BufferLayer`](crate::BufferLayer)).
///
/// # Example
///
/// Under a tonic `Channel` (or any client that takes `tonic::body::Body`),
/// and here under one that takes `axum::body::Body` (a proxy, say):
///
/// ```
/// use axum::body::Body;
/// use tower::{Layer, ServiceExt, service_fn};
/// use tower_token_refresh::{BufferBody, TokenManager, TokenRefreshLayer, TokenSet, source};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// # let tokens = TokenManager::builder(source::from_fn(|_| async { Ok(TokenSet::bearer("t")) })).build();
/// // With tonic: `.buffer(BufferBody::new(tonic::body::Body::new))`.
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
#[derive(Clone, Copy)]
pub struct BufferBody<F> {
    pub(crate) rebuild: F,
    pub(crate) limit: usize,
    pub(crate) read_timeout: Option<Duration>,
}

impl<F> BufferBody<F> {
    /// Reads bodies up to [`DEFAULT_BUFFER_LIMIT`] bytes, within
    /// [`DEFAULT_READ_TIMEOUT`], and rebuilds the inner service's body type
    /// with `rebuild`.
    pub const fn new(rebuild: F) -> Self {
        BufferBody {
            rebuild,
            limit: DEFAULT_BUFFER_LIMIT,
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
        }
    }

    /// Reads at most `bytes` bytes of a body; a longer one is sent without
    /// a copy and not replayed.
    pub const fn limit(mut self, bytes: usize) -> Self {
        self.limit = bytes;
        self
    }

    /// How long to wait for a body to end or pass the limit before failing
    /// the request with a [`ReadBodyError`]; `None`: no limit (a body that
    /// never ends then holds the request forever).
    pub const fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_timeout = timeout;
        self
    }
}

impl<F> fmt::Debug for BufferBody<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferBody")
            .field("limit", &self.limit)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

/// A request extension that tells [`BufferBody`] not to read this
/// request's body: it is sent with the token, as it streams, and not
/// replayed.
///
/// For a call whose request stream stays open while it waits on the
/// server (a client-streaming or bidirectional gRPC call) through a client
/// that buffers the others: reading it would wait for the read timeout.
///
/// # Example
///
/// ```
/// use tower_token_refresh::replay::Unbuffered;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Unbuffered);
/// // With tonic: `tonic::Request::extensions_mut().insert(Unbuffered)`.
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Unbuffered;

/// Reading a request body for [`BufferBody`] failed: the body returned an
/// error, or did not end in time. The request was not sent.
///
/// It reaches the caller as the layer's [`BoxError`](crate::BoxError);
/// `downcast_ref::<ReadBodyError>()` finds it.
#[derive(Debug)]
pub struct ReadBodyError {
    timed_out: bool,
    source: Option<crate::BoxError>,
}

impl ReadBodyError {
    pub(crate) fn timed_out() -> Self {
        ReadBodyError {
            timed_out: true,
            source: None,
        }
    }

    pub(crate) fn body(source: crate::BoxError) -> Self {
        ReadBodyError {
            timed_out: false,
            source: Some(source),
        }
    }

    /// Whether the body did not end (or pass the limit) within the read
    /// timeout.
    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }
}

impl fmt::Display for ReadBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.timed_out {
            f.write_str("timed out reading the request body for a replay copy")
        } else {
            f.write_str("reading the request body for a replay copy failed")
        }
    }
}

impl std::error::Error for ReadBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The body a [`BufferBody`] policy hands to its `rebuild` function: either
/// the whole body from memory, or the part read followed by the rest of the
/// original (a body over the limit, or one the layer did not read).
pub struct Buffered<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Full {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Partial {
        prefix: std::vec::IntoIter<Bytes>,
        /// Bytes left in `prefix`.
        remaining: u64,
        rest: B,
    },
}

impl<B> Buffered<B> {
    pub(crate) fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Buffered {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    pub(crate) fn partial(prefix: Vec<Bytes>, rest: B) -> Self {
        let remaining = prefix.iter().map(|b| b.len() as u64).sum();
        Buffered {
            kind: Kind::Partial {
                prefix: prefix.into_iter(),
                remaining,
                rest,
            },
        }
    }

    /// Whether the body is all in memory (and its request can be replayed).
    pub fn is_full(&self) -> bool {
        matches!(self.kind, Kind::Full { .. })
    }
}

impl<B> fmt::Debug for Buffered<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes are the caller's data: only their size is shown.
        match &self.kind {
            Kind::Full { data, trailers } => f
                .debug_struct("Buffered::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .field("trailers", &trailers.is_some())
                .finish(),
            Kind::Partial { remaining, .. } => f
                .debug_struct("Buffered::Partial")
                .field("prefix_len", remaining)
                .finish_non_exhaustive(),
        }
    }
}

impl<B> http_body::Body for Buffered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Kind::Partial {
                prefix,
                remaining,
                rest,
            } => {
                if let Some(chunk) = prefix.next() {
                    *remaining -= chunk.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Pin::new(rest).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Partial {
                remaining, rest, ..
            } => *remaining == 0 && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Partial {
                remaining, rest, ..
            } => {
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(*remaining));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(*remaining));
                }
                hint
            }
        }
    }
}

impl<B> ReplayBody for Buffered<B> {
    fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Full { data, trailers } => Some(Buffered {
                kind: Kind::Full {
                    data: data.clone(),
                    trailers: trailers.clone(),
                },
            }),
            Kind::Partial { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, header};

    #[derive(Clone, Debug, PartialEq)]
    struct Marker(u32);

    #[test]
    fn clone_body_copies_every_part() {
        let mut req = Request::post("http://127.0.0.1/echo")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
            .unwrap();
        req.extensions_mut().insert(Marker(7));
        let copy = CloneBody.clone_request(&req).unwrap();
        assert_eq!(copy.method(), Method::POST);
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.headers(), req.headers());
        assert_eq!(copy.extensions().get::<Marker>(), Some(&Marker(7)));
    }

    #[test]
    fn streaming_bodies_are_not_copied() {
        type Body = http_body_util::Either<
            Full<Bytes>,
            http_body_util::StreamBody<
                futures_util::stream::Empty<Result<http_body::Frame<Bytes>, std::io::Error>>,
            >,
        >;
        let streaming: Request<Body> = Request::new(http_body_util::Either::Right(
            http_body_util::StreamBody::new(futures_util::stream::empty()),
        ));
        assert!(CloneBody.clone_request(&streaming).is_none());
        let full: Request<Body> = Request::new(http_body_util::Either::Left(Full::default()));
        assert!(CloneBody.clone_request(&full).is_some());
        assert!(NoReplay.clone_request(&Request::new(())).is_none());
    }

    #[tokio::test]
    async fn a_partial_body_sends_the_part_read_then_the_rest() {
        use http_body::Body as _;
        use http_body_util::BodyExt;
        let rest = Full::new(Bytes::from_static(b" and the rest"));
        let body = Buffered::partial(
            vec![Bytes::from_static(b"read"), Bytes::from_static(b" part")],
            rest,
        );
        assert!(!body.is_full());
        assert!(body.try_clone().is_none(), "a partial body is not replayed");
        assert_eq!(body.size_hint().exact(), Some(22));
        assert!(!body.is_end_stream());
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all, "read part and the rest");
    }

    #[tokio::test]
    async fn a_full_body_copies_its_data_and_trailers() {
        use http_body::Body as _;
        use http_body_util::BodyExt;
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "1".parse().unwrap());
        let body =
            Buffered::<Empty<Bytes>>::full(Bytes::from_static(b"data"), Some(trailers.clone()));
        assert_eq!(body.size_hint().exact(), Some(4));
        let copy = body.try_clone().unwrap();
        for body in [body, copy] {
            let collected = body.collect().await.unwrap();
            assert_eq!(collected.trailers(), Some(&trailers));
            assert_eq!(collected.to_bytes(), "data");
        }
        let empty = Buffered::<Empty<Bytes>>::full(Bytes::new(), None);
        assert!(empty.is_end_stream());
        assert!(format!("{empty:?}").contains("len: 0"));
    }
}
