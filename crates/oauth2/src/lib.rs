//! OAuth2 and OpenID Connect for
//! [`tower-token-refresh`](https://docs.rs/tower-token-refresh): the token
//! sources that fetch and renew a session, and the protocol pieces around
//! them.
//!
//! The coordinator, token sets and stores live in
//! [`tower-token-refresh-core`](tower_token_refresh_core), which knows no
//! protocol; this crate speaks OAuth2 (RFC 6749) to authorization servers.
//! The `tower-token-refresh` crate re-exports it as
//! `tower_token_refresh::oauth2`.
//!
//! - Grants that renew a session: [`RefreshTokenGrant`] and
//!   [`ClientCredentialsGrant`]; with feature `jose`, the JWT bearer grant
//!   for service accounts (`JwtBearerGrant`). Each is a
//!   [`TokenSource`].
//! - Logins that start one, with the user: [`AuthorizationCodeLogin`]
//!   (PKCE and a loopback redirect, for CLIs and desktop apps) and
//!   [`DeviceLogin`] (RFC 8628, for devices without a browser), each usable
//!   as the last link of a fallback chain.
//! - Client authentication ([`ClientAuth`]): a secret or, with feature
//!   `jose`, signed assertions (`private_key_jwt`, `client_secret_jwt`).
//! - [`ProviderMetadata`] (RFC 8414, OpenID Connect discovery),
//!   [`IntrospectionClient`] (RFC 7662), [`RevocationClient`] (RFC 7009),
//!   and [`token_response`] (RFC 6749 §5.1 parsing, the `exp` of a JWT).
//! - A server that acts for its callers: [`OnBehalfOf`] exchanges each
//!   caller's access token (RFC 8693) for a token to a downstream API, cached
//!   per caller and [`Downstream`], one exchange in flight per key.
//! - What an MCP client (authorization spec 2025-11-25) needs before and
//!   around a login: [`ProtectedResourceMetadata`] (RFC 9728) to find the
//!   authorization server from a resource's 401, [`ClientRegistration`]
//!   (RFC 7591) and client ID metadata documents
//!   ([`ProviderMetadata::client_id_metadata_document`]) for a client
//!   identity, [`ResourceIndicator`] (RFC 8707) on every request,
//!   [`select_scope`] and [`ScopeStepUp`] for the scope to ask for.
//! - With feature `jose`: `jose` (signing keys and JWTs) and `dpop` (RFC
//!   9449: tokens bound to a key the client proves it holds).
//! - With feature `metrics`: the core crate's
//!   [`metrics`](tower_token_refresh_core::metrics), and token requests
//!   resent with a DPoP nonce counted there.
//!
//! A grant calls its token endpoint through [`HttpClient`], which any async
//! closure implements; the `tower-token-refresh` crate adapts any
//! `tower::Service` (hyper-util's client, say) to it.
//!
//! An `HttpClient` error is a request that may or may not have reached the
//! server. Where it is known that it never left (the connection was
//! refused), the client says so with [`NotSent`]; where the answer's status
//! arrived but its body could not be read, with [`UnreadBody`]: a status is
//! an answer whatever its body. Otherwise the [`RefreshTokenGrant`] reports
//! its failure as [outcome unknown](crate::Error::is_outcome_unknown), since
//! a server that rotates refresh tokens may already have spent the one
//! presented.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use tower_token_refresh_core::{TokenManager, TokenSet};
//! use tower_token_refresh_oauth2::{ClientAuth, RefreshTokenGrant};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Any async closure is an HttpClient; this one plays the token endpoint.
//! let client = |_request: Request<Bytes>| async {
//!     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(
//!         br#"{"access_token":"fresh","token_type":"Bearer","expires_in":3600}"#,
//!     )))
//! };
//! let grant = RefreshTokenGrant::new(
//!     "https://auth.example.com/token".parse()?,
//!     ClientAuth::basic("my-client", "my-secret"),
//!     client,
//! );
//! let tokens = TokenManager::builder(grant)
//!     .initial(TokenSet::bearer("old").with_refresh_token("r1"))
//!     .build();
//! tokens.refresh().await?;
//! assert_eq!(tokens.authorization().await?.header().to_str()?, "Bearer fresh");
//! // The server kept the refresh token: the grant keeps it too.
//! assert_eq!(tokens.current().unwrap().refresh_token().unwrap().secret(), "r1");
//! # Ok(()) }
//! ```

use std::{error::Error as StdError, fmt, future::Future, io, sync::Arc};

use bytes::Bytes;
use http::{Request, Response};

// Core's types under the paths the modules of this crate name them by.
pub(crate) use tower_token_refresh_core::{
    BoxError, BoxFuture, ClientSecret, Error, ErrorKind, TokenManager, TokenSet, TokenSource,
};

mod authorization_code;
#[cfg(feature = "jose")]
mod client_assertion;
mod client_auth;
mod client_credentials;
mod crypto;
mod device;
mod discovery;
#[cfg(feature = "jose")]
pub mod dpop;
mod endpoint;
mod exchange;
mod introspection;
#[cfg(feature = "jose")]
pub mod jose;
#[cfg(feature = "jose")]
mod jwt_bearer;
mod login;
mod loopback;
mod mcp;
pub mod on_behalf_of;
mod params;
mod pkce;
mod redact;
mod refresh_token;
mod registration;
mod resource;
mod resource_metadata;
mod revocation;
mod scope;
pub mod token_exchange;
pub mod token_response;
mod unread;

pub use authorization_code::AuthorizationCodeLogin;
#[cfg(feature = "jose")]
pub use client_assertion::ClientAssertion;
pub use client_auth::ClientAuth;
pub use client_credentials::ClientCredentialsGrant;
pub use device::{DeviceAuthorization, DeviceLogin};
pub use discovery::ProviderMetadata;
pub(crate) use endpoint::Endpoint;
pub use exchange::parse_token_response;
pub(crate) use exchange::{Form, TokenClient, error_response, token_request};
pub use introspection::{Introspection, IntrospectionClient};
#[cfg(feature = "jose")]
pub use jwt_bearer::JwtBearerGrant;
pub use login::{LoginError, LoginHints};
pub use mcp::{ClientIdentity, Identified, McpAuthorization};
pub use on_behalf_of::{Downstream, OnBehalfOf, OnBehalfOfStats};
pub(crate) use params::Params;
pub use pkce::Pkce;
pub(crate) use redact::Redactor;
pub use refresh_token::RefreshTokenGrant;
pub use registration::{ClientRegistration, RegisteredClient};
pub use resource::ResourceIndicator;
pub use resource_metadata::ProtectedResourceMetadata;
pub use revocation::{RevocationClient, TokenTypeHint};
pub use scope::{ScopeStepUp, StepUpDecision, select_scope};
pub use token_exchange::{AssertionGrant, TokenExchangeGrant};
/// OAuth 2.0 `error` codes; defined in core, whose `Error` carries one.
pub use tower_token_refresh_core::ErrorCode;
pub use unread::UnreadBody;
pub(crate) use unread::{answer_of, with_unread};

/// Sends one request to a token endpoint and returns the whole response.
///
/// Implementations should limit the size of the body they collect (the
/// tower adapter in `tower-token-refresh` stops at 64 KiB by default), and
/// fail with [`UnreadBody`] when a body they started to read is too large
/// or cannot be read: the answer's status still counts. An error before the
/// request left is best wrapped in [`NotSent`].
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

/// An [`HttpClient`] error for a request that never left: no byte of it
/// reached the server, so the server cannot have carried it out.
///
/// [`HttpClient::send`] errors are taken to have an unknown outcome (the
/// request may have been received and carried out, its answer lost), and a
/// [`RefreshTokenGrant`] marks its error
/// [`with_outcome_unknown`](crate::Error::with_outcome_unknown): the refresh
/// token it presented may be spent. An implementation that knows better
/// returns `NotSent` (alone, or anywhere in the error's
/// [`source`](StdError::source) chain) for failures that come before the
/// request is written: a refused connection, a failed DNS lookup, a proxy
/// that could not be reached. Errors after that point (a timeout, a reset
/// or closed connection, a body that could not be read) must not be wrapped.
///
/// Without `NotSent`, [`was_not_sent`] still recognises the I/O errors that
/// only a connection attempt gives.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use tower_token_refresh_oauth2::{HttpClient, NotSent, was_not_sent};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // A client that knows its proxy is down before it writes anything.
/// let client = |_req: Request<Bytes>| async {
///     Err::<Response<Bytes>, _>(NotSent::new("proxy unavailable"))
/// };
/// let err = client.send(Request::new(Bytes::new())).await.unwrap_err();
/// assert!(err.is::<NotSent>());
/// assert!(was_not_sent(&*err));
/// # }
/// ```
pub struct NotSent {
    cause: BoxError,
}

impl NotSent {
    /// Wraps the failure that kept the request from being sent.
    pub fn new(cause: impl Into<BoxError>) -> Self {
        NotSent {
            cause: cause.into(),
        }
    }

    /// The failure that kept the request from being sent.
    pub fn into_cause(self) -> BoxError {
        self.cause
    }
}

impl fmt::Debug for NotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NotSent").field(&self.cause).finish()
    }
}

impl fmt::Display for NotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cause is the source, not repeated here.
        f.write_str("request not sent")
    }
}

impl StdError for NotSent {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.cause)
    }
}

/// Whether `error` shows that a request never left: a [`NotSent`] anywhere
/// in its [`source`](StdError::source) chain, or an [`io::Error`] of a kind
/// only a connection attempt gives (`ConnectionRefused`,
/// `HostUnreachable`, `NetworkUnreachable`, `AddrNotAvailable`).
///
/// Best effort, and wrong only in the safe direction: an error it does not
/// recognise (a DNS failure, a connect timeout) counts as a request that may
/// have been carried out. The I/O kinds are what `connect(2)` reports; on an
/// established connection an OS reports an unreachable host, if at all,
/// only once its retransmissions have timed out (minutes), long after any
/// request timeout.
///
/// # Example
///
/// ```
/// use std::io;
/// use tower_token_refresh_oauth2::was_not_sent;
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert!(was_not_sent(&refused));
/// let reset = io::Error::from(io::ErrorKind::ConnectionReset);
/// assert!(!was_not_sent(&reset));
/// ```
pub fn was_not_sent(error: &(dyn StdError + 'static)) -> bool {
    // Chains are short; the bound only guards against a pathological one.
    let mut next = Some(error);
    for _ in 0..32 {
        let Some(error) = next else { break };
        if error.is::<NotSent>() {
            return true;
        }
        next = error.source();
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
            ) {
                return true;
            }
            // An io::Error's `source` skips the error it wraps.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
            }
        }
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn a_refused_connection_deep_in_the_chain_was_not_sent() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
            io::ErrorKind::AddrNotAvailable,
        ] {
            assert!(was_not_sent(&Wrapper(io::Error::from(kind))), "{kind:?}");
        }
    }

    #[test]
    fn not_sent_is_found_inside_an_io_error() {
        let wrapped = io::Error::other(NotSent::new("no route to proxy"));
        assert!(was_not_sent(&wrapped));
        let err: BoxError = Box::new(NotSent::new("refused"));
        assert!(was_not_sent(&*err));
        assert_eq!(err.to_string(), "request not sent");
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("refused")
        );
    }

    #[test]
    fn failures_after_the_request_left_are_not_not_sent() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::TimedOut,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::Other,
        ] {
            assert!(!was_not_sent(&io::Error::from(kind)), "{kind:?}");
        }
        let text: BoxError = "connection refused".into();
        assert!(!was_not_sent(&*text), "text is not parsed");
    }

    /// A token-endpoint-like response with this status and body; shared by
    /// the tests of the oauth2 modules.
    pub(crate) fn response(status: u16, body: &'static str) -> Response<Bytes> {
        let mut r = Response::new(Bytes::from_static(body.as_bytes()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }
}
