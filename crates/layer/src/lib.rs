//! Tower middleware that keeps outbound HTTP requests authorized.
//!
//! [`TokenRefreshLayer`] wraps any `tower::Service<http::Request<B>>`
//! (hyper-util's client, say). On each request it:
//!
//! 1. leaves requests outside its [scope](TokenRefreshLayer::scope), or
//!    carrying [`SkipAuth`], untouched;
//! 2. reads the current credential with one atomic load and attaches the
//!    prebuilt, sensitive header value. Inside the refresh-ahead window it
//!    still does so while one background refresh runs; past expiry it waits
//!    for the refresh that every concurrent caller shares;
//! 3. copies the request for a replay when the [`ReplayPolicy`] can;
//! 4. on a response that rejects the token ([`Classify`]; by default a 401
//!    whose `Bearer` challenge, if any, says `invalid_token`) refreshes —
//!    unless a newer token is already current — and replays the copy once.
//!    A second rejection is returned as it is.
//!
//! The coordinator behind it, [`TokenManager`], lives in
//! `tower-token-refresh-core` and is re-exported here.
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
//!     .layer(TokenRefreshLayer::new(tokens.clone()).scope("https://api.example.com".parse()?))
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
//! # Where to put the layer
//!
//! Inside tower-http's `FollowRedirect` the layer sees each hop: scope it
//! to your API's origin so a redirect elsewhere goes without the token.

pub mod classify;
mod client;
pub mod future;
mod layer;
pub mod replay;
pub mod retry;
mod scope;
mod service;

pub use classify::{Classify, RejectedToken};
pub use client::{DEFAULT_MAX_BODY, ServiceClient};
pub use layer::TokenRefreshLayer;
pub use replay::{CloneBody, NoReplay, ReplayBody, ReplayPolicy};
pub use scope::{InvalidOrigin, Origin, SkipAuth};
pub use service::TokenRefresh;
pub use tower_token_refresh_core::{
    AccessToken, Authorization, BoxError, ClientSecret, Error, ErrorKind, Lookup, MemoryStore,
    RefreshFuture, RefreshToken, Scheme, Stats, TokenManager, TokenManagerBuilder, TokenSet,
    TokenSource, TokenStore, oauth2, source,
};
