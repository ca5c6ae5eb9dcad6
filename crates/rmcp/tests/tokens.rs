//! An rmcp client's tokens through the layer: expiry and revocation cost one
//! refresh and no failed call; a 403 for scope and an ended session reach
//! the application as errors it can tell apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use rmcp::{
    model::ProtocolVersion,
    transport::streamable_http_client::{InsufficientScopeError, StreamableHttpError},
};
use support::*;
use tower_token_refresh_test_util::AuthConfig;

#[tokio::test(start_paused = true)]
async fn tools_keep_answering_across_an_access_token_expiry() {
    let config = AuthConfig::default().access_lifetime(Duration::from_secs(60));
    let w = World::start(config, Answers::SessionsAndSse).await;
    let client = w.connect(ProtocolVersion::V_2025_11_25).await;
    assert_eq!(client.list_tools(None).await.unwrap().tools.len(), 1);
    assert_eq!(echo(&client, "before").await.unwrap(), "before");

    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(!w.auth.is_access_token_valid(&w.login.access_token));

    assert_eq!(client.list_tools(None).await.unwrap().tools.len(), 1);
    assert_eq!(echo(&client, "after").await.unwrap(), "after");
    let stats = w.auth.stats();
    assert_eq!(stats.refresh_grants, 1);
    assert_eq!(stats.reuse_detected, 0);
    // The layer saw the expiry coming: the server never had to refuse.
    assert_eq!(w.mcp.stats().rejected, 0);
    client.cancel().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_revoked_access_token_is_refreshed_once_and_the_call_replayed() {
    let w = World::hour(Answers::SessionsAndSse).await;
    let client = w.connect(ProtocolVersion::V_2025_11_25).await;
    assert_eq!(echo(&client, "before").await.unwrap(), "before");

    w.auth.revoke(&w.login.access_token);
    assert_eq!(echo(&client, "after").await.unwrap(), "after");
    assert_eq!(client.list_tools(None).await.unwrap().tools.len(), 1);

    let stats = w.auth.stats();
    assert_eq!(stats.refresh_grants, 1);
    assert_eq!(stats.reuse_detected, 0);
    assert_eq!(w.mcp.stats().rejected, 1);
    assert_eq!(w.tokens.stats().replays, 1);
    client.cancel().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn insufficient_scope_surfaces_as_rmcps_error_with_the_scope() {
    let w = World::hour(Answers::SessionsAndSse).await;
    let client = w.connect(ProtocolVersion::V_2025_11_25).await;
    w.mcp.require_scope("mcp:admin");

    let error = echo(&client, "more").await.unwrap_err();
    let scope = find::<InsufficientScopeError>(&error).expect("an InsufficientScopeError");
    assert_eq!(scope.get_required_scope(), Some("mcp:admin"));
    // A new token cannot answer a 403: the user must log in more widely.
    assert_eq!(w.auth.stats().refresh_grants, 0);
    assert_eq!(w.mcp.stats().forbidden, 1);
}

#[tokio::test(start_paused = true)]
async fn an_ended_session_surfaces_as_the_layers_session_expired_error() {
    let w = World::hour(Answers::StatelessJson).await;
    let client = w.connect(ProtocolVersion::LATEST).await;
    assert_eq!(echo(&client, "before").await.unwrap(), "before");

    // The grant revoked, its access token with it: the refresh that the
    // 401 starts gets invalid_grant.
    w.auth.revoke(&w.login.refresh_token);
    let error = echo(&client, "after").await.unwrap_err();
    let Some(StreamableHttpError::Client(error)) = transport_error(&error) else {
        panic!("not the client's error: {error:?}");
    };
    assert!(error.token_error().unwrap().is_session_expired(), "{error}");
    assert_eq!(w.auth.stats().invalid_grant, 1);
    assert_eq!(w.tokens.stats().sessions_expired, 1);
}
