//! Tokens, token sources and stores, and the single-flight refresh
//! coordinator behind [`tower-token-refresh`](https://docs.rs/tower-token-refresh).
//!
//! This crate has no tower dependency: any HTTP client can use a
//! [`TokenManager`] to get a ready `Authorization` header value, and to ask
//! for a refresh when a server rejects it. Most users want the
//! `tower-token-refresh` crate, which wraps a `tower::Service` and does both
//! on every request.
//!
//! - [`TokenSet`]: what an authorization server issued. Secrets
//!   ([`AccessToken`], [`RefreshToken`], [`ClientSecret`]) redact
//!   themselves in `Debug` and `Display`. A set bound to a proof-of-possession
//!   key keeps it as opaque bytes ([`TokenSet::with_bound_key`]).
//! - [`TokenSource`]: where new tokens come from. Built in:
//!   [`source::from_fn`] and fallback chains
//!   ([`source::TokenSourceExt::or_else`]). The OAuth2 grants and logins
//!   (refresh token, client credentials, JWT bearer, authorization code,
//!   device), DPoP and JOSE live in the protocol crate,
//!   [`tower-token-refresh-oauth2`](https://docs.rs/tower-token-refresh-oauth2).
//! - [`TokenStore`]: where the set is kept; [`MemoryStore`] by default,
//!   [`FileStore`] to survive restarts, [`LockedStore`] to put its
//!   cross-process lock around any other store.
//! - [`Sealer`]: encryption at rest for stored sets ([`FileStore::with_sealer`],
//!   the Redis store's `sealer`); feature `xchacha20poly1305` brings one
//!   with a key you supply.
//! - [`TokenManager`]: the coordinator. One atomic load per lookup (one
//!   flag load with a [`LookupCache`]); one
//!   refresh at a time, spawned so that no caller's cancellation abandons it.
//! - [`Sessions`]: many sessions in one process (per user, tenant,
//!   audience), each a manager of its own keyed by the application's key,
//!   with a store per key, a bound and idle eviction, and no task per
//!   session. [`TokenManager::watch`] follows a session's [`SessionState`].
//! - The HTTP rules every crate of the workspace applies, each in one place:
//!   [`is_loopback_host`] (where cleartext may go), [`backoff`] (backoff,
//!   jitter, `Retry-After`), [`MAX_SETTING`], [`header`] names and
//!   OAuth 2.0 [`ErrorCode`]s.
//! - [`metrics`]: with feature `metrics` (off by default), counters,
//!   gauges and histograms through the `metrics` facade: refreshes and
//!   their latency, coalesced waiters, replays, waits for another
//!   process's refresh, sessions ended by cause, [`Sessions`] held and
//!   evicted. [`Stats`] counts the same without it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_token_refresh_core::{source, TokenManager, TokenSet};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tokens = TokenManager::builder(source::from_fn(|_| async {
//!     Ok(TokenSet::bearer("t0k3n").with_expires_in(Duration::from_secs(300)))
//! }))
//! .on_session_expired(|| eprintln!("please log in again"))
//! .build();
//!
//! // With any client: attach the header, and on a 401 call `refresh_if`.
//! let auth = tokens.authorization().await?;
//! let request = http::Request::get("https://api.example.com/")
//!     .header(http::header::AUTHORIZATION, auth.header().clone())
//!     .body(())?;
//! assert!(request.headers()[http::header::AUTHORIZATION].is_sensitive());
//! # Ok(()) }
//! ```

pub mod backoff;
mod crypto;
mod error;
mod error_code;
mod file_store;
pub mod header;
mod host;
mod lock_file;
mod manager;
pub mod metrics;
mod seal;
mod secret;
mod sessions;
pub mod source;
mod stats;
mod store;
mod token;

pub use error::{BoxError, Error, ErrorKind};
pub use error_code::ErrorCode;
pub use file_store::FileStore;
pub use host::is_loopback_host;
pub use lock_file::LockedStore;
pub use manager::{
    Authorization, Lookup, LookupCache, MAX_SETTING, RefreshFuture, Rotation, Scheme, SessionState,
    SessionWatch, TokenManager, TokenManagerBuilder, check_runtime,
};
pub use seal::Sealer;
#[cfg(feature = "xchacha20poly1305")]
pub use seal::XChaCha20Poly1305Sealer;
pub use secret::{AccessToken, ClientSecret, RefreshToken};
pub use sessions::{SessionKey, Sessions, SessionsBuilder, SessionsStats, key_digest};
pub use source::{BoxFuture, TokenSource};
pub use stats::Stats;
pub use store::{MemoryStore, RefreshLease, RefreshTurn, TokenStore};
pub use token::{EndReason, TokenSet};
