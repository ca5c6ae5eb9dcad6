//! [reqwest](https://docs.rs/reqwest) support for
//! [tower-token-refresh](tower_token_refresh): OAuth2 access tokens injected,
//! refreshed once for all concurrent callers, and a rejected request
//! replayed once, with the layer's origin and cleartext rules.
//!
//! Two forms, one behaviour:
//!
//! - [`TokenRefreshMiddleware`]: a [`reqwest_middleware::Middleware`], for
//!   code that sends with `reqwest_middleware::ClientWithMiddleware`
//!   (`client.get(url).send()`).
//! - [`ReqwestService`]: `reqwest::Client` as a
//!   `tower::Service<http::Request<B>>`, for code that builds tower stacks:
//!   put [`TokenRefreshLayer`](tower_token_refresh::TokenRefreshLayer) (and
//!   tower-http middleware) on top of it. It also calls the token endpoint,
//!   so a reqwest application needs no other HTTP client.
//!
//! # Example
//!
//! A reqwest-middleware client whose tokens come from an OAuth2
//! `refresh_token` grant, itself sent through reqwest:
//!
//! ```no_run
//! use bytes::Bytes;
//! use reqwest_middleware::ClientBuilder;
//! use tower_token_refresh::{
//!     ServiceClient, TokenManager, TokenSet,
//!     oauth2::{ClientAuth, RefreshTokenGrant},
//! };
//! use tower_token_refresh_reqwest::{ReqwestService, TokenRefreshMiddleware, token_error};
//!
//! # async fn run(login: TokenSet) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let http = reqwest::Client::new();
//! let grant = RefreshTokenGrant::new(
//!     "https://auth.example.com/token".parse()?,
//!     ClientAuth::basic("my-client", "my-secret"),
//!     ServiceClient::<_, Bytes>::with_body(ReqwestService::new(http.clone())),
//! );
//! let tokens = TokenManager::builder(grant).initial(login).build();
//! let client = ClientBuilder::new(http)
//!     .with(TokenRefreshMiddleware::new(tokens).allow_origin("https://api.example.com".parse()?))
//!     .build();
//!
//! match client.get("https://api.example.com/products").send().await {
//!     Ok(response) => println!("{}", response.status()),
//!     Err(e) => match token_error(&e) {
//!         Some(e) if e.is_session_expired() => println!("please log in"),
//!         _ => println!("request failed: {e}"),
//!     },
//! }
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! The middleware fails a request it cannot authorize with
//! [`reqwest_middleware::Error::Middleware`] holding a
//! [`tower_token_refresh::Error`]; [`token_error`] finds it, and its
//! [`kind`](tower_token_refresh::Error::kind) tells a session that expired
//! from a refresh that failed for now or a request that policy refused.
//! Under the layer, [`ReqwestService`]'s errors are reqwest's, boxed with
//! the layer's own, as for any inner service.
//!
//! # TLS
//!
//! This crate turns on no reqwest feature, TLS included. Choose the TLS
//! stack on reqwest in your own `Cargo.toml`
//! (`reqwest = { version = "0.13", features = ["rustls"] }`): reqwest is one
//! crate in the build, so its features apply here too. Keeping them out of
//! this crate's features keeps `--all-features` builds from compiling two
//! TLS stacks.

mod middleware;
mod service;

pub use middleware::TokenRefreshMiddleware;
pub use service::{ReqwestService, ResponseFuture};

/// The token error in a [`reqwest_middleware::Error`], if the request failed
/// because no token could be had: session expired, refresh failed, or
/// policy refused it.
///
/// # Example
///
/// ```
/// use tower_token_refresh::{Error, ErrorKind};
/// use tower_token_refresh_reqwest::token_error;
///
/// let error = reqwest_middleware::Error::middleware(Error::new(ErrorKind::SessionExpired, "log in"));
/// assert!(token_error(&error).is_some_and(Error::is_session_expired));
/// ```
pub fn token_error(error: &reqwest_middleware::Error) -> Option<&tower_token_refresh::Error> {
    match error {
        reqwest_middleware::Error::Middleware(error) => error.downcast_ref(),
        reqwest_middleware::Error::Reqwest(_) => None,
    }
}
