//! Calling the token endpoint through a `tower::Service`.
//!
//! Invariants:
//!
//! - Every exchange ends within the timeout: readiness, sending and reading
//!   the whole body are bounded by one deadline.
//! - An error is [`NotSent`] only when the request cannot have left (the
//!   service never took it, or the connection was refused). Anything after
//!   the service took it, a [`TimedOut`] included, is left for the grant to
//!   treat as a request that may have been carried out.
//! - Once the head of the response arrived, the server has answered: a body
//!   that is too large, breaks off or outlasts the timeout is an
//!   [`UnreadBody`] carrying the status and headers, never a bare
//!   transport error.

use std::{
    error::Error as StdError,
    fmt,
    marker::PhantomData,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_token_refresh_core::{BoxError, BoxFuture};
use tower_token_refresh_oauth2::{HttpClient, NotSent, UnreadBody, was_not_sent};

use crate::SkipAuth;

/// The largest token endpoint response body [`ServiceClient`] reads by default.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// How long [`ServiceClient`] waits for a whole exchange by default: 30 s.
///
/// The same as the coordinator's default
/// [attempt timeout](crate::TokenManagerBuilder::attempt_timeout), which
/// bounds every token request the coordinator makes anyway; this bounds the
/// calls nothing else bounds (introspection, revocation, discovery), since
/// hyper-util's client has no timeout of its own. A token request that
/// times out may have been carried out ([`TimedOut`] is an outcome-unknown
/// failure for the refresh grant), so the default waits for a slow endpoint
/// rather than give up early; a healthy one answers in well under a second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The error [`ServiceClient`] returns when an exchange outlasts its
/// [timeout](ServiceClient::timeout).
///
/// Once the service has taken the request, it may have reached the server
/// and been carried out, so a
/// [`RefreshTokenGrant`](crate::oauth2::RefreshTokenGrant) reports the
/// timeout as [outcome unknown](crate::Error::is_outcome_unknown); it is the
/// [`source`](StdError::source) of the grant's [`Error`](crate::Error). A
/// timeout while the service was still not ready comes wrapped in
/// [`NotSent`]; one while the body was read, in [`UnreadBody`] (the status
/// had arrived: the grant reads the answer by it).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_token_refresh::{ServiceClient, TimedOut, oauth2::HttpClient};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // A token endpoint that never answers.
/// let silent = tower::service_fn(|_req: http::Request<http_body_util::Full<bytes::Bytes>>| {
///     std::future::pending::<Result<http::Response<http_body_util::Empty<bytes::Bytes>>, std::io::Error>>()
/// });
/// let client = ServiceClient::new(silent).timeout(Duration::from_secs(2));
/// let err = client.send(http::Request::new(bytes::Bytes::new())).await.unwrap_err();
/// let timed_out = err.downcast_ref::<TimedOut>().unwrap();
/// assert_eq!(timed_out.after(), Duration::from_secs(2));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TimedOut {
    after: Duration,
}

impl TimedOut {
    /// The timeout that elapsed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer from the server within {:?}", self.after)
    }
}

impl StdError for TimedOut {}

/// Adapts any `tower::Service` (hyper-util's client, say) into the
/// [`HttpClient`] that OAuth2 grants call their token endpoint with.
///
/// Each request carries [`SkipAuth`], so the same client may be layered with
/// [`TokenRefreshLayer`](crate::TokenRefreshLayer): the token endpoint call
/// is never intercepted (no deadlock, no loop). Response bodies are read up
/// to a limit ([`DEFAULT_MAX_BODY`] unless set), and the whole exchange
/// (waiting for the service to be ready, sending, reading the body) is
/// bounded by a [timeout](Self::timeout) ([`DEFAULT_TIMEOUT`] unless set).
///
/// # Errors
///
/// The service's error, or the body's; [`TimedOut`] when the timeout
/// elapses. An error that shows the request never left (the service failed
/// before taking it, or the connection was refused) comes wrapped in
/// [`NotSent`], so that a refresh grant knows the refresh token was not
/// spent. A body over the limit, broken off or cut by the timeout comes
/// wrapped in [`UnreadBody`] with the answer's status and headers: an HTTP
/// status is an answer whatever its body, so a 400 or a 503 is read as one
/// (the refresh token was not spent), and only a 2xx leaves the outcome
/// unknown. Every other error may mean the server carried the request out.
///
/// Outside a tokio runtime with its time driver (which the timeout needs,
/// as does the [`TokenManager`](crate::TokenManager) that calls it), `send`
/// fails with a [`NoRuntime`](crate::ErrorKind::NoRuntime) error, wrapped in
/// [`NotSent`](crate::oauth2::NotSent): nothing was sent.
///
/// # The service
///
/// Any `Service` that is `Clone + Send` will do; it need not be `Sync`, so
/// a [`BoxCloneService`](tower::util::BoxCloneService) is fine. Each
/// exchange clones it (hyper-util's client is a handle on one shared
/// connection pool: cloning it is cheap and shares the connections).
///
/// # Where it goes
///
/// Hand `ServiceClient` the HTTP client *without* the token layer, and
/// without any limit (concurrency or rate limit, `Buffer`, load shedding)
/// that the layered stack shares. Put those on the layered stack only:
///
/// ```text
/// token layer's refresh ──> ServiceClient ──> http (a clone)
/// your requests ──> ConcurrencyLimit ──> TokenRefresh ──> http
/// ```
///
/// The layered stack calls the token endpoint *while it holds your
/// request*: a request that meets an expired or rejected token waits for
/// the refresh. With a `ConcurrencyLimit(1)` around the whole layered stack
/// also handed to `ServiceClient`, that request holds the only permit and
/// the refresh waits for it: nothing moves until the [timeout](Self::timeout)
/// fails the refresh (as [`NotSent`]), and the request with it. [`SkipAuth`]
/// keeps the token layer from intercepting its own token request, but it
/// cannot give back a permit that the waiting request holds.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use tower::ServiceBuilder;
/// use tower_token_refresh::{
///     ServiceClient, TokenManager, TokenRefreshLayer,
///     oauth2::{ClientAuth, RefreshTokenGrant},
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let login = tower_token_refresh::TokenSet::bearer("at").with_refresh_token("rt");
/// let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// // The token endpoint: the plain client, not the stack below.
/// let grant = RefreshTokenGrant::new(
///     "http://127.0.0.1:8080/token".parse()?,
///     ClientAuth::basic("id", "secret"),
///     ServiceClient::new(http.clone()),
/// );
/// let tokens = TokenManager::builder(grant).initial(login).build();
/// // Your requests: the limit goes here, around the token layer.
/// let api = ServiceBuilder::new()
///     .concurrency_limit(1)
///     .layer(TokenRefreshLayer::new(tokens).allow_origin("https://api.example.com".parse()?))
///     .service(http);
/// # let _ = api;
/// # Ok(()) }
/// ```
pub struct ServiceClient<S, B = http_body_util::Full<Bytes>> {
    // Behind a mutex only so that `ServiceClient` is `Sync` (as `HttpClient`
    // requires) without asking it of `S`: `BoxCloneService` is not. The lock
    // is held just long enough to clone the service, once per exchange, on
    // the cold token endpoint path; nothing is awaited under it.
    service: Mutex<S>,
    max_body: usize,
    timeout: Duration,
    _body: PhantomData<fn(B)>,
}

impl<S: Clone, B> Clone for ServiceClient<S, B> {
    fn clone(&self) -> Self {
        ServiceClient {
            service: Mutex::new(self.service()),
            max_body: self.max_body,
            timeout: self.timeout,
            _body: PhantomData,
        }
    }
}

impl<S: Clone, B> ServiceClient<S, B> {
    /// A clone of the service, for one exchange.
    fn service(&self) -> S {
        // A poisoned lock only means an earlier clone panicked; the service
        // itself was never left half-changed, since nothing mutates it here.
        self.service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S, B> fmt::Debug for ServiceClient<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceClient")
            .field("max_body", &self.max_body)
            .field("timeout", &self.timeout)
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
            service: Mutex::new(service),
            max_body: DEFAULT_MAX_BODY,
            timeout: DEFAULT_TIMEOUT,
            _body: PhantomData,
        }
    }

    /// Sets the largest response body read, in bytes.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets how long one exchange may take, from waiting for the service to
    /// be ready to the last byte of the body; past it the exchange fails
    /// with [`TimedOut`]. Default [`DEFAULT_TIMEOUT`].
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    /// use tower_token_refresh::ServiceClient;
    ///
    /// let http = Client::builder(TokioExecutor::new())
    ///     .build_http::<http_body_util::Full<bytes::Bytes>>();
    /// let client = ServiceClient::new(http).timeout(Duration::from_secs(5));
    /// # let _ = client;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<S, B, R> HttpClient for ServiceClient<S, B>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: From<Bytes> + Send + 'static,
    R: Body + Send + 'static,
    R::Data: Send,
    R::Error: Into<BoxError>,
{
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, BoxError>> {
        let mut service = self.service();
        let (max, timeout) = (self.max_body, self.timeout);
        Box::pin(async move {
            tower_token_refresh_core::check_runtime().map_err(|e| not_sent(e.into()))?;
            let deadline = Instant::now().checked_add(timeout);
            let mut request = request.map(B::from);
            request.extensions_mut().insert(SkipAuth);
            // Until the service takes the request, nothing can have been sent.
            let ready = match within(deadline, timeout, service.ready()).await {
                Ok(Ok(ready)) => ready,
                Ok(Err(e)) => return Err(not_sent(e.into())),
                Err(elapsed) => return Err(not_sent(elapsed.into())),
            };
            let response = within(deadline, timeout, ready.call(request))
                .await?
                .map_err(|e| {
                    let e = e.into();
                    if was_not_sent(&*e) { not_sent(e) } else { e }
                })?;
            // The head arrived: from here on the server has answered.
            let (head, body) = response.into_parts();
            let body = match within(deadline, timeout, Limited::new(body, max).collect()).await {
                Ok(Ok(body)) => body.to_bytes(),
                Ok(Err(e)) => return Err(Box::new(UnreadBody::new(head, e)) as BoxError),
                Err(elapsed) => return Err(Box::new(UnreadBody::new(head, elapsed))),
            };
            Ok(Response::from_parts(head, body))
        })
    }
}

/// Runs `fut` until `deadline` (`None`: too far ahead to reach).
async fn within<F: Future>(
    deadline: Option<Instant>,
    timeout: Duration,
    fut: F,
) -> Result<F::Output, TimedOut> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, fut)
            .await
            .map_err(|_| TimedOut { after: timeout }),
        None => Ok(fut.await),
    }
}

fn not_sent(e: BoxError) -> BoxError {
    if e.is::<NotSent>() {
        e
    } else {
        Box::new(NotSent::new(e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::{
        future::Ready,
        task::{Context, Poll},
    };

    use http_body_util::Full;

    use super::*;

    /// A service that is never ready (`None`) or fails to become ready.
    #[derive(Clone)]
    struct NotReady(Option<&'static str>);

    impl Service<Request<Full<Bytes>>> for NotReady {
        type Response = Response<Full<Bytes>>;
        type Error = BoxError;
        type Future = Ready<Result<Self::Response, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            match self.0 {
                None => Poll::Pending,
                Some(why) => Poll::Ready(Err(why.into())),
            }
        }

        fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
            std::future::ready(Err("called without being ready".into()))
        }
    }

    #[tokio::test]
    async fn a_service_that_fails_to_get_ready_has_not_sent_the_request() {
        let client = ServiceClient::new(NotReady(Some("pool closed")));
        let err = client.send(Request::new(Bytes::new())).await.unwrap_err();
        let not_sent = err.downcast_ref::<NotSent>().unwrap();
        assert_eq!(not_sent.source().unwrap().to_string(), "pool closed");
    }

    /// A body that fails (`Some`) or never ends (`None`) after the head.
    struct BrokenBody(Option<std::io::ErrorKind>);

    impl Body for BrokenBody {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            match self.0 {
                Some(kind) => Poll::Ready(Some(Err(kind.into()))),
                None => Poll::Pending,
            }
        }
    }

    /// A client whose service answers `status` with `body`.
    fn answering<R>(status: u16, body: impl Fn() -> R + Clone + Send + 'static) -> impl HttpClient
    where
        R: Body<Data = Bytes> + Send + 'static,
        R::Error: Into<BoxError>,
    {
        let service = tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let body = body.clone();
            async move {
                let mut response = Response::new(body());
                *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                Ok::<_, BoxError>(response)
            }
        });
        ServiceClient::new(service).timeout(Duration::from_secs(1))
    }

    /// The [`UnreadBody`] `err` is, with its cause.
    fn unread(err: &BoxError) -> (&UnreadBody, String) {
        let unread = err.downcast_ref::<UnreadBody>().unwrap();
        let cause = unread.source().unwrap().to_string();
        (unread, cause)
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_unread_with_the_status_kept() {
        let client = answering(400, || {
            Full::new(Bytes::from(vec![b'x'; DEFAULT_MAX_BODY + 1]))
        });
        let err = client.send(Request::new(Bytes::new())).await.unwrap_err();
        let (unread, cause) = unread(&err);
        assert_eq!(unread.status(), 400);
        assert!(cause.contains("length limit"), "{cause}");
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_unread_with_the_status_kept() {
        let client = answering(200, || {
            BrokenBody(Some(std::io::ErrorKind::ConnectionReset))
        });
        let err = client.send(Request::new(Bytes::new())).await.unwrap_err();
        assert_eq!(unread(&err).0.status(), 200);
        assert!(!was_not_sent(&*err));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_while_the_body_is_read_is_unread_with_the_status_kept() {
        let client = answering(503, || BrokenBody(None));
        let err = client.send(Request::new(Bytes::new())).await.unwrap_err();
        let (unread, _) = unread(&err);
        assert_eq!(unread.status(), 503);
        assert!(unread.source().unwrap().is::<TimedOut>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_before_the_service_is_ready_has_not_sent_the_request() {
        let client = ServiceClient::new(NotReady(None)).timeout(Duration::from_secs(1));
        let started = Instant::now();
        let err = client.send(Request::new(Bytes::new())).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        let not_sent = err.downcast_ref::<NotSent>().unwrap();
        assert!(not_sent.source().unwrap().is::<TimedOut>());
    }
}
