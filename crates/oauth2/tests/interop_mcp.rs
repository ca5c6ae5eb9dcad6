//! The MCP client identity and resource pieces against a real
//! authorization server none of us wrote: node's `oidc-provider`
//! (interop/server.mjs) with open dynamic client registration (RFC 7591)
//! and RFC 8707 resource indicators for one resource, `<issuer>/mcp`.
//!
//! Needs node (>= 20) and `npm ci` in `interop/` (run here when
//! `interop/node_modules` is missing). Without node it prints why and
//! passes without checking anything, as `interop.rs` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::{Request, StatusCode, header};
use http_body_util::Full;
use support::{http, interop::Provider};
use tower_token_refresh::{
    ErrorKind, TokenSource,
    oauth2::{ClientRegistration, ProviderMetadata, RegisteredClient, ResourceIndicator},
};
use tower_token_refresh_test_util::hyper_client;

/// The provider and its discovered metadata; `None` without node.
async fn start() -> Option<(Provider, ProviderMetadata)> {
    let provider = Provider::start(&[]).await?;
    let server = ProviderMetadata::discover(&provider.issuer, &http())
        .await
        .unwrap();
    Some((provider, server))
}

/// Registers a confidential native client allowed client credentials.
async fn register(server: &ProviderMetadata, method: &str) -> RegisteredClient {
    ClientRegistration::new()
        .client_name("interop MCP client")
        .redirect_uris(["http://127.0.0.1/callback"])
        .grant_types(["authorization_code", "refresh_token", "client_credentials"])
        .response_types(["code"])
        .token_endpoint_auth_method(method)
        .scope("api")
        .metadata("application_type", "native")
        .register(server.registration_endpoint().unwrap(), &http())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_registered_client_gets_a_token_for_the_resource_it_names() {
    let Some((provider, server)) = start().await else {
        return;
    };
    // What an MCP client reads from oidc-provider's metadata.
    assert!(server.registration_endpoint().is_some());
    assert!(server.authorization_response_iss_parameter_supported());
    assert!(server.supports_scope("offline_access"));
    assert!(
        server
            .code_challenge_methods_supported()
            .iter()
            .any(|m| m == "S256")
    );

    for method in ["client_secret_basic", "client_secret_post"] {
        let registered = register(&server, method).await;
        assert_eq!(registered.token_endpoint_auth_method(), method);
        assert!(registered.client_secret().is_some());
        let auth = registered.client_auth().unwrap();
        assert_eq!(auth.method(), method);
        let resource = ResourceIndicator::new(format!("{}/mcp", provider.issuer)).unwrap();
        let tokens = server
            .client_credentials_grant(auth, http())
            .scope("api")
            .resource(resource)
            .fetch(None)
            .await
            .unwrap();
        let request = Request::get(format!("{}/api/data", provider.issuer))
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", tokens.access_token().secret()),
            )
            .body(Full::default())
            .unwrap();
        let status = hyper_client().request(request).await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "{method}");
    }
}

#[tokio::test]
async fn a_resource_the_server_does_not_serve_is_refused_as_invalid_target() {
    let Some((_provider, server)) = start().await else {
        return;
    };
    let registered = register(&server, "client_secret_basic").await;
    let err = server
        .client_credentials_grant(registered.client_auth().unwrap(), http())
        .scope("api")
        .resource(ResourceIndicator::new("https://elsewhere.example/mcp").unwrap())
        .fetch(None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.oauth_error(), Some("invalid_target"));
}

#[tokio::test]
async fn a_refused_registration_is_a_typed_error() {
    let Some((_provider, server)) = start().await else {
        return;
    };
    let err = ClientRegistration::new()
        .redirect_uris(["not a url"])
        .register(server.registration_endpoint().unwrap(), &http())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    let code = err.oauth_error().unwrap();
    assert!(
        code == "invalid_redirect_uri" || code == "invalid_client_metadata",
        "{code}"
    );
}
