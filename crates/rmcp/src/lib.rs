//! MCP clients whose requests are authorized by `tower-token-refresh`:
//! rmcp's Streamable HTTP transport over any tower HTTP service.
//!
//! [`McpHttpClient`] implements rmcp's
//! [`StreamableHttpClient`](rmcp::transport::streamable_http_client::StreamableHttpClient)
//! over a `tower::Service<http::Request<Full<Bytes>>>`. Put
//! [`TokenRefreshLayer`](tower_token_refresh::TokenRefreshLayer) in that
//! service and an rmcp client gets what the layer gives any other request:
//! the token attached on the origins you allowed, one refresh shared by all
//! concurrent requests, a 401 answered by a refresh and one replay (or none,
//! when a newer token is already current), DPoP, and the token stores.
//! rmcp's own `AuthClient` is not needed.
//!
//! # Example
//!
//! An rmcp client calling an MCP server whose tokens come from an OAuth2
//! `refresh_token` grant, through hyper-util's client:
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use rmcp::{
//!     ServiceExt,
//!     transport::{StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig},
//! };
//! use tower::Layer;
//! use tower_token_refresh::{
//!     ServiceClient, TokenManager, TokenRefreshLayer, TokenSet,
//!     oauth2::{ClientAuth, RefreshTokenGrant},
//! };
//! use tower_token_refresh_rmcp::McpHttpClient;
//!
//! # async fn run(login: TokenSet) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let grant = RefreshTokenGrant::new(
//!     "https://auth.example.com/token".parse()?,
//!     ClientAuth::basic("my-client", "my-secret"),
//!     ServiceClient::new(http.clone()),
//! );
//! let tokens = TokenManager::builder(grant).initial(login).build();
//! let authorized = TokenRefreshLayer::new(tokens.clone())
//!     .allow_origin("https://mcp.example.com".parse()?)
//!     .layer(http);
//!
//! // No `auth_header`: the layer owns `Authorization`.
//! let config = StreamableHttpClientTransportConfig::with_uri("https://mcp.example.com/mcp");
//! let transport = StreamableHttpClientTransport::with_client(McpHttpClient::new(authorized), config);
//! let client = ().serve(transport).await?;
//! let tools = client.list_tools(Default::default()).await?;
//! println!("{} tools", tools.tools.len());
//! client.cancel().await?;
//! # Ok(()) }
//! ```
//!
//! # Requests and responses
//!
//! As rmcp's own reqwest client does:
//!
//! - POST sends the JSON-RPC message as `application/json`, with
//!   `Accept: text/event-stream, application/json` and the session's
//!   `Mcp-Session-Id`; GET (the server's SSE stream) sends the same
//!   `Accept`, the session and `Last-Event-Id`; DELETE ends the session.
//!   Custom headers named `Accept`, `Mcp-Session-Id` or `Last-Event-Id`
//!   are refused with `ReservedHeaderConflict` (`MCP-Protocol-Version`,
//!   which rmcp itself sends that way, is allowed).
//! - A 401 with a `WWW-Authenticate` challenge is `AuthRequired` (the layer
//!   already refreshed and replayed once, or the challenge was not
//!   `invalid_token`); a 403 with one is `InsufficientScope`, with the
//!   `scope` its `Bearer` (or `DPoP`) challenge asks for. Several
//!   `WWW-Authenticate` fields are joined into one list.
//! - 202 and 204 are `Accepted`, as is any 2xx to a notification or a
//!   response; a 404 to a request that carried a session is
//!   `SessionExpired`; 429 and 5xx are `HttpStatus`, with the raw
//!   `Retry-After`, unless a 5xx carries a JSON-RPC error, which is
//!   returned as the server's answer.
//! - A GET answered 405 is `ServerDoesNotSupportSse` (rmcp then goes on
//!   without the stream), a DELETE answered 405
//!   `ServerDoesNotSupportDeleteSession`.
//! - `text/event-stream` bodies become an SSE stream (parsed by
//!   `sse-stream`), `application/json` bodies one message.
//!
//! Limits ([`StreamableHttpResponseLimits`](rmcp::transport::streamable_http_client::StreamableHttpResponseLimits),
//! set on rmcp's transport config): a JSON body over `max_json_response_size`
//! is `ResponseBodyTooLarge` (by its `Content-Length`, or as soon as it is
//! read past it); an SSE event over `max_sse_event_size` ends its stream
//! with an error before the parser holds it.
//!
//! Where it differs from rmcp's client:
//!
//! - Error messages carry the status, never the server's text: an error
//!   page may quote the token it rejected. So an error body that is not
//!   JSON (and a 401 or 403 without a challenge) is not read at all, and
//!   `max_error_response_size` has nothing to bound.
//! - Redirects are the service's business: a 3xx is an unexpected response
//!   unless the stack follows it (tower-http's `FollowRedirect`, placed as
//!   the layer's docs say).
//! - Timeouts too: hyper-util's client has none, rmcp's worker bounds its
//!   control requests.
//!
//! # Errors
//!
//! The HTTP service's errors come as rmcp's `StreamableHttpError::Client`
//! with this crate's [`Error`]; [`Error::token_error`] finds the token
//! layer's error in it (a session that expired, a refresh that failed,
//! a request policy refused).
//!
//! # Authorization
//!
//! The token layer owns the `Authorization` header: leave rmcp's
//! `auth_header` unset. If it is set, it goes out as `Bearer <auth_header>`,
//! and the layer replaces it on the origins it serves.
//!
//! # Versions
//!
//! Built for rmcp 3.11.0 (pinned exactly: a custom client mirrors rmcp's
//! status mapping, which changes between releases) with its `client` and
//! `transport-streamable-http-client` features only; no reqwest. rmcp
//! needs Rust 1.88; this crate keeps the workspace's 1.89.

mod body;
mod client;
mod error;
mod probe;

pub use client::McpHttpClient;
pub use error::Error;
pub use probe::{Unauthenticated, probe};
