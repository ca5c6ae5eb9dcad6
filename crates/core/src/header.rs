//! The header names these crates read or write that [`http::header`] does
//! not have, each spelled once as a [`HeaderName`].
//!
//! # Example
//!
//! ```
//! use tower_token_refresh_core::header::DPOP_NONCE;
//!
//! let mut answer = http::HeaderMap::new();
//! answer.insert(DPOP_NONCE, "n-1".parse()?);
//! assert_eq!(answer["dpop-nonce"], "n-1");
//! # Ok::<(), http::header::InvalidHeaderValue>(())
//! ```

use http::HeaderName;

/// `DPoP`: the request header that carries a DPoP proof (RFC 9449 §4.1).
pub const DPOP: HeaderName = HeaderName::from_static("dpop");

/// `DPoP-Nonce`: the response header that carries a server's DPoP nonce
/// (RFC 9449 §8, §9).
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// `Idempotency-Key`: a request that carries it may be retried whatever its
/// method (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `grpc-status`: a gRPC call's status code, in the headers of a
/// trailers-only response or in the trailers.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
