//! With feature `metrics`: a DPoP nonce a server asks for is counted where
//! it is answered, at the token endpoint (the oauth2 crate's grant) and at
//! the resource (`DpopLayer`), through the same hyper client and test-util
//! servers as `dpop.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{ServiceBuilder, ServiceExt};
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer,
    dpop::{DpopKey, DpopLayer, DpopManagerExt as _},
    metrics::{DPOP_NONCE_RETRIES, ENDPOINT, REFRESHES_SUCCEEDED},
    oauth2::{ClientAuth, RefreshTokenGrant},
};
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Client, Nonce, ResourceServer, hyper_client,
};

#[test]
fn nonce_resends_are_counted_by_endpoint() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // One thread: the servers, the refresh task and the client all record
    // (or not) into this test's recorder.
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(story());
    });
    let counts: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let DebugValue::Counter(n) = value else {
                return None;
            };
            let endpoint = key
                .key()
                .labels()
                .find(|l| l.key() == ENDPOINT)
                .map(|l| l.value().to_owned());
            Some((key.key().name().to_owned(), endpoint, n))
        })
        .collect();
    let count = |name: &str, endpoint: Option<&str>| {
        counts
            .iter()
            .filter(|(n, e, _)| n == name && e.as_deref() == endpoint)
            .map(|(.., v)| v)
            .sum::<u64>()
    };
    assert_eq!(count(DPOP_NONCE_RETRIES, Some("token")), 1, "{counts:?}");
    assert_eq!(count(DPOP_NONCE_RETRIES, Some("resource")), 1, "{counts:?}");
    assert_eq!(count(REFRESHES_SUCCEEDED, None), 1, "{counts:?}");
}

async fn story() {
    let config = AuthConfig::default()
        .access_lifetime(Duration::from_secs(3600))
        .dpop_required(true)
        .register(Client::public("app"))
        .token_dpop_nonce(Nonce::Fixed("as-n1".into()))
        .resource_dpop_nonce(Nonce::Fixed("rs-n1".into()));
    let auth = AuthServer::start(config).await.unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    let dpop = DpopKey::generate().unwrap();
    let grant = RefreshTokenGrant::new(
        auth.token_url().parse().unwrap(),
        ClientAuth::none("app"),
        ServiceClient::new(hyper_client()),
    )
    .dpop(dpop.clone());
    let tokens = TokenManager::builder(grant)
        .dpop(dpop.clone())
        .initial(auth.login_dpop(&dpop.thumbprint()).token_set())
        .build();
    // The token endpoint asks for its nonce once; the grant resends.
    tokens.refresh().await.unwrap();
    assert_eq!(auth.stats().dpop_nonce_challenges, 1);
    // The resource asks for its own; the DPoP layer resends.
    let client = ServiceBuilder::new()
        .layer(TokenRefreshLayer::new(tokens.clone()).allow_origin(api.url("").parse().unwrap()))
        .layer(DpopLayer::new(dpop.clone()))
        .service(hyper_client());
    let request = http::Request::get(api.url("/api/data"))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(client.oneshot(request).await.unwrap().status(), 200);
    assert_eq!(api.stats().dpop_nonce_challenges, 1);
}
