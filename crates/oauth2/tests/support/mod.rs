//! Helpers shared by this crate's integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod interop;

use bytes::Bytes;
use http_body_util::Full;
use tower_token_refresh::ServiceClient;
use tower_token_refresh_test_util::hyper_client;

/// The grants' HTTP client in these tests: hyper-util's, adapted.
pub type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

/// A new [`Http`].
pub fn http() -> Http {
    ServiceClient::new(hyper_client())
}
