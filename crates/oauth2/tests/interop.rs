//! Interop with a real authorization server none of us wrote: node's
//! `oidc-provider` (interop/server.mjs), on 127.0.0.1, real time.
//!
//! Needs node (>= 20) and `npm ci` in `interop/`; the test runs `npm ci`
//! itself when `interop/node_modules` is missing. Without node it prints
//! why and passes without checking anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::interop::{Provider, all_ok_at_once};
use tower::ServiceBuilder;
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager, TokenRefreshLayer, TokenSet, TokenSource,
    oauth2::{ClientAuth, ProviderMetadata, TokenTypeHint},
};
use tower_token_refresh_test_util::hyper_client;

/// Access tokens live this long on the server (whole seconds).
const ACCESS_TTL: u64 = 3;
const ROUNDS: u64 = 4;
const CONCURRENT: usize = 25;

/// The interop server's own counters and a test user's login.
impl Provider {
    /// The server's own counters (GET /test/stats).
    async fn stats(&self) -> serde_json::Value {
        self.call(Method::GET, "/test/stats").await
    }

    /// A test user's refresh token, as the end of a login would give it.
    async fn login(&self) -> String {
        let value = self.call(Method::POST, "/test/login").await;
        value["refresh_token"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_interop() {
    let Some(provider) = Provider::start(&[("ACCESS_TTL", &ACCESS_TTL.to_string())]).await else {
        return;
    };
    let http = ServiceClient::new(hyper_client());
    let auth = ClientAuth::basic("interop-client", "interop-secret");

    // Discovery: every endpoint comes from the server's own metadata.
    let metadata = ProviderMetadata::discover(&provider.issuer, &http)
        .await
        .unwrap();
    let introspection = metadata
        .introspection_client(auth.clone(), http.clone())
        .expect("introspection endpoint");
    let revocation = metadata
        .revocation_client(auth.clone(), http.clone())
        .expect("revocation endpoint")
        .retry(3, Duration::from_millis(200));
    let grant = metadata.refresh_token_grant(auth.clone(), http.clone());

    // Login, then the first refresh by hand to get a full token set.
    let seed = TokenSet::bearer("not-yet").with_refresh_token(provider.login().await);
    let first = grant.fetch(Some(&seed)).await.unwrap();
    assert!(first.expires_at().is_some());
    let first_access = first.access_token().secret().to_owned();
    let tokens = TokenManager::builder(grant).initial(first).build();
    let client = ServiceBuilder::new()
        .layer(
            TokenRefreshLayer::new(tokens.clone()).allow_origin(provider.issuer.parse().unwrap()),
        )
        .service(hyper_client());
    let api = format!("{}/api/data", provider.issuer);

    let mut refresh_tokens = vec![
        tokens
            .current()
            .unwrap()
            .refresh_token()
            .unwrap()
            .secret()
            .to_owned(),
    ];
    for round in 1..=ROUNDS {
        // Past the real expiry: the next requests all need a new token.
        tokio::time::sleep(Duration::from_millis(ACCESS_TTL * 1000 + 300)).await;
        let before = provider.stats().await["refresh_token_grants"]
            .as_u64()
            .unwrap();
        all_ok_at_once(&client, &api, CONCURRENT as u64, round).await;
        let after = provider.stats().await["refresh_token_grants"]
            .as_u64()
            .unwrap();
        assert_eq!(
            after - before,
            1,
            "round {round}: one refresh for {CONCURRENT} requests"
        );
        let rotated = tokens
            .current()
            .unwrap()
            .refresh_token()
            .unwrap()
            .secret()
            .to_owned();
        assert!(!refresh_tokens.contains(&rotated), "round {round}: rotated");
        refresh_tokens.push(rotated);
    }
    // The server's own log agrees: the first refresh plus one per round, and
    // no refresh token was ever presented twice (that would be invalid_grant).
    let expected = 1 + ROUNDS as usize;
    assert_eq!(
        provider
            .count_reaching("grant.success refresh_token", expected)
            .await,
        expected
    );
    assert_eq!(provider.count("grant.error invalid_grant"), 0);

    // client_credentials against the same server.
    let cc = metadata.client_credentials_grant(auth.clone(), http.clone());
    let service = cc.fetch(None).await.unwrap();
    let response = hyper_client()
        .request(
            Request::get(&api)
                .header(
                    "authorization",
                    format!("Bearer {}", service.access_token().secret()),
                )
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        provider
            .count_reaching("grant.success client_credentials", 1)
            .await,
        1
    );

    // Introspection: the current token is active. An access token from an
    // earlier round (expired at the server) that the manager believes is
    // good for ten more minutes is inactive, which makes it refresh once.
    // (Revoking an access token would not do: oidc-provider then revokes the
    // whole grant, refresh token included, as RFC 7009 §2.1 allows.)
    assert!(introspection.check(&tokens).await.unwrap());
    let old_access = first_access.clone();
    assert!(
        !introspection
            .introspect(&old_access, Some(TokenTypeHint::AccessToken))
            .await
            .unwrap()
            .active
    );
    let current_refresh = tokens.current().unwrap().refresh_token().unwrap().clone();
    tokens
        .set(
            TokenSet::bearer(old_access)
                .with_expires_in(Duration::from_secs(600))
                .with_refresh_token(current_refresh),
        )
        .await
        .unwrap();
    let refreshes = provider.settled_count("grant.success refresh_token").await;
    assert!(!introspection.check(&tokens).await.unwrap());
    assert_eq!(
        provider
            .count_reaching("grant.success refresh_token", refreshes + 1)
            .await,
        refreshes + 1
    );
    assert!(introspection.check(&tokens).await.unwrap());

    // Logout revokes the refresh token: the server refuses it afterwards.
    let last_refresh = tokens.current().unwrap().refresh_token().unwrap().clone();
    revocation.logout(&tokens).await.unwrap();
    assert!(tokens.is_session_expired());
    let stale = TokenSet::bearer("x").with_refresh_token(last_refresh);
    let err = metadata
        .refresh_token_grant(auth.clone(), http.clone())
        .fetch(Some(&stale))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired);
    let stats = provider.stats().await;
    // Logout's two revocations (refresh token, access token); four
    // introspections; every API call succeeded.
    assert_eq!(stats["revocations"], 2, "{stats}");
    assert_eq!(stats["introspections"], 4, "{stats}");
    assert_eq!(stats["api_ok"], ROUNDS * CONCURRENT as u64 + 1, "{stats}");
}
