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
    future::{Future, Ready},
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_token_refresh_core::{BoxError, Error, ErrorCode, metrics};
pub use tower_token_refresh_oauth2::dpop::{
    DPOP, DPOP_NONCE, DpopKey, DpopManagerExt, TokenSetExt,
};

use crate::{
    CloneBody, ReplayPolicy,
    classify::parse_challenges,
    resend::{self, Hook, Resend},
};

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

/// The DPoP layer's [`Hook`] on the resend machine: a nonce challenge is
/// answered by one resend with a new proof that carries the nonce.
pub(crate) struct NonceCheck {
    key: DpopKey,
    /// Where the request goes: a nonce is remembered per origin.
    uri: Uri,
}

impl resend::Wait for NonceCheck {
    type Wait = Ready<Result<(), Error>>;
    type Ready = ();
}

impl Hook for NonceCheck {
    fn check<S, B, R>(
        &mut self,
        answer: &Response<R>,
        copy: &resend::Copy<S, B>,
    ) -> Option<Self::Wait> {
        let fresh = self.key.remember_nonce(&self.uri, answer.headers());
        // With no copy the challenge is returned as it is; its nonce still
        // serves the requests that follow.
        (fresh && copy.is_some() && asks_for_nonce(answer)).then(|| {
            tracing::debug!("resource asked for a DPoP nonce; resending once with it");
            metrics::dpop_nonce_retry(metrics::NonceEndpoint::Resource);
            std::future::ready(Ok(()))
        })
    }

    fn apply<B>(&mut self, (): (), request: &mut Request<B>) -> Result<(), Error> {
        // A new proof, with the nonce just remembered: a proof is never
        // sent twice.
        sign(&self.key, request).map(drop)
    }

    fn last<R>(&mut self, answer: &Response<R>) {
        // A second challenge is returned as it is; its nonce still serves
        // the requests that follow.
        self.key.remember_nonce(&self.uri, answer.headers());
    }
}

impl<S, B, R, P> Service<Request<B>> for Dpop<S, P>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
{
    type Response = Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let inner = match sign(&self.key, &mut request) {
            Ok(true) => {
                // The copy is made before the inner service consumes the
                // request; it goes out through a clone, readied first.
                let copy = self
                    .policy
                    .clone_request(&request)
                    .map(|copy| (self.inner.clone(), copy));
                let hook = NonceCheck {
                    key: self.key.clone(),
                    uri: request.uri().clone(),
                };
                Resend::sent(self.inner.call(request), hook, copy)
            }
            Ok(false) => Resend::pass_through(self.inner.call(request)),
            Err(e) => Resend::failed(e),
        };
        ResponseFuture { inner }
    }
}

pin_project! {
    /// The response future of [`Dpop`].
    pub struct ResponseFuture<S, B, P = CloneBody>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        inner: Resend<S, B, P, NonceCheck>,
    }
}

impl<S, B, P> fmt::Debug for ResponseFuture<S, B, P>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.inner.describe())
            .finish()
    }
}

impl<S, B, R, P> Future for ResponseFuture<S, B, P>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: ReplayPolicy<B>,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
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
