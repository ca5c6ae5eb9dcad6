//! `TokenRefreshMiddleware` through a real reqwest-middleware client,
//! against test-util's authorization server and protected resource on
//! 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use support::*;
use tower_token_refresh::{ErrorKind, SkipAuth};
use tower_token_refresh_reqwest::{TokenRefreshMiddleware, token_error};
use tower_token_refresh_test_util::{AuthConfig, Fault, Gate, ResourceServer};

/// The middleware over the servers' reqwest client, allowed the API's origin.
fn client(s: &Servers) -> ClientWithMiddleware {
    client_with(s, |m| m)
}

fn client_with(
    s: &Servers,
    tweak: impl FnOnce(TokenRefreshMiddleware) -> TokenRefreshMiddleware,
) -> ClientWithMiddleware {
    let middleware =
        tweak(TokenRefreshMiddleware::new(s.tokens.clone()).allow_origin(origin_of(s.api.addr())));
    ClientBuilder::new(s.http.clone()).with(middleware).build()
}

#[tokio::test]
async fn the_token_is_attached_and_nothing_is_refreshed() {
    support::the_token_is_attached_and_nothing_is_refreshed(client).await;
}

#[tokio::test(start_paused = true)]
async fn past_expiry_a_request_waits_for_the_refresh_and_goes_with_the_new_token() {
    let s = support::past_expiry_a_request_waits_for_the_refresh(client).await;
    assert_eq!(s.api.stats().rejected, 0);
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_the_request_replayed() {
    let s = servers(|b| b).await;
    let client = client(&s);
    s.auth.expire_access_tokens();
    assert_eq!(get(&client, &s.api.url("/api/data")).await.unwrap(), 200);
    assert_eq!(s.auth.stats().refresh_grants, 1);
    assert_eq!(s.api.stats().rejected, 1);
    assert_eq!(s.api.stats().requests, 2);
    assert_eq!(s.api.requests_with(&s.login.access_token), 1);
    assert_eq!(s.tokens.stats().replays, 1);
}

#[tokio::test]
async fn concurrent_rejections_share_one_refresh_grant() {
    const N: usize = 20;
    let s = support::concurrent_rejections_share_one_refresh_grant(N, client).await;
    assert_eq!(s.api.requests_with(&s.login.access_token), N as u64);
    assert_eq!(s.api.stats().requests, 2 * N as u64);
}

#[tokio::test]
async fn a_second_rejection_is_returned_as_it_is() {
    let s = servers(|b| b).await;
    let client = client(&s);
    // The route rejects every token, new or old.
    let response = client
        .get(s.api.url("/api/always-401"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(
        s.api.stats().requests,
        2,
        "the first attempt and one replay"
    );
    assert_eq!(s.auth.stats().refresh_grants, 1);
    assert_eq!(s.tokens.stats().replays, 1);
}

#[tokio::test]
async fn a_replayed_post_carries_the_same_body() {
    let s = servers(|b| b).await;
    let client = client(&s);
    s.auth.expire_access_tokens();
    let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let response = client
        .post(s.api.url("/api/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), body);
    assert_eq!(s.api.stats().requests, 2);
    assert_eq!(s.tokens.stats().replays, 1);
}

#[tokio::test]
async fn a_streaming_body_is_sent_once_its_401_returned_and_the_token_refreshed() {
    let s = servers(|b| b).await;
    let client = client(&s);
    s.auth.expire_access_tokens();
    let first = s.tokens.generation();
    // A body reqwest cannot copy.
    let streaming = reqwest::Body::wrap(Full::new(Bytes::from_static(b"upload")));
    let response = client
        .post(s.api.url("/api/echo"))
        .body(streaming)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(s.api.stats().requests, 1, "sent once, not replayed");
    assert_eq!(s.tokens.stats().replays, 0);
    // The server counts the grant before the manager has the new token:
    // wait for the manager.
    until(
        "the refresh the 401 started has published its token",
        || s.tokens.generation() > first,
    )
    .await;
    assert_eq!(get(&client, &s.api.url("/api/data")).await.unwrap(), 200);
    assert_eq!(s.api.stats().rejected, 1);
    assert_eq!(s.auth.stats().refresh_grants, 1);
}

#[tokio::test]
async fn a_request_to_another_origin_is_refused_and_nothing_reaches_it() {
    let (s, _other, error) =
        support::a_request_to_another_origin_is_refused_and_nothing_reaches_it(client).await;
    assert!(
        !error.to_string().contains(&s.login.access_token),
        "{error}"
    );
    assert_eq!(s.auth.stats().token_requests, 0);
}

#[tokio::test]
async fn with_pass_through_another_origin_gets_the_request_without_the_token() {
    let s = servers(|b| b).await;
    let other = ResourceServer::start(&s.auth).await.unwrap();
    let client = client_with(&s, |m| m.pass_through_other_origins(true));
    assert_eq!(get(&client, &other.url("/api/data")).await.unwrap(), 401);
    assert_eq!(other.stats().requests, 1);
    assert_eq!(other.stats().missing_credentials, 1);
    // The 401 of a request sent without the token is not a rejection of it.
    assert_eq!(s.auth.stats().token_requests, 0);
    assert_eq!(s.tokens.stats().replays, 0);
}

#[tokio::test]
async fn skip_auth_sends_the_request_untouched() {
    let s = servers(|b| b).await;
    let client = client(&s);
    let response = client
        .get(s.api.url("/api/data"))
        .with_extension(SkipAuth)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(s.api.stats().missing_credentials, 1);
    assert_eq!(s.auth.stats().token_requests, 0);
}

#[tokio::test]
async fn cleartext_to_a_host_that_is_not_loopback_is_refused_before_anything_is_sent() {
    let s = servers(|b| b).await;
    // `.invalid` names resolve nowhere (RFC 6761); the client's resolver
    // records any lookup and resolves nothing.
    let url = "http://api.example.invalid/data";
    let client = client_with(&s, |m| m.any_origin());
    let error = client.get(url).send().await.unwrap_err();
    assert_eq!(token_error(&error).unwrap().kind(), ErrorKind::Policy);
    assert_eq!(s.dns.lookups(), Vec::<String>::new(), "not even a lookup");
    assert_eq!(s.auth.stats().token_requests, 0);

    // With cleartext allowed, the same request gets as far as the lookup:
    // the resolver above would have seen it.
    let client = client_with(&s, |m| m.any_origin().allow_cleartext(true));
    let error = client.get(url).send().await.unwrap_err();
    assert!(token_error(&error).is_none(), "{error}");
    assert_eq!(s.dns.lookups(), ["api.example.invalid"]);
}

#[tokio::test]
async fn a_host_header_naming_another_host_is_refused() {
    let s = servers(|b| b).await;
    let client = client(&s);
    let error = client
        .get(s.api.url("/api/data"))
        .header("host", "elsewhere.example")
        .send()
        .await
        .unwrap_err();
    assert_eq!(token_error(&error).unwrap().kind(), ErrorKind::Policy);
    assert_eq!(s.api.stats().requests, 0);
}

#[tokio::test]
async fn an_expired_session_is_a_typed_error_and_later_requests_fail_fast() {
    let s = servers(|b| b).await;
    let client = client(&s);
    s.auth.expire_access_tokens();
    s.auth.inject(Fault::InvalidGrant, 1);
    let error = get(&client, &s.api.url("/api/data")).await.unwrap_err();
    assert!(error.is_middleware());
    assert!(token_error(&error).unwrap().is_session_expired(), "{error}");
    // Also by hand, from the error reqwest-middleware returns.
    let reqwest_middleware::Error::Middleware(inner) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        inner
            .downcast_ref::<tower_token_refresh::Error>()
            .unwrap()
            .kind(),
        ErrorKind::SessionExpired
    );
    let again = get(&client, &s.api.url("/api/data")).await.unwrap_err();
    assert!(token_error(&again).unwrap().is_session_expired());
    assert_eq!(s.auth.stats().token_requests, 1, "no second refresh");
    assert_eq!(
        s.api.stats().requests,
        1,
        "only the first, rejected attempt"
    );
}

#[tokio::test]
async fn a_401_from_another_origin_after_a_redirect_is_not_taken_for_a_rejection() {
    let s = servers(|b| b).await;
    let other = ResourceServer::start(&s.auth).await.unwrap();
    // An allowed origin that sends the client on to `other`.
    let redirector = redirector(other.url("/api/data")).await;

    let client = client_with(&s, |m| m.allow_origin(origin_of(redirector)));
    let url = format!("http://{redirector}/moved");
    assert_eq!(get(&client, &url).await.unwrap(), 401);
    // reqwest dropped `Authorization` on the way to the other origin, whose
    // 401 says nothing about our token: no refresh, no replay.
    assert_eq!(other.stats().requests, 1);
    assert_eq!(other.stats().missing_credentials, 1);
    assert_eq!(s.auth.stats().token_requests, 0);
    assert_eq!(s.tokens.stats().replays, 0);
}

#[tokio::test]
async fn debug_output_holds_no_token() {
    let s = servers(|b| b).await;
    let middleware =
        TokenRefreshMiddleware::new(s.tokens.clone()).allow_origin(origin_of(s.api.addr()));
    // A request first, so that the manager holds a credential to print.
    let client = ClientBuilder::new(s.http.clone())
        .with(middleware.clone())
        .build();
    assert_eq!(get(&client, &s.api.url("/api/data")).await.unwrap(), 200);
    let debug = format!("{middleware:?} {client:?}");
    assert!(debug.contains("TokenRefreshMiddleware"), "{debug}");
    assert!(!debug.contains(&s.login.access_token), "{debug}");
    assert!(!debug.contains(&s.login.refresh_token), "{debug}");
}

/// A server on 127.0.0.1 that answers 200 to anything and records the
/// `x-api-token` header of each request (`None`: none).
async fn recorder() -> (std::net::SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let router = axum::Router::new().fallback({
        let seen = seen.clone();
        move |headers: http::HeaderMap| async move {
            let value = headers
                .get("x-api-token")
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(value);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, seen)
}

/// A server on 127.0.0.1 whose `/moved` redirects to `target`.
async fn redirector(target: String) -> std::net::SocketAddr {
    let router = axum::Router::new().route(
        "/moved",
        axum::routing::get(move || async move { axum::response::Redirect::temporary(&target) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

#[tokio::test]
async fn with_its_redirect_policy_a_custom_header_does_not_follow_a_redirect_elsewhere() {
    let s = servers(|b| b).await;
    let (elsewhere, seen) = recorder().await;
    let moved = redirector(format!("http://{elsewhere}/landing")).await;
    let middleware = TokenRefreshMiddleware::new(s.tokens.clone())
        .allow_origin(origin_of(moved))
        .header_name(http::HeaderName::from_static("x-api-token"));
    let url = format!("http://{moved}/moved");

    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(middleware.redirect_policy())
        .build()
        .unwrap();
    let client = ClientBuilder::new(http).with(middleware.clone()).build();
    assert_eq!(
        get(&client, &url).await.unwrap(),
        StatusCode::TEMPORARY_REDIRECT
    );
    assert!(seen.lock().unwrap().is_empty(), "not followed");

    // reqwest's default policy follows, and the header goes along: what
    // the policy above is for.
    let client = ClientBuilder::new(s.http.clone()).with(middleware).build();
    assert_eq!(get(&client, &url).await.unwrap(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, [Some(format!("Bearer {}", s.login.access_token))]);
}

#[tokio::test(start_paused = true)]
async fn inside_the_refresh_ahead_window_requests_go_at_once_while_one_refresh_runs() {
    let s = servers_with(
        AuthConfig::default().access_lifetime(Duration::from_secs(100)),
        |b| {
            b.refresh_ahead(Duration::from_secs(20))
                .expiry_leeway(Duration::from_secs(5))
                .refresh_jitter(0.0)
        },
    )
    .await;
    let client = client(&s);
    let gate = Gate::new();
    s.auth.inject(Fault::Hold(gate.clone()), 1);
    let first = s.tokens.generation();
    tokio::time::advance(Duration::from_secs(81)).await;
    for _ in 0..5 {
        assert_eq!(get(&client, &s.api.url("/api/data")).await.unwrap(), 200);
    }
    assert_eq!(
        s.api.requests_with(&s.login.access_token),
        5,
        "the current token, without waiting"
    );
    assert_eq!(s.auth.stats().token_requests, 1, "one background refresh");
    gate.open();
    until("the background refresh published its token", || {
        s.tokens.generation() > first
    })
    .await;
    assert_eq!(get(&client, &s.api.url("/api/data")).await.unwrap(), 200);
    assert_eq!(s.api.requests_with(&s.login.access_token), 5);
    assert_eq!(s.auth.stats().refresh_grants, 1);
    assert_eq!(s.api.stats().rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_keeps_failing_is_a_typed_transient_error() {
    let s = servers(|b| {
        b.max_attempts(2)
            .backoff(Duration::from_millis(200), Duration::from_secs(2))
    })
    .await;
    let client = client(&s);
    s.auth.expire_access_tokens();
    s.auth.inject(Fault::Status(503), 2);
    let error = get(&client, &s.api.url("/api/data")).await.unwrap_err();
    let token_error = token_error(&error).expect("a token error");
    assert_eq!(token_error.kind(), ErrorKind::Transient, "{error}");
    assert!(!token_error.is_session_expired());
    assert_eq!(s.auth.stats().token_requests, 2, "bounded by max_attempts");
    assert_eq!(s.api.stats().requests, 1, "the rejected attempt, no replay");
}

#[tokio::test]
async fn over_sessions_each_request_carries_its_own_users_token_and_one_without_a_key_is_refused() {
    use tower_token_refresh::{MemoryStore, SessionKey, Sessions, TokenManager};

    let s = servers(|b| b).await;
    let sessions: Sessions<&'static str> =
        Sessions::builder(TokenManager::builder(grant(&s.auth, s.http.clone())))
            .store(|_: &&'static str| MemoryStore::new())
            .build()
            .unwrap();
    let ann = s.auth.login();
    let bob = s.auth.login();
    sessions.set("ann", ann.token_set()).await.unwrap();
    sessions.set("bob", bob.token_set()).await.unwrap();
    let client = ClientBuilder::new(s.http.clone())
        .with(
            TokenRefreshMiddleware::sessions(sessions.clone())
                .allow_origin(origin_of(s.api.addr())),
        )
        .build();
    let send = |user: Option<&'static str>| {
        let mut request = client.get(s.api.url("/api/data"));
        if let Some(user) = user {
            request = request.with_extension(SessionKey(user));
        }
        request.send()
    };
    assert_eq!(send(Some("ann")).await.unwrap().status(), 200);
    assert_eq!(send(Some("bob")).await.unwrap().status(), 200);
    assert_eq!(send(Some("ann")).await.unwrap().status(), 200);
    assert_eq!(s.api.requests_with(&ann.access_token), 2);
    assert_eq!(s.api.requests_with(&bob.access_token), 1);

    // Both tokens revoked: each user's session refreshes once, on its own.
    s.auth.expire_access_tokens();
    for user in ["ann", "bob", "ann", "bob"] {
        assert_eq!(send(Some(user)).await.unwrap().status(), 200);
    }
    assert_eq!(s.auth.stats().refresh_grants, 2);
    let ann_now = sessions.session(&"ann").current().unwrap();
    let bob_now = sessions.session(&"bob").current().unwrap();
    assert_eq!(
        s.auth.grant_of(ann_now.access_token().secret()),
        s.auth.grant_of(&ann.access_token)
    );
    assert_eq!(
        s.auth.grant_of(bob_now.access_token().secret()),
        s.auth.grant_of(&bob.access_token)
    );

    let before = s.api.stats().requests;
    let err = send(None).await.unwrap_err();
    assert_eq!(token_error(&err).map(|e| e.kind()), Some(ErrorKind::Policy));
    assert_eq!(s.api.stats().requests, before, "nothing was sent");
}
