//! `ReqwestService` under `TokenRefreshLayer`: the layer's core behaviours
//! with reqwest as the inner client, against test-util's servers on
//! 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tower::{Layer, ServiceExt};
use tower_token_refresh::{BoxError, ErrorKind, TokenRefresh, TokenRefreshLayer};
use tower_token_refresh_reqwest::ReqwestService;
use tower_token_refresh_test_util::Fault;

type Client = TokenRefresh<ReqwestService>;

fn client(s: &Servers) -> Client {
    TokenRefreshLayer::new(s.tokens.clone())
        .allow_origin(origin_of(s.api.addr()))
        .layer(ReqwestService::new(s.http.clone()))
}

async fn send(client: &Client, request: Request<Bytes>) -> Result<(StatusCode, Bytes), BoxError> {
    let response = client.clone().oneshot(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

#[tokio::test]
async fn the_token_is_attached_and_nothing_is_refreshed() {
    support::the_token_is_attached_and_nothing_is_refreshed(client).await;
}

#[tokio::test(start_paused = true)]
async fn past_expiry_a_request_waits_for_the_refresh() {
    support::past_expiry_a_request_waits_for_the_refresh(client).await;
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_a_post_replayed_with_its_body() {
    let s = servers(|b| b).await;
    let client = client(&s);
    s.auth.expire_access_tokens();
    let body = Bytes::from((0..50_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let request = Request::post(s.api.url("/api/echo"))
        .body(body.clone())
        .unwrap();
    let (status, echoed) = send(&client, request).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(echoed, body);
    assert_eq!(s.auth.stats().refresh_grants, 1);
    assert_eq!(s.api.stats().requests, 2);
    assert_eq!(s.api.requests_with(&s.login.access_token), 1);
    assert_eq!(s.tokens.stats().replays, 1);
}

#[tokio::test]
async fn concurrent_rejections_share_one_refresh_grant() {
    support::concurrent_rejections_share_one_refresh_grant(20, client).await;
}

#[tokio::test]
async fn a_second_rejection_is_returned_as_it_is() {
    let s = servers(|b| b).await;
    let client = client(&s);
    assert_eq!(
        get(&client, &s.api.url("/api/always-401")).await.unwrap(),
        401
    );
    assert_eq!(s.api.stats().requests, 2);
    assert_eq!(s.auth.stats().refresh_grants, 1);
}

#[tokio::test]
async fn a_request_to_another_origin_is_refused_and_nothing_reaches_it() {
    support::a_request_to_another_origin_is_refused_and_nothing_reaches_it(client).await;
}

#[tokio::test]
async fn cleartext_to_a_host_that_is_not_loopback_is_refused_before_anything_is_sent() {
    let s = servers(|b| b).await;
    let client = TokenRefreshLayer::new(s.tokens.clone())
        .any_origin()
        .layer(ReqwestService::new(s.http.clone()));
    let error = get(&client, "http://api.example.invalid/data")
        .await
        .unwrap_err();
    let error = error.downcast_ref::<tower_token_refresh::Error>().unwrap();
    assert_eq!(error.kind(), ErrorKind::Policy);
    assert_eq!(s.dns.lookups(), Vec::<String>::new());
}

#[tokio::test]
async fn an_expired_session_is_a_typed_error() {
    let s = servers(|b| b).await;
    let client = client(&s);
    s.auth.expire_access_tokens();
    s.auth.inject(Fault::InvalidGrant, 1);
    let error = get(&client, &s.api.url("/api/data")).await.unwrap_err();
    let error = error.downcast_ref::<tower_token_refresh::Error>().unwrap();
    assert!(error.is_session_expired());
}

#[tokio::test]
async fn a_uri_reqwest_cannot_send_fails_with_its_error_before_anything_is_sent() {
    let s = servers(|b| b).await;
    // No layer: reqwest's conversion refuses a relative URI itself.
    let error = ReqwestService::new(s.http.clone())
        .oneshot(Request::get("/api/data").body(Bytes::new()).unwrap())
        .await
        .unwrap_err();
    assert!(error.is_builder(), "{error}");
    assert_eq!(s.api.stats().requests, 0);
}
