//! Redirects with tower-http's `FollowRedirect`, against real servers of
//! different origins on 127.0.0.1: a redirector `X` (our API, for these
//! tests), and `E`, a resource server of another authorization server that
//! records which tokens it was sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus, header},
    response::IntoResponse,
};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use tower::{Layer, ServiceBuilder};
use tower_http::follow_redirect::FollowRedirectLayer;
use tower_token_refresh::TokenRefreshLayer;
use tower_token_refresh_test_util::{AuthConfig, AuthServer, ResourceServer, hyper_client};

/// The `Authorization` headers `X` received, in order (`None`: none).
type Seen = Arc<Mutex<Vec<Option<String>>>>;

struct Redirector {
    addr: SocketAddr,
    seen: Seen,
}

impl Redirector {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> tower_token_refresh::Origin {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }
}

/// `X`: `/leave` redirects to `E`, `/same` to its own `/ok`, `/same-401`
/// to its own `/reject` (a 401 `invalid_token`).
async fn redirector(elsewhere: String) -> Redirector {
    let seen: Seen = Arc::default();
    let state = (seen.clone(), elsewhere);
    let handler = |State((seen, elsewhere)): State<(Seen, String)>,
                   uri: axum::http::Uri,
                   headers: HeaderMap| async move {
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push(auth);
        let found = |to: String| (AxumStatus::FOUND, [(header::LOCATION, to)]).into_response();
        match uri.path() {
            "/leave" => found(elsewhere),
            "/same" => found("/ok".to_owned()),
            "/same-401" => found("/reject".to_owned()),
            "/ok" => "ok".into_response(),
            "/reject" => (
                AxumStatus::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
            )
                .into_response(),
            _ => AxumStatus::NOT_FOUND.into_response(),
        }
    };
    let router = Router::new().fallback(handler).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Redirector { addr, seen }
}

/// `E`: a resource server of another authorization server. Without
/// credentials it answers 401 `Bearer realm="test"`, which by itself would
/// count as a rejected token.
async fn elsewhere() -> (AuthServer, ResourceServer) {
    let auth = AuthServer::start(AuthConfig::default()).await.unwrap();
    let api = ResourceServer::start(&auth).await.unwrap();
    (auth, api)
}

fn get_req(url: String) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

#[tokio::test]
async fn inside_follow_redirect_a_scoped_layer_never_sends_the_token_across_origins() {
    let w = world(|b| b).await;
    let (_e_auth, e) = elsewhere().await;
    let x = redirector(e.url("/api/data")).await;
    let token = format!("Bearer {}", w.login.access_token);
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(TokenRefreshLayer::new(w.tokens.clone()).scope(x.origin()))
        .service(hyper_client());

    let response = send(&client, get_req(x.url("/leave"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "E's answer");
    assert_eq!(x.seen(), vec![Some(token.clone())], "X is in scope");
    assert_eq!(e.stats().requests, 1);
    assert_eq!(e.stats().missing_credentials, 1, "E got no token");
    assert_eq!(e.requests_with(&w.login.access_token), 0);
    // E's 401 was out of scope: no refresh, no replay.
    assert_eq!(w.tokens.stats().refreshes_started, 0);
    assert_eq!(w.tokens.stats().replays, 0);

    // A same-origin redirect carries the token on both hops.
    let response = send(&client, get_req(x.url("/same"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(x.seen()[1..], [Some(token.clone()), Some(token)]);
}

/// Why the scope matters: unscoped, the layer adds the token to every hop.
#[tokio::test]
async fn inside_follow_redirect_an_unscoped_layer_would_leak_the_token() {
    let w = world(|b| b).await;
    let (_e_auth, e) = elsewhere().await;
    let x = redirector(e.url("/api/data")).await;
    let client = FollowRedirectLayer::new()
        .layer(TokenRefreshLayer::new(w.tokens.clone()).layer(hyper_client()));
    let _ = send(&client, get_req(x.url("/leave"))).await;
    assert_eq!(e.requests_with(&w.login.access_token), 1);
}

#[cfg(feature = "follow-redirect")]
#[tokio::test]
async fn outside_follow_redirect_a_401_from_another_origin_is_not_our_tokens_rejection() {
    let w = world(|b| b).await;
    let (_e_auth, e) = elsewhere().await;
    let x = redirector(e.url("/api/data")).await;
    let token = format!("Bearer {}", w.login.access_token);
    let client = ServiceBuilder::new()
        .layer(TokenRefreshLayer::new(w.tokens.clone()).scope(x.origin()))
        .layer(FollowRedirectLayer::new())
        .service(hyper_client());

    let response = send(&client, get_req(x.url("/leave"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "E's answer");
    assert_eq!(x.seen(), vec![Some(token.clone())]);
    // FollowRedirect stripped the token on the cross-origin hop...
    assert_eq!(e.stats().missing_credentials, 1);
    assert_eq!(e.requests_with(&w.login.access_token), 0);
    // ...and E's 401 did not count against our token.
    assert_eq!(w.tokens.stats().refreshes_started, 0);
    assert_eq!(w.tokens.stats().replays, 0);
    assert_eq!(w.auth.stats().token_requests, 0);
    assert_eq!(x.seen().len(), 1, "not replayed");

    // A 401 from our own origin after a same-origin redirect still counts:
    // one refresh, one replay (through both hops again).
    let response = send(&client, get_req(x.url("/same-401"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.tokens.stats().refreshes_started, 1);
    assert_eq!(w.tokens.stats().replays, 1);
    assert_eq!(w.auth.stats().refresh_grants, 1);
    let seen = x.seen();
    assert_eq!(seen.len(), 1 + 4);
    let new = format!(
        "Bearer {}",
        w.tokens.current().unwrap().access_token().secret()
    );
    assert_eq!(
        seen[1..],
        [
            Some(token.clone()),
            Some(token),
            Some(new.clone()),
            Some(new)
        ]
    );
}

/// Our API (`R`, the world's resource server) reached through a redirect
/// from another origin: only the hop to `R` carries the token.
#[tokio::test]
async fn a_redirect_into_scope_carries_the_token_only_on_the_scoped_hop() {
    let w = world(|b| b).await;
    let x = redirector(w.api.url("/api/data")).await;
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(
            TokenRefreshLayer::new(w.tokens.clone())
                .scope(format!("http://{}", w.api.addr()).parse().unwrap()),
        )
        .service(hyper_client());
    let response = send(&client, get_req(x.url("/leave"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(x.seen(), vec![None], "X is out of scope");
    assert_eq!(w.api.requests_with(&w.login.access_token), 1);
}
