//! Whether and how a request is copied so that it can be replayed once.

use bytes::Bytes;
use http::Request;
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
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot copy a `Request<{B}>` for a replay",
    label = "not a replay policy for `Request<{B}>`",
    note = "with `CloneBody` (the default), the body type must implement `ReplayBody`",
    note = "use `.replay(NoReplay)` on the layer, or a body type that implements `ReplayBody` (`Full`, `Empty`, `Bytes`, `String`, `Vec<u8>`, `Either` of two), or implement `ReplayBody` for `{B}`"
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
    note = "use `.replay(NoReplay)` on the layer, or a body type that implements `ReplayBody` (`Full`, `Empty`, `Bytes`, `String`, `Vec<u8>`, `Either` of two), or implement `ReplayBody` for `{Self}` (returning `None` if it streams)"
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
}
