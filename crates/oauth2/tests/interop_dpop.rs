//! DPoP (RFC 9449) against a real authorization server none of us wrote:
//! node's `oidc-provider` (interop/server.mjs), on 127.0.0.1, real time.
//! The server checks every token-endpoint proof itself and wants a nonce
//! there; its `/dpop/api/data` resource checks each proof (signature, `htm`,
//! `htu`, `ath`, `jti` replay, the token's `jkt`) and asks for a nonce of its
//! own that changes every few seconds.
//!
//! Needs node (>= 20) and `npm ci` in `interop/`; the test runs `npm ci`
//! itself when `interop/node_modules` is missing. Without node it prints
//! why and passes without checking anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use http::Method;
use support::interop::{Provider, all_ok_at_once};
use tower::ServiceBuilder;
use tower_token_refresh::{
    ServiceClient, TokenManager, TokenRefreshLayer, TokenSet, TokenSource,
    dpop::{DpopKey, DpopLayer, DpopManagerExt as _},
    oauth2::{ClientAuth, ProviderMetadata},
};
use tower_token_refresh_test_util::hyper_client;

/// Access tokens live this long on the server (whole seconds); the
/// resource's nonce changes as often.
const ACCESS_TTL: u64 = 3;
const ROUNDS: u64 = 3;
const CONCURRENT: u64 = 5;

impl Provider {
    /// A refresh token bound to `jkt`, as the end of a DPoP login gives it.
    async fn login(&self, jkt: &str) -> String {
        let value = self
            .call(Method::POST, &format!("/test/dpop/login?jkt={jkt}"))
            .await;
        value["refresh_token"].as_str().unwrap().to_owned()
    }

    fn number(value: &serde_json::Value, name: &str) -> u64 {
        value[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {value}"))
    }

    async fn refresh_grants(&self) -> u64 {
        Self::number(
            &self.call(Method::GET, "/test/stats").await,
            "refresh_token_grants",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_bound_session_through_several_expiries() {
    let Some(provider) = Provider::start(&[("ACCESS_TTL", &ACCESS_TTL.to_string())]).await else {
        return;
    };
    let http = ServiceClient::new(hyper_client());
    let dpop = DpopKey::generate().unwrap();
    let metadata = ProviderMetadata::discover(&provider.issuer, &http)
        .await
        .unwrap();
    let grant = metadata
        .refresh_token_grant(ClientAuth::none("interop-dpop-client"), http.clone())
        .dpop(dpop.clone());

    // The login's refresh token is bound to our key; the first refresh by
    // hand gives a full, DPoP-bound token set.
    let seed =
        TokenSet::bearer("not-yet").with_refresh_token(provider.login(&dpop.thumbprint()).await);
    let first = grant.fetch(Some(&seed)).await.unwrap();
    assert_eq!(first.token_type(), "DPoP");
    let tokens = TokenManager::builder(grant)
        .dpop(dpop.clone())
        .initial(first)
        .build();
    let client = ServiceBuilder::new()
        .layer(
            TokenRefreshLayer::new(tokens.clone()).allow_origin(provider.issuer.parse().unwrap()),
        )
        .layer(DpopLayer::new(dpop.clone()))
        .service(hyper_client());
    let api = format!("{}/dpop/api/data", provider.issuer);

    let mut refresh_tokens = vec![tokens.current().unwrap().refresh_token().unwrap().clone()];
    for round in 1..=ROUNDS {
        // Past the real expiry (and the resource's nonce): every request of
        // the round needs a new token and a new nonce.
        tokio::time::sleep(Duration::from_millis(ACCESS_TTL * 1000 + 300)).await;
        let before = provider.refresh_grants().await;
        all_ok_at_once(&client, &api, CONCURRENT, round).await;
        let after = provider.refresh_grants().await;
        assert_eq!(
            after - before,
            1,
            "round {round}: one refresh for {CONCURRENT} requests"
        );
        let current = tokens.current().unwrap();
        assert_eq!(current.token_type(), "DPoP");
        let rotated = current.refresh_token().unwrap().clone();
        assert!(!refresh_tokens.contains(&rotated), "round {round}: rotated");
        refresh_tokens.push(rotated);
    }

    // The server's own counters: the first refresh plus one per round, the
    // token endpoint's nonce challenge answered (else no grant), and each
    // resource challenge answered by exactly one resend that passed.
    assert_eq!(provider.refresh_grants().await, 1 + ROUNDS);
    let stats = provider.call(Method::GET, "/test/dpop/stats").await;
    let count = |name| Provider::number(&stats, name);
    // One challenge: the nonce it gave (and any new one a success answer
    // brings) serves every later refresh, though the resource on the same
    // origin hands out nonces of its own.
    assert_eq!(count("token_nonce_challenges"), 1, "{stats}");
    assert!(count("api_nonce_challenges") >= ROUNDS, "{stats}");
    assert_eq!(count("api_ok"), ROUNDS * CONCURRENT, "{stats}");
    assert_eq!(count("api_rejected"), 0, "{stats}");
    assert_eq!(
        count("api_requests"),
        count("api_ok") + count("api_nonce_challenges"),
        "{stats}"
    );
}
