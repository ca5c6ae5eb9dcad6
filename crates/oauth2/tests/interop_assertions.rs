//! Signed client assertions against a real authorization server none of
//! us wrote: node's `oidc-provider` (interop/server.mjs), on 127.0.0.1.
//! Two clients registered there authenticate with `private_key_jwt` (the
//! public JWK of `crates/oauth2/testdata/p256.pem`, passed in
//! `ASSERTION_JWKS`) and `client_secret_jwt`; the provider checks each
//! assertion's signature, `iss`, `sub`, `aud`, `exp` and that its `jti` was
//! never used before.
//!
//! Needs node (>= 20) and `npm ci` in `interop/`; the test runs `npm ci`
//! itself when `interop/node_modules` is missing. Without node it prints
//! why and passes without checking anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::interop::Provider;
use tower_token_refresh::{
    ErrorKind, ServiceClient, TokenManager, TokenSet, TokenSource,
    jose::SigningKey,
    oauth2::{
        ClientAssertion, ClientAuth, ClientCredentialsGrant, ProviderMetadata, RefreshTokenGrant,
    },
};
use tower_token_refresh_test_util::hyper_client;

const PRIVATE_KEY_CLIENT: &str = "interop-private-key-jwt";
const SECRET_CLIENT: &str = "interop-client-secret-jwt";
const SECRET: &str = "interop: a client_secret_jwt secret of more than 32 bytes";
const KEY_ID: &str = "interop-key-1";

fn registered_key() -> SigningKey {
    SigningKey::from_pkcs8_pem(include_str!("../../oauth2/testdata/p256.pem"))
        .unwrap()
        .with_key_id(KEY_ID)
}

/// Starts the provider with the assertion clients registered: the public
/// JWK of [`registered_key`] and the `client_secret_jwt` secret.
async fn start() -> Option<Provider> {
    let jwks = json!({ "keys": [registered_key().public_jwk().unwrap()] });
    Provider::start(&[
        ("ASSERTION_JWKS", &jwks.to_string()),
        ("ASSERTION_SECRET", SECRET),
    ])
    .await
}

impl Provider {
    /// A refresh token for `client_id`, as the end of a login would give it.
    async fn login(&self, client_id: &str) -> String {
        let path = format!("/test/assertions/login?client_id={client_id}");
        let (status, value) = self.call_with_status(Method::POST, &path).await;
        assert_eq!(status, StatusCode::OK);
        value["refresh_token"].as_str().unwrap().to_owned()
    }

    /// The provider's own protected API's answer to `access_token`.
    async fn call_api(&self, access_token: &str) -> StatusCode {
        let request = Request::get(format!("{}/api/data", self.issuer))
            .header("authorization", format!("Bearer {access_token}"))
            .body(Full::default())
            .unwrap();
        hyper_client().request(request).await.unwrap().status()
    }
}

type Http = ServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
>;

/// `client_credentials` twice (each with an assertion of its own: the
/// provider refuses a `jti` it has seen), then a login's refresh token
/// refreshed twice with rotation, all authenticated by `auth`.
async fn accepted_for_both_grants(provider: &Provider, auth: ClientAuth, client_id: &str) {
    let http: Http = ServiceClient::new(hyper_client());
    let metadata = ProviderMetadata::discover(&provider.issuer, &http)
        .await
        .unwrap();

    let cc = metadata.client_credentials_grant(auth.clone(), http.clone());
    for _ in 0..2 {
        let tokens = cc.fetch(None).await.unwrap();
        assert_eq!(
            provider.call_api(tokens.access_token().secret()).await,
            StatusCode::OK
        );
    }

    let seed = TokenSet::bearer("not-yet").with_refresh_token(provider.login(client_id).await);
    let tokens = TokenManager::builder(metadata.refresh_token_grant(auth.clone(), http.clone()))
        .initial(seed)
        .build();
    let mut refresh_tokens = Vec::new();
    for _ in 0..2 {
        tokens.refresh().await.unwrap();
        let current = tokens.current().unwrap();
        assert_eq!(
            provider.call_api(current.access_token().secret()).await,
            StatusCode::OK
        );
        refresh_tokens.push(current.refresh_token().unwrap().secret().to_owned());
    }
    assert_ne!(refresh_tokens[0], refresh_tokens[1], "rotated");

    // Introspection and revocation authenticate the same way; their
    // assertions name their own endpoint as audience.
    let introspection = metadata
        .introspection_client(auth.clone(), http.clone())
        .unwrap();
    assert!(introspection.check(&tokens).await.unwrap());
    let last = tokens.current().unwrap();
    metadata
        .revocation_client(auth.clone(), http.clone())
        .unwrap()
        .logout(&tokens)
        .await
        .unwrap();
    let err = metadata
        .refresh_token_grant(auth, http)
        .fetch(Some(&last))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SessionExpired, "revoked: {err:?}");

    assert_eq!(
        provider
            .count_reaching("grant.success client_credentials", 2)
            .await,
        2
    );
    assert_eq!(
        provider
            .count_reaching("grant.success refresh_token", 2)
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_accepts_private_key_jwt() {
    let Some(provider) = start().await else {
        return;
    };
    let auth = ClientAuth::private_key_jwt(PRIVATE_KEY_CLIENT, registered_key());
    accepted_for_both_grants(&provider, auth, PRIVATE_KEY_CLIENT).await;

    // The issuer as audience, as RFC 7523's update recommends, a `typ`
    // header and an `nbf` claim, as Azure AD's assertions have: accepted too.
    let http: Http = ServiceClient::new(hyper_client());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let with_issuer = ClientAssertion::new(PRIVATE_KEY_CLIENT, registered_key())
        .audience(provider.issuer.clone())
        .header_param("typ", "JWT")
        .claim("nbf", now);
    let grant = ClientCredentialsGrant::new(
        format!("{}/token", provider.issuer).parse().unwrap(),
        with_issuer.into(),
        http,
    );
    grant.fetch(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_accepts_client_secret_jwt() {
    let Some(provider) = start().await else {
        return;
    };
    let auth = ClientAuth::client_secret_jwt(SECRET_CLIENT, SECRET);
    accepted_for_both_grants(&provider, auth, SECRET_CLIENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_refuses_a_wrong_key_as_invalid_client() {
    let Some(provider) = start().await else {
        return;
    };
    let http: Http = ServiceClient::new(hyper_client());
    let token_url: http::Uri = format!("{}/token", provider.issuer).parse().unwrap();
    // Another key under the registered key's id, and a wrong secret.
    let wrong_key = SigningKey::generate_es256().unwrap().with_key_id(KEY_ID);
    let refresh_token = provider.login(PRIVATE_KEY_CLIENT).await;
    for auth in [
        ClientAuth::private_key_jwt(PRIVATE_KEY_CLIENT, wrong_key),
        ClientAuth::client_secret_jwt(SECRET_CLIENT, "not the secret, but as long as it is"),
    ] {
        let cc = ClientCredentialsGrant::new(token_url.clone(), auth.clone(), http.clone());
        let err = cc.fetch(None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
        assert_eq!(err.oauth_error(), Some("invalid_client"), "{err:?}");

        // A refused client is no lost session: the refresh token is intact.
        let seed = TokenSet::bearer("x").with_refresh_token(refresh_token.clone());
        let refresh = RefreshTokenGrant::new(token_url.clone(), auth, http.clone());
        let err = refresh.fetch(Some(&seed)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
        assert_eq!(err.oauth_error(), Some("invalid_client"), "{err:?}");
    }
    // The right key still works with that refresh token.
    let seed = TokenSet::bearer("x").with_refresh_token(refresh_token);
    RefreshTokenGrant::new(
        token_url,
        ClientAuth::private_key_jwt(PRIVATE_KEY_CLIENT, registered_key()),
        http,
    )
    .fetch(Some(&seed))
    .await
    .unwrap();
}
