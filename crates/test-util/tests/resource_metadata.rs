//! `ResourceServer`'s protected resource metadata (RFC 9728) and required
//! scope: the document, where it is served, the challenges naming it, and
//! 403 `insufficient_scope`.

// A failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower_token_refresh_test_util::{
    AuthConfig, AuthServer, Client, MetadataLocation, ResourceMetadata, ResourceServer,
    hyper_client,
};

struct Reply {
    status: StatusCode,
    challenge: String,
    json: Value,
}

async fn get(url: String, token: Option<&str>) -> Reply {
    let mut request = Request::get(url);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request: Request<Full<Bytes>> = request.body(Full::default()).unwrap();
    let response = hyper_client().request(request).await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        challenge,
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

async fn servers(config: AuthConfig) -> (AuthServer, ResourceServer) {
    let auth = AuthServer::start(config).await.unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    (auth, api)
}

#[tokio::test]
async fn without_the_switch_there_is_no_document_and_the_challenge_names_none() {
    let (_auth, api) = servers(AuthConfig::default()).await;
    assert_eq!(api.metadata_url(), None);
    let reply = get(api.url("/api/data"), None).await;
    assert_eq!(reply.challenge, r#"Bearer realm="test""#);
    let reply = get(
        api.url("/.well-known/oauth-protected-resource/api/data"),
        None,
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "guarded like any path"
    );
}

#[tokio::test]
async fn the_path_based_document_names_the_resource_and_the_issuer_and_the_401_names_it() {
    let metadata = ResourceMetadata::new()
        .scopes_supported(["read", "write"])
        .challenge_scope("read");
    let config = AuthConfig::default()
        .issuer_path("tenant1")
        .resource_metadata(metadata);
    let (auth, api) = servers(config).await;
    let url = api.url("/.well-known/oauth-protected-resource/api/data");
    assert_eq!(api.metadata_url().as_deref(), Some(url.as_str()));
    let document = get(url.clone(), None).await;
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(document.json["resource"], api.url("/api/data"));
    assert_eq!(api.resource(), api.url("/api/data"));
    assert_eq!(
        document.json["authorization_servers"],
        serde_json::json!([auth.issuer()])
    );
    assert_eq!(
        document.json["scopes_supported"],
        serde_json::json!(["read", "write"])
    );
    let reply = get(api.url("/api/data"), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.challenge,
        format!(r#"Bearer realm="test", scope="read", resource_metadata="{url}""#)
    );
    let reply = get(api.url("/api/data"), Some("unknown")).await;
    assert!(reply.challenge.contains(r#"error="invalid_token""#));
    assert!(
        reply
            .challenge
            .ends_with(&format!(r#"resource_metadata="{url}""#))
    );
    assert_eq!(api.stats().metadata_requests, 1);
    assert_eq!(api.stats().requests, 2, "the document is not counted");
}

#[tokio::test]
async fn the_root_document_names_the_origin() {
    let metadata = ResourceMetadata::new()
        .at(MetadataLocation::Root)
        .in_challenge(false);
    let (_auth, api) = servers(AuthConfig::default().resource_metadata(metadata)).await;
    let document = get(api.url("/.well-known/oauth-protected-resource"), None).await;
    assert_eq!(document.json["resource"], api.url(""));
    assert_eq!(api.resource(), api.url(""));
    assert!(document.json.get("scopes_supported").is_none());
    let reply = get(api.url("/api/data"), None).await;
    assert_eq!(reply.challenge, r#"Bearer realm="test""#, "not named");
    let path_based = get(
        api.url("/.well-known/oauth-protected-resource/api/data"),
        None,
    )
    .await;
    assert_eq!(path_based.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_custom_location_is_named_in_the_challenge_and_every_request_is_logged() {
    let metadata = ResourceMetadata::new().at(MetadataLocation::Custom("/meta.json".into()));
    let (_auth, api) = servers(AuthConfig::default().resource_metadata(metadata)).await;
    let reply = get(api.url("/api/data"), None).await;
    assert!(
        reply
            .challenge
            .ends_with(&format!(r#"resource_metadata="{}""#, api.url("/meta.json"))),
        "{}",
        reply.challenge
    );
    let document = get(api.url("/meta.json"), None).await;
    assert_eq!(document.json["resource"], api.url("/api/data"));
    assert_eq!(api.log().requests, ["GET /api/data", "GET /meta.json"]);
}

/// Logs in through the authorization endpoint asking for `scope`.
async fn token_with_scope(auth: &AuthServer, scope: &str) -> String {
    let verifier = "v".repeat(43);
    let challenge = {
        use base64::Engine as _;
        let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    };
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", "app")
        .append_pair("redirect_uri", "http://127.0.0.1:9/cb")
        .append_pair("scope", scope)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let approved = auth
        .authorize(&format!("{}?{query}", auth.authorization_url()))
        .unwrap();
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("client_id", "app")
        .append_pair("code", &approved.code)
        .append_pair("redirect_uri", "http://127.0.0.1:9/cb")
        .append_pair("code_verifier", &verifier)
        .finish();
    let request = Request::post(auth.token_url())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::from(form))
        .unwrap();
    let response = hyper_client().request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    answer["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_token_without_the_required_scope_gets_403_insufficient_scope() {
    let config = AuthConfig::default()
        .register(Client::public("app"))
        .resource_metadata(ResourceMetadata::new())
        .resource_required_scope("read write");
    let (auth, api) = servers(config).await;
    let narrow = token_with_scope(&auth, "read").await;
    let reply = get(api.url("/api/data"), Some(&narrow)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.challenge,
        format!(
            r#"Bearer realm="test", error="insufficient_scope", scope="read write", resource_metadata="{}""#,
            api.metadata_url().unwrap()
        )
    );
    let wide = token_with_scope(&auth, "write read extra").await;
    assert_eq!(
        get(api.url("/api/data"), Some(&wide)).await.status,
        StatusCode::OK
    );
    // A login minted without a request has no scope.
    let login = auth.login();
    let reply = get(api.url("/api/data"), Some(&login.access_token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(api.stats().forbidden, 2);
}
