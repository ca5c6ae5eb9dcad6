//! DPoP proofs on the resource path (RFC 9449; feature `jose`).
//!
//! A DPoP-bound access token is worthless without a proof that the sender
//! holds its key: [`DpopLayer`] adds a new `DPoP` proof header to every
//! request whose `Authorization` is `DPoP <token>`, signed with the
//! session's [`DpopKey`], and answers a resource's nonce challenge (a 401
//! with `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a `DPoP-Nonce`
//! header) by sending the request once more, with a new proof that carries
//! the nonce. Requests with any other `Authorization` pass through
//! untouched.
//!
//! # Where it goes
//!
//! Inside [`TokenRefreshLayer`](crate::TokenRefreshLayer), between it and
//! the HTTP client:
//!
//! ```text
//! TokenRefresh   sets Authorization: DPoP <token>; refreshes and replays on a rejected token
//! Dpop           signs each request it sees; answers a nonce challenge once
//! the HTTP client
//! ```
//!
//! Each replay of the outer layer passes through this one again and gets a
//! proof of its own: no proof is ever sent twice. A nonce challenge is
//! answered here and never reaches the outer layer (whose classifier would
//! not count it as a rejected token anyway).
//!
//! A proof names one URL, so with tower-http's `FollowRedirect` put that
//! outside the token layer (place A in the [crate docs](crate)): each hop
//! then passes through both layers and gets a proof for its own URL.
//! Inside, a hop would carry the first request's proof and be refused.
//!
//! The same [`DpopKey`] goes to the grant, the manager
//! ([`DpopManagerExt::dpop`], which saves the key with the tokens and takes
//! a stored set's key back) and this layer; the tokens then come back as
//! `DPoP` tokens and go out as `DPoP <token>`. [`DpopKey`] and the two
//! extension traits are the `tower-token-refresh-oauth2` crate's.
//! This layer reads the `Authorization` header only: with the token layer's
//! [`header_name`](crate::TokenRefreshLayer::header_name) set to another
//! header, requests pass through unsigned.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_token_refresh::{TokenManager, TokenRefreshLayer, TokenSet, dpop::{DpopKey, DpopLayer, DpopManagerExt as _}, source};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let dpop = DpopKey::generate()?;
//! // The grant gets the key too: `RefreshTokenGrant::new(..).dpop(dpop.clone())`.
//! # let source = source::from_fn(|_| async {
//! #     Ok(TokenSet::bearer("abc").with_token_type("DPoP").with_expires_in(Duration::from_secs(3600)))
//! # });
//! let tokens = TokenManager::builder(source).dpop(dpop.clone()).build();
//!
//! let client = ServiceBuilder::new()
//!     .layer(TokenRefreshLayer::new(tokens).allow_origin("https://api.example.com".parse()?))
//!     .layer(DpopLayer::new(dpop))
//!     .service(service_fn(|req: http::Request<Full<Bytes>>| async move {
//!         assert_eq!(req.headers()["authorization"], "DPoP abc");
//!         assert!(req.headers().contains_key("dpop"));
//!         Ok::<_, std::convert::Infallible>(http::Response::new(()))
//!     }));
//! let request = http::Request::get("https://api.example.com/orders").body(Full::default())?;
//! client.oneshot(request).await?;
//! # Ok(()) }
//! ```

use std::{
    fmt,
    future::Future,
    mem,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_token_refresh_core::{BoxError, Error, ErrorCode};
pub use tower_token_refresh_oauth2::dpop::{
    DPOP, DPOP_NONCE, DpopKey, DpopManagerExt, TokenSetExt,
};

use crate::{CloneBody, ReplayPolicy, classify::parse_challenges};

/// Wraps services in [`Dpop`]: a DPoP proof on every request that carries a
/// `DPoP` token. See the [module docs](self) for where it goes.
#[derive(Clone, Debug)]
pub struct DpopLayer<P = CloneBody> {
    key: DpopKey,
    policy: P,
}

impl DpopLayer {
    /// Signs with `key`: the [`DpopKey`] the grant and the manager have.
    pub fn new(key: DpopKey) -> Self {
        DpopLayer {
            key,
            policy: CloneBody,
        }
    }
}

impl<P> DpopLayer<P> {
    /// How a request is copied for the one resend a nonce challenge asks
    /// for. Default [`CloneBody`]; with [`NoReplay`](crate::NoReplay) a
    /// challenge is returned as it is (the next request carries the nonce).
    pub fn replay<P2>(self, policy: P2) -> DpopLayer<P2> {
        DpopLayer {
            key: self.key,
            policy,
        }
    }
}

impl<S, P: Clone> Layer<S> for DpopLayer<P> {
    type Service = Dpop<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Dpop {
            inner,
            key: self.key.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// Adds a `DPoP` proof to each request whose `Authorization` is
/// `DPoP <token>`, and resends it once when the server asks for a nonce.
/// Built by [`DpopLayer`].
///
/// # Errors
///
/// The inner service's error, boxed; or a
/// [`tower_token_refresh_core::Error`] of kind
/// [`Policy`](crate::ErrorKind::Policy) when the request's URI is not an
/// absolute `http(s)` URI (a proof names it), or
/// [`Transient`](crate::ErrorKind::Transient) when no random numbers could
/// be had.
#[derive(Clone)]
pub struct Dpop<S, P = CloneBody> {
    inner: S,
    key: DpopKey,
    policy: P,
}

impl<S, P> Dpop<S, P> {
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

impl<S, P> fmt::Debug for Dpop<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dpop")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The access token of a `DPoP <token>` credential.
fn dpop_token(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("dpop").then(|| token.trim())
}

/// Signs `request` for its `DPoP` credential, replacing any proof it had.
/// `Ok(false)`: it carries no `DPoP` credential.
fn sign<B>(key: &DpopKey, request: &mut Request<B>) -> Result<bool, Error> {
    let Some(token) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(dpop_token)
    else {
        return Ok(false);
    };
    let proof = key.proof(request.method(), request.uri(), Some(token))?;
    request.headers_mut().insert(DPOP, proof);
    Ok(true)
}

/// A 401 whose `DPoP` challenge says `use_dpop_nonce` (RFC 9449 §9).
fn asks_for_nonce<R>(response: &Response<R>) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        && response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .any(|value| {
                let text = String::from_utf8_lossy(value.as_bytes());
                parse_challenges(&text).iter().any(|c| {
                    c.scheme.eq_ignore_ascii_case("dpop")
                        && c.error() == Some(ErrorCode::UseDpopNonce)
                })
            })
}

impl<S, B, R, P> Service<Request<B>> for Dpop<S, P>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match sign(&self.key, &mut request) {
            Ok(true) => {}
            Ok(false) => {
                return ResponseFuture {
                    state: State::PassThrough {
                        future: self.inner.call(request),
                    },
                };
            }
            Err(e) => {
                return ResponseFuture {
                    state: State::Failed { error: Some(e) },
                };
            }
        }
        // The copy is made before the inner service consumes the request;
        // it goes out through a clone, readied first.
        let resend = self
            .policy
            .clone_request(&request)
            .map(|copy| (self.inner.clone(), copy));
        let uri = request.uri().clone();
        ResponseFuture {
            state: State::First {
                future: self.inner.call(request),
                resend,
                key: self.key.clone(),
                uri,
            },
        }
    }
}

pin_project! {
    /// The response future of [`Dpop`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        PassThrough {
            #[pin]
            future: S::Future,
        },
        Failed {
            error: Option<Error>,
        },
        First {
            #[pin]
            future: S::Future,
            resend: Option<(S, Request<B>)>,
            key: DpopKey,
            uri: Uri,
        },
        Readying {
            service: S,
            request: Option<Request<B>>,
            key: DpopKey,
            uri: Uri,
        },
        Resent {
            #[pin]
            future: S::Future,
            key: DpopKey,
            uri: Uri,
        },
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, R> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::PassThrough { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| Error::transient("DPoP future polled after completion"));
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::First {
                    future,
                    resend,
                    key,
                    uri,
                } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let nonce = key.remember_nonce(uri, response.headers());
                    if !(nonce && asks_for_nonce(&response)) {
                        return Poll::Ready(Ok(response));
                    }
                    let Some((service, mut request)) = resend.take() else {
                        return Poll::Ready(Ok(response));
                    };
                    // A new proof, with the nonce just remembered: a proof
                    // is never sent twice.
                    if let Err(e) = sign(key, &mut request) {
                        return Poll::Ready(Err(e.into()));
                    }
                    tracing::debug!("resource asked for a DPoP nonce; resending once with it");
                    let key = key.clone();
                    let uri = mem::replace(uri, Uri::from_static("/"));
                    this.state.set(State::Readying {
                        service,
                        request: Some(request),
                        key,
                        uri,
                    });
                }
                StateProj::Readying {
                    service,
                    request,
                    key,
                    uri,
                } => {
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let Some(request) = request.take() else {
                        return Poll::Ready(Err(Error::transient(
                            "DPoP future polled after completion",
                        )
                        .into()));
                    };
                    let future = service.call(request);
                    let key = key.clone();
                    let uri = mem::replace(uri, Uri::from_static("/"));
                    this.state.set(State::Resent { future, key, uri });
                }
                StateProj::Resent { future, key, uri } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    // A second challenge is returned as it is; its nonce
                    // still serves the requests that follow.
                    key.remember_nonce(uri, response.headers());
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dpop_credential_is_signed() {
        assert_eq!(
            dpop_token(&HeaderValue::from_static("DPoP abc")),
            Some("abc")
        );
        assert_eq!(
            dpop_token(&HeaderValue::from_static("dpop abc")),
            Some("abc")
        );
        assert_eq!(dpop_token(&HeaderValue::from_static("Bearer abc")), None);
        assert_eq!(dpop_token(&HeaderValue::from_static("DPoPabc")), None);
    }

    #[test]
    fn a_nonce_challenge_is_a_401_with_a_dpop_use_dpop_nonce_challenge() {
        let response = |status: u16, challenge: &'static str| {
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            r
        };
        assert!(asks_for_nonce(&response(
            401,
            r#"Bearer realm="x", DPoP error="use_dpop_nonce", algs="ES256""#
        )));
        assert!(!asks_for_nonce(&response(
            401,
            r#"DPoP error="invalid_token""#
        )));
        assert!(!asks_for_nonce(&response(
            400,
            r#"DPoP error="use_dpop_nonce""#
        )));
        assert!(!asks_for_nonce(&response(
            401,
            r#"Bearer error="use_dpop_nonce""#
        )));
    }
}
