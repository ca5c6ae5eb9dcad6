//! Tower middleware that keeps outbound HTTP requests authorized.
//!
//! [`TokenRefreshLayer`] wraps any `tower::Service<http::Request<B>>`
//! (hyper-util's client, say). On each request it:
//!
//! 1. checks the request against its [origin policy](origin): the token
//!    goes only to origins you allowed
//!    ([`allow_origin`](TokenRefreshLayer::allow_origin); none by default),
//!    over TLS or to loopback. A request to another origin fails with an
//!    [`ErrorKind::Policy`] error (or, if you ask, goes on without the
//!    token); one carrying [`SkipAuth`] goes on untouched;
//! 2. reads the current credential (from the service's [`LookupCache`](manager::LookupCache): one
//!    flag load while the credential it sent last stays fresh) and attaches
//!    the prebuilt, sensitive header value. Inside the refresh-ahead window it
//!    still does so while one background refresh runs; past expiry it waits
//!    for the refresh that every concurrent caller shares;
//! 3. copies the request for a replay when the [`ReplayPolicy`] can (a
//!    body from another crate, tonic's or axum's, is read into memory
//!    first with [`BufferBody`]: see the [`buffer`] module for gRPC);
//! 4. on a response that rejects the token ([`Classify`]; by default a 401
//!    whose `Bearer` challenge, if any, says `invalid_token`) refreshes —
//!    unless a newer token is already current — and replays the copy once.
//!    A second rejection is returned as it is.
//!
//! The coordinator behind it, [`TokenManager`], lives in
//! `tower-token-refresh-core` and is re-exported here.
//!
//! A server that acts for many users (a backend-for-frontend, a
//! multi-tenant worker) builds the layer over [`Sessions`] instead
//! ([`TokenRefreshLayer::sessions`]): each request names its session with
//! a [`SessionKey`] extension and carries that session's token only; a
//! request that names none is refused.
//!
//! # Example
//!
//! A hyper-util client calling an API whose tokens come from an OAuth2
//! `refresh_token` grant:
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_token_refresh::{
//!     ServiceClient, TokenManager, TokenRefreshLayer, TokenSet,
//!     oauth2::{ClientAuth, RefreshTokenGrant},
//! };
//!
//! # async fn run(login: TokenSet) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let grant = RefreshTokenGrant::new(
//!     "https://auth.example.com/token".parse()?,
//!     ClientAuth::basic("my-client", "my-secret"),
//!     ServiceClient::new(http.clone()),
//! );
//! let tokens = TokenManager::builder(grant)
//!     .initial(login)
//!     .on_session_expired(|| eprintln!("session over: log in again"))
//!     .build();
//! let client = ServiceBuilder::new()
//!     .layer(TokenRefreshLayer::new(tokens.clone()).allow_origin("https://api.example.com".parse()?))
//!     .service(http);
//!
//! let request = http::Request::get("https://api.example.com/products").body(Full::default())?;
//! match client.oneshot(request).await {
//!     Ok(response) => println!("{}", response.status()),
//!     Err(e) => match e.downcast_ref::<tower_token_refresh::Error>() {
//!         Some(e) if e.is_session_expired() => println!("please log in"),
//!         _ => println!("request failed: {e}"),
//!     },
//! }
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! The service's error type is [`BoxError`]: the inner service's error, or
//! an [`Error`] (downcast it) whose [`kind`](Error::kind) tells a
//! session that expired from a refresh that failed for now or a request that
//! policy refused.
//!
//! A 401 or 403 that a new token cannot answer (a resource asking for a
//! stronger login, RFC 9470, or more scope) comes back as a response; read
//! what it asks with [`StepUp::from_response`] and start a login with its
//! hints (see the [`step_up`] module).
//!
//! # Where to put the layer
//!
//! Relative to other middleware, from the outside in (`ServiceBuilder`
//! order), with tower-http's `FollowRedirect` in one of two places:
//!
//! ```text
//! Retry(ServerErrorRetry)    outside: each retry passes the token layer again
//! [FollowRedirect]           A: every hop passes the token layer's origin policy
//! TokenRefresh               this crate
//! [FollowRedirect]           B: only the first request passes the token layer
//! the HTTP client
//! ```
//!
//! - **Retries of server errors go outside.** A retry then passes through
//!   the token layer again and carries the token current at that moment
//!   (see [`retry`]). Inside, it would resend the first attempt's header.
//! - **A: the layer inside tower-http's `FollowRedirect`:** the
//!   layer sees every hop as a request of its own, and its origin policy
//!   decides for each: a hop to an origin you did not allow fails with an
//!   [`ErrorKind::Policy`] error, or, with
//!   [`pass_through_other_origins`](TokenRefreshLayer::pass_through_other_origins),
//!   goes without the token. (With
//!   [`any_origin`](TokenRefreshLayer::any_origin) every hop would get it.)
//! - **B: the layer outside `FollowRedirect`:** the token goes on the first
//!   request only, and `FollowRedirect` copies that request's headers to
//!   each hop. tower-http's own policy strips only `Authorization`,
//!   `Cookie` and `Proxy-Authorization` on a cross-origin hop, so give
//!   `FollowRedirect` the layer's `redirect_policy()` (feature
//!   `follow-redirect`), which strips the layer's
//!   [`header_name`](TokenRefreshLayer::header_name) too (see the
//!   `redirect` module). The final response may then come from that other
//!   origin; with the `follow-redirect` feature the layer reads the
//!   `RequestUri` that tower-http puts on the response, and a 401 from an
//!   origin the request was not sent to is returned as it is, not taken for
//!   a rejection of our token (no refresh, no replay). Without the feature,
//!   a 401 at the end of a redirect chain is taken for the first origin's:
//!   prefer A, or enable the feature for B.
//!
//! # Other bodies, gRPC, DPoP and step-up
//!
//! - A body that cannot be copied (tonic's, axum's, reqwest's) is read into
//!   memory up to a limit by [`TokenRefreshLayer::buffer`] with a
//!   [`BufferBody`], so that its request can still be replayed once.
//! - gRPC: [`RejectedToken::also_grpc`] counts a trailers-only
//!   `UNAUTHENTICATED`; [`WatchTrailersLayer`]
//!   ([`TokenRefreshLayer::watch_trailers`]) refreshes after one in real
//!   trailers, for the next call.
//! - DPoP (feature `jose`): the `dpop` module's `DpopLayer` goes inside this
//!   layer and signs every request and replay.
//! - A 401/403 that asks for a stronger login or a wider scope passes
//!   through; [`StepUp::from_response`] reads what it asks for.
//! - reqwest: the `tower-token-refresh-reqwest` crate.
//!
//! # Features
//!
//! - `jose`: signing keys and JWTs, and DPoP (RFC 9449): the `dpop`
//!   module's `DpopLayer`, which signs each request that carries a `DPoP`
//!   token.
//! - `follow-redirect` (off by default: it brings tower-http, and through
//!   it `url` and `idna`, into every build): the `redirect` module's
//!   `FollowRedirect` policy, and tower-http's `RequestUri` response
//!   extension read, as above.
//! - `metrics`: counters, gauges and histograms through the `metrics`
//!   facade (refreshes, their latency, coalesced waiters, replays, ended
//!   sessions by cause, DPoP nonce resends...), listed in the [`metrics`]
//!   module. The application installs the recorder.

pub mod buffer;
pub mod classify;
mod client;
#[cfg(feature = "jose")]
pub mod dpop;
pub mod future;
mod layer;
pub mod origin;
#[cfg(feature = "follow-redirect")]
pub mod redirect;
pub mod replay;
mod resend;
pub mod retry;
mod service;
pub mod step_up;
pub mod trailers;

pub use buffer::{BufferLayer, BufferedTokenRefresh};
pub use classify::{Classify, RejectedToken, RejectedTokenWith};
pub use client::{DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, ServiceClient, TimedOut};
pub use layer::TokenRefreshLayer;
pub use origin::{InvalidOrigin, Origin, SkipAuth};
pub use replay::{
    BufferBody, Buffered, CloneBody, NoReplay, ReadBodyError, ReplayBody, ReplayPolicy,
};
pub use service::TokenRefresh;
pub use step_up::StepUp;
#[cfg(feature = "xchacha20poly1305")]
pub use tower_token_refresh_core::XChaCha20Poly1305Sealer;
pub use tower_token_refresh_core::metrics;
pub use tower_token_refresh_core::{
    AccessToken, Authorization, BoxError, ClientSecret, Error, ErrorKind, FileStore, MemoryStore,
    RefreshToken, Rotation, Scheme, Sealer, SessionKey, Sessions, SessionsBuilder, SessionsStats,
    Stats, TokenManager, TokenManagerBuilder, TokenSet, TokenSource, TokenStore, check_runtime,
    source,
};
/// OAuth2 and OpenID Connect: the `tower-token-refresh-oauth2` crate.
pub use tower_token_refresh_oauth2 as oauth2;
#[cfg(feature = "jose")]
pub use tower_token_refresh_oauth2::jose;
pub use trailers::WatchTrailersLayer;

// The README's example, compiled as a doc test (`cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// The coordinator's lower-level types, for code that drives a
/// [`TokenManager`] without the layer (another client, a benchmark): the
/// non-blocking lookup and its per-client cache, and the shared refresh.
pub mod manager {
    pub use tower_token_refresh_core::{Lookup, LookupCache, RefreshFuture};
}

/// What a [`TokenStore`] shared by several processes implements: the
/// refresh turn and the lease on the shared lock (see the Redis store).
pub mod store {
    pub use tower_token_refresh_core::{RefreshLease, RefreshTurn};
}
