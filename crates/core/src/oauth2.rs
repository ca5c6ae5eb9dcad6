//! OAuth2 token sources (RFC 6749) and the small HTTP client trait they use.
//!
//! Core does not depend on tower: a grant calls its token endpoint through
//! [`HttpClient`], which any async closure implements. The `tower-token-refresh`
//! crate adapts any `tower::Service` (hyper-util's client, say) to it.

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use http::{Request, Response};

use crate::{BoxError, BoxFuture};

mod client_auth;
mod client_credentials;
mod discovery;
mod exchange;
mod introspection;
mod refresh_token;
mod retry_after;
mod revocation;

pub use client_auth::ClientAuth;
pub use client_credentials::ClientCredentialsGrant;
pub use discovery::ProviderMetadata;
pub use exchange::parse_token_response;
pub(crate) use exchange::{Form, error_response, exchange, token_request};
pub use introspection::{Introspection, IntrospectionClient};
pub use refresh_token::RefreshTokenGrant;
pub use revocation::{RevocationClient, TokenTypeHint};

/// Sends one request to a token endpoint and returns the whole response.
///
/// Implementations should limit the size of the body they collect (the
/// tower adapter in `tower-token-refresh` stops at 64 KiB by default).
/// Any async closure `Fn(Request<Bytes>) -> Future<Output = Result<Response<Bytes>, E>>`
/// is an `HttpClient`.
pub trait HttpClient: Send + Sync + 'static {
    /// Sends `request` and collects the response.
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, BoxError>>;
}

impl<F, Fut, E> HttpClient for F
where
    F: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Bytes>, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, BoxError>> {
        let fut = self(request);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

impl<T: HttpClient + ?Sized> HttpClient for Arc<T> {
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, BoxError>> {
        (**self).send(request)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use http::StatusCode;

    use super::*;

    /// A token-endpoint-like response with this status and body; shared by
    /// the tests of the oauth2 modules.
    pub(crate) fn response(status: u16, body: &'static str) -> Response<Bytes> {
        let mut r = Response::new(Bytes::from_static(body.as_bytes()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }
}
