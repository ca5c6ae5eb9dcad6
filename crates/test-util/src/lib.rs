//! Real servers for testing [`tower-token-refresh`](https://docs.rs/tower-token-refresh):
//! an OAuth2 authorization server and a protected resource, both axum on
//! 127.0.0.1, in the test's own process and runtime.
//!
//! - [`AuthServer`]: one authorization server over one token ledger: a
//!   token endpoint with refresh token rotation and reuse detection (with
//!   an optional reuse grace), `client_credentials`, the authorization code
//!   with PKCE (and a headless [approval](AuthServer::authorize)), device
//!   authorization (RFC 8628), the JWT bearer grant (RFC 7523); clients
//!   authenticated by secret, signed assertion (`private_key_jwt`,
//!   `client_secret_jwt`, `jti` replay refused) or none; DPoP (RFC 9449:
//!   proofs checked, nonces, tokens bound to the proof's key);
//!   introspection (RFC 7662), revocation (RFC 7009), discovery (RFC 8414,
//!   OpenID Connect); and queued [`Fault`]s (delays, 5xx, `invalid_grant`,
//!   malformed JSON, HTML error pages, dropped connections, `Retry-After`,
//!   string `expires_in`, missing fields). Switches are in [`AuthConfig`],
//!   counts in [`AuthStats`], what it was shown in [`AuthLog`].
//! - [`ResourceServer`]: an API that accepts the [`AuthServer`]'s access
//!   tokens, bearer or DPoP-bound (proofs checked), and answers with RFC
//!   6750 and RFC 9449 challenges.
//! - `GrpcServer` (feature `grpc`): a tonic server that accepts the
//!   [`AuthServer`]'s tokens as gRPC metadata, rejects others with
//!   `UNAUTHENTICATED` (trailers-only, or in real trailers after a message),
//!   with a raw-bytes codec, `BytesCodec` (no protobuf).
//! - [`CountingSource`]: a [`TokenSource`](tower_token_refresh_core::TokenSource)
//!   for unit tests, with call counting, latency and injected failures.
//! - [`dpop::verify_proof`]: checks a DPoP proof as a server would.
//! - [`fixture`]: the servers, login and seeded manager a client's test
//!   suite starts from.
//! - [`hyper_client`]: the plain hyper-util client tests and examples share.
//! - [`until`]: a bounded wait on tokio's clock for a condition to hold.
//! - [`process`]: one login shared by several processes: the `ttr-session`
//!   program (resumes a login from a `FileStore` file, calls an API, reports
//!   in JSON), and the helpers that spawn it and read its report.
//!
//! Servers run in tasks spawned on the current runtime and read only tokio's
//! clock, so a test under `#[tokio::test(start_paused = true)]` can advance
//! time past a token's expiry without waiting. Dropping a server's last
//! handle stops it.
//!
//! # Example
//!
//! ```
//! use http_body_util::Full;
//! use tower_token_refresh_test_util::{hyper_client, AuthConfig, AuthServer, ResourceServer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = AuthServer::start(AuthConfig::default()).await?;
//! let api = ResourceServer::start(&auth).await?;
//! let tokens = auth.login();
//!
//! let client = hyper_client();
//! let get = |token: &str| {
//!     http::Request::get(api.url("/api/data"))
//!         .header("authorization", format!("Bearer {token}"))
//!         .body(Full::default())
//! };
//! let response = client.request(get(&tokens.access_token)?).await?;
//! assert_eq!(response.status(), 200);
//!
//! // Once the token is expired the API says so, as a real one would.
//! auth.expire_access_tokens();
//! let response = client.request(get(&tokens.access_token)?).await?;
//! assert_eq!(response.status(), 401);
//! assert!(response.headers()["www-authenticate"].to_str()?.contains("invalid_token"));
//! assert_eq!(api.stats().rejected, 1);
//! # Ok(()) }
//! ```

mod auth;
pub mod dpop;
pub mod fixture;
mod form;
#[cfg(feature = "grpc")]
mod grpc;
pub mod process;
#[cfg(feature = "redis")]
mod redis_server;
mod resource;
mod serve;
mod source;
mod wait;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};

pub use auth::{
    Assertion, AuthConfig, AuthLog, AuthServer, AuthStats, AuthorizationRequest, Client, Echo,
    Endpoint, Exchanged, Fault, Gate, IssuedTokens, MetadataDocuments, Nonce, Registration,
    TokenExchange, TokenRequest,
};
#[cfg(feature = "grpc")]
pub use grpc::{BytesCodec, GrpcServer, GrpcStats};
#[cfg(feature = "redis")]
pub use redis_server::RedisServer;
pub use resource::{
    MetadataLocation, ResourceLog, ResourceMetadata, ResourceServer, ResourceStats,
};
pub use source::CountingSource;
pub use wait::until;

/// A hyper-util client for plain HTTP with a [`Full`] body, on the tokio
/// executor: the client tests, examples and benches send requests with.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = tower_token_refresh_test_util::hyper_client();
/// # let _ = client;
/// # }
/// ```
pub fn hyper_client() -> HyperClient<HttpConnector, Full<Bytes>> {
    HyperClient::builder(TokioExecutor::new()).build_http()
}
